"""`dunning rates import`: the central banks' own CSV exports extend a copy of the rate tables;
the rates already known must agree; a notice dated past the shipped tables is then reckoned at
the statutory rate without a contractual one."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from dunning import law
from tests.helpers import DUNNING, cli

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "rates.yaml"

# As the ECB Data Portal writes a download (quoted, ISO dates, four decimals); the dates of
# change only (frequency B). The rates after 2025-06-11 are made up for the test.
ECB_TITLE = ("Main refinancing operations - fixed rate tenders (fixed rate) (date of changes) - "
             "Level (FM.B.U2.EUR.4F.KR.MRR_FR.LEV)")
ECB_CHANGES = f'''"DATE","TIME PERIOD","{ECB_TITLE}"
"2025-04-23","23 Apr 2025","2.4000"
"2025-06-11","11 Jun 2025","2.1500"
"2026-03-18","18 Mar 2026","2.4000"
'''
# The same series with a value every day (frequency D): complete through its last line.
ECB_DAILY = f'"DATE","TIME PERIOD","{ECB_TITLE.replace(".B.", ".D.")}"\n' + "".join(
        f'"2026-{month:02d}-{day:02d}","x","{"2.1500" if month < 3 else "2.4000"}"\n'
        for month in range(1, 8) for day in (1, 15))
BOE_DATABASE = "DATE,IUDBEDR\n07 Aug 2025,4.0000\n01 Sep 2025,4.00\n18 Dec 2025,3.75\n" \
    "30 Jun 2026,3.75\n"
BOE_HISTORY = '"Date Changed","Rate"\n"18 Dec 25","3.75"\n"07 Aug 25","4.00"\n"08 May 25","4.25"\n'
BUNDESBANK_BBK = (
    '"";BBIN1.M.DE.BBK.BBKBAS2.EUR.ME;BBIN1.M.DE.BBK.BBKBAS2.EUR.ME_FLAGS\n'
    '"";Basiszinssatz gemäß BGB / Stand am Monatsende / SU0115;\n'
    "Einheit;% p.a.;\nDezimalstellen;2;\n"
    "2025-12;1,27;\n2026-01;1,27;\n2026-06;1,27;\n2026-07;1,52;\n2026-08;.;Kein Wert vorhanden\n"
    '"";Ab 1. Juli 1,52%;\n')


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "rates.yaml"
    monkeypatch.setenv("DUNNING_RATES_FILE", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _import(path: Path, *options: str, expect: int = 0) -> dict[str, object]:
    result = cli("rates", "import", str(path), *options, "--json")
    assert result.exit_code == expect, (result.stdout, result.stderr)
    return json.loads(result.stdout) if expect == 0 else {"error": result.stderr}


def test_the_ecbs_dates_of_change_extend_a_copy_of_the_tables(tables: Path,
                                                               tmp_path: Path) -> None:
    export = _write(tmp_path, "ecb.csv", ECB_CHANGES)
    refused = _import(export, expect=2)
    assert "give --through DATE" in str(refused["error"]) and not tables.exists()
    done = _import(export, "--through", "2026-11-30")
    assert done["added"] == [{"from": "2026-03-18", "rate": "2.4000"}]
    assert (done["known_through_before"], done["known_through"]) == ("2026-01-31", "2026-11-30")
    text = tables.read_text(encoding="utf-8")
    assert '    2026-03-18: "2.40"\n' in text and "known_through: 2026-11-30" in text
    assert text.startswith("# Reference rates"), "comments kept"
    assert yaml.safe_load(text)["de_base"] == yaml.safe_load(
        SHIPPED.read_text(encoding="utf-8"))["de_base"], "other tables untouched"
    ecb = law.load_rates()["ecb_mro"]
    assert ecb.on(date(2026, 3, 17)) == Decimal("2.15") and ecb.on(date(2026, 7, 1)) == \
        Decimal("2.40")
    # French statutory interest for 2026-H2 is now known: ECB rate on 1 July + 10 points
    claim = law.claim(Decimal("1000"), date(2026, 6, 30), date(2026, 7, 31), law.RULES["FR"])
    assert [p.rate for p in claim.periods] == [Decimal("12.40")]
    assert SHIPPED.read_text(encoding="utf-8") != text, "the shipped file is left alone"
    # Importing the same again adds nothing
    assert _import(export, "--through", "2026-11-30")["added"] == []


def test_a_daily_series_says_itself_how_far_it_is_complete(tables: Path,
                                                           tmp_path: Path) -> None:
    done = _import(_write(tmp_path, "ecb-daily.csv", ECB_DAILY))
    assert done["added"] == [{"from": "2026-03-01", "rate": "2.4000"}]
    assert done["known_through"] == "2026-07-15"


def test_the_bank_of_england_and_the_bundesbank(tables: Path, tmp_path: Path) -> None:
    database = _import(_write(tmp_path, "boe.csv", BOE_DATABASE))
    assert database["table"] == "boe_bank_rate"
    assert database["added"] == [{"from": "2025-12-18", "rate": "3.75"}]
    assert database["known_through"] == "2026-06-30"
    history = _import(_write(tmp_path, "boe-history.csv", BOE_HISTORY), "--through",
                      "2026-06-30")
    assert history["added"] == [] and history["format"] == "Bank of England history"
    german = _import(_write(tmp_path, "bbk.csv", BUNDESBANK_BBK))
    assert german["added"] == [{"from": "2026-07-01", "rate": "1.52"}]
    assert german["known_through"] == "2026-07-31"
    assert law.load_rates()["de_base"].on(date(2026, 7, 20)) == Decimal("1.52")


def test_a_file_that_contradicts_the_table_or_is_not_an_export_changes_nothing(
        tables: Path, tmp_path: Path) -> None:
    wrong = ECB_CHANGES.replace('"2025-06-11","11 Jun 2025","2.1500"',
                                '"2025-06-11","11 Jun 2025","2.2500"')
    refused = _import(_write(tmp_path, "wrong.csv", wrong), "--through", "2026-11-30",
                      expect=2)
    assert "wrong.csv:3: ecb_mro on 2025-06-11: the file says 2.2500, the table 2.15" in str(
        refused["error"])
    assert not tables.exists()
    odd = _import(_write(tmp_path, "odd.csv", "a,b\n1,2\n"), expect=2)
    assert "odd.csv: not a rate export this command knows" in str(odd["error"])
    bad = _import(_write(tmp_path, "bad.csv", BOE_DATABASE.replace("3.75", "=1+1", 1)),
                  expect=2)
    assert "bad.csv:4: IUDBEDR: '=1+1' is not a rate" in str(bad["error"])


def test_the_installed_command_and_a_missing_rate_names_it(tmp_path: Path) -> None:
    with pytest.raises(Exception) as missing:
        law.load_rates(SHIPPED)["boe_bank_rate"].on(date(2026, 11, 2))
    assert "dunning rates import FILE" in str(missing.value)
    export = _write(tmp_path, "boe.csv", BOE_DATABASE)
    env = os.environ | {"DUNNING_RATES_FILE": str(tmp_path / "kept" / "rates.yaml")}
    done = subprocess.run([DUNNING, "rates", "import", str(export), "--dry-run", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dry_run"] is True
    assert not (tmp_path / "kept").exists(), "a dry run writes nothing"


def test_sdmx_csv_of_the_ecbs_api_and_of_the_bundesbank(tables: Path, tmp_path: Path) -> None:
    ecb = ("KEY,FREQ,REF_AREA,CURRENCY,PROVIDER_FM,INSTRUMENT_FM,PROVIDER_FM_ID,DATA_TYPE_FM,"
           "TIME_PERIOD,OBS_VALUE,OBS_STATUS,TITLE\n"
           + "".join(f"FM.D.U2.EUR.4F.KR.MRR_FR.LEV,D,U2,EUR,4F,KR,MRR_FR,LEV,{day},{rate},A,"
                     '"Main refinancing operations, fixed rate"\n'
                     for day, rate in (("2026-01-30", "2.15"), ("2026-02-02", "2.15"),
                                       ("2026-02-04", "2.4"), ("2026-02-05", "2.4"))))
    done = _import(_write(tmp_path, "ecb-api.csv", ecb))
    assert (done["format"], done["added"], done["known_through"]) == (
        "ECB data API", [{"from": "2026-02-04", "rate": "2.4"}], "2026-02-05")
    german = ("DATAFLOW;BBK_STD_FREQ;BBK_STD_AREA;BBK_IRCBR_REF_SEC;BBK_IRCBR_CATEGORY;"
              "BBK_STD_CURRENCY;BBK_IRCBR_SUFFIX;TIME_PERIOD;OBS_VALUE;BBK_COMM_OBS\n"
              "BBK:BBIN1(1.0);M;DE;BBK;BBKBAS2;EUR;ME;2026-06;1.27;\n"
              "BBK:BBIN1(1.0);M;DE;BBK;BBKBAS2;EUR;ME;2026-07;1.52;Ab 1. Juli 1,52%\n"
              "BBK:BBIN1(1.0);M;DE;BBK;BBKBAS2;EUR;ME;2026-08;.;\n")
    done = _import(_write(tmp_path, "bbk-sdmx.csv", german))
    assert (done["format"], done["added"], done["known_through"]) == (
        "Bundesbank SDMX-CSV", [{"from": "2026-07-01", "rate": "1.52"}], "2026-07-31")
