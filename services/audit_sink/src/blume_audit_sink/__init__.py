"""blume_audit_sink: the hash-chained audit store and the worker that feeds it.

What other packages may call is exported here; the modules behind it are the sink's own.
"""

from blume_audit_sink.search import share_seen

__all__ = ["share_seen"]
