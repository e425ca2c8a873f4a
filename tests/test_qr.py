"""Pay in one scan: the SEPA credit transfer QR code (EPC069-12) of every email and letter.

Each image is decoded (zxing-cpp's reader, from the PNG or the PDF's image) and its payload
compared with the one EPC069-12 describes, written out here by hand: error correction level M,
and any other payload (another amount, name, text) does not match."""

from __future__ import annotations

import email
import email.policy
import io
from dataclasses import replace
from datetime import date
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from pypdf import PdfReader

from dunning import law
from dunning.channels.email import Renderer
from dunning.channels.formatting import locale_for, money
from dunning.channels.letter import letter_context, render_pdf
from dunning.channels.message import Attachment, Line, Message
from dunning.channels.outbox import Outbox
from dunning.channels.transfer import MAX_TEXT, epc_payload, qr_png, remittance
from dunning.errors import ConfigError
from dunning.policy import load_policy

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "config" / "policy.yaml")  # Atelier Exemple SAS, FR76 …, AGRIFRPP
AGREED = POLICY.model_copy(update={"law": POLICY.law.model_copy(
    update={"rate": Decimal("12.15")})})


def _message(*amounts: tuple[str, str], template: str = "friendly_reminder",
             language: str = "en") -> Message:
    lines = tuple(Line(f"F2026-{n:04d}", date(2026, 9, 1), date(2026, 10, 1), currency,
                       Decimal(amount), Decimal(amount), 32)
                  for n, (amount, currency) in enumerate(amounts, start=1))
    return Message(customer_ref="C042", customer_name="Orange Bureautique SA", language=language,
                   country="FR", recipients=("ap@x.example",), stage=template, template=template,
                   as_of=date(2026, 11, 2), lines=lines)


def _epc(amount: str, text: str) -> bytes:
    """The payload EPC069-12 asks for: service tag, version 002, character set 2 (ISO 8859-1),
    SEPA credit transfer, BIC, name, IBAN, amount, purpose, reference, text."""
    return (f"BCD\n002\n2\nSCT\nAGRIFRPP\nAtelier Exemple SAS\nFR7630006000011234567890189\n"
            f"EUR{amount}\n\n\n{text}").encode("latin-1")


def _decoded(image: Image.Image) -> bytes:
    """The payload a scanner reads in the image; the code must be a QR code at level M."""
    found = zxingcpp.read_barcode(image.convert("L"))
    assert found is not None and found.format == zxingcpp.BarcodeFormat.QRCode
    assert found.ec_level == "M", "EPC069-12 asks for error correction level M"
    return found.bytes


def test_the_payload_is_epc069_12s() -> None:
    """Version 002, character set 2 (ISO 8859-1) when everything fits in it, else 1 (UTF-8);
    the amount without trailing zeros; empty purpose and reference; no trailing empty line."""
    iban = "FR7630006000011234567890189"
    assert epc_payload("Atelier Exemple SAS", iban, "AGRIFRPP", Decimal("1299.90"),
                       "F-1 F-2") == _epc("1299.9", "F-1 F-2").replace(
                           b"F2026-0001 F2026-0002", b"F-1 F-2")
    assert epc_payload("Atelier Exemple SAS", iban, "AGRIFRPP", Decimal("100.00"),
                       "F-1") == _epc("100", "F-1")
    assert epc_payload("Café Lyon", iban, None, Decimal("0.05"), "") == (
        "BCD\n002\n2\nSCT\n\nCafé Lyon\n" + iban + "\nEUR0.05").encode("latin-1")
    assert epc_payload("Łódź Works", iban, "AGRIFRPP", Decimal("7"), "Faktura ż") == (
        "BCD\n002\n1\nSCT\nAGRIFRPP\nŁódź Works\n" + iban + "\nEUR7\n\n\nFaktura ż"
    ).encode("utf-8")


def _png(attachment: Attachment) -> Image.Image:
    return Image.open(io.BytesIO(attachment.content))


