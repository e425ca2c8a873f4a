"""The collection agency's HTTP API, and the channel that sends approved cases through it.

Sending is idempotent on our side: each case carries an `Idempotency-Key` equal to the action's
dedupe key, so a retry after a timeout, a 429 or a 5xx can never open a second case; an agency
that already holds the case answers 409 with its id, which we take as success."""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from urllib.parse import quote

import requests
from pydantic import ValidationError
from sqlalchemy import Engine

from dunning import http_session
from dunning.channels.agency.cases import CaseBuilder
from dunning.channels.agency.models import AgencyCase, CaseStatus
from dunning.channels.message import Message
from dunning.channels.protocol import Claimed, Delivered
from dunning.dispatch import DispatchResult, dispatch
from dunning.errors import ConfigError, DeliveryError, NoAgencyApi
from dunning.policy import Agency, Policy
from dunning.settings import secret
from dunning.shards import Shard
from dunning.statuses import CaseChannel


def _message(response: requests.Response) -> str:
    """The agency's own words about an error, short."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if body.get(key):
                value = body[key]
                return (value if isinstance(value, str) else json.dumps(value))[:500]
    return json.dumps(body)[:500]


def _case_id(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("id", "case_id"):
            if body.get(key) not in (None, ""):
                return str(body[key])
    return None


class AgencyClient:
    """The agency's HTTP API: `POST {url}/cases` and `GET {url}/cases/{id}`, with a bearer
    token from the environment, a timeout on every request and retries with backoff."""

    def __init__(self, settings: Agency) -> None:
        if not settings.url:
            raise NoAgencyApi("agency.url: not set; without an API, cases are handed over as "
                              "files (an agency export)")
        token = secret(settings.token_env)
        if not token:
            raise ConfigError(f"agency.token_env: the environment variable {settings.token_env} "
                              "holding the agency's bearer token is not set")
        self.settings = settings
        self.url: str = settings.url
        # POST is retried too: each case carries its Idempotency-Key, the same on every retry,
        # so a retried POST can never open a second case.
        self.http = http_session.session(settings.retries, settings.backoff, retry_after_max=300,
                                         methods=http_session.GET | {"POST"})
        self.http.headers.update({"Authorization": f"Bearer {token}",
                                  "Accept": "application/json",
                                  "User-Agent": "dunning"})

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call (the session retries timeouts, connection errors, 429 and 5xx); other
        answers are returned to the caller. Raises a retryable DeliveryError once retries are
        spent."""
        attempts = f"after {self.settings.retries + 1} attempts; retried at the next run"
        try:
            response = self.http.request(method, url, timeout=self.settings.timeout, **kwargs)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise DeliveryError(f"agency {method} {url}: "
                                f"{http_session.failure(exc, self.settings.timeout)} "
                                f"{attempts}") from None
        if response.status_code in http_session.RETRY_STATUSES:
            raise DeliveryError(f"agency {method} {url}: answered {response.status_code}: "
                                f"{_message(response)} {attempts}")
        return response

    def open_case(self, case: AgencyCase, idempotency_key: str) -> str:
        """Send the case; returns the agency's case id."""
        response = self._request(
            "POST", f"{self.url}/cases",
            data=case.model_dump_json(exclude_none=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key})
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code in (200, 201, 409):
            # 409: the agency already holds a case for this key (an earlier attempt got
            # through); its id is all we need.
            case_id = _case_id(body)
            if case_id:
                return case_id
            raise DeliveryError(f"the agency answered {response.status_code} without a case id: "
                                f"{_message(response)}", retryable=False)
        raise DeliveryError(f"the agency refused the case ({response.status_code}): "
                            f"{_message(response)}", retryable=False)

    def case_status(self, case_id: str) -> CaseStatus:
        response = self._request("GET", f"{self.url}/cases/{quote(case_id)}")
        if response.status_code != 200:
            raise DeliveryError(f"agency case {case_id}: {response.status_code} "
                                f"{_message(response)}", retryable=False)
        try:
            return CaseStatus.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise DeliveryError(f"agency case {case_id}: unexpected answer: {exc}",
                                retryable=False) from None


class ApiChannel(CaseBuilder):
    """Sends each approved case to the agency's API."""

    kind = "agency"

    def __init__(self, engine: Engine, policy: Policy, client: AgencyClient,
                 as_of: date) -> None:
        super().__init__(engine, policy)
        self.client = client
        self.as_of = as_of

    def deliver(self, action_id: int, action: Claimed, message: Message) -> Delivered:
        case = self.case(action_id, action, message)
        case_id = self.client.open_case(case, action.dedupe_key)
        return Delivered(provider_id=f"agency:{case_id}",
                         after=self.record(action, action_id, case.reference, CaseChannel.API,
                                           self.as_of, case_id))


def send(engine: Engine, policy: Policy, as_of: date, *, client: AgencyClient | None = None,
         dry_run: bool = False, shard: Shard | None = None) -> DispatchResult:
    """Send approved agency cases to the agency's API. Without `agency.url` cases wait for
    `dunning agency export`."""
    if dry_run or policy.agency is None or not policy.agency.url:
        return dispatch(engine, policy, None, as_of, kind="agency", dry_run=True, shard=shard)
    channel = ApiChannel(engine, policy, client or AgencyClient(policy.agency), as_of)
    return dispatch(engine, policy, channel, as_of, kind="agency", shard=shard)
