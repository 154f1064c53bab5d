"""The dependency floors in pyproject.toml do not admit releases with published security advisories.

A floor such as ``orjson>=3.9`` lets a resolver (or a pinned lock file someone
made from it) pick a release with a known hole. The table below is the
advisory data: the first fixed release of each package sncli depends on,
with the advisory that makes it the floor. Add a row when an advisory is
published, and raise the floor with it.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

FIRST_FIXED = {
    "orjson": ("3.11.6", "CVE-2024-27454 (3.9.15), CVE-2025-67221: unbounded recursion on deeply nested input"),
    "requests": ("2.33.0", "CVE-2024-35195 (2.32.0): verify=False sticks to a session; CVE-2024-47081 (2.32.4): "
                           ".netrc leak; CVE-2026-25645 (2.33.0)"),
    "urllib3": ("2.7.0", "CVE-2024-37891 (2.2.2), CVE-2025-50181/50182 (2.5.0), CVE-2025-66418/66471 (2.6.0), "
                         "CVE-2026-21441 (2.6.3), CVE-2026-44431/44432 (2.7.0): redirects and decompression bombs"),
    "certifi": ("2024.7.4", "CVE-2024-39689: GLOBALTRUST roots removed"),
    "pyarrow": ("14.0.1", "CVE-2023-47248: arbitrary code execution from a crafted IPC/Parquet file"),
    "pydantic": ("2.4.0", "CVE-2024-3772: ReDoS in email validation"),
    "pyyaml": ("5.4", "CVE-2020-14343: arbitrary code execution via full_load"),
}


def requirements() -> dict[str, Requirement]:
    data = tomllib.loads(PYPROJECT.read_text())
    reqs = (Requirement(text) for text in data["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def floor(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(bounds) if bounds else None


@pytest.mark.parametrize("name", sorted(FIRST_FIXED))
def test_the_floor_is_at_or_past_the_first_fixed_release(name: str) -> None:
    requirement = requirements().get(name)
    assert requirement is not None, f"{name} is not a declared dependency"
    fixed, advisory = FIRST_FIXED[name]
    lowest = floor(requirement)
    assert lowest is not None and lowest >= Version(fixed), f"{requirement} admits releases before {fixed}: {advisory}"


@pytest.mark.parametrize("name", sorted(FIRST_FIXED))
def test_the_installed_release_satisfies_the_floor(name: str) -> None:
    requirement = requirements()[name]
    assert requirement.specifier.contains(version(name), prereleases=True), (name, version(name))
