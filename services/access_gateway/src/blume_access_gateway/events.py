"""The gateway as a producer of events.

It writes its changes and events through the runtime's unit of work
(``blume_runtime.unit_of_work``): one transaction, then the relay; ids are random, since no
originating message exists (two opens of the same link are two events).
"""

from __future__ import annotations

from typing import Final

UNKNOWN_TENANT: Final = "_unknown"
"""The envelope tenant of denials for tokens that match no link (no tenant id can start
with an underscore, so this chain is never a tenant's)."""
