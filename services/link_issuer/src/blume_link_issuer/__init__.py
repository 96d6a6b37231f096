"""blume_link_issuer: mints the secure link for an accepted external share.

The public API, for the composition root (the CLI): the worker.
"""

from typing import Final

from blume_link_issuer.models import SecureLink
from blume_link_issuer.service import NAME, build

TABLES: Final = (SecureLink,)
"""The secure links: this service's table, in its schema (``NAME``)."""

__all__ = ["NAME", "TABLES", "build"]
