"""The installed `dunning` command: quick commands do not load Prefect; exit statuses hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dunning.db import upgrade

DUNNING = shutil.which("dunning", path=str(Path(sys.executable).parent)) or "dunning"


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
