"""Where the shipped templates, message catalogs, default policy and migrations are found."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parent


def resource_dir(name: str) -> Path:
    """The folder `name` (templates, locale, config, migrations): inside a wheel, else in the
    repository."""
    packaged = _PACKAGE / f"_{name}"
    return packaged if packaged.is_dir() else _REPO / name


def templates_dir() -> Path:
    """Templates: `DUNNING_TEMPLATES_DIR` when set (to customise wording), else the shipped ones."""
    override = os.environ.get("DUNNING_TEMPLATES_DIR")
    return Path(override) if override else resource_dir("templates")
