"""Registered post: the formal notices to post, printed as one PDF with the deposit list the post
office stamps, and the posting a person records for each (the letter's proof of sending: the
registered-mail number and the date it was handed over, never the clock of a machine)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from dunning import spreadsheet
from dunning.channels.letter import REMINDER_LETTER, letter_date
from dunning.db import transaction
from dunning.errors import ConfigError, ConflictError, DunningError, NotFoundError
from dunning.files import write_atomically
from dunning.models import Action, Customer, LetterPosting
from dunning.shards import Shard, in_shard
from dunning.statuses import ActionStatus

POSTABLE = (ActionStatus.SENT, ActionStatus.BOUNCED, ActionStatus.DROPPED)
TRACKING_LENGTH = 64  # the column's; La Poste's numbers have 13 characters, others fewer than 30
# `mail`: registered (a formal notice: on the post office's deposit list, its number in
# `tracking`) or ordinary (a reminder letter replacing a bounced email).
DEPOSIT_COLUMNS = ["recipient", "address", "reference", "action_id", "customer_id",
                   "letter_date", "tracking", "mail"]


@dataclass(frozen=True)
class ToPost:
    """A delivered formal notice not yet recorded as posted."""

    action_id: int
    customer_ref: str
    recipient: str
    address: str | None
    document: str
    delivered_on: date  # the business date it was produced and queued for posting
    letter_date: date  # the date it bears
    registered: bool = True  # a formal notice; False: a reminder letter, by ordinary mail

    @property
    def mail(self) -> str:
        """How it is posted: `registered` (a formal notice) or `ordinary`."""
        return "registered" if self.registered else "ordinary"

    @property
    def reference(self) -> str:
        """Our reference, as printed in the letter."""
        return f"{self.customer_ref}-{self.letter_date.isoformat()}"

    def address_line(self) -> str:
        """The postal address on one line (the snapshot separates its lines with "\\n")."""
        return ", ".join(part.strip() for part in (self.address or "").splitlines()
                         if part.strip())

    def as_dict(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "customer_id": self.customer_ref,
                "recipient": self.recipient, "address": self.address_line(),
                "reference": self.reference, "letter_date": self.letter_date.isoformat(),
                "delivered_on": self.delivered_on.isoformat(), "document": self.document,
                "mail": self.mail}


def _unposted() -> Any:
    """The delivered formal notices without a posting record."""
    return (col(Action.kind) == "letter", col(Action.status).in_(POSTABLE),
            col(Action.document).is_not(None),
            ~select(col(LetterPosting.id)).where(col(LetterPosting.action_id) == Action.id)
            .exists())


def to_post(session: Session, on: date | None = None) -> list[ToPost]:
    """The formal notices to post (those delivered on business date `on`, when given), by
    customer then action."""
    query = (select(col(Action.id), col(Customer.external_id), col(Customer.name),
                    col(Customer.address), col(Action.document), col(Action.attempted_on),
                    col(Action.business_date), col(Action.template))
             .join(Customer, col(Customer.id) == Action.customer_id)
             .where(*_unposted())
             .order_by(col(Customer.external_id), col(Action.id)))
    if on is not None:
        query = query.where(col(Action.attempted_on) == on)
    out = []
    for action_id, customer_ref, name, address, document, attempted_on, decided_on, template in (
            session.execute(query)):
        if action_id is None or document is None:  # never: narrows the columns' types
            continue
        delivered_on = attempted_on or decided_on
        out.append(ToPost(action_id, customer_ref, name, address, document, delivered_on,
                          letter_date(document) or delivered_on,
                          registered=template != REMINDER_LETTER))
    return out


def awaiting_post(engine: Engine, shard: Shard | None = None) -> int:
    """How many delivered formal notices are not yet recorded as posted."""
    with transaction(engine) as session:
        return int(session.execute(
            select(func.count()).select_from(Action)
            .where(*_unposted(), *in_shard(Action.customer_id, shard))).scalar_one())


@dataclass(frozen=True)
class Printed:
    """What `print_day` wrote: one PDF of the day's letters and their deposit list."""

    on: date
    letters: list[ToPost]
    pdf: Path | None = None
    deposit_list: Path | None = None
    pages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.on.isoformat(), "letters": len(self.letters),
                "pages": self.pages, "pdf": str(self.pdf) if self.pdf else None,
                "deposit_list": str(self.deposit_list) if self.deposit_list else None,
                "without_address": [letter.action_id for letter in self.letters
                                    if not letter.address_line()],
                "rows": [letter.as_dict() for letter in self.letters]}


