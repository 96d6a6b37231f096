"""The fault suite's verdict: each invariant fails the run on its own, and a clean run passes."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from tests.faults.corpus import _evenly, _share
from tests.faults.mail import ReceivedEmail
from tests.faults.poison import FORGED_SOURCE, event_key, poison_cases
from tests.faults.report import (
    RESEND_WINDOW_SECONDS,
    Collected,
    FaultRecord,
    analyse,
    render,
    resend_verdicts,
)
from tests.faults.stores import _count_causes, _text_causes
from tests.faults.traffic import ObservedEvent, Outgoing, PlannedShare

REQUEST_SOURCE = "/blume-share/cli"


def share(number: int) -> PlannedShare:
    return PlannedShare(
        share_id=f"shr_{number:032d}",
        method="external_link",
        address=f"r{number}@clinic.example",
        correlation_id=f"corr-{number}",
        message=Outgoing("study.send.requested", b"{}", f"id-{number}"),
    )


def clean_run(**changes: Any) -> Collected:
    """Two shares completed, one email each, every event audited once, no poison."""
    shares = [share(1), share(2)]
    events = [
        ObservedEvent(REQUEST_SOURCE, f"id-{n}", "study.send.requested", f"corr-{n}", None)
        for n in (1, 2)
    ]
    run = Collected(
        shares=shares,
        published=2,
        states={s.share_id: "completed" for s in shares},
        emails=[
            ReceivedEmail(f"<{s.share_id}.link@x.example>", (s.address,), float(n))
            for n, s in enumerate(shares)
        ],
        notifier_kills=[],
        events=events,
        audit_counts={(e.source, e.event_id): 1 for e in events},
        poison=[],
        dead_letters={},
        audit_verified=True,
        faults=[FaultRecord("broker full restart", 1.0, 2.0, True, {"notifier": 3.0})],
        unexpected_exits={},
        leftover_messages={"blume.share.notifier": 0},
    )
    return dataclasses.replace(run, **changes)


def test_a_clean_run_passes() -> None:
    """A run where every share completed once, with one email each, has no failures."""
    findings = analyse(clean_run())
    assert findings.failures == []
    assert "PASS" in render(findings, clean_run().faults)


def test_a_failed_share_is_lost() -> None:
    """A valid share that ended failed (say, by an SMTP outage) fails the run as lost."""
    run = clean_run(states={share(1).share_id: "completed", share(2).share_id: "failed"})
    run = dataclasses.replace(run, emails=run.emails[:1])
    assert any("1 valid shares lost" in failure for failure in analyse(run).failures)


def test_a_share_nobody_accepted_is_stuck() -> None:
    """A share the dispatcher never recorded counts as stuck, as does a non-terminal one."""
    run = clean_run(states={share(1).share_id: "link_issued"}, emails=[])
    failures = analyse(run).failures
    assert any("2 shares stuck (1 never accepted)" in failure for failure in failures)


def test_two_message_ids_for_one_share_fail() -> None:
    """Two emails with different Message-IDs to one share's address fail the run."""
    run = clean_run()
    extra = ReceivedEmail("<other@x.example>", (share(1).address,), 5.0)
    failures = analyse(dataclasses.replace(run, emails=[*run.emails, extra])).failures
    assert any("1 shares emailed under two different Message-IDs" in f for f in failures)


def test_a_resend_right_before_a_notifier_kill_is_allowed() -> None:
    """The same Message-ID again after a notifier SIGKILL that followed the first copy closely
    is a counted, allowed resend; with no kill in that window it fails the run."""
    first = ReceivedEmail("<a@x>", ("r@x",), 100.0)
    again = ReceivedEmail("<a@x>", ("r@x",), 130.0)
    assert resend_verdicts([first, again], [101.0]) == (1, 0)
    assert resend_verdicts([first, again], [100.0 + RESEND_WINDOW_SECONDS + 1]) == (0, 1)
    assert resend_verdicts([first, again], []) == (0, 1)


def test_an_unexplained_resend_is_named_with_its_moments_on_the_runs_clock() -> None:
    """The failure names the resent Message-ID and when each copy was accepted, in seconds
    since the run started, so that the worker logs can be read around it."""
    run = clean_run()
    resent = [ReceivedEmail("<r@x>", ("r@x",), 1100.0), ReceivedEmail("<r@x>", ("r@x",), 1130.5)]
    run = dataclasses.replace(run, emails=[*run.emails, *resent], started=1000.0)
    failures = analyse(run).failures
    assert "1 resends not explained by a notifier kill (<r@x> at 100.0s and 130.5s)" in failures


def test_an_email_to_a_forged_address_fails() -> None:
    """An email to the address a forged event named fails the run, and is counted as forged."""
    poison = [case for case in poison_cases(30) if case.forged_address]
    assert poison
    run = clean_run(poison=poison)
    forged = poison[0].forged_address
    assert forged is not None
    run = dataclasses.replace(run, emails=[*run.emails, ReceivedEmail("<f@x>", (forged,), 9.0)])
    assert any("(1 forged)" in failure for failure in analyse(run).failures)


