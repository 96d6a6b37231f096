"""One lifecycle: the runtime starts its components in order and stops them in reverse."""

from __future__ import annotations

from pathlib import Path

import pytest
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.lifecycle import start_all, stop_all
from blume_runtime.service import Service
from blume_runtime.settings import Settings

from runtime.tests.db_support import NO_AUDIT_STORE


class Recorded:
    """A component that writes its starts and stops into a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


async def test_a_service_component_runs_before_the_workers_and_an_added_one_after(
    db: Database, tmp_path: Path
) -> None:
    """A service's component starts first and stops last; an added one (the web server)
    starts last and stops first, and the runtime consumes between them."""
    journal: list[str] = []
    service = Service("probe")
    service.components.append(Recorded("sealer", journal))
    runtime = Runtime(Settings(state_dir=tmp_path, audit_copies=NO_AUDIT_STORE), [service], db)
    runtime.add(Recorded("web", journal))
    await runtime.start()
    journal.append("running")
    await runtime.stop()
    assert journal == ["start sealer", "start web", "running", "stop web", "stop sealer"]


async def test_a_component_that_cannot_start_stops_those_already_started() -> None:
    """Nothing is left running when one part fails to start; the failure is raised."""
    journal: list[str] = []
    parts = [
        Recorded("a", journal),
        Recorded("b", journal),
        Recorded("c", journal, fail_start=True),
    ]
    with pytest.raises(RuntimeError, match="c cannot start"):
        await start_all(parts)
    assert journal == ["start a", "start b", "stop b", "stop a"]


async def test_one_failing_stop_does_not_keep_the_others_running() -> None:
    """Every component is asked to stop; the first failure is raised afterwards."""
    journal: list[str] = []

    class Stuck(Recorded):
        async def stop(self) -> None:
            raise OSError("stuck")

    parts = [Recorded("a", journal), Stuck("b", journal), Recorded("c", journal)]
    with pytest.raises(OSError, match="stuck"):
        await stop_all(parts)
    assert journal == ["stop c", "stop a"]
