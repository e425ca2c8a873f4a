"""The HTTP session of every API we call (the accounting system's, the collection agency's):
requests with urllib3's retries, so that a timeout, a connection error, a 429 or a 5xx is tried
again, after the wait the server asks for when it says one."""

from __future__ import annotations

from collections.abc import Collection

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import TimeoutError as NoAnswer
from urllib3.util import Retry

RETRY_STATUSES = frozenset({429, *range(500, 600)})
GET = Retry.DEFAULT_ALLOWED_METHODS


def session(retries: int, backoff: float, *, retry_after_max: int,
            methods: Collection[str] = GET) -> requests.Session:
    """A session that sends each request up to `retries` more times after a timeout, a
    connection error, a 429 or a 5xx (of `methods` only): the first retry at once, the next
    ones after `backoff` × 2, × 4, ... seconds (at most 120), or after the server's Retry-After
    (at most `retry_after_max`). The last answer is returned whatever its status: callers word
    the error."""
    retry = Retry(total=retries, backoff_factor=backoff, status_forcelist=RETRY_STATUSES,
                  allowed_methods=frozenset(methods), respect_retry_after_header=True,
                  retry_after_max=retry_after_max, raise_on_status=False)
    out = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    out.mount("http://", adapter)
    out.mount("https://", adapter)
    return out


def failure(exc: requests.RequestException, timeout: float) -> str:
    """What went wrong with a request that got no answer, in words."""
    # Once retries are spent, requests reports a read timeout as a ConnectionError wrapping
    # urllib3's MaxRetryError, whose `reason` is the timeout.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.Timeout) or isinstance(reason, NoAnswer):
        return f"no answer within {timeout:g} s"
    return f"unreachable ({type(exc).__name__})"
