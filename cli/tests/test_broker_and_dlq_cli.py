"""``blume-share broker definitions`` and ``blume-share dlq``: what they print and refuse."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from blume_contracts.registry import EVENTS
from blume_runtime.broker_definitions import binding_keys, definitions
from blume_runtime.settings import Settings
from blume_runtime.topology import QueueSpec
from blume_runtime.transport import DeadLetterCause, Delivery, OutgoingMessage
from blume_share.cli import app
from blume_share.services import SERVICES
from typer.testing import CliRunner

from runtime.tests.rabbit_support import audit_observer, consuming

SHIPPED = Path(__file__).resolve().parents[2] / "deploy/rabbitmq/definitions.json"


@pytest.fixture
def cli(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("AMQP_URL", "DATABASE_URL", "BROKER_USERS", "OPERATOR"):
        monkeypatch.delenv(f"BLUME_{name}", raising=False)
    monkeypatch.setenv("BLUME_STATE_DIR", str(state_dir))
    monkeypatch.setenv("BLUME_LOG_FORMAT", "json")
    return CliRunner()


def test_the_shipped_definitions_are_what_the_registry_says(cli: CliRunner) -> None:
    """deploy/rabbitmq/definitions.json is the command's output (regenerate it if this
    fails: blume-share broker definitions > deploy/rabbitmq/definitions.json); no user in it
    has a password."""
    printed = cli.invoke(app, ["broker", "definitions"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(SHIPPED.read_text()) == json.loads(printed.stdout) == definitions()
    assert {user["password_hash"] for user in definitions()["users"]} == {""}
    suffixed = cli.invoke(app, ["broker", "definitions", "--vhost", "qa", "--user-suffix", "-x"])
    assert json.loads(suffixed.stdout) == definitions("qa", user_suffix="-x")


def _topic_rights(user: str) -> dict[str, Any]:
    [rights] = [entry for entry in definitions()["topic_permissions"] if entry["user"] == user]
    return rights


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_may_bind_what_it_consumes_and_publish_only_what_it_produces(
    name: str, tmp_path: Path
) -> None:
    """The worker's real bindings pass its topic read rights; of all event types, exactly
    those the registry says it produces pass its topic write rights."""
    service = SERVICES[name](Settings(state_dir=tmp_path))
    rights = _topic_rights(name)
    for key in service.queue.binding_keys:
        assert re.fullmatch(rights["read"], key), key
    publishable = {kind for kind in EVENTS if re.fullmatch(rights["write"], kind)}
    assert publishable == {kind for kind, spec in EVENTS.items() if name in spec.producers}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_services_bindings_are_the_registrys_consumers_of_it(
    name: str, tmp_path: Path
) -> None:
    """The queue a worker binds is exactly what the contract registry says it consumes
    (``#`` for a consumer of every type): the handlers and the registry cannot drift."""
    service = SERVICES[name](Settings(state_dir=tmp_path))
    assert sorted(service.queue.binding_keys) == binding_keys(name)


@pytest.mark.parametrize(
    "arguments",
    [
        ["dlq", "replay", "notifier"],
        ["dlq", "replay", "notifier", "--id", "a", "--all"],
        ["dlq", "purge", "notifier", "--type", "share.link.issued", "--id", "b"],
        ["dlq", "purge", "fax_sender", "--all"],
    ],
    ids=["no-selection", "two-selections", "type-and-id", "unknown-service"],
)
def test_replay_and_purge_need_one_selection_of_a_known_service(
    cli: CliRunner, arguments: list[str]
) -> None:
    """Exactly one of --id, --type, --all; a service that exists (exit 2 otherwise)."""
    result = cli.invoke(app, arguments)
    assert result.exit_code == 2
    assert "blume-share:" in result.stderr


async def _dead_letter_two(amqp_url: str) -> None:
    spec = QueueSpec("notifier", ("share.link.issued",))

    async def give_up(delivery: Delivery) -> None:
        await delivery.dead_letter(DeadLetterCause.EXHAUSTED, error_class="smtp_unavailable")

    async with consuming(amqp_url, spec, give_up) as (transport, received):
        for number in (1, 2):
            body = b'{"recipient": "bob@clinic.example"}'
            await transport.publish(OutgoingMessage("share.link.issued", body, f"dead-{number}"))
        await received.wait_for(2)


async def _purge_all_observed(cli: CliRunner, amqp_url: str) -> tuple[Any, list[dict[str, Any]]]:
    async with audit_observer(amqp_url) as audited:
        result = await asyncio.to_thread(cli.invoke, app, ["dlq", "purge", "notifier", "--all"])
        return result, await audited()


@pytest.mark.integration
def test_dlq_list_as_json_then_an_audited_purge(
    cli: CliRunner, amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list --json describes each dead letter without its body; purge --all empties the
    queue and its audit event names the OS account and BLUME_OPERATOR, self-asserted."""
    asyncio.run(_dead_letter_two(amqp_url))
    monkeypatch.setenv("BLUME_AMQP_URL", amqp_url)
    monkeypatch.setenv("BLUME_OPERATOR", "Dana (on call)")
    listed = cli.invoke(app, ["dlq", "list", "--show", "5", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "bob@clinic.example" not in listed.stdout
    [notifier] = [q for q in json.loads(listed.stdout)["queues"] if q["service"] == "notifier"]
    assert notifier["depth"] == 2
    assert [(m["message_id"], m["cause"], m["event_type"]) for m in notifier["messages"]] == [
        ("dead-1", "exhausted", "share.link.issued"),
        ("dead-2", "exhausted", "share.link.issued"),
    ]
    purged, events = asyncio.run(_purge_all_observed(cli, amqp_url))
    assert purged.exit_code == 0, purged.output
    assert "2 messages purged" in purged.stdout
    [event] = events
    assert event["type"] == "ops.dead_letters.purged"
    assert event["data"]["asserted_operator"] == "Dana (on call)"
    assert event["data"]["requested_by"]
    assert event["data"]["message_ids"] == ["dead-1", "dead-2"]
    again = cli.invoke(app, ["dlq", "list", "--json"])
    [empty] = [q for q in json.loads(again.stdout)["queues"] if q["service"] == "notifier"]
    assert empty["depth"] == 0
