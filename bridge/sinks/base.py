"""What a sink is. The durable outbox (its own issue) will drive these same adapters."""

from __future__ import annotations

from typing import Protocol

from bridge.calls.records import CallRecord


class Sink(Protocol):
    name: str

    async def deliver(self, records: list[CallRecord]) -> None:
        """Deliver records in order; raise to signal failure."""

    async def close(self) -> None: ...
