"""blume_share_dispatcher: validates share requests, applies policy and consent, owns share state.

The public API, for the composition root (the CLI): the worker, and the share record that
``status`` and ``send`` report.
"""

from typing import Final

from blume_share_dispatcher.accounts import ProjectedAccount
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import NAME, build

TABLES: Final = (Share, ProjectedAccount)
"""The tables of this service, all in its own schema (named ``NAME``); the migrations
create them, and ``blume-share``'s schema check compares them with the database."""

__all__ = ["NAME", "TABLES", "Share", "ShareState", "build"]
