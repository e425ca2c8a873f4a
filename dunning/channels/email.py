"""Email: render a reminder from the Jinja2 templates and deliver it through SendGrid, or write it
as an .eml file in the outbox folder when no SendGrid key is set."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from email.utils import formataddr, formatdate, make_msgid
from functools import cached_property, lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

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
    nodes,
    pass_eval_context,
)
from jinja2.bccache import Bucket
from jinja2.nodes import EvalContext
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from dunning.channels.formatting import day, locale_for, money, totals
from dunning.errors import DeliveryError
from dunning.files import safe_name, write_atomically
from dunning.policy import Policy
from dunning.resources import resource_dir, templates_dir

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


class _Translate(NodeTransformer):
    """Puts each message with a constant text (`_("…")`, `{% trans %}` without a plural) into the
    compiled template in its translation, as Jinja's new-style gettext would at each rendering
    (in HTML the text is marked safe and its variables escaped): calls from a template cost
    microseconds each, and an email has about 40 messages. Plurals stay calls."""

    def __init__(self, wording: NullTranslations) -> None:
        self.wording = wording

    def visit_Call(self, node: nodes.Call) -> nodes.Node:  # noqa: N802 (NodeTransformer's name)
        call = self.generic_visit(node)
        if not (isinstance(call, nodes.Call) and isinstance(call.node, nodes.Name)):
            return call
        name = call.node.name
        texts = [a.value for a in call.args
                 if isinstance(a, nodes.Const) and isinstance(a.value, str)]
        if (name not in ("_", "gettext", "pgettext") or call.dyn_args or call.dyn_kwargs
                or len(texts) != len(call.args) or len(texts) != (2 if name == "pgettext" else 1)):
            return call
        variables = list(call.kwargs)
        if name == "pgettext":
            text = str(self.wording.pgettext(*texts))
            variables.insert(0, nodes.Keyword("context", nodes.Const(texts[0])))
        else:
            text = self.wording.gettext(texts[0])
        translated = nodes.MarkSafeIfAutoescape(nodes.Const(text), lineno=call.lineno)
        return nodes.Mod(translated, nodes.Dict(
            [nodes.Pair(nodes.Const(v.key), v.value) for v in variables]), lineno=call.lineno)


class _Environment(Environment):
    """Templates compiled with one language's wording (see `_Translate`)."""

    def __init__(self, wording: NullTranslations, **options: Any) -> None:
        super().__init__(**options)
        self.wording = wording
        _install_gettext(self, wording)

    def compile(self, source: Any, name: str | None = None, filename: str | None = None,
                raw: bool = False, defer_init: bool = False) -> Any:
        if isinstance(source, str):
            source = self.parse(source, name, filename)
        source = _Translate(self.wording).visit(source)
        return super().compile(source, name, filename, raw, defer_init)  # type: ignore[call-overload]


@lru_cache(maxsize=16)
def _environment(root: str, language: str | None = None) -> Environment:
    """The templates of a folder, with the wording of `language` (its message catalogs)."""
    if language:
        wording = translations(root, language)
        digest = hashlib.sha1(language.encode())
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
    escaped; a literal % is written %%) for the messages left to rendering (plurals), in one call
    where Jinja's own makes three."""

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
            environment = _environment(str(self.root), language)
            try:
                subject, text, html = (environment.select_template(
                    [f"email/{language}/{template}.{part}.j2", f"email/{template}.{part}.j2"])
                    for part in ("subject", "txt", "html"))
            except TemplatesNotFound as exc:
                raise DeliveryError(f"no template {' or '.join(map(str, exc.templates))} in "
                                    f"{self.root}", retryable=False) from None
            found = self._templates[(language, template)] = (subject, text, html)
        return found

    def render(self, letter: Letter, extra: dict[str, Any] | None = None,
               attachments: tuple[Attachment, ...] = ()) -> Rendered:
        """Subject, text and HTML of a reminder in the customer's language."""
        subject_template, text_template, html_template = self.templates(letter.language,
                                                                        letter.template)
        locale = locale_for(letter.language, letter.country)
        by_currency: dict[str, Decimal] = {}
        invoices = []
        for line in letter.lines:
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
            "customer": SimpleNamespace(name=letter.customer_name, id=letter.customer_ref),
            "creditor": self.creditor,
            "invoices": invoices,
            "count": len(invoices),
            "total": totals(by_currency, locale),
            "as_of": day(letter.as_of, locale, "long"),
            "pay_by": day(letter.as_of + self.pay_within, locale, "long"),
            "reference": f"{letter.customer_ref}-{letter.as_of.isoformat()}",
            "stage": letter.stage,
            "language": letter.language,
        }
        if extra:
            context.update(extra)
        try:
            subject = " ".join(subject_template.render(context).split())
            text = text_template.render(context)
            html = html_template.render(context)
        except TemplateNotFound as exc:  # a layout the stage's templates extend
            raise DeliveryError(f"no template {exc.name} in {self.root}", retryable=False) from None
        return Rendered(subject=subject, text=text, html=html, recipients=letter.recipients,
                        attachments=attachments)


