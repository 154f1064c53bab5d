"""Parsing the Go bridge's offsets.json in the shapes it has been written in."""

from __future__ import annotations

import json

import pytest

from sncli.offsets.bridge_import import BridgeFormatError, parse_bridge_offsets

A = "0123456789abcdef0123456789abcdef"
B = "fedcba9876543210fedcba9876543210"

# 1714564800 = 2024-05-01 12:00:00 UTC
SAMPLES = {
    "top-level mapping, unix seconds": {
        "incident": {"timestamp": 1714564800, "last_identifier": A},
        "problem": {"timestamp": 1714564801, "last_identifier": B},
    },
    "wrapped under offsets, RFC 3339": {
        "version": 3,
        "offsets": {
            "incident": {"timestamp": "2024-05-01T12:00:00Z", "last_identifier": A},
            "problem": {"timestamp": "2024-05-01T14:00:01.123456789+02:00", "last_identifier": B},
        },
    },
    "camelCase spellings": {
        "incident": {"lastTimestamp": "1714564800", "lastID": A},
        "problem": {"lastTimestamp": 1714564801.9, "lastID": B},
    },
    "Go field names without json tags": {
        "offsets": {
            "incident": {"Timestamp": "2024-05-01T12:00:00Z", "LastIdentifier": A},
            "problem": {"Timestamp": "2024-05-01 12:00:01", "LastIdentifier": B},
        }
    },
    "list of objects": [
        {"table": "problem", "timestamp": 1714564801, "last_identifier": B},
        {"table": "incident", "timestamp": 1714564800, "last_identifier": A},
    ],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_shape_gives_the_same_offsets(name: str) -> None:
    assert parse_bridge_offsets(json.dumps(SAMPLES[name])) == [
        ("incident", "2024-05-01 12:00:00", A),
        ("problem", "2024-05-01 12:00:01", B),
    ]


def test_missing_identifier_means_the_whole_second_is_read_again() -> None:
    text = json.dumps({"incident": {"timestamp": 1714564800}, "problem": {"timestamp": 0, "last_identifier": None}})
    assert parse_bridge_offsets(text) == [
        ("incident", "2024-05-01 12:00:00", ""),
        ("problem", "1970-01-01 00:00:00", ""),
    ]


def test_a_table_called_offsets_is_still_a_table() -> None:
    text = json.dumps({"offsets": {"timestamp": 1714564800, "last_identifier": A}})
    assert parse_bridge_offsets(text) == [("offsets", "2024-05-01 12:00:00", A)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not valid JSON"),
        ("{}", "no table offsets"),
        ('"incident"', "expected a JSON object"),
        ('{"incident": 5}', "incident: expected an object"),
        (json.dumps({"incident": {"last_identifier": A}}), "incident: no timestamp"),
        ('{"incident": {"timestamp": "last tuesday"}}', "incident: timestamp must be"),
        ('{"incident": {"timestamp": 1714564800000}}', "milliseconds"),
        ('{"incident": {"timestamp": -5}}', "not unix seconds"),
        ('{"incident": {"timestamp": true}}', "incident: timestamp must be"),
        ('{"incident": {"timestamp": 1, "last_identifier": "abc^NQactive=true"}}', "incident: sys_id must be"),
        ('{"incident": {"timestamp": 1, "last_identifier": 7}}', "must be a string"),
        ('[{"timestamp": 1}]', r"item \[0\] has no \"table\""),
        ('[{"table": "a", "timestamp": 1}, {"table": "a", "timestamp": 2}]', "listed twice: a"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(text: str, match: str) -> None:
    with pytest.raises(BridgeFormatError, match=match):
        parse_bridge_offsets(text)
