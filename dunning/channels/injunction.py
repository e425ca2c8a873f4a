"""Injunction to pay: the court file a creditor's lawyer needs to apply for an *injonction de
payer* (French Code de procédure civile, art. 1405 and following). Nothing is filed: dunning
drafts, a person reviews and files.

For each approved `injunction` action, a folder (and a zip of it) holding:
  1-requete-injonction-de-payer.pdf   the application, drafted in French: the parties (SIREN
                                      checked with python-stdnum), the claim (principal,
                                      interest, compensation) and the facts, dated
  2-factures.csv                      the invoices and the amounts claimed on each
  3-mise-en-demeure.pdf               the formal notice as it was sent
  4-preuve-envoi-mise-en-demeure.pdf  when, how and to whom it was sent (the registered-mail
                                      number and posting date once recorded), with its fingerprint
  4-preuve-envoi-mise-en-demeure.eml  the email itself, when it was written to the outbox
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.fr import siren as siren_number
from stdnum.fr import siret as siret_number
from stdnum.fr import tva as tva_number

from dunning import law, spreadsheet
from dunning.channels.agency.cases import history, latest_notice
from dunning.channels.email import POST_ONLY
from dunning.channels.formatting import day, locale_for
from dunning.channels.letter import letter_context, stage_label
from dunning.channels.message import Message
from dunning.channels.protocol import Claimed, Delivered
from dunning.channels.templating import environment
from dunning.db import transaction
from dunning.dispatch import DispatchResult, dispatch
from dunning.errors import DeliveryError, DunningError
from dunning.files import safe_name
from dunning.policy import Policy
from dunning.posting import postings
from dunning.resources import templates_dir
from dunning.shards import Shard
from dunning.statuses import TransitionEvent

REQUEST = "1-requete-injonction-de-payer.pdf"
INVOICES = "2-factures.csv"
NOTICE = "3-mise-en-demeure.pdf"
PROOF = "4-preuve-envoi-mise-en-demeure"


def siren(legal_id: str | None) -> str:
    """The SIREN in a legal id written as a SIREN, a SIRET or a French VAT number (with or
    without a label: "SIREN 732 829 320", "SIRET 73282932000074", "FR44732829320"), formatted
    "732 829 320". Raises ValueError saying what is wrong."""
    if not legal_id or not legal_id.strip():
        raise ValueError("no legal id (SIREN) recorded")
    compact = re.sub(r"[\s.\-]", "", legal_id).upper()
    vat = re.search(r"FR[0-9A-Z]{2}\d{9}", compact)
    digits = re.sub(r"\D", "", compact)
    try:
        if vat:
            number = tva_number.validate(vat.group())[-9:]
        elif len(digits) == 14:
            number = siret_number.to_siren(siret_number.validate(digits))
        else:
            number = siren_number.validate(digits)
    except StdnumError as exc:
        raise ValueError(f"{legal_id!r} is not a valid SIREN, SIRET or French VAT number "
                         f"({str(exc).lower().rstrip('.')})") from None
    return siren_number.format(number)


def _town(address: str | None) -> str | None:
    """The town of a French postal address ("3 rue X\\n75002 Paris" -> "Paris")."""
    if not address:
        return None
    for part in reversed(re.split(r"[,\n]", address)):
        match = re.search(r"\b\d{5}\s+(.+)$", part.strip())
        if match:
            return re.sub(r"\s+cedex.*$", "", match.group(1), flags=re.IGNORECASE).strip()
    return None


class CourtFileChannel:
    """Builds the court file of each approved injunction action."""

    kind = "injunction"

    def __init__(self, engine: Engine, policy: Policy, folder: Path, outbox_dir: Path) -> None:
        self.engine = engine
        self.policy = policy
        self.folder = folder
        self.outbox_dir = outbox_dir

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered:
        creditor_country = (self.policy.law.country or self.policy.creditor.country).upper()
        debtor_country = (message.country or creditor_country).upper()
        try:
            creditor_siren = siren(self.policy.creditor.legal_id) \
                if self.policy.creditor.country.upper() == "FR" else None
        except ValueError as exc:
            raise DeliveryError(f"creditor.legal_id in the policy: {exc}",
                                retryable=False) from None
        try:
            debtor_siren = siren(message.customer_legal_id) if debtor_country == "FR" else None
        except ValueError as exc:
            # Retried each day: it succeeds once the accounting system has the right number.
            raise DeliveryError(f"customer {message.customer_ref}: {exc}; a French debtor is "
                                "identified by its SIREN in the application: fix legal_id in "
                                "the accounting system") from None
        with transaction(self.engine) as session:
            notice = latest_notice(session, action.customer_id)
            events = history(session, action.customer_id,
                             [line.invoice_ref for line in message.lines])
            posted = postings(session, [notice.id]).get(notice.id) \
                if notice is not None and notice.id is not None else None
        if notice is None:
            raise DeliveryError(f"customer {message.customer_ref}: no formal notice was delivered;"
                                " an application for an injunction to pay rests on one",
                                retryable=False)
        notice_path = Path(notice.document or "")
        try:
            notice_pdf = notice_path.read_bytes()
        except OSError as exc:
            raise DeliveryError(f"the formal notice {notice_path} cannot be read "
                                f"({exc.strerror})") from None

        french = replace(message, language="fr")
        try:
            context = letter_context(french, self.policy)
        except DunningError as exc:
            raise DeliveryError(str(exc)) from None
        locale = locale_for("fr", "FR")
        # Emailed only when it went to an address; posted only as a person recorded it (the
        # registered-mail number and date): the file never implies a sending nobody recorded.
        emailed = notice.provider_id != POST_ONLY
        sent_at: datetime | None = notice.sent_at if emailed else None
        context |= {
            "creditor_siren": creditor_siren,
            "debtor_siren": debtor_siren,
            "debtor_country": debtor_country,
            "foreign_debtor": debtor_country != "FR",
            "court_town": _town(message.customer_address),
            "notice": SimpleNamespace(
                date=day(notice.business_date, locale, "long"),
                sent_at=sent_at.strftime("%d/%m/%Y à %H:%M UTC") if sent_at else "",
                via=(notice.provider_id or "") if emailed else "", file=NOTICE,
                sha256=hashlib.sha256(notice_pdf).hexdigest(), emailed=emailed,
                tracking=posted.tracking if posted else None,
                posted_on=day(posted.posted_on, locale, "long") if posted else None),
            "facts": _facts(events, locale),
            "rule_text": law.rule_for(creditor_country).law,
            "pieces": [
                "Factures impayées listées au décompte (copies à joindre depuis le logiciel "
                "comptable) — relevé : " + INVOICES,
                f"Mise en demeure du {day(notice.business_date, locale, 'long')} — {NOTICE}",
                f"Justificatif d'envoi de la mise en demeure — {PROOF}.pdf"
                + (" et .eml" if (notice.provider_id or "").startswith("outbox:") else "")
                + (f" (recommandé n° {posted.tracking} : joindre la preuve de dépôt et l'avis "
                   "de réception)" if posted else " (aucun dépôt en recommandé enregistré : "
                   "joindre la preuve de dépôt et l'avis de réception)"),
                "Conditions générales de vente applicables (à joindre)",
            ],
            "drafted_on": day(message.as_of, locale, "long"),
        }
        name = f"{message.as_of.isoformat()}_{safe_name(message.customer_ref)}_{action_id:06d}"
        final = self.folder / name
        staging = self.folder / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            (staging / REQUEST).write_bytes(_pdf("injunction/fr/requete.html.j2", context))
            (staging / INVOICES).write_text(_invoices_csv(context), encoding="utf-8")
            (staging / NOTICE).write_bytes(notice_pdf)
            (staging / f"{PROOF}.pdf").write_bytes(_pdf("injunction/fr/preuve.html.j2", context
                                                        | {"recipients": message.recipients}))
            via = notice.provider_id or ""
            if via.startswith("outbox:"):
                eml = self.outbox_dir / via.removeprefix("outbox:")
                if eml.exists():
                    shutil.copyfile(eml, staging / f"{PROOF}.eml")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        archive = self.folder / f"{name}.zip"
        tmp = self.folder / f".{name}.zip.tmp"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(final.iterdir()):
                bundle.write(path, f"{name}/{path.name}")
        os.replace(tmp, archive)
        return Delivered(provider_id=f"court-file:{name}", document=str(archive))


_OUTCOMES = {"promise": "promesse de paiement", "dispute": "contestation",
             "no_answer": "pas de réponse", "wrong_contact": "interlocuteur erroné",
             "paid_claimed": "paiement annoncé", "callback": "rappel demandé"}


_PAUSE_WORDS = {TransitionEvent.PAUSED: "suspension", TransitionEvent.RESUMED: "reprise",
                TransitionEvent.RESOLVED: "fin de litige"}


def _facts(events: list[Any], locale: Any) -> list[SimpleNamespace]:
    """The amicable recovery, as a lawyer reads it: each reminder sent, each call and what
    came of it, each pause (a dispute must not be hidden from the judge)."""
    out = []
    for e in events:
        stage = stage_label(e.stage or "", "fr")
        if e.event == "message" and e.stage and "formal notice" not in e.description:
            what = f"envoi par courrier électronique : {stage}"
        elif e.event == "call":
            outcome = e.description.removeprefix("call outcome: ").split(",")[0]
            detail = e.description.split(",", 1)[1].strip() if "," in e.description else ""
            what = f"appel téléphonique ({_OUTCOMES.get(outcome.replace(' ', '_'), outcome)}" \
                   + (f" : {detail}" if detail else "") + ")"
        elif e.event in _PAUSE_WORDS:
            what = f"{_PAUSE_WORDS[e.event]} — facture {e.invoice_id} : « {e.description} »"
        elif e.event == TransitionEvent.COLLECTED:
            what = f"encaissement partiel — facture {e.invoice_id} : {e.description}"
        else:
            continue
        out.append(SimpleNamespace(date=day(e.date, locale, "long"), what=what))
    return out


def _pdf(template: str, context: dict[str, Any]) -> bytes:
    from weasyprint import HTML

    html = environment(str(templates_dir())).get_template(template).render(context)
    return bytes(HTML(string=html, base_url=str(templates_dir())).write_pdf())


def _invoices_csv(context: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = spreadsheet.writer(out, delimiter=";")
    writer.writerow(["numero", "date_facture", "date_echeance", "jours_de_retard",
                     "principal_du", "interets", "indemnite_forfaitaire"])
    for row in context["invoices"]:
        writer.writerow([row.number, row.issue_date, row.due_date, row.days_overdue,
                         row.principal, row.interest, row.compensation])
    totals = context["totals"]
    writer.writerow(["TOTAL", "", "", "", totals.principal, totals.interest,
                     totals.compensation])
    return out.getvalue()


def build(engine: Engine, policy: Policy, as_of: date, folder: Path, outbox_dir: Path, *,
          dry_run: bool = False, shard: Shard | None = None) -> DispatchResult:
    """Write the court file of every approved injunction action."""
    channel = None if dry_run else CourtFileChannel(engine, policy, folder, outbox_dir)
    return dispatch(engine, policy, channel, as_of, kind="injunction", dry_run=dry_run,
                    shard=shard)
