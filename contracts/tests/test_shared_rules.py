"""The rules every service shares, written once in contracts: URLs, locales, methods, expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from blume_contracts.artefacts import EXAMPLES_DIR
from blume_contracts.events import SHARE_METHODS, StudySendRequested, share_method
from blume_contracts.locales import DEFAULT_LOCALE, LOCALES, month_name, narrow_locale
from blume_contracts.urls import (
    base_url,
    link_url,
    portal_study_path,
    portal_study_url,
    viewer_url,
)


def test_a_base_url_loses_its_trailing_slashes() -> None:
    """``https://x/`` and ``https://x`` are the same base; a path inside is kept."""
    assert base_url("https://share.example/") == "https://share.example"
    assert base_url("https://share.example/blume//") == "https://share.example/blume"
    assert base_url("https://share.example") == "https://share.example"


def test_links_and_study_urls_carry_only_their_opaque_id() -> None:
    """The link is base + /s/ + token; the portal study is base + /studies/ + entry id."""
    assert link_url("https://share.example", "tok") == "https://share.example/s/tok"
    assert portal_study_url("https://p.example/blume", "e1") == "https://p.example/blume/studies/e1"
    assert portal_study_path("e1") == "/blume/studies/e1"


def test_the_viewer_url_keeps_its_query_and_gains_the_ticket() -> None:
    """A tenant's viewer URL with a query of its own keeps it; the ticket is appended."""
    assert viewer_url("https://v.example/view?site=a", "t.1") == (
        "https://v.example/view?site=a&ticket=t.1"
    )


@pytest.mark.parametrize(
    ("stored", "expected"),
    [("fr-CA", "fr-CA"), ("en-CA", "en-CA"), ("fr", DEFAULT_LOCALE), (None, DEFAULT_LOCALE)],
)
def test_a_locale_narrows_to_one_we_speak(stored: str | None, expected: str) -> None:
    """A supported locale is itself; anything else is the default."""
    assert narrow_locale(stored) == expected


def test_every_locale_names_twelve_distinct_months() -> None:
    """Each locale spells the twelve months, the first as January / janvier."""
    for locale in LOCALES:
        names = {month_name(locale, month) for month in range(1, 13)}
        assert len(names) == 12
    assert month_name("fr-CA", datetime(2026, 8, 1, tzinfo=UTC).month) == "août"


def test_a_stored_method_becomes_the_contracts_method() -> None:
    """``blume`` stays blume; every other stored value was a link share."""
    assert SHARE_METHODS == ("external_link", "blume")
    assert share_method("blume") == "blume"
    assert share_method("external_link") == "external_link"
    assert share_method("unknown") == "external_link"


def test_a_link_works_for_the_hours_asked_else_the_tenants_default() -> None:
    """``expires_in_hours`` wins when given; without it the tenant's default applies."""
    asked = StudySendRequested.model_validate(_request(expires_in_hours=12))
    unasked = StudySendRequested.model_validate(_request())
    assert asked.link_hours(72) == 12
    assert unasked.link_hours(72) == 72


def _request(**changes: object) -> dict[str, object]:
    data = json.loads((EXAMPLES_DIR / "study.send.requested.json").read_text())["data"]
    data.update(changes)
    return data
