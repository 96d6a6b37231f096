"""What the gateway's scoped image proxy costs: every rendered frame of the 60-slice CT series
fetched through ``/view/<handle>/series/1/frames/<k>`` against the same frames fetched
directly from Orthanc's DICOMweb ``/rendered``, in the same run, sequentially and 6 at a
time (a browser's connections per host).

Real services throughout: Orthanc with its DICOMweb plugin on free ports (``tests.pacs``,
as the viewer tests use it, with the synthesised study uploaded), RabbitMQ and PostgreSQL
(a fresh database and vhost, removed at the end), and the workers wired as
``blume-share run`` wires them, the gateway served as it serves it: over HTTP from a thread
of its own (``ThreadedHttpServer``, its settings from ``BLUME_*`` variables). A share of the
study is sent; the link page is opened and "View study" pressed over HTTP, as a browser
would, so every proxied frame runs the real grant check, handle check and rate limit.

Each timed window fetches the series ``--passes`` times over (3: 180 frames, about 0.7 s
direct), so one window is long enough that a scheduling hiccup moves it little. A round
times one direct window and one proxied window back to back, so both see the same machine
load, and its ratio is theirs; the ratio reported is the median over ``--rounds`` rounds,
with its spread (lowest and highest).

Run: ``uv run python -m bench.viewer_proxy [--rounds N] [--passes P]``; prints, for each
mode, the median frames/s of each path and the median ratio proxy/direct with its spread,
and the CPU the gateway's thread spent per proxied frame, which other load on the machine
sways less than the ratio; exits 1 when a median ratio is under the goal of 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from blume_access_gateway import NAME as GATEWAY
from blume_access_gateway import (
    Freshness,
    GatewaySettings,
    ThreadedHttpServer,
    build,
    on_loop,
    queue_probe,
)
from blume_runtime.app import Runtime
from blume_runtime.db import Database
from blume_runtime.settings import Settings
from blume_share.requests import parse_requests
from blume_share.services import SERVICES

from bench.gateway_latency import Links, isolated_settings, start_bench, until
from tests.pacs import Pacs, start_pacs

GOAL: Final = 0.8
PARALLEL: Final = 6
TENANT: Final = "demo-hospital"
WORKERS: Final = ("share_dispatcher", "link_issuer", "audit_sink")
_CSRF: Final = re.compile(r'name="csrf" value="([^"]+)"')
EXAMPLE: Final = (
    Path(__file__).resolve().parents[1] / "contracts/examples/study.send.requested.json"
)

GATEWAY_ENVIRONMENT: Final = {
    "BLUME_GATEWAY_SECRET_KEY": "bench-secret-" + "x" * 40,
    "BLUME_COOKIE_SECURE": "false",
    "BLUME_HTTP_HOST": "127.0.0.1",
    "BLUME_HTTP_PORT": "0",
    # Each round fetches the series twice per mode: many rounds pass the default 1200/minute.
    "BLUME_RATE_LIMIT_VIEWER": "100000/minute",
}
"""What ``GatewaySettings`` reads from the environment here, as a deployment sets it."""
GATEWAY_THREAD: Final = "access-gateway-http"
"""The name ``ThreadedHttpServer`` gives the thread it serves from."""

Fetch = Callable[[httpx.AsyncClient, int], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Timing:
    """One mode's rounds: each round's direct and proxied window, timed back to back."""

    mode: str
    frames: int
    """Frames per window."""
    direct_seconds: tuple[float, ...]
    proxy_seconds: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        """Each round's proxy throughput as a share of its direct throughput (1.0: the
        proxy costs nothing)."""
        return [d / p for d, p in zip(self.direct_seconds, self.proxy_seconds, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def line(self) -> str:
        direct = statistics.median(self.direct_seconds)
        proxy = statistics.median(self.proxy_seconds)
        ratios = self.ratios
        return (
            f"{self.mode:>10}: {self.frames} frames x {len(ratios)} rounds, medians"
            f"  direct {self.frames / direct:6.1f} frames/s ({direct * 1000:5.0f} ms)"
            f"  proxy {self.frames / proxy:6.1f} frames/s ({proxy * 1000:5.0f} ms)"
            f"  ratio {self.ratio:.2f} (spread {min(ratios):.2f}-{max(ratios):.2f};"
            f" goal >= {GOAL})"
        )


def policy_file(directory: Path, pacs: Pacs) -> Path:
    path = directory / "tenants.yaml"
    path.write_text(
        f"tenants:\n  {TENANT}:\n    display_name: Demo Hospital\n    recipient_auth: none\n"
        f"    dicomweb_url: {pacs.dicomweb_url}\n"
    )
    return path


def share_request(pacs: Pacs) -> str:
    event = json.loads(EXAMPLE.read_text())
    data = event["data"]
    data["study"]["study_instance_uid"] = pacs.study.study_uid
    data["study"]["patient"].update(mrn=pacs.study.mrn, name=pacs.study.patient_name)
    return json.dumps(data)


async def open_viewer(http: httpx.AsyncClient, token: str) -> str:
    """The link page, then "View study": the viewer's path (its handle), the session in
    the client's cookies."""
    page = await http.get(f"/s/{token}")
    match = _CSRF.search(page.text)
    if page.status_code != 200 or match is None:
        raise RuntimeError(f"the link page answered {page.status_code}")
    pressed = await http.post(f"/s/{token}", data={"csrf": match.group(1)})
    location = pressed.headers.get("location", "")
    if pressed.status_code != 303 or not location.startswith("/view/"):
        raise RuntimeError(f"View study answered {pressed.status_code}")
    return str(location)


