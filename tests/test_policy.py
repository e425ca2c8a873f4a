"""The policy file: the shipped one loads; every mistake names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dunning.cli import app
from dunning.errors import ConfigError
from dunning.policy import load_policy
from tests.conftest import base_policy

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_policy_is_the_documented_ladder() -> None:
    policy = load_policy(REPO / "config" / "policy.yaml")
    ladder = [(s.name, s.channel, s.days_after_due, s.requires_approval, int(s.min_amount))
              for s in policy.stages]
    assert ladder == [
        ("pre_due_reminder", "email", -5, False, 0),
        ("friendly_reminder", "email", 3, False, 0),
        ("second_reminder", "email", 10, False, 0),
        ("phone_call", "phone", 15, False, 0),
        ("formal_notice", "letter", 30, True, 0),
        ("collection_agency", "agency", 60, True, 500),
        ("injunction", "injunction", 90, True, 1000),
    ]


def _write(tmp_path: Path, change: object) -> Path:
    data = base_policy(tmp_path)
    if callable(change):
        change(data)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _set(index: int, **values: object):  # type: ignore[no-untyped-def]
    def change(data: dict) -> None:  # type: ignore[type-arg]
        data["stages"][index].update(values)
    return change


def _duplicate(data: dict) -> None:  # type: ignore[type-arg]
    data["stages"][2]["name"] = "friendly_reminder"


def _swap(data: dict) -> None:  # type: ignore[type-arg]
    data["stages"][3], data["stages"][4] = data["stages"][4], data["stages"][3]


def _unknown_top(data: dict) -> None:  # type: ignore[type-arg]
    data["stagez"] = []


@pytest.mark.parametrize(("change", "expected"), [
    (_set(3, channel="fax"), "stages[3].channel: unknown channel 'fax'"),
    (_duplicate, "stages[2].name: duplicate stage name 'friendly_reminder'"),
    (_swap, "stages[4].days_after_due: phone_call (15) comes after formal_notice (30)"),
    (_set(1, name="Friendly Reminder"), "stages[1].name: must be a lower-case identifier"),
    (_set(1, min_days_since_previous=-1), "stages[1].min_days_since_previous"),
    (_set(0, colour="red"), "stages[0].colour: unknown field"),
    (_unknown_top, "stagez: unknown field"),
], ids=["unknown channel", "duplicate name", "out of order", "bad name", "negative gap",
        "unknown stage field", "unknown top-level field"])
def test_a_bad_policy_is_refused_naming_file_and_field(tmp_path: Path, change: object,
                                                        expected: str) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(ConfigError) as error:
        load_policy(path)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("timezone: Europe/Paris\nstages: [\n  - name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"policy\.yaml: line \d+, column \d+: invalid YAML"):
        load_policy(path)


def test_unknown_time_zone(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda d: d.update(timezone="Europe/Atlantis"))
    with pytest.raises(ConfigError, match="timezone: unknown time zone 'Europe/Atlantis'"):
        load_policy(path)


def test_the_command_line_exits_2_and_changes_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, _duplicate)
    monkeypatch.setenv("DUNNING_CONFIG", str(path))
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    result = CliRunner().invoke(app, ["run", "--as-of", "2026-11-02"])
    assert result.exit_code == 2
    assert "duplicate stage name" in result.stderr
    assert not (tmp_path / "d.db").exists()


def test_a_missing_policy_file_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNNING_CONFIG", str(tmp_path / "nope.yaml"))
    result = CliRunner().invoke(app, ["run", "--dry-run"])
    assert result.exit_code == 2
    assert "nope.yaml: policy file not found" in result.stderr
