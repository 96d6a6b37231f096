"""What the client raises. Messages name fields and ids, never a value: a request holds PHI,
and an exception's text ends up in logs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError


class BlumeShareError(Exception):
    """Base of everything this library raises on purpose."""


class InvalidRequestError(BlumeShareError, ValueError):
    """The request breaks its contract; nothing was sent. ``fields`` are dotted paths."""

    def __init__(self, what: str, fields: Sequence[str]) -> None:
        self.fields: tuple[str, ...] = tuple(fields)
        super().__init__(f"{what} is not valid: {', '.join(self.fields) or 'the whole request'}")

    @classmethod
    def from_validation(
        cls, what: str, error: ValidationError, prefix: Iterable[str] = ()
    ) -> InvalidRequestError:
        """The fields pydantic named, without the rejected values."""
        fields: list[str] = []
        for detail in error.errors(include_input=False, include_url=False):
            path = ".".join([*prefix, *map(str, detail["loc"])])
            if path not in fields:
                fields.append(path)
        return cls(what, fields)


class PublishError(BlumeShareError):
    """The broker did not confirm the message: refused, unroutable, unreachable or too slow.

    The request may or may not have arrived. Sending it again with the same ``event_id``
    is safe: the dispatcher makes one share of one (source, id).
    """

    def __init__(self, reason: str, *, event_id: str, share_id: str | None = None) -> None:
        self.event_id = event_id
        self.share_id = share_id
        self.reason = reason
        super().__init__(f"event {event_id} was not confirmed by the broker: {reason}")


class LaunchError(BlumeShareError):
    """``POST /api/v1/launches`` did not create a launch."""

    def __init__(self, status: int | None, detail: str, fields: Sequence[str] = ()) -> None:
        self.status = status
        self.fields: tuple[str, ...] = tuple(fields)
        named = f" (fields: {', '.join(self.fields)})" if self.fields else ""
        super().__init__(f"{detail}{named}")


class LaunchUnauthorizedError(LaunchError):
    """401: the launch-client token is unknown, revoked or missing."""


class LaunchForbiddenError(LaunchError):
    """403: the token is valid but not for this tenant (or this action)."""


class LaunchRejectedError(LaunchError):
    """422: the body breaks the contract; ``fields`` are the ones the server listed."""
