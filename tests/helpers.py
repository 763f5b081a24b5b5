"""Shared test helpers: a recording sink and condition waits (never fixed sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from bridge.calls.records import CallRecord
from bridge.outbox.store import Delivery

T = TypeVar("T")


class MemorySink:
    """A real sink that keeps what it was given, so tests can wait for records."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.records: list[CallRecord] = []
        self._changed = asyncio.Condition()

    async def send(self, delivery: Delivery) -> None:
        async with self._changed:
            self.records.append(delivery.record)
            self._changed.notify_all()

    async def close(self) -> None:
        pass

    async def wait_for(
        self, predicate: Callable[[list[CallRecord]], bool], timeout: float = 30
    ) -> list[CallRecord]:
        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.records))

        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            got = "\n".join(f"  {r.to_json()}" for r in self.records)
            raise AssertionError(f"records did not arrive within {timeout} s; got:\n{got}") from None
        return list(self.records)

    async def wait_events(self, *events: str, timeout: float = 30) -> list[CallRecord]:
        """Wait until the events seen so far end with ``events`` being present in order."""
        return await self.wait_for(
            lambda rs: _contains_in_order([r.fields["event"] for r in rs], events), timeout
        )


def _contains_in_order(seen: list[str], wanted: tuple[str, ...]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


async def until(check: Callable[[], T], timeout: float = 15, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {last!r})")
        await asyncio.sleep(interval)
        last = check()
    return last


def delivery(record: CallRecord, record_id: int = 1, sink: str = "test") -> Delivery:
    """A Delivery as the outbox would hand it to a sink."""
    return Delivery(record_id, record_id, sink, record, attempts=0, created_at=0.0)
