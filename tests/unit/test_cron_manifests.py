"""The shipped cron and Kubernetes examples parse and carry the settings that keep runs safe."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from sncli.config import parse_settings

CRON = Path(__file__).resolve().parents[2] / "cron"
K8S = CRON / "k8s"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return data


def container_of(job_spec: dict[str, Any]) -> dict[str, Any]:
    containers = job_spec["template"]["spec"]["containers"]
    assert len(containers) == 1
    spec: dict[str, Any] = containers[0]
    return spec


@pytest.mark.parametrize("name", ["cronjob-source-poll.yaml", "cronjob-sink-drain.yaml"])
def test_cronjobs_never_overlap_and_stop_before_the_deadline(name: str) -> None:
    doc = load(name)
    assert doc["apiVersion"] == "batch/v1" and doc["kind"] == "CronJob"
    spec = doc["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int)
    job = spec["jobTemplate"]["spec"]
    args = container_of(job)["args"]
    max_seconds = float(args[args.index("--max-seconds") + 1])
    # sncli stops by itself first; the hard deadline only catches a hung process.
    assert max_seconds < job["activeDeadlineSeconds"]
    assert "backoffLimit" in job
    resources = container_of(job)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]


def test_containers_get_config_and_secrets_from_kubernetes_objects() -> None:
    configmap = load("configmap.yaml")
    secret = load("secret.template.yaml")
    for name in ["cronjob-source-poll.yaml", "cronjob-sink-drain.yaml"]:
        container = container_of(load(name)["spec"]["jobTemplate"]["spec"])
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in container["envFrom"]
        mount = container["volumeMounts"][0]["mountPath"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SNCLI_CONFIG"] == f"{mount}/sncli.yaml"
    # Every ${VAR} the ConfigMap's config needs is a key of the Secret template.
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", configmap["data"]["sncli.yaml"]))
    assert needed and needed <= set(secret["stringData"])


def test_configmap_config_is_valid_sncli_config() -> None:
    text = load("configmap.yaml")["data"]["sncli.yaml"]
    # 4+ characters to be maskable, 32 to pass a signing key's minimum length
    env = {name: f"value-of-{name}".ljust(32, "x") for name in re.findall(r"\$\{([A-Z_]+)\}", text)}
    settings = parse_settings(yaml.safe_load(text), env)
    assert settings.offsets.store == "s3"
    assert settings.source.tables


def test_indexed_backfill_splits_into_one_window_per_pod() -> None:
    doc = load("job-backfill-indexed.yaml")
    spec = doc["spec"]
    assert spec["completionMode"] == "Indexed"
    container = container_of(spec)
    args = container["args"]
    window = args[args.index("--window") + 1]
    index_var, total = re.fullmatch(r"\$\((\w+)\)/(\d+)", window).groups()  # type: ignore[union-attr]
    assert int(total) == spec["completions"]
    # Kubernetes expands $(VAR) in args only for variables declared in env.
    assert index_var in {e["name"] for e in container["env"]}


def test_one_off_backfill_job() -> None:
    doc = load("job-backfill.yaml")
    assert doc["kind"] == "Job"
    args = container_of(doc["spec"])["args"]
    assert "backfill" in args and "--table" in args


def test_crontab_lines_run_bounded_sncli_commands() -> None:
    lines = [
        line for line in (CRON / "crontab.example").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) >= 3
    for line in lines:
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        command = shlex.split(fields[5].split(";")[-1])
        assert command[0] == "$SNCLI"
        if "poll" in command or "drain" in command:
            assert "--max-seconds" in command
        assert "flock" not in line  # sncli takes its own run lock


def test_dockerfile_installs_the_package_and_runs_unprivileged() -> None:
    text = (CRON / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9][-.a-z0-9]*@sha256:[0-9a-f]{64}$", text, re.M)  # pinned by digest
    assert "pip install ." in text
    assert re.search(r"^USER \d+", text, re.M)
    assert 'ENTRYPOINT ["sncli"]' in text
