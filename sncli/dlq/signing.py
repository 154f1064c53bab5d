"""Signing DLQ records and checking them (pure).

``sncli.error.topic`` hands out the rights of a sink topic (its table, routing,
deletes), so replay must not take it from whoever can produce to the DLQ: every
record sncli writes there is signed with ``sink.dlq_signing_key`` and replay
writes only records whose signature checks out, unless the operator vouches for
unsigned ones of one named topic (``--trust-unsigned --topic``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from sncli.config import SinkSettings
from sncli.dlq.record import H_SIGNATURE, Headers, Verdict

_SIGNATURE = re.compile(r"v1:(?P<kid>[0-9a-f]{16}):(?P<mac>[0-9a-f]{64})")


@dataclass(frozen=True)
class DlqSigner:
    """Signs DLQ records and checks them: who can produce to the DLQ gains no sink topic's rights.

    The signature is an HMAC-SHA256, keyed with ``sink.dlq_signing_key``, over the
    record's key, its value and every header in order except the signature
    itself: the ``sncli.error.*`` headers replay trusts (topic, partition, offset,
    table, class, ...) and the original ones resolve reads (``sn.table``,
    ``sn.sys_id``). Each part is framed with its length, so no bytes can move from
    one part to another. The header carries a key id (derived from the key, not
    revealing it) so a rotated key still verifies as ``dlq_previous_signing_key``.

    ``keys[0]`` signs; every key verifies. No key: :meth:`sign` leaves the record
    unsigned and :meth:`verify` answers ``unchecked``.
    """

    keys: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, sink: SinkSettings) -> DlqSigner:
        found = (sink.dlq_signing_key, sink.dlq_previous_signing_key)
        return cls(tuple(k.get_secret_value().strip().encode() for k in found if k is not None))

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def sign(self, key: bytes | None, value: bytes | None, headers: Headers) -> list[tuple[str, bytes | None]]:
        """``headers`` without any earlier signature, then this record's (unchanged without a key)."""
        kept = [(k, v) for k, v in headers if k != H_SIGNATURE]
        if not self.keys:
            return kept
        secret = self.keys[0]
        signature = f"v1:{_key_id(secret)}:{_mac(secret, key, value, kept).hex()}"
        return [*kept, (H_SIGNATURE, signature.encode())]

    def verify(self, key: bytes | None, value: bytes | None, headers: Headers) -> Verdict:
        """``valid`` only when the signature matches the record as read, under a configured key."""
        signatures = [v for k, v in headers if k == H_SIGNATURE]
        if not signatures:
            return "unsigned"
        if not self.keys:
            return "unchecked"
        raw = signatures[0]
        if len(signatures) != 1 or raw is None:
            return "invalid"
        match = _SIGNATURE.fullmatch(raw.decode("ascii", "replace"))
        if match is None:
            return "invalid"
        for secret in self.keys:
            if hmac.compare_digest(_key_id(secret), match.group("kid")):
                expected = _mac(secret, key, value, [(k, v) for k, v in headers if k != H_SIGNATURE]).hex()
                return "valid" if hmac.compare_digest(expected, match.group("mac")) else "invalid"
        return "invalid"  # signed with a key this config does not have


def _key_id(secret: bytes) -> str:
    return hmac.new(secret, b"sncli-dlq-key-id", hashlib.sha256).hexdigest()[:16]


def _mac(secret: bytes, key: bytes | None, value: bytes | None, headers: Headers) -> bytes:
    mac = hmac.new(secret, b"sncli-dlq-v1\n", hashlib.sha256)

    def part(raw: bytes | None) -> None:
        if raw is None:
            mac.update(b"\x00")
        else:
            mac.update(b"\x01" + len(raw).to_bytes(8, "big"))
            mac.update(raw)

    part(key)
    part(value)
    mac.update(len(headers).to_bytes(8, "big"))
    for name, raw in headers:
        part(name.encode("utf-8", "surrogateescape"))
        part(raw)
    return mac.digest()
