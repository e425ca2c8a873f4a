"""Email: render a reminder from the Jinja2 templates and deliver it through SendGrid, or write it
as an .eml file in the outbox folder when no SendGrid key is set."""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from email import encoders
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from dunning.channels.formatting import day, locale_for, money, totals
from dunning.errors import DeliveryError
from dunning.policy import Policy
from dunning.resources import templates_dir

CUSTOM_ARG = "dunning_action_key"  # lets SendGrid's event webhook be matched to our action


@dataclass(frozen=True)
class Line:
    number: str
    issue_date: date | None
    due_date: date
    currency: str
    amount: Decimal
    amount_open: Decimal
    days_overdue: int
    invoice_ref: str = ""  # the invoice's id in the accounting system


@dataclass(frozen=True)
class Letter:
    """Everything one reminder says, before rendering."""

    customer_ref: str
    customer_name: str
    language: str
    country: str | None
    recipients: tuple[str, ...]
    stage: str
    template: str
    as_of: date
    lines: tuple[Line, ...]
    customer_address: str | None = None
    customer_legal_id: str | None = None
    reminders: tuple[tuple[date, str], ...] = ()  # what was sent before: (date, stage)
    customer_phone: str | None = None


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mimetype: str


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    recipients: tuple[str, ...]
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)


