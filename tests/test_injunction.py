"""Injunction to pay: an approved injunction becomes a court file (folder and zip) with the
application drafted in French, the invoice list, the formal notice and its sending proof."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader
from stdnum.exceptions import InvalidFormat
from stdnum.exceptions import ValidationError as StdnumError

from dunning.channels import injunction
from dunning.channels.injunction import siren
from tests.conftest import Portfolio
from tests.helpers import COURT_LADDER, HYPERLINK, approve_pending, as_json, change_policy, day, run

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def court_dir(workdir: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = workdir / "court"
    monkeypatch.setenv("DUNNING_INJUNCTIONS_DIR", str(folder))
    monkeypatch.setenv("DUNNING_LETTERS_DIR", str(workdir / "letters"))
    # the 2026-H2 reference rate is not in rates.yaml yet
    change_policy(policy_file, stages=COURT_LADDER, law={"rate": "12.15"})
    return folder


def seed(portfolio: Portfolio, legal_id: str = "SIRET 404 833 048 00022",
         country: str = "FR") -> None:
    portfolio.customer("C1", name="Debtor & Co", language="en", country=country)
    portfolio.customers["C1"] |= {"address": "3 rue du Port\n75001 Paris",
                                  "legal_id": legal_id}
    portfolio.invoice("I1", "C1", due=day(-40), amount="1500.00")
    portfolio.invoice("I2", "C1", due=day(-35), amount="700.00", amount_open="200.00")
    portfolio.write()


def up_to_the_court(portfolio: Portfolio) -> None:
    run(day(0))  # friendly reminder
    run(day(1))  # formal notice proposed
    approve_pending("formal_notice")
    assert run(day(2))["letters"]["sent"] == 1
    run(day(5))  # injunction proposed, 3 days after the notice
    approve_pending("injunction")


def _text(data: bytes) -> str:
    text = " ".join(" ".join(page.extract_text().split())
                    for page in PdfReader(io.BytesIO(data)).pages)
    return text.replace("\u202f", " ").replace("\u00a0", " ")


# SQLite only, for the suite's time budget: the other tests of this file cover PostgreSQL.
@pytest.mark.sqlite_only
def test_an_approved_injunction_becomes_a_court_file(portfolio: Portfolio, court_dir: Path,
                                                     workdir: Path) -> None:
    seed(portfolio)
    up_to_the_court(portfolio)
    report = run(day(6))
    assert (report["injunctions"]["sent"], report["injunctions"]["failed"]) == (1, 0)
    (archive,) = [Path(p) for p in report["injunctions"]["files"]]
    assert archive.parent == court_dir and archive.suffix == ".zip"
    folder = archive.with_suffix("")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["1-requete-injonction-de-payer.pdf", "2-factures.csv",
                     "3-mise-en-demeure.pdf", "4-preuve-envoi-mise-en-demeure.eml",
                     "4-preuve-envoi-mise-en-demeure.pdf"]
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(Path(n).name for n in bundle.namelist()) == names
        assert bundle.read(f"{folder.name}/2-factures.csv") == \
            (folder / "2-factures.csv").read_bytes()

    request = _text((folder / "1-requete-injonction-de-payer.pdf").read_bytes())
    # Day 6 is 2026-11-08. I1: 1500 for 46 days at 12.15 % = 22.97; I2: 200 for 41 days =
    # 2.73; EUR 40 for each; total 1700 + 25.70 + 80 = 1805.70.
    for expected in ("Requête en injonction de payer", "Tribunal de commerce de Paris",
                     "Atelier Exemple SAS", "SIREN 732 829 320", "Debtor & Co",
                     "SIREN 404 833 048", "1 700,00 €", "25,70 €", "80,00 €", "1 805,70 €",
                     "8 novembre 2026", "3 novembre 2026", "L441-10", "PAR CES MOTIFS",
                     "F-I1", "F-I2", "mise en demeure", "rien n'a été déposé",
                     "2 novembre 2026 — envoi par courrier électronique : premier rappel"):
        assert expected in request, expected
    assert "overdue" not in request, "the application is in French throughout"

    letters = list((workdir / "letters").glob("*.pdf"))
    assert (folder / "3-mise-en-demeure.pdf").read_bytes() == letters[0].read_bytes()
    proof = _text((folder / "4-preuve-envoi-mise-en-demeure.pdf").read_bytes())
    assert hashlib.sha256(letters[0].read_bytes()).hexdigest() in proof.replace(" ", "")
    assert "ap@c1.example" in proof
    eml = (folder / "4-preuve-envoi-mise-en-demeure.eml").read_bytes()
    assert b"application/pdf" in eml

    with (folder / "2-factures.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert [r[0] for r in rows[1:]] == ["F-I1", "F-I2", "TOTAL"]

    assert [(a["status"], a["document"]) for a in as_json("actions")
            if a["kind"] == "injunction"] == [("sent", str(archive))]
    assert run(day(6))["injunctions"]["sent"] == 0, "one court file per approval"


@pytest.mark.sqlite_only
def test_the_invoice_list_shows_a_formula_as_text(portfolio: Portfolio, court_dir: Path) -> None:
    """A lawyer opens 2-factures.csv in a spreadsheet: an invoice number written as a formula
    must not run there (OWASP, CSV injection)."""
    seed(portfolio)
    portfolio.invoices["I1"]["number"] = HYPERLINK
    portfolio.invoices["I2"]["number"] = "-2+3"
    portfolio.write()
    up_to_the_court(portfolio)
    (archive,) = run(day(6))["injunctions"]["files"]
    with (Path(archive).with_suffix("") / "2-factures.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    assert [r[0] for r in rows[1:]] == ["'" + HYPERLINK, "'-2+3", "TOTAL"]
    assert rows[1][3] == "46", "numbers stay numbers"


@pytest.mark.sqlite_only
def test_an_invalid_siren_stops_the_file_until_it_is_fixed(portfolio: Portfolio,
                                                           court_dir: Path) -> None:
    seed(portfolio, legal_id="SIREN 404 833 049")  # wrong check digit
    up_to_the_court(portfolio)
    report = run(day(6))
    assert report["injunctions"]["failed"] == 1
    (error,) = report["injunctions"]["errors"]
    assert "customer C1" in error["error"] and "not a valid SIREN" in error["error"]
    assert not court_dir.exists() or not any(court_dir.iterdir()), "nothing half-written"

    portfolio.customers["C1"]["legal_id"] = "404833048"
    portfolio.write()
    assert run(day(7))["injunctions"]["sent"] == 1


@pytest.mark.sqlite_only
def test_a_foreign_debtor_is_flagged_for_the_lawyer(portfolio: Portfolio,
                                                    court_dir: Path) -> None:
    seed(portfolio, legal_id="BE0403170701", country="BE")
    up_to_the_court(portfolio)
    report = run(day(6))
    (archive,) = [Path(p) for p in report["injunctions"]["files"]]
    request = _text((archive.with_suffix("") / "1-requete-injonction-de-payer.pdf").read_bytes())
    assert "BE0403170701" in request and "1896/2006" in request


@pytest.mark.parametrize(("given", "expected"), [
    ("732829320", "732 829 320"),
    ("SIREN 732 829 320", "732 829 320"),
    ("SIRET 73282932000074", "732 829 320"),
    ("FR44732829320", "732 829 320"),
    ("RCS Lyon 732 829 320", "732 829 320"),
])
def test_siren_is_read_from_any_french_identifier(given: str, expected: str) -> None:
    assert siren(given) == expected


@pytest.mark.parametrize("given", ["732829321", "73282932", "", None, "FR00732829320"])
def test_a_wrong_siren_is_refused(given: str | None) -> None:
    with pytest.raises(ValueError):
        siren(given)


@pytest.mark.parametrize("error", [StdnumError("the registry says no"),
                                   InvalidFormat("the registry says no")])
def test_a_refusal_says_what_the_validator_said(monkeypatch: pytest.MonkeyPatch,
                                                error: StdnumError) -> None:
    # stdnum's base ValidationError has no `message` attribute, and a message given to a subclass
    # is in its args, not in the class's `message`: the reason is str(exc).
    def refuse(number: str) -> str:
        raise error

    monkeypatch.setattr(injunction.siren_number, "validate", refuse)
    with pytest.raises(ValueError, match=r"\(the registry says no\)"):
        siren("732829320")
