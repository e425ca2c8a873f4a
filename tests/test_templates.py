"""Every reminder renders in every language, with amounts and dates as its readers write them."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from babel.numbers import format_currency
from jinja2 import DictLoader, Environment
from jinja2.bccache import bc_magic

from dunning.channels.email import Renderer, render
from dunning.channels.message import Line, Message
from dunning.channels.templating import _BytecodeCache
from dunning.errors import DeliveryError
from dunning.policy import LANGUAGES, load_policy

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")
EMAIL_STAGES = [s.template_name for s in POLICY.stages if s.channel == "email"]


def message(language: str, template: str, country: str = "FR", days_overdue: int = 12) -> Message:
    lines = (
        Line("F2026-0001", date(2026, 9, 1), date(2026, 10, 1), "EUR", Decimal("12345.60"),
             Decimal("1234.56"), days_overdue),
        Line("F2026-0002", None, date(2026, 10, 15), "EUR", Decimal("99.90"),
             Decimal("99.90"), days_overdue - 14),
    )
    return Message(customer_ref="C042", customer_name="Müller & Söhne <GmbH>", language=language,
                   country=country, recipients=("ap@x.example",), stage=template,
                   template=template, as_of=date(2026, 11, 2), lines=lines)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", EMAIL_STAGES)
def test_every_reminder_renders(language: str, template: str) -> None:
    rendered = render(message(language, template), POLICY)
    assert rendered.subject and "\n" not in rendered.subject
    for body in (rendered.text, rendered.html):
        assert "F2026-0001" in body and "F2026-0002" in body
        assert "C042-2026-11-02" in body, "the payment reference"
        assert "FR76 3000 6000 0112 3456 7890 189" in body
    assert "Müller &amp; Söhne &lt;GmbH&gt;" in rendered.html
    assert "<GmbH>" not in rendered.html


@pytest.mark.parametrize(("language", "country", "total", "long_date"), [
    ("fr", "FR", "1\u202f334,46\u00a0€", "2 novembre 2026"),
    ("fr", "BE", "1\u202f334,46\u00a0€", "2 novembre 2026"),
    ("en", "GB", "€1,334.46", "2 November 2026"),
    ("nl", "BE", "€\u00a01.334,46", "2 november 2026"),
    ("de", "DE", "1.334,46\u00a0€", "2. November 2026"),
    # Swiss grouping changed between Babel releases (’ then '): take Babel's own output, and
    # check that the locale chosen is de_CH (EUR written as a code, '.' for decimals).
    ("de", "CH", format_currency(Decimal("1334.46"), "EUR", locale="de_CH"), "2. November 2026"),
])
def test_amounts_and_dates_follow_the_language_and_country(language: str, country: str,
                                                           total: str, long_date: str) -> None:
    rendered = render(message(language, "second_reminder", country), POLICY)
    assert total in rendered.text
    if country == "CH":
        assert total.startswith("EUR") and total.endswith("334.46")
    assert long_date in rendered.text


def test_the_tone_firms_up_with_the_stage() -> None:
    texts = {t: render(message("en", t), POLICY).text for t in EMAIL_STAGES}
    assert "10 November 2026" in texts["second_reminder"], "a pay-by date: run date + 8 days"
    assert "10 November 2026" not in texts["friendly_reminder"]


def test_a_missing_template_is_a_permanent_failure(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNNING_TEMPLATES_DIR", str(tmp_path))
    with pytest.raises(DeliveryError) as error:
        render(message("fr", "friendly_reminder"), POLICY)
    assert "email/fr/friendly_reminder.subject.j2" in str(error.value)
    assert error.value.retryable is False


@pytest.mark.parametrize(("template", "days_overdue", "cells"), [
    ("friendly_reminder", 12, ("12 days", "not yet due")),
    ("second_reminder", 15, ("15 days", "1 day")),
    ("pre_due_reminder", -1, ("tomorrow", "in 15 days")),
    ("pre_due_reminder", 0, ("today", "in 14 days")),
])
def test_the_status_column_counts_days_late_or_days_left(template: str, days_overdue: int,
                                                         cells: tuple[str, str]) -> None:
    rendered = render(message("en", template, days_overdue=days_overdue), POLICY)
    for cell in cells:
        assert f"{cell}\n" in rendered.text
        assert f">{cell}</td>" in rendered.html


def test_one_renderer_renders_every_language_and_stage_as_render_does() -> None:
    renderer = Renderer(POLICY)
    for language in LANGUAGES:
        for template in EMAIL_STAGES:
            assert renderer.render(message(language, template)) == \
                render(message(language, template), POLICY)


def test_an_unreadable_or_unwritable_template_cache_only_costs_time(tmp_path: Path) -> None:
    templates = {"t.txt.j2": "{% for i in items %}{{ i }};{% endfor %}"}
    cache = _BytecodeCache(str(tmp_path))
    Environment(loader=DictLoader(templates), bytecode_cache=cache).get_template("t.txt.j2")
    (cached,) = tmp_path.iterdir()
    cached.write_bytes(bc_magic + b"\x80 not a compiled template")
    fresh = Environment(loader=DictLoader(templates), bytecode_cache=_BytecodeCache(str(tmp_path)))
    assert fresh.get_template("t.txt.j2").render(items=[1, 2]) == "1;2;"
    nowhere = _BytecodeCache(str(tmp_path / "removed"))
    assert Environment(loader=DictLoader(templates), bytecode_cache=nowhere) \
        .get_template("t.txt.j2").render(items=[3]) == "3;"
