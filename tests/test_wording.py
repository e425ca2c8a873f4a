"""The wording the law and French grammar ask for: the second reminder states the late-payment
penalties and the fixed compensation of the creditor's country (dunning/law.py), and French
writes "1er octobre" and "au nom d'Atelier"."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from dunning import law
from dunning.channels.email import Renderer
from dunning.channels.formatting import day, elide, elide_before, elides, locale_for, money
from dunning.channels.letter import letter_context, notice_html
from dunning.channels.message import Line, Message
from dunning.channels.templating import environment
from dunning.policy import LANGUAGES, Policy, load_policy
from dunning.resources import templates_dir

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")  # a French creditor

# The legal basis each language cites, and the words of its sentence on penalties
BASIS = {
    ("FR", "fr"): "En application de l'article L441-10 du Code de commerce",
    ("FR", "en"): "Under article L441-10 of the French Commercial Code",
    ("FR", "nl"): "Op grond van artikel L441-10 van het Franse Wetboek van Koophandel",
    ("FR", "de"): "Nach Artikel L441-10 des französischen Handelsgesetzbuchs",
    ("BE", "fr"): "En application de la loi belge du 2 août 2002",
    ("BE", "en"): "Under the Belgian Act of 2 August 2002",
    ("BE", "nl"): "Op grond van de Belgische wet van 2 augustus 2002",
    ("BE", "de"): "Nach dem belgischen Gesetz vom 2. August 2002",
    ("IT", "fr"): "En application de la directive 2011/7/UE",
    ("IT", "en"): "Under Directive 2011/7/EU",
    ("IT", "nl"): "Op grond van Richtlijn 2011/7/EU",
    ("IT", "de"): "Nach der Richtlinie 2011/7/EU",
}
PENALTIES = {"fr": "pénalités de retard", "en": "late-payment penalties",
             "nl": "verwijlinterest", "de": "Verzugszinsen"}


def _policy(country: str, compensation: str | None = None) -> Policy:
    return POLICY.model_copy(update={
        "creditor": POLICY.creditor.model_copy(update={"country": country}),
        "law": POLICY.law.model_copy(update={"compensation": Decimal(compensation)
                                             if compensation else None})})


def _message(language: str, template: str = "second_reminder", name: str = "Müller & Söhne",
             as_of: date = date(2026, 11, 2)) -> Message:
    lines = (Line("F2026-0001", date(2026, 9, 1), date(2026, 10, 1), "EUR", Decimal("1500.00"),
                  Decimal("1500.00"), 32),
             Line("F2026-0002", date(2026, 9, 2), date(2026, 10, 2), "EUR", Decimal("200.00"),
                  Decimal("200.00"), 31))
    return Message(customer_ref="C042", customer_name=name, language=language, country="FR",
                   recipients=("ap@x.example",), stage=template, template=template,
                   as_of=as_of, lines=lines)


def _bodies(policy: Policy, message: Message) -> list[str]:
    rendered = Renderer(policy).render(message)
    # the HTML as a reader sees it (`l&#39;article` is "l'article")
    return [re.sub(r"[ \n]+", " ", body) for body in (rendered.text, unescape(rendered.html))]


@pytest.mark.parametrize(("country", "language"), sorted(BASIS))
def test_the_second_reminder_states_the_penalties_and_their_legal_basis(country: str,
                                                                        language: str) -> None:
    rule = law.statutory_rule(country)
    assert rule is not None
    amount = money(rule.compensation(Decimal("1500.00")), rule.currency,
                   locale_for(language, "FR"))
    for body in _bodies(_policy(country), _message(language)):
        assert BASIS[(country, language)] in body
        assert PENALTIES[language] in body
        assert amount in body, "the fixed compensation of law.py"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compensation_of_the_policy_replaces_the_statutory_one(language: str) -> None:
    amount = money(Decimal("55"), "EUR", locale_for(language, "FR"))
    for body in _bodies(_policy("FR", "55"), _message(language)):
        assert amount in body and PENALTIES[language] in body


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_legal_statement_where_no_rule_is_known(language: str) -> None:
    """A creditor in Switzerland: no statute of ours applies; nothing is claimed."""
    with_rule = _bodies(_policy("FR"), _message(language))
    for body in _bodies(_policy("CH"), _message(language)):
        assert PENALTIES[language] not in body
        assert "2011/7" not in body and "L441-10" not in body
    assert all(PENALTIES[language] in body for body in with_rule)


@pytest.mark.parametrize("template", ["pre_due_reminder", "friendly_reminder"])
def test_gentler_reminders_say_nothing_of_penalties(template: str) -> None:
    for body in _bodies(POLICY, _message("en", template)):
        assert "late-payment penalties" not in body


@pytest.mark.parametrize(("value", "style", "expected"), [
    (date(2026, 10, 1), "long", "1er octobre 2026"),
    (date(2026, 10, 1), "medium", "1er oct. 2026"),
    (date(2026, 10, 1), "full", "jeudi 1er octobre 2026"),
    (date(2026, 10, 1), "short", "01/10/2026"),
    (date(2026, 10, 11), "long", "11 octobre 2026"),
    (date(2026, 10, 21), "long", "21 octobre 2026"),
])
def test_the_first_of_a_month_is_an_ordinal_in_french(value: date, style: str,
                                                      expected: str) -> None:
    assert day(value, locale_for("fr", "FR"), style) == expected
    if style != "short":
        assert day(value, locale_for("fr", "BE"), style) == expected
    assert "1er" not in day(value, locale_for("en", "FR"), style)


def test_french_documents_write_1er() -> None:
    bodies = _bodies(POLICY, _message("fr", as_of=date(2026, 10, 1)))
    assert all("1er octobre 2026" in body for body in bodies)
    assert all(" 1 octobre" not in body for body in bodies)
    notice = _message("fr", "formal_notice", as_of=date(2026, 12, 1))
    html = notice_html(notice, letter_context(notice, POLICY.model_copy(update={
        "law": POLICY.law.model_copy(update={"rate": Decimal("12.15")})})))
    assert "1er décembre 2026" in html


@pytest.mark.parametrize(("word", "following", "expected"), [
    ("de", "Atelier Exemple SAS", "d'Atelier Exemple SAS"),
    ("de", "Orange", "d'Orange"),
    ("de", "Évry", "d'Évry"),
    ("de", "Hôtel du Parc", "d'Hôtel du Parc"),
    ("de", "Honda France", "de Honda France"),  # an aspirated h is never guessed mute
    ("de", "Yoplait", "de Yoplait"),
    ("de", "Yvetot", "d'Yvetot"),
    ("de", "Lyon", "de Lyon"),
    ("de", "3M France", "de 3M France"),
    ("que", "Atelier", "qu'Atelier"),
    ("le", "Institut", "l'Institut"),
    ("De", "Angers", "D'Angers"),
    ("à", "Angers", "à Angers"),
])
def test_french_elides_before_a_vowel(word: str, following: str, expected: str) -> None:
    assert elide(word, following) == expected


@pytest.mark.parametrize("name", ["Orange Bureautique SA", "Atelier & Fils"])
def test_french_reminders_elide_de_before_the_customers_name(name: str) -> None:
    for template in ("friendly_reminder", "second_reminder"):
        text, html = _bodies(POLICY, _message("fr", template, name=name))
        first = name.split(" ")[0]
        assert f"au nom d'{first}" in text and f"au nom d'{first}" in html
        assert f"de {first}" not in text


def test_elision_survives_a_text_emails_line_break() -> None:
    """The singular's text breaks the line between "de" and the name: the break moves before
    the elided word."""
    message = _message("fr", name="Atelier Bois")
    rendered = Renderer(POLICY).render(replace(message, lines=message.lines[:1]))
    assert "au nom\nd'Atelier Bois" in rendered.text
    assert "au nom d'Atelier Bois" in rendered.html


def test_a_name_after_de_with_a_consonant_is_left_alone() -> None:
    text, html = _bodies(POLICY, _message("fr", name="Lyon Textile"))
    assert "au nom de Lyon Textile" in text and "au nom de Lyon Textile" in html


def test_the_court_file_names_its_court_with_elision() -> None:
    template = environment(str(templates_dir())).from_string('{{ "de"|elide(town) }}')
    assert template.render(town="Angers") == "d'Angers"
    assert template.render(town="Paris") == "de Paris"


# elide_before finds each name with str.find and reads the words before it; this regular
# expression, the definition it replaced, says what it must do at every position.
def _elide_by_regex(text: str, names: list[str]) -> str:
    found = sorted({n for name in names if name and elides(name)
                    for n in (name, str(escape(name)))})
    if not found:
        return text
    pattern = re.compile(r"( ?)\b(de|que|le|la|De|Que|Le|La)([ \n])(?="
                         + "|".join(map(re.escape, found)) + ")")

    def elided(match: re.Match[str]) -> str:
        before, word, between = match.groups()
        short = {"de": "d'", "que": "qu'", "le": "l'", "la": "l'"}[word.lower()]
        short = short.capitalize() if word[0].isupper() else short
        return f"\n{short}" if between == "\n" else before + short

    return pattern.sub(elided, text)


_PIECES = ["de", "De", "que", "la", "Le", "le", "x", "ade", "_de", "é", "'", "Atelier",
           "Atelier & Co", "Atelier &amp; Co", "Hôtel", "Bastide", "Yvetot", "Orange"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(["", " ", "\n", "  "])),
                max_size=14),
       st.lists(st.sampled_from(["Atelier & Co", "Atelier", "Hôtel Dieu", "Orange", "Yvetot",
                                 "Bastide", ""]), max_size=3))
def test_elision_agrees_with_its_regular_expression(pieces: list[tuple[str, str]],
                                                    names: list[str]) -> None:
    text = "".join(word + gap for word, gap in pieces)
    assert elide_before(text, names) == _elide_by_regex(text, names)
