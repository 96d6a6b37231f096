"""The product's languages, and the few locale rules every service shares, written once."""

from __future__ import annotations

from typing import Final, Literal, get_args

Locale = Literal["en-CA", "fr-CA"]
LOCALES: Final[tuple[Locale, ...]] = get_args(Locale)
DEFAULT_LOCALE: Final[Locale] = "en-CA"

_MONTHS: Final[dict[Locale, tuple[str, ...]]] = {
    "en-CA": (
        "January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December",
    ),
    "fr-CA": (
        "janvier", "février", "mars", "avril", "mai", "juin", "juillet",
        "août", "septembre", "octobre", "novembre", "décembre",
    ),
}  # fmt: skip


def narrow_locale(value: str | None) -> Locale:
    """A stored or requested locale as one we speak: itself if supported, else the default."""
    for locale in LOCALES:
        if value == locale:
            return locale
    return DEFAULT_LOCALE


def month_name(locale: Locale, month: int) -> str:
    """The month's name (1 = January) as the locale writes it in a date."""
    return _MONTHS[locale][month - 1]