def print_day(engine: Engine, on: date, out: Path) -> Printed:
    """Merge the letters delivered on `on` and not yet posted into the PDF `out`, and write
    their deposit list beside it (same name, `.csv`); with none to post, write nothing."""
    from pypdf import PdfReader, PdfWriter

    if out.suffix.lower() != ".pdf":
        raise ConfigError(f"{out}: the letters are written as a PDF file; name it *.pdf")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give the PDF file to write")
    with transaction(engine) as session:
        letters = to_post(session, on)
    if not letters:
        return Printed(on, letters)
    merged = PdfWriter()
    for letter in letters:
        try:
            merged.append(PdfReader(letter.document))
        except (OSError, ValueError) as exc:
            raise DunningError(f"the formal notice of action {letter.action_id} "
                               f"({letter.document}) cannot be read ({exc}); nothing was "
                               "written") from None
    pdf = io.BytesIO()
    merged.write(pdf)
    rows = io.StringIO()
    writer = spreadsheet.writer(rows)
    writer.writerow(DEPOSIT_COLUMNS)
    for letter in letters:
        writer.writerow([letter.recipient, letter.address_line(), letter.reference,
                         letter.action_id, letter.customer_ref,
                         letter.letter_date.isoformat(), "", letter.mail])
    deposit_list = out.with_suffix(".csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, pdf.getvalue())
    write_atomically(deposit_list, rows.getvalue().encode("utf-8"))
    return Printed(on, letters, out, deposit_list, len(merged.pages))


@dataclass(frozen=True)
class Posting:
    """A posting record, and whether this call made it (False: it was already there)."""

    action_id: int
    tracking: str | None  # None: a reminder letter, by ordinary mail
    posted_on: date
    by: str
    recorded: bool

    def as_dict(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "tracking": self.tracking,
                "posted_on": self.posted_on.isoformat(), "by": self.by,
                "recorded": self.recorded}


def _compact(tracking: str) -> str:
    """A registered-mail number as stored: without spaces, in capitals ("1a 234 5" -> "1A2345"),
    so that the number copied from the receipt with or without its spaces is the same."""
    return "".join(tracking.split()).upper()


def record_posting(session: Session, action_id: int, tracking: str | None, posted_on: date,
                   by: str, business_day: date) -> Posting:
    """Record that the letter of `action_id` was posted on `posted_on`: a formal notice by
    registered mail under `tracking`, a reminder letter by ordinary mail (no number); the same
    record again changes nothing. Refuses (nothing recorded) what cannot be true: not a
    delivered letter, a formal notice without a number, an overlong number, a date after the
    business date or before the letter, another number for a letter already posted, a number
    already given to another letter."""
    action = session.get(Action, action_id)
    if action is None:
        raise NotFoundError(f"no action {action_id}", what="action")
    if action.kind != "letter":
        raise ConflictError(f"action {action_id} is a {action.kind} action, not a formal "
                            "notice: only letters are posted. Nothing was recorded.")
    tracking = _compact(tracking or "") or None
    if tracking is None and action.template != REMINDER_LETTER:
        raise ConfigError("the registered-mail number is empty; give the number on the "
                          "post office's receipt. Nothing was recorded.")
    if tracking is not None and (len(tracking) > TRACKING_LENGTH or not tracking.isprintable()):
        raise ConfigError(f"{tracking[:TRACKING_LENGTH]!r} is not a registered-mail number (at "
                          f"most {TRACKING_LENGTH} printable characters). Nothing was recorded.")
    # Produced: sent, or its email copy bounced (the paper letter is what the posting proves).
    if action.status not in POSTABLE or not action.document:
        raise ConflictError(f"the formal notice of action {action_id} is {action.status}, not "
                            "produced yet: it is posted once a run has delivered it. Nothing "
                            "was recorded.")
    dated = letter_date(action.document) or action.attempted_on or action.business_date
    if posted_on > business_day:
        raise ConfigError(f"the posting date {posted_on} is after the business date "
                          f"{business_day} (the last run's): a letter is recorded as posted "
                          "once it is. Nothing was recorded.")
    if posted_on < dated:
        raise ConfigError(f"the posting date {posted_on} is before the letter's date {dated}: "
                          "it cannot have been posted then. Nothing was recorded.")
    existing = session.execute(
        select(LetterPosting).where(col(LetterPosting.action_id) == action_id)
    ).scalars().first()
    if existing is not None:
        if existing.tracking == tracking and existing.posted_on == posted_on:
            return Posting(action_id, existing.tracking, existing.posted_on, existing.by, False)
        raise ConflictError(f"the formal notice of action {action_id} is already recorded as "
                            f"posted on {existing.posted_on} under number {existing.tracking} "
                            f"(by {existing.by}). Nothing was recorded.")
    other = None if tracking is None else session.execute(
        select(col(LetterPosting.action_id))
        .where(col(LetterPosting.tracking) == tracking)).scalars().first()
    if other is not None:
        raise ConflictError(f"the registered-mail number {tracking} is already recorded for the "
                            f"formal notice of action {other}; each letter has its own. Nothing "
                            "was recorded.")
    session.add(LetterPosting(action_id=action_id, tracking=tracking, posted_on=posted_on,
                              by=by))
    return Posting(action_id, tracking, posted_on, by, True)


def postings(session: Session, action_ids: list[int]) -> dict[int, LetterPosting]:
    """The posting records of these actions."""
    found: dict[int, LetterPosting] = {}
    for start in range(0, len(action_ids), 2000):
        for row in session.execute(select(LetterPosting).where(
                col(LetterPosting.action_id).in_(action_ids[start:start + 2000]))).scalars():
            found[row.action_id] = row
    return found
