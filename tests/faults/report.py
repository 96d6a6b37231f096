"""What a run found: counts from the system's own stores and the SMTP server, held to the
invariants the issue sets. Pure functions over what the run collected, so each invariant is
tested on its own (``tests/faults/test_report.py``)."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tests.faults.mail import ReceivedEmail
from tests.faults.poison import PoisonCase, event_key
from tests.faults.traffic import ObservedEvent, PlannedShare

RESEND_WINDOW_SECONDS: Final = 10.0
"""How long before a notifier SIGKILL an email may have been accepted and still be resent:
the window between the SMTP server's 250 and the notifier's commit, with room for load."""
TERMINAL: Final = frozenset({"completed", "rejected", "failed", "revoked"})
OUTCOMES: Final = frozenset({"share.rejected", "share.completed", "share.failed"})


@dataclass(frozen=True, slots=True)
class FaultRecord:
    name: str
    started_at: float
    """Seconds since the run started."""
    seconds: float
    broker_fault: bool
    reattached: Mapping[str, float | None] = field(default_factory=dict)
    """Per worker: seconds from recovery until its consumers were back (None: never)."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Collected:
    """Everything a run gathered once it settled."""

    shares: Sequence[PlannedShare]
    published: int
    states: Mapping[str, str]
    """share_id -> state, for the shares the dispatcher knows."""
    emails: Sequence[ReceivedEmail]
    notifier_kills: Sequence[float]
    """``time.monotonic()`` of each SIGKILL of the notifier."""
    events: Sequence[ObservedEvent]
    audit_counts: Mapping[tuple[str, str], int]
    """(source, id) -> records in the audit store (sealed and staged)."""
    poison: Sequence[PoisonCase]
    dead_letters: Mapping[str, int]
    """cause -> dead-lettered messages, as ``blume-share dlq list`` reports them."""
    audit_verified: bool
    faults: Sequence[FaultRecord]
    unexpected_exits: Mapping[str, int]
    leftover_messages: Mapping[str, int]
    """worker queue -> messages still ready or unacknowledged after settling."""
    plain_log_lines: Mapping[str, int] = field(default_factory=dict)
    """worker -> log lines that are not JSON (library output that bypassed structlog)."""
    started: float = 0.0
    """``time.monotonic()`` when the run started: the zero of the Faults table's clock."""


@dataclass(frozen=True, slots=True)
class Findings:
    rows: list[tuple[str, str]]
    failures: list[str]


SENDER_NOTICE = ".sender-"
"""In the Message-ID of a notice to a share's sender (``<shr_….sender-<occasion>@…>``)."""


@dataclass(frozen=True, slots=True)
class Resend:
    """A later copy of a Message-ID, and whether a notifier kill explains it."""

    message_id: str
    previous: float
    later: float
    explained: bool


def resends(emails: Iterable[ReceivedEmail], notifier_kills: Sequence[float]) -> list[Resend]:
    """Every later copy of a Message-ID, in order of acceptance.

    It is explained when the notifier was SIGKILLed after the previous copy was accepted,
    within ``RESEND_WINDOW_SECONDS`` of it, and before this copy.
    """
    times: dict[str, list[float]] = collections.defaultdict(list)
    for email in emails:
        times[email.message_id].append(email.accepted_at)
    found = []
    for message_id, accepted in times.items():
        accepted.sort()
        for previous, later in itertools.pairwise(accepted):
            explained = any(
                previous <= kill <= later and kill - previous <= RESEND_WINDOW_SECONDS
                for kill in notifier_kills
            )
            found.append(Resend(message_id, previous, later, explained))
    return sorted(found, key=lambda resend: resend.later)


def resend_verdicts(
    emails: Iterable[ReceivedEmail], notifier_kills: Sequence[float]
) -> tuple[int, int]:
    """(resends a notifier kill explains, resends nothing explains)."""
    found = resends(emails, notifier_kills)
    explained = sum(1 for resend in found if resend.explained)
    return explained, len(found) - explained


