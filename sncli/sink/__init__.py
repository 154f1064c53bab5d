"""Kafka -> ServiceNow: ``sncli sink drain`` and the write path ``sncli dlq replay`` shares.

- :mod:`sncli.sink.resolve`     pure: a record -> POST / PATCH / DELETE / skip, or a record error
- :mod:`sncli.sink.decode`      JSON or Avro (Schema Registry) values for resolve
- :mod:`sncli.sink.commits`     pure: the per-partition offset below which everything is finished
- :mod:`sncli.sink.partitions`  per-partition state: tracker, generations, cancel events, writes under way
- :mod:`sncli.sink.assignment`  the consumer's side: start reading, commit, pause, assign / revoke
- :mod:`sncli.sink.pool`        the keyed worker pool: parallel across keys, in order within one
- :mod:`sncli.sink.writer`      the write policies: 404, ambiguous POST, the outage breaker
- :mod:`sncli.sink.job`         what a run is given and returns: options, a Job per message, the summary
- :mod:`sncli.sink.drain`       the bounded run: read, resolve, write, dead-letter, commit
"""
