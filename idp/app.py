"""The composition root: ``create_app`` wires settings, services, the OAuth server and every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from directory_sync.scheduler import DirectoryScheduler
from enrollment import routes as enrollment_routes
from idp.config import Settings
from idp.login import routes as login_routes
from idp.login import second_factor, webauthn_pages
from idp.oauth import endpoints as oauth_endpoints
from idp.oauth.discovery import discovery_document
from idp.oauth.logout import BackchannelSender
from idp.oauth.server import build_server
from idp.services import Services, build_services
from idp.web.context import AppContext, context_of
from idp.web.middleware import SecurityMiddleware
from idp.web.templates import Pages


class ThemeStatic(StaticFiles):
    """Static files of the theme, falling back to the default theme's, cacheable for an hour."""

    def __init__(self, directories: list[str]) -> None:
        super().__init__(directory=directories[-1])
        self.all_directories = directories  # type: ignore[assignment]

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=3600"
        return response


async def index(request: Request) -> Response:
    return context_of(request).pages.render("index.html")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    pages = context_of(request).pages
    if exc.status_code == 404:
        return pages.error(404, "Page not found", "The address you opened does not exist.")
    if exc.status_code == 405:
        response = pages.error(405, "Method not allowed", "This address does not accept that kind of request.")
        if exc.headers and "Allow" in exc.headers:
            response.headers["allow"] = exc.headers["Allow"]
        return response
    return pages.error(exc.status_code, "The request could not be served", str(exc.detail))


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    if services is None:
        assert settings is not None, "create_app needs settings or services"
        services = build_services(settings)
    settings = services.settings
    server, protector = build_server(services)
    pages = Pages(settings.theme, settings.issuer)
    ctx = AppContext(services=services, server=server, protector=protector, pages=pages,
                     discovery=discovery_document(settings), sender=BackchannelSender(services))

    # Directory sources run on their interval in every server process; a lease lets one of them sync at a time.
    directory_scheduler = DirectoryScheduler(services, after_run=ctx.sender.wake)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.sender.start()
        directory_scheduler.start()
        try:
            yield
        finally:
            await directory_scheduler.stop()
            await ctx.sender.stop()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            *oauth_endpoints.routes,
            *login_routes.routes,
            *second_factor.routes,
            *webauthn_pages.routes,
            *enrollment_routes.routes,
            Mount("/static", app=ThemeStatic([str(d) for d in pages.static_dirs]), name="static"),
        ],
        middleware=[Middleware(SecurityMiddleware, https=settings.is_https,
                               max_body_size=settings.server.max_body_size)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app
