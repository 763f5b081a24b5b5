"""Fan records out to the sinks, in order, from one consumer task.

This in-memory queue is the seam where the durable SQLite outbox (its own issue) plugs in: the
tracker side only calls ``publish``; the sinks only see ``deliver(records)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import structlog

from bridge.calls.records import CallRecord
from bridge.sinks.base import Sink

log = structlog.get_logger("bridge.pipeline")

MAX_BATCH = 256


class RecordPipeline:
    def __init__(self, sinks: Sequence[Sink], retry_delay: float = 1.0) -> None:
        self.sinks = list(sinks)
        self.retry_delay = retry_delay
        self._queue: asyncio.Queue[CallRecord | None] = asyncio.Queue()
        self.published = 0
        self.delivered = 0

    def publish(self, records: Iterable[CallRecord]) -> None:
        for record in records:
            self._queue.put_nowait(record)
            self.published += 1

    @property
    def backlog(self) -> int:
        return self.published - self.delivered

    def finish(self) -> None:
        """No more records will come: ``run`` returns once everything before this is delivered."""
        self._queue.put_nowait(None)

    async def run(self) -> None:
        done = False
        while not done:
            batch: list[CallRecord] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    done = True
                    break
                batch.append(item)
                if len(batch) >= MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: list[CallRecord]) -> None:
        for sink in self.sinks:
            attempt = 0
            while True:
                try:
                    await sink.deliver(batch)
                    break
                except Exception as e:  # a local sink (disk full...) failing: keep the order, retry
                    attempt += 1
                    log.error("sink.failed", sink=sink.name, error=str(e), attempt=attempt)
                    await asyncio.sleep(min(30.0, self.retry_delay * attempt))
        self.delivered += len(batch)

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
