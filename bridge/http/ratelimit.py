"""Token buckets that keep us under the far side's published limits instead of hitting them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable


class TokenBucket:
    """``rate`` tokens per second, up to ``burst`` saved; ``acquire`` waits for one."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._stamp = time.monotonic()
        self._closed_until = 0.0  # the far side said "not before": nothing goes out until then
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                closed = self._closed_until - time.monotonic()
                if closed > 0:
                    await asyncio.sleep(closed)
                    continue
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def drain(self) -> None:
        """The far side said we are over its limit: behave as if the bucket were empty."""
        self._tokens = 0.0
        self._stamp = time.monotonic()

    def close_for(self, seconds: float) -> None:
        """The far side said "retry after N s": no request at all until then (then empty)."""
        until = time.monotonic() + max(0.0, seconds)
        self._closed_until = max(self._closed_until, until)
        self._tokens = 0.0
        self._stamp = self._closed_until

    @property
    def closed_for(self) -> float:
        return max(0.0, self._closed_until - time.monotonic())


class KeyedLimiter:
    """One bucket per key (a Telegram chat, say), created on first use."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[Hashable, TokenBucket] = {}

    def bucket(self, key: Hashable) -> TokenBucket:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return b

    async def acquire(self, key: Hashable) -> None:
        await self.bucket(key).acquire()
