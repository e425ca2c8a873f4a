"""Formal notices go by post: every delivered notice is kept and queued for registered mail, an
email copy goes only to a customer with an address; `dunning letters print` merges a day's
letters to post with their deposit list, `dunning letter-posted` records the posting, and the
court file's proof cites that record."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from tests.conftest import Portfolio, query
from tests.helpers import COURT_LADDER, HYPERLINK, as_json, change_policy, cli, day, outbox, run

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def letters_dir(workdir: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = workdir / "letters"
    monkeypatch.setenv("DUNNING_LETTERS_DIR", str(folder))
    monkeypatch.setenv("DUNNING_INJUNCTIONS_DIR", str(workdir / "court"))
    # the 2026-H2 reference rate is not in rates.yaml yet
    change_policy(policy_file, stages=COURT_LADDER, law={"rate": "12.15"})
    return folder


def seed(portfolio: Portfolio) -> None:
    """C1 has an email address, C2 none (and an address a spreadsheet would run)."""
    portfolio.customer("C1", name="Alpha SARL", language="fr")
    portfolio.customer("C2", name="Beta SAS", language="fr", email=None)
    portfolio.customers["C1"] |= {"address": "3 rue du Port | 75001 Paris",
                                  "legal_id": "SIRET 404 833 048 00022"}
    portfolio.customers["C2"] |= {"address": f"{HYPERLINK} | 69002 Lyon",
                                  "legal_id": "SIRET 404 833 048 00022"}
    portfolio.invoice("I1", "C1", due=day(-40), amount="1500.00")
    portfolio.invoice("I2", "C2", due=day(-40), amount="900.00")
    portfolio.write()


def notices_delivered(portfolio: Portfolio) -> dict[str, int]:
    """Up to the formal notices, approved on day 1 and produced on day 2: their action ids."""
    seed(portfolio)
    run(day(0))
    # C2's reminder could not go (no email address): the credit manager moves on to the post
    (failed,) = as_json("actions", "--status", "failed")
    assert failed["customer_id"] == "C2"
    assert cli("move-on", str(failed["action_id"]), "--by", "Claire", "--reason",
               "no email address: by registered post").exit_code == 0
    run(day(1))
    pending = [a for a in as_json("actions", "--status", "pending_approval")
               if a["stage"] == "formal_notice"]
    for action in pending:
        assert cli("approve", str(action["action_id"]), "--by", "Claire").exit_code == 0
    return {a["customer_id"]: int(a["action_id"]) for a in pending}


def letters() -> dict[str, dict[str, Any]]:
    return {a["customer_id"]: a for a in as_json("actions") if a["kind"] == "letter"}


def _pages(path: Path) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


def test_a_notice_goes_by_post_with_or_without_email(portfolio: Portfolio,
                                                     letters_dir: Path) -> None:
    ids = notices_delivered(portfolio)
    report = run(day(2))
    assert (report["letters"]["sent"], report["letters"]["failed"]) == (2, 0)
    assert report["letters"]["post_only"] == 1 and report["letters"]["to_post"] == 2
    assert len(report["letters"]["files"]) == 2
    shown = letters()
    for customer in ("C1", "C2"):
        assert shown[customer]["status"] == "sent" and shown[customer]["to_post"] is True
        assert Path(shown[customer]["document"]).parent == letters_dir
        assert Path(shown[customer]["document"]).exists()
    assert shown["C2"]["provider_id"] == "no email: post only"
    assert shown["C2"]["tracking"] is None and shown["C2"]["posted_on"] is None
    covers = [m for m in outbox(portfolio) if m.get_content_type() == "multipart/mixed"]
    assert [m["To"] for m in covers] == ["ap@c1.example"], "the email copy only to an address"
    assert shown["C1"]["provider_id"].startswith("outbox:")
    table = cli("actions")
    assert "2 formal notice(s) to post" in table.stderr

    # The next runs do not produce them again, and still count them to post.
    again = run(day(3))
    assert again["letters"]["sent"] == 0 and again["letters"]["to_post"] == 2
    assert sorted(p.name for p in letters_dir.iterdir()) == sorted(
        Path(shown[c]["document"]).name for c in ("C1", "C2"))
    assert ids == {c: shown[c]["action_id"] for c in ("C1", "C2")}


def test_print_the_days_letters_and_record_their_posting(portfolio: Portfolio,
                                                         letters_dir: Path, workdir: Path,
                                                         db_url: str) -> None:
    ids = notices_delivered(portfolio)
    run(day(2))
    out = workdir / "post" / "2026-11-04.pdf"
    result = cli("letters", "print", "--date", day(2).isoformat(), "--out", str(out), "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    printed = json.loads(result.stdout)
    shown = letters()
    pages = {c: _pages(Path(shown[c]["document"])) for c in ("C1", "C2")}
    merged = _pages(out)
    assert merged == pages["C1"] + pages["C2"], "by customer, each letter whole"
    assert printed["letters"] == 2 and printed["pages"] == len(merged)
    assert "Alpha SARL" in merged[0] and "Beta SAS" in merged[len(pages["C1"])]
    with out.with_suffix(".csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["recipient"], r["reference"], r["action_id"]) for r in rows] == [
        ("Alpha SARL", f"C1-{day(2)}", str(ids["C1"])),
        ("Beta SAS", f"C2-{day(2)}", str(ids["C2"]))]
    assert rows[0]["address"] == "3 rue du Port, 75001 Paris"
    assert rows[1]["address"] == f"'{HYPERLINK}, 69002 Lyon", "a formula is shown as text"
    assert f"C1-{day(2)}" in " ".join(pages["C1"]), "the reference is the letter's own"

    # Another day has nothing to post: nothing is written.
    other = workdir / "post" / "other.pdf"
    nothing = cli("letters", "print", "--date", day(3).isoformat(), "--out", str(other))
    assert nothing.exit_code == 0 and "no formal notice to post" in nothing.stdout
    assert not other.exists() and not other.with_suffix(".csv").exists()

    # Refused, nothing recorded (exit 2): what cannot be a posting of a delivered letter.
    email_action = [a for a in as_json("actions") if a["kind"] == "email"][0]["action_id"]
    c2 = str(ids["C2"])
    for args, says in [
        (["999999", "--tracking", "1A1", "--on", str(day(2))], "no action 999999"),
        ([str(email_action), "--tracking", "1A1", "--on", str(day(2))], "not a formal notice"),
        ([c2, "--tracking", "   ", "--on", str(day(2))], "number is empty"),
        ([c2, "--tracking", "X" * 65, "--on", str(day(2))], "at most 64"),
        ([c2, "--tracking", "1A1", "--on", str(day(3))], "after the business date"),
        ([c2, "--tracking", "1A1", "--on", str(day(1))], "before the letter's date"),
        ([c2, "--tracking", "1A1", "--on", "04/11/2026"], "is not a date"),
    ]:
        refused = cli("letter-posted", *args, "--by", "Paul")
        assert refused.exit_code == 2, (args, refused.stdout, refused.stderr)
        assert says in refused.stderr, (says, refused.stderr)
    assert cli("letter-posted", c2, "--tracking", "1A1", "--on", str(day(2)),
               "--by", " ").exit_code == 2
    assert query(db_url, "SELECT count(*) FROM letter_posting")[0][0] == 0

    posted = cli("letter-posted", c2, "--tracking", "1a 234 567 8901 2", "--on", str(day(2)),
                 "--by", "Paul", "--json")
    assert posted.exit_code == 0, posted.stderr
    assert json.loads(posted.stdout) == {"action_id": ids["C2"], "tracking": "1A23456789012",
                                         "posted_on": str(day(2)), "by": "Paul",
                                         "recorded": True}
    same = cli("letter-posted", c2, "--tracking", "1A23456789012", "--on", str(day(2)),
               "--by", "Paul")
    assert same.exit_code == 0 and "nothing changed" in same.stdout
    for args, says in [([c2, "--tracking", "1A999"], "already recorded as posted"),
                       ([str(ids["C1"]), "--tracking", "1A23456789012"], "already recorded for")]:
        refused = cli("letter-posted", *args, "--on", str(day(2)), "--by", "Paul")
        assert refused.exit_code == 2 and says in refused.stderr, refused.stderr
    assert query(db_url, "SELECT action_id, tracking, by FROM letter_posting") == [
        (ids["C2"], "1A23456789012", "Paul")]
    shown = letters()
    assert (shown["C2"]["to_post"], shown["C2"]["tracking"], shown["C2"]["posted_on"]) == (
        False, "1A23456789012", str(day(2)))
    assert shown["C1"]["to_post"] is True

    # A posted letter is printed no more.
    again = as_json("letters", "print", "--date", str(day(2)), "--out", str(out))
    assert [r["customer_id"] for r in again["rows"]] == ["C1"]
    assert _pages(out) == pages["C1"]
    assert run(day(3))["letters"]["to_post"] == 1


@pytest.mark.sqlite_only
def test_a_retry_sends_the_letter_kept_by_the_failed_attempt(portfolio: Portfolio,
                                                             letters_dir: Path,
                                                             workdir: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    ids = notices_delivered(portfolio)
    blocked = workdir / "not-a-folder"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("DUNNING_OUTBOX_DIR", str(blocked / "outbox"))  # the email copy fails
    report = run(day(2))
    assert (report["letters"]["sent"], report["letters"]["failed"]) == (1, 1)
    assert letters()["C1"]["status"] == "failed" and letters()["C2"]["status"] == "sent"
    (kept,) = letters_dir.glob(f"*_{ids['C1']:08d}_C1_*.pdf")
    first = kept.read_bytes()

    monkeypatch.setenv("DUNNING_OUTBOX_DIR", str(workdir / "outbox"))
    assert run(day(3))["letters"]["sent"] == 1
    shown = letters()["C1"]
    assert shown["status"] == "sent" and shown["document"] == str(kept)
    assert list(letters_dir.glob(f"*_{ids['C1']:08d}_*.pdf")) == [kept], "one letter, not two"
    assert kept.read_bytes() == first and kept.name.startswith(str(day(2)))
    (cover,) = [m for m in outbox(portfolio) if m.get_content_type() == "multipart/mixed"]
    (pdf,) = [p for p in cover.walk() if p.get_content_type() == "application/pdf"]
    assert pdf.get_payload(decode=True) == first
    # Produced on day 3: printed with that day's letters, and dated as it was written.
    (row,) = as_json("letters", "print", "--date", str(day(3)), "--out",
                     str(workdir / "d3.pdf"))["rows"]
    assert (row["action_id"], row["reference"]) == (ids["C1"], f"C1-{day(2)}")


def _proof(court: Path, customer: str) -> str:
    (folder,) = [p for p in court.iterdir() if p.is_dir() and f"_{customer}_" in p.name]
    data = (folder / "4-preuve-envoi-mise-en-demeure.pdf").read_bytes()
    request = (folder / "1-requete-injonction-de-payer.pdf").read_bytes()
    return " ".join(" ".join(page.extract_text().split()) for blob in (data, request)
                    for page in PdfReader(io.BytesIO(blob)).pages).replace("\u202f", " ")


def test_the_court_file_cites_the_posting_record(portfolio: Portfolio, letters_dir: Path,
                                                 workdir: Path) -> None:
    ids = notices_delivered(portfolio)
    run(day(2))
    # C2's notice went by post only: no court file until its posting is recorded
    run(day(5))
    assert [a["customer_id"] for a in as_json("actions", "--status", "pending_approval")] == [
        "C1"]
    assert cli("letter-posted", str(ids["C2"]), "--tracking", "1A 234 567 8901 2", "--on",
               str(day(2)), "--by", "Paul").exit_code == 0
    run(day(6))
    proposed = [a for a in as_json("actions", "--status", "pending_approval")
                           if a["stage"] == "injunction"]
    assert len(proposed) == 2
    for action in proposed:
        assert cli("approve", str(action["action_id"]), "--by", "Claire").exit_code == 0
    assert run(day(7))["injunctions"]["sent"] == 2

    posted = _proof(workdir / "court", "C2")
    assert "n° 1A23456789012, déposée le 4 novembre 2026" in posted
    assert "aucun dépôt" not in posted
    assert "pas d'adresse électronique connue du débiteur" in posted
    assert "courrier électronique le" not in posted, "never an email that was not sent"
    # C1's notice reached it by email (its copy): the file says so, and that no posting is known
    unposted = _proof(workdir / "court", "C1")
    assert "aucun dépôt en recommandé n'est enregistré" in unposted
    assert "dépôt en recommandé non enregistré" in unposted and "ap@c1.example" in unposted

