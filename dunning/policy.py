"""The policy file: the ladder, the source, the creditor. Validated once, at the edge."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dunning.errors import ConfigError
from dunning.resources import resource_dir

Channel = Literal["email", "phone", "letter", "agency", "injunction"]
Language = Literal["fr", "en", "nl", "de"]
LANGUAGES: tuple[str, ...] = ("fr", "en", "nl", "de")
_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(_Strict):
    """One rung of the ladder."""

    name: str
    channel: Channel
    days_after_due: int
    min_days_since_previous: int = Field(0, ge=0)
    min_amount: Decimal = Field(Decimal("0"), ge=0)
    requires_approval: bool = False
    template: str | None = None
    # What replaces an email of this stage that bounces (or is dropped): a reminder letter by
    # post, a call task, or nothing.
    on_bounce: Literal["letter", "phone", "none"] = "none"

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case identifier (letters, digits, underscores)")
        return value

    @property
    def template_name(self) -> str:
        return self.template or self.name


class Control(_Strict):
    """The export's own control figures, written by the accounting system beside it."""

    manifest: Path  # key=value lines: rows=N, amount_open=X (dunning/sources/control.py)


class CsvSource(_Strict):
    kind: Literal["csv"] = "csv"
    customers: Path
    invoices: Path
    control: Control | None = None


class HttpAuth(_Strict):
    """Credentials come from environment variables named here, never from the file."""

    type: Literal["none", "bearer", "basic"] = "none"
    token_env: str | None = None  # bearer
    username_env: str | None = None  # basic
    password_env: str | None = None  # basic

    @model_validator(mode="after")
    def _names_given(self) -> HttpAuth:
        if self.type == "bearer" and not self.token_env:
            raise ValueError("auth.token_env: name the variable holding the bearer token")
        if self.type == "basic" and not (self.username_env and self.password_env):
            raise ValueError("auth: basic needs username_env and password_env")
        return self


class Pagination(_Strict):
    """`cursor`: the next cursor is read from the body at `next`; `page`: pages of `size`
    counted from `start` until an empty page; `none`: one request."""

    kind: Literal["none", "cursor", "page"] = "none"
    param: str | None = None  # query parameter of the cursor or page number (default: the kind)
    next: str = "next_cursor"  # cursor: dotted path of the next cursor in the body
    size_param: str = "per_page"  # page: query parameter of the page size
    size: int = Field(500, ge=1)
    start: int = 1


    @property
    def parameter(self) -> str:
        return self.param or ("page" if self.kind == "page" else "cursor")


class Endpoint(_Strict):
    path: str
    params: dict[str, str] = Field(default_factory=dict)
    items: str = ""  # dotted path of the list in the body ("" when the body is the list)
    pagination: Pagination = Pagination()
    fields: dict[str, str] = Field(default_factory=dict)  # our column: dotted path in an item


class HttpSource(_Strict):
    """A JSON API of the accounting system, read with `requests`."""

    kind: Literal["http"]
    base_url: str
    auth: HttpAuth = HttpAuth()
    timeout: float = Field(30, gt=0)
    retries: int = Field(3, ge=0)  # extra tries of a page after a timeout, 429 or 5xx
    backoff: float = Field(1.0, ge=0)  # first retry at once, then backoff × 2, × 4, … s
    # An API that never stops paginating (a new cursor forever, pages that never empty) would
    # otherwise hold the morning's run for ever: the pull gives up past either limit.
    max_pages: int = Field(10_000, ge=1)  # pages read per endpoint
    max_seconds: float = Field(1800, gt=0)  # for the whole pull, customers and invoices
    customers: Endpoint
    invoices: Endpoint


Source = Annotated[CsvSource | HttpSource, Field(discriminator="kind")]


class SettlementGuard(_Strict):
    """How many customers' invoices a run may settle before it is refused as a likely cut-short
    export (dunning/mass_settlement.py; README, "The mass-settlement guard")."""

    history: int = Field(20, ge=1)  # the recent days with a run that show a normal day
    factor: float = Field(3, ge=1)  # a run may settle this many normal days' customers (and
    # one normal day more per further business day since the last run)
    min_customers: int = Field(5, ge=0)  # never refused for this many customers or fewer
    young_runs: int = Field(5, ge=0)  # with fewer days of payments, the ledger is young...
    young_share: float = Field(0.1, gt=0, le=1)  # ...and a normal day is this share of them


class Creditor(_Strict):
    name: str
    country: str = Field(min_length=2, max_length=2)
    legal_id: str | None = None
    address: str | None = None
    email: str | None = None
    phone: str | None = None
    iban: str | None = None
    bic: str | None = None

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str | None) -> str | None:
        """Printed as written, and drawn in every payment QR code: a typo would send money
        nowhere (or be refused by the debtor's bank), so the check digits are verified here."""
        from stdnum import iban
        from stdnum.exceptions import ValidationError as NumberError

        if value is None:
            return None
        try:
            iban.validate(value)
        except NumberError as exc:
            raise ValueError(f"{value!r} is not a valid IBAN ({exc}); check it against "
                             "the bank's details") from None
        return value

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        from stdnum import bic
        from stdnum.exceptions import ValidationError as NumberError

        if value is None:
            return None
        try:
            bic.validate(value)
        except NumberError as exc:
            raise ValueError(f"{value!r} is not a valid BIC ({exc})") from None
        return value


