"""A DICOMweb client for the tenant's PACS (aiohttp, async, streaming).

QIDO-RS finds the study and its series, WADO-RS metadata orders a series' instances by
InstanceNumber, WADO-RS rendered returns one image as PNG or JPEG (with the ``window``
passthrough) and WADO-RS retrieve returns the DICOM files for a download. Images and files
are streamed: nothing here holds a whole study in memory.

UIDs go to the PACS only (in its URLs); they never leave this module towards the browser.
Credentials come from the tenant policy (basic or bearer, the secret named by an environment
variable or a mounted file).

``DicomwebClient`` speaks to the PACS through a port of its own, ``PacsHttp`` (one GET, its
answer streamed). The product's adapter is aiohttp's client on its own (``AiohttpPacs``):
httpx's client layers over it (httpx-aiohttp) cost about 6 % of the gateway's CPU per
proxied image, httpx's own transport (httpcore, h11, anyio) a third. Unit tests put a fake
behind the port.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Final, Literal, NamedTuple, Protocol

import aiohttp
from aiohttp.helpers import BasicAuth, get_env_proxy_for_url
from blume_runtime.tenants import TenantPolicy
from yarl import URL

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


_PACS_TIMEOUT: Final = aiohttp.ClientTimeout(connect=30.0, sock_connect=5.0, sock_read=30.0)
"""5 s to connect, 30 s for a free connection from the pool and between two reads: what
httpx's ``Timeout(30, connect=5)`` was, with no bound on a whole (streamed) answer."""
_PACS_CONNECTIONS: Final = 64
_NOT_ANSWERED: Final = (aiohttp.ClientError, TimeoutError)
"""What aiohttp raises for a PACS out of reach, or one that stopped answering midway."""
_PACS_KEEPALIVE_SECONDS: Final = 5.0


_Proxy = tuple[URL, BasicAuth | None] | None


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


class PacsAnswer(Protocol):
    """The PACS's answer to one GET, its body not yet read: read it whole (``read``) or
    stream it (``chunks``), and ``close`` it either way."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Its headers, by case-insensitive name."""
        ...

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives."""
        ...

    def close(self) -> None:
        """Done with it: its connection goes back to the pool if the body was read to the
        end, and is closed otherwise."""
        ...


class PacsHttp(Protocol):
    """The gateway's port to a PACS: one GET, the answer open (``PacsError`` when the PACS
    cannot be reached or stops answering)."""

    async def get(self, url: str, headers: Mapping[str, str]) -> PacsAnswer: ...

    async def aclose(self) -> None: ...


class AiohttpPacs:
    """``PacsHttp`` on aiohttp's client: a pool of connections kept alive between images,
    streaming, no redirects followed, no cookie jar; a compressed body is decompressed as it
    is read. Its session is made on first use, on the loop that serves. A pooled connection
    the PACS closed while idle (Orthanc keeps them 1 s) is retried once by aiohttp itself,
    as it does for any GET.

    It honours ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``: a site may reach its PACS
    through a proxy. aiohttp's own ``trust_env`` would look the proxy up (and a ``.netrc``)
    on a worker thread for every request, two thread hops per image; here it is looked up
    the same way (aiohttp's ``get_env_proxy_for_url``) once per PACS origin, when this
    client first asks it. No ``.netrc`` is read for the PACS itself: its credentials are the
    tenant policy's."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str | None, int | None], _Proxy] = {}

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=_PACS_CONNECTIONS, keepalive_timeout=_PACS_KEEPALIVE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=_PACS_TIMEOUT,
            )
        return self._session

    async def _proxy(self, url: URL) -> _Proxy:
        """The environment's proxy for this URL's origin (None: go direct)."""
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            try:
                # Reads the environment and may read a .netrc: off the serving loop, once.
                found = await asyncio.to_thread(get_env_proxy_for_url, url)
            except LookupError:
                found = None
            self._proxies[origin] = found
        return self._proxies[origin]

    async def get(self, url: str, headers: Mapping[str, str]) -> PacsAnswer:
        # The URL is built from the policy's (validated) base and the PACS's own UIDs:
        # already encoded, and Orthanc wants the window's commas as they are.
        target = URL(url, encoded=True)
        proxy, proxy_auth = await self._proxy(target) or (None, None)
        try:
            response = await self._opened().get(
                target,
                headers=headers,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            )
        except _NOT_ANSWERED as error:
            raise PacsError(type(error).__name__) from None
        return _AiohttpAnswer(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpAnswer:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _NOT_ANSWERED as error:
            raise PacsError(type(error).__name__) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _NOT_ANSWERED as error:
            raise PacsError(type(error).__name__) from None

    def close(self) -> None:
        self._response.release()


class DicomwebClient:
    def __init__(self, http: PacsHttp) -> None:
        self._http = http

    async def _json(self, pacs: Pacs, path: str) -> list[dict[str, Any]] | None:
        """A QIDO-RS or metadata answer; None when the PACS has no such resource."""
        answer = await self._http.get(f"{pacs.base_url}{path}", pacs.headers(DICOM_JSON))
        try:
            content = await answer.read()
        finally:
            answer.close()
        if answer.status in (204, 404):
            return None
        if answer.status != 200:
            raise PacsError(f"PACS answered {answer.status}")
        try:
            body = json.loads(content)
        except ValueError:
            raise PacsError("PACS answered something other than JSON") from None
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
    ) -> PacsAnswer:
        """WADO-RS rendered: the open answer, its body not yet read. The caller streams
        it and closes it."""
        query = f"?{window.query()}" if window is not None else ""
        headers = instance.pacs.headers(accept)
        # PNG and JPEG are compressed already: compressing them again only costs the PACS.
        headers["Accept-Encoding"] = "identity"
        return await self._http.get(f"{instance.url}/rendered{query}", headers)

    async def instance_file(self, instance: Instance) -> bytes:
        """WADO-RS retrieve: one instance's DICOM file (one file in memory at a time)."""
        accept = 'multipart/related; type="application/dicom"'
        answer = await self._http.get(instance.url, instance.pacs.headers(accept))
        try:
            if answer.status != 200:
                raise PacsError(f"PACS answered {answer.status}")
            body = await answer.read()
        finally:
            answer.close()
        return _first_part(answer.headers.get("content-type", ""), body)


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
