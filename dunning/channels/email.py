"""Email: render a reminder from the Jinja2 templates, and the channel of emails and formal
notices, delivering through SendGrid, or writing .eml files in the outbox folder when no SendGrid
key is set."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jinja2 import (
    Environment,
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
)
from jinja2.bccache import Bucket

from dunning.channels.formatting import day, locale_for, money, totals
from dunning.channels.message import Attachment, Message, Rendered
from dunning.channels.outbox import Outbox
from dunning.channels.protocol import Claimed, Delivered
from dunning.channels.sendgrid import SendGrid
from dunning.errors import DeliveryError
from dunning.policy import Policy
from dunning.resources import templates_dir


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


def _bytecode_cache() -> _BytecodeCache | None:
    try:
        return _BytecodeCache()
    except Exception:  # no safe temporary folder
        return None


@lru_cache(maxsize=4)
def environment(root: str) -> Environment:
    # Templates are read once per process (a daily run is one process): checking every file's
    # modification time at each message cost a tenth of the rendering.
    return Environment(
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(),
    )


class Renderer:
    """Renders reminders for one policy from one templates folder; what every message shares
    (the creditor, the compiled templates of each language and stage) is built once."""

    def __init__(self, policy: Policy, root: Path | None = None) -> None:
        self.policy = policy
        self.root = root or templates_dir()
        self.environment = environment(str(self.root))
        creditor = policy.creditor
        self.creditor = SimpleNamespace(
            name=creditor.name, email=creditor.email, phone=creditor.phone,
            address=creditor.address, iban=creditor.iban, bic=creditor.bic,
            legal_id=creditor.legal_id,
        )
        self.pay_within = timedelta(days=policy.payment_days)
        self._templates: dict[tuple[str, str], tuple[Template, Template, Template]] = {}

    def templates(self, language: str, template: str) -> tuple[Template, Template, Template]:
        """The subject, text and HTML templates of a language and stage."""
        found = self._templates.get((language, template))
        if found is None:
            base = f"email/{language}/{template}"
            try:
                found = (self.environment.get_template(f"{base}.subject.j2"),
                         self.environment.get_template(f"{base}.txt.j2"),
                         self.environment.get_template(f"{base}.html.j2"))
            except TemplateNotFound as exc:
                raise DeliveryError(
                    f"no template {exc.name} in {self.root}", retryable=False
                ) from None
            self._templates[(language, template)] = found
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
            currency = line.currency
            by_currency[currency] = by_currency.get(currency, Decimal(0)) + line.amount_open
            invoices.append(SimpleNamespace(
                number=line.number,
                issue_date=day(line.issue_date, locale) if line.issue_date else "",
                due_date=day(line.due_date, locale),
                amount=money(line.amount, currency, locale),
                open=money(line.amount_open, currency, locale),
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
