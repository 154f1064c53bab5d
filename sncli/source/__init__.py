"""ServiceNow -> Kafka: ``source poll`` and ``backfill``.

The pure core: the keyset cursor (:mod:`~sncli.source.cursor`), a page to Kafka
messages (:mod:`~sncli.source.record`, keys in :mod:`~sncli.source.keys`, raw
JSON pages in :mod:`~sncli.source.rawpage`), backfill windows
(:mod:`~sncli.source.windows`), run outcomes (:mod:`~sncli.source.outcome`).

The engine: one range of one table (:mod:`~sncli.source.range_run`) is the page
loop (:mod:`~sncli.source.poller`) between the table's requests
(:mod:`~sncli.source.fetch`) and the Kafka output
(:mod:`~sncli.source.kafka_out`, dead letters in :mod:`~sncli.source.deadletter`,
Avro in :mod:`~sncli.source.schema`). ``source poll`` runs one range per table
(:mod:`~sncli.source.cycle`); ``backfill`` runs one per window of a plan
(:mod:`~sncli.source.backfill`, :mod:`~sncli.source.backfill_plan`, Parquet in
:mod:`~sncli.source.parquet_out`). What both share around that:
:mod:`~sncli.source.runkit`.
"""
