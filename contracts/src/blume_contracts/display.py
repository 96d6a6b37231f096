"""Names and times as they may be shown to a person: in an email subject, an address's
display name or a web page.

A name comes from an event (the sender's, the organisation's, the recipient's), so whoever
wrote it chose every character. Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE can
make ``Dr. Smith\u202eexe.pdf`` read as ``Dr. Smithfdp.exe``) and zero-width characters
(which make one name look like another) are removed: every Unicode format character
(category Cf). Nothing else changes: a line break is left for the email package to refuse
(a header injection fails loudly, never quietly repaired). One function, used by the
notifier and the access gateway alike.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from blume_contracts.locales import month_name, narrow_locale

DEFAULT_TIME_ZONE: Final = "America/Toronto"
"""A tenant's ``time_zone`` when its policy names none (Ontario, where PHIPA applies)."""


def display_name(text: str) -> str:
    """``text`` without invisible format characters (bidirectional controls, zero-width)."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ValueError`` for a name that is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None


def format_moment(moment: datetime, locale: str, zone_name: str) -> str:
    """A moment as every page and email shows it: in the tenant's time zone, spelled for
    the locale, the zone's abbreviation stated. One function for the access gateway's pages
    and the notifier's emails, so a link's expiry reads the same in both.

    en-CA: ``4 December 2026 at 09:04 EST``; fr-CA: ``4 décembre 2026 à 9 h 04 EST``
    (the first of the month is ``1er`` in French).
    """
    local = moment.astimezone(time_zone(zone_name))
    spoken = narrow_locale(locale)
    month = month_name(spoken, local.month)
    abbreviation = local.strftime("%Z")
    if spoken == "fr-CA":
        day = "1er" if local.day == 1 else str(local.day)
        return f"{day} {month} {local.year} à {local.hour} h {local.minute:02d} {abbreviation}"
    return f"{local.day} {month} {local.year} at {local.hour:02d}:{local.minute:02d} {abbreviation}"
