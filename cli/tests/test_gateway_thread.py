"""Issue 12 item 9: under ``blume-share run`` the web gateway serves from a thread of its
own (its own event loop and database engine), so requests cannot starve the workers' loop,
and the workers' loop being busy does not stop the gateway answering."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from blume_runtime.settings import Settings
from blume_share import operations
from blume_share.services import WORKERS

from tests.conftest import free_port


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(answer.status)


async def test_item_9_run_serves_the_gateway_on_its_own_thread_and_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every worker and the gateway in one ``run`` (embedded default): the HTTP server
    runs on the thread ``access-gateway-http``, and a page is answered while the workers'
    loop is blocked (on a shared loop the call would time out); SIGTERM stops both."""
    port = free_port()
    monkeypatch.setenv("BLUME_HTTP_PORT", str(port))
    monkeypatch.setenv("BLUME_COOKIE_SECURE", "false")
    settings = Settings(_env_file=None, state_dir=tmp_path)
    operations.prepare_embedded(settings)
    running = asyncio.create_task(operations.run(settings, list(WORKERS)))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            await asyncio.to_thread(http_status, f"{base}/help/index")
            break
        except OSError:
            assert not running.done(), running
            assert time.monotonic() < deadline, "the gateway did not start"
            await asyncio.sleep(0.1)
    try:
        [gateway_thread] = [t for t in threading.enumerate() if t.name == "access-gateway-http"]
        assert gateway_thread is not threading.current_thread()
        # This call blocks the workers' loop until the gateway answers: only a gateway on
        # a loop of its own can.
        assert http_status(f"{base}/help/index") == 200
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, timeout=60)
    assert not gateway_thread.is_alive()
