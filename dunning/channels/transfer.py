"""The SEPA credit transfer QR code (EPC069-12, "GiroCode"): a debtor's banking app scans it
and fills in the payee, IBAN, BIC, amount and remittance text of the transfer.

Drawn with segno's EPC helper (version 002: the BIC is optional), as a PNG, the only image
format every email client shows (SVG is not; data: URIs are blocked, so emails carry it as an
inline attachment referenced by `cid:`)."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache

from stdnum import iban as iban_number

# EPC069-12: a transfer in euros of 0.01 to 999,999,999.99, a payee name of at most 70
# characters, an unstructured remittance text of at most 140.
CURRENCY = "EUR"
MIN_AMOUNT = Decimal("0.01")
MAX_AMOUNT = Decimal("999999999.99")
MAX_NAME = 70
MAX_TEXT = 140
SCALE = 3  # pixels a module: about 160 px for a typical payload, shown as it is (no blur)
_SPACES = re.compile(r"\s+")


def remittance(numbers: Iterable[str], reference: str) -> str:
    """The remittance text: the invoice numbers, separated by a space, when they all fit in the
    140 characters; else the payment reference (the statement that lists every invoice)
    followed by as many whole numbers as fit, in the message's order (the reference alone when
    no invoice has a number). A number is never cut."""
    numbers = [n for n in (_SPACES.sub(" ", number).strip() for number in numbers) if n]
    text = " ".join(numbers)
    if numbers and len(text) <= MAX_TEXT:
        return text
    text = _SPACES.sub(" ", reference).strip()[:MAX_TEXT]
    for number in numbers:
        if len(text) + 1 + len(number) > MAX_TEXT:
            break
        text += " " + number
    return text


def qr_png(name: str, iban: str, bic: str | None, amount: Decimal, text: str) -> bytes | None:
    """The QR code of a transfer as PNG bytes; None when EPC069-12 cannot carry it (an amount
    out of its range, an IBAN that is not one: the policy refuses those when it loads)."""
    amount = amount.quantize(MIN_AMOUNT)  # to the cent, as `formatting.money` writes it
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT or not iban_number.is_valid(iban):
        return None
    return _png(_SPACES.sub(" ", name).strip()[:MAX_NAME].rstrip(), iban_number.compact(iban),
                bic.replace(" ", "").upper() if bic else None, amount, text[:MAX_TEXT])


@lru_cache(maxsize=256)
def _png(name: str, iban: str, bic: str | None, amount: Decimal, text: str) -> bytes | None:
    """Drawing one costs about 8 ms of CPU (segno is pure Python, and tries the 8 masks the QR
    standard asks for; bench/RESULTS.md): the same payload twice in a process is drawn once."""
    from segno.helpers import make_epc_qr

    try:
        qr = make_epc_qr(name=name, iban=iban, amount=amount, text=text, bic=bic)
    except ValueError:  # over EPC069-12's 331 bytes: a name and text far outside Latin-1
        return None
    out = io.BytesIO()
    qr.save(out, kind="png", scale=SCALE, border=4)
    return out.getvalue()


def content_id(png: bytes) -> str:
    """The Content-ID of the QR code's image in an email (RFC 2392), the same for the same
    image."""
    return f"sepa-qr.{hashlib.sha1(png).hexdigest()[:16]}@dunning"
