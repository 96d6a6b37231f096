"""Names as they may be shown to a person: in an email subject, an address's display name
or a web page.

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


def display_name(text: str) -> str:
    """``text`` without invisible format characters (bidirectional controls, zero-width)."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")
