"""Shared by the integrations' tests: a store, a directory, one HTTP session, delivery to the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord
from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.sink import Sink
from bridge.outbox.store import OutboxStore, State
from tests.helpers import until

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5)
GROUP, IVAN, PETR = "-1001234567890", "5550101", "5550102"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutboxStore]:
    s = OutboxStore(tmp_path / "outbox.sqlite3")
    yield s
    s.close()


@pytest.fixture
def directory(store: OutboxStore) -> Directory:
    d = Directory(store.db)
    d.upsert(Employee("101", "Иван", bitrix_user_id="11", telegram_chat_id=IVAN))
    d.upsert(Employee("102", "Пётр", bitrix_user_id="12", telegram_chat_id=PETR))
    return d


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    h = Http(timeout=5)
    yield h
    await h.close()


@contextlib.asynccontextmanager
async def serving(*fakes: object) -> AsyncIterator[None]:
    for f in fakes:
        await f.start()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for f in fakes:
            await f.stop()  # type: ignore[attr-defined]


async def deliver(
    store: OutboxStore,
    sinks: list[Sink],
    records: list[CallRecord],
    policy: RetryPolicy = FAST,
    timeout: float = 15,
) -> None:
    """Commit ``records`` and run the dispatcher until every delivery is settled."""
    d = Dispatcher(store, sinks, policy)
    store.add(records, d.sink_names)
    task = asyncio.create_task(d.run())
    try:
        await until(lambda: settled(store), timeout=timeout, interval=0.02)
    finally:
        await d.stop(1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def settled(store: OutboxStore) -> bool:
    """Nothing left to send: every pending delivery waits behind a dead one of its call."""
    held = {d.id for d, _, state in store.held(1000) if state == State.DEAD.value}
    return all(d.id in held for d in store.list(State.PENDING, 1000))


def with_recording(records: list[CallRecord], path: Path) -> list[CallRecord]:
    return [
        CallRecord(r.fields, {**r.meta, "recording_file": str(path)})
        if r.fields.get("call_id_with_rec")
        else r
        for r in records
    ]
