"""Rate limits per client address and per token on every link endpoint, so tokens cannot be
guessed and codes cannot be brute-forced; a flood's denials are audited, but throttled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.access_gateway.tests.conftest import Harness, csrf_for, make_harness


@pytest.fixture
def strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from make_harness(
        tmp_path,
        monkeypatch,
        rate_limit_per_ip="5/minute",
        rate_limit_per_token="3/minute",
        rate_limit_code_requests="2/15 minutes",
    )


def test_one_address_guessing_tokens_is_stopped(strict: Harness) -> None:
    """Guessing many tokens from one address: the sixth request in a minute gets 429."""
    with strict.client() as client:
        statuses = [client.get(f"/s/guess-{n:040d}").status_code for n in range(8)]
    assert statuses[:5] == [404] * 5
    assert statuses[5:] == [429] * 3


def test_429_has_a_page_and_retry_after(strict: Harness) -> None:
    """The refusal is a page saying to wait, with Retry-After, and a rate_limited denial."""
    token, link = strict.add_link()
    with strict.client() as client:
        for _ in range(3):
            client.get(f"/s/{token}")
        limited = client.get(f"/s/{token}")
    assert limited.status_code == 429
    assert "Too many attempts" in limited.text
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    denied = strict.transport.events("share.link.denied")[-1]
    assert denied["data"]["reason"] == "rate_limited"
    assert denied["data"]["link_id"] == link.link_id


def test_many_addresses_on_one_token_are_stopped(strict: Harness) -> None:
    """One token tried from many addresses: the per-token limit holds."""
    token, _link = strict.add_link()
    statuses = []
    for n in range(5):
        with strict.client(ip=f"198.51.100.{n + 1}") as client:
            statuses.append(client.get(f"/s/{token}").status_code)
    assert statuses == [200, 200, 200, 429, 429]


def test_code_guessing_is_rate_limited(strict: Harness) -> None:
    """Code entries count against the token's limit: brute force stops long before 10^6."""
    token, _link = strict.add_link("otp-hospital", auth="email_otp")
    with strict.client() as client:
        page = client.get(f"/s/{token}")
        client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
        statuses = [
            client.post(f"/s/{token}/code", data={"code": f"{n:06d}", "csrf": "x"}).status_code
            for n in range(3)
        ]
    assert statuses[-1] == 429


@pytest.fixture
def few_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from make_harness(tmp_path, monkeypatch, rate_limit_code_requests="2/15 minutes")


def test_sign_in_code_emails_are_limited_per_link(few_codes: Harness) -> None:
    """At most two code emails per link in 15 minutes: the third request is refused."""
    harness = few_codes
    token, _link = harness.add_link("otp-hospital", auth="email_otp")
    outcomes = []
    for n in range(3):
        with harness.client(ip=f"198.51.100.{n + 1}") as client:
            page = client.get(f"/s/{token}")
            pressed = client.post(f"/s/{token}", data={"csrf": csrf_for(page.text, f"/s/{token}")})
            outcomes.append(pressed.status_code)
    assert outcomes == [303, 303, 429]
    assert len(harness.transport.events("share.otp.requested")) == 2


def test_a_flood_writes_few_denial_events(strict: Harness) -> None:
    """Fifty refused requests write at most three rate_limited events (per address per minute)."""
    with strict.client() as client:
        for n in range(55):
            client.get(f"/s/flood-{n:040d}")
    limited = [
        d
        for d in strict.transport.events("share.link.denied")
        if d["data"]["reason"] == "rate_limited"
    ]
    assert 1 <= len(limited) <= 3
