"""CPU per email of building and flattening the notifier's MIME, against the header-registry
build it replaced, measured in the same run (issue 14).

Both sides get the same rendered subject and bodies and the same mailboxes and headers:

- *header registry* (the baseline, as before): ``EmailMessage`` with the SMTP policy, every
  header parsed through the header registry, flattened as ``aiosmtplib``'s ``send_message``
  did (``flatten_message``, 8BITMIME offered);
- *compat32* (now): ``mime.alternative_email`` (``email.mime`` on compat32) and
  ``mime.wire_bytes``, flattened once (the envelope comes with the message, unparsed).

The Jinja render, the same on both sides, is timed on its own. Rounds alternate the sides;
CPU time is ``time.process_time`` over a batch. Prints milliseconds per email and the ratio,
never a pass or fail.

    uv run python -m bench.notifier_mime [--rounds 6] [--batch 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import SMTP
from typing import Any, Final

from aiosmtplib.email import flatten_message
from blume_contracts.events import Recipient, Sender, ShareLinkIssued
from blume_notifier.mime import (
    Mailbox,
    alternative_email,
    header_registry_email,
    parse_mailbox,
    wire_bytes,
)
from blume_notifier.render import RenderedEmail, render_link_email

MAIL_FROM: Final = "Blume Share <no-reply@blume-share.example>"
LINK: Final = "https://share.demo-hospital.example/s/" + "Tk9U-aGVyZV9yZWFsbHlfYV90b2tlbl9ub3Rfd2Vh"
NAMES: Final = {
    "en-CA": ("Dr. Bob Jones", "Dr. Alice Smith", "Demo Hospital"),
    "fr-CA": ("Dr. Zoé Côté-Bélanger", "Dr. Hélène Dubé", "Hôpital Démo"),
}

Email = tuple[dict[str, Mailbox], dict[str, str], RenderedEmail]


def link_issued(locale: Any) -> ShareLinkIssued:
    recipient, sender, organisation = NAMES[locale]
    return ShareLinkIssued(
        share_id="shr_" + "0123456789abcdef" * 2,
        link_id="lnk_" + "fedcba9876543210" * 2,
        token_fingerprint="sha256:" + "ab" * 16,
        sealed_link="unused-here",
        expires_at=datetime(2026, 11, 28, 14, 0, tzinfo=UTC),
        recipient=Recipient(name=recipient, email="bob.jones@clinic.example"),
        sender=Sender(user_id="u-123", name=sender, email="alice@demo-hospital.example"),
        organisation=organisation,
        message="Please review.",
        locale=locale,
    )


def link_email(locale: Any) -> Email:
    """What ``render.compose`` hands the MIME build for a link email in ``locale``."""
    issued = link_issued(locale)
    rendered = render_link_email(issued, LINK)
    mailboxes = {
        "From": parse_mailbox(MAIL_FROM),
        "To": Mailbox(issued.recipient.name, issued.recipient.email),
        "Reply-To": Mailbox(issued.sender.name, issued.sender.email),
    }
    headers = {
        "Subject": rendered.subject,
        "Date": "Wed, 25 Nov 2026 14:00:05 +0000",
        "Message-ID": f"<{issued.share_id}.link@blume-share.example>",
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
        "Content-Language": locale,
    }
    return mailboxes, headers, rendered


def header_registry(email: Email) -> bytes:
    mailboxes, headers, rendered = email
    message = header_registry_email(mailboxes, headers, rendered.text, rendered.html, SMTP)
    return flatten_message(message, cte_type="8bit")


def compat32(email: Email) -> bytes:
    mailboxes, headers, rendered = email
    return wire_bytes(alternative_email(mailboxes, headers, rendered.text, rendered.html))


def render_only(locale: Any) -> Callable[[], object]:
    issued = link_issued(locale)
    return lambda: render_link_email(issued, LINK)


def cpu_ms_per_call(work: Callable[[], object], batch: int) -> float:
    started = time.process_time()
    for _ in range(batch):
        work()
    return (time.process_time() - started) * 1000 / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=400)
    options = parser.parse_args()
    for locale in NAMES:
        email = link_email(locale)
        sides: dict[str, Callable[[], object]] = {
            "header registry": lambda email=email: header_registry(email),
            "compat32": lambda email=email: compat32(email),
            "jinja render": render_only(locale),
        }
        for work in sides.values():  # warm up: imports, caches, the template
            cpu_ms_per_call(work, 20)
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _round in range(options.rounds):
            for name, work in sides.items():
                samples[name].append(cpu_ms_per_call(work, options.batch))
        print(f"{locale}: CPU ms per email, median (min-max) of {options.rounds} rounds")
        for name, values in samples.items():
            print(
                f"  {name:16} {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
            )
        ratios = [
            before / after
            for before, after in zip(samples["header registry"], samples["compat32"], strict=True)
        ]
        print(
            f"  build+flatten: header registry / compat32 = {statistics.median(ratios):.2f}x"
            f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
