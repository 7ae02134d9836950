"""Themes: ``themes/<name>/theme.toml`` (name, colours, logo, links, contact), templates and static files.

A theme names a parent (``default`` unless it says otherwise) and inherits everything it does not set: its
settings, its templates (a theme overrides named blocks of the parent's) and its static files. Everything is
checked when the server starts (``load_theme``), so that a missing file or a bad colour stops the start with a
message naming it instead of breaking the first sign-in.

The colours reach the pages through a generated style sheet (``theme.css``), never inline styles: the
Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THEMES_DIR = Path(__file__).resolve().parent.parent.parent / "themes"
DEFAULT = "default"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
COLOR_NAMES = ("primary", "primary_text", "text", "muted", "error", "background", "surface", "focus")
"""The colours a theme may set; ``primary_text`` is the text on ``primary`` (buttons, header)."""
MIN_CONTRAST = 4.5
"""WCAG 2.1 success criterion 1.4.3 for normal text (BITV 2.0)."""
CONTRAST_PAIRS = (("text", "background"), ("text", "surface"), ("muted", "surface"), ("error", "surface"),
                  ("primary", "surface"), ("primary_text", "primary"))
FIELDS = {"display_name", "parent", "colors", "logo", "favicon", "imprint_url", "privacy_url", "contact",
          "accessibility", "primary_color"}


class ThemeError(ValueError):
    """A theme cannot be used; reported at start, not at the first sign-in."""


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    media_type: str
    digest: str

    @property
    def url(self) -> str:
        return f"/static/{self.digest}/{self.name}"


def asset(name: str, body: bytes) -> Asset:
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type in ("application/javascript", "image/svg+xml"):
        media_type += "; charset=utf-8"
    return Asset(name, body, media_type, hashlib.sha256(body).hexdigest()[:16])


@dataclass(frozen=True)
class Theme:
    name: str
    display_name: str
    colors: dict[str, str]
    imprint_url: str
    privacy_url: str
    contact_email: str
    contact_phone: str
    contact_address: str
    organisation: str
    statement_date: str
    logo: str | None
    favicon: str | None
    dirs: list[Path]
    assets: dict[str, Asset] = field(default_factory=dict)
    """Static files by name, the theme's own before its parents', plus the generated ``theme.css``."""

    def static_url(self, name: str) -> str:
        """The fingerprinted address of a static file: its name changes when its content does."""
        found = self.assets.get(name)
        if found is None:
            raise ThemeError(f"theme {self.name!r}: no static file {name!r}")
        return found.url

    @property
    def template_dirs(self) -> list[Path]:
        return [d / "templates" for d in self.dirs if (d / "templates").is_dir()]


def _luminance(color: str) -> float:
    channels = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """The contrast ratio of two colours (WCAG 2.1, definition "contrast ratio")."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _read_toml(name: str) -> tuple[Path, dict[str, Any]]:
    if not NAME.fullmatch(name):
        raise ThemeError(f"theme name {name!r} is not valid (lower-case letters, digits, - and _)")
    directory = THEMES_DIR / name
    if not directory.is_dir():
        raise ThemeError(f"theme {name!r} does not exist in {THEMES_DIR}")
    path = directory / "theme.toml"
    if not path.is_file():
        raise ThemeError(f"theme {name!r}: {path} is missing")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ThemeError(f"theme {name!r}: {path} cannot be read: {exc}") from exc
    unknown = set(data) - FIELDS
    if unknown:
        raise ThemeError(f"theme {name!r}: unknown settings in {path}: {', '.join(sorted(unknown))}")
    return directory, data


def _chain(name: str) -> list[tuple[str, Path, dict[str, Any]]]:
    """The theme and its ancestors, the theme first, ending with ``default``."""
    chain: list[tuple[str, Path, dict[str, Any]]] = []
    current: str | None = name
    while current is not None:
        if any(current == seen for seen, _, _ in chain):
            raise ThemeError(f"theme {name!r}: its parents form a cycle at {current!r}")
        try:
            directory, data = _read_toml(current)
        except ThemeError as exc:
            if chain:
                raise ThemeError(f"theme {chain[-1][0]!r}: unknown parent theme {current!r} ({exc})") from exc
            raise
        chain.append((current, directory, data))
        parent = data.get("parent", DEFAULT if current != DEFAULT else None)
        if parent is not None and not isinstance(parent, str):
            raise ThemeError(f"theme {current!r}: parent must be a theme name")
        current = parent
    return chain


