"""Error classes, their budgets and the backoff: hour-long budgets on a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from aiormq.exceptions import ConnectionClosed
from blume_runtime.retry import (
    BROKER_UNAVAILABLE,
    DATABASE_UNAVAILABLE,
    SMTP_UNAVAILABLE,
    TIMEOUT,
    UNEXPECTED,
    Exhausted,
    Retry,
    RetryPolicy,
    classify,
)
from blume_runtime.service import TransientError
from blume_runtime.settings import Settings
from sqlalchemy import exc as sa_exc

START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def policy(**overrides: float) -> RetryPolicy:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    return RetryPolicy.from_settings(settings, rng=random.Random(7))


def wrapped_database_error() -> Exception:
    try:
        try:
            raise psycopg.OperationalError("connection refused")
        except psycopg.OperationalError as driver_error:
            raise sa_exc.OperationalError("SELECT 1", {}, driver_error) from driver_error
    except sa_exc.OperationalError as error:
        return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError(SMTP_UNAVAILABLE), SMTP_UNAVAILABLE),
        (wrapped_database_error(), DATABASE_UNAVAILABLE),
        (psycopg.InterfaceError("connection already closed"), DATABASE_UNAVAILABLE),
        (sa_exc.TimeoutError("QueuePool limit reached"), DATABASE_UNAVAILABLE),
        (ConnectionClosed(320, "CONNECTION_FORCED"), BROKER_UNAVAILABLE),
        (TimeoutError(), TIMEOUT),
        (KeyError("share_id"), UNEXPECTED),
        (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate")), UNEXPECTED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value,
)
def test_failures_are_put_in_their_error_class(error: Exception, expected: str) -> None:
    """What the handler said, or what the exception (or its cause) is; anything else is a bug."""
    assert classify(error) == expected


def test_a_cause_wrapped_in_another_exception_is_still_found() -> None:
    """A database outage surfacing as some other exception is classified by its cause."""
    with pytest.raises(RuntimeError) as raised:
        raise RuntimeError("handler gave up") from wrapped_database_error()
    assert classify(raised.value) == DATABASE_UNAVAILABLE


def test_an_error_class_must_be_a_short_snake_case_name() -> None:
    """Error classes become metric labels and contract values: no free text."""
    with pytest.raises(ValueError, match="error class"):
        TransientError("SMTP down!")


def test_default_budgets_ride_out_a_day_for_smtp_and_the_database() -> None:
    """The defaults: 24 h for SMTP, database and broker outages, 1 h for hangs, 5 attempts
    for bugs; delays from 5 s doubling up to 300 s."""
    defaults = Settings()
    assert defaults.retry_budget_smtp_seconds == 24 * 3600
    assert defaults.retry_budget_database_seconds == 24 * 3600
    assert defaults.retry_budget_broker_seconds == 24 * 3600
    assert defaults.retry_budget_timeout_seconds == 3600
    assert (defaults.max_attempts, defaults.retry_delay_seconds) == (5, 5.0)
    assert defaults.retry_max_delay_seconds == 300


@pytest.mark.parametrize("error_class", [SMTP_UNAVAILABLE, DATABASE_UNAVAILABLE])
def test_an_outage_is_retried_for_its_whole_budget_then_exhausted(error_class: str) -> None:
    """Walking a fake clock through a 23 h 59 min outage, attempt after attempt: always a
    retry, never sooner than now, never past the budget; at 24 h, exhausted."""
    rules = policy()
    now, attempt = START, 1
    while now < START + timedelta(hours=23, minutes=59):
        plan = rules.plan(error_class=error_class, attempt=attempt, first_failed_at=START, now=now)
        assert isinstance(plan, Retry)
        assert 0 <= plan.delay_seconds <= 300
        assert plan.first_failed_at == START
        assert plan.next_attempt_at <= START + timedelta(hours=24)
        now, attempt = plan.next_attempt_at + timedelta(seconds=1), attempt + 1
    assert attempt > 400  # hundreds of attempts: the attempt count is no budget here
    late = rules.plan(
        error_class=error_class,
        attempt=attempt,
        first_failed_at=START,
        now=START + timedelta(hours=24),
    )
    assert late == Exhausted("time")


def test_the_last_retry_is_scheduled_when_the_budget_ends_not_after() -> None:
    """Ten seconds before the end, a delay is cut to those ten seconds."""
    plan = policy(retry_delay_seconds=60).plan(
        error_class=TIMEOUT,
        attempt=30,
        first_failed_at=START,
        now=START + timedelta(hours=1) - timedelta(seconds=10),
    )
    assert isinstance(plan, Retry)
    assert plan.delay_seconds <= 10


def test_the_first_failure_starts_the_clock() -> None:
    """A message that never failed before (no first failure yet) starts its budget now."""
    plan = policy().plan(error_class=SMTP_UNAVAILABLE, attempt=1, first_failed_at=None, now=START)
    assert isinstance(plan, Retry)
    assert plan.first_failed_at == START


def test_a_deadline_ends_the_budget_early() -> None:
    """A sign-in code's email: retried only until its code expires, whatever the SMTP budget."""
    rules = policy()
    deadline = START + timedelta(minutes=10)
    before = rules.plan(
        error_class=SMTP_UNAVAILABLE,
        attempt=9,
        first_failed_at=START,
        now=deadline - timedelta(seconds=3),
        deadline=deadline,
    )
    assert isinstance(before, Retry)
    assert before.next_attempt_at <= deadline
    after = rules.plan(
        error_class=SMTP_UNAVAILABLE,
        attempt=10,
        first_failed_at=START,
        now=deadline,
        deadline=deadline,
    )
    assert after == Exhausted("deadline")


@pytest.mark.parametrize("error_class", [UNEXPECTED, "sealing_key_mismatch"])
def test_classes_without_a_time_budget_get_max_attempts(error_class: str) -> None:
    """A bug, or any class without a time budget, gets BLUME_MAX_ATTEMPTS attempts."""
    rules = policy(max_attempts=4)
    for attempt in (1, 2, 3):
        assert isinstance(
            rules.plan(error_class=error_class, attempt=attempt, first_failed_at=START, now=START),
            Retry,
        )
    assert rules.plan(
        error_class=error_class, attempt=4, first_failed_at=START, now=START
    ) == Exhausted("attempts")


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    """Delay n is drawn from [0, min(cap, base * 2**(n-1))]: spread over the whole range,
    doubling, never above the cap, even for an absurd attempt number."""
    rules = policy(retry_delay_seconds=5, retry_max_delay_seconds=300)
    for failures, ceiling in ((1, 5), (2, 10), (4, 40), (7, 300), (10**9, 300)):
        draws = [rules.backoff(failures) for _ in range(400)]
        assert all(0 <= draw <= ceiling for draw in draws)
        assert max(draws) > ceiling * 0.9
        assert min(draws) < ceiling * 0.1
