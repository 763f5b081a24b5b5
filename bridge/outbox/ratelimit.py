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
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1

    def drain(self) -> None:
        """The far side said we are over its limit: behave as if the bucket were empty."""
        self._tokens = 0.0
        self._stamp = time.monotonic()


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
