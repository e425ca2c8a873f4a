"""Settings read from the environment (see the README's Environment table)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The process environment; secrets never live in files."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///./dunning.db", alias="DUNNING_DATABASE_URL")
    config: Path = Field(Path("config/policy.yaml"), alias="DUNNING_CONFIG")
    outbox_dir: Path = Field(Path("outbox"), alias="DUNNING_OUTBOX_DIR")
    letters_dir: Path = Field(Path("letters"), alias="DUNNING_LETTERS_DIR")
    injunctions_dir: Path = Field(Path("injunctions"), alias="DUNNING_INJUNCTIONS_DIR")
    sendgrid_api_key: SecretStr | None = Field(None, alias="SENDGRID_API_KEY")
    sendgrid_api_host: str | None = Field(None, alias="SENDGRID_API_HOST")
    # Decide every active invoice at each run, whatever its review date says.
    evaluate_all: bool = Field(False, alias="DUNNING_EVALUATE_ALL")
    # Processes rendering the outbox's emails and letters: unset, one a core for a thousand
    # messages or more; 0, none (dunning/dispatch_pool.py).
    dispatch_workers: int | None = Field(None, ge=0, le=32, alias="DUNNING_DISPATCH_WORKERS")


def load_settings() -> Settings:
    """Read the environment now (tests change it between calls)."""
    return Settings()


_given: ContextVar[Mapping[str, str]] = ContextVar("given_secrets",
                                                  default=MappingProxyType({}))


def secret(name: str) -> str | None:
    """The secret the variable `name` holds: as given to `given_secrets`, else the environment's."""
    return _given.get().get(name) or os.environ.get(name)


@contextmanager
def given_secrets(**values: str) -> Iterator[None]:
    """Give secrets by variable name to the runs started inside the block, ahead of the environment.

    The demo gives its stand-in agency's token this way. Not as a flow parameter: Prefect keeps
    every run's parameters in its database and shows them in its UI. Not in os.environ: that is
    shared by every thread and inherited by child processes, and must be restored by hand."""
    token = _given.set(MappingProxyType({**_given.get(), **values}))
    try:
        yield
    finally:
        _given.reset(token)
