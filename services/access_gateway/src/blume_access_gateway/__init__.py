"""access_gateway: the recipient's and the patient's web pages, and the projections behind them.

The public API, for the composition root (the CLI): the worker that keeps the projections
(``NAME``, ``build``), how it tells it is current (``Freshness``, ``queue_probe``), and the
HTTP server (``HttpServer``; ``ThreadedHttpServer`` beside workers, with ``on_loop`` to
probe the queue from its thread) with its settings; the launch clients OmegaAI's backend
authenticates with (``create_launch_client``, ``launch_clients``, ``revoke_launch_client``);
its tables (``TABLES``, from ``models``).
"""

from blume_access_gateway.freshness import Freshness, queue_probe
from blume_access_gateway.launches import (
    create_launch_client,
    launch_clients,
    revoke_launch_client,
)
from blume_access_gateway.models import TABLES
from blume_access_gateway.projections import NAME, build
from blume_access_gateway.server import HttpServer, ThreadedHttpServer, on_loop
from blume_access_gateway.settings import GatewayConfigError, GatewaySettings

__all__ = [
    "NAME",
    "TABLES",
    "Freshness",
    "GatewayConfigError",
    "GatewaySettings",
    "HttpServer",
    "ThreadedHttpServer",
    "build",
    "create_launch_client",
    "launch_clients",
    "on_loop",
    "queue_probe",
    "revoke_launch_client",
]
