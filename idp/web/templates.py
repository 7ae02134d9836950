"""Pages: Jinja templates from a theme, falling back to its parents' and finally ``themes/default``.

Every user-facing text goes through ``_()`` (Jinja's i18n extension) or, for texts the Python code hands over,
the ``translate`` filter; both read the language of the request (idp.web.i18n). Autoescaping is on for every
template. Every theme a page may use (the configured one, and those of clients) is loaded and its templates
compiled at start, so that a broken theme stops the start.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)
from starlette.responses import HTMLResponse

from idp.web import i18n
from idp.web.themes import THEMES_DIR, Asset, Theme, ThemeError, load_theme

__all__ = ["THEMES_DIR", "Pages", "ThemeError", "TEMPLATES", "use_client_theme"]

log = logging.getLogger("idp.web")

TEMPLATES = ("base.html", "error.html", "index.html", "login.html", "consent.html", "logout.html",
             "logged_out.html", "factor.html", "enroll.html", "enroll_totp.html", "enroll_sms.html",
             "recovery_codes.html", "enroll_webauthn.html", "accessibility.html",
             "account.html", "account_totp.html", "account_webauthn.html", "account_phone.html",
             "account_phone_confirm.html", "account_factor.html", "account_recovery.html",
             # The console's pages, whatever their number.
             *sorted(f"admin/{path.name}" for path in (THEMES_DIR / "default" / "templates" / "admin").glob("*.html")))


_client_theme: ContextVar[str | None] = ContextVar("idp_client_theme", default=None)


def use_client_theme(name: str | None) -> None:
    """The pages of this request belong to a sign-in for a client with a theme of its own."""
    _client_theme.set(name)


def language_links() -> list[dict[str, Any]]:
    """The language switcher: one link per language, back to the page it was chosen on."""
    here = i18n.current_path()
    return [{"code": code, "name": i18n.LANGUAGE_NAMES[code], "current": code == i18n.current_locale(),
             "href": f"/language/{code}?{urlencode({'next': here})}"} for code in i18n.LOCALES]


def _environment(theme: Theme, issuer: str) -> Environment:
    env = Environment(
        # "base.html" is the theme's own or its nearest parent's; "default/base.html" names one theme's, so
        # that a theme's template can extend the one it overrides.
        loader=ChoiceLoader([*(FileSystemLoader(d) for d in theme.template_dirs),
                             PrefixLoader({d.parent.name: FileSystemLoader(d) for d in theme.template_dirs})]),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    # The language is the request's (a context variable set by i18n.LocaleMiddleware), read at each call.
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters["translate"] = i18n.render
    env.globals.update(issuer=issuer, theme=theme, static_url=theme.static_url, current_lang=i18n.current_locale,
                       language_links=language_links)
    for name in TEMPLATES:
        try:
            env.get_template(name)  # fail at start on a broken or missing template
        except TemplateError as exc:
            raise ThemeError(f"theme {theme.name!r}: template {name} cannot be used: {exc}") from exc
    return env


class Pages:
    def __init__(self, theme: str, issuer: str, extra_themes: tuple[str, ...] = ()) -> None:
        i18n.load_all()
        self.theme = load_theme(theme)
        self.issuer = issuer
        self._assets: dict[str, Asset] | None = None
        self.themes: dict[str, Theme] = {self.theme.name: self.theme}
        self.envs: dict[str, Environment] = {self.theme.name: _environment(self.theme, issuer)}
        for name in extra_themes:
            self.add_theme(name)

    @property
    def env(self) -> Environment:
        return self.envs[self.theme.name]

    def add_theme(self, name: str) -> Theme:
        """Load another theme (a client's); raises ThemeError as at start."""
        if name not in self.themes:
            theme = load_theme(name)
            self.envs[name] = _environment(theme, self.issuer)
            self.themes[name] = theme
            self._assets = None
        return self.themes[name]

    def assets(self) -> dict[str, Asset]:
        """Every static file of every loaded theme, by fingerprinted path (``digest/name``)."""
        if self._assets is None:
            self._assets = {f"{item.digest}/{item.name}": item
                            for theme in self.themes.values() for item in theme.assets.values()}
        return self._assets

    def _env_for(self, theme: str | None) -> Environment:
        if not theme:
            return self.env
        if theme not in self.envs:
            # A client's theme set after the start (``idp clients update --theme``): loaded at its first page. The
            # command checked it; should it break since, the page still works in the configured theme.
            try:
                self.add_theme(theme)
            except ThemeError as exc:
                log.error("client theme cannot be used, showing the configured theme: %s", exc)
                return self.env
        return self.envs[theme]

    def render(self, name: str, status: int = 200, *, theme: str | None = None, **context: Any) -> HTMLResponse:
        """A page in the theme given, else the theme of the sign-in's client (``use_client_theme``), else the
        configured one."""
        env = self._env_for(theme or _client_theme.get())
        html = env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def error(self, status: int, title: i18n.Text, message: i18n.Text, **context: Any) -> HTMLResponse:
        """An error page; ``title`` and ``message`` are marked with ``N_()`` and translated in the page."""
        return self.render("error.html", status=status, title=title, message=message, **context)
