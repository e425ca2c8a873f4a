"""The SEPA credit transfer QR code (EPC069-12, "GiroCode"): a debtor's banking app scans it
and fills in the payee, IBAN, BIC, amount and remittance text of the transfer.

The payload is EPC069-12's version 002 (the BIC is optional), drawn by zxing-cpp as a PNG, the
only image format every email client shows (SVG is not; data: URIs are blocked, so emails carry
it as an inline attachment referenced by `cid:`)."""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
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
MAX_PAYLOAD = 331  # bytes
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
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT or not _valid(iban):
        return None
    return _png(_SPACES.sub(" ", name).strip()[:MAX_NAME].rstrip(), iban_number.compact(iban),
                bic.replace(" ", "").upper() if bic else None, amount, text[:MAX_TEXT])


@lru_cache(maxsize=16)  # the creditor's one or two IBANs, checked once rather than per message
def _valid(iban: str) -> bool:
    return bool(iban_number.is_valid(iban))


def epc_payload(name: str, iban: str, bic: str | None, amount: Decimal, text: str) -> bytes:
    """The payload EPC069-12 asks for (version 002): service tag, version, character set
    (2: ISO 8859-1 when everything fits in it, else 1: UTF-8), SEPA credit transfer, BIC, name,
    IBAN, amount in euros (at most two decimals, no trailing zero), purpose, reference, text;
    trailing empty lines left out."""
    cents = f"{amount.quantize(MIN_AMOUNT):f}"
    figure = cents.rstrip("0").rstrip(".") if "." in cents else cents
    fields = ["BCD", "002", "2", "SCT", bic or "", name, iban, f"EUR{figure}", "", "", text]
    content = "\n".join(fields).rstrip("\n")
    try:
        return content.encode("latin-1")
    except UnicodeEncodeError:
        fields[2] = "1"
        return "\n".join(fields).rstrip("\n").encode("utf-8")


@lru_cache(maxsize=256)
def _png(name: str, iban: str, bic: str | None, amount: Decimal, text: str) -> bytes | None:
    """The code, error correction M as EPC069-12 asks, drawn by zxing-cpp's encoder (C++,
    about 0.5 ms a code). The same payload twice in a process is drawn once."""
    import zxingcpp

    payload = epc_payload(name, iban, bic, amount, text)
    if len(payload) > MAX_PAYLOAD:  # a name and text far outside Latin-1
        return None
    code = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    image = code.to_image(scale=1, add_quiet_zones=True)  # a byte a module, 4-module margin
    height, width = image.shape
    # zxing-cpp's Image has the buffer protocol, which its stubs do not declare.
    return png(bytes(memoryview(image)), width, height, SCALE)  # type: ignore[arg-type]


# A black-and-white module (0 or 255) as two letters, then as `scale` bits of a PNG row.
_LETTERS = bytes.maketrans(bytes([0, 255]), b"ab")


def png(modules: bytes, width: int, height: int, scale: int = 1) -> bytes:
    """Black-and-white 8-bit modules (0 or 255), row after row, as a 1-bit greyscale PNG of
    `scale` pixels a module: a row of modules is turned into bits once and repeated, eight
    times less to compress than 8 bits a pixel."""
    pixels = width * scale
    pad = -pixels % 8
    stride = (pixels + pad) // 8
    bits = modules.translate(_LETTERS).replace(b"a", b"0" * scale).replace(b"b", b"1" * scale)
    light = b"1" * pad
    rows = [(b"\x00"  # filter type 0
             + int(bits[y * pixels:(y + 1) * pixels] + light, 2).to_bytes(stride, "big")) * scale
            for y in range(height)]
    width, height = pixels, height * scale

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + chunk(b"IEND", b""))


def content_id(png: bytes) -> str:
    """The Content-ID of the QR code's image in an email (RFC 2392), the same for the same
    image."""
    return f"sepa-qr.{hashlib.sha1(png).hexdigest()[:16]}@dunning"
