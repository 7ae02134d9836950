"""Themes (issue 6, "Themes" and "Privacy"): theme.toml with a parent, block overrides, colours through a
generated style sheet, footer links and the accessibility statement, fingerprinted static files, and theme
errors reported at start."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from idp.app import create_app
from idp.services import Services, build_services
from idp.web import themes
from idp.web.templates import Pages, ThemeError
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.pages import walk
from tests.test_cli import Cli, cli, environment  # noqa: F401  (fixtures)

MUSTERSTADT_TOML = (themes.THEMES_DIR / "musterstadt" / "theme.toml").read_text(encoding="utf-8")


@pytest.fixture
def themes_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A themes folder of the test's own, holding a copy of ``default``."""
    folder = tmp_path / "themes"
    shutil.copytree(themes.THEMES_DIR / "default", folder / "default")
    monkeypatch.setattr(themes, "THEMES_DIR", folder)
    return folder


def _theme(folder: Path, name: str, toml: str, files: dict[str, str] | None = None) -> Path:
    directory = folder / name
    (directory / "static").mkdir(parents=True)
    (directory / "theme.toml").write_text(toml, encoding="utf-8")
    for path, text in (files or {}).items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(text, encoding="utf-8")
    return directory


def _musterstadt_client(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock) -> tuple[TestClient, Services]:
    themed = build_services(make_settings(tmp_path, backend[0], IDP_THEME="musterstadt"), engine=backend[1])
    themed.clock = clock
    return TestClient(create_app(services=themed), base_url=ISSUER, follow_redirects=False), themed


def test_musterstadt_needs_only_what_differs() -> None:
    """The example theme sets a name, two colours, a logo, links and contact data; everything else (other colours,
    every template but one block) comes from ``default``."""
    theme = themes.load_theme("musterstadt")
    assert theme.display_name == "Stadt Musterstadt" and theme.colors["primary"] == "#7a1a1f"
    assert theme.colors["text"] == themes.load_theme("default").colors["text"]
    assert theme.logo == "wappen.svg" and "style.css" in theme.assets and "webauthn.js" in theme.assets
    overridden = [p.name for p in (themes.THEMES_DIR / "musterstadt" / "templates").iterdir()]
    assert overridden == ["base.html"]


def test_musterstadt_pages_show_its_name_logo_links_and_block(services: Services, backend: tuple[str, Engine],
                                                              tmp_path: Path, clock: FakeClock) -> None:
    """With ``theme = "musterstadt"`` the pages carry its name, its logo, its imprint and privacy links and its
    overridden footer block, and link the accessibility statement."""
    browser, _ = _musterstadt_client(backend, tmp_path, clock)
    with browser:
        page = browser.get("/")
    assert page.status_code == 200
    assert "Stadt Musterstadt" in page.text and re.search(r'src="/static/[0-9a-f]{16}/wappen\.svg"', page.text)
    assert '<a href="https://www.musterstadt.example/impressum" id="imprint-link">' in page.text
    assert '<a href="https://www.musterstadt.example/datenschutz" id="privacy-link">' in page.text
    assert '<a href="/accessibility" id="accessibility-link">' in page.text
    assert '<p class="detail" id="theme-address">Rathausplatz 1, 12345 Musterstadt</p>' in page.text


def test_every_page_links_imprint_privacy_and_accessibility(mfa_services: Services, clock: FakeClock) -> None:
    """Every page (sign-in, second factor, enrollment, consent, account, errors, sign-out) has the footer with the
    three links German law and BITV 2.0 ask for, and the language switcher leading back to that page."""
    pages = walk(create_app(services=mfa_services), mfa_services, clock)
    for name, visit in pages.items():
        for link in ("imprint-link", "privacy-link", "accessibility-link"):
            assert f'id="{link}"' in visit.html, (name, link)
        assert '<nav class="languages" aria-label="Language" id="language-switcher">' in visit.html, name
        assert re.search(r'<a href="/language/de\?next=%2F[^"]*" lang="de"', visit.html), name


