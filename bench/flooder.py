"""One flood process for ``bench.header_flood``: standard library only, so that starting it
costs the machine (two cores, shared with the server under test) next to nothing."""

from __future__ import annotations

import http.client
import secrets
import time
from typing import Any, Final

COOKIE_BUDGET: Final = 8 * 1024 - 64
"""The Cookie header's length: just under the gateway's 8 KiB per-header cap."""


def cookie(crafted: bool) -> str:
    """A patient cookie of ``COOKIE_BUDGET`` bytes: a double-quoted run of backslashes (the
    CVE-2024-7592 shape), or as many plain letters (the same load, nothing to unquote)."""
    name = "blume_patient="
    room = COOKIE_BUDGET - len("cookie") - len(name)
    return name + ('"' + "\\" * (room - 2) + '"' if crafted else "a" * room)


def flood(port: int, crafted: bool, stop: Any, sent: Any, statuses: Any, slowest_ms: Any) -> None:
    """Keep-alive requests to a page that reads the patient's cookie until ``stop`` is set."""
    header = cookie(crafted)
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        started = time.perf_counter()
        try:
            connection.request(
                "GET", f"/blume/studies/ent_{secrets.token_hex(16)}", headers={"Cookie": header}
            )
            answer = connection.getresponse()
            answer.read()
            status = answer.status
            if (answer.getheader("connection") or "").lower() == "close":
                connection.close()
                connection = None
        except OSError:
            status = 0
            connection.close()
            connection = None
        took = round((time.perf_counter() - started) * 1000)
        with sent.get_lock():
            sent.value += 1
        with slowest_ms.get_lock():
            slowest_ms.value = max(slowest_ms.value, took)
        statuses.put(status)
