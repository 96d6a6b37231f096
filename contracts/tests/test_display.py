"""Names as shown to people: no bidirectional controls, no zero-width characters."""

from __future__ import annotations

import pytest
from blume_contracts.display import display_name


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
