"""ADVERSARIAL (wt-R): `backfill --set-cursor` with an --until past ServiceNow's clock.

check_set_cursor guards the start of the range only.  An explicit --until later
than ServiceNow's clock minus the safety lag is accepted, the backfill reads what
exists now, and the poll cursor is moved to --until: every record changed between
now and --until is never exported.  Expected to FAIL on wt-R's tree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.errors import UsageError
from sncli.source.backfill import BackfillRequest, run_backfill
from sncli.source.cycle import run_poll
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
    try:
        summary = run_backfill(settings, BackfillRequest(table="incident", until=until, set_cursor=True))
    except UsageError:
        return  # refused: the guarantee holds
    print("backfill exit", summary.exit_code, "poll cursor now", stored_cursor(offsets, "incident"))
    # A record changes after the backfill, well before --until.
    emulator.state.generate("incident", 3, at=NOW - timedelta(minutes=1), spread_seconds=0, seed=22)
    poll = run_poll(settings)
    print("poll exported", poll.tables["incident"].records, "of the 3 new records")
    assert poll.tables["incident"].records == 3, "records changed after the backfill were never exported"
