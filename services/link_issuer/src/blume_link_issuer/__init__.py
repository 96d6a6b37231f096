"""blume_link_issuer: mints the secure link for an accepted external share.

The public API, for the composition root (the CLI): the worker.
"""

from blume_link_issuer.service import NAME, build

__all__ = ["NAME", "build"]
