"""What each recipient step answers (``access.RecipientAccess``), for the routes to show.

Every answer but the browser's own session carries the link's ``LinkLookup``: the routes
need it for the page (its organisation, its locale) whatever the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from blume_contracts.events import DenialReason

from blume_access_gateway import otp
from blume_access_gateway.links import LinkLookup, LinkState
from blume_access_gateway.oidc import Provider
from blume_access_gateway.sessions import AccessSession, StartedSession

_DENIAL_FOR_STATE: Final[dict[LinkState, DenialReason]] = {
    LinkState.UNKNOWN: "unknown",
    LinkState.EXPIRED: "expired",
    LinkState.REVOKED: "revoked",
    LinkState.NOT_CURRENT: "not_current",
}
DENIAL_FOR_CODE: Final[dict[otp.CodeVerdict, DenialReason]] = {
    otp.CodeVerdict.WRONG: "wrong_code",
    otp.CodeVerdict.LOCKED: "locked",
    otp.CodeVerdict.EXHAUSTED: "code_attempts_exhausted",
    otp.CodeVerdict.EXPIRED: "code_expired",
}


def denial_reason(state: LinkState) -> DenialReason:
    """Why a link that is not usable is refused (a usable one is not)."""
    return _DENIAL_FOR_STATE[state]


@dataclass(frozen=True, slots=True)
class Outcome:
    lookup: LinkLookup


@dataclass(frozen=True, slots=True)
class Refused(Outcome):
    reason: DenialReason
    tries_left: int = 0
    retry_after_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Granted(Outcome):
    """The viewer may open: ``viewer_redirect`` carries its short-lived ticket."""

    session: AccessSession
    viewer_redirect: str
    new_session: StartedSession | None = None
    """Set for a new use: the ``access`` cookie to write. None within a live session, whose
    cookie is left as it is (pressing again never extends it)."""


@dataclass(frozen=True, slots=True)
class CodeSent(Outcome):
    challenge_id: str


@dataclass(frozen=True, slots=True)
class SignInNeeded(Outcome):
    provider: Provider


@dataclass(frozen=True, slots=True)
class Unavailable(Outcome):
    """The link is fine but its tenant's policy cannot serve it (ops must fix the policy)."""


Answer = Refused | Granted | Unavailable
"""What a step ends in when it sends no code and starts no sign-in: the route answers it."""
ViewOutcome = Answer | CodeSent | SignInNeeded
