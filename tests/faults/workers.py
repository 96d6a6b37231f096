"""Every worker as its own ``blume-share run <service>`` process, and whether its consumers
are attached.

Readiness is each process's own ``GET /readyz`` on its ``BLUME_OPS_PORT`` when the runtime
has an ops port. Until then the fallback asks the cluster how many consumers each worker's
queue has: one process per service consumes that queue, so a consumer there is its.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from blume_runtime.settings import Settings
from blume_runtime.topology import QueueSpec

from tests.faults.processes import FaultSuiteError, end_process, free_port, run_tool, spawn

READY_POLL_SECONDS: Final = 0.5


def runtime_has_ops_port() -> bool:
    return "ops_port" in Settings.model_fields


def blume_share_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "blume_share", *args]


def run_cli(env: Mapping[str, str], *args: str, timeout: float = 300.0) -> str:
    """Run a ``blume-share`` command; its stdout, or FaultSuiteError with its stderr."""
    label = f"blume-share {' '.join(args[:2])}"
    return run_tool(blume_share_command(*args), label=label, timeout=timeout, env=env)


@dataclass
class WorkerProcess:
    service: str
    ops_port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    """Set while the suite itself has killed it, so the watchdog does not count that."""
    unexpected_exits: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Workers:
    def __init__(
        self, services: list[str], env: Callable[[str], Mapping[str, str]], logs: Path
    ) -> None:
        """``env(service)``: the environment that service's process runs with."""
        self._env = env
        self.processes = {
            name: WorkerProcess(name, free_port(), logs / f"{name}.log") for name in services
        }

    def start(self, name: str) -> None:
        worker = self.processes[name]
        env = {**self._env(name), "BLUME_OPS_PORT": str(worker.ops_port)}
        worker.process = spawn(blume_share_command("run", name), env, worker.log_file)
        worker.expected_exit = False

    def start_all(self) -> None:
        for name in self.processes:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no clean close; unacked messages go back to the queue."""
        worker = self.processes[name]
        worker.expected_exit = True
        if worker.process is not None and worker.process.poll() is None:
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=30)

    def restart_crashed(self) -> list[str]:
        """Restart (as an orchestrator would) any worker that died without being killed."""
        restarted = []
        for name, worker in self.processes.items():
            if worker.process is not None and not worker.alive and not worker.expected_exit:
                worker.unexpected_exits += 1
                restarted.append(name)
                self.start(name)
        return restarted

    def stop_all(self) -> None:
        for worker in self.processes.values():
            worker.expected_exit = True
            if worker.process is not None:
                end_process(worker.process)


class Readiness:
    """Per worker: are its consumers attached right now?"""

    def __init__(self, workers: Workers, queue_consumers: Callable[[], dict[str, int]]) -> None:
        self._workers = workers
        self._queue_consumers = queue_consumers
        self.mode = "readyz" if runtime_has_ops_port() else "rabbitmqctl list_consumers"

    async def ready(self) -> dict[str, bool]:
        if self.mode == "readyz":
            async with httpx.AsyncClient(timeout=2.0) as client:
                answers = await asyncio.gather(
                    *(self._readyz(client, worker) for worker in self._workers.processes.values())
                )
            return dict(zip(self._workers.processes, answers, strict=True))
        try:
            counts = await asyncio.to_thread(self._queue_consumers)
        except (FaultSuiteError, subprocess.TimeoutExpired):
            return dict.fromkeys(self._workers.processes, False)
        return {
            name: counts.get(QueueSpec(name, ()).name, 0) > 0 for name in self._workers.processes
        }

    @staticmethod
    async def _readyz(client: httpx.AsyncClient, worker: WorkerProcess) -> bool:
        try:
            answer = await client.get(f"http://127.0.0.1:{worker.ops_port}/readyz")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def wait_all(self, deadline_seconds: float) -> dict[str, float | None]:
        """Seconds until each worker was ready (None: not within the deadline)."""
        started = time.monotonic()
        took: dict[str, float | None] = dict.fromkeys(self._workers.processes)
        while time.monotonic() - started < deadline_seconds:
            for name, ready in (await self.ready()).items():
                if ready and took[name] is None:
                    took[name] = time.monotonic() - started
            if all(value is not None for value in took.values()):
                break
            await asyncio.sleep(READY_POLL_SECONDS)
        return took
