"""Rendering pages: Jinja2 with autoescape, the page's language, its help topic, its CSP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from blume_contracts.display import DEFAULT_TIME_ZONE, format_moment
from blume_contracts.locales import narrow_locale
from blume_runtime.tenants import TenantPolicy
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, Response

from blume_access_gateway.help import HelpLibrary
from blume_access_gateway.i18n import translator
from blume_access_gateway.security import content_security_policy

TEMPLATES: Final = Path(__file__).parent / "templates"


@dataclass(frozen=True, slots=True)
class Action:
    """A button on a page: a form that POSTs (with its CSRF token) or a plain link."""

    label: str
    url: str
    csrf: str | None = None


@dataclass(slots=True)
class Page:
    template: str
    title_key: str
    help_topic: str
    locale: str = "en-CA"
    status_code: int = 200
    context: dict[str, Any] = field(default_factory=dict)
    form_targets: tuple[str, ...] = ()
    """Origins besides this one that a form on the page may lead to (an identity provider)."""
    headers: dict[str, str] = field(default_factory=dict)
    tenant_id: str | None = None
    """Whose page it is: its times are shown in that tenant's ``time_zone``."""
    sign_out: Action | None = None
    """On a signed-in page: the sign-out button in the page's bar (``Gateway.render_signed_in``)."""


def with_cookies(page: Response, carrier: Response) -> Response:
    """Copy the Set-Cookie headers gathered on ``carrier`` onto the rendered page."""
    page.raw_headers.extend(
        (name, value) for name, value in carrier.raw_headers if name == b"set-cookie"
    )
    return page


class Pages:
    def __init__(self, help_library: HelpLibrary, policies: Mapping[str, TenantPolicy]) -> None:
        self._help = help_library
        self._policies = policies
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def _time_zone(self, page: Page) -> str:
        policy = self._policies.get(page.tenant_id) if page.tenant_id else None
        return policy.time_zone if policy is not None else DEFAULT_TIME_ZONE

    def topic_exists(self, topic: str) -> bool:
        return self._help.has(topic)

    def render(self, page: Page) -> HTMLResponse:
        locale = narrow_locale(page.locale)
        translate = translator(locale)
        # A page naming a topic without an article would send F1 to a 404: fail loudly.
        assert self._help.has(page.help_topic), f"no help article for {page.help_topic!r}"
        context = {
            "lang": locale[:2],
            "t": translate,
            "title": page.context.get("page_title") or translate(page.title_key),
            "help_topic": page.help_topic,
            "when": lambda moment: format_moment(moment, locale, self._time_zone(page)),
            "sign_out": page.sign_out,
            **page.context,
        }
        body = self._env.get_template(page.template).render(context)
        headers = {
            "Content-Security-Policy": content_security_policy(page.form_targets),
            "Content-Language": locale,
            **page.headers,
        }
        return HTMLResponse(body, status_code=page.status_code, headers=headers)
