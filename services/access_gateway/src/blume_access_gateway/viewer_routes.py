"""The built-in viewer and its scoped image proxy (``/view/<handle>...``).

Thin: which session (cookies), the per-session rate limit, pages and streaming here; what a
handle reaches and the audit in ``viewer``. Every route checks the grant first.

The image route is the one a scrolling viewer hits dozens of times a second, so it is a
plain Starlette route put before every FastAPI route (``frame_route``): FastAPI's parameter
models and dependency resolution cost more per image than the rest of the gateway's own
work. It checks its query as the FastAPI route did, and streams without the task that
``StreamingResponse`` starts beside each response (``_StreamedImage``).
"""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import AsyncIterator
from typing import Any, Final

from blume_contracts.events import ClientContext
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from blume_access_gateway import views
from blume_access_gateway.dicomweb import Instance, PacsAnswer, PacsError, RenderedType, Window
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.viewer import HANDLE, Refusal, Scope, StudyIndex

FRAME_PATH: Final = "/view/{handle}/series/{series}/frames/{image}"
_WINDOW: Final = re.compile(r"^-?\d{1,5}(\.\d{1,3})?,\d{1,5}(\.\d{1,3})?$")
"""The rendered ``window`` a viewer may ask for: centre and width (40 characters at most)."""
_RENDERED: Final[dict[str, RenderedType]] = {"png": "image/png", "jpeg": "image/jpeg"}
_PLAIN: Final = {"Cache-Control": "no-store"}
_POSITION: Final = re.compile(r"^[1-9][0-9]{0,5}$")


def _plain(status_code: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text, status_code=status_code, headers={**_PLAIN, **(headers or {})})


