"""Per sink: calls delivered in parallel (bounded), each call strictly in order; a dead record
holds its call; held records age out saying what holds them; a retry from another process is seen."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.errors import PermanentFailure
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.store import Delivery, OutboxStore, State
from tests.helpers import MemorySink, until

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutboxStore]:
    s = OutboxStore(tmp_path / "outbox.sqlite3")
    yield s
    s.close()


@contextlib.asynccontextmanager
async def running(d: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        await d.stop(grace=0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def call(n: int, events: int = 3) -> list[CallRecord]:
    """A synthetic call ``c<n>`` of ``events`` records (START, INTERNAL..., END)."""
    base = {"pbx_call_id": f"c{n}", "call_start": "2026-11-23 12:00:00", "caller_id": "79000000000"}
    out = [make(Event.START, {**base, "called_did": "74950000000"})]
    for i in range(events - 2):
        out.append(make(Event.INTERNAL, {**base, "called_did": "74950000000", "internal": f"1{i:02d}"}))
    end = {"internal": "100", "duration": "1", "disposition": "answered", "status_code": "16"}
    rec = {"is_recorded": "0", "call_id_with_rec": ""}
    out.append(make(Event.END, {**base, "called_did": "74950000000", **end, **rec}))
    return out


class SlowSink(MemorySink):
    """Takes a little while per record; hangs forever on the calls in ``hang``; counts concurrency."""

    def __init__(self, hang: set[str] = frozenset(), delay: float = 0.0) -> None:  # type: ignore[assignment]
        super().__init__("crm")
        self.hang, self.delay = set(hang), delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrived: dict[str, float] = {}

    async def send(self, delivery: Delivery) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if delivery.record.pbx_call_id in self.hang:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.delay * random.random())
            self.arrived[delivery.record.pbx_call_id] = time.monotonic()
            await super().send(delivery)
        finally:
            self.in_flight -= 1


async def test_a_hung_call_delays_only_itself(store: OutboxStore) -> None:
    sink = SlowSink(hang={"c0"})
    d = Dispatcher(store, [sink], RetryPolicy(base=10, cap=10, max_age=60, send_timeout=5))
    records = [r for n in range(6) for r in call(n)]
    store.add(records, d.sink_names)
    t0 = time.monotonic()
    async with running(d):
        # The five other calls are delivered whole long before the hung one's 5 s timeout.
        await sink.wait_for(lambda rs: len(rs) == 15, timeout=4)
    assert max(sink.arrived.values()) - t0 < 2.0
    assert "c0" not in sink.arrived


async def test_calls_go_out_in_parallel_each_in_order(store: OutboxStore) -> None:
    sink = SlowSink(delay=0.02)
    d = Dispatcher(
        store, [sink], RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5, parallel_calls=4)
    )
    calls = [call(n, events=5) for n in range(12)]
    for c in calls:  # interleaved, as calls overlap on a PBX
        store.add(c[:2], d.sink_names)
    for c in calls:
        store.add(c[2:], d.sink_names)
    async with running(d):
        await sink.wait_for(lambda rs: len(rs) == 60, timeout=20)
    for c in calls:
        assert [r for r in sink.records if r.pbx_call_id == c[0].pbx_call_id] == c
    assert 1 < sink.most_in_flight <= 4  # parallel, and never more than parallel_calls


async def test_a_dead_record_holds_its_call_and_retry_replays_it_in_order(store: OutboxStore) -> None:
    broken = {"on": True}

    def script(d: Delivery) -> Exception | None:
        if broken["on"] and d.record.pbx_call_id == "c1" and d.record.event is Event.INTERNAL:
            return PermanentFailure("401 WRONG_AUTH_TYPE")
        return None

    sink = ScriptedOnce(script)
    d = Dispatcher(store, [sink], FAST)
    store.add(call(1, events=3)[:2], d.sink_names)  # START, INTERNAL (dies)
    store.add(call(2), d.sink_names)
    async with running(d):
        await until(lambda: store.counts()["crm"].get("dead") == 1)
        store.add(call(1, events=3)[2:], d.sink_names)  # the rest of the call arrives: END
        d.notify()
        await sink.wait_for(lambda rs: len([r for r in rs if r.pbx_call_id == "c2"]) == 3)
        await asyncio.sleep(0.2)  # (a chance for a wrong END to go out; the worker is idle now)
        assert [r.event for r in sink.records if r.pbx_call_id == "c1"] == [Event.START]
        ((held, holder, state),) = store.held()
        assert held.record.event is Event.END and state == "dead"
        assert holder == store.list(State.DEAD)[0].id
        broken["on"] = False
        assert store.retry_dead() == 1
        d.notify()
        await sink.wait_for(lambda rs: len([r for r in rs if r.pbx_call_id == "c1"]) == 3)
    assert [r.event for r in sink.records if r.pbx_call_id == "c1"] == [
        Event.START,
        Event.INTERNAL,
        Event.END,
    ]
    assert sink.sent_twice == []


async def test_held_records_age_out_saying_what_holds_them(store: OutboxStore) -> None:
    sink = ScriptedOnce(lambda d: PermanentFailure("400 bad") if d.record.event is Event.START else None)
    d = Dispatcher(store, [sink], RetryPolicy(base=0.01, cap=0.05, max_age=0.4, send_timeout=1))
    store.add(call(1), d.sink_names)
    async with running(d):
        await until(lambda: store.counts()["crm"].get("dead") == 3, timeout=5)
    first, *rest = store.list(State.DEAD)
    assert first.last_error == "400 bad"
    assert all((x.last_error or "").startswith(f"held behind #{first.id}") for x in rest)
    assert sink.records == []
    # A retry replays the whole call, in order, each with a fresh max_age.
    sink.script = lambda d: None
    assert store.retry_dead() == 3
    async with running(Dispatcher(store, [sink], FAST)):
        await sink.wait_for(lambda rs: len(rs) == 3)
    assert [r.event for r in sink.records] == [Event.START, Event.INTERNAL, Event.END]


async def test_a_retry_from_another_process_is_picked_up_without_a_wake_up(store: OutboxStore) -> None:
    broken = {"on": True}
    sink = ScriptedOnce(lambda d: PermanentFailure("nope") if broken["on"] else None)
    d = Dispatcher(store, [sink], FAST)
    store.add(call(1)[:1], d.sink_names)
    async with running(d):
        await until(lambda: store.counts()["crm"].get("dead") == 1)
        broken["on"] = False
        cli = OutboxStore(store.path)  # what "novofon-bridge outbox retry" does, in its own process
        assert cli.retry_dead() == 1
        cli.close()
        await sink.wait_for(lambda rs: len(rs) == 1, timeout=5)  # no notify(): the commit is seen


class ScriptedOnce(MemorySink):
    """Answers as ``script`` says; remembers records that were delivered more than once."""

    def __init__(self, script: object) -> None:
        super().__init__("crm")
        self.script = script
        self.sent_twice: list[CallRecord] = []

    async def send(self, delivery: Delivery) -> None:
        error = self.script(delivery)  # type: ignore[operator]
        if error is not None:
            raise error
        if delivery.record in self.records:
            self.sent_twice.append(delivery.record)
        await super().send(delivery)
