"""Starting and ending the processes the suite owns, and picking ports for them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class FaultSuiteError(RuntimeError):
    """The suite could not set up or inject a fault (not a finding about the system)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_tool(
    command: Sequence[str], *, label: str, timeout: float, env: Mapping[str, str] | None = None
) -> str:
    """Run a command to completion: its stdout, or FaultSuiteError with the end of its output.

    ``label`` names the command in that error: never the whole command line, which may
    hold a password.
    """
    done = subprocess.run(
        list(command),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise FaultSuiteError(f"{label} exited {done.returncode}: {tail}")
    return done.stdout


def spawn(command: Sequence[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, appending its output to ``log_file``.

    Its own session keeps a Ctrl-C at the terminal away from it: the suite decides when
    and how each of its processes ends.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            list(command),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def end_process(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process's session, then SIGKILL it if it has not ended within ``grace``."""
    if process.poll() is not None:
        return
    _signal_session(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_session(process, signal.SIGKILL)
        process.wait(timeout=grace)


def _signal_session(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # the session leader's pid is its group id
