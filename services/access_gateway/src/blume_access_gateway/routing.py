"""How the gateway's route classes are wired: each handler names its own path, method and
opening check (``route``), and ``GatewayRoutes.router`` gathers them in the order they are
written, so a class's routes are listed nowhere else.

An opening check (a rate limit) runs as the route's FastAPI dependency, before the handler;
a check that refuses raises ``RouteRefusedError`` with the page to answer, which the app's
exception handler returns as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Annotated, ClassVar, Final, TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from blume_access_gateway.gateway import Gateway
from blume_access_gateway.oidc import ProviderAnswer

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])
OpeningCheck = Callable[..., Awaitable[None]]
"""An unbound method of the route class (or a function taking it first), whose other
parameters FastAPI fills from the request as it does a handler's."""
ProviderReturn = Annotated[ProviderAnswer, Depends()]
"""The parameter of a sign-in callback: the query the identity provider sent back."""
_ROUTE: Final = "gateway_route"


class RouteRefusedError(Exception):
    """An opening check's refusal: ``response`` is the page to answer instead."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"refused with {response.status_code}")
        self.response = response


def route(
    path: str, method: str, *, check: OpeningCheck | None = None
) -> Callable[[Handler], Handler]:
    """Marks a method of a ``GatewayRoutes`` class as the handler of ``method`` on ``path``,
    run only once ``check`` (if any) has let the request through."""

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ROUTE, (path, method, check))
        return handler

    return mark


class GatewayRoutes:
    """A set of the gateway's routes, under ``prefix``: the methods marked with ``route``."""

    prefix: ClassVar[str] = ""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def router(self) -> APIRouter:
        router = APIRouter(prefix=self.prefix)
        for name, member in vars(type(self)).items():
            marked: tuple[str, str, OpeningCheck | None] | None = getattr(member, _ROUTE, None)
            if marked is None:
                continue
            path, method, check = marked
            opening = [Depends(MethodType(check, self))] if check is not None else []
            router.add_api_route(path, getattr(self, name), methods=[method], dependencies=opening)
        return router


async def address_limit(routes: GatewayRoutes, request: Request) -> None:
    """The opening check of most pages: the 429 page while this client address is over its
    rate."""
    if (refusal := await routes.gateway.over_address_limit(request)) is not None:
        raise RouteRefusedError(refusal)


async def refused_route(_request: Request, error: Exception) -> Response:
    """The app's exception handler for ``RouteRefusedError``: the check's page, as it is."""
    assert isinstance(error, RouteRefusedError)
    return error.response
