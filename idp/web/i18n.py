"""Languages: German (the default) and English, through gettext catalogs under ``idp/locales``.

The language of a request is decided once, by ``LocaleMiddleware``, and kept in a context variable that the
templates' ``_()`` and ``translate`` read: the ``ui_locales`` of the sign-in the page belongs to (see
``use_ui_locales``, called when a sign-in transaction is loaded), then the user's choice from the language
switcher (cookie ``idp_lang``), then ``Accept-Language``, then German.

Texts that Python code hands to a page (error titles, messages) are marked with ``N_()`` for extraction and
translated when the page is rendered (``render``, the ``translate`` filter), never hard-wired in a language.
``N_()`` with keyword arguments keeps them as placeholders (``N_("We sent a code to {phone}.", phone=...)``), so
that a translation can move them. ``N_``, ``Message`` and ``Text`` live in ``idp.texts``, which domain code
without web (``idp.oauth``) imports too; ``str()`` of a message is its English text, a page shows ``render()``.

The catalogs are read from their ``.po`` files and compiled in memory at start (Babel): a fresh clone needs
no build step, and a stale ``.mo`` cannot exist.
"""

from __future__ import annotations

import gettext as gettext_module
from contextvars import ContextVar
from datetime import datetime
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from starlette.types import ASGIApp, Receive, Scope, Send

from idp.texts import N_ as N_  # re-exported: marked texts are made in idp.texts (no web there), translated here
from idp.texts import Message as Message
from idp.texts import Text as Text

LOCALES = ("de", "en")
DEFAULT_LOCALE = "de"
COOKIE = "idp_lang"
LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
LANGUAGE_NAMES = {"de": "Deutsch", "en": "English"}
"""Each language named in itself, as the switcher shows it."""

_current: ContextVar[str] = ContextVar("idp_locale", default=DEFAULT_LOCALE)
_path: ContextVar[str] = ContextVar("idp_path", default="/")


def _load(locale: str) -> gettext_module.NullTranslations:
    path = LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalog = read_po(po, locale=locale)
    buffer = BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext_module.GNUTranslations(buffer)


_translations: dict[str, gettext_module.NullTranslations] = {}


def translations(locale: str) -> gettext_module.NullTranslations:
    if locale not in _translations:
        _translations[locale] = _load(locale)
    return _translations[locale]


def load_all() -> None:
    """Read every catalog now, so that a broken one stops the start instead of the first page."""
    for locale in LOCALES:
        translations(locale)


def current_path() -> str:
    """The path and query of the request being served, for links back to it."""
    return _path.get()


def current_locale() -> str:
    return _current.get()


def set_locale(locale: str) -> None:
    _current.set(locale if locale in LOCALES else DEFAULT_LOCALE)


def gettext(msgid: str) -> str:
    return translations(_current.get()).gettext(msgid)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def render(text: Message | str | None) -> str:
    """A text for a page in the current language: a marked message, or a plain string looked up as it is
    (an unmarked one, such as an exception's detail, comes back unchanged). Never markup: it is escaped."""
    if not text:
        return ""  # gettext("") would be the catalog's header
    if isinstance(text, Message):
        return gettext(text.msgid).format(**text.params)
    return gettext(str(text))


def _first_supported(tags: str) -> str | None:
    for tag in tags.replace(",", " ").split():
        primary = tag.split("-")[0].split("_")[0].lower()
        if primary in LOCALES:
            return primary
    return None


def from_accept_language(header: str) -> str | None:
    """The best supported language of an Accept-Language header (RFC 9110 section 12.5.4), or None."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:32]):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower()
        weight = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        primary = tag.split("-")[0]
        if primary in LOCALES and weight > 0:
            choices.append((-weight, index, primary))
    return min(choices)[2] if choices else None


def use_ui_locales(ui_locales: str | None) -> None:
    """The sign-in's ``ui_locales`` (OpenID Connect Core 1.0 section 3.1.2.1) wins over every other source."""
    chosen = _first_supported(ui_locales or "")
    if chosen is not None:
        set_locale(chosen)


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, val = pair.strip().partition("=")
                if key == COOKIE and val in LOCALES:
                    return val
    return None


def negotiate(headers: list[tuple[bytes, bytes]]) -> str:
    chosen = _cookie(headers)
    if chosen is None:
        accept = b", ".join(v for k, v in headers if k == b"accept-language").decode("latin-1")
        chosen = from_accept_language(accept)
    return chosen or DEFAULT_LOCALE


class LocaleMiddleware:
    """Decides the language of each request before any handler runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = _current.set(negotiate(list(scope.get("headers", []))))
            query = scope.get("query_string", b"").decode("latin-1")
            path_token = _path.set(scope.get("path", "/") + (f"?{query}" if query else ""))
            try:
                await self.app(scope, receive, send)
            finally:
                _path.reset(path_token)
                _current.reset(token)
            return
        await self.app(scope, receive, send)


def format_when(value: datetime | None, timezone: str) -> str:
    """A date and time in the municipality's time zone and the reader's language ("29.11.2026, 07:45")."""
    if value is None:
        return ""
    return format_datetime(value, format="short", tzinfo=ZoneInfo(timezone), locale=current_locale())
