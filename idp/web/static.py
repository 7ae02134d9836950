"""Static files of the themes, from memory, under fingerprinted names.

``/static/<digest>/<name>`` is the address the pages use (``static_url`` in the templates): the digest is that
of the content, so the file may be cached for a year and never revalidated. ``/static/<name>`` still answers,
with the configured theme's file and a short cache lifetime, for links from outside the pages.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from idp.web.templates import Pages
from idp.web.themes import Asset

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=3600"


class StaticFiles:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages

    def _response(self, item: Asset, cache: str, request: Request) -> Response:
        etag = f'"{item.digest}"'
        headers = {"cache-control": cache, "etag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else item.body
        return Response(body, media_type=item.media_type, headers={**headers, "content-length": str(len(item.body))})

    async def serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        found = self.pages.assets().get(path)
        if found is not None:
            return self._response(found, IMMUTABLE, request)
        digest, _, name = path.partition("/")
        # An old digest (a page rendered before a deploy) gets the current file, cached briefly.
        current = self.pages.theme.assets.get(name if name else digest)
        if current is not None:
            return self._response(current, SHORT, request)
        return PlainTextResponse("not found", status_code=404)
