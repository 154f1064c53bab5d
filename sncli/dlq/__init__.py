"""The dead letter queue: the record format, its signature, reading and writing the topic, the tools' views.

- :mod:`sncli.dlq.record`: what a DLQ record carries (``sncli.error.*`` headers), built and parsed back (pure).
- :mod:`sncli.dlq.signing`: :class:`~sncli.dlq.signing.DlqSigner`, the HMAC replay checks before it writes (pure).
- :mod:`sncli.dlq.select`: the filters and the pending/history view the tools share (pure).
- :mod:`sncli.dlq.writer`: :class:`~sncli.dlq.writer.DlqWriter`, producing DLQ records with per-record acks.
- :mod:`sncli.dlq.reader`: bounded reads of the topic and of a replay group's progress.
- :mod:`sncli.dlq.views`: ``dlq inspect`` and ``dlq export``.

Replaying the DLQ is the sink's work (its resolve/write path): :mod:`sncli.sink.replay`.
This package imports nothing from :mod:`sncli.sink`, so the sink can depend on it.
"""

from __future__ import annotations