async def timed(
    fetch: Fetch, http: httpx.AsyncClient, frames: int, parallel: int, passes: int = 1
) -> float:
    """Seconds to fetch frames 1..``frames``, ``passes`` times over, ``parallel`` at once."""
    gate = asyncio.Semaphore(parallel)

    async def one(k: int) -> None:
        async with gate:
            status = await fetch(http, k)
            if status != 200:
                raise RuntimeError(f"frame {k} answered {status}")

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for _ in range(passes) for k in range(1, frames + 1)))
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Client:
    """What the fetching process needs: both paths to the same 60 frames, and the session."""

    direct_base: str
    instance_uids: tuple[str, ...]
    gateway: str
    viewer_path: str
    cookies: tuple[tuple[str, str], ...]
    rounds: int
    passes: int


async def compare(client: Client) -> list[Timing]:
    async def direct(http: httpx.AsyncClient, k: int) -> int:
        url = f"{client.direct_base}/instances/{client.instance_uids[k - 1]}/rendered"
        return (await http.get(url, headers={"Accept": "image/png"})).status_code

    async def proxied(http: httpx.AsyncClient, k: int) -> int:
        return (await http.get(f"{client.viewer_path}/series/1/frames/{k}")).status_code

    frames = len(client.instance_uids)
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    async with (
        httpx.AsyncClient(limits=limits, timeout=30) as orthanc_http,
        httpx.AsyncClient(
            base_url=client.gateway, cookies=dict(client.cookies), limits=limits, timeout=30
        ) as gateway_http,
    ):
        await timed(direct, orthanc_http, frames, PARALLEL)  # warm both paths once
        await timed(proxied, gateway_http, frames, PARALLEL)
        timings = []
        passes = client.passes
        for mode, parallel in (("sequential", 1), (f"{PARALLEL}-way", PARALLEL)):
            directs: list[float] = []
            proxies: list[float] = []
            for _ in range(client.rounds):  # back to back, so both see the same machine load
                directs.append(await timed(direct, orthanc_http, frames, parallel, passes))
                proxies.append(await timed(proxied, gateway_http, frames, parallel, passes))
            timings.append(Timing(mode, frames * passes, tuple(directs), tuple(proxies)))
    return timings


def fetch_in_own_process(client: Client) -> list[Timing]:
    """The fetching runs in a process of its own, as a browser would: the gateway's
    process serves, it does not also play the client."""
    return asyncio.run(compare(client))


