"""The deployed topology for a benchmark: one ``blume-share run <worker>`` process per
worker, each with an ops port of its own and its output in a log file (shown if it does not
start)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aio_pika
from blume_runtime.settings import Settings
from blume_share.services import SERVICES

from bench.harness import BenchError, free_port


def _worker_environment(settings: Settings, state_dir: str) -> dict[str, str]:
    assert settings.amqp_url is not None
    assert settings.database_url is not None
    assert settings.token_sealing_key is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.update(
        BLUME_AMQP_URL=settings.amqp_url.get_secret_value(),
        BLUME_DATABASE_URL=settings.database_url.get_secret_value(),
        BLUME_SMTP_URL=settings.smtp_url or "",
        BLUME_TOKEN_SEALING_KEY=settings.token_sealing_key.get_secret_value(),
        BLUME_LOG_LEVEL="WARNING",
        BLUME_LOG_FORMAT="json",
        BLUME_STATE_DIR=state_dir,
        BLUME_OPS_PORT="0",  # one process per worker: they cannot all have the default port
    )
    return env


def spawn_worker_processes(
    settings: Settings, state_dir: str
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """One ``blume-share run <worker>`` process per worker, as a deployment runs them, each
    with an ops port of its own (its ``/metrics`` are read before and after the window)."""
    env = _worker_environment(settings, state_dir)
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    for name in SERVICES:
        ports.append(free_port())
        with open(_log_path(state_dir, name), "wb") as log:  # the child keeps its own copy
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "blume_share", "run", name],
                    env={**env, "BLUME_OPS_PORT": str(ports[-1])},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes, ports


def _log_path(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, f"{name}.log")


def _log_tail(state_dir: str, name: str) -> str:
    try:
        with open(_log_path(state_dir, name), "rb") as log:
            return log.read()[-2000:].decode(errors="replace")
    except OSError:
        return "(no log)"


async def wait_for_workers(settings: Settings, state_dir: str) -> None:
    assert settings.amqp_url is not None
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        for name in SERVICES:  # ready once each worker has declared its queue
            for _ in range(1200):  # importing takes 20 s or more on a busy machine
                channel = await connection.channel()
                try:
                    await channel.declare_queue(f"blume.share.{name}", passive=True)
                    break
                except aio_pika.exceptions.ChannelClosed:
                    await asyncio.sleep(0.1)
            else:
                tail = _log_tail(state_dir, name)
                raise BenchError(f"worker {name} did not start; its log ends:\n{tail}")


def stop_worker_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
