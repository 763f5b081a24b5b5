"""Deliver what the outbox holds: one worker per sink, ordered per call, retried with backoff.

- A slow or failing sink never delays another: each sink has its own worker.
- Per sink, a call's records go out in order: only the oldest pending delivery of a call is ever
  eligible (``OutboxStore.due``), so a START that keeps failing holds back its END, and nothing else.
- Temporary failures are retried with exponential backoff and full jitter, or after exactly the
  far side's ``retry_after``; after ``max_age`` a delivery is dead-lettered with its last error.
- This is the only place that decides when something is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from bridge.errors import PermanentFailure, RetryLater
from bridge.outbox.sink import Sink
from bridge.outbox.store import Delivery, OutboxStore

log = structlog.get_logger("bridge.outbox")

IDLE_CHECK = 60.0  # re-check the queue at least this often even without a wake-up


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 5.0  # first retry within 0..5 s, then 0..10, 0..20, ...
    cap: float = 3600.0  # never wait more than an hour between tries
    max_age: float = 86400.0  # give up (dead-letter) a day after the record was made
    send_timeout: float = 60.0  # one attempt may take this long

    def delay(self, attempts: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempts)]."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempts, 30)))


class Dispatcher:
    def __init__(self, store: OutboxStore, sinks: Sequence[Sink], policy: RetryPolicy | None = None) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.policy = policy or RetryPolicy()
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._stopping = False
        self.sent = 0

    @property
    def sink_names(self) -> list[str]:
        return [s.name for s in self.sinks]

    def notify(self) -> None:
        """New deliveries were committed: wake the workers."""
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for sink in self.sinks:
                tg.create_task(self._worker(sink), name=f"sink:{sink.name}")

    async def stop(self, grace: float = 5.0) -> None:
        """Let in-flight sends finish (up to ``grace`` s); what is pending stays in the outbox."""
        self._stopping = True
        self.notify()
        await asyncio.sleep(0)
        deadline = time.monotonic() + grace
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    _busy = 0

    async def _worker(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        while not self._stopping:
            wake.clear()
            now = time.time()
            batch = self.store.due(sink.name, now)
            held: set[str] = set()  # calls whose earlier record just failed: the rest waits
            for delivery in batch:
                if self._stopping:
                    return
                if delivery.record.pbx_call_id in held:
                    continue
                if not await self._attempt(sink, delivery):
                    held.add(delivery.record.pbx_call_id)
            if batch:
                continue
            next_at = self.store.next_due_at(sink.name)
            timeout = IDLE_CHECK if next_at is None else min(IDLE_CHECK, max(0.0, next_at - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see pbx/ami.py
                    await wake.wait()

    async def _attempt(self, sink: Sink, d: Delivery) -> bool:
        """Try once; True when the delivery is settled (delivered or dead), False when it waits."""
        if time.time() - d.created_at > self.policy.max_age:
            self._dead(
                sink,
                d,
                f"gave up after {d.attempts} attempts over {self.policy.max_age:.0f} s: {d.last_error}",
            )
            return True
        self._busy += 1
        try:
            async with asyncio.timeout(self.policy.send_timeout):
                await sink.send(d)
        except RetryLater as e:
            delay = e.retry_after if e.retry_after is not None else self.policy.delay(d.attempts)
            self._retry(sink, d, delay, str(e))
            return False
        except PermanentFailure as e:
            self._dead(sink, d, str(e))
            return True
        except TimeoutError:
            self._retry(
                sink, d, self.policy.delay(d.attempts), f"no answer within {self.policy.send_timeout} s"
            )
            return False
        except Exception as e:  # a bug in a sink: keep the record, retry, say so loudly
            log.exception("outbox.sink_crashed", sink=sink.name, delivery=d.id)
            self._retry(sink, d, self.policy.delay(d.attempts), f"{type(e).__name__}: {e}")
            return False
        finally:
            self._busy -= 1
        self.store.mark_delivered(d.id)
        self.sent += 1
        return True

    def _dead(self, sink: Sink, d: Delivery, reason: str) -> None:
        self.store.mark_dead(d.id, reason)
        log.error(
            "outbox.dead",
            sink=sink.name,
            delivery=d.id,
            record_event=d.record.fields["event"],
            pbx_call_id=d.record.pbx_call_id,
            reason=reason,
        )

    def _retry(self, sink: Sink, d: Delivery, delay: float, error: str) -> None:
        self.store.mark_retry(d.id, time.time() + delay, error)
        log.warning(
            "outbox.retry",
            sink=sink.name,
            delivery=d.id,
            record_event=d.record.fields["event"],
            pbx_call_id=d.record.pbx_call_id,
            attempt=d.attempts + 1,
            retry_in=round(delay, 2),
            error=error,
        )