@lru_cache(maxsize=4)
def _environment(root: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(letter: Letter, policy: Policy, extra: dict[str, Any] | None = None,
           attachments: tuple[Attachment, ...] = ()) -> Rendered:
    """Subject, text and HTML of a reminder in the customer's language."""
    locale = locale_for(letter.language, letter.country)
    by_currency: dict[str, Decimal] = {}
    for line in letter.lines:
        by_currency[line.currency] = by_currency.get(line.currency, Decimal(0)) + line.amount_open
    creditor = policy.creditor
    context: dict[str, Any] = {
        "customer": SimpleNamespace(name=letter.customer_name, id=letter.customer_ref),
        "creditor": SimpleNamespace(
            name=creditor.name, email=creditor.email, phone=creditor.phone,
            address=creditor.address, iban=creditor.iban, bic=creditor.bic,
            legal_id=creditor.legal_id,
        ),
        "invoices": [
            SimpleNamespace(
                number=line.number,
                issue_date=day(line.issue_date, locale) if line.issue_date else "",
                due_date=day(line.due_date, locale),
                amount=money(line.amount, line.currency, locale),
                open=money(line.amount_open, line.currency, locale),
                currency=line.currency,
                days_overdue=line.days_overdue,
                days_until_due=-line.days_overdue,
            )
            for line in letter.lines
        ],
        "count": len(letter.lines),
        "total": totals(by_currency, locale),
        "as_of": day(letter.as_of, locale, "long"),
        "pay_by": day(letter.as_of + timedelta(days=policy.payment_days), locale, "long"),
        "reference": f"{letter.customer_ref}-{letter.as_of.isoformat()}",
        "stage": letter.stage,
    } | (extra or {})
    env = _environment(str(templates_dir()))
    base = f"email/{letter.language}/{letter.template}"
    try:
        subject = env.get_template(f"{base}.subject.j2").render(context)
        text = env.get_template(f"{base}.txt.j2").render(context)
        html = env.get_template(f"{base}.html.j2").render(context)
    except TemplateNotFound as exc:
        raise DeliveryError(
            f"no template {exc.name} in {templates_dir()}", retryable=False
        ) from None
    subject = " ".join(subject.split())
    return Rendered(subject=subject, text=text, html=html, recipients=letter.recipients,
                    attachments=attachments)


# --- delivery ---------------------------------------------------------------------------------


class Outbox:
    """Writes each message as an .eml file; the file name carries the action id."""

    name = "outbox"

    def __init__(self, folder: Path, policy: Policy) -> None:
        self.folder = folder
        self.policy = policy

    def send(self, message: Rendered, action_id: int, key: str) -> str:
        email = self.policy.email
        sender = email.from_address if email else (self.policy.creditor.email or "")
        body = MIMEMultipart("alternative")
        body.attach(MIMEText(message.text, "plain", "utf-8"))
        body.attach(MIMEText(message.html, "html", "utf-8"))
        if message.attachments:
            mime = MIMEMultipart("mixed")
            mime.attach(body)
            for item in message.attachments:
                maintype, subtype = item.mimetype.split("/", 1)
                part = MIMEBase(maintype, subtype)
                part.set_payload(item.content)
                encoders.encode_base64(part)
                part.add_header("Content-Disposition", "attachment", filename=item.filename)
                mime.attach(part)
        else:
            mime = body
        mime["Subject"] = message.subject
        mime["From"] = formataddr(((email.from_name if email else None) or
                                   self.policy.creditor.name, sender))
        mime["To"] = ", ".join(message.recipients)
        if email and email.reply_to:
            mime["Reply-To"] = email.reply_to
        mime["Date"] = formatdate(localtime=False)
        mime["Message-ID"] = make_msgid(domain="dunning.local")
        mime["X-Dunning-Action"] = key
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        path = self.folder / f"{action_id:08d}_{safe}.eml"
        tmp = path.with_suffix(".eml.tmp")
        tmp.write_bytes(mime.as_bytes())
        os.replace(tmp, path)  # atomic: a reader never sees half a message
        return f"outbox:{path.name}"


class SendGrid:
    """Delivers through SendGrid's v3 Mail Send with the official client."""

    name = "sendgrid"

    def __init__(self, api_key: str, policy: Policy, host: str | None = None) -> None:
        from sendgrid import SendGridAPIClient

        if policy.email is None:
            raise DeliveryError("the policy has no `email:` section (from address)",
                                retryable=False)
        self.policy = policy
        self.email = policy.email
        kwargs: dict[str, Any] = {"api_key": api_key}
        if host:
            kwargs["host"] = host
        self.client = SendGridAPIClient(**kwargs)
        # The client has no timeout by default and would wait forever on a stalled connection.
        self.client.client.timeout = self.email.timeout

    def send(self, message: Rendered, action_id: int, key: str) -> str:
        from python_http_client.exceptions import HTTPError
        from sendgrid.helpers.mail import Attachment as SendGridAttachment
        from sendgrid.helpers.mail import (
            Category,
            CustomArg,
            Disposition,
            FileContent,
            FileName,
            FileType,
            Mail,
            ReplyTo,
        )

        mail = Mail(
            from_email=(self.email.from_address, self.email.from_name or
                        self.policy.creditor.name),
            to_emails=list(message.recipients),
            subject=message.subject,
            plain_text_content=message.text,
            html_content=message.html,
        )
        if self.email.reply_to:
            mail.reply_to = ReplyTo(self.email.reply_to)
        mail.custom_arg = [CustomArg(CUSTOM_ARG, key), CustomArg("dunning_action_id",
                                                                   str(action_id))]
        mail.category = Category("dunning")
        for item in message.attachments:
            mail.add_attachment(SendGridAttachment(
                FileContent(base64.b64encode(item.content).decode("ascii")),
                FileName(item.filename), FileType(item.mimetype), Disposition("attachment")))
        try:
            response = self.client.send(mail)
        except HTTPError as exc:
            status = getattr(exc, "status_code", 0) or 0
            body = getattr(exc, "body", b"") or b""
            detail = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
            retryable = status >= 500 or status == 429
            raise DeliveryError(f"SendGrid answered {status}: {detail[:500]}",
                                retryable=retryable) from None
        except (TimeoutError, OSError) as exc:
            raise DeliveryError(f"SendGrid unreachable: {exc!r}") from None
        headers = getattr(response, "headers", {}) or {}
        message_id = headers.get("X-Message-Id") or headers.get("x-message-id")
        return f"sendgrid:{message_id or 'accepted'}"


def transport(policy: Policy, outbox_dir: Path, api_key: str | None,
              host: str | None) -> Outbox | SendGrid:
    """SendGrid when a key is set, else the outbox folder."""
    if api_key:
        return SendGrid(api_key, policy, host)
    return Outbox(outbox_dir, policy)
