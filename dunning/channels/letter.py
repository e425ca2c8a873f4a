"""Formal notice letters: an A4 PDF per customer (WeasyPrint), with the statutory interest and
the fixed recovery compensation of each invoice, kept in the letters folder, to be posted by
registered mail, and sent as an email attachment when the customer has an address. And the
reminder letter (`REMINDER_LETTER`) that replaces a bounced reminder email (a stage's
`on_bounce: letter`): the amounts open and a date to pay by, posted by ordinary mail."""

from __future__ import annotations

import base64
import logging
import re
from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from babel.numbers import format_decimal
from jinja2 import TemplatesNotFound

from dunning import law
from dunning.channels.formatting import day, elide_before, locale_for, money, totals
from dunning.channels.message import Line, Message
from dunning.channels.templating import environment, translations
from dunning.channels.transfer import CURRENCY, qr_png, remittance
from dunning.errors import DeliveryError, DunningError
from dunning.files import safe_name, write_atomically
from dunning.policy import Policy
from dunning.resources import templates_dir


def N_(message: str) -> str:
    """Marks a message for `make messages` (the name pybabel looks for); it is translated where
    it is used."""
    return message


# The stages as a debtor reads them (the formal notice's list of reminders, the court file's
# facts); the catalogs in locale/ translate them.
STAGE_LABELS = {
    "pre_due_reminder": N_("reminder before the due date"),
    "friendly_reminder": N_("first reminder"),
    "second_reminder": N_("second reminder"),
    "phone_call": N_("telephone call"),
}
# WeasyPrint warns, once per PDF, that the system's HarfBuzz lacks its subsetting library (it
# falls back to fontTools, with the same output): noise in every run's log.
logging.getLogger("weasyprint").setLevel(logging.ERROR)

_PLACE_DATE = N_("%(place)s, %(date)s")  # the town and date heading a letter

# The template of the postal letter replacing a bounced reminder email: a letter action with it
# is a reminder by ordinary post, never a formal notice.
REMINDER_LETTER = "reminder_letter"


def stage_label(stage: str, language: str) -> str:
    """A stage's name in `language`; a stage of one's own reads as its name."""
    label = STAGE_LABELS.get(stage)
    if label is None:
        return stage.replace("_", " ")
    return translations(str(templates_dir()), language).gettext(label)


def _place(address: str | None) -> str | None:
    """The town of the creditor's address ("12 rue X, 69002 Lyon" -> "Lyon")."""
    if not address:
        return None
    last = re.split(r"[,\n]", address)[-1].strip()
    return re.sub(r"^[A-Z]{0,2}-?\d[\d\s]*", "", last).strip() or None


def _percent(rate: Decimal, language: str, locale: Any) -> str:
    text = format_decimal(rate, format="#,##0.00", locale=locale)
    return f"{text} %" if language in ("fr", "de") else f"{text}%"


def letter_context(letter: Message, policy: Policy) -> dict[str, Any]:
    """Everything the formal notice says, formatted for the debtor's language."""
    locale = locale_for(letter.language, letter.country)
    rule = law.rule_for(policy.law.country or policy.creditor.country)
    principal: dict[str, Decimal] = defaultdict(Decimal)
    interest: dict[str, Decimal] = defaultdict(Decimal)
    compensation: dict[str, Decimal] = defaultdict(Decimal)
    rows = []
    for line in letter.lines:
        result = law.claim(line.amount_open, line.due_date, letter.as_of, rule,
                           rate=policy.law.rate, compensation=policy.law.compensation).rounded()
        principal[line.currency] += line.amount_open
        interest[line.currency] += result.interest
        compensation[result.compensation_currency] += result.compensation
        rates = {p.rate for p in result.periods}
        rows.append(_row(
            line, locale, interest=money(result.interest, line.currency, locale),
            compensation=money(result.compensation, result.compensation_currency, locale),
            rate=_percent(rates.pop(), letter.language, locale) if len(rates) == 1 else "",
        ))
    everything: dict[str, Decimal] = defaultdict(Decimal)
    for part in (principal, interest, compensation):
        for currency, amount in part.items():
            everything[currency] += amount
    deadline = letter.as_of + timedelta(days=policy.letters.deadline_days)
    return {
        **_letterhead(letter, policy, everything),
        "invoices": rows,
        "totals": SimpleNamespace(principal=totals(principal, locale),
                                  interest=totals(interest, locale),
                                  compensation=totals(compensation, locale),
                                  total=totals(everything, locale)),
        "deadline": day(deadline, locale, "long"),
        "deadline_days": policy.letters.deadline_days,
        "reminders": [f"{day(when, locale, 'long')} ({stage_label(stage, letter.language)})"
                      for when, stage in letter.reminders],
        "law": rule.law,
        "agreed_rate": _percent(policy.law.rate, letter.language, locale)
        if policy.law.rate is not None else None,
    }


def _row(line: Line, locale: Any, **claimed: str) -> SimpleNamespace:
    """An invoice's line in a letter's table, formatted for the debtor, with what the letter
    claims on it besides the principal (a formal notice's interest and compensation)."""
    return SimpleNamespace(
        number=line.number, issue_date=day(line.issue_date, locale) if line.issue_date else "",
        due_date=day(line.due_date, locale), days_overdue=line.days_overdue,
        principal=money(line.amount_open, line.currency, locale), **claimed)


