"""Issue 12.1: the sender's message (PHI) reaches the recipient only on the link page, and
only once access is granted through the link; the grant's audit event records the
disclosure."""

from __future__ import annotations

import pytest

from services.access_gateway.tests.conftest import Harness
from services.access_gateway.tests.test_view_study import press

MESSAGE = "Quixotic zebrafish: compare with the Worthington biopsy\nbefore Friday"
WORDS = ("Quixotic", "zebrafish", "Worthington", "biopsy", "Friday")


def test_the_message_is_shown_only_after_access_is_granted(harness: Harness) -> None:
    """Before the grant the page says a message waits and shows none of its words; after
    "View study" grants access, the same page shows the message, and share.link.accessed
    records that it was disclosed."""
    token, _link = harness.add_link(message=MESSAGE)
    with harness.client() as client:
        before = client.get(f"/s/{token}")
        assert before.status_code == 200
        for word in WORDS:
            assert word not in before.text
        assert 'data-message="waiting"' in before.text
        assert press(client, token).status_code == 303
        after = client.get(f"/s/{token}")
    assert after.status_code == 200
    assert 'data-message="shown"' in after.text
    for word in WORDS:
        assert word in after.text
    [accessed] = harness.transport.events("share.link.accessed")
    assert accessed["data"]["message_disclosed"] is True


def test_another_links_grant_does_not_show_the_message(harness: Harness) -> None:
    """Access granted through one link does not open another link's message."""
    other_token, _other = harness.add_link()
    token, _link = harness.add_link(message=MESSAGE)
    with harness.client() as client:
        assert press(client, other_token).status_code == 303
        page = client.get(f"/s/{token}")
    assert "Quixotic" not in page.text
    [accessed] = harness.transport.events("share.link.accessed")
    assert accessed["data"]["message_disclosed"] is False


@pytest.mark.parametrize(
    ("locale", "waiting"),
    [("en-CA", "also left you a message"), ("fr-CA", "vous a aussi laissé un message")],
)
def test_a_link_without_a_message_says_nothing_of_one(
    harness: Harness, locale: str, waiting: str
) -> None:
    """No message: no notice; with one, the notice is in the link's language."""
    plain_token, _plain = harness.add_link(locale=locale)
    token, _link = harness.add_link(locale=locale, message=MESSAGE)
    with harness.client() as client:
        assert waiting not in client.get(f"/s/{plain_token}").text
        assert waiting in client.get(f"/s/{token}").text