class EmailSettings(_Strict):
    from_address: str = Field(alias="from")
    from_name: str | None = None
    reply_to: str | None = None
    max_attempts: int = Field(5, ge=1)
    timeout: float = Field(20, gt=0)
    # An email whose fate is unknown (a timeout after the request went out, a crash during the
    # call) is sent again after this many hours without any event from the provider; unset,
    # never by itself (a person settles it). A second copy is the price of a lost one.
    resend_unknown_after_hours: int | None = Field(None, ge=1, le=720)
    # SendGrid: messages in flight at once, calls a second at most (unset: no limit), and the
    # transport failures in a row after which the channel stops for the run.
    concurrency: int = Field(16, ge=1, le=256)
    rate_per_second: float | None = Field(None, gt=0, le=10_000)
    max_consecutive_failures: int = Field(20, ge=1, le=100_000)


class Law(_Strict):
    """Overrides of the statutory rule of the creditor's country (dunning/law.py)."""

    country: str | None = Field(None, min_length=2, max_length=2)  # default: creditor.country
    rate: Decimal | None = Field(None, ge=0)  # annual percent, e.g. a contractual rate
    compensation: Decimal | None = Field(None, ge=0)  # per invoice, instead of the fixed sum


class Letters(_Strict):
    deadline_days: int = Field(8, ge=1)  # days given by a formal notice to pay


class Phone(_Strict):
    default_assignee: str = "credit desk"  # when the customer has no collector
    due_days: int = Field(2, ge=0)  # a call task is due this many days after it is created
    max_attempts: int = Field(3, ge=1)  # calls without an answer before the task is given up


class Contact(_Strict):
    """How often a customer hears from us, whatever the number of its invoices (dunning/contact.py).
    Steps a person asked for (an approved formal notice) are never held back by it."""

    min_days_between: int = Field(7, ge=0)  # calendar days between two messages to a customer
    max_per_month: int = Field(4, ge=1)  # messages to a customer in a calendar month


class Pauses(_Strict):
    promise_grace_days: int = Field(3, ge=0)  # after a promised date, before it counts as broken
    payment_in_transit_days: int = Field(5, ge=0)  # after "I have paid", before we look again


class Agency(_Strict):
    """The collection agency's API (`url` unset: cases are handed over as files by
    `dunning agency export`). The bearer token comes from the variable named by `token_env`."""

    url: str | None = None
    token_env: str = "DUNNING_AGENCY_TOKEN"
    timeout: float = Field(20, gt=0)  # seconds per request
    retries: int = Field(4, ge=0)  # after a timeout, 429 or 5xx, with the same Idempotency-Key
    backoff: float = Field(2.0, ge=0)  # first retry at once, then backoff × 2, × 4, … s

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class Policy(_Strict):
    timezone: str = "Europe/Paris"
    currency: str = Field("EUR", min_length=3, max_length=3)
    language: Language = "fr"
    source: Source
    creditor: Creditor
    email: EmailSettings | None = None
    agency: Agency | None = None
    phone: Phone = Phone()
    law: Law = Law()
    letters: Letters = Letters()
    pauses: Pauses = Pauses()
    contact: Contact = Contact()
    payment_days: int = Field(8, ge=0, description="days given to pay in firmer reminders")
    batch_size: int = Field(20_000, ge=1)
    # A snapshot that would settle more than this share of the open invoices or of the open
    # amount, of more than settlement_guard.min_customers customers, is refused: an export cut
    # short looks exactly like a wave of payments.
    max_settled_share: float = Field(0.5, gt=0, le=1)
    settlement_guard: SettlementGuard = SettlementGuard()
    stages: list[Stage] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _ladder_in_order(self) -> Policy:
        seen: set[str] = set()
        previous: Stage | None = None
        for index, stage in enumerate(self.stages):
            if stage.name in seen:
                raise ValueError(f"stages[{index}].name: duplicate stage name {stage.name!r}")
            seen.add(stage.name)
            if previous is not None and stage.days_after_due < previous.days_after_due:
                raise ValueError(
                    f"stages[{index}].days_after_due: {stage.name} ({stage.days_after_due}) comes "
                    f"after {previous.name} ({previous.days_after_due}); list stages in "
                    "escalation order"
                )
            previous = stage
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def stage_index(self, name: str | None) -> int:
        """Position of a stage in the ladder; -1 for none (or a stage no longer in the policy)."""
        if name is None:
            return -1
        for index, stage in enumerate(self.stages):
            if stage.name == name:
                return index
        return -1


def default_policy_path() -> Path:
    """The policy shipped with dunning, used when `config/policy.yaml` is not in this folder."""
    return resource_dir("config") / "policy.yaml"


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("csv", "http") and out.endswith("source"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; every error names the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: policy file not found (set DUNNING_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the policy must be a YAML mapping (timezone:, stages:, ...)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = _location(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            elif error["type"] == "literal_error" and "channel" in field:
                message = f"unknown channel {error['input']!r}; {error['msg'].lower()}"
            lines.append(f"{path}: {field}: {message}" if field else f"{path}: {message}")
        raise ConfigError("\n".join(lines)) from None


def resolve_input(policy_path: Path, path: Path) -> Path:
    """A source path from the policy: absolute, else from the working directory, else from the
    policy file's folder."""
    if path.is_absolute() or path.exists():
        return path
    beside = policy_path.parent / path
    return beside if beside.exists() else path