def _merged(chain: list[tuple[str, Path, dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, _, data in reversed(chain):
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _text(name: str, data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ThemeError(f"theme {name!r}: {key} must be a string")
    return value


def _url(name: str, data: dict[str, Any], key: str) -> str:
    value = _text(name, data, key)
    if not (value.startswith("https://") or value.startswith("http://") or value.startswith("/")):
        raise ThemeError(f"theme {name!r}: {key} must be an http(s) address or a path on this server, not {value!r}")
    return value


def _colors(name: str, data: dict[str, Any]) -> dict[str, str]:
    colors = dict(data.get("colors", {}))
    if "primary_color" in data:  # the short form of older theme files
        colors.setdefault("primary", data["primary_color"])
    for key, value in colors.items():
        if key not in COLOR_NAMES:
            raise ThemeError(f"theme {name!r}: unknown colour {key!r} (known: {', '.join(COLOR_NAMES)})")
        if not isinstance(value, str) or not COLOR.fullmatch(value):
            raise ThemeError(f"theme {name!r}: colour {key} = {value!r} is not a colour like \"#0b5394\"")
    missing = [key for key in COLOR_NAMES if key not in colors]
    if missing:
        raise ThemeError(f"theme {name!r}: colours missing: {', '.join(missing)}")
    for fore, back in CONTRAST_PAIRS:
        ratio = contrast(colors[fore], colors[back])
        if ratio < MIN_CONTRAST:
            raise ThemeError(f"theme {name!r}: colours {fore} on {back} have a contrast of {ratio:.2f}:1, "
                             f"below the {MIN_CONTRAST}:1 that WCAG 2.1 AA requires")
    return colors


def theme_css(colors: dict[str, str]) -> bytes:
    lines = [f"  --{key.replace('_', '-')}: {value};" for key, value in colors.items()]
    return (":root {\n" + "\n".join(lines) + "\n}\n").encode()


def _assets(name: str, dirs: list[Path], colors: dict[str, str]) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for directory in dirs:  # the theme's own files first: they hide its parents' of the same name
        static = directory / "static"
        if not static.is_dir():
            continue
        for path in sorted(static.rglob("*")):
            if path.is_file():
                relative = path.relative_to(static).as_posix()
                found.setdefault(relative, asset(relative, path.read_bytes()))
    if "theme.css" in found:
        raise ThemeError(f"theme {name!r}: static/theme.css is generated from the colours; rename the file")
    found["theme.css"] = asset("theme.css", theme_css(colors))
    return found


def load_theme(name: str) -> Theme:
    """Read and check a theme and its parents; raises ThemeError naming what is wrong."""
    chain = _chain(name)
    data = _merged(chain)
    dirs = [directory for _, directory, _ in chain]
    colors = _colors(name, data)
    assets = _assets(name, dirs, colors)
    contact = data.get("contact", {})
    statement = data.get("accessibility", {})
    if not isinstance(contact, dict) or not isinstance(statement, dict):
        raise ThemeError(f"theme {name!r}: [contact] and [accessibility] must be tables")
    logo = data.get("logo")
    favicon = data.get("favicon")
    for key, file in (("logo", logo), ("favicon", favicon)):
        if file is not None and (not isinstance(file, str) or file not in assets):
            raise ThemeError(f"theme {name!r}: {key} {file!r} is not a file in the static folder of the theme "
                             f"or its parents")
    email = _text(name, contact, "email")
    if email and "@" not in email:
        raise ThemeError(f"theme {name!r}: contact email {email!r} is not an email address")
    if not email and not _text(name, contact, "phone"):
        raise ThemeError(f"theme {name!r}: [contact] needs an email or a phone number (the accessibility "
                         f"statement must name a contact)")
    return Theme(
        name=name, display_name=_text(name, data, "display_name") or name, colors=colors,
        imprint_url=_url(name, data, "imprint_url"), privacy_url=_url(name, data, "privacy_url"),
        contact_email=email, contact_phone=_text(name, contact, "phone"),
        contact_address=_text(name, contact, "address"),
        organisation=_text(name, contact, "organisation") or _text(name, data, "display_name") or name,
        statement_date=_text(name, statement, "date"), logo=logo, favicon=favicon, dirs=dirs, assets=assets,
    )


def available() -> list[str]:
    return sorted(p.name for p in THEMES_DIR.iterdir() if (p / "theme.toml").is_file())