def test_the_email_carries_the_transfer_of_the_open_total() -> None:
    rendered = Renderer(POLICY).render(_message(("1200.50", "EUR"), ("99.40", "EUR")))
    (qr,) = rendered.attachments
    assert qr.mimetype == "image/png" and qr.content_id
    assert _decoded(_png(qr)) == _epc("1299.9", "F2026-0001 F2026-0002")
    assert f'src="cid:{qr.content_id}"' in rendered.html
    caption = rendered.html.split(f"cid:{qr.content_id}")[1]
    assert money(Decimal("1299.90"), "EUR", locale_for("en", "FR")) in caption
    assert "IBAN: FR76 3000 6000 0112 3456 7890 189" in rendered.text, "the text part as before"


@pytest.mark.parametrize(("amounts", "why"), [
    ((("100.00", "USD"),), "not in euros"),
    ((("100.00", "EUR"), ("50.00", "GBP")), "in two currencies"),
    ((("1000000000.00", "EUR"),), "over EPC069-12's 999,999,999.99"),
])
def test_no_qr_code_where_epc_cannot_carry_the_transfer(amounts: tuple[tuple[str, str], ...],
                                                        why: str) -> None:
    rendered = Renderer(POLICY).render(_message(*amounts))
    assert rendered.attachments == (), why
    assert "cid:" not in rendered.html


def test_no_qr_code_without_an_iban() -> None:
    policy = POLICY.model_copy(update={"creditor": POLICY.creditor.model_copy(
        update={"iban": None, "bic": None})})
    rendered = Renderer(policy).render(_message(("100.00", "EUR")))
    assert rendered.attachments == () and "cid:" not in rendered.html


def test_the_eml_shows_the_image_the_html_references(tmp_path: Path) -> None:
    """multipart/alternative: the text, then multipart/related: the HTML and its image."""
    rendered = Renderer(POLICY).render(_message(("100.00", "EUR")))
    outbox = Outbox(tmp_path, POLICY)
    parsed = email.message_from_bytes((tmp_path / outbox.send(rendered, 7, "k").split(":")[1])
                                      .read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    text, related = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, image = related.iter_parts()
    assert html.get_content_type() == "text/html"
    cid = html.get_content().split('src="cid:')[1].split('"')[0]
    assert image["Content-ID"] == f"<{cid}>"
    assert image.get_content_type() == "image/png"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == rendered.attachments[0].content


def test_a_formal_notice_cover_keeps_its_pdf_beside_the_inline_image(tmp_path: Path) -> None:
    pdf = Attachment("notice.pdf", b"%PDF-1.7 x", "application/pdf")
    rendered = Renderer(POLICY).render(_message(("100.00", "EUR"), template="formal_notice"),
                                       {"deadline": "10 November 2026"}, (pdf,))
    content = Outbox(tmp_path, POLICY).serialise(rendered, "k")
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "multipart/related",
        "text/html", "image/png", "application/pdf"]
    assert [p.get_content_disposition() for p in parsed.walk()][-2:] == ["inline", "attachment"]


def test_the_letter_prints_the_transfer_of_the_total_it_demands() -> None:
    notice = _message(("1200.50", "EUR"), ("99.40", "EUR"), template="formal_notice")
    pdf, context = render_pdf(notice, AGREED)
    rule = law.rule_for("FR")
    claims = [law.claim(line.amount_open, line.due_date, notice.as_of, rule,
                        rate=Decimal("12.15")).rounded() for line in notice.lines]
    total = sum((c.principal + c.interest + c.compensation for c in claims), Decimal(0))
    assert total > Decimal("1299.90") + 80, "principal, interest and the compensations"
    (image,) = {i.name: i for i in PdfReader(io.BytesIO(pdf)).pages[0].images}.values()
    amount = f"{total:.2f}".rstrip("0").rstrip(".")
    assert image.image is not None
    assert _decoded(image.image) == _epc(amount, "F2026-0001 F2026-0002")
    assert context["qr"].startswith("data:image/png;base64,")


