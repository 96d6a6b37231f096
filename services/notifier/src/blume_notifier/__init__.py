"""blume_notifier: renders the share emails (HTML + text, en-CA and fr-CA) and sends them.

The public API, for the composition root (the CLI): the worker.
"""

from typing import Final

from blume_notifier.models import Notification
from blume_notifier.service import NAME, build

TABLES: Final = (Notification,)
"""The tables of this service, all in its own schema (named ``NAME``); the migrations
create them, and ``blume-share``'s schema check compares them with the database."""

__all__ = ["NAME", "TABLES", "build"]
