"""The image's contents without a Docker engine: the project installed into a fresh
virtualenv exactly as deploy/image/Containerfile does (its COPY sources, its `uv sync`
line: the same lock, no dev dependencies, not editable), the copied source tree deleted,
then the dispatcher and the gateway started from that virtualenv, from a directory
outside the source tree, against this test's own RabbitMQ vhost and PostgreSQL database.
They serve: the dispatcher answers a share request, the gateway its pages, F1 help (the
articles as package data) and static files."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import pika
import pytest
from cryptography.fernet import Fernet

from deploy.tests.manifests import REPO
from deploy.tests.processes import Started, get_status
from tests.conftest import free_port, request_event

pytestmark = [pytest.mark.integration]

CONTAINERFILE: Final = REPO / "deploy" / "image" / "Containerfile"


def build_stage_copies() -> list[str]:
    """The build context paths the Containerfile's build stage copies."""
    sources: list[str] = []
    for line in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            sources += words[1:-1]
    return sources


def uv_sync_arguments() -> list[str]:
    """The arguments of the Containerfile's `uv sync` line."""
    lines = CONTAINERFILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    match = re.search(r"^RUN\b.*?\buv sync\b([^\n&;]*)", text.replace("\\\n", " "), re.M)
    assert match is not None, "the Containerfile has no uv sync"
    return ["sync", *shlex.split(match.group(1))]


def test_the_containerfile_installs_from_the_lock_without_dev_dependencies() -> None:
    """Multi-stage, frozen lock, no dev group, not editable, a numeric non-root user,
    pinned base images, and only the virtualenv carried into the runtime stage."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    assert {"--frozen", "--no-dev", "--no-editable"} <= set(uv_sync_arguments())
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) == 3
    assert re.search(r"^USER [1-9][0-9]*:[1-9][0-9]*$", text, flags=re.MULTILINE)
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.MULTILINE):
        assert re.search(r":\d[\w.-]*$", image), image
    runtime_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.findall(r"^COPY (.*)$", runtime_stage, flags=re.MULTILINE) == [
        "--from=build /opt/blume-share /opt/blume-share"
    ]
    assert {"uv.lock", "docs/help"} <= set(build_stage_copies())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a virtualenv built like the image's, its source copy already deleted."""
    root = tmp_path_factory.mktemp("image")
    source = root / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *build_stage_copies()],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        target = source / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    venv = root / "venv"
    uv = shutil.which("uv") or pytest.fail("uv is not installed")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [uv, *uv_sync_arguments(), "--python", sys.executable, "--quiet"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shutil.rmtree(source)
    return venv / "bin"


def test_the_virtualenv_holds_the_product_and_no_dev_tools(installed: Path) -> None:
    """blume-share is installed (not editable: no path back to a source tree); pytest,
    mypy and the test-only clients are not."""
    site = next((installed.parent / "lib").glob("python3*/site-packages"))
    assert (installed / "blume-share").is_file()
    assert not list(site.glob("_editable_impl_*")), "editable install"
    assert (site / "blume_access_gateway" / "help" / "index.md").is_file()
    assert (site / "blume_access_gateway" / "help" / "fr-CA" / "index.md").is_file()
    assert (site / "blume_notifier" / "templates" / "layout.html").is_file()
    for dev_only in ("pytest", "mypy", "pika", "aiosmtpd", "hypothesis", "blume_share_client"):
        assert not (site / dev_only).exists(), dev_only


def test_the_installed_dispatcher_and_gateway_serve(
    installed: Path, amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    """From the virtualenv, outside any source tree: migrate, then the dispatcher accepts a
    share request and the gateway serves a page, help and its static files."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLUME_")}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        PATH=f"{installed}:/usr/bin:/bin",
        BLUME_AMQP_URL=amqp_url,
        BLUME_DATABASE_URL=database_url,
        BLUME_TOKEN_SEALING_KEY=Fernet.generate_key().decode(),
        BLUME_GATEWAY_SECRET_KEY=secrets.token_urlsafe(48),
        BLUME_STATE_DIR=str(tmp_path / "state"),
        BLUME_LOG_FORMAT="json",
        BLUME_HTTP_PORT=str(free_port()),
        BLUME_OPS_PORT=str(free_port()),
    )
    blume_share = str(installed / "blume-share")
    migrated = subprocess.run(
        [blume_share, "migrate"], env=env, cwd=workdir, capture_output=True, text=True, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare("blume.share", exchange_type="topic", durable=True)
    observer = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(observer, "blume.share", routing_key="share.accepted")
    dispatcher = Started(
        "share_dispatcher",
        [blume_share, "run", "share_dispatcher"],
        env,
        workdir,
        tmp_path / "dispatcher.log",
    ).start()
    gateway_env = {**env, "BLUME_OPS_PORT": str(free_port())}
    gateway = Started(
        "access_gateway",
        [blume_share, "run", "access_gateway"],
        gateway_env,
        workdir,
        tmp_path / "gateway.log",
    ).start()
    try:
        dispatcher.wait_for_log("runtime started")
        request = request_event()
        channel.basic_publish(
            "blume.share",
            "study.send.requested",
            json.dumps(request).encode(),
            pika.BasicProperties(
                content_type="application/cloudevents+json",
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=request["id"],
            ),
        )
        deadline = time.monotonic() + 30
        while (message := channel.basic_get(observer, auto_ack=True))[0] is None:
            assert time.monotonic() < deadline, f"no share.accepted:\n{dispatcher.logs()[-3000:]}"
            time.sleep(0.1)
        assert json.loads(message[2])["correlationid"] == request["correlationid"]

        base = f"http://127.0.0.1:{env['BLUME_HTTP_PORT']}"
        gateway.wait_until(f"{base}/healthz")
        status, page = get_status(f"{base}/s/{'n' * 43}")
        assert status == 404
        assert 'data-help-topic="link-not-found"' in page
        status, article = get_status(f"{base}/help/link-page")
        assert status == 200
        assert 'data-help-article="link-page"' in article
        status, script = get_status(f"{base}/static/help.js")
        assert status == 200
        assert "F1" in script
    finally:
        connection.close()
        codes = {started.name: started.stop() for started in (gateway, dispatcher)}
    assert codes == {"access_gateway": 0, "share_dispatcher": 0}, gateway.logs()[-3000:]
