"""Local stand-ins for remote services: a ServiceNow Table API emulator (and, elsewhere in this
package, a Schema Registry).

The ServiceNow emulator lives in :mod:`sncli.emulator.server` (``ServiceNowEmulator``), its data in
:mod:`sncli.emulator.state` (``EmulatorState``) and its fault rules in :mod:`sncli.emulator.faults`
(``Fault``). They are imported lazily here so importing one sibling module stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EmulatorState", "Fault", "ServiceNowEmulator"]


def __getattr__(name: str) -> Any:
    if name == "ServiceNowEmulator":
        from sncli.emulator.server import ServiceNowEmulator

        return ServiceNowEmulator
    if name == "EmulatorState":
        from sncli.emulator.state import EmulatorState

        return EmulatorState
    if name == "Fault":
        from sncli.emulator.faults import Fault

        return Fault
    raise AttributeError(name)
