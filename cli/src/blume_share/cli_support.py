"""What every ``blume-share`` command shares: settings, exit codes, error reporting."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from blume_runtime.dead_letters import Operator
from blume_runtime.settings import Settings
from pydantic import ValidationError

from blume_share import operations
from blume_share.logfiles import start_logging
from blume_share.state_dir import secure_state_dir


class Exit(IntEnum):
    """What ``blume-share`` exits with, beside 0."""

    NO = 1
    """The answer is no: a rejected share, a failed verification, nothing found."""
    BAD_INPUT = 2
    UNAVAILABLE = 3
    """A service the command needs does not answer (the runtime exits with it too)."""


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 entries`` (``plural`` where adding "s" is wrong)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"blume-share: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The ``BLUME_*`` settings, with this command's logs configured (``logfiles``)."""
    return load_settings_and_log()[0]


def ready_settings() -> Settings:
    """``load_settings``; on the embedded default its SQLite file is migrated first."""
    settings = load_settings()
    operations.prepare_embedded(settings)
    return settings


def load_settings_and_log() -> tuple[Settings, Path | None]:
    """``load_settings``, and the file the logs go to on the embedded default."""
    try:
        settings = Settings()
    except ValidationError as error:
        fail(f"invalid BLUME_* environment: {error}", Exit.BAD_INPUT)
    secure_state_dir(settings)
    return settings, start_logging(settings)


def current_operator(settings: Settings) -> Operator:
    """The OS account from the OS itself (not $USER), and BLUME_OPERATOR as self-asserted."""
    try:
        account = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        account = f"uid:{os.getuid()}"
    return Operator(os_user=account, asserted=settings.operator, host=socket.gethostname())


def run_async(coroutine: Any) -> Any:
    """Run a coroutine, turning an unreachable service into exit code 3 with a clear message."""
    try:
        return asyncio.run(coroutine)
    except (ConnectionError, OSError, TimeoutError) as error:
        fail(f"service unreachable: {error}", Exit.UNAVAILABLE)
    except Exception as error:
        if type(error).__module__.startswith(("sqlalchemy", "aiormq", "aio_pika", "psycopg")):
            fail(f"service unreachable or misconfigured: {error}", Exit.UNAVAILABLE)
        raise
