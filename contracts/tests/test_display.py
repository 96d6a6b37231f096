"""Names as shown to people: no bidirectional controls, no zero-width characters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from blume_contracts.display import display_name, format_moment
from blume_contracts.locales import Locale


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("Dr. Alice Smith", "Dr. Alice Smith"),
        ("Dr. Smith\u202eexe.pdf", "Dr. Smithexe.pdf"),
        ("\u2067Demo\u2069 Hospital\u200e", "Demo Hospital"),
        ("Dr.\u200b Ali\u200dce\ufeff", "Dr. Alice"),
        ("Dr.\u2060Bob\u00ad", "Dr.Bob"),
        ("Line\none", "Line\none"),
        ("Éloïse Côté-Tremblay", "Éloïse Côté-Tremblay"),
    ],
)
def test_bidi_and_zero_width_characters_are_removed_from_names(given: str, shown: str) -> None:
    """Every format character (Cf) goes; letters, and even line breaks, stay as they are."""
    assert display_name(given) == shown


@pytest.mark.parametrize(
    ("moment", "locale", "expected"),
    [
        (datetime(2026, 11, 28, 14, 0, tzinfo=UTC), "en-CA", "28 November 2026 at 14:00 UTC"),
        (datetime(2026, 11, 28, 14, 0, tzinfo=UTC), "fr-CA", "28 novembre 2026 à 14 h 00 UTC"),
        (datetime(2026, 12, 1, 9, 5, tzinfo=UTC), "fr-CA", "1er décembre 2026 à 9 h 05 UTC"),
        (datetime(2026, 12, 1, 9, 5, tzinfo=UTC), "en-CA", "1 December 2026 at 09:05 UTC"),
        (
            datetime(2026, 2, 28, 21, 30, tzinfo=timezone(timedelta(hours=-5))),
            "en-CA",
            "1 March 2026 at 02:30 UTC",
        ),
        (datetime(2027, 8, 15, 0, 0, tzinfo=UTC), "fr-CA", "15 août 2027 à 0 h 00 UTC"),
    ],
)
def test_a_moment_is_formatted_for_the_locale_in_the_zone_asked_for(
    moment: datetime, locale: Locale, expected: str
) -> None:
    """Moments are spelled per locale and converted to the zone, its abbreviation stated."""
    assert format_moment(moment, locale, "UTC") == expected