def outcome_counts(
    poison: Sequence[PoisonCase], events: Iterable[ObservedEvent]
) -> collections.Counter[str]:
    """Per poison correlation id that owes an outcome: outcome events seen for it."""
    owed = {case.correlation_id for case in poison if case.owes_outcome and case.correlation_id}
    seen = collections.Counter(dict.fromkeys(owed, 0))
    for event in events:
        if event.type in OUTCOMES and event.correlation_id in owed:
            seen[event.correlation_id] += 1
    return seen


def analyse(run: Collected) -> Findings:
    planned = {share.share_id: share for share in run.shares}
    states = [run.states.get(share_id) for share_id in planned]
    completed = states.count("completed")
    rejected = states.count("rejected")
    failed = states.count("failed")
    stuck = sum(1 for state in states if state not in TERMINAL)
    never_accepted = states.count(None)

    addresses = {share.address: share.share_id for share in run.shares}
    ids_per_share: dict[str, set[str]] = collections.defaultdict(set)
    strangers: list[str] = []
    copies: collections.Counter[str] = collections.Counter()
    forged = {case.forged_address for case in run.poison if case.forged_address}
    sender_notices = 0
    for email in run.emails:
        copies[email.message_id] += 1
        if SENDER_NOTICE in email.message_id and not forged & set(email.recipients):
            # A rejected (poison) request's sender is told: not a share's email, nor a stranger's.
            sender_notices += 1
            continue
        for recipient in email.recipients:
            if recipient in addresses:
                ids_per_share[addresses[recipient]].add(email.message_id)
            else:
                strangers.append(recipient)
    two_ids = sum(1 for ids in ids_per_share.values() if len(ids) > 1)
    duplicates = sum(count - 1 for count in copies.values())
    explained, unexplained = resend_verdicts(run.emails, run.notifier_kills)
    # Each unexplained resend with its moments on the run's clock (as the Faults table gives
    # them), so that the worker logs can be read around it.
    unexplained_detail = "; ".join(
        f"{resend.message_id} at {resend.previous - run.started:.1f}s"
        f" and {resend.later - run.started:.1f}s"
        for resend in resends(run.emails, run.notifier_kills)
        if not resend.explained
    )
    completed_unmailed = sum(
        1
        for share_id in planned
        if run.states.get(share_id) == "completed" and share_id not in ids_per_share
    )
    forged_emails = sum(1 for recipient in strangers if recipient in forged)

    poisoned = {event_key(case) for case in run.poison}
    genuine = {(event.source, event.event_id) for event in run.events} - poisoned
    audit_missing = sum(1 for key in genuine if run.audit_counts.get(key, 0) == 0)
    audit_twice = sum(1 for key in genuine if run.audit_counts.get(key, 0) > 1)
    audited_once = audit_missing == 0 and audit_twice == 0

    outcomes = outcome_counts(run.poison, run.events)
    without_outcome = sum(1 for count in outcomes.values() if count == 0)
    several_outcomes = sum(1 for count in outcomes.values() if count > 1)
    kind_of = {case.correlation_id: case.kind for case in run.poison}
    unanswered = collections.Counter(
        kind_of[correlation] for correlation, count in outcomes.items() if count != 1
    )
    never_back = [
        f"{fault.name}: {worker}"
        for fault in run.faults
        for worker, took in fault.reattached.items()
        if took is None
    ]
    leftovers = {queue: n for queue, n in run.leftover_messages.items() if n}
    crashed = {name: n for name, n in run.unexpected_exits.items() if n}

    dlq = ", ".join(f"{cause} {n}" for cause, n in sorted(run.dead_letters.items())) or "none"
    rows = [
        ("published", f"{run.published} of {len(run.shares)}"),
        ("completed", str(completed)),
        ("rejected", str(rejected)),
        ("failed", str(failed)),
        ("stuck (neither terminal nor rejected)", f"{stuck} ({never_accepted} never accepted)"),
        ("lost (valid, yet rejected or failed)", str(rejected + failed)),
        ("emails accepted by SMTP", str(len(run.emails))),
        ("duplicate emails (same Message-ID again)", str(duplicates)),
        ("  of which after a notifier kill", f"{explained} (unexplained: {unexplained})"),
        ("shares with two different Message-IDs", str(two_ids)),
        ("completed shares without an email", str(completed_unmailed)),
        ("emails to addresses no share named", f"{len(strangers)} (forged: {forged_emails})"),
        ("sender notices (rejections, failures)", str(sender_notices)),
        ("DLQ by cause", dlq),
        ("poison published", str(len(run.poison))),
        (
            "poison requests with one outcome",
            f"{len(outcomes) - without_outcome - several_outcomes} of {len(outcomes)}"
            f" (none: {without_outcome}, several: {several_outcomes})",
        ),
        ("events on the bus (genuine)", str(len(genuine))),
        (
            "events audited once",
            f"{'yes' if audited_once else 'no'} (missing {audit_missing}, twice {audit_twice})",
        ),
        ("audit verify", "passed" if run.audit_verified else "FAILED"),
        ("messages left on worker queues", _mapping(leftovers)),
        ("workers that died on their own", _mapping(crashed)),
        ("log lines that are not JSON", _mapping(run.plain_log_lines)),
    ]
    checks = [
        (rejected + failed == 0, f"{rejected + failed} valid shares lost (rejected or failed)"),
        (stuck == 0, f"{stuck} shares stuck ({never_accepted} never accepted)"),
        (two_ids == 0, f"{two_ids} shares emailed under two different Message-IDs"),
        (
            unexplained == 0,
            f"{unexplained} resends not explained by a notifier kill ({unexplained_detail})",
        ),
        (completed_unmailed == 0, f"{completed_unmailed} completed shares sent no email"),
        (not strangers, f"{len(strangers)} emails to strangers ({forged_emails} forged)"),
        (audited_once, f"events not audited once: {audit_missing} missing, {audit_twice} twice"),
        (run.audit_verified, "blume-share audit verify failed"),
        (not never_back, f"consumers never re-attached: {', '.join(never_back)}"),
        (
            without_outcome == 0 and several_outcomes == 0,
            f"poison requests without exactly one outcome: {without_outcome} none, "
            f"{several_outcomes} several ({_mapping(unanswered)})",
        ),
        (not leftovers, f"messages stalled on worker queues: {_mapping(leftovers)}"),
        (not crashed, f"workers died without being killed: {_mapping(crashed)}"),
    ]
    return Findings(rows, [message for ok, message in checks if not ok])


