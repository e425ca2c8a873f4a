"""Email: render a reminder from the Jinja2 templates, and the channel of emails and formal
notices, delivering through SendGrid, or writing .eml files in the outbox folder when no SendGrid
key is set (a formal notice is kept for the post, and emailed only to an address)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jinja2 import (
    Template,
    TemplateNotFound,
    TemplatesNotFound,
)

from dunning.channels.formatting import day, elide_before, locale_for, money, totals
from dunning.channels.letter import REMINDER_LETTER, deadline, produce
from dunning.channels.message import SECTIONS, Attachment, Message, Rendered
from dunning.channels.outbox import Outbox
from dunning.channels.protocol import Claimed, Delivered
from dunning.channels.sendgrid import SendGrid
from dunning.channels.statute import Penalties
from dunning.channels.templating import environment
from dunning.channels.transfer import CURRENCY, content_id, qr_png, remittance
from dunning.errors import DeliveryError
from dunning.policy import Policy
from dunning.resources import templates_dir


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
        self.penalties = Penalties(policy, str(self.root))
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
                section=line.section,
            ))
        sections = _sections(invoices)
        invoices = [inv for section in sections for inv in section.invoices]
        # An email speaks of the invoices overdue when it lists some (those due soon have a
        # section of their own); of all of them otherwise.
        overdue = sum(1 for inv in invoices if inv.days_overdue >= 0)
        context: dict[str, Any] = {
            "customer": SimpleNamespace(name=message.customer_name, id=message.customer_ref),
            "creditor": self.creditor,
            "invoices": invoices,
            "sections": sections,
            "count": overdue or len(invoices),
            "total": totals(by_currency, locale),
            "as_of": day(message.as_of, locale, "long"),
            "pay_by": day(message.as_of + self.pay_within, locale, "long"),
            "reference": f"{message.customer_ref}-{message.as_of.isoformat()}",
            "stage": message.stage,
            "language": message.language,
        }
        context["penalties"] = self.penalties(message.language, locale, message.lines)
        qr = self.transfer_qr(message, by_currency, context["reference"])
        context["qr"] = f"cid:{qr.content_id}" if qr else None
        if qr:
            attachments = (qr, *attachments)
        if extra:
            context.update(extra)
        try:
            subject = " ".join(subject_template.render(context).split())
            text = text_template.render(context)
            html = html_template.render(context)
        except TemplateNotFound as exc:  # a layout the stage's templates extend
            raise DeliveryError(f"no template {exc.name} in {self.root}", retryable=False) from None
        if message.language == "fr":  # "au nom de %(name)s": "au nom d'Atelier"
            names = (message.customer_name, self.creditor.name)
            subject, text, html = (elide_before(part, names) for part in (subject, text, html))
        return Rendered(subject=subject, text=text, html=html, recipients=message.recipients,
                        attachments=attachments)

    def transfer_qr(self, message: Message, by_currency: dict[str, Decimal],
                    reference: str) -> Attachment | None:
        """The SEPA transfer QR code of the message's open total, shown inline in the HTML;
        None without an IBAN, or for invoices not all in euros (EPC069-12 is for euros)."""
        if not self.creditor.iban or list(by_currency) != [CURRENCY]:
            return None
        png = qr_png(self.creditor.name, self.creditor.iban, self.creditor.bic,
                     by_currency[CURRENCY],
                     remittance((line.number for line in message.lines), reference))
        if png is None:
            return None
        return Attachment("sepa-qr.png", png, "image/png", content_id(png))


def _sections(invoices: list[SimpleNamespace]) -> list[SimpleNamespace]:
    """The invoices in their sections (SECTIONS' order; a document without sections: one)."""
    by_key: dict[str, list[SimpleNamespace]] = {}
    for inv in invoices:
        by_key.setdefault(inv.section, []).append(inv)
    order = {key: n for n, key in enumerate(SECTIONS)}
    return [SimpleNamespace(key=key, invoices=by_key[key])
            for key in sorted(by_key, key=lambda k: order.get(k, -1))]


def render(message: Message, policy: Policy, extra: dict[str, Any] | None = None,
           attachments: tuple[Attachment, ...] = ()) -> Rendered:
    """Subject, text and HTML of a reminder in the customer's language (for many messages, make
    one `Renderer` and call its `render`)."""
    return Renderer(policy).render(message, extra, attachments)


# The provider id of a formal notice delivered to a customer without an email address: the
# letter is kept and queued for registered mail only.
POST_ONLY = "no email: post only"


class MessageChannel:
    """Emails, and formal notices: a PDF kept in the letters folder, posted by registered mail,
    and sent as an attachment of a cover email when the customer has an address."""

    def __init__(self, kind: str, transport: Outbox | SendGrid, policy: Policy,
                 letters_dir: Path | None) -> None:
        self.kind = kind
        self.transport = transport
        self.policy = policy
        self.letters_dir = letters_dir
        self.renderer = Renderer(policy)

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered:
        if self.kind == "email" and not message.recipients and message.bounced:
            raise DeliveryError(f"customer {message.customer_ref}: every email address bounced "
                                f"({', '.join(message.bounced)}); give another in the "
                                "accounting system", retryable=False)
        if self.kind == "email" and not message.recipients:
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
        # A formal notice is a postal document: produced, kept and queued for registered mail
        # whatever else happens; the email copy goes only to a customer with an address.
        assert self.letters_dir is not None
        path, pdf, dated = produce(message, self.policy, self.letters_dir, action_id)
        if not message.recipients or message.template == REMINDER_LETTER:
            # A reminder letter replaces an email that bounced: it goes by post only.
            return Delivered(POST_ONLY, document=str(path))
        rendered = self.renderer.render(dated, extra={"deadline": deadline(dated, self.policy)},
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
