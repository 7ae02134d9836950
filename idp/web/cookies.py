"""Cookie names and attributes. With an https issuer, cookies carry the ``__Host-`` prefix and ``Secure``."""

from __future__ import annotations

from starlette.responses import Response

from idp.config import Settings

SESSION = "idp_session"
BROWSER = "idp_browser"


def cookie_name(settings: Settings, base: str) -> str:
    return f"__Host-{base}" if settings.is_https else base


def set_cookie(response: Response, settings: Settings, base: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        cookie_name(settings, base), value, max_age=max_age, path="/", secure=settings.is_https, httponly=True,
        samesite="lax",
    )


def delete_cookie(response: Response, settings: Settings, base: str) -> None:
    response.delete_cookie(cookie_name(settings, base), path="/", secure=settings.is_https, httponly=True,
                           samesite="lax")
