"""The outbox: committed before sending, ordered per call and sink, retried, dead-lettered, purged."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord
from bridge.errors import PermanentFailure, RetryLater
from bridge.http.ratelimit import TokenBucket
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.store import Delivery, OutboxStore, State
from tests.helpers import MemorySink, until
from tests.transcripts import replay

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=1)


class ScriptedSink(MemorySink):
    """Answers each send with what ``script`` says for that record (None = deliver)."""

    def __init__(self, name: str, script: Callable[[Delivery], Exception | None]) -> None:
        super().__init__(name)
        self.script = script
        self.attempts: list[tuple[float, str]] = []

    async def send(self, delivery: Delivery) -> None:
        self.attempts.append((time.monotonic(), delivery.record.fields["event"]))
        error = self.script(delivery)
        if error is not None:
            raise error
        await super().send(delivery)


@pytest.fixture
def store(tmp_path: Path) -> OutboxStore:
    s = OutboxStore(tmp_path / "outbox.sqlite3")
    yield s  # type: ignore[misc]
    s.close()


@contextlib.asynccontextmanager
async def running(d: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        await d.stop(grace=1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def two_calls() -> list[CallRecord]:
    return replay("inbound_answered") + replay("outbound_busy")


async def test_every_record_reaches_every_sink_in_order(store: OutboxStore) -> None:
    a, b = MemorySink("a"), MemorySink("b")
    d = Dispatcher(store, [a, b], FAST)
    records = two_calls()
    store.add(records, d.sink_names)
    async with running(d):
        await a.wait_for(lambda rs: len(rs) == len(records))
        await b.wait_for(lambda rs: len(rs) == len(records))
    assert a.records == records and b.records == records
    assert store.counts() == {"a": {"delivered": len(records)}, "b": {"delivered": len(records)}}


async def test_a_failing_start_holds_back_its_end_but_not_other_calls(store: OutboxStore) -> None:
    failing_start = {"n": 0}

    def script(d: Delivery) -> Exception | None:
        if d.record.fields["event"] == "NOTIFY_START" and failing_start["n"] < 3:
            failing_start["n"] += 1
            return RetryLater("503 from the far side")
        return None

    sink = ScriptedSink("crm", script)
    d = Dispatcher(store, [sink], FAST)
    inbound, outbound = replay("inbound_answered"), replay("outbound_busy")
    store.add(inbound + outbound, d.sink_names)
    async with running(d):
        await sink.wait_for(lambda rs: len(rs) == len(inbound) + len(outbound))
    got = sink.records
    # The outbound call was not delayed by the inbound call's trouble...
    assert got.index(outbound[0]) < got.index(inbound[0])
    # ...and each call's own order held.
    assert [r for r in got if r.pbx_call_id == inbound[0].pbx_call_id] == inbound
    assert [r for r in got if r.pbx_call_id == outbound[0].pbx_call_id] == outbound


async def test_retry_after_is_honoured_exactly(store: OutboxStore) -> None:
    calls = {"n": 0}

    def script(d: Delivery) -> Exception | None:
        calls["n"] += 1
        return RetryLater("429 Too Many Requests", retry_after=0.4) if calls["n"] == 1 else None

    sink = ScriptedSink("tg", script)
    d = Dispatcher(store, [sink], RetryPolicy(base=100, cap=100, max_age=60, send_timeout=1))
    store.add(replay("outbound_busy")[:1], d.sink_names)
    async with running(d):
        await sink.wait_for(lambda rs: len(rs) == 1)
    (t1, _), (t2, _) = sink.attempts
    assert 0.38 <= t2 - t1 < 1.0  # the far side's 0.4 s, not the policy's 0..100 s


async def test_permanent_failure_is_dead_lettered_with_reason_and_can_be_retried(store: OutboxStore) -> None:
    broken = {"on": True}
    sink = ScriptedSink("crm", lambda d: PermanentFailure("400: bad field") if broken["on"] else None)
    d = Dispatcher(store, [sink], FAST)
    records = replay("outbound_busy")
    store.add(records, d.sink_names)
    async with running(d):
        await until(lambda: store.counts().get("crm", {}).get("dead") == 1)
        (dead,) = store.list(State.DEAD)
        assert dead.last_error == "400: bad field"
        # The call's later record is held behind the dead one: never sent without it.
        ((held, holder, holder_state),) = store.held()
        assert (holder, holder_state) == (dead.id, "dead") and held.record == records[1]
        assert [e for _, e in sink.attempts] == ["NOTIFY_OUT_START"]
        broken["on"] = False
        assert store.retry_dead() == 1
        d.notify()
        await sink.wait_for(lambda rs: len(rs) == 2)
    assert sink.records == records  # replayed in the call's order


async def test_too_old_is_dead_lettered(store: OutboxStore) -> None:
    sink = ScriptedSink("crm", lambda d: RetryLater("down"))
    d = Dispatcher(store, [sink], RetryPolicy(base=0.01, cap=0.01, max_age=0.3, send_timeout=1))
    store.add(replay("outbound_busy")[:1], d.sink_names)
    async with running(d):
        await until(lambda: store.counts().get("crm", {}).get("dead") == 1, timeout=5)
    (dead,) = store.list(State.DEAD)
    assert "gave up after" in (dead.last_error or "") and "down" in (dead.last_error or "")


async def test_a_hanging_sink_does_not_delay_another(store: OutboxStore) -> None:
    class Hanging(MemorySink):
        async def send(self, delivery: Delivery) -> None:
            await asyncio.sleep(3600)

    fast = MemorySink("fast")
    d = Dispatcher(store, [Hanging("slow"), fast], RetryPolicy(base=10, cap=10, max_age=60, send_timeout=0.5))
    records = two_calls()
    store.add(records, d.sink_names)
    async with running(d):
        await fast.wait_for(lambda rs: len(rs) == len(records), timeout=5)
        await until(lambda: "no answer within" in (store.list(State.PENDING)[0].last_error or ""))


async def test_committed_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    s1 = OutboxStore(path)
    records = two_calls()
    s1.add(records, ["crm"])
    s1.close()  # the process dies here, before sending anything
    s2 = OutboxStore(path)
    sink = MemorySink("crm")
    d = Dispatcher(s2, [sink], FAST)
    async with running(d):
        await sink.wait_for(lambda rs: len(rs) == len(records))
    assert sink.records == records
    s2.close()


def test_purge_removes_only_old_delivered(store: OutboxStore) -> None:
    ids = store.add(two_calls(), ["a"], now=1000.0)
    rows = store.db.execute("SELECT id FROM deliveries ORDER BY id").fetchall()
    store.mark_delivered(rows[0][0], now=1000.0)
    store.mark_delivered(rows[1][0], now=5000.0)
    assert store.purge(older_than=2000.0) == 1
    assert store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == len(ids) - 1
    assert store.counts() == {"a": {"delivered": 1, "pending": len(ids) - 2}}


def test_idempotency_key_is_stable(store: OutboxStore) -> None:
    store.add(replay("outbound_busy")[:1], ["a"])
    (d1,) = store.due("a", time.time() + 1)
    store.mark_retry(d1.id, 0, "x")
    (d2,) = store.due("a", time.time() + 1)
    assert d1.idempotency_key == d2.idempotency_key == f"nb-{d1.record.pbx_call_id}-out_start-a"


def test_idempotency_key_comes_from_the_call_and_the_event_not_the_row(store: OutboxStore) -> None:
    """A record derived again after a restart (a new row) keeps its key; each ring and each
    recording of a call has its own; odd ids become a digest that fits in a header."""
    records = replay("inbound_ring_group")
    store.add(records, ["a"])
    store.add(records, ["a"])
    keys = [d.idempotency_key for d in store.list(State.PENDING)]  # due() gives only each call's head
    n = len(records)
    assert keys[:n] == keys[n:] and len(set(keys)) == n
    assert keys[1] == f"nb-{records[0].pbx_call_id}-internal-101-a"
    odd = dataclasses.replace(records[0], fields={**records[0].fields, "pbx_call_id": "в\r\nX"})
    store.add([odd], ["a"])
    key = store.list(State.PENDING)[-1].idempotency_key
    assert key.isascii() and key.isprintable() and len(key) < 60


async def test_token_bucket_keeps_the_rate() -> None:
    bucket = TokenBucket(rate=20, burst=2)
    t0 = time.monotonic()
    for _ in range(6):
        await bucket.acquire()
    # 2 at once from the burst, then 4 more at 20/s: at least 0.2 s.
    assert time.monotonic() - t0 >= 0.19
