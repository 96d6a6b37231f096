"""The URLs the product hands out, each shape written once.

The link issuer mints links, the notifier emails portal links and the gateway serves both:
they agree because they build and route them with these. Base URLs come from the settings,
which normalise them (``base_url``), so nothing else strips slashes.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LINK_ROUTE: Final = "/s/{token}"
"""The recipient's link page under the public base URL; its path carries only the token."""
LINK_CODE_ROUTE: Final = f"{LINK_ROUTE}/code"
PORTAL_MOUNT: Final = "/blume"
UNSUBSCRIBE_ROUTE: Final = "/unsubscribe/{token}"
"""A Blume email's List-Unsubscribe target: GET confirms, POST (RFC 8058 one-click) acts."""
SIGN_OUT_ROUTE: Final = "/sign-out"
"""POST (with CSRF): ends this browser's sessions, a patient's and a recipient's alike."""
SIGNED_OUT_ROUTE: Final = "/signed-out"
"""Where the gateway serves the patient portal; the default portal base URL ends with it."""
PORTAL_STUDY_ROUTE: Final = "/studies/{entry_id}"
"""A patient's study under the portal base URL; its path carries only the opaque entry id."""
VIEWER_TICKET_PARAMETER: Final = "ticket"
LAUNCH_ROUTE: Final = "/share/{launch_id}"
"""The sender's one-time launch URL; its path carries only the opaque launch id."""
SHARES_API_ROUTE: Final = "/api/v1/shares/{share_id}"
"""A share's status for a launch client (server to server; never exposed publicly)."""


def base_url(url: str) -> str:
    """A base URL with no trailing slash, so ``base + route`` never doubles one."""
    return url.rstrip("/")


def link_url(public_base_url: str, token: str) -> str:
    """The recipient link: the public base and the opaque token, nothing else."""
    return public_base_url + LINK_ROUTE.format(token=token)


def launch_url(public_base_url: str, launch_id: str) -> str:
    """The sender's launch URL: the public base and the opaque launch id, nothing else."""
    return public_base_url + LAUNCH_ROUTE.format(launch_id=launch_id)


def portal_study_url(portal_base_url: str, entry_id: str) -> str:
    """The patient's study in the portal: the portal base and the opaque entry id."""
    return portal_base_url + PORTAL_STUDY_ROUTE.format(entry_id=entry_id)


def portal_study_path(entry_id: str) -> str:
    """The same study as a path on the gateway (where a sign-in returns to)."""
    return PORTAL_MOUNT + PORTAL_STUDY_ROUTE.format(entry_id=entry_id)


def viewer_url(tenant_viewer_url: str, ticket: str) -> str:
    """The tenant's viewer URL with the one-use ``ticket`` added to whatever query it has."""
    parts = urlsplit(tenant_viewer_url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), (VIEWER_TICKET_PARAMETER, ticket)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def unsubscribe_url(public_base_url: str, token: str) -> str:
    """The one-click unsubscribe URL of a Blume email; ``token`` is opaque (sealed)."""
    return public_base_url + UNSUBSCRIBE_ROUTE.format(token=token)
