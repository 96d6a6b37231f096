"""Processes the deploy tests start the way a container would, and what they answer."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Started:
    """A process with its output in a log file; stopped with SIGTERM, as Kubernetes does."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Started:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until(self, url: str, timeout: float = 60) -> bytes:
        """The body of the first 200 answer from url; fails the test if the process exits
        or nothing answers 200 in time."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    body: bytes = answer.read()
                    return body
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}"
            except OSError as error:
                last = str(error)
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited {self.process.returncode}:\n{self.logs()[-4000:]}")
            time.sleep(0.2)
        pytest.fail(f"{self.name}: {url} gave {last} for {timeout} s:\n{self.logs()[-4000:]}")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.name} never logged {text!r}:\n{self.logs()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def get_status(url: str) -> tuple[int, str]:
    """Status and body of a GET, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
