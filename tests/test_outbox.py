"""The outbox writes messages as .eml files by hand (the stdlib's generator is slow): any mail
reader must read back exactly what was rendered."""

from __future__ import annotations

import email
from email import policy as email_policy
from pathlib import Path

import pytest

from dunning.channels.message import Attachment, Rendered
from dunning.channels.outbox import Outbox, encode_header
from dunning.policy import default_policy_path, load_policy


@pytest.mark.parametrize("subject", [
    "Rappel : facture échue F-2026-0001 — Atelier Exemple",
    "Zahlungserinnerung: Rechnung über 1.500,00 € fällig seit 30 Tagen (Müller & Söhne GmbH)",
    "Plain ASCII subject",
    "日本語の件名" * 8,
])
def test_a_written_message_reads_back_as_rendered(tmp_path: Path, subject: str) -> None:
    outbox = Outbox(tmp_path, load_policy(default_policy_path()))
    pdf = bytes(range(256)) * 50
    message = Rendered(subject=subject, text="Bonjour,\nla facture reste due : 1 500,00 €.\n",
                       html="<p>Bonjour,</p><p>1&nbsp;500,00&nbsp;€</p>",
                       recipients=("a@x.example", "b@y.example"),
                       attachments=(Attachment("mise-en-demeure.pdf", pdf, "application/pdf"),))
    name = outbox.send(message, 7, "2026-11-02:formal_notice:1:abc").removeprefix("outbox:")
    parsed = email.message_from_bytes((tmp_path / name).read_bytes(), policy=email_policy.default)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "Atelier Exemple — Service recouvrement"
    assert parsed["From"].addresses[0].addr_spec == "recouvrement@atelier-exemple.example"
    assert [a.addr_spec for a in parsed["To"].addresses] == ["a@x.example", "b@y.example"]
    assert parsed["X-Dunning-Action"] == "2026-11-02:formal_notice:1:abc"
    assert parsed.get_content_type() == "multipart/mixed"
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content() == message.text
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None and html.get_content() == message.html
    (attached,) = list(parsed.iter_attachments())
    assert attached.get_filename() == "mise-en-demeure.pdf"
    assert attached.get_content() == pdf
    assert parsed.defects == [] and all(not p.defects for p in parsed.walk())


def test_long_headers_are_folded_into_short_encoded_words() -> None:
    encoded = encode_header("Relance — " + "é" * 100)
    assert all(len(line.strip()) <= 75 for line in encoded.split("\n"))
    assert str(email.header.make_header(email.header.decode_header(encoded))) == \
        "Relance — " + "é" * 100