def test_no_qr_code_in_a_letter_without_an_iban() -> None:
    policy = AGREED.model_copy(update={"creditor": AGREED.creditor.model_copy(
        update={"iban": None, "bic": None})})
    notice = _message(("100.00", "EUR"), template="formal_notice")
    assert letter_context(notice, policy)["qr"] is None
    pdf, _ = render_pdf(notice, policy)
    assert not PdfReader(io.BytesIO(pdf)).pages[0].images


def test_the_remittance_text_is_the_invoice_numbers_cut_between_numbers() -> None:
    assert remittance(["F1", " F 2\n", ""], "C042-2026-11-02") == "F1 F 2"
    assert remittance([""], "C042-2026-11-02") == "C042-2026-11-02", "no number: the reference"
    numbers = [f"FACT-2026-{n:05d}" for n in range(40)]  # 15 characters each
    text = remittance(numbers, "C042-2026-11-02")
    assert len(text) <= MAX_TEXT
    assert text.startswith("C042-2026-11-02 FACT-2026-00000 ")
    assert text.split(" ")[1:] == numbers[:len(text.split(" ")) - 1], "whole numbers, in order"
    assert len(text) + 16 > MAX_TEXT, "as many as fit"


@pytest.mark.parametrize("amount", ["0", "0.004", "-5", "1000000000"])
def test_amounts_outside_epc069_12_have_no_qr_code(amount: str) -> None:
    assert qr_png("A", "FR7630006000011234567890189", None, Decimal(amount), "F1") is None


def test_a_long_name_is_cut_to_epc069_12s_70_characters() -> None:
    png = qr_png("Atelier Exemple SAS" + "x" * 80, "FR76 3000 6000 0112 3456 7890 189",
                 "AGRIFRPP", Decimal("10"), "F1")
    assert png is not None
    expected = _epc("10", "F1").replace(b"Atelier Exemple SAS",
                                        b"Atelier Exemple SAS" + b"x" * 51)
    assert _decoded(Image.open(io.BytesIO(png))) == expected


@pytest.mark.parametrize(("field", "value", "said"), [
    ("iban", "FR76 3000 6000 0112 3456 7890 188", "creditor.iban: 'FR76 3000 6000 0112 3456 "
                                                  "7890 188' is not a valid IBAN"),
    ("bic", "AGRIFRP", "creditor.bic: 'AGRIFRP' is not a valid BIC"),
])
def test_a_policy_with_a_wrong_iban_or_bic_is_refused(tmp_path: Path, field: str, value: str,
                                                      said: str) -> None:
    text = (REPO / "config" / "policy.yaml").read_text(encoding="utf-8")
    original = {"iban": "FR76 3000 6000 0112 3456 7890 189", "bic": "AGRIFRPP"}[field]
    assert original in text
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(original, value), encoding="utf-8")
    with pytest.raises(ConfigError, match=said):
        load_policy(path)


def test_an_identical_statement_is_drawn_once() -> None:
    renderer = Renderer(POLICY)
    first = renderer.render(_message(("100.00", "EUR")))
    again = renderer.render(replace(_message(("100.00", "EUR")), customer_name="Other"))
    assert first.attachments[0].content is again.attachments[0].content


def test_a_payload_over_epc069_12s_331_bytes_has_no_qr_code() -> None:
    """A name and text in Chinese are encoded in UTF-8, three bytes a character: too long."""
    assert qr_png("中" * 70, "FR7630006000011234567890189", "AGRIFRPP", Decimal("10"),
                  "中" * 140) is None
    assert qr_png("中" * 70, "FR7630006000011234567890189", "AGRIFRPP", Decimal("10"),
                  "中" * 10) is not None


def test_an_amount_is_rounded_to_the_cent_before_its_range_is_checked() -> None:
    assert qr_png("A", "FR7630006000011234567890189", None, Decimal("999999999.995"),
                  "F1") is None
    assert qr_png("A", "FR7630006000011234567890189", None, Decimal("0.005"), "F1") is None
    assert qr_png("A", "FR7630006000011234567890189", None, Decimal("0.0051"), "F1")
