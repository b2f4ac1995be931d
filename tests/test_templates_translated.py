"""Every word a client contact reads is marked for translation, and the French catalogue is complete.

A client-facing template is parsed: translated blocks and template syntax are removed, then the
HTML tags (the words in `title`, `alt`, `aria-label`, `placeholder` and button values are checked
first); any letter left over is text that would stay in English. Staff-only templates (the admin,
staff emails) are listed in STAFF_ONLY: they are English by design.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

TEMPLATES = Path(settings.BASE_DIR) / "templates"
LOCALE = Path(settings.BASE_DIR) / "locale"
TRANSLATED = [code for code, _name in settings.LANGUAGES if code != settings.LANGUAGE_CODE]

# Templates only agency staff see (the admin and its pages, staff alerts), relative to templates/.
STAFF_ONLY = {
    "admin/",  # the staff admin: every template under it
    "agents/",  # an agent's consent and refusal pages: staff approve agents
    "clients/admin_invite.html",
    "connections/admin_disconnect_confirm.html",
    "emails/alert_body.html",
    "emails/alert_body.txt",
    "emails/alert_subject.txt",
    "operations/_client_section.html",
    "operations/_grant_section.html",
    "operations/_records_table.html",
    "operations/_refusal.html",
    "operations/_scope_audit.html",
    "operations/confirm.html",
    "operations/dns_list.html",
    "operations/purge_form.html",
    "operations/record_form.html",
    "operations/refused.html",
}

BLOCK_TRANSLATE = re.compile(r"{%\s*blocktrans(?:late)?\b.*?{%\s*endblocktrans(?:late)?\s*%}", re.S)
COMMENT = re.compile(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}|{#.*?#}", re.S)
TEMPLATE_SYNTAX = re.compile(r"{%.*?%}|{{.*?}}", re.S)
WORDY_ATTRIBUTE = re.compile(r"""\b(?:title|alt|aria-label|placeholder|value)\s*=\s*("[^"]*"|'[^']*')""", re.I)
HTML_TAG = re.compile(r"<!--.*?-->|<[^>]+>", re.S)
ENTITY = re.compile(r"&[a-zA-Z]+;|&#\d+;")
LETTER = re.compile(r"[^\W\d_]")


def _staff_only(name: str) -> bool:
    return any(name == entry or (entry.endswith("/") and name.startswith(entry)) for entry in STAFF_ONLY)


def client_facing_templates() -> list[str]:
    names = sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*") if p.is_file())
    return [n for n in names if not _staff_only(n)]


def untranslated_text(source: str) -> list[str]:
    """The pieces of text in a template that are not marked for translation."""
    text = COMMENT.sub(" ", source)
    text = BLOCK_TRANSLATE.sub(" ", text)
    text = TEMPLATE_SYNTAX.sub(" ", text)
    found = [m.group(0) for m in WORDY_ATTRIBUTE.finditer(text) if LETTER.search(m.group(1))]
    text = HTML_TAG.sub(" ", text)
    text = ENTITY.sub(" ", text)
    found += [piece.strip() for piece in re.split(r"\s{2,}|\n", text) if LETTER.search(piece)]
    return found


def test_the_checker_finds_plain_text_and_accepts_translated_text():
    assert untranslated_text("<p>Hello {{ name }}</p>") == ["Hello"]
    assert untranslated_text('<input placeholder="Search">') == ['placeholder="Search"']
    marked = (
        '{% load i18n %}<p title="{% translate "Hi" %}">{% translate "Hello" %} {{ name }}</p>'
        "{% blocktranslate trimmed %}Dear {{ name }},{% endblocktranslate %} · <a href=\"{% url 'x' %}\">→</a>"
    )
    assert untranslated_text(marked) == []


def test_every_template_is_either_client_facing_or_listed_as_staff_only():
    stale = [entry for entry in STAFF_ONLY if not (TEMPLATES / entry).exists()]
    assert not stale, f"STAFF_ONLY lists templates that do not exist: {stale}"
    assert "clients/home.html" in client_facing_templates()
    assert "connections/consent.html" in client_facing_templates()
    assert "emails/member_invite_body.txt" in client_facing_templates()


@pytest.mark.parametrize("name", client_facing_templates())
def test_client_facing_template_has_no_text_outside_translation(name):
    found = untranslated_text((TEMPLATES / name).read_text())
    assert not found, f"templates/{name} has text not marked for translation: {found}"


def _entries(po: str) -> list[dict]:
    """The entries of a .po file: flags, msgid and the msgstr values (enough for these checks)."""
    entries, current, key = [], None, None
    for line in po.splitlines() + [""]:
        if not line.strip():
            if current is not None:
                entries.append(current)
            current, key = None, None
            continue
        current = current or {"flags": "", "msgid": "", "msgstr": {}}
        if line.startswith("#,"):
            current["flags"] += line
        elif line.startswith("#"):
            continue
        elif line.startswith(("msgid ", "msgid_plural ")):
            key = "msgid" if line.startswith("msgid ") else "msgid_plural"
            current[key] = line.split(" ", 1)[1].strip('"')
        elif line.startswith("msgstr"):
            key = line.split(" ", 1)[0]
            current["msgstr"][key] = line.split(" ", 1)[1].strip('"')
        elif line.startswith('"') and key:
            if key.startswith("msgstr"):
                current["msgstr"][key] += line.strip('"')
            else:
                current[key] += line.strip('"')
    return entries


def test_french_is_a_portal_language():
    assert "fr" in TRANSLATED


@pytest.mark.parametrize("language", TRANSLATED)
def test_each_languages_catalogue_is_complete_with_nothing_fuzzy(language):
    catalogue = LOCALE / language / "LC_MESSAGES" / "django.po"
    assert catalogue.is_file(), f"no catalogue for {language}: run make messages"
    entries = [e for e in _entries(catalogue.read_text()) if e["msgid"]]  # the header has an empty msgid
    assert len(entries) > 250
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e["flags"]]
    empty = [e["msgid"] for e in entries if not all(e["msgstr"].values())]
    assert not fuzzy, f"fuzzy translations: {fuzzy}"
    assert not empty, f"untranslated messages: {empty}"
