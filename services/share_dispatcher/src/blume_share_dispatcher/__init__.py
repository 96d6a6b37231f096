"""blume_share_dispatcher: validates share requests, applies policy and consent, owns share state.

The public API, for the composition root (the CLI): the worker, and the share record that
``status`` and ``send`` report.
"""

from blume_share_dispatcher.models import Share, ShareState
from blume_share_dispatcher.service import NAME, build

__all__ = ["NAME", "Share", "ShareState", "build"]
