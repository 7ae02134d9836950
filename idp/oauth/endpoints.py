"""HTTP endpoints of the protocol that machines call: token, userinfo, introspection, revocation,
discovery and JWKS. Each parses the request, calls authlib in a worker thread, and returns its answer.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idp import metrics
from idp.oauth import registration
from idp.oauth.requests import Request as OAuthRequest
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext, MalformedRequest, context_of, query_pairs, read_form

JSON_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def oauth_error(status: int, error: str, description: str) -> Response:
    body = json.dumps({"error": error, "error_description": description})
    return Response(body, status_code=status, media_type="application/json", headers=JSON_NO_STORE)


def _duplicated(pairs: list[tuple[str, str]]) -> str | None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


async def _form_endpoint(request: Request, path: str, call: str) -> Response:
    ctx: AppContext = context_of(request)
    if request.query_params:
        # Credentials and tokens in the URL end up in logs (RFC 6749 3.2, RFC 6750 2.3).
        return oauth_error(400, "invalid_request", "parameters must be sent in the request body")
    try:
        form = await read_form(request)
    except MalformedRequest as exc:
        return oauth_error(400, "invalid_request", str(exc))
    duplicated = _duplicated(form)
    if duplicated:
        return oauth_error(400, "invalid_request", f"parameter {duplicated!r} is repeated")
    if any(len(value) > 16384 for _, value in form):
        return oauth_error(400, "invalid_request", "a parameter is too long")
    if call == "token" and not dict(form).get("grant_type"):
        # A missing required parameter is invalid_request (RFC 6749 5.2); authlib would say unsupported_grant_type.
        return oauth_error(400, "invalid_request", "grant_type is missing")

    def work(scope: RequestScope) -> Response:
        oreq = OAuthRequest("POST", f"{ctx.services.settings.issuer}{path}", request.headers, query=[], form=form)
        if call == "token":
            response: Response = ctx.server.create_token_response(oreq)
        else:
            response = ctx.server.create_endpoint_response(call, oreq)
        return response

    return await ctx.transaction(ctx.origin(request), work)


async def token(request: Request) -> Response:
    response = await _form_endpoint(request, "/token", "token")
    metrics.count_token_response(response)
    return response


async def introspect(request: Request) -> Response:
    return await _form_endpoint(request, "/introspect", "introspection")


async def revoke(request: Request) -> Response:
    return await _form_endpoint(request, "/revoke", "revocation")


def _bearer_invalid_request(description: str) -> Response:
    # RFC 6750 3: a refused protected resource request carries the Bearer challenge, with the error in it.
    response = oauth_error(400, "invalid_request", description)
    response.headers["www-authenticate"] = f'Bearer error="invalid_request", error_description="{description}"'
    return response


async def userinfo(request: Request) -> Response:
    """GET and POST /userinfo with a Bearer token in the Authorization header (OIDC Core 5.3.1)."""
    ctx = context_of(request)
    try:
        query = query_pairs(request)
        form = await read_form(request, required=False) if request.method == "POST" else []
    except MalformedRequest as exc:
        return _bearer_invalid_request(str(exc))
    if any(key == "access_token" for key, _ in [*query, *form]):
        return _bearer_invalid_request("send the access token in the Authorization header")

    def work(scope: RequestScope) -> Response:
        oreq = OAuthRequest(request.method, f"{ctx.services.settings.issuer}/userinfo", request.headers,
                            query=query, form=form)
        scope.extras["request"] = oreq
        response: Response = ctx.server.create_endpoint_response("userinfo", oreq)
        return response

    return await ctx.transaction(ctx.origin(request), work)


async def discovery(request: Request) -> Response:
    ctx = context_of(request)
    return Response(ctx.discovery, media_type="application/json", headers={"cache-control": "public, max-age=300"})


async def jwks(request: Request) -> Response:
    ctx = context_of(request)
    body = await _jwks_bytes(ctx)
    return Response(body, media_type="application/jwk-set+json", headers={"cache-control": "public, max-age=300"})


async def _jwks_bytes(ctx: AppContext) -> bytes:
    # Served from memory on the event loop; only the refresh from the database every few seconds runs in a worker
    # thread (the hop to a thread cost more than the answer itself: bench/README.md).
    cached = ctx.services.keys.fresh_jwks_bytes()
    return cached if cached is not None else await run_in_threadpool(ctx.services.keys.jwks_bytes)


routes = [
    Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
    Route("/.well-known/oauth-authorization-server", discovery, methods=["GET"]),
    Route("/jwks", jwks, methods=["GET"]),
    Route("/token", token, methods=["POST"]),
    Route("/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/introspect", introspect, methods=["POST"]),
    Route("/revoke", revoke, methods=["POST"]),
    *registration.routes,
]
