"""``/help/<topic>`` (what F1 opens), the demo viewer and the health probe."""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from blume_contracts.locales import LOCALES
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from blume_access_gateway import views
from blume_access_gateway.gateway import Gateway
from blume_access_gateway.help import INDEX_TOPIC, LANGUAGE_PARAMETER
from blume_access_gateway.i18n import browser_locale
from blume_access_gateway.pages import Page
from blume_access_gateway.tickets import InvalidTicketError, verify_ticket

_SEEN_TICKETS_KEPT: Final = 10_000


def help_routes(gateway: Gateway) -> APIRouter:
    router = APIRouter()

    @router.get("/help")
    async def help_root() -> Response:
        return RedirectResponse(f"/help/{INDEX_TOPIC}", status_code=308)

    @router.get("/help/{topic}")
    async def article(request: Request, topic: str) -> Response:
        locale = help_locale(request)
        found = gateway.help.get(topic, locale)
        if found is None:
            return gateway.pages.render(views.not_found_page(locale))
        page = Page(
            "help.html",
            "help.title",
            INDEX_TOPIC,
            locale=locale,
            context={
                "article": found,
                "articles": gateway.help.listing(locale),
                "page_title": found.title,
            },
        )
        return gateway.pages.render(page)

    @router.get("/healthz")
    async def health() -> Response:
        return JSONResponse({"status": "ok"})

    return router


def help_locale(request: Request) -> str:
    """The page's language that F1 and the Help link pass (``?lang=fr`` or ``fr-CA``: its
    primary subtag, as ``Accept-Language`` is read); without one of ours, the browser's."""
    asked = request.query_params.get(LANGUAGE_PARAMETER, "").strip().lower()
    language = asked.split("-", 1)[0]
    for locale in LOCALES:
        if language and locale.lower().split("-", 1)[0] == language:
            return locale
    return browser_locale(request)


def demo_viewer_routes(gateway: Gateway) -> APIRouter:
    """A stand-in for the tenant's viewer (the bundled policy's ``viewer_url`` points here):
    it checks the ticket exactly as a real viewer should, and shows no study."""
    router = APIRouter()
    seen: OrderedDict[str, None] = OrderedDict()

    @router.get("/viewer")
    async def viewer(request: Request, ticket: str = "") -> Response:
        locale = browser_locale(request)
        try:
            checked = verify_ticket(
                ticket,
                gateway.keys.viewer_ticket,
                issuer=gateway.public_origin,
                now=gateway.clock(),
            )
        except InvalidTicketError:
            return gateway.pages.render(views.viewer_page(locale, valid=False, use_number=None))
        if checked.ticket_id in seen:  # each ticket opens the viewer once
            return gateway.pages.render(views.viewer_page(locale, valid=False, use_number=None))
        seen[checked.ticket_id] = None
        while len(seen) > _SEEN_TICKETS_KEPT:
            seen.popitem(last=False)
        return gateway.pages.render(
            views.viewer_page(locale, valid=True, use_number=checked.use_number)
        )

    return router
