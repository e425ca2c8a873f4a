"""The wording lives in locale/: every catalog is complete and current, every document says it in
every language, and the templates hold no words of their own."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import Environment, nodes

from dunning.channels.email import Renderer
from dunning.channels.letter import letter_context, notice_html, stage_label
from dunning.channels.message import Line, Message
from dunning.channels.templating import translations
from dunning.errors import DeliveryError
from dunning.policy import LANGUAGES, load_policy

REPO = Path(__file__).resolve().parents[1]
LOCALE = REPO / "locale"
POLICY = load_policy(REPO / "config" / "policy.yaml")
EMAIL_STAGES = [s.template_name for s in POLICY.stages if s.channel == "email"]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _messages(path: Path, language: str | None = None) -> dict[tuple[str | None, str], object]:
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    return {(m.context, m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog if m.id}


def test_the_template_catalog_is_current() -> None:
    """`make messages` was run after the templates last changed."""
    with (REPO / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    extracted = {(context, message if isinstance(message, str) else message[0])
                 for _, _, message, _, context in
                 extract_from_dir(REPO, method_map, options_map)}
    assert extracted == set(_messages(LOCALE / "dunning.pot")), "run `make messages`"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_catalog_translates_every_message(language: str) -> None:
    template = _messages(LOCALE / "dunning.pot")
    catalog = _messages(LOCALE / language / "LC_MESSAGES" / "dunning.po", language)
    assert set(catalog) == set(template), "run `make messages`"
    for key, message in catalog.items():
        assert "fuzzy" not in message.flags, f"{language}: fuzzy: {key}"  # type: ignore[attr-defined]
        strings = message.string  # type: ignore[attr-defined]
        forms = strings if isinstance(strings, tuple) else (strings,)
        assert all(forms), f"{language}: not translated: {key}"
        ids = message.id if isinstance(message.id, tuple) else (message.id,)  # type: ignore[attr-defined]
        allowed = set().union(*(PLACEHOLDER.findall(i) for i in ids))
        for n, form in enumerate(forms):
            # Each form says what its English form says (a date, an amount, an invoice number);
            # the singular may leave out the count.
            wanted = set(PLACEHOLDER.findall(ids[min(n, len(ids) - 1)])) - ({"count"} if n == 0
                                                                          else set())
            assert wanted <= set(PLACEHOLDER.findall(form)) <= allowed, \
                f"{language}: placeholders of {key}: {form!r}"


def letter(language: str, count: int, reminders: int = 2) -> Message:
    lines = tuple(
        Line(f"F2026-000{n}", date(2026, 9, 1), date(2026, 10, 1), "EUR", Decimal("100.00"),
             Decimal("100.00"), 32)
        for n in range(1, count + 1))
    stages = (("friendly_reminder", date(2026, 10, 5)), ("second_reminder", date(2026, 10, 12)),
              ("phone_call", date(2026, 10, 19)))
    return Message(customer_ref="C042", customer_name="Müller & Söhne", language=language,
                  country=None, recipients=("ap@x.example",), stage="formal_notice",
                  template="formal_notice", as_of=date(2026, 11, 2), lines=lines,
                  customer_address="Rue X 1\n1000 Bruxelles",
                  reminders=tuple((when, stage) for stage, when in stages[:reminders]))


def _documents(language: str) -> list[str]:
    """Every email (subject, text, HTML) and the formal notice, for one and several invoices."""
    policy = POLICY.model_copy(update={"law": POLICY.law.model_copy(
        update={"rate": Decimal("12.15")})})
    renderer = Renderer(policy)
    out = []
    for count in (1, 2):
        for stage in EMAIL_STAGES:
            rendered = renderer.render(replace(letter(language, count), stage=stage,
                                               template=stage), {"deadline": "x"})
            out += [rendered.subject, rendered.text, rendered.html]
        for reminders in (0, 1, 3):
            notice = letter(language, count, reminders)
            out.append(notice_html(notice, letter_context(notice, policy)))
    return out


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_no_english_is_left_in_another_language(language: str) -> None:
    """Each message goes through the catalog: no English sentence shows through."""
    phrases = set()
    for message in _messages(LOCALE / "en" / "LC_MESSAGES" / "dunning.po", "en").values():
        strings = message.string  # type: ignore[attr-defined]
        for text in strings if isinstance(strings, tuple) else (strings,):
            phrases |= {part.strip() for part in re.split(r"%\(\w+\)s|<[^>]+>|\n", text)
                        if len(part.strip()) > 12}
    assert len(phrases) > 50
    translated = " ".join(_documents(language))
    for phrase in sorted(phrases):
        assert phrase not in translated, f"{language}: English left: {phrase!r}"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_document_speaks_its_language(language: str) -> None:
    greeting = translations(str(REPO / "templates"), language).gettext("Dear Sir or Madam,")
    for document in _documents(language):
        assert "C042-2026-11-02" in document, "the payment reference"
    notices = [d for d in _documents(language) if 'class="registered"' in d]
    assert notices and all(f'<html lang="{language}">' in d and greeting in d for d in notices)


def test_stage_labels_come_from_the_catalogs() -> None:
    assert stage_label("second_reminder", "fr") == "deuxième relance"
    assert stage_label("phone_call", "de") == "Telefonat"
    assert stage_label("custom_stage", "nl") == "custom stage"


def _words_outside_messages(source: str) -> list[str]:
    """Words in a template's literal text, once markup, entities and placeholders are gone."""
    tree = Environment(extensions=["jinja2.ext.i18n"]).parse(source)
    # Joined, so that a tag with an expression inside (<html lang="{{ language }}">) is one tag.
    text = " ".join(data.data for data in tree.find_all(nodes.TemplateData))
    return re.findall(r"[^\W\d_]{2,}", re.sub(r"<[^>]*>|&\w+;", " ", text))


