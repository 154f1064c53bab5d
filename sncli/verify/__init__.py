"""``sncli verify``: prove a table's topic mirrors the table, and repair what differs.

- :mod:`sncli.verify.spans`   the compared range and its windows (pure)
- :mod:`sncli.verify.view`    the Kafka side: latest message per record (pure)
- :mod:`sncli.verify.search`  count, cut, diff, classify (pure; I/O as callbacks)
- :mod:`sncli.verify.report`  the result, its JSON, exit code and metrics
- :mod:`sncli.verify.kafka_read`  reading a topic once
- :mod:`sncli.verify.engine`  one run: the I/O around the pure parts
- :mod:`sncli.verify.repair`  re-sending through the source's produce path
"""
