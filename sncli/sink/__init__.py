"""Kafka -> ServiceNow: ``sncli sink drain`` and the write path ``sncli dlq replay`` shares.

- :mod:`sncli.sink.resolve`  pure: a record -> POST / PATCH / DELETE / skip, or a record error
- :mod:`sncli.sink.commits`  pure: the per-partition offset below which everything is finished
- :mod:`sncli.sink.writer`   the keyed worker pool and the 404 / ambiguous-POST policies
- :mod:`sncli.sink.decode`   JSON or Avro (Schema Registry) values for resolve
- :mod:`sncli.sink.drain`    the bounded run: read, resolve, write, dead-letter, commit
"""
