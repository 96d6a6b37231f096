"""Error classes, their retry budgets, and how long to wait before each retry.

A failed delivery is put in an error class (``classify``), and the class picks its budget:

- **time budgets**, measured from the message's first failure (``Delivery.first_failed_at``):
  ``smtp_unavailable``, ``database_unavailable`` and ``broker_unavailable`` (24 hours by
  default: an outage overnight or over a weekend is ridden out without anyone replaying
  anything, while a share is never held longer than a day without a person looking at it),
  and ``timeout`` (a handler that hung: 1 hour, since a hang may as well be a bug);
- an **attempt budget** for ``unexpected`` (an exception nobody classified: a bug) and for
  any class without a time budget: ``BLUME_MAX_ATTEMPTS`` attempts.

A ``TransientError`` with a ``deadline`` ends its budget earlier. Past the budget a message is
dead-lettered, cause ``exhausted``, for ops to replay once the cause is fixed.

The delay before retry *n* is drawn uniformly from 0 to ``min(cap, base * 2**(n-1))``
("full jitter": after an outage the backlog comes back spread out, not in one wave), and
never reaches past the end of the budget, so the last attempt is made when it ends.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import psycopg
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from sqlalchemy import exc as sa_exc

from blume_runtime.service import TransientError
from blume_runtime.settings import Settings
from blume_runtime.transport import Delivery

UNEXPECTED: Final = "unexpected"
DATABASE_UNAVAILABLE: Final = "database_unavailable"
BROKER_UNAVAILABLE: Final = "broker_unavailable"
SMTP_UNAVAILABLE: Final = "smtp_unavailable"
TIMEOUT: Final = "timeout"

_DATABASE_ERRORS: Final = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
_BROKER_ERRORS: Final = (AMQPConnectionError, ChannelInvalidStateError)
PREVIOUS_ERROR_CLASS_HEADER: Final = "x-blume-error-class"
"""Set by the transport on a retried message: the error class of the failure before."""
_MAX_CHAIN: Final = 8
_MAX_EXPONENT: Final = 32
"""2**32 times any sane base delay is far past any cap: no float overflow on a huge attempt."""


def classify(error: BaseException) -> str:
    """The error class of a failure: what the handler said, or what the exception is."""
    seen: BaseException | None = error
    for _ in range(_MAX_CHAIN):  # the cause chain: SQLAlchemy wraps the driver's error
        if seen is None:
            break
        if isinstance(seen, TransientError):
            return seen.error_class
        if isinstance(seen, _DATABASE_ERRORS):
            return DATABASE_UNAVAILABLE
        if isinstance(seen, _BROKER_ERRORS):
            return BROKER_UNAVAILABLE
        if isinstance(seen, TimeoutError):
            return TIMEOUT
        seen = seen.__cause__ or seen.__context__
    return UNEXPECTED


def first_retry_of_class(delivery: Delivery, error_class: str) -> bool:
    """Whether this failure starts a wait: the message's first, or of another class than
    the one before (the service then says so once, through ``on_retry_scheduled``)."""
    if delivery.first_failed_at is None:
        return True
    return delivery.headers.get(PREVIOUS_ERROR_CLASS_HEADER) != error_class


@dataclass(frozen=True, slots=True)
class Retry:
    delay_seconds: float
    first_failed_at: datetime
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class Exhausted:
    budget: str
    """What ran out, for the log: ``attempts``, ``time`` or ``deadline``."""


class RetryPolicy:
    """Budgets per error class and the backoff between attempts (see the module docstring)."""

    def __init__(
        self,
        *,
        base_delay: float,
        max_delay: float,
        max_attempts: int,
        budgets: Mapping[str, timedelta],
        rng: random.Random | None = None,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.budgets = dict(budgets)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    @classmethod
    def from_settings(cls, settings: Settings, rng: random.Random | None = None) -> RetryPolicy:
        return cls(
            base_delay=settings.retry_delay_seconds,
            max_delay=settings.retry_max_delay_seconds,
            max_attempts=settings.max_attempts,
            budgets={
                SMTP_UNAVAILABLE: timedelta(seconds=settings.retry_budget_smtp_seconds),
                DATABASE_UNAVAILABLE: timedelta(seconds=settings.retry_budget_database_seconds),
                BROKER_UNAVAILABLE: timedelta(seconds=settings.retry_budget_broker_seconds),
                TIMEOUT: timedelta(seconds=settings.retry_budget_timeout_seconds),
            },
            rng=rng,
        )

    def backoff(self, failures: int) -> float:
        """The delay after the ``failures``-th failure in a row (1 for the first)."""
        exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
        return self._rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**exponent))

    def plan(
        self,
        *,
        error_class: str,
        attempt: int,
        first_failed_at: datetime | None,
        now: datetime,
        deadline: datetime | None = None,
    ) -> Retry | Exhausted:
        """Retry (when, and since when it has been failing) or give up."""
        first = first_failed_at or now
        end: datetime | None = None
        ran_out = "time"
        budget = self.budgets.get(error_class)
        if budget is None:
            if attempt >= self.max_attempts:
                return Exhausted("attempts")
        else:
            end = first + budget
        if deadline is not None and (end is None or deadline < end):
            end, ran_out = deadline, "deadline"
        if end is not None and now >= end:
            return Exhausted(ran_out)
        delay = self.backoff(attempt)
        if end is not None:
            delay = min(delay, (end - now).total_seconds())
        return Retry(delay, first, now + timedelta(seconds=delay))
