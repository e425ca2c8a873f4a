"""The installed `dunning` command: quick commands do not load Prefect; exit statuses hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dunning.db import upgrade
from tests.helpers import DUNNING


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"DUNNING_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}


def test_quick_commands_do_not_import_prefect(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path / 'd.db'}")
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dunning.cli import app\n"
        "for args in (['status', '--json'], ['actions', '--json'], ['history', 'X']):\n"
        "    CliRunner().invoke(app, args)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=_env(tmp_path), cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_installed_command_answers(tmp_path: Path) -> None:
    env = _env(tmp_path)
    done = subprocess.run([DUNNING, "db", "upgrade"], env=env, cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "database at revision" in done.stderr
    listed = subprocess.run([DUNNING, "status", "--json"], env=env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_database_without_tables_is_a_configuration_error(tmp_path: Path) -> None:
    done = subprocess.run([DUNNING, "status"], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "run `dunning db upgrade` first" in done.stderr


@pytest.mark.parametrize("args", [["run", "--as-of", "2026-02-30"], ["frobnicate"]])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = subprocess.run([DUNNING, *args], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr


def _snapshot_files(tmp_path: Path) -> dict[str, str]:
    """A policy and a good snapshot of 80 invoices in tmp_path; the environment to run it."""
    from tests.conftest import INVOICE_COLUMNS, base_policy

    policy = base_policy(tmp_path)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    (tmp_path / "customers.csv").write_text("customer_id,name\nC1,One\n", encoding="utf-8")
    rows = [f"I{n},C1,F-{n},,2026-10-01,EUR,10.00,10.00" for n in range(80)]
    (tmp_path / "invoices.csv").write_text(
        ",".join(INVOICE_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return _env(tmp_path) | {"DUNNING_CONFIG": str(tmp_path / "policy.yaml"),
                             # Reaching Prefect would fail, slowly and otherwise.
                             "PREFECT_API_URL": "http://127.0.0.1:9/api"}


def _cp1252_on_line_57(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[56] = lines[56].replace(b"F-55", "Société".encode("cp1252"))
    path.write_bytes(b"\n".join(lines))


def _amount_open_twice(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0] + ", Amount_Open"] + [f"{x},0" for x in lines[1:]]),
                    encoding="utf-8")


def _refused_at_once(env: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """`dunning run`, checked to stop before Prefect is loaded (importing the flow alone costs
    about 2 s of CPU here, starting Prefect's server 5-18 s of wall time): the interpreter lists
    every module it imports (PYTHONPROFILEIMPORTTIME), and no `prefect` module is among them.
    Exact, where a bound on CPU time failed on a loaded machine."""
    started = time.monotonic()
    done = subprocess.run([DUNNING, "run", "--as-of", "2026-11-02"],
                          env=env | {"PYTHONPROFILEIMPORTTIME": "1"}, cwd=folder,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    lines = done.stderr.splitlines(keepends=True)
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines
                if line.startswith("import time:")]
    assert "sqlalchemy" in imported, "the import list was read"
    loaded = [name for name in imported if name.split(".")[0] == "prefect"]
    assert not loaded, f"Prefect was loaded ({elapsed:.2f} s wall): {loaded[:3]}"
    done.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return done


@pytest.mark.parametrize(("damage", "message"), [
    (_cp1252_on_line_57, "invoices.csv: line 57: not valid UTF-8 (byte 0xe9); export the file "
                         "as UTF-8. Nothing was changed."),
    (_amount_open_twice, "invoices.csv: line 1: columns 8 ('amount_open') and 9 (' Amount_Open')"
                         " are both read as 'amount_open'; the export must have each column "
                         "once. Nothing was changed."),
    (Path.unlink, "invoices.csv: file not found; nothing was changed"),
    (lambda path: path.write_text("invoice_id,amount\n", encoding="utf-8"),
     "invoices.csv: line 1: header lacks required column(s) customer_id, due_date, "
     "amount_open; nothing was changed"),
], ids=["not UTF-8", "a column twice", "missing", "columns missing"])
def test_a_bad_snapshot_is_refused_before_prefect_starts(tmp_path: Path, damage: Any,
                                                         message: str) -> None:
    """One line on stderr, exit 2, in under 3 seconds: today the file is read by the flow,
    after Prefect has started (or failed to)."""
    env = _snapshot_files(tmp_path)
    damage(tmp_path / "invoices.csv")
    done = _refused_at_once(env, tmp_path)
    assert (done.returncode, done.stderr) == (2, f"dunning: {tmp_path / 'invoices.csv'}: "
                                                 f"{message.split(': ', 1)[1]}\n")


def test_a_missing_control_manifest_is_refused_before_prefect_starts(tmp_path: Path) -> None:
    env = _snapshot_files(tmp_path)
    policy = yaml.safe_load((tmp_path / "policy.yaml").read_text(encoding="utf-8"))
    policy["source"]["control"] = {"manifest": str(tmp_path / "invoices.manifest")}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    done = _refused_at_once(env, tmp_path)
    assert (done.returncode, done.stderr) == (
        2, f"dunning: {tmp_path / 'invoices.manifest'}: control manifest not found "
           "(source.control.manifest); the export may not be complete yet. Nothing was "
           "changed.\n")
