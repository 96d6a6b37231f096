"""access_gateway: the recipient's and the patient's web pages, and the projections behind them.

The public API, for the composition root (the CLI): the worker that keeps the projections
(``NAME``, ``build``), how it tells it is current (``Freshness``, ``queue_probe``), and the
HTTP server (``HttpServer``) with its settings.
"""

from typing import Final

from blume_access_gateway.freshness import Freshness, queue_probe
from blume_access_gateway.models import (
    LinkGrant,
    OtpChallenge,
    ProjectedAccount,
    ProjectedEntry,
    ProjectedLink,
    ProjectedRevocation,
)
from blume_access_gateway.projections import NAME, build
from blume_access_gateway.server import HttpServer
from blume_access_gateway.settings import GatewayConfigError, GatewaySettings

TABLES: Final = (
    OtpChallenge,
    LinkGrant,
    ProjectedLink,
    ProjectedRevocation,
    ProjectedAccount,
    ProjectedEntry,
)
"""The tables of this service, all in its own schema (named ``NAME``); the migrations
create them, and ``blume-share``'s schema check compares them with the database."""

__all__ = [
    "NAME",
    "TABLES",
    "Freshness",
    "GatewayConfigError",
    "GatewaySettings",
    "HttpServer",
    "build",
    "queue_probe",
]
