"""The console's languages: Babel gettext catalogues, one Jinja2 environment per language.

Every string an officer reads is a msgid: `{{ _("...") }}` in the templates, `N_("...")` in Python for
strings translated when a page is rendered, and `JS_MESSAGES` for what console.js shows (rendered into
each page as a JSON blob in the reader's language). Plates, event ids and what users typed are never
translated. The uk and ro catalogues must translate every msgid: tests/console/test_app.py fails on an
empty one, on a .pot that misses a string of the sources, and on a .mo older than its .po.

After changing a string, from the repository root:

    .venv/bin/pybabel extract -F babel.cfg --no-wrap --sort-by-file --project anpr -o anpr/console/locale/messages.pot .
    .venv/bin/pybabel update -i anpr/console/locale/messages.pot -d anpr/console/locale -D messages --no-wrap
    # translate the new (empty) and fuzzy entries of uk and ro, then:
    .venv/bin/pybabel compile -d anpr/console/locale -D messages --statistics
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from babel.support import NullTranslations, Translations

HERE = Path(__file__).resolve().parent
LOCALE_DIR = HERE / "locale"
TEMPLATES_DIR = HERE / "templates"
DOMAIN = "messages"
LANGUAGES: tuple[str, ...] = ("uk", "ro", "en")
# Each language named in itself: a reader who cannot read the current language still finds their own.
LANGUAGE_NAMES = {"uk": "Українська", "ro": "Română", "en": "English"}


def N_(message: str) -> str:
    """Mark a string for extraction; it is translated later, in the reader's language."""
    return message


# What console.js shows, by key. Keys are the code's names; values are msgids.
JS_MESSAGES: dict[str, str] = {
    "new_hit": N_("New watchlist hit"),
    "lane": N_("Lane"),
    "ack": N_("Acknowledge"),
    "acked_by": N_("Acknowledged by"),
    "note": N_("Note"),
    "disposition": N_("Disposition"),
    "checked": N_("Checked"),
    "stopped": N_("Stopped"),
    "false_match": N_("False match"),
    "sev_stop": N_("Stop the vehicle"),
    "sev_check": N_("Check the vehicle"),
    "sev_info": N_("For information"),
    "exact": N_("Exact match"),
    "confusable": N_("Look-alike characters"),
    "one_edit": N_("One character off"),
    "entry": N_("Entry"),
    "exit": N_("Exit"),
    "unknown": N_("Unknown direction"),
    "listed_as": N_("Listed as"),
    "reason": N_("Reason"),
    "open_event": N_("Open event"),
    "seen": N_("Seen"),
    "trailer_of": N_("Trailer of"),
    "dismiss": N_("Dismiss"),
    "ack_failed": N_("The acknowledgement failed"),
    "live_lost": N_("Live updates interrupted, reconnecting…"),
    "live_ok": N_("Live"),
}


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of a language (English: the msgids themselves)."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}")
    return Translations.load(str(LOCALE_DIR), [language], DOMAIN)


@cache
def environment(language: str) -> jinja2.Environment:
    """Templates rendered in one language; one environment per language keeps requests independent."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def gettext(language: str, message: str, **params: Any) -> str:
    """`message` in `language`, with %(name)s placeholders filled (as newstyle gettext in templates does)."""
    text = translations(language).gettext(message)
    return text % params if params else text


def js_messages(language: str) -> dict[str, str]:
    """JS_MESSAGES in `language`, for the page's JSON blob."""
    return {key: gettext(language, msgid) for key, msgid in JS_MESSAGES.items()}


def pick_language(user_language: str | None, cookie: str | None, default: str) -> str:
    """The user's own choice, else this browser's (a cookie, before login), else the site's default."""
    for choice in (user_language, cookie):
        if choice in LANGUAGES:
            return str(choice)
    return default if default in LANGUAGES else LANGUAGES[0]
