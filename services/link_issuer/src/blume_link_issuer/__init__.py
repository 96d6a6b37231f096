"""blume_link_issuer: mints the secure link for an accepted external share.

The public API, for the composition root (the CLI): the worker.
"""

from typing import Final

from blume_link_issuer.models import SecureLink
from blume_link_issuer.service import NAME, build

TABLES: Final = (SecureLink,)
"""The tables of this service, all in its own schema (named ``NAME``); the migrations
create them, and ``blume-share``'s schema check compares them with the database."""

__all__ = ["NAME", "TABLES", "build"]