@dataclass(frozen=True, slots=True)
class Served:
    """What the bench needs of the served product: the runtime (to publish a request), the
    gateway's address, and the links it mints."""

    runtime: Runtime
    base: str
    links: Links


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[Served]:
    """The workers on this loop and the gateway on a thread of its own, wired as
    ``blume-share run`` wires them (``blume_share.operations``), with a link listener."""
    os.environ.update(GATEWAY_ENVIRONMENT)
    db = Database(settings.database)
    freshness = Freshness(GatewaySettings().projection_max_lag_seconds)
    services = [SERVICES[name](settings) for name in WORKERS] + [build(settings, freshness)]
    runtime = Runtime(settings, services, db)
    freshness.attach(on_loop(asyncio.get_running_loop(), queue_probe(runtime.transport, GATEWAY)))
    server = ThreadedHttpServer(settings, runtime.relay_for(GATEWAY), freshness)
    links = Links(settings)
    await runtime.start()  # declares the exchange the listener binds to
    assert settings.amqp_url is not None
    listener = await links.listen(settings.amqp_url.get_secret_value())
    try:
        await server.start()
        yield Served(runtime, f"http://127.0.0.1:{server.port}", links)
    finally:
        await server.stop()
        await runtime.stop()
        await listener.close()
        await db.dispose()


def gateway_cpu_seconds() -> float:
    """User and system CPU of the gateway's HTTP thread so far (Linux: its /proc stat)."""
    [thread] = [t for t in threading.enumerate() if t.name == GATEWAY_THREAD]
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1]
    user_ticks, system_ticks = fields.split()[11:13]
    return (int(user_ticks) + int(system_ticks)) / os.sysconf("SC_CLK_TCK")


async def measure(
    settings: Settings, pacs: Pacs, rounds: int, passes: int
) -> tuple[list[Timing], float]:
    """The timings, and the gateway thread's CPU seconds per proxied frame meanwhile."""
    limits = httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    async with served(settings) as bench:
        for request in parse_requests(share_request(pacs)):
            await bench.runtime.publish_request(request.message())

        async def issued() -> bool:
            return bool(bench.links.tokens)

        await until(issued, "the link")
        [token] = bench.links.tokens.values()
        async with httpx.AsyncClient(base_url=bench.base, limits=limits, timeout=30) as http:

            async def projected() -> bool:  # the gateway may apply the link after we hear it
                return (await http.get(f"/s/{token}")).status_code == 200

            await until(projected, "the link page")
            viewer_path = await open_viewer(http, token)
            cookies = tuple((name, value) for name, value in http.cookies.items())
        ct = pacs.study.series[0]
        client = Client(
            direct_base=f"{pacs.dicomweb_url}/studies/{pacs.study.study_uid}/series/{ct.series_uid}",
            instance_uids=ct.instance_uids,
            gateway=bench.base,
            viewer_path=viewer_path,
            cookies=cookies,
            rounds=rounds,
            passes=passes,
        )
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            before = gateway_cpu_seconds()
            timings = await asyncio.get_running_loop().run_in_executor(
                pool, fetch_in_own_process, client
            )
            proxied = len(ct.instance_uids) + sum(t.frames * rounds for t in timings)
            return timings, (gateway_cpu_seconds() - before) / proxied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per mode")
    parser.add_argument(
        "--passes", type=int, default=3, help="times over the series in one timed window"
    )
    arguments = parser.parse_args()
    resources = start_bench()
    with tempfile.TemporaryDirectory(prefix="blume-bench-orthanc-") as home:
        pacs = start_pacs(Path(home) / "orthanc")
        try:
            settings = isolated_settings(resources, "viewer").model_copy(
                update={"tenant_policy_file": policy_file(Path(home), pacs)}
            )
            timings, cpu_per_frame = asyncio.run(
                measure(settings, pacs, arguments.rounds, arguments.passes)
            )
        finally:
            resources.remove_all()
            pacs.server.stop()
    for timing in timings:
        print(timing.line())
    print(f"gateway thread CPU per proxied frame: {cpu_per_frame * 1000:.2f} ms")
    return 0 if all(timing.ratio >= GOAL for timing in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