def render(letter: Letter, policy: Policy, extra: dict[str, Any] | None = None,
           attachments: tuple[Attachment, ...] = ()) -> Rendered:
    """Subject, text and HTML of a reminder in the customer's language (for many messages, make
    one `Renderer` and call its `render`)."""
    return Renderer(policy).render(letter, extra, attachments)


# --- delivery ---------------------------------------------------------------------------------


class Outbox:
    """Writes each message as an .eml file; the file name carries the action id."""

    name = "outbox"

    def __init__(self, folder: Path, policy: Policy) -> None:
        self.folder = folder
        self.policy = policy

    def send(self, message: Rendered, action_id: int, key: str) -> str:
        return self.write(action_id, key, self.serialise(message, key))

    def write(self, action_id: int, key: str, content: bytes) -> str:
        """Write a serialised message; returns the provider id recorded for it."""
        path = self.folder / f"{action_id:08d}_{safe_name(key)}.eml"
        try:
            write_atomically(path, content)
        except FileNotFoundError:  # the folder does not exist yet
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(path, content)
        return f"outbox:{path.name}"

    @cached_property
    def _sender(self) -> tuple[str, ...]:
        """The headers every message shares."""
        email = self.policy.email
        address = email.from_address if email else (self.policy.creditor.email or "")
        name = (email.from_name if email else None) or self.policy.creditor.name
        sender = formataddr((name, address)) if name.isascii() else \
            f"{encode_header(name)} <{address}>"
        out = (f"From: {sender}",)
        if email and email.reply_to:
            out += (f"Reply-To: {email.reply_to}",)
        return out

    def serialise(self, message: Rendered, key: str) -> bytes:
        """The message as RFC 5322 bytes, written directly: the stdlib's generator spends
        milliseconds folding headers, and a first run writes one message per few invoices."""
        alternative = _boundary()
        body = [
            f'Content-Type: multipart/alternative; boundary="{alternative}"',
            "MIME-Version: 1.0",
        ]
        parts = [_part(alternative, "text/plain; charset=\"utf-8\"", message.text.encode()),
                 _part(alternative, "text/html; charset=\"utf-8\"", message.html.encode()),
                 f"--{alternative}--\n"]
        if message.attachments:
            mixed = _boundary()
            head = [f'Content-Type: multipart/mixed; boundary="{mixed}"', "MIME-Version: 1.0"]
            inner = "\n".join(body[:1]) + "\n\n" + "".join(parts)
            parts = [f"--{mixed}\n{inner}"]
            for item in message.attachments:
                parts.append(_part(mixed, item.mimetype, item.content,
                                   f"Content-Disposition: attachment; "
                                   f"{_filename(item.filename)}\n"))
            parts.append(f"--{mixed}--\n")
            body = head
        headers = body + [
            f"Subject: {encode_header(message.subject)}",
            *self._sender,
            f"To: {', '.join(message.recipients)}",
            f"Date: {formatdate(localtime=False)}",
            f"Message-ID: {make_msgid(domain='dunning.local')}",
            f"X-Dunning-Action: {key}",
        ]
        return ("\n".join(headers) + "\n\n" + "".join(parts)).encode("ascii")


def encode_header(text: str) -> str:
    """A header value, as RFC 2047 encoded words when it is not plain ASCII."""
    if text.isascii():
        return text
    words: list[str] = []
    start = size = 0
    for i, char in enumerate(text):  # each word's UTF-8 stays whole and under 75 characters
        width = 1 if char < "\x80" else 2 if char < "\u0800" else 3 if char < "\U00010000" else 4
        if size + width > 45:
            words.append(text[start:i])
            start, size = i, 0
        size += width
    words.append(text[start:])
    return "\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words)


def _boundary() -> str:
    return f"==============={uuid.uuid4().hex}=="


def _filename(name: str) -> str:
    if name.isascii() and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*=utf-8''{quote(name)}"


def _part(boundary: str, content_type: str, payload: bytes, extra: str = "") -> str:
    return (f"--{boundary}\nContent-Type: {content_type}\nMIME-Version: 1.0\n"
            f"Content-Transfer-Encoding: base64\n{extra}\n"
            f"{_base64_lines(payload)}")


def _base64_lines(payload: bytes) -> str:
    """`base64.encodebytes(payload)` (lines of 76 characters), without its loop of a call per
    57 bytes."""
    text = base64.b64encode(payload).decode("ascii")
    return "\n".join([text[i:i + 76] for i in range(0, len(text), 76)]) + "\n" if text else ""


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
