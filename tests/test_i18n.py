"""Languages (issue 6, "Languages"): German by default, English complete, chosen by ui_locales, the switcher's
cookie and Accept-Language; every page rendered in both languages shows no untranslated text."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from sqlalchemy import Engine
from starlette.testclient import TestClient

from idp.app import create_app
from idp.services import Services, build_services
from idp.web import i18n
from tests.conftest import FakeClock, make_settings
from tests.helpers import Flow, add_client, follow_to_login
from tests.pages import PAGES, Visit, walk

ROOT = Path(__file__).resolve().parent.parent
PROPER_NAMES = {"Passkey", "Post:", "Deutsch", "English"}
"""Texts that are the same in both languages, so seeing them proves nothing."""
ENGLISH_WORDS = re.compile(r"\b(the|The|your|Your|you|You|please|Please|with|this|This|sign in|Sign in|password|"
                           r"not|and|is|of|to|were|has|have)\b")
"""Frequent English words; none may appear in a German page outside names and user data ("was" is German too)."""


def _msgid(message: Any) -> str:
    """A text's id; for a text with plural forms, its singular."""
    return message.id if isinstance(message.id, str) else message.id[0]


def _catalog(locale: str) -> dict[str, str]:
    """Each text by its id with its translation; a text with plural forms by its singular, with its forms joined
    (empty while any form is missing)."""
    with (i18n.LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    return {_msgid(m): m.string if isinstance(m.string, str) else ("\n".join(m.string) if all(m.string) else "")
            for m in catalog if m.id}


def _fragment(text: str) -> str:
    """The longest literal part of a text with placeholders (what must show if the text is shown)."""
    return max(re.split(r"%\(\w+\)s|\{\w+\}", text), key=len).strip()


def _visible_text(page: str) -> str:
    """What a person reads or hears: text outside tags, plus the attributes read out (aria-label, alt, title,
    placeholder); data that is not text (scripts, codes, the switcher's names of languages) left out."""
    page = re.sub(r"<(script|style|code)\b.*?</\1>", " ", page, flags=re.S)
    attributes = " ".join(re.findall(r'(?:aria-label|alt|title|placeholder)="([^"]*)"', page))
    text = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(re.sub(r"\s+", " ", f"{text} {attributes}"))


@pytest.fixture
def mfa_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    mfa = build_services(make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required"), engine=backend[1])
    mfa.clock = clock
    return mfa


@pytest.fixture
def german_pages(german_default: None, mfa_services: Services, clock: FakeClock) -> dict[str, Visit]:
    return walk(create_app(services=mfa_services), mfa_services, clock)


def test_every_german_msgid_is_translated() -> None:
    """The German catalog translates every text, and the English one lists every text (complete catalogs)."""
    german, english = _catalog("de"), _catalog("en")
    assert set(german) == set(english)
    assert [msgid for msgid, text in german.items() if not text] == []
    assert [msgid for msgid, text in english.items() if not text] == []


def test_catalogs_hold_every_text_of_the_sources(tmp_path: Path) -> None:
    """Every text marked in the templates (``_()``) and in Python (``N_()``) is in the catalogs: a new text
    that `make catalogs` has not merged fails here."""
    pot = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "-q", "extract", "-F", "babel.cfg", "-k", "N_",
                    "--no-location", "--omit-header", "-o", str(pot), "."], cwd=ROOT, check=True)
    with pot.open("rb") as handle:
        marked = {_msgid(m) for m in read_po(handle) if m.id}
    assert marked - set(_catalog("de")) == set()


def test_every_page_in_german_has_no_english_text(german_pages: dict[str, Visit]) -> None:
    """Without any language preference every page is German (``<html lang="de">``), and no English text of the
    catalogs (nor a frequent English word) is visible on it."""
    german = _catalog("de")
    untranslated = [msgid for msgid, text in german.items() if text != msgid and msgid not in PROPER_NAMES]
    assert set(german_pages) == set(PAGES)
    for name, visit in german_pages.items():
        assert '<html lang="de">' in visit.html, name
        text = _visible_text(visit.html)
        shown = [msgid for msgid in untranslated
                 if len(_fragment(msgid)) > 3 and re.search(rf"(?<![\w-]){re.escape(_fragment(msgid))}(?![\w-])", text)]
        assert shown == [], f"{name} shows English: {shown}"
        words = ENGLISH_WORDS.findall(text.replace("Bürgerportal", ""))
        assert words == [], f"{name} ({visit.path}) shows English words {words}: {text}"


def test_every_page_in_english_has_no_german_text(mfa_services: Services, clock: FakeClock) -> None:
    """With ``Accept-Language: en`` every page is English: ``<html lang="en">`` and no German translation of
    the catalogs is visible (the English catalog is complete)."""
    pages = walk(create_app(services=mfa_services), mfa_services, clock, headers={"accept-language": "en-GB,en"})
    german = _catalog("de")
    translated = [text for msgid, text in german.items() if text != msgid and len(text) > 3
                  and msgid not in PROPER_NAMES]
    for name, visit in pages.items():
        assert '<html lang="en">' in visit.html, name
        text = _visible_text(visit.html)
        shown = [t for t in translated if len(_fragment(t)) > 3
                 and re.search(rf"(?<![\w-]){re.escape(_fragment(t))}(?![\w-])", text)]
        assert shown == [], f"{name} shows German: {shown}"


