"""Keep the message catalogues in step with the templates and code: extract every message,
add new ones to each .po (English: the message itself), and list what still lacks a
translation. `python -m ordertally.web.catalogue` rewrites the .po files; the tests call
`missing()` to fail when a message has no translation."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from ordertally.web import i18n

WEB = Path(__file__).parent
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def extracted() -> list[str]:
    """Every message id the templates and the web code use, in first-seen order."""
    seen: dict[str, None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        WEB, METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        text = message if isinstance(message, str) else message[0]
        if text:
            seen.setdefault(text, None)
    return list(seen)


def read(locale: str) -> Catalog:
    """A locale's committed catalogue."""
    with i18n.po_path(locale).open("rb") as po:
        return read_po(po, locale=locale)


def missing(locale: str) -> list[str]:
    """Messages used but absent or untranslated in a locale's catalogue."""
    catalog = read(locale)
    return [m for m in extracted() if not (m in catalog and catalog[m].string)]


def render(locale: str, ids: list[str] | None = None) -> bytes:
    """A locale's catalogue as `update` writes it: the used messages in order, translations
    kept (English: the id itself when empty), unused ones dropped."""
    ids = extracted() if ids is None else ids
    old = read(locale) if i18n.po_path(locale).exists() else Catalog(locale=locale)
    # The header keeps its dates, so a run with no new message changes no byte.
    new = Catalog(
        locale=locale,
        project="ordertally",
        fuzzy=False,
        creation_date=old.creation_date,
        revision_date=old.revision_date,
    )
    for message in ids:
        string = old[message].string if message in old else ""
        if locale == "en" and not string:
            string = message
        new.add(message, string)
    buffer = io.BytesIO()
    write_po(buffer, new, omit_header=False, sort_output=False, width=100)
    return buffer.getvalue()


def update() -> None:
    """Rewrite each catalogue from the messages in use."""
    ids = extracted()
    for locale in i18n.LOCALES:
        content = render(locale, ids)
        i18n.po_path(locale).parent.mkdir(parents=True, exist_ok=True)
        i18n.po_path(locale).write_bytes(content)


if __name__ == "__main__":
    update()
    gaps = {locale: missing(locale) for locale in i18n.LOCALES}
    for locale, ids in gaps.items():
        for message in ids:
            print(f"{locale}: untranslated: {message}")
    sys.exit(1 if any(gaps.values()) else 0)
