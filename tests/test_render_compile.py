"""Messages compiled into the templates (dunning/channels/inline.py) render byte for byte as Jinja's
own i18n extension renders them from the same catalogs, plurals included, for every count the
catalogs' plural rules tell apart."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment, FileSystemLoader, StrictUndefined, Template

from dunning.channels.email import Renderer
from dunning.channels.inline import COMPILED
from dunning.channels.letter import letter_context
from dunning.channels.message import Line, Message
from dunning.channels.templating import _Environment, environment, translations
from dunning.policy import LANGUAGES, load_policy
from dunning.resources import templates_dir

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")
EMAIL_STAGES = [s.template_name for s in POLICY.stages if s.channel == "email"]
# 0 and 1 (one form in French, two elsewhere), 2 and 5, and the millions French sets apart
COUNTS = (0, 1, 2, 5, 21, 1_000_000, 2_000_000, 1_000_001)
OPTIONS: dict[str, Any] = {
    "undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True,
    "keep_trailing_newline": True, "extensions": ["jinja2.ext.i18n"],
    "autoescape": lambda name: bool(name) and name.endswith(".html.j2"),
}


def _reference(root: str, language: str, loader: Any = None) -> Environment:
    """Jinja's own i18n, new style, on the same catalogs: what compiled messages must equal."""
    reference = Environment(loader=loader or FileSystemLoader(root), **OPTIONS)
    reference.install_gettext_translations(  # type: ignore[attr-defined]
        translations(root, language), newstyle=True)
    return reference


def _compiled(root: str, language: str, loader: Any = None) -> Environment:
    """Messages compiled in, without the bytecode cache (each template compiled here)."""
    return _Environment(translations(root, language), loader=loader or FileSystemLoader(root),
                        **OPTIONS)


def _lines(count: int) -> tuple[Line, ...]:
    return tuple(Line(f"F2026-{i:04d}", date(2025, 9, 1), date(2025, 10, 1) + timedelta(days=i),
                      "EUR", Decimal("120.50"), Decimal("99.90"), 12 - 5 * i)
                 for i in range(count))


def _message(language: str, template: str, lines: int = 2,
             reminders: tuple[tuple[date, str], ...] = ()) -> Message:
    return Message(customer_ref="C042", customer_name="Müller & Söhne <GmbH> 100%",
                   language=language, country="BE", recipients=("ap@x.example",),
                   stage=template, template=template, as_of=date(2025, 11, 2),
                   lines=_lines(lines), customer_address="1 Rue & Co <b>, 1000 Bruxelles",
                   reminders=reminders)


class _Reference(Renderer):
    """A renderer whose templates are rendered by Jinja's own i18n."""

    make = staticmethod(_reference)

    def templates(self, language: str, template: str) -> tuple[Template, Template, Template]:
        found = self._templates.get((language, template))
        if found is None:
            reference = self.make(str(self.root), language)
            subject, text, html = (reference.get_template(f"email/{template}.{part}.j2")
                                   for part in ("subject", "txt", "html"))
            found = self._templates[(language, template)] = (subject, text, html)
        return found


class _Compiled(_Reference):
    """A renderer of messages compiled in, by this code (not read from the bytecode cache)."""

    make = staticmethod(_compiled)


class _Counted(list[Any]):
    """A few invoices that count as `length` (a letter's plurals count `invoices|length`)."""

    def __init__(self, items: list[Any], length: int) -> None:
        super().__init__(items)
        self.length = length

    def __len__(self) -> int:
        return self.length


def test_the_bytecode_cache_key_names_the_compile_scheme() -> None:
    assert "plural" in COMPILED
    assert environment(str(templates_dir()), "fr").filters["_plural_form_0"](1_000_000) == 1


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", EMAIL_STAGES)
def test_every_email_renders_as_jinja_i18n_does_for_every_count(language: str,
                                                                 template: str) -> None:
    compiled, reference = _Compiled(POLICY), _Reference(POLICY)
    extra = {"deadline": "2 décembre 2026 <b>"}
    for lines in (1, 2, 5):
        message = _message(language, template, lines)
        expected = reference.render(message, extra)
        assert compiled.render(message, extra) == expected
        assert Renderer(POLICY).render(message, extra) == expected, "as dispatch renders"
        for count in COUNTS:
            counted = extra | {"count": count}
            assert compiled.render(message, counted) == reference.render(message, counted)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_formal_notice_letter_renders_as_jinja_i18n_does_for_every_count(
        language: str) -> None:
    root = str(templates_dir())
    compiled = _compiled(root, language).get_template("letters/formal_notice.html.j2")
    reference = _reference(root, language).get_template("letters/formal_notice.html.j2")
    sent = ((date(2025, 10, 1), "friendly_reminder"), (date(2025, 10, 15), "second_reminder"))
    for reminders in ((), sent[:1], sent):
        for lines in (0, 1, 2, 5):
            context = letter_context(_message(language, "formal_notice", lines, reminders),
                                     POLICY)
            assert compiled.render(context) == reference.render(context)
        for count in COUNTS:
            context["invoices"] = _Counted(list(context["invoices"]), count)
            assert compiled.render(context) == reference.render(context)


