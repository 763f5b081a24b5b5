"""One aiohttp client session for every HTTP sink, and the one classification of answers they share.

Every outside API's answer goes through ``classify``: the API's own small body classifier reads
the codes only it knows (an SMS gateway's ``error_code`` in a 200, Bitrix24's ``QUERY_LIMIT_EXCEEDED``
in a 503, ...), and the rest is decided the same way for every API:

- 2xx and nothing wrong in the body: done;
- 408, 425, 429 and every 5xx are temporary, whatever the body says (the far side is failing, not
  refusing): ``RetryLater`` — after the far side's Retry-After when it gave one, else the outbox's
  backoff with jitter;
- any other status is permanent: ``PermanentFailure`` (the dead letters say why).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bridge.errors import DeliveryError, PermanentFailure, RetryLater

USER_AGENT = "novofon-bridge/0.1"
TEMPORARY_STATUSES = frozenset({408, 425, 429})

# (status, parsed body) -> what this API means by it, or None to leave it to the status.
BodyClassifier = Callable[[int, Any], DeliveryError | None]


class Http:
    """Owns the ClientSession (created on first use, inside the running loop; closed by the app)."""

    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=10)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers={"User-Agent": USER_AGENT})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def is_temporary(status: int) -> bool:
    return status in TEMPORARY_STATUSES or status >= 500


def retry_after_header(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(
    status: int,
    body: Any = None,
    *,
    api: str,
    retry_after: float | None = None,
    by_body: BodyClassifier | None = None,
    describe: str | None = None,
) -> None:
    """Return if the answer is a success; raise RetryLater or PermanentFailure otherwise.

    ``body`` is the parsed answer (dict, text or None), ``retry_after`` the Retry-After header in
    seconds, ``by_body`` the API's own reading of its error codes, ``describe`` the error text.
    """
    verdict = by_body(status, body) if by_body is not None else None
    text = describe or f"{api} HTTP {status}: {_snippet(body)}"
    if isinstance(verdict, RetryLater):
        if verdict.retry_after is None and retry_after is not None:
            raise RetryLater(str(verdict), retry_after)
        raise verdict
    if is_temporary(status):
        raise RetryLater(str(verdict) if verdict is not None else text, retry_after)
    if verdict is not None:
        raise verdict
    if 200 <= status < 300:
        return
    raise PermanentFailure(text)


def classify_status(status: int, body: str, retry_after: float | None = None) -> None:
    """``classify`` for an API with no body codes of its own (a plain webhook receiver)."""
    classify(status, body, api="HTTP", retry_after=retry_after, describe=f"HTTP {status}: {body[:300]}")


def transport_error(e: Exception) -> RetryLater:
    """No answer at all (refused, reset, timed out): always worth another try."""
    return RetryLater(f"{type(e).__name__}: {e or 'timeout'}")


def _snippet(body: Any) -> str:
    return str(body)[:300] if body is not None else ""
