"""Extract the texts to translate and merge them into the catalogs (``make catalogs``).

Runs ``pybabel extract`` into idp/locales/messages.pot, then merges it into German and English (texts no
longer used are dropped). New texts arrive with an empty translation; tests/test_i18n.py fails until every
German text is translated. The English catalog is the source language: its translations are the texts themselves, filled in here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ROOT / "idp" / "locales"
PYBABEL = Path(sys.executable).parent / "pybabel"


def main() -> int:
    pot = LOCALES / "messages.pot"
    subprocess.run([str(PYBABEL), "-q", "extract", "-F", "babel.cfg", "-k", "N_", "--no-location", "--omit-header",
                    "--sort-output", "-o", str(pot), "."], cwd=ROOT, check=True)
    with pot.open("rb") as handle:
        template = read_po(handle)
    for locale in ("de", "en"):
        po = LOCALES / locale / "LC_MESSAGES" / "messages.po"
        po.parent.mkdir(parents=True, exist_ok=True)
        if po.exists():
            with po.open("rb") as handle:
                catalog = read_po(handle, locale=locale)
        else:
            catalog = Catalog(locale=locale)
        catalog.update(template, no_fuzzy_matching=True)
        if locale == "en":  # the source language: each text is its own translation
            for message in catalog:
                if message.id and not (all(message.string) if isinstance(message.string, tuple) else message.string):
                    message.string = message.id  # a text with plural forms: its singular and its plural
        with po.open("wb") as handle:
            write_po(handle, catalog, omit_header=True, no_location=True, sort_output=True, ignore_obsolete=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