# Plurals and messages as templates may write them: in an expression, with `num`, with a count
# computed by a call, with `%%`, with a context, unknown to the catalogs, next to other outputs.
SOURCES = {
    "trans": "{% trans count=n, name=who %}Dear {{ name }}, {{ count }} at 100%{% pluralize %}"
             "{{ name }}: {{ count }} at 50%{% endtrans %}|{{ who }}\n",
    "num": "{% trans num=n %}{{ num }} thing{% pluralize %}{{ num }} things{% endtrans %}",
    "called": "{% trans count=items|length + 0, x=who %}{{ x }} one{% pluralize %}{{ x }} "
              "{{ count }}{% endtrans %}{% trans count=items.count(1) %}a{% pluralize %}"
              "b {{ count }}{% endtrans %}",
    "pluralize_n": "{% trans count=n, m=n * 2 %}{{ count }} / {{ m }}{% pluralize m %}"
                   "{{ count }} // {{ m }}{% endtrans %}",
    "expression": "{% set s = ngettext('%(num)s day', '%(num)s days', n) %}[{{ s }}]"
                  "{{ ngettext('%(num)s day', '%(num)s days', n)|upper }}"
                  "{{ npgettext('text email', 'Payment reminder: invoice %(number)s', "
                  "'Payment reminder: %(count)s invoices', n, number=who, count=n) }}",
    "inline": "<{{ ngettext('%(num)s day', '%(num)s days', n) }}>{{ who }}"
              "{{ ngettext('%(num)s thing for %(who)s', '%(num)s things for %(who)s', n, "
              "who=who) }}!{{ _('Kind regards,') }}",
    "odd": "{{ ngettext('%(num)d day', '%(num)d days', n) }}{% trans count=n %}{{ count }} "
           "%% {% pluralize %}{{ count }}%%{% endtrans %}",
}


@pytest.fixture(scope="module")
def own_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A templates folder whose own French catalog translates a plural, in front of the
    shipped one (gettext looks in it first, then falls back)."""
    root = tmp_path_factory.mktemp("own")
    po = root / "locale" / "fr" / "LC_MESSAGES" / "dunning.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n'
                  '"Plural-Forms: nplurals=2; plural=(n > 1);\\n"\n\n'
                  'msgid "%(num)s thing for %(who)s"\nmsgid_plural "%(num)s things for %(who)s"\n'
                  'msgstr[0] "%(num)s chose pour <%(who)s>"\n'
                  'msgstr[1] "%(num)s choses pour <%(who)s> & co"\n', encoding="utf-8")
    return str(root)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("suffix", [".txt.j2", ".html.j2"])
def test_plurals_as_written_anywhere_render_as_jinja_i18n_does(language: str, suffix: str,
                                                               own_root: str) -> None:
    for root in (str(templates_dir()), own_root):
        loader = DictLoader({name + suffix: source for name, source in SOURCES.items()})
        compiled, reference = _compiled(root, language, loader), _reference(root, language,
                                                                            loader)
        for name in SOURCES:
            for n in COUNTS:
                context = {"n": n, "who": "<Ann & Bob> 5%", "items": [1] * n if n < 9 else []}
                try:
                    expected = reference.get_template(name + suffix).render(context)
                except (TypeError, ValueError) as error:  # %d of a str: the same error
                    with pytest.raises(type(error)):
                        compiled.get_template(name + suffix).render(context)
                    continue
                assert compiled.get_template(name + suffix).render(context) == expected, \
                    (root, name, n)


def test_plurals_are_compiled_in_not_called() -> None:
    root = str(templates_dir())
    compiled = _compiled(root, "fr")
    for name in ("email/friendly_reminder.html.j2", "email/friendly_reminder.txt.j2",
                 "letters/formal_notice.html.j2"):
        source = compiled.compile(compiled.loader.get_source(compiled, name)[0],  # type: ignore
                                  name, raw=True)
        assert "ngettext" not in source and "_plural_form_0" in source, name