class _Chunks(io.RawIOBase):
    """A write-only sink that hands over what ``zipfile`` wrote so far (not seekable, so
    zipfile writes data descriptors and never goes back)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _window(value: str | None) -> Window | None:
    if value is None:
        return None
    center, width = value.split(",")
    return Window(float(center), float(width))


async def _discard(early: asyncio.Task[PacsAnswer | Response] | None) -> None:
    """Drop an image asked for before the grant check refused: never sent, connection
    closed."""
    if early is None:
        return
    early.cancel()
    try:
        opened = await early
    except asyncio.CancelledError:
        return
    if not isinstance(opened, Response):
        opened.close()


class _SelfNamingRoute(Route):
    """A Starlette route that names itself in the request's scope, as FastAPI's own routes
    do (FastAPI's router does not for a plain route): the request's metrics, span and log
    line name its template from there (``http_telemetry``, ``security``)."""

    def matches(self, scope: AsgiScope) -> tuple[Match, AsgiScope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


class _StreamedImage(StreamingResponse):
    """The PACS's image sent on as it arrives, chunk by chunk, closed at the end either way.
    Unlike ``StreamingResponse`` it starts no task to watch for the browser leaving: an
    image is small and finite, so a browser gone mid-image costs at most its rest."""

    def __init__(self, upstream: PacsAnswer, accept: RenderedType) -> None:
        headers = {"Cache-Control": "no-store"}
        # The length holds only for a body as sent: a compressed one is decompressed on
        # its way through (the image's request asks for none).
        if "content-length" in upstream.headers and "content-encoding" not in upstream.headers:
            headers["content-length"] = upstream.headers["content-length"]
        media_type = upstream.headers.get("content-type", accept)
        super().__init__(upstream.chunks(), media_type=media_type, headers=headers)
        self._upstream = upstream

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        try:
            chunks = aiter(self.body_iterator)
            # The first chunk in hand before the head goes: head and image leave back to
            # back, so the browser mostly reads them in one wake-up, not two.
            first = await anext(chunks, b"")
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._upstream.close()


class ViewerRoutes:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.viewer = gateway.viewer

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/view")
        router.add_api_route("/{handle}", self.page, methods=["GET"])
        router.add_api_route("/{handle}/download", self.download, methods=["GET"])
        return router

    def frame_route(self) -> Route:
        """The image route (module docstring): to be put before the FastAPI routes."""
        return _SelfNamingRoute(
            FRAME_PATH, self._frame_request, methods=["GET"], name="viewer_frame"
        )

    async def _frame_request(self, request: Request) -> Response:
        """The query checked as FastAPI checked it (a bad one is the bad-request page), then
        the image."""
        window = request.query_params.get("window")
        image_format = request.query_params.get("format", "png")
        if (window is not None and (len(window) > 40 or not _WINDOW.match(window))) or (
            image_format not in _RENDERED
        ):
            return self.gateway.pages.render(views.bad_request_page(browser_locale(request)))
        params = request.path_params
        return await self.frame(
            request, params["handle"], params["series"], params["image"], window, image_format
        )

    async def _scope(self, request: Request, handle: str) -> Scope | Refusal:
        """What the handle reaches for this browser's session; a handle that is not its
        own (another's, made up) is a probe, and audited as one. Only the cookie the
        handle's kind needs is read (each is a signature to check) until a probe needs the
        patient's."""
        gateway = self.gateway
        recipients = handle.startswith("r")
        access_session = gateway.session_id(request, "access") if recipients else None
        patient_session = None if recipients else gateway.session_id(request, "patient")
        scope = await self.viewer.scope(
            handle, access_session=access_session, patient_session=patient_session
        )
        if scope is Refusal.NOT_FOUND:
            if recipients:
                patient_session = gateway.session_id(request, "patient")
            await self._audit_probe(request, handle, patient_session)
        return scope

    async def _audit_probe(
        self, request: Request, handle: str, patient_session: str | None
    ) -> None:
        """A signed-in patient's probe is a portal denial (``share.blume.denied``, the
        entry named if the handle names one); anyone else's a denial of a link that
        matches nothing (``share.link.denied``, unknown). Both are counted per client and
        minute past the first, as the pages' own probes are."""
        gateway, client = self.gateway, self.gateway.client(request)
        patient = await gateway.portal.signed_in(patient_session)
        if patient is not None:
            entry_id = f"ent_{handle[1:33]}" if HANDLE.match(handle) and handle[0] == "p" else None
            await gateway.portal.record_denial(entry_id, patient, client, gateway.request_id())
        else:
            await gateway.access.record_unknown(client, gateway.request_id())

    async def _over_limit(self, handle: str) -> Response | None:
        verdict = await self.gateway.limits.viewer_request(handle)
        if verdict.allowed:
            return None
        return _plain(429, "too many requests", {"Retry-After": str(verdict.retry_after_seconds)})

    # The page ----------------------------------------------------------------------------

    async def page(self, request: Request, handle: str) -> Response:
        gateway = self.gateway
        if (refusal := await self._over_limit(handle)) is not None:
            return refusal
        scope = await self._scope(request, handle)
        if isinstance(scope, Refusal):
            return gateway.pages.render(views.viewer_refusal_page(scope, browser_locale(request)))
        index = await self.index_or_audit(scope, gateway.client(request))
        if index is None:
            return gateway.render_signed_in(request, views.study_not_on_pacs_page(scope.locale))
        policy = gateway.policies[scope.tenant_id]
        viewer = self.context(scope, index)
        return gateway.render_signed_in(
            request, views.study_viewer_page(scope, viewer, policy.display_name)
        )

    def context(self, scope: Scope, index: StudyIndex) -> dict[str, object]:
        """The viewer partial's context: the summary the policy allows a recipient (the
        patient's own page shows its summary itself), the download if allowed."""
        policy = self.gateway.policies[scope.tenant_id]
        summary: list[str] = list(policy.recipient_summary) if scope.audience == "recipient" else []
        download = policy.recipient_access == "view_and_download"
        return views.viewer_context(scope, index, summary, download=download)

    async def index_or_audit(self, scope: Scope, client: ClientContext) -> StudyIndex | None:
        """The study's series, or None (audited) when the PACS does not have it."""
        try:
            index = await self.viewer.index(scope)
        except PacsError:
            await self.viewer.audit.unavailable(scope, "pacs_unreachable", client)
            return None
        if index is None:
            await self.viewer.audit.unavailable(scope, "not_on_pacs", client)
        return index

    # The images --------------------------------------------------------------------------

    async def frame(
        self,
        request: Request,
        handle: str,
        series: str,
        image: str,
        window: str | None = None,
        image_format: str = "png",
    ) -> Response:
        """One rendered image, streamed from the PACS; 410 from the moment the share ends.
        Series and image are positions: anything else (a UID, say) is simply not found.

        The PACS is asked while the grant is checked, for a handle this process has
        already checked (so its study is known): the two waits overlap, and nothing of
        the PACS's answer is sent, or kept, unless the check grants this very study."""
        if (refusal := await self._over_limit(handle)) is not None:
            return refusal
        if not (_POSITION.match(series) and _POSITION.match(image)):
            scope = await self._scope(request, handle)
            return _plain(scope.value if isinstance(scope, Refusal) else 404, "not_found")
        wanted = (int(series), int(image), _RENDERED[image_format], _window(window))
        known = self.viewer.known_scope(handle)
        early = asyncio.create_task(self._open(known, *wanted)) if known else None
        try:
            scope = await self._scope(request, handle)
        except BaseException:
            await _discard(early)
            raise
        if isinstance(scope, Refusal) or known is None or not self.viewer.same_study(known, scope):
            await _discard(early)
            if isinstance(scope, Refusal):
                return _plain(scope.value, scope.text)
            early = None
        opened = await early if early is not None else await self._open(scope, *wanted)
        if isinstance(opened, Response):
            return opened
        await self._audit_series(request, scope, wanted[0])
        return _StreamedImage(opened, wanted[2])

    async def _open(
        self, scope: Scope, series: int, image: int, accept: RenderedType, window: Window | None
    ) -> PacsAnswer | Response:
        """The PACS's open answer for the image, or the response saying why there is none."""
        try:
            frame = await self.viewer.frame(scope, series, image)
            if frame is None:
                return _plain(404, "not_found")
            upstream = await self.viewer.dicomweb.open_rendered(frame, accept, window)
        except PacsError:
            return _plain(502, "the PACS did not answer")
        if upstream.status != 200:
            upstream.close()
            return _plain(404 if upstream.status == 404 else 502, "not rendered")
        return upstream

    async def _audit_series(self, request: Request, scope: Scope, series: int) -> None:
        """BALP Read the first time this session opens this series (any of its images)."""
        if self.viewer.audit.series_seen(scope, series):
            return
        index = await self.viewer.index(scope)
        count = len(index.instances.get(series, [])) if index else 0
        await self.viewer.audit.series_opened(scope, series, count, self.gateway.client(request))

    # The download ------------------------------------------------------------------------

    async def download(self, request: Request, handle: str) -> Response:
        """The study's DICOM files as a ZIP, streamed, if the tenant allows it (BALP Export)."""
        if (refusal := await self._over_limit(handle)) is not None:
            return refusal
        scope = await self._scope(request, handle)
        if isinstance(scope, Refusal):
            return _plain(scope.value, scope.text)
        policy = self.gateway.policies[scope.tenant_id]
        if policy.recipient_access != "view_and_download":
            return _plain(404, "not_found")
        index = await self.index_or_audit(scope, self.gateway.client(request))
        if index is None:
            return _plain(404, "not on the PACS")
        order = [
            await self.viewer.series_instances(scope, index, number)
            for number in range(1, len(index.series) + 1)
        ]
        await self.viewer.audit.exported(
            scope, sum(len(uids) for uids in order), self.gateway.client(request)
        )
        return StreamingResponse(
            self._zip(scope, index, order),
            media_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="study.zip"', **_PLAIN},
        )

    async def _zip(
        self, scope: Scope, index: StudyIndex, order: list[list[str]]
    ) -> AsyncIterator[bytes]:
        target = self.viewer.target(scope)
        if target is None:
            return
        pacs, study_uid = target
        sink = _Chunks()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
            for number, (series, instances) in enumerate(
                zip(index.series, order, strict=True), start=1
            ):
                for position, instance_uid in enumerate(instances, start=1):
                    where = Instance(pacs, study_uid, series.series_uid, instance_uid)
                    data = await self.viewer.dicomweb.instance_file(where)
                    archive.writestr(f"series-{number:03d}/image-{position:04d}.dcm", data)
                    yield sink.take()
        yield sink.take()


def viewer_routes(gateway: Gateway) -> tuple[Route, APIRouter]:
    """The image route (to go before every FastAPI route) and the viewer's other routes."""
    routes = ViewerRoutes(gateway)
    return routes.frame_route(), routes.router()
