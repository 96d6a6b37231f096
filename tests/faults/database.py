"""A PostgreSQL cluster of the suite's own: ``initdb`` and ``pg_ctl`` on its own port and data
directory, so that ``restart -m immediate`` never touches the shared server on 5432.

PostgreSQL refuses to run as root; as root, the cluster belongs to (and its commands run
as) an unprivileged operating-system user, ``postgres`` by default.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Final

from tests.faults.processes import FaultSuiteError, free_port, run_tool

PG_TIMEOUT: Final = 120.0
DATABASE: Final = "blume"


def postgres_bin_dir(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if found := shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    raise FaultSuiteError("pg_ctl not found: install PostgreSQL or pass --postgres-bin")


class PostgresCluster:
    def __init__(self, workdir: Path, bin_dir: Path, os_user: str) -> None:
        self._bin = bin_dir
        self.home = workdir / "postgres"
        self.data = self.home / "data"
        self.port = free_port()
        self._run_as = os_user if os.geteuid() == 0 else None

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self._bin / tool), *args]
        if self._run_as is None:
            return command
        return ["runuser", "-u", self._run_as, "--", *command]

    def _run(self, tool: str, *args: str) -> None:
        run_tool(self._command(tool, *args), label=f"{tool} on {self.data}", timeout=PG_TIMEOUT)

    def start(self) -> None:
        """initdb (trust on 127.0.0.1 only), start, and create the suite's database."""
        self.home.mkdir(parents=True)
        if self._run_as is not None:
            account = pwd.getpwnam(self._run_as)
            os.chown(self.home, account.pw_uid, account.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.home} -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-o", options, "-w", "start"
        )
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def restart_immediate(self) -> None:
        """``pg_ctl restart -m immediate``: every backend dies without a checkpoint, then the
        server recovers from its WAL, as after a crash."""
        # -l again: without it the restarted server writes to pg_ctl's (captured) stdout.
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log_file),
            "-m",
            "immediate",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (FaultSuiteError, subprocess.TimeoutExpired) as error:
                print(f"cleanup: could not stop PostgreSQL in {self.data}: {error}")
