"""Deliver what the outbox holds: per sink, calls in parallel, each call's records strictly in order.

- A slow or failing sink never delays another: each sink has its own worker.
- Per sink, up to ``parallel_calls`` calls are delivered at once, each by a task of its own that
  sends the call's records one after another. A far side that hangs on one call delays only that
  call (for up to ``send_timeout``); the sink's rate limiter still spaces every request.
- Only the head of a call is ever due (``OutboxStore.due``): a START that keeps failing holds back
  its END, and a dead record holds the rest of its call until ``novofon-bridge outbox retry``
  replays them in order. Held records older than ``max_age`` go dead too ("held behind #N").
- Temporary failures are retried with exponential backoff and full jitter, or after exactly the
  far side's ``retry_after``; after ``max_age`` a delivery is dead-lettered with its last error.
- When the outcome of a send cannot be written (disk full, read-only), the call waits and the
  outcome is written again until the storage takes it: nothing is sent twice for want of a write.
- ``novofon-bridge outbox retry`` writes through its own connection: noticed within a second.
- This is the only place that decides when something is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from bridge.errors import PermanentFailure, RetryLater, StorageUnavailable
from bridge.outbox.health import is_storage_error
from bridge.outbox.sink import Sink
from bridge.outbox.store import Delivery, OutboxStore

log = structlog.get_logger("bridge.outbox")

IDLE_CHECK = 60.0  # re-check the queue at least this often even without a wake-up
WATCH_INTERVAL = 1.0  # how often to look for commits made by another process (the CLI)
STORAGE_RETRY_MAX = 10.0  # while the disk is full, try to write an outcome at least this often


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 5.0  # first retry within 0..5 s, then 0..10, 0..20, ...
    cap: float = 3600.0  # never wait more than an hour between tries
    max_age: float = 86400.0  # give up (dead-letter) a day after the record was made
    send_timeout: float = 60.0  # one attempt may take this long
    parallel_calls: int = 8  # per sink, this many calls are delivered at once

    def delay(self, attempts: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempts)]."""
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempts, 30)))


