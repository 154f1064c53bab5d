"""The shipped Kubernetes CronJob for `sncli verify` parses and runs a verify that cannot overlap itself."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "cron" / "k8s" / "cronjob-verify.yaml"


def test_the_verify_cronjob_repairs_never_overlaps_and_is_bounded() -> None:
    job = yaml.safe_load(MANIFEST.read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    spec = job["spec"]["jobTemplate"]["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] > 0
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["verify", "--repair"]
    assert {"name": "SNCLI_CONFIG", "value": "/etc/sncli/sncli.yaml"} in container["env"]
