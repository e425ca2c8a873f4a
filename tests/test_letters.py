"""Formal notices: approved, written as a PDF with the statutory interest and compensation of
each invoice, kept in the letters folder, and sent as an email attachment."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypdf import PdfReader

from tests.conftest import Portfolio
from tests.helpers import as_json, cli, day, outbox, run, work_calls

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def letters_dir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = workdir / "letters"
    monkeypatch.setenv("DUNNING_LETTERS_DIR", str(folder))
    return folder


def _agreed_rate(policy_file: Path, rate: str = "12.15") -> None:
    # The reference rate of 2026-H2 is not in config/rates.yaml yet: a contractual rate applies.
    data = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
    data["law"] = {"rate": rate}
    policy_file.write_text(yaml.safe_dump(data), encoding="utf-8")


def _approved_notice(portfolio: Portfolio, language: str = "en") -> int:
    portfolio.customer("C1", language=language, name="Debtor & Co",
                       country="GB" if language == "en" else "FR")
    portfolio.customers["C1"]["address"] = "12 Main Street | 75001 Paris"
    portfolio.invoice("I1", "C1", due=day(-40), amount="1500.00")
    portfolio.write()
    for n in (0, 7, 12, 19):
        run(day(n))
        work_calls()
    (notice,) = as_json("actions", "--status", "pending_approval")
    assert cli("approve", str(notice["action_id"]), "--by", "Claire").exit_code == 0
    return int(notice["action_id"])


def _pdf_text(data: bytes) -> str:
    return " ".join(" ".join(page.extract_text().split()) for page in
                    PdfReader(io.BytesIO(data)).pages)


def test_an_approved_notice_goes_out_as_a_pdf(portfolio: Portfolio, policy_file: Path,
                                              letters_dir: Path) -> None:
    _agreed_rate(policy_file)
    action_id = _approved_notice(portfolio)
    report = run(day(20))
    assert (report["letters"]["sent"], report["letters"]["failed"]) == (1, 0)
    (path,) = [Path(p) for p in report["letters"]["files"]]
    assert path.parent == letters_dir and path.name.endswith("_C1_formal_notice.pdf")
    text = _pdf_text(path.read_bytes())
    # 60 days overdue at 12.15 %: 1500 x 12.15 % x 60 / 365 = 29.9589 -> 29.96; EUR 40 fixed;
    # total 1500 + 29.96 + 40 = 1569.96
    for expected in ("F-I1", "Debtor & Co", "12 Main Street", "75001 Paris", "29.96", "40.00",
                     "1,569.96", "30 November 2026", "L441-10",
                     "agreed annual rate of 12.15%", "9 November 2026 (second reminder)"):
        assert expected in text, expected
    action = [a for a in as_json("actions") if a["action_id"] == action_id][0]
    assert action["status"] == "sent"
    (cover,) = [m for m in outbox(portfolio) if m.get_content_type() == "multipart/mixed"]
    attached = [p for p in cover.walk() if p.get_content_type() == "application/pdf"]
    assert attached[0].get_filename() == path.name
    assert attached[0].get_payload(decode=True) == path.read_bytes()

    again = run(day(21))
    assert again["letters"]["sent"] == 0, "a notice is sent once"


def test_the_notice_speaks_the_debtors_language(portfolio: Portfolio, policy_file: Path,
                                                letters_dir: Path) -> None:
    _agreed_rate(policy_file)
    _approved_notice(portfolio, language="fr")
    report = run(day(20))
    text = _pdf_text(Path(report["letters"]["files"][0]).read_bytes())
    assert "30 novembre 2026" in text and "29,96" in text and "1 569,96" in text.replace(
        "\u202f", " ").replace("\u00a0", " ")


def test_without_a_known_rate_the_notice_fails_visibly(portfolio: Portfolio,
                                                       letters_dir: Path) -> None:
    action_id = _approved_notice(portfolio)
    report = run(day(20))
    assert report["letters"]["failed"] == 1
    failed: Any = [a for a in as_json("actions", "--status", "failed")
                   if a["action_id"] == action_id][0]
    assert "rate on 2026-07-01 is not known" in failed["last_error"]
    assert failed["attempts"] == 1
    assert not letters_dir.exists() or not list(letters_dir.iterdir())
    assert [m for m in outbox(portfolio) if m.get_content_type() == "multipart/mixed"] == []


def test_a_notice_recalls_the_reminders_of_its_own_invoices(
        portfolio: Portfolio, policy_file: Path, letters_dir: Path) -> None:
    """Day 0 and 7 remind I1; day 15 a pre-due reminder of I2 goes out alone; the notice on I1
    recalls the first two, not I2's."""
    _agreed_rate(policy_file)
    portfolio.customer("C1", name="Debtor & Co", country="GB")
    portfolio.customers["C1"]["address"] = "12 Main Street | 75001 Paris"
    portfolio.invoice("I1", "C1", due=day(-40), amount="1500.00")
    portfolio.invoice("I2", "C1", due=day(20), amount="300.00")
    portfolio.write()
    for n in (0, 7, 12, 15, 19):
        report = run(day(n))
        if n == 15:
            assert report["evaluation"]["entered"] == {"pre_due_reminder": 1}
        work_calls()
    (notice,) = as_json("actions", "--status", "pending_approval")
    assert notice["invoice_ids"] == ["I1"]
    assert cli("approve", str(notice["action_id"]), "--by", "Claire").exit_code == 0
    (path,) = [Path(p) for p in run(day(20))["letters"]["files"]]
    text = _pdf_text(path.read_bytes())
    assert "2 November 2026 (first reminder)" in text
    assert "9 November 2026 (second reminder)" in text
    assert "17 November 2026" not in text and "before the due date" not in text, text