@pytest.mark.parametrize("path", sorted(
    p.relative_to(REPO / "templates").as_posix()
    for p in (REPO / "templates").rglob("*.j2")
    if "injunction" not in p.parts and p.name != "letter.css.j2"))
def test_templates_hold_no_words_outside_messages(path: str) -> None:
    """Wording belongs in the catalogs: literal text in a template is markup (and the IBAN and BIC
    labels, the same in every language)."""
    source = (REPO / "templates" / path).read_text(encoding="utf-8")
    assert set(_words_outside_messages(source)) <= {"IBAN", "BIC"}, path


def test_a_templates_folder_of_ones_own_can_change_a_few_words(tmp_path: Path) -> None:
    """A copy of the templates with its own locale/: messages it translates win, the others come
    from the shipped catalog."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    own = tmp_path / "templates" / "locale" / "fr" / "LC_MESSAGES"
    own.mkdir(parents=True)
    (own / "dunning.po").write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Kind regards,"\nmsgstr "Bien à vous,"\n', encoding="utf-8")
    rendered = Renderer(POLICY, tmp_path / "templates").render(
        replace(letter("fr", 1), stage="friendly_reminder", template="friendly_reminder"))
    assert "Bien à vous," in rendered.text and "Cordialement" not in rendered.text
    assert "Madame, Monsieur," in rendered.text


def test_a_language_of_ones_own_templates_is_found_first(tmp_path: Path) -> None:
    """Templates written for one language (`email/<lang>/`, the layout before the catalogs) are
    still used, for that language only."""
    folder = tmp_path / "email" / "fr"
    folder.mkdir(parents=True)
    for part, text in (("subject", "Relance"), ("txt", "Texte\n"), ("html", "<p>Texte</p>\n")):
        (folder / f"friendly_reminder.{part}.j2").write_text(text, encoding="utf-8")
    renderer = Renderer(POLICY, tmp_path)
    fr = replace(letter("fr", 1), stage="friendly_reminder", template="friendly_reminder")
    assert renderer.render(fr).subject == "Relance"
    with pytest.raises(DeliveryError, match="email/friendly_reminder.subject.j2"):
        renderer.render(replace(fr, language="en"))
