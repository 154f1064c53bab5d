"""`backfill --set-cursor` with an --until past ServiceNow's clock (adversarial review).

An explicit --until later than ServiceNow's clock minus the safety lag was
accepted: the backfill read what existed then, and the poll cursor moved to
--until, so every record changed between then and --until was never exported.
It is refused now (exit 2), before any work.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import UsageError
from sncli.source.backfill import BackfillRequest, run_backfill
from tests.integration.test_source_support import make_settings, stored_cursor

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=0)


def test_set_cursor_never_moves_the_poll_cursor_past_what_servicenow_has_now(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    emulator.state.generate("incident", 20, at=NOW - timedelta(days=2), spread_seconds=3_600, seed=21)
    offsets = tmp_path / "o.json"
    settings = make_settings(emulator.url, kafka_bootstrap, offsets, [{"name": "incident", "topic": topic}])
    # The operator means "everything up to the end of the day".
    until = (NOW + timedelta(hours=6)).strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(UsageError, match="past what ServiceNow holds now"):
        run_backfill(settings, BackfillRequest(table="incident", until=until, set_cursor=True))
    assert not offsets.exists() or stored_cursor(offsets, "incident") is None  # refused before any work
    # An --until ServiceNow's clock has passed is accepted, and the cursor moves there.
    past = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert run_backfill(settings, BackfillRequest(table="incident", until=past, set_cursor=True)).exit_code == 0
    assert stored_cursor(offsets, "incident") == (past, "")
