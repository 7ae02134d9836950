"""Pages: Jinja templates from the configured theme, falling back to ``themes/default``.

Every user-facing text goes through ``_()`` (Jinja's i18n extension), so that the language catalogs of
the themes issue plug in without touching the templates. Autoescaping is on for every template.
"""

from __future__ import annotations

import gettext
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

THEMES_DIR = Path(__file__).resolve().parent.parent.parent / "themes"


class ThemeError(ValueError):
    """A theme cannot be used; reported at start, not at the first sign-in."""


def theme_dirs(theme: str) -> list[Path]:
    chosen = THEMES_DIR / theme
    default = THEMES_DIR / "default"
    if not chosen.is_dir():
        raise ThemeError(f"theme {theme!r} does not exist in {THEMES_DIR}")
    return [chosen, default] if chosen != default else [default]


class Pages:
    def __init__(self, theme: str, issuer: str) -> None:
        dirs = theme_dirs(theme)
        self.static_dirs = [d / "static" for d in dirs if (d / "static").is_dir()]
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(d / "templates") for d in dirs]),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        self.env.install_gettext_translations(gettext.NullTranslations(), newstyle=True)  # type: ignore[attr-defined]
        self.env.globals["issuer"] = issuer
        for name in ("base.html", "error.html", "index.html", "login.html", "consent.html", "logout.html",
                     "logged_out.html", "factor.html", "enroll.html", "enroll_totp.html", "enroll_sms.html",
                     "recovery_codes.html", "enroll_webauthn.html",
                     "account.html", "account_totp.html", "account_webauthn.html", "account_phone.html",
                     "account_phone_confirm.html", "account_factor.html", "account_recovery.html"):
            self.env.get_template(name)  # fail at start on a broken or missing template

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def error(self, status: int, title: str, message: str, **context: Any) -> HTMLResponse:
        return self.render("error.html", status=status, title=title, message=message, **context)
