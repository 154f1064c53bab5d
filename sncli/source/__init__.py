"""ServiceNow -> Kafka: keyset cursor (pure), record conversion (pure), a table's page
loop (poller), the cycle over tables (cycle), and the windowed backfill.

Where to look: the paging guarantee is in :mod:`sncli.source.cursor`; how a page
becomes Kafka messages in :mod:`sncli.source.record`; the produce/ack/store loop
in :mod:`sncli.source.poller`.
"""
