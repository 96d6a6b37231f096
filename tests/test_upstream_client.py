"""The upstream client library (``blume_share_client``, kombu) against the real
``blume-share run`` on RabbitMQ, PostgreSQL and an aiosmtpd server, connected as the
upstream client's own least-privilege broker user from the shipped definitions: what it
sends is accepted and completes (or is rejected with its reason), and its outcome consumer
receives every outcome for it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from blume_contracts.events import ShareAccepted, ShareCompleted, ShareRejected, ShareRevoked
from blume_share_client import ShareClient

from clients.omegaai.tests.broker_support import consuming
from runtime.tests.rabbit_support import BrokerUsersOnVhost, shipped_users
from tests.conftest import EXAMPLE, RunningSystem, blume_share

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OUTCOMES_QUEUE = "omegaai.outcomes"


@pytest.fixture
async def broker_users(amqp_url: str) -> AsyncIterator[BrokerUsersOnVhost]:
    """The shipped broker definitions in the test's vhost, each user with a password."""
    async with shipped_users(amqp_url) as users:
        yield users


def request_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(EXAMPLE["data"]))
    data.update(changes)
    return data


def audit_agents(system: RunningSystem, share_id: str, event_type: str) -> list[dict[str, Any]]:
    found = blume_share(
        "audit", "query", "--share-id", share_id, "--type", event_type, "--format", "jsonl",
        env=system.env,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    [record] = [json.loads(line) for line in found.stdout.splitlines() if line.strip()]
    agents = record["agents"]
    return json.loads(agents) if isinstance(agents, str) else list(agents)


async def test_a_request_sent_with_the_library_is_accepted_completes_and_is_revoked(
    system: RunningSystem, broker_users: BrokerUsersOnVhost, smtp_server: Any
) -> None:
    """send() returns the share id the dispatcher gives the request; the library's consumer
    receives share.accepted and share.completed for it (the email went out), then
    share.revoked after revoke(); the audit store names the upstream user as requester."""
    omegaai = broker_users.url("omegaai")
    with (
        consuming(omegaai, OUTCOMES_QUEUE) as (_consumer, outcomes),
        ShareClient(omegaai, source="/omegaai/send-drawer") as client,
    ):
        share_id = client.send(request_data(), correlation_id="omega-req-1")
        accepted = outcomes.wait_for("share.accepted", share_id)
        completed = outcomes.wait_for("share.completed", share_id)
        client.revoke(
            share_id, tenant_id="demo-hospital", requested_by="u-123", reason="wrong doctor"
        )
        revoked = outcomes.wait_for("share.revoked", share_id)
    assert isinstance(accepted.data, ShareAccepted)
    assert accepted.data.method == "external_link"
    assert isinstance(completed.data, ShareCompleted)
    assert completed.data.notification == "sent"
    assert {accepted.correlationid, completed.correlationid} == {"omega-req-1"}
    assert isinstance(revoked.data, ShareRevoked)
    assert (revoked.data.requested_by, revoked.data.reason) == ("u-123", "wrong doctor")
    [email] = smtp_server.messages
    assert email["To"].addresses[0].addr_spec == "bob.jones@clinic.example"
    assert system.events("share.completed", share_id=share_id)
    requester = {"role": "requester", "broker_user": broker_users.user("omegaai")}
    assert requester in audit_agents(system, share_id, "study.send.requested")


async def test_a_rejected_request_yields_share_rejected_with_its_reason(
    system: RunningSystem, broker_users: BrokerUsersOnVhost
) -> None:
    """A request the contract accepts but the tenant's policy refuses (an expiry over the
    cap) comes back to the library's consumer as share.rejected with the reason code and
    field, and nothing else follows for it."""
    omegaai = broker_users.url("omegaai")
    with consuming(omegaai, OUTCOMES_QUEUE) as (_consumer, outcomes):
        with ShareClient(omegaai) as client:
            share_id = client.send(request_data(expires_in_hours=10_000))
        rejected = outcomes.wait_for("share.rejected", share_id)
        later = await system.wait_for("share.rejected", share_id=share_id)
    assert isinstance(rejected.data, ShareRejected)
    assert rejected.data.reason == "expiry_exceeds_policy"
    assert rejected.data.field == "expires_in_hours"
    assert rejected.id == later[0]["id"]
    assert [outcome.type for outcome in outcomes.outcomes] == ["share.rejected"]
