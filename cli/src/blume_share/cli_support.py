"""What every ``blume-share`` command shares: settings, exit codes, error reporting."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import typer
from blume_runtime.logging import configure_logging
from blume_runtime.settings import Settings
from pydantic import ValidationError

EXIT_NO = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"blume-share: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        fail(f"invalid BLUME_* environment: {error}", EXIT_BAD_INPUT)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_async(coroutine: Any) -> Any:
    """Run a coroutine, turning an unreachable service into exit code 3 with a clear message."""
    try:
        return asyncio.run(coroutine)
    except (ConnectionError, OSError, TimeoutError) as error:
        fail(f"service unreachable: {error}", EXIT_UNAVAILABLE)
    except Exception as error:
        if type(error).__module__.startswith(("sqlalchemy", "aiormq", "aio_pika", "psycopg")):
            fail(f"service unreachable or misconfigured: {error}", EXIT_UNAVAILABLE)
        raise
