"""Opening the sender's sharing page: ``POST /api/v1/launches`` over HTTP (httpx).

OmegaAI's backend asks for a launch with its launch-client token and opens the answer's
``launch_url`` in the user's default browser. The body (the study and its patient) is PHI:
it goes to the gateway's internal address only, and nothing here logs it.

Errors: 401, 403 and 422 raise ``LaunchUnauthorizedError``, ``LaunchForbiddenError`` and
``LaunchRejectedError`` carrying the field names the server listed. The server answers in
FastAPI's shape, ``{"detail": [{"loc": ["body", "sender", "email"], "msg": ..., "type": ...}]}``
(never the values), or ``{"detail": "text"}`` when no field is to blame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import httpx
from blume_contracts.events import PatientAccountRef, Sender, Study
from blume_contracts.launches import LAUNCHES_PATH, LaunchCreated, LaunchRequest
from blume_contracts.locales import Locale
from pydantic import ValidationError

from blume_share_client.closing import Closing
from blume_share_client.errors import (
    InvalidRequestError,
    LaunchError,
    LaunchForbiddenError,
    LaunchRejectedError,
    LaunchUnauthorizedError,
)

_ERRORS: Final[dict[int, tuple[type[LaunchError], str]]] = {
    401: (LaunchUnauthorizedError, "the launch-client token was refused"),
    403: (LaunchForbiddenError, "the launch-client token may not launch for this tenant"),
    422: (LaunchRejectedError, "the server rejected the launch body"),
}
_FIELD_PART: Final = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_MAX_FIELDS: Final = 50


class LaunchClient(Closing):
    """Creates sender launches on the gateway at ``base_url`` (its internal Service URL)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._url = base_url.rstrip("/") + LAUNCHES_PATH
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def create_launch(
        self,
        *,
        tenant_id: str,
        sender: Sender | Mapping[str, Any],
        study: Study | Mapping[str, Any],
        patient_account: PatientAccountRef | Mapping[str, Any] | None = None,
        locale: Locale = "en-CA",
    ) -> LaunchCreated:
        """A one-time launch for ``sender`` to share ``study``: its URL and expiry.

        The body is validated first (``InvalidRequestError``, nothing sent).
        """
        try:
            request = LaunchRequest.model_validate(
                {
                    "tenant_id": tenant_id,
                    "sender": sender,
                    "study": study,
                    "patient_account": patient_account,
                    "locale": locale,
                }
            )
        except ValidationError as error:
            raise InvalidRequestError.from_validation("the launch", error) from None
        absent = {"patient_account"} if request.patient_account is None else None
        body = request.model_dump(mode="json", exclude=absent)
        try:
            answer = self._http.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as error:
            raise LaunchError(
                None, f"the launch API did not answer: {type(error).__name__}"
            ) from None
        if answer.status_code in _ERRORS:
            error_class, detail = _ERRORS[answer.status_code]
            raise error_class(answer.status_code, detail, listed_fields(answer))
        if not answer.is_success:
            raise LaunchError(answer.status_code, f"the launch API answered {answer.status_code}")
        try:
            return LaunchCreated.model_validate_json(answer.content)
        except ValidationError:
            raise LaunchError(
                answer.status_code, "the launch API's answer is not a launch"
            ) from None

    def close(self) -> None:
        if self._owns_http:
            self._http.close()


def listed_fields(answer: httpx.Response) -> list[str]:
    """The dotted field names in an error answer's ``detail`` (``body`` dropped), each part a
    plain name or ``?``: nothing the server echoed can smuggle a value into a log."""
    try:
        document = answer.json()
    except ValueError:
        return []
    details = document.get("detail") if isinstance(document, dict) else None
    if not isinstance(details, list):
        return []
    fields: list[str] = []
    for detail in details[:_MAX_FIELDS]:
        location = detail.get("loc") if isinstance(detail, dict) else None
        if not isinstance(location, list):
            continue
        parts = [str(part) for part in location]
        if parts[:1] == ["body"]:
            parts = parts[1:]
        name = ".".join(part if _FIELD_PART.match(part) else "?" for part in parts)
        if name and name not in fields:
            fields.append(name)
    return fields
