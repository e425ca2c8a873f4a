"""The exceptions dunning raises, and what the command line makes of them.

    DunningError              anything dunning refuses or fails to do (exit 1)
    ├── ConfigError           bad policy, option or database URL (exit 2)
    │   ├── CallOutcomeError  a call outcome unknown or missing what it needs (exit 2)
    │   ├── RunDateError      a run dated before the last one (exit 2)
    │   ├── RunInProgress     another run of the same shard holds the run lock (exit 2)
    │   └── SnapshotError     a snapshot that cannot be read or trusted (missing file, bad
    │       │                 header, not UTF-8, control figures): nothing changed (exit 2)
    │       └── MassSettlement  it would settle far more than a day of payments, unless
    │                         confirmed (exit 2)
    ├── SourceUnavailable     the accounting system did not answer after retries (exit 1)
    ├── NotFoundError         an unknown invoice, action or customer id (exit 2)
    ├── ConflictError         a request that does not fit the current state (exit 2)
    └── DeliveryError         a channel could not deliver an action (recorded on the action)
"""

from __future__ import annotations

from typing import Literal

# What is wrong with a call outcome: the outcome itself (unknown), the date a promise pays by or
# the date to call back (missing, or before the business date), the amount promised (above what
# is open, or over several currencies), the reason of a dispute, or invoices that belong to the
# call task.
OutcomePart = Literal["outcome", "promise_date", "callback_date", "early_promise_date",
                      "early_callback_date", "amount", "reason", "invoices"]


class DunningError(Exception):
    """Base class: something dunning refused or failed to do."""

    exit_code = 1


class ConfigError(DunningError):
    """The configuration or the command line is wrong; the message says where."""

    exit_code = 2


class CallOutcomeError(ConfigError):
    """A call's outcome cannot be recorded as given: `part` says what is wrong or missing, so
    that the command line can name its own option for it; nothing was changed."""

    def __init__(self, message: str, *, outcome: str, part: OutcomePart) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.part = part


class RunDateError(ConfigError):
    """A run was asked for a business date earlier than the last run."""


class RunInProgress(ConfigError):
    """Another run of the same shard (or of the whole book) is in progress: nothing was changed."""


class SnapshotError(ConfigError):
    """The snapshot cannot be read at all (missing file, bad header, not UTF-8), does not match
    its control figures, or would settle far more than a day of payments: nothing was changed."""


class MassSettlement(SnapshotError):
    """The snapshot's settlements do not look like a day of payments: nothing was changed; the
    run goes through once a person confirms that they are real."""


class NoAgencyApi(ConfigError):
    """The policy names no agency API (`agency.url`): cases can only be handed over as files."""


class SourceUnavailable(DunningError):
    """The source failed after its retries: the pull is abandoned and nothing changes."""


class NotFoundError(DunningError):
    """An id given by a person does not exist; `what` says of which kind ("action", "call
    task", "invoice", "customer"), for the command line to say where to look."""

    exit_code = 2

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what


class DeliveryError(DunningError):
    """A channel could not deliver an action; the action is marked failed with this message,
    or `unknown` when the provider may have it all the same (`unknown`: a timeout after the
    request went out): never sent again by guess."""

    def __init__(self, message: str, *, retryable: bool = True, unknown: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.unknown = unknown
        self.retry_after = retry_after  # a 429: seconds until the provider takes calls again


class ConflictError(DunningError):
    """The request does not fit the current state (e.g. approving an action already sent)."""

    exit_code = 2
