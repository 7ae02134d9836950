"""The composition root: ``create_app`` wires settings, services, the OAuth server and every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from directory_sync.scheduler import DirectoryScheduler
from enrollment import routes as enrollment_routes
from idp import allocator, metrics
from idp.admin import routes as admin_routes
from idp.config import Settings
from idp.login import routes as login_routes
from idp.login import second_factor, webauthn_pages
from idp.maintenance import Purger
from idp.models import Client
from idp.oauth import endpoints as oauth_endpoints
from idp.oauth.discovery import discovery_document
from idp.oauth.logout import BackchannelSender
from idp.oauth.server import build_server
from idp.services import Services, build_services
from idp.web import health, i18n, outage
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_
from idp.web.middleware import SecurityMiddleware
from idp.web.request_id import RequestIdMiddleware
from idp.web.static import StaticFiles
from idp.web.templates import Pages


async def index(request: Request) -> Response:
    return context_of(request).pages.render("index.html")


async def accessibility(request: Request) -> Response:
    """The accessibility statement (Erklärung zur Barrierefreiheit, BITV 2.0 section 7), from the theme's
    contact data; every page links to it."""
    return context_of(request).pages.render("accessibility.html")


LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


def _local_path(target: str | None) -> str:
    """Only a path on this server is a place to go back to: never another origin (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    return target


async def choose_language(request: Request) -> Response:
    """GET /language/{code}?next=PATH: the language switcher. Remembers the choice in the ``idp_lang`` cookie
    (no secret in it, hence no ``__Host-`` prefix needed) and goes back to the page it was chosen on."""
    code = request.path_params["code"]
    target = _local_path(request.query_params.get("next"))
    response = RedirectResponse(target, status_code=303)
    if code in i18n.LOCALES:
        response.set_cookie(i18n.COOKIE, code, max_age=LANGUAGE_COOKIE_SECONDS, path="/",
                            secure=context_of(request).services.settings.is_https, httponly=True, samesite="lax")
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    pages = context_of(request).pages
    if exc.status_code == 404:
        return pages.error(404, N_("Page not found"), N_("The address you opened does not exist."))
    if exc.status_code == 405:
        response = pages.error(405, N_("Method not allowed"), N_("This address does not accept that kind of request."))
        if exc.headers and "Allow" in exc.headers:
            response.headers["allow"] = exc.headers["Allow"]
        return response
    return pages.error(exc.status_code, "The request could not be served", str(exc.detail))


def _client_themes(services: Services) -> tuple[str, ...]:
    """The themes clients chose, loaded (and so checked) at start like the configured one. A database not yet
    migrated has none to offer: the server's other checks report that."""
    try:
        with services.engine.connect() as connection:
            names = connection.execute(select(Client.theme).where(Client.theme.is_not(None)).distinct()).scalars()
            return tuple(sorted(name for name in names if name))
    except SQLAlchemyError:
        return ()


def _operations_middleware(settings: Settings) -> list[Middleware]:
    """Request id, forwarded headers and latency metrics, outermost, in this order: the request id middleware
    must see the connecting peer (is it a trusted proxy?) before X-Forwarded-For replaces it, which is why the
    app, not uvicorn, applies the forwarded headers (only from ``[server] trusted_proxies``)."""
    proxies = settings.server.trusted_proxies
    layers = [Middleware(RequestIdMiddleware, trusted_proxies=proxies)]
    if proxies:
        layers.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=list(proxies)))
    if settings.metrics.enabled:
        layers.append(Middleware(metrics.RequestMetricsMiddleware))
    return layers


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    if services is None:
        assert settings is not None, "create_app needs settings or services"
        services = build_services(settings)
    settings = services.settings
    server, protector = build_server(services)
    pages = Pages(settings.theme, settings.issuer, extra_themes=_client_themes(services))
    ctx = AppContext(services=services, server=server, protector=protector, pages=pages,
                     discovery=discovery_document(settings), sender=BackchannelSender(services))

    # Directory sources run on their interval in every server process; a lease lets one of them sync at a time.
    directory_scheduler = DirectoryScheduler(services, after_run=ctx.sender.wake)
    # Expired rows are purged in every process too; the deletes are idempotent, so no lease is needed.
    purger = Purger(services)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.sender.start()
        directory_scheduler.start()
        purger.start()
        try:
            yield
        finally:
            await purger.stop()
            await directory_scheduler.stop()
            await ctx.sender.stop()
            metrics.worker_exited()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            *health.routes,
            Route("/language/{code}", choose_language, methods=["GET"]),
            *oauth_endpoints.routes,
            *login_routes.routes,
            *second_factor.routes,
            *webauthn_pages.routes,
            *enrollment_routes.routes,
            *admin_routes.routes,
            Route("/static/{path:path}", StaticFiles(pages).serve, methods=["GET", "HEAD"], name="static"),
            Route("/accessibility", accessibility, methods=["GET"]),
            Route("/metrics", metrics.endpoint, methods=["GET"]),
        ],
        middleware=[*_operations_middleware(settings),
                    Middleware(SecurityMiddleware, https=settings.is_https,
                               max_body_size=settings.server.max_body_size),
                    Middleware(i18n.LocaleMiddleware)],
        exception_handlers={HTTPException: http_error, **outage.exception_handlers},
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    return app


def app_from_environment() -> Starlette:
    """The app of one ``idp serve --workers N`` worker process, built from the same settings as the parent.

    uvicorn starts each worker as a fresh process that imports this factory (``idp.app:app_from_environment``);
    the parent has already migrated the embedded database, created the signing keys and the first administrator
    (``idp.cli.prepare``), so a worker only reads the settings, sets up logging and builds its own services:
    its own engine and connection pool, never one shared across a fork.
    """
    from idp.cli import configure_logging
    from idp.config import load_settings

    allocator.return_large_blocks()
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
