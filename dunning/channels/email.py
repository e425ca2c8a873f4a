"""Email: render a reminder from the Jinja2 templates, and the channel of emails and formal
notices, delivering through SendGrid, or writing .eml files in the outbox folder when no SendGrid
key is set."""

from __future__ import annotations

import hashlib
import io
from collections.abc import MutableMapping
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import (
    Environment,
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplatesNotFound,
    pass_eval_context,
)
from jinja2.bccache import Bucket
from jinja2.nodes import EvalContext
from markupsafe import Markup

from dunning.channels.formatting import day, locale_for, money, totals
from dunning.channels.inline import COMPILED, Translate, plural_rules
from dunning.channels.message import Attachment, Message, Rendered
from dunning.channels.outbox import Outbox
from dunning.channels.protocol import Claimed, Delivered
from dunning.channels.sendgrid import SendGrid
from dunning.errors import DeliveryError
from dunning.policy import Policy
from dunning.resources import resource_dir, templates_dir


class _BytecodeCache(FileSystemBytecodeCache):
    """Compiled templates kept between processes, in the user's temporary folder (Jinja checks
    each against its source): compiling the email templates costs about a second of CPU in every
    process that renders. A cache that cannot be read or written is only slower."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _bytecode_cache(wording: str) -> _BytecodeCache | None:
    """The cache of the templates compiled with one wording (a language's catalogs, by content:
    Jinja checks a template's source, not the catalog compiled into it)."""
    try:
        return _BytecodeCache(pattern=f"__jinja2_dunning_{wording}_%s.cache")
    except Exception:  # no safe temporary folder
        return None


_CATALOG = "LC_MESSAGES/dunning.po"


def _catalog_files(root: str, language: str) -> tuple[Path, ...]:
    """The shipped catalog of a language, then a templates folder's own, if it has one."""
    shipped = resource_dir("locale") / language / _CATALOG
    if not shipped.is_file():
        raise DeliveryError(f"no message catalog {shipped} for language {language!r}",
                            retryable=False)
    own = Path(root) / "locale" / language / _CATALOG
    return (shipped, own) if own.is_file() and own.resolve() != shipped.resolve() else (shipped,)


def _catalog(path: Path, language: str) -> Translations:
    """A `.po` catalog compiled in memory (no build step; fuzzy entries are left out, as
    `msgfmt` does)."""
    with path.open("rb") as po:
        catalog = read_po(po, locale=language)
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return Translations(mo, domain="dunning")


@lru_cache(maxsize=16)
def translations(root: str, language: str) -> NullTranslations:
    """The wording of a language: `<root>/locale/<lang>/LC_MESSAGES/dunning.po` when a templates
    folder of one's own has it, each message it lacks taken from the shipped catalog."""
    found: NullTranslations | None = None
    for path in _catalog_files(root, language):
        catalog = _catalog(path, language)
        if found is not None:
            catalog.add_fallback(found)
        found = catalog
    assert found is not None
    return found


class _Environment(Environment):
    """Templates compiled with one language's wording (see `inline.Translate`), with the
    filters of its plural rules."""

    def __init__(self, wording: NullTranslations, **options: Any) -> None:
        super().__init__(**options)
        self.wording = wording
        _install_gettext(self, wording)
        self.filters.update(plural_rules(wording))

    def compile(self, source: Any, name: str | None = None, filename: str | None = None,
                raw: bool = False, defer_init: bool = False) -> Any:
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        source = Translate(self.wording).visit(source)
        return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one dict, not Jinja's `ChainMap` over the environment's:
        every rendering copies them into its context, key by key through the `ChainMap` (a
        `KeyError` caught for each global: about 10 µs a template, 11 globals with gettext's).
        The environment's globals are all set in `__init__`, before any template is loaded."""
        return {**self.globals, **(d or {})}


@lru_cache(maxsize=16)
def environment(root: str, language: str | None = None) -> Environment:
    """The templates of a folder, with the wording of `language` (its message catalogs)."""
    if language:
        wording = translations(root, language)
        # The way messages are compiled in (`inline.Translate`) is part of the key: bytecode cached
        # by an earlier version would otherwise be used after an upgrade.
        digest = hashlib.sha1(f"{COMPILED}:{language}".encode())
        for path in _catalog_files(root, language):
            digest.update(path.read_bytes())
        key = digest.hexdigest()[:16]
    else:
        wording, key = NullTranslations(), "none"
    # Templates are read once per process (a daily run is one process): checking every file's
    # modification time at each message cost a tenth of the rendering.
    return _Environment(
        wording,
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(key),
        extensions=["jinja2.ext.i18n"],
    )


def _install_gettext(environment: Environment, wording: NullTranslations) -> None:
    """Jinja's new-style gettext (in HTML the translation is marked safe and its variables are
    escaped; a literal % is written %%) for the messages left to rendering (those `inline.Translate`
    cannot compile in), in one call where Jinja's own makes three."""

    def fill(eval_ctx: EvalContext, text: str, variables: dict[str, Any]) -> str:
        return (Markup(text) if eval_ctx.autoescape else text) % variables

    @pass_eval_context
    def gettext(eval_ctx: EvalContext, message: str, **variables: Any) -> str:
        return fill(eval_ctx, wording.gettext(message), variables)

    @pass_eval_context
    def ngettext(eval_ctx: EvalContext, singular: str, plural: str, num: int,
                 **variables: Any) -> str:
        variables.setdefault("num", num)
        return fill(eval_ctx, wording.ngettext(singular, plural, num), variables)

    @pass_eval_context
    def pgettext(eval_ctx: EvalContext, context: str, message: str, **variables: Any) -> str:
        variables.setdefault("context", context)
        return fill(eval_ctx, str(wording.pgettext(context, message)), variables)

    @pass_eval_context
    def npgettext(eval_ctx: EvalContext, context: str, singular: str, plural: str, num: int,
                  **variables: Any) -> str:
        variables.setdefault("context", context)
        variables.setdefault("num", num)
        return fill(eval_ctx, str(wording.npgettext(context, singular, plural, num)),
                    variables)

    environment.globals.update(_=gettext, gettext=gettext, ngettext=ngettext, pgettext=pgettext,
                               npgettext=npgettext)
    environment.newstyle_gettext = True  # type: ignore[attr-defined]


class Renderer:
    """Renders reminders for one policy from one templates folder; what every message shares
    (the creditor, the compiled templates of each language and stage) is built once."""

    def __init__(self, policy: Policy, root: Path | None = None) -> None:
        self.policy = policy
        self.root = root or templates_dir()
        creditor = policy.creditor
        self.creditor = SimpleNamespace(
            name=creditor.name, email=creditor.email, phone=creditor.phone,
            address=creditor.address, iban=creditor.iban, bic=creditor.bic,
            legal_id=creditor.legal_id,
        )
        self.pay_within = timedelta(days=policy.payment_days)
        self._templates: dict[tuple[str, str], tuple[Template, Template, Template]] = {}

    def templates(self, language: str, template: str) -> tuple[Template, Template, Template]:
        """The subject, text and HTML templates of a language and stage: `email/<lang>/<stage>.*`
        when a templates folder has them (wording of its own for that language), else the
        shared `email/<stage>.*` with the language's catalog."""
        found = self._templates.get((language, template))
        if found is None:
            templates = environment(str(self.root), language)
            try:
                subject, text, html = (templates.select_template(
                    [f"email/{language}/{template}.{part}.j2", f"email/{template}.{part}.j2"])
                    for part in ("subject", "txt", "html"))
            except TemplatesNotFound as exc:
                raise DeliveryError(f"no template {' or '.join(map(str, exc.templates))} in "
                                    f"{self.root}", retryable=False) from None
            found = self._templates[(language, template)] = (subject, text, html)
        return found

    def render(self, message: Message, extra: dict[str, Any] | None = None,
               attachments: tuple[Attachment, ...] = ()) -> Rendered:
        """Subject, text and HTML of a reminder in the customer's language."""
        subject_template, text_template, html_template = self.templates(message.language,
                                                                        message.template)
        locale = locale_for(message.language, message.country)
        by_currency: dict[str, Decimal] = {}
        invoices = []
        for line in message.lines:
            currency, amount, amount_open = line.currency, line.amount, line.amount_open
            by_currency[currency] = by_currency.get(currency, Decimal(0)) + amount_open
            amount_text = money(amount, currency, locale)
            invoices.append(SimpleNamespace(
                number=line.number,
                issue_date=day(line.issue_date, locale) if line.issue_date else "",
                due_date=day(line.due_date, locale),
                amount=amount_text,
                # most invoices are open for their whole amount: formatted once (same sign)
                open=amount_text if amount_open == amount
                and amount_open.is_signed() == amount.is_signed()
                else money(amount_open, currency, locale),
                currency=currency,
                days_overdue=line.days_overdue,
                days_until_due=-line.days_overdue,
            ))
        context: dict[str, Any] = {
            "customer": SimpleNamespace(name=message.customer_name, id=message.customer_ref),
            "creditor": self.creditor,
            "invoices": invoices,
            "count": len(invoices),
            "total": totals(by_currency, locale),
            "as_of": day(message.as_of, locale, "long"),
            "pay_by": day(message.as_of + self.pay_within, locale, "long"),
            "reference": f"{message.customer_ref}-{message.as_of.isoformat()}",
            "stage": message.stage,
            "language": message.language,
        }
        if extra:
            context.update(extra)
        try:
            subject = " ".join(subject_template.render(context).split())
            text = text_template.render(context)
            html = html_template.render(context)
        except TemplateNotFound as exc:  # a layout the stage's templates extend
            raise DeliveryError(f"no template {exc.name} in {self.root}", retryable=False) from None
        return Rendered(subject=subject, text=text, html=html, recipients=message.recipients,
                        attachments=attachments)


def render(message: Message, policy: Policy, extra: dict[str, Any] | None = None,
           attachments: tuple[Attachment, ...] = ()) -> Rendered:
    """Subject, text and HTML of a reminder in the customer's language (for many messages, make
    one `Renderer` and call its `render`)."""
    return Renderer(policy).render(message, extra, attachments)


class MessageChannel:
    """Emails, and formal notices: a PDF kept in the letters folder and sent as an attachment
    of a cover email."""

    def __init__(self, kind: str, transport: Outbox | SendGrid, policy: Policy,
                 letters_dir: Path | None) -> None:
        self.kind = kind
        self.transport = transport
        self.policy = policy
        self.letters_dir = letters_dir
        self.renderer = Renderer(policy)

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered:
        if not message.recipients:
            # Retrying would fail the same way every morning: fail once, visibly.
            raise DeliveryError(f"customer {message.customer_ref} has no email address; "
                                "add one in the accounting system", retryable=False)
        if not all(address.isascii() for address in message.recipients):
            # Snapshots refuse such addresses (sources/rows.py); one recorded before they did
            # would need SMTPUTF8 (RFC 6531), which our transports do not promise.
            raise DeliveryError(f"customer {message.customer_ref}: an email address is not "
                                "ASCII and cannot be sent as it is; fix it in the accounting "
                                "system (retried at the next run)")
        if self.kind == "email":
            rendered = self.renderer.render(message)
            return Delivered(self.transport.send(rendered, action_id, action.dedupe_key))
        # Here, not at the top: channels/letter.py renders with this module's `environment`.
        from dunning.channels.letter import keep, render_pdf

        assert self.letters_dir is not None
        pdf, context = render_pdf(message, self.policy)
        path = keep(pdf, self.letters_dir, action_id, message)
        rendered = self.renderer.render(message, extra={"deadline": context["deadline"]},
                                        attachments=(Attachment(path.name, pdf,
                                                                "application/pdf"),))
        return Delivered(self.transport.send(rendered, action_id, action.dedupe_key),
                         document=str(path))


def transport(policy: Policy, outbox_dir: Path, api_key: str | None,
              host: str | None) -> Outbox | SendGrid:
    """SendGrid when a key is set, else the outbox folder."""
    if api_key:
        return SendGrid(api_key, policy, host)
    return Outbox(outbox_dir, policy)
