"""Where a command's logs go: JSON on stderr in production, a file per command when embedded.

On RabbitMQ (``BLUME_AMQP_URL`` set) the logs stay on stderr, as a container platform
collects them. On the embedded default they would bury what a newcomer asked to see, so
each command writes them to a file of its own, ``BLUME_STATE_DIR/logs/<UTC time>-<pid>.jsonl``,
and says where; the newest ``KEEP`` files are kept.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO, cast

from blume_runtime.logging import configure_logging
from blume_runtime.settings import Settings

from blume_share.state_dir import PRIVATE_FILE, private_directory

KEEP: Final = 20
"""How many command logs the embedded default keeps; older ones go when a new one starts."""
SUFFIX: Final = ".jsonl"


class CommandLog:
    """A log file created on the first line written, so a command that logs nothing leaves none.

    Each line is appended and the file closed again: a command that crashes leaves every
    line it wrote, and no handle stays open behind a long-lived test process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[str] = []
        self._started = False

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        if not self._pending:
            return
        if not self._started:
            private_directory(self.path.parent)
            _remove_oldest(self.path.parent, keep=KEEP - 1)
            self._started = True
        # Created owner-only: a log line can name a share, a tenant or a client address.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        with os.fdopen(descriptor, "a", encoding="utf-8") as file:
            file.write("".join(self._pending))
        self._pending.clear()

    def isatty(self) -> bool:
        return False


def _remove_oldest(directory: Path, *, keep: int) -> None:
    # The names start with the UTC time, so name order is age order.
    logs = sorted(directory.glob(f"*{SUFFIX}"))
    for old in logs[: max(len(logs) - keep, 0)]:
        old.unlink(missing_ok=True)


def start_logging(settings: Settings) -> Path | None:
    """Configure this command's logs; on the embedded default, return the file they go to."""
    if not settings.embedded_broker:
        configure_logging(settings.log_level, settings.log_format)
        return None
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    log = CommandLog(settings.state_dir.resolve() / "logs" / f"{started}Z-{os.getpid()}{SUFFIX}")
    configure_logging(settings.log_level, settings.log_format, stream=cast(TextIO, log))
    return log.path
