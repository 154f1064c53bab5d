"""The sink never writes ServiceNow's own ``sys_*`` fields (real Kafka, the emulator's journal).

``sys_class_name`` would change a record's class, ``sys_domain`` move it to another
domain: a record copied from another instance carries them all, and none may reach
a PATCH or POST body. The one exception is ``sys_id`` in a POST that creates the
record under the id the message names (PATCH answered 404).
"""

from __future__ import annotations

import orjson
import pytest

from sncli.emulator.server import ServiceNowEmulator
from sncli.sink.drain import run_drain
from sncli.sink.job import DrainOptions
from tests.integration.sink_support import config_dict, create_topic, json_value, produce, settings_of, sid, writes

pytestmark = pytest.mark.integration

#: What a record read from another instance carries besides its own fields.
SYSTEM = {
    "sys_class_name": "cmdb_ci_server",
    "sys_domain": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "sys_domain_path": "!!!/!!#/",
    "sys_tags": "vip",
    "sys_package": "global",
    "sys_scope": "global",
    "sys_update_name": "incident_123",
    "sys_created_on": "2024-01-01 00:00:00",
    "sys_mod_count": "7",
    "SYS_CLASS_NAME": "cmdb_ci",  # ServiceNow's names are lowercase; an upper-case spelling is no way around
}


def test_no_sys_field_is_ever_written_only_a_creating_post_names_its_sys_id(
    emulator: ServiceNowEmulator, kafka_bootstrap: str, unique_topic: str
) -> None:
    existing, missing = sid(1), sid(2)
    emulator.state.bulk_insert("incident", [{"sys_id": existing, "short_description": "old"}])
    create_topic(kafka_bootstrap, unique_topic, 1)
    produce(kafka_bootstrap, unique_topic, [
        # PATCH of an existing record
        (existing.encode(), json_value({"sys_id": existing, "short_description": "patched", **SYSTEM}), None),
        # PATCH answered 404 -> POST with that sys_id
        (missing.encode(), json_value({"sys_id": missing, "short_description": "created", **SYSTEM}), None),
        # POST of a new record; its nested reference flattens into sys_domain_value / sys_domain_link
        (None, json_value({"short_description": "new", **SYSTEM,
                           "sys_domain": {"value": "global", "link": "https://x/api/now/table/sys_user_group/g"}}),
         None),
        # only system fields: nothing to write
        (None, json_value({"sys_class_name": "problem", "sys_tags": "x"}), None),
    ])
    data = config_dict(emulator.url, kafka_bootstrap, [{"topic": unique_topic, "table": "incident",
                                                         "nested": "flatten"}], workers=1)  # calls in order
    emulator.state.clear_journal()

    summary = run_drain(settings_of(data), DrainOptions())

    assert summary.exit_code == 0, summary.error
    calls = [(e.method, e.sys_id, orjson.loads(e.body)) for e in writes(emulator.state.journal(), "incident")]
    assert [(method, sys_id) for method, sys_id, _b in calls] == [
        ("PATCH", existing), ("PATCH", missing), ("POST", None), ("POST", None),
    ]
    bodies = [body for _m, _s, body in calls]
    assert bodies[0] == {"short_description": "patched"}
    assert bodies[1] == {"short_description": "created"}
    assert bodies[2] == {"short_description": "created", "sys_id": missing}  # creates under the named id
    assert bodies[3] == {"short_description": "new"}
    assert summary.skipped_by_reason == {"no fields to write": 1}
    record = emulator.state.get("incident", existing)
    assert record["short_description"] == "patched"
    assert record.get("sys_class_name") != "cmdb_ci_server" and record.get("sys_tags") != "vip"
