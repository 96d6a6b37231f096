"""Blume Share's upstream client: what OmegaAI's backend (or any upstream system) needs.

- ``ShareClient.send`` / ``.revoke``: publish ``study.send.requested`` and
  ``share.revoke.requested`` on ``blume.share`` with publisher confirms (kombu);
- ``OutcomeConsumer``: the outcome events (accepted, rejected, completed, failed, revoked)
  from a durable queue of the caller's, each parsed into its contract model;
- ``LaunchClient.create_launch``: open the sender's sharing page (``POST /api/v1/launches``).

It depends on the contracts (``blume_contracts``), kombu and httpx, never on the workers.
"""

from blume_contracts.launches import LaunchCreated

from blume_share_client.client import ShareClient
from blume_share_client.errors import (
    BlumeShareError,
    InvalidRequestError,
    LaunchError,
    LaunchForbiddenError,
    LaunchRejectedError,
    LaunchUnauthorizedError,
    PublishError,
)
from blume_share_client.launches import LaunchClient
from blume_share_client.outcomes import (
    OUTCOME_MODELS,
    Outcome,
    OutcomeConsumer,
    OutcomeData,
    TopologyError,
)

__all__ = [
    "OUTCOME_MODELS",
    "BlumeShareError",
    "InvalidRequestError",
    "LaunchClient",
    "LaunchCreated",
    "LaunchError",
    "LaunchForbiddenError",
    "LaunchRejectedError",
    "LaunchUnauthorizedError",
    "Outcome",
    "OutcomeConsumer",
    "OutcomeData",
    "PublishError",
    "ShareClient",
    "TopologyError",
]