def _letterhead(letter: Message, policy: Policy, due: dict[str, Decimal]) -> dict[str, Any]:
    """What every letter says besides its body: who writes to whom, where and when, the
    reference and the transfer QR code of the sums `due`."""
    locale = locale_for(letter.language, letter.country)
    creditor = policy.creditor
    date_text = day(letter.as_of, locale, "long")
    place = _place(creditor.address)
    wording = translations(str(templates_dir()), letter.language)
    reference = f"{letter.customer_ref}-{letter.as_of.isoformat()}"
    return {
        "creditor": SimpleNamespace(name=creditor.name, address=creditor.address,
                                    legal_id=creditor.legal_id, email=creditor.email,
                                    phone=creditor.phone, iban=creditor.iban, bic=creditor.bic),
        "debtor": SimpleNamespace(name=letter.customer_name, id=letter.customer_ref,
                                  address=letter.customer_address,
                                  legal_id=letter.customer_legal_id),
        "place_date": wording.gettext(_PLACE_DATE) % {"place": place, "date": date_text}
        if place else date_text,
        "reference": reference,
        "qr": _transfer_qr(letter, policy, due, reference),
        "as_of": date_text,
        "language": letter.language,
    }


def reminder_context(letter: Message, policy: Policy) -> dict[str, Any]:
    """What the reminder letter says: the amounts open (no interest claimed) and the date to
    pay by (`payment_days` after the letter, like a firmer reminder's)."""
    locale = locale_for(letter.language, letter.country)
    due: dict[str, Decimal] = defaultdict(Decimal)
    rows = []
    for line in letter.lines:
        due[line.currency] += line.amount_open
        rows.append(_row(line, locale))
    return {
        **_letterhead(letter, policy, due),
        "invoices": rows,
        "totals": SimpleNamespace(total=totals(due, locale)),
        "deadline": day(letter.as_of + timedelta(days=policy.payment_days), locale, "long"),
    }


def _transfer_qr(letter: Message, policy: Policy, due: dict[str, Decimal],
                 reference: str) -> str | None:
    """The SEPA transfer QR code of the total the letter demands (principal, interest and
    compensation: the amount printed beside it), as a data: URI for WeasyPrint; None without
    an IBAN or when the total is not all in euros."""
    creditor = policy.creditor
    if not creditor.iban or list(due) != [CURRENCY]:
        return None
    png = qr_png(creditor.name, creditor.iban, creditor.bic, due[CURRENCY],
                 remittance((line.number for line in letter.lines), reference))
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" if png else None


def render_pdf(letter: Message, policy: Policy) -> tuple[bytes, dict[str, Any]]:
    """The letter as an A4 PDF, with the context it was rendered from (the cover email quotes
    its deadline)."""
    from weasyprint import HTML

    try:
        context = (reminder_context(letter, policy) if letter.template == REMINDER_LETTER
                   else letter_context(letter, policy))
    except DunningError as exc:  # e.g. a reference rate not yet in config/rates.yaml
        raise DeliveryError(str(exc)) from None
    html = notice_html(letter, context)
    return bytes(HTML(string=html, base_url=str(templates_dir())).write_pdf()), context


def notice_html(letter: Message, context: dict[str, Any]) -> str:
    """The letter as HTML: `letters/<lang>/<template>.html.j2` when a templates folder has it
    (wording of its own for that language), else the shared layout with the language's catalog."""
    root = str(templates_dir())
    try:
        template = environment(root, letter.language).select_template(
            [f"letters/{letter.language}/{letter.template}.html.j2",
             f"letters/{letter.template}.html.j2"])
    except TemplatesNotFound as exc:
        raise DeliveryError(f"no template {' or '.join(map(str, exc.templates))} in {root}",
                            retryable=False) from None
    html = template.render(context)
    if letter.language == "fr":  # "au nom de %(name)s": "au nom d'Atelier"
        html = elide_before(html, (context["debtor"].name, context["creditor"].name))
    return html


def keep(pdf: bytes, folder: Path, action_id: int, letter: Message) -> Path:
    """Write the PDF atomically in the letters folder; the file is the proof of what was sent."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{letter.as_of.isoformat()}_{action_id:08d}_"
                     f"{safe_name(letter.customer_ref)}_{safe_name(letter.stage)}.pdf")
    write_atomically(path, pdf)
    return path


def letter_date(path: Path | str) -> date | None:
    """The date a kept letter bears, read from its name (see `keep`); None for another file."""
    try:
        return date.fromisoformat(Path(path).name[:10])
    except ValueError:
        return None


def kept(folder: Path, action_id: int, letter: Message) -> Path | None:
    """The letter already kept for this action (an earlier attempt whose email copy failed),
    the first one if there were several."""
    found = sorted(folder.glob(f"*_{action_id:08d}_{safe_name(letter.customer_ref)}_"
                               f"{safe_name(letter.stage)}.pdf"))
    return next((path for path in found if letter_date(path) is not None), None)


def produce(letter: Message, policy: Policy, folder: Path,
            action_id: int) -> tuple[Path, bytes, Message]:
    """The action's letter, kept in the letters folder: the one kept by an earlier attempt when
    there is one (a retry must not make a second letter, dated and reckoned otherwise), else
    rendered now. Returns the file, its bytes and the message as of the letter's date."""
    path = kept(folder, action_id, letter)
    if path is not None:
        dated = letter_date(path)
        assert dated is not None
        return path, path.read_bytes(), replace(letter, as_of=dated)
    pdf, _ = render_pdf(letter, policy)
    return keep(pdf, folder, action_id, letter), pdf, letter


def deadline(letter: Message, policy: Policy) -> str:
    """The date the letter gives the debtor to pay by, in the debtor's language."""
    locale = locale_for(letter.language, letter.country)
    return day(letter.as_of + timedelta(days=policy.letters.deadline_days), locale, "long")
