"""blume_notifier: renders the share emails (HTML + text, en-CA and fr-CA) and sends them.

The public API, for the composition root (the CLI): the worker.
"""

from typing import Final

from blume_notifier.models import Notification
from blume_notifier.service import NAME, build

TABLES: Final = (Notification,)
"""The record of each email sent: this service's table, in its schema (``NAME``)."""

__all__ = ["NAME", "TABLES", "build"]
