"""blume_notifier: renders the share emails (HTML + text, en-CA and fr-CA) and sends them.

The public API, for the composition root (the CLI): the worker.
"""

from blume_notifier.service import NAME, build

__all__ = ["NAME", "build"]