@pytest.fixture
def mfa_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    mfa = build_services(make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required"), engine=backend[1])
    mfa.clock = clock
    return mfa


def test_accessibility_statement_comes_from_the_contact_data(german_default: None, backend: tuple[str, Engine],
                                                             services: Services, tmp_path: Path,
                                                             clock: FakeClock) -> None:
    """/accessibility is the Erklärung zur Barrierefreiheit with the theme's organisation, email, phone and
    address."""
    browser, _ = _musterstadt_client(backend, tmp_path, clock)
    with browser:
        page = browser.get("/accessibility")
    assert page.status_code == 200 and "<h1>Erklärung zur Barrierefreiheit</h1>" in page.text
    assert "Stadtverwaltung Musterstadt" in page.text
    assert 'href="mailto:barrierefreiheit@musterstadt.example"' in page.text
    assert 'href="tel:+49123456789-0"' in page.text and "Rathausplatz 1, 12345 Musterstadt" in page.text


def test_colours_reach_the_pages_through_a_generated_style_sheet(backend: tuple[str, Engine], services: Services,
                                                                 tmp_path: Path, clock: FakeClock) -> None:
    """The theme's colours are served as ``theme.css`` (custom properties); no page has an inline style, which
    the Content-Security-Policy forbids."""
    browser, _ = _musterstadt_client(backend, tmp_path, clock)
    with browser:
        page = browser.get("/")
        link = re.search(r'<link rel="stylesheet" href="(/static/[0-9a-f]{16}/theme\.css)">', page.text)
        assert link, "no theme.css"
        css = browser.get(link.group(1))
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "--primary: #7a1a1f;" in css.text and "--focus: #e0a100;" in css.text
    assert "style=" not in page.text and "<style" not in page.text
    assert "style-src 'self'" in page.headers["content-security-policy"]


def test_static_files_have_fingerprinted_names_and_immutable_caching(client: TestClient) -> None:
    """Pages reference static files as /static/<digest>/<name>; those answer with a year of immutable caching
    and an ETag, the plain /static/<name> with an hour, and an unknown file with 404."""
    page = client.get("/")
    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
    assert urls and all(re.fullmatch(r"/static/[0-9a-f]{16}/[\w./-]+", url) for url in urls), urls
    style = next(url for url in urls if url.endswith("/style.css"))
    answer = client.get(style)
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get(style, headers={"if-none-match": answer.headers["etag"]}).status_code == 304
    assert client.get("/static/style.css").headers["cache-control"] == "public, max-age=3600"
    assert client.get("/static/0123456789abcdef/style.css").headers["cache-control"] == "public, max-age=3600"
    assert client.get("/static/nothing.css").status_code == 404
    assert client.get("/static/../theme.toml").status_code == 404


def test_a_theme_overrides_a_block_and_inherits_the_rest(themes_dir: Path) -> None:
    """A theme's template extends its parent's by name (``default/base.html``) and replaces one block."""
    _theme(themes_dir, "stadt", MUSTERSTADT_TOML.replace('"wappen.svg"', '"logo.svg"'), {
        "templates/base.html": '{% extends "default/base.html" %}{% block brand %}<span id="own-brand">Stadt</span>'
                               '{% endblock %}'})
    pages = Pages("stadt", ISSUER)
    html = pages.render("index.html").body.decode()
    assert '<span id="own-brand">Stadt</span>' in html and 'id="imprint-link"' in html


@pytest.mark.parametrize(("toml", "files", "expected"), [
    (None, {}, "theme.toml is missing"),
    ('display_name = "X"\nparent = "nirgendwo"\n', {}, "unknown parent theme 'nirgendwo'"),
    ('display_name = "X"\n[colors]\nprimary = "blue"\n', {}, "colour primary = 'blue' is not a colour"),
    ('display_name = "X"\n[colors]\nprimary = "#ffff00"\n', {}, "colours primary on surface have a contrast of"),
    ('display_name = "X"\nlogo = "missing.svg"\n', {}, "logo 'missing.svg' is not a file"),
    ('display_name = "X"\ncolour = "#000000"\n', {}, "unknown settings in"),
    ('display_name = "X"\nimprint_url = "javascript:alert(1)"\n', {}, "imprint_url must be an http(s) address"),
    ('display_name = "X"\n', {"templates/login.html": "{% block content %}{{ broken"}, "template login.html"),
    ('display_name = "X"\n', {"static/theme.css": "body {}"}, "theme.css is generated"),
    ("display_name = [\n", {}, "cannot be read"),
])
def test_theme_errors_are_reported_at_start_naming_the_problem(themes_dir: Path, toml: str | None,
                                                               files: dict[str, str], expected: str) -> None:
    """A missing file, a bad colour (or too little contrast), an unknown parent or a broken template stops
    ``Pages`` (and so ``create_app``) with a ThemeError naming it."""
    directory = _theme(themes_dir, "kaputt", toml or "", files)
    if toml is None:
        (directory / "theme.toml").unlink()
    with pytest.raises(ThemeError, match=re.escape(expected)):
        Pages("kaputt", ISSUER)


def test_unknown_theme_stops_create_app(backend: tuple[str, Engine], services: Services, tmp_path: Path) -> None:
    """``create_app`` refuses a theme that does not exist, before serving anything."""
    bad = build_services(make_settings(tmp_path, backend[0], IDP_THEME="gibtsnicht"), engine=backend[1])
    with pytest.raises(ThemeError, match="theme 'gibtsnicht' does not exist"):
        create_app(services=bad)


def test_config_check_reports_a_theme_error(cli: Cli, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                            themes_dir: Path) -> None:
    """``idp config check`` exits with status 1 and the theme's problem."""
    _theme(themes_dir, "kaputt", 'display_name = "X"\n[colors]\nprimary = "#12"\n')
    monkeypatch.setenv("IDP_THEME", "kaputt")
    result = cli("config", "check")
    assert result.code == 1 and "colour primary = '#12' is not a colour" in result.err
    monkeypatch.setenv("IDP_THEME", "musterstadt")
    shutil.copytree(Path(__file__).resolve().parent.parent / "themes" / "musterstadt", themes_dir / "musterstadt")
    assert cli("config", "check").code == 0


def test_contrast_is_computed_as_wcag_defines_it() -> None:
    """The contrast ratio follows WCAG 2.1 (black on white 21:1; the default colours pass 4.5:1)."""
    assert round(themes.contrast("#000000", "#ffffff"), 1) == 21.0
    assert round(themes.contrast("#767676", "#ffffff"), 2) == 4.54
    default = themes.load_theme("default").colors
    assert all(themes.contrast(default[a], default[b]) >= 4.5 for a, b in themes.CONTRAST_PAIRS)