def _mapping(values: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(values.items())) or "none"


def render(findings: Findings, faults: Sequence[FaultRecord]) -> str:
    width = max(len(label) for label, _value in findings.rows) + 2
    lines = ["", "Faults", f"  {'at':>6}  {'took':>6}  {'fault':<34} consumers re-attached after"]
    for fault in faults:
        slowest = _reattach_summary(fault.reattached)
        lines.append(
            f"  {fault.started_at:>5.0f}s  {fault.seconds:>5.0f}s  {fault.name:<34} {slowest}"
            + (f"  [{fault.note}]" if fault.note else "")
        )
    lines += ["", "Results"]
    lines += [f"  {label:<{width}} {value}" for label, value in findings.rows]
    lines.append("")
    if findings.failures:
        lines.append("FAIL")
        lines += [f"  - {failure}" for failure in findings.failures]
    else:
        lines.append("PASS: every invariant held")
    return "\n".join(lines)


def _reattach_summary(reattached: Mapping[str, float | None]) -> str:
    if not reattached:
        return "-"
    missing = sorted(name for name, took in reattached.items() if took is None)
    if missing:
        return f"NEVER: {', '.join(missing)}"
    slowest = max(reattached.items(), key=lambda item: item[1] or 0.0)
    return f"all, slowest {slowest[0]} {slowest[1]:.1f}s"
