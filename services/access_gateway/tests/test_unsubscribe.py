"""Issue 12 item 14 at the gateway: /unsubscribe/<token> (the List-Unsubscribe target of a
Blume email). A GET shows a confirmation and changes nothing; a POST with no cookie and no
CSRF token (RFC 8058 one-click) records patient.notifications.unsubscribed and answers 200;
a token the notifier did not seal is a 404 either way."""

from __future__ import annotations

import pytest
from blume_contracts.tokens import UnsubscribeClaims

from services.access_gateway.tests.conftest import CLIENT_IP, Harness


def token_for(harness: Harness, patient: str, tenant: str = "open-clinic") -> str:
    """What the notifier puts in the email's List-Unsubscribe URL."""
    return harness.gateway.access.sealer.seal(UnsubscribeClaims(p=patient, t=tenant).to_text())


def test_item_14_a_get_only_asks_and_a_cookieless_post_unsubscribes(harness: Harness) -> None:
    """A scanner's GET unsubscribes nobody; the one-click POST does, audited, in the
    patient's language."""
    harness.add_patient("bp-0001", locale="fr-CA")
    path = f"/unsubscribe/{token_for(harness, 'bp-0001')}"
    with harness.client() as client:
        asked = client.get(path)
        assert asked.status_code == 200
        assert "Ne plus recevoir ces courriels" in asked.text
        assert harness.transport.events("patient.notifications.unsubscribed") == []
        client.cookies.clear()
        done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert "Vous ne recevrez plus de courriels de Blume" in done.text
    [event] = harness.transport.events("patient.notifications.unsubscribed")
    assert event["tenantid"] == "open-clinic"
    assert event["data"]["blume_patient_id"] == "bp-0001"
    assert event["data"]["tenant_id"] == "open-clinic"
    assert event["data"]["client"]["client_ip"] == CLIENT_IP


@pytest.mark.parametrize("token", ["not-a-token", "gAAAAABforged"])
def test_item_14_a_token_we_did_not_seal_unsubscribes_nobody(harness: Harness, token: str) -> None:
    """Anything but a sealed token: 404 to GET and POST, no event."""
    with harness.client() as client:
        assert client.get(f"/unsubscribe/{token}").status_code == 404
        assert client.post(f"/unsubscribe/{token}").status_code == 404
    assert harness.transport.events("patient.notifications.unsubscribed") == []
