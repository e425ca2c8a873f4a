"""The HTTP snapshot: customers and open invoices read from the accounting system's JSON API.
Every page must arrive: a page that still fails after its retries abandons the whole pull, since
a partial snapshot would settle every invoice it missed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import requests

from dunning import http_session
from dunning.errors import ConfigError, SourceUnavailable
from dunning.policy import Endpoint, HttpSource
from dunning.settings import secret
from dunning.sources.rows import CUSTOMER_REQUIRED, INVOICE_REQUIRED, SnapshotBuilder
from dunning.sources.snapshot import Snapshot


def _env(name: str, field: str) -> str:
    value = secret(name)
    if not value:
        raise ConfigError(f"source.auth.{field}: the environment variable {name} is not set")
    return value


def _session(source: HttpSource) -> requests.Session:
    session = http_session.session(source.retries, source.backoff, retry_after_max=60)
    session.headers["Accept"] = "application/json"
    auth = source.auth
    if auth.type == "bearer":
        assert auth.token_env is not None
        session.headers["Authorization"] = f"Bearer {_env(auth.token_env, 'token_env')}"
    elif auth.type == "basic":
        assert auth.username_env is not None and auth.password_env is not None
        session.auth = (_env(auth.username_env, "username_env"),
                        _env(auth.password_env, "password_env"))
    return session


def _dig(data: Any, path: str) -> Any:
    """The value at a dotted path (`meta.next`), or None where the path stops."""
    if not path:
        return data
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _get(session: requests.Session, source: HttpSource, url: str, params: dict[str, Any]) -> Any:
    """One page (the session retries timeouts, connection errors, 429 and 5xx)."""
    attempts = f"after {source.retries + 1} attempts; the pull is abandoned and nothing was changed"
    try:
        response = session.get(url, params=params, timeout=source.timeout)
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise SourceUnavailable(f"GET {url} {params}: "
                                f"{http_session.failure(exc, source.timeout)} {attempts}") from None
    if response.status_code in http_session.RETRY_STATUSES:
        raise SourceUnavailable(f"GET {url} {params}: HTTP {response.status_code} {attempts}")
    if response.status_code in (401, 403):
        raise ConfigError(f"GET {url}: HTTP {response.status_code}: the accounting API "
                          "refused our credentials (check source.auth and its variables); "
                          "nothing was changed")
    if response.status_code >= 400:
        raise SourceUnavailable(f"GET {url} {params}: HTTP {response.status_code}: "
                                f"{response.text[:300]}; nothing was changed")
    try:
        return response.json(parse_float=Decimal)
    except ValueError:
        raise SourceUnavailable(f"GET {url} {params}: the answer is not JSON; "
                                "nothing was changed") from None


def _items(session: requests.Session, source: HttpSource, endpoint: Endpoint,
           deadline: float) -> Iterator[dict[str, Any]]:
    """Every item of an endpoint, page after page, within `source.max_pages` pages and before
    `deadline` (time.monotonic())."""
    url = source.base_url.rstrip("/") + "/" + endpoint.path.lstrip("/")
    paging = endpoint.pagination
    params: dict[str, Any] = dict(endpoint.params)
    if paging.kind == "page":
        params[paging.parameter] = paging.start
        params[paging.size_param] = paging.size
    seen_cursors: set[str] = set()
    for _ in range(source.max_pages):
        if time.monotonic() > deadline:
            raise SourceUnavailable(
                f"GET {url}: the pull took more than source.max_seconds ({source.max_seconds:g} "
                "s) and was abandoned: the API may be paginating without end (or raise the "
                "limit); nothing was changed")
        body = _get(session, source, url, params)
        items = _dig(body, endpoint.items)
        if not isinstance(items, list):
            raise SourceUnavailable(f"GET {url}: no list at {endpoint.items or 'the top'} of "
                                    "the answer (check `items` in the policy); nothing was "
                                    "changed")
        for item in items:
            yield item if isinstance(item, dict) else {}
        if paging.kind == "none":
            return
        if paging.kind == "page":
            # Only an empty page ends the list: an API that caps the page size below ours
            # would otherwise cut the snapshot short, and settle everything it left out.
            if not items:
                return
            params[paging.parameter] += 1
            continue
        cursor = _dig(body, paging.next)
        if cursor in (None, ""):
            return
        if str(cursor) in seen_cursors:
            raise SourceUnavailable(f"GET {url}: the cursor {cursor!r} came back twice; "
                                    "nothing was changed")
        seen_cursors.add(str(cursor))
        params[paging.parameter] = cursor
    raise SourceUnavailable(
        f"GET {url}: more than source.max_pages ({source.max_pages}) pages, the pull was "
        "abandoned: the API may be paginating without end (or raise the limit); nothing was "
        "changed")


def _row(item: dict[str, Any], fields: dict[str, str], columns: tuple[str, ...]) -> \
        dict[str, str]:
    """An item as a row of strings, our column names, through the policy's mapping."""
    row: dict[str, str] = {}
    for column in {*columns, *fields}:
        value = _dig(item, fields.get(column, column))
        row[column] = "" if value is None else str(value).strip()
    return row


CUSTOMER_COLUMNS = (*CUSTOMER_REQUIRED, "email", "phone", "language", "country",
                    "credit_limit", "segment", "collector", "address", "legal_id")
INVOICE_COLUMNS = (*INVOICE_REQUIRED, "number", "issue_date", "currency")


def read_http_snapshot(source: HttpSource, *, default_language: str,
                       default_currency: str) -> Snapshot:
    """Read every page of customers, then of invoices; rejects name the endpoint and the
    item's position."""
    session = _session(source)
    customers_name = f"GET {source.customers.path}"
    invoices_name = f"GET {source.invoices.path}"
    builder = SnapshotBuilder(customers_name, invoices_name, default_language=default_language,
                              default_currency=default_currency)
    # Fetch everything before building: a failed page must leave no half snapshot behind.
    deadline = time.monotonic() + source.max_seconds
    customers = list(_items(session, source, source.customers, deadline))
    invoices = list(_items(session, source, source.invoices, deadline))
    for position, item in enumerate(customers, start=1):
        builder.add_customer(position, _row(item, source.customers.fields, CUSTOMER_COLUMNS))
    for position, item in enumerate(invoices, start=1):
        builder.add_invoice(position, _row(item, source.invoices.fields, INVOICE_COLUMNS))
    return builder.snapshot