class Dispatcher:
    def __init__(self, store: OutboxStore, sinks: Sequence[Sink], policy: RetryPolicy | None = None) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.policy = policy or RetryPolicy()
        if self.policy.parallel_calls < 1:
            raise ValueError("parallel_calls must be at least 1")
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._stopping = False
        self._busy = 0
        self._expire_every = min(IDLE_CHECK, self.policy.max_age / 4)
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
            tg.create_task(self._watch_other_writers(), name="outbox:watch")

    async def stop(self, grace: float = 5.0) -> None:
        """Let in-flight sends finish (up to ``grace`` s); what is pending stays in the outbox."""
        self._stopping = True
        self.notify()
        await asyncio.sleep(0)
        deadline = time.monotonic() + grace
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # -- per sink: pick the calls whose head is due, one task per call ---------------------------
    async def _worker(self, sink: Sink) -> None:
        wake = self._wake[sink.name]
        calls: dict[str, asyncio.Task[None]] = {}  # pbx_call_id -> the task delivering it
        expired_at = 0.0
        try:
            while not self._stopping:
                wake.clear()
                now = time.time()
                if now - expired_at >= self._expire_every:
                    expired_at = now
                    self._expire_held(sink, now)
                free = self.policy.parallel_calls - len(calls)
                if free > 0:
                    for d in self.store.due(sink.name, now, free, exclude=calls.keys()):
                        call = d.record.pbx_call_id
                        task = asyncio.create_task(
                            self._deliver_call(sink, d), name=f"sink:{sink.name}:{call}"
                        )
                        calls[call] = task
                        task.add_done_callback(_forget(calls, call, wake))
                timeout = min(IDLE_CHECK, self._expire_every)
                if len(calls) < self.policy.parallel_calls:
                    next_at = self.store.next_due_at(sink.name, exclude=calls.keys())
                    if next_at is not None:
                        timeout = min(timeout, max(0.0, next_at - time.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # not wait_for: see pbx/ami.py
                        await wake.wait()
            # Stopping: each call task ends after its current attempt.
            await asyncio.gather(*calls.values(), return_exceptions=True)
        finally:
            for task in calls.values():
                task.cancel()

    def _expire_held(self, sink: Sink, now: float) -> None:
        try:
            expired = self.store.expire_held(sink.name, now - self.policy.max_age, now)
        except StorageUnavailable:
            return  # logged by the store's health; tried again next time
        for delivery_id, holder in expired:
            log.error("outbox.dead", sink=sink.name, delivery=delivery_id, reason=f"held behind #{holder}")

    # -- per call: its records one after another -------------------------------------------------
    async def _deliver_call(self, sink: Sink, first: Delivery) -> None:
        d: Delivery | None = first
        while d is not None and not self._stopping:
            if not await self._attempt(sink, d):
                return  # waits for its retry: the worker picks the call up again when it is due
            d = self.store.head(sink.name, d.record.pbx_call_id, time.time())

    async def _attempt(self, sink: Sink, d: Delivery) -> bool:
        """Try once; True when the delivery is settled (delivered or dead), False when it waits."""
        if time.time() - d.created_at > self.policy.max_age:
            reason = f"gave up after {d.attempts} attempts over {self.policy.max_age:.0f} s: {d.last_error}"
            await self._persist(lambda: self._dead(sink, d, reason))
            return True
        self._busy += 1
        try:
            async with asyncio.timeout(self.policy.send_timeout):
                await sink.send(d)
        except RetryLater as e:
            delay = (
                self.policy.delay(d.attempts)
                if e.retry_after is None
                else min(e.retry_after, self.policy.cap)
            )
            error = str(e)
            await self._persist(lambda: self._retry(sink, d, delay, error))
            return False
        except PermanentFailure as e:
            reason = str(e)
            await self._persist(lambda: self._dead(sink, d, reason))
            return True
        except TimeoutError:
            error = f"no answer within {self.policy.send_timeout} s"
            await self._persist(lambda: self._retry(sink, d, self.policy.delay(d.attempts), error))
            return False
        except (StorageUnavailable, sqlite3.Error) as e:
            if isinstance(e, sqlite3.Error) and not is_storage_error(e):
                return await self._crashed(sink, d, e)
            if isinstance(e, sqlite3.Error):
                self.store.health.failed(e, f"{sink.name}: sink state")
            # The sink could not write its own state: try again when the storage takes writes.
            error = f"storage unavailable: {e}"
            await self._persist(lambda: self._retry(sink, d, self.policy.delay(d.attempts), error))
            return False
        except Exception as e:
            return await self._crashed(sink, d, e)
        finally:
            self._busy -= 1
        await self._persist(lambda: self.store.mark_delivered(d.id))
        self.sent += 1
        return True

    async def _crashed(self, sink: Sink, d: Delivery, e: Exception) -> bool:
        """A bug in a sink: keep the record, retry, say so loudly."""
        log.exception("outbox.sink_crashed", sink=sink.name, delivery=d.id)
        error = f"{type(e).__name__}: {e}"
        await self._persist(lambda: self._retry(sink, d, self.policy.delay(d.attempts), error))
        return False

    async def _persist(self, write: Callable[[], None]) -> None:
        """Write an outcome; while the storage refuses it, hold the call and try again."""
        delay = 0.2
        while True:
            try:
                write()
                return
            except StorageUnavailable:
                if self._stopping:
                    return  # still pending in the database: sent again after the restart
                await asyncio.sleep(delay)
                delay = min(STORAGE_RETRY_MAX, delay * 2)

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

    # -- another process (the CLI) changed the database ------------------------------------------
    async def _watch_other_writers(self) -> None:
        last = self._data_version()
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            version = self._data_version()
            if version != last:
                last = version
                self.notify()

    def _data_version(self) -> int:
        """Changes when another connection commits (SQLite's PRAGMA data_version)."""
        try:
            return int(self.store.db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return -1


def _forget(
    calls: dict[str, asyncio.Task[None]], call: str, wake: asyncio.Event
) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        if calls.get(call) is task:
            del calls[call]
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox.call_task_failed", pbx_call_id=call, exc_info=task.exception())
        wake.set()

    return done
