"""A DICOMweb client for the tenant's PACS (httpx, async, streaming).

QIDO-RS finds the study and its series, WADO-RS metadata orders a series' instances by
InstanceNumber, WADO-RS rendered returns one image as PNG or JPEG (with the ``window``
passthrough) and WADO-RS retrieve returns the DICOM files for a download. Images and files
are streamed: nothing here holds a whole study in memory.

UIDs go to the PACS only (in its URLs); they never leave this module towards the browser.
Credentials come from the tenant policy (basic or bearer, the secret named by an environment
variable or a mounted file).

The gateway's client for the PACS (``pacs_http_client``) is httpx over aiohttp's transport
(``httpx_aiohttp``): httpx's own (httpcore, h11, anyio) cost about a third of the gateway's
CPU per proxied image, aiohttp's C parser and connection pool a fraction of it. The API stays
httpx's, so a test can still hand ``DicomwebClient`` an ``httpx.MockTransport``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final, Literal, NamedTuple

import aiohttp
import httpx
from blume_runtime.tenants import TenantPolicy
from httpx_aiohttp import AiohttpTransport

DICOM_JSON: Final = "application/dicom+json"
RenderedType = Literal["image/png", "image/jpeg"]
WindowFunction = Literal["linear", "linear-exact", "sigmoid"]

# DICOM JSON attribute tags (PS3.18 F.2).
_STUDY_DATE: Final = "00080020"
_MODALITIES_IN_STUDY: Final = "00080061"
_MODALITY: Final = "00080060"
_STUDY_DESCRIPTION: Final = "00081030"
_SERIES_DESCRIPTION: Final = "0008103E"
_PATIENT_NAME: Final = "00100010"
_SERIES_UID: Final = "0020000E"
_SERIES_NUMBER: Final = "00200011"
_INSTANCE_NUMBER: Final = "00200013"
_SOP_INSTANCE_UID: Final = "00080018"
_SERIES_INSTANCES: Final = "00201209"


_ATTEMPTS: Final = 2
_PACS_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
_PACS_CONNECTIONS: Final = 64
_PACS_KEEPALIVE_SECONDS: Final = 5.0
_STALE_CONNECTION: Final = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class PacsError(RuntimeError):
    """The PACS could not be reached or answered with an error (not a plain 'not found')."""


@dataclass(frozen=True, slots=True)
class Pacs:
    """Where one tenant's DICOMweb service is and how to authenticate to it."""

    base_url: str
    authorization: str | None = None

    @classmethod
    def for_policy(cls, policy: TenantPolicy) -> Pacs | None:
        """The tenant's PACS, or None when its policy names none (PolicyError if the
        credentials it names cannot be read)."""
        if policy.dicomweb_url is None:
            return None
        credentials = policy.dicomweb_credentials
        authorization = None
        if credentials is not None:
            secret = credentials.secret()
            if credentials.scheme == "bearer":
                authorization = f"Bearer {secret}"
            else:
                pair = f"{credentials.username}:{secret}".encode()
                authorization = f"Basic {base64.b64encode(pair).decode()}"
        return cls(str(policy.dicomweb_url).rstrip("/"), authorization)

    def headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers


class Instance(NamedTuple):
    """Where one image is: the PACS and the three UIDs that name it there."""

    pacs: Pacs
    study_uid: str
    series_uid: str
    instance_uid: str

    @property
    def url(self) -> str:
        return (
            f"{self.pacs.base_url}/studies/{self.study_uid}/series/{self.series_uid}"
            f"/instances/{self.instance_uid}"
        )


@dataclass(frozen=True, slots=True)
class StudyListing:
    study_date: str | None
    modalities: tuple[str, ...]
    description: str | None
    patient_name: str | None


@dataclass(frozen=True, slots=True)
class SeriesListing:
    series_uid: str
    number: int | None
    modality: str | None
    description: str | None
    instances: int


@dataclass(frozen=True, slots=True)
class Window:
    """The rendered ``window`` parameter: centre, width and the VOI LUT function."""

    center: float
    width: float
    function: WindowFunction = "linear"

    def query(self) -> str:
        # Orthanc's DICOMweb plugin reads the commas literally: they must not be escaped.
        return f"window={self.center:g},{self.width:g},{self.function}"


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    attribute = item.get(tag)
    if not isinstance(attribute, dict):
        return []
    values = attribute.get("Value")
    return values if isinstance(values, list) else []


def _text(item: dict[str, Any], tag: str) -> str | None:
    values = _values(item, tag)
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # a person name: {"Alphabetic": "..."}
        value = value.get("Alphabetic")
    return str(value) if value is not None else None


def _number(item: dict[str, Any], tag: str) -> int | None:
    values = _values(item, tag)
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


def pacs_http_client() -> httpx.AsyncClient:
    """The PACS's own client: longer timeouts, a pool of connections kept alive between
    images, streaming, no redirects followed. aiohttp's session is made on first use, on
    the loop that serves; it keeps no cookie jar of its own (httpx's is the client's). It
    honours ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as httpx did (``trust_env``): a site
    may reach its PACS through a proxy."""

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=_PACS_CONNECTIONS, keepalive_timeout=_PACS_KEEPALIVE_SECONDS
        )
        return aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=True
        )

    transport = AiohttpTransport(client=session)
    return httpx.AsyncClient(transport=transport, timeout=_PACS_TIMEOUT, follow_redirects=False)


class DicomwebClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _json(self, pacs: Pacs, path: str) -> list[dict[str, Any]] | None:
        """A QIDO-RS or metadata answer; None when the PACS has no such resource."""
        answer = await self._open(f"{pacs.base_url}{path}", pacs.headers(DICOM_JSON))
        try:
            await answer.aread()
        except httpx.HTTPError as error:
            raise PacsError(type(error).__name__) from None
        finally:
            await answer.aclose()
        if answer.status_code in (204, 404):
            return None
        if answer.status_code != 200:
            raise PacsError(f"PACS answered {answer.status_code}")
        body = answer.json()
        if not isinstance(body, list):
            raise PacsError("PACS answered something other than a DICOM JSON list")
        return [item for item in body if isinstance(item, dict)]

    async def study(self, pacs: Pacs, study_uid: str) -> StudyListing | None:
        """QIDO-RS: the study, or None when it is not on the PACS."""
        found = await self._json(
            pacs,
            f"/studies?StudyInstanceUID={study_uid}"
            f"&includefield={_STUDY_DESCRIPTION}&includefield={_MODALITIES_IN_STUDY}",
        )
        if not found:
            return None
        item = found[0]
        return StudyListing(
            study_date=_text(item, _STUDY_DATE),
            modalities=tuple(str(value) for value in _values(item, _MODALITIES_IN_STUDY)),
            description=_text(item, _STUDY_DESCRIPTION),
            patient_name=_text(item, _PATIENT_NAME),
        )

    async def series(self, pacs: Pacs, study_uid: str) -> list[SeriesListing]:
        """QIDO-RS: the study's series with description, modality and number of images,
        in series-number order."""
        found = await self._json(
            pacs,
            f"/studies/{study_uid}/series?includefield={_SERIES_DESCRIPTION}"
            f"&includefield={_SERIES_INSTANCES}",
        )
        listings = [
            SeriesListing(
                series_uid=uid,
                number=_number(item, _SERIES_NUMBER),
                modality=_text(item, _MODALITY),
                description=_text(item, _SERIES_DESCRIPTION),
                instances=_number(item, _SERIES_INSTANCES) or 0,
            )
            for item in found or []
            if (uid := _text(item, _SERIES_UID)) is not None
        ]
        return sorted(listings, key=lambda s: (s.number is None, s.number or 0, s.series_uid))

    async def instance_order(self, pacs: Pacs, study_uid: str, series_uid: str) -> list[str]:
        """WADO-RS metadata: the series' SOP Instance UIDs by InstanceNumber."""
        found = await self._json(pacs, f"/studies/{study_uid}/series/{series_uid}/metadata")
        numbered = [
            (_number(item, _INSTANCE_NUMBER), uid)
            for item in found or []
            if (uid := _text(item, _SOP_INSTANCE_UID)) is not None
        ]
        numbered.sort(key=lambda pair: (pair[0] is None, pair[0] or 0, pair[1]))
        return [uid for _, uid in numbered]

    async def open_rendered(
        self, instance: Instance, accept: RenderedType = "image/png", window: Window | None = None
    ) -> httpx.Response:
        """WADO-RS rendered: the open response, its body not yet read. The caller streams
        it and closes it (``aclose``)."""
        query = f"?{window.query()}" if window is not None else ""
        return await self._open(f"{instance.url}/rendered{query}", instance.pacs.headers(accept))

    async def _open(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """GET, the body not yet read. A pooled connection the PACS closed while idle
        (Orthanc keeps them 1 s) fails before any answer: a GET is safe to send once more."""
        for attempt in range(_ATTEMPTS):
            try:
                request = self._http.build_request("GET", url, headers=headers)
                return await self._http.send(request, stream=True)
            except _STALE_CONNECTION:
                if attempt + 1 == _ATTEMPTS:
                    raise PacsError("connection closed by the PACS") from None
            except httpx.HTTPError as error:
                raise PacsError(type(error).__name__) from None
        raise AssertionError("unreachable")

    async def instance_file(self, instance: Instance) -> bytes:
        """WADO-RS retrieve: one instance's DICOM file (one file in memory at a time)."""
        accept = 'multipart/related; type="application/dicom"'
        response = await self._open(instance.url, instance.pacs.headers(accept))
        try:
            if response.status_code != 200:
                raise PacsError(f"PACS answered {response.status_code}")
            body = await response.aread()
        except httpx.HTTPError as error:
            raise PacsError(type(error).__name__) from None
        finally:
            await response.aclose()
        return _first_part(response.headers.get("content-type", ""), body)


def _first_part(content_type: str, body: bytes) -> bytes:
    """The first part of a multipart/related answer (WADO-RS wraps every file in one)."""
    if not content_type.lower().startswith("multipart/"):
        return body
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload
    raise PacsError("PACS answered an empty multipart body")
