"""What every step needs: the environment's settings, the policy, and the database engine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from dunning.policy import Policy, default_policy_path, load_policy
from dunning.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Context:
    settings: Settings
    policy_path: Path
    policy: Policy

    @property
    def engine(self) -> Engine:
        # Imported here: `dunning run` checks the policy and the snapshot's files before it
        # loads SQLAlchemy (half a second), so that a bad file is refused at once.
        from dunning.db import get_engine

        return get_engine(self.settings.database_url)

    def today(self) -> date:
        """Today's business date in the policy's time zone."""
        return datetime.now(self.policy.zone).date()


def policy_path(settings: Settings) -> Path:
    """DUNNING_CONFIG when set; else ./config/policy.yaml when present; else the shipped one."""
    if "DUNNING_CONFIG" in os.environ or settings.config.exists():
        return settings.config
    return default_policy_path()


def load_context(config: str | Path | None = None) -> Context:
    """The settings, and the policy at `config` when given, else the one `policy_path` finds."""
    settings = load_settings()
    path = Path(config) if config is not None else policy_path(settings)
    return Context(settings=settings, policy_path=path, policy=load_policy(path))
