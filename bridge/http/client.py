"""One aiohttp client session for every HTTP sink, and the error classification they share."""

from __future__ import annotations

import aiohttp

from bridge.errors import PermanentFailure, RetryLater

USER_AGENT = "novofon-bridge/0.1"


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


def retry_after_header(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def classify_status(status: int, body: str, retry_after: float | None = None) -> None:
    """Generic HTTP answer classification: 2xx fine, 408/425/429/5xx later, other 4xx never."""
    if 200 <= status < 300:
        return
    text = f"HTTP {status}: {body[:300]}"
    if status in (408, 425, 429) or status >= 500:
        raise RetryLater(text, retry_after)
    raise PermanentFailure(text)


def transport_error(e: Exception) -> RetryLater:
    return RetryLater(f"{type(e).__name__}: {e or 'timeout'}")