def test_a_notice_to_a_rejected_requests_sender_is_no_stranger() -> None:
    """A sender told of a rejection is not an email to a stranger; the same notice to a
    forged address still fails the run."""
    run = clean_run()
    notice = ReceivedEmail("<shr_1.sender-rejected@x.example>", ("alice@h.example",), 9.0)
    assert analyse(dataclasses.replace(run, emails=[*run.emails, notice])).failures == []
    poison = [case for case in poison_cases(30) if case.forged_address]
    forged = poison[0].forged_address
    assert forged is not None
    to_forged = dataclasses.replace(notice, recipients=(forged,))
    failures = analyse(
        dataclasses.replace(run, poison=poison, emails=[*run.emails, to_forged])
    ).failures
    assert any("(1 forged)" in failure for failure in failures)


def test_an_event_not_audited_or_audited_twice_fails() -> None:
    """Every genuine event on the bus must be in the audit store exactly once."""
    run = clean_run()
    key = (REQUEST_SOURCE, "id-1")
    missing = analyse(dataclasses.replace(run, audit_counts={key: 1})).failures
    twice = analyse(dataclasses.replace(run, audit_counts={**run.audit_counts, key: 2})).failures
    assert any("1 missing" in failure for failure in missing)
    assert any("1 twice" in failure for failure in twice)


def test_poison_events_are_not_held_to_the_audit_rule() -> None:
    """A forged event seen on the bus is the suite's own poison, not a genuine event."""
    case = next(case for case in poison_cases(30) if case.forged_address)
    key = event_key(case)
    assert key is not None
    assert key[0] == FORGED_SOURCE
    run = clean_run(poison=[case])
    forged = ObservedEvent(key[0], key[1], "share.blume.published", "c", None)
    assert analyse(dataclasses.replace(run, events=[*run.events, forged])).failures == []


def test_a_poison_request_without_exactly_one_outcome_fails() -> None:
    """A poison request that parses as a CloudEvent owes one outcome event: none fails, as
    do two."""
    case = next(case for case in poison_cases(30) if case.owes_outcome)
    rejected = ObservedEvent(
        "/blume-share/share_dispatcher", "o1", "share.rejected", case.correlation_id, None
    )
    run = clean_run(poison=[case])
    assert any(f"1 none, 0 several ({case.kind} 1)" in f for f in analyse(run).failures)
    audited = {**run.audit_counts, (rejected.source, "o1"): 1, (rejected.source, "o2"): 1}
    run = dataclasses.replace(run, audit_counts=audited)
    assert analyse(dataclasses.replace(run, events=[*run.events, rejected])).failures == []
    twice = [*run.events, rejected, dataclasses.replace(rejected, event_id="o2")]
    assert any("1 several" in f for f in analyse(dataclasses.replace(run, events=twice)).failures)


def test_a_consumer_that_never_came_back_fails() -> None:
    """A worker whose consumers did not re-attach after a fault fails the run, by name."""
    fault = FaultRecord("cluster node killed", 1.0, 2.0, True, {"audit_sink": None})
    failures = analyse(clean_run(faults=[fault])).failures
    assert failures == ["consumers never re-attached: cluster node killed: audit_sink"]


def test_stalled_queues_crashed_workers_and_a_broken_chain_fail() -> None:
    """Messages left on a worker queue, a worker that died by itself and a chain that does
    not verify each fail the run."""
    run = clean_run(
        leftover_messages={"blume.share.share_dispatcher": 16},
        unexpected_exits={"notifier": 1},
        audit_verified=False,
    )
    failures = analyse(run).failures
    assert "messages stalled on worker queues: blume.share.share_dispatcher 16" in failures
    assert "workers died without being killed: notifier 1" in failures
    assert "blume-share audit verify failed" in failures


def test_todays_dlq_listing_is_read_by_reason() -> None:
    """``blume-share dlq list --show`` text gives dead letters by reason, and counts those
    beyond the listed sample."""
    listing = (
        "share_dispatcher     3\n"
        "  id-1  study.send.requested  rejected\n"
        "  id-2  study.send.requested  delivery_limit\n"
        "notifier             1\n"
        "  id-3  share.blume.published  rejected\n"
    )
    assert _text_causes(listing, {"share_dispatcher", "notifier"}) == {
        "rejected": 2,
        "delivery_limit": 1,
        "(beyond the first 100 per queue)": 1,
    }


def test_the_json_dlq_listing_is_read_by_cause() -> None:
    """``dlq list --json`` gives each message's cause, wherever the listing nests it."""
    listing = {
        "queues": [
            {"service": "share_dispatcher", "messages": [{"cause": "malformed"}]},
            {"service": "notifier", "messages": [{"cause": "untrusted_producer"}] * 2},
        ]
    }
    causes: collections.Counter[str] = collections.Counter()
    _count_causes(listing, causes)
    assert causes == {"malformed": 1, "untrusted_producer": 2}


def test_corpus_cases_are_picked_evenly_from_every_layer() -> None:
    """A poison budget is split over the corpus's layers as evenly as whole numbers allow,
    and each layer's share is spread through its list rather than taken from its head."""
    assert [_share(30, 4, index) for index in range(4)] == [8, 8, 7, 7]
    assert _evenly(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert _evenly([1, 2], 5) == [1, 2]
