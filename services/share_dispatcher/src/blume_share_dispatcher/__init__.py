"""blume_share_dispatcher: validates share requests, applies policy and consent, owns share state.

The public API, for the composition root (the CLI): the worker, and the share record that
``status`` and ``send`` report.
"""

from typing import Final

from blume_share_dispatcher.accounts import ProjectedAccount
from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import NAME, build

TABLES: Final = (Share, ProjectedAccount)
"""The shares and the dispatcher's projection of patient accounts: this service's tables, in
its schema (``NAME``)."""

__all__ = ["NAME", "TABLES", "Share", "ShareState", "build"]