def test_error_message_from_python_is_translated(german_default: None, client: TestClient) -> None:
    """Texts that the Python code hands to a page (an error's title and message) are translated there."""
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert '<h1 id="error-title">Seite nicht gefunden</h1>' in page.text
    assert "Die aufgerufene Adresse existiert nicht." in page.text


def test_accept_language_picks_the_best_supported_language(german_default: None, client: TestClient) -> None:
    """Accept-Language (RFC 9110 12.5.4) chooses by weight among German and English; others fall back to
    German."""
    assert '<html lang="en">' in client.get("/", headers={"accept-language": "fr;q=1, en;q=0.8, de;q=0.5"}).text
    assert '<html lang="de">' in client.get("/", headers={"accept-language": "en;q=0.4, de-AT;q=0.9"}).text
    assert '<html lang="de">' in client.get("/", headers={"accept-language": "fr, it"}).text
    assert '<html lang="de">' in client.get("/", headers={"accept-language": "en;q=0"}).text


def test_switcher_remembers_the_choice_in_a_cookie(german_default: None, client: TestClient) -> None:
    """The switcher's link sets the ``idp_lang`` cookie and returns to the page; the choice beats
    Accept-Language on every later page."""
    page = client.get("/accessibility")
    link = re.search(r'<a href="(/language/en\?next=[^"]+)"', page.text)
    assert link, "no link to English"
    chosen = client.get(html.unescape(link.group(1)))
    assert chosen.status_code == 303 and chosen.headers["location"] == "/accessibility"
    assert "idp_lang=en" in chosen.headers["set-cookie"] and "httponly" in chosen.headers["set-cookie"].lower()
    later = client.get("/", headers={"accept-language": "de"})
    assert '<html lang="en">' in later.text and "Municipal sign-in" in later.text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"])
def test_switcher_goes_back_only_to_this_server(client: TestClient, target: str) -> None:
    """The switcher's ``next`` is never a way to another origin (no open redirect)."""
    chosen = client.get("/language/de", params={"next": target})
    assert chosen.status_code == 303 and chosen.headers["location"] == "/"


def test_unknown_language_sets_no_cookie(client: TestClient) -> None:
    """A language the IdP does not speak is ignored."""
    chosen = client.get("/language/fr", params={"next": "/"})
    assert chosen.status_code == 303 and "set-cookie" not in chosen.headers


def test_ui_locales_of_the_sign_in_wins(german_default: None, services: Services, client: TestClient) -> None:
    """The ``ui_locales`` of the authorization request (OpenID Connect Core 1.0 3.1.2.1) is kept with the
    sign-in and wins over the cookie and Accept-Language on its pages."""
    registered = add_client(services)
    client.cookies.set("idp_lang", "de")
    login_url = follow_to_login(client, Flow(registered, extra={"ui_locales": "fr-CA en"}))
    page = client.get(login_url, headers={"accept-language": "de"})
    assert '<html lang="en">' in page.text and "Username" in page.text
    other = follow_to_login(client, Flow(registered))
    assert '<html lang="de">' in client.get(other).text


def test_json_errors_of_webauthn_are_translated(german_default: None, client: TestClient) -> None:
    """Messages that webauthn.js shows come translated too."""
    answer = client.post("/login/nothing/webauthn/options", json={"csrf_token": "x"})
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"error": "Diese Anmeldung ist abgelaufen. Bitte kehren Sie zur Anwendung zurück und "
                                      "beginnen Sie die Anmeldung neu."}


def test_message_placeholders_are_filled_after_translation() -> None:
    """A marked text with values is translated first, then filled (a translation may move the value)."""
    message = i18n.N_("We sent a code to {phone}.", phone="+49 *** 78")
    i18n.set_locale("de")
    try:
        assert i18n.render(message) == "Wir haben einen Code an +49 *** 78 gesendet."
    finally:
        i18n.set_locale("en")
    assert i18n.render(message) == "We sent a code to +49 *** 78."
    assert i18n.render("") == "" and i18n.render(None) == "", "never the catalog's header"
    assert i18n.render("not a catalog text <b>") == "not a catalog text <b>"


def test_dates_in_the_readers_language_and_the_municipal_time_zone() -> None:
    """Dates are shown in the configured time zone and formatted for the reader's language (issue 6)."""
    from datetime import UTC, datetime

    from idp.web import i18n

    moment = datetime(2026, 11, 29, 6, 45, tzinfo=UTC)  # 07:45 in Berlin (CET)
    i18n.set_locale("de")
    assert i18n.format_when(moment, "Europe/Berlin") == "29.11.26, 07:45"
    i18n.set_locale("en")
    assert i18n.format_when(moment, "Europe/Berlin") in ("11/29/26, 7:45\u202fAM", "11/29/26, 7:45 AM")
    assert i18n.format_when(None, "Europe/Berlin") == ""
