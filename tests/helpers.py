"""Shared test helpers: a recording sink and condition waits (never fixed sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge.app import App
from bridge.calls.records import CallRecord
from bridge.config import AgiConfig, Config, HttpConfig
from bridge.config import load as load_config
from bridge.directory import Directory
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.bitrix24.sink import Bitrix24Sink
from bridge.integrations.telegram.api import TelegramApi
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.sink import TelegramSink
from bridge.outbox.state import StateStore
from bridge.outbox.store import Delivery, OutboxStore

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


def offline_config(tmp: Path, **changes: Any) -> Config:
    """The built-in defaults with Asterisk unreachable (the daemon keeps retrying AMI, as in real
    life), no console sink, HTTP on a free port, state in ``tmp`` and quick retries."""
    cfg = load_config(None)
    ami = dataclasses.replace(cfg.asterisk.ami, port=1, reconnect_max_delay=1)
    cfg = dataclasses.replace(
        cfg,
        asterisk=dataclasses.replace(cfg.asterisk, ami=ami),
        sinks=dataclasses.replace(cfg.sinks, console=dataclasses.replace(cfg.sinks.console, enabled=False)),
        http=HttpConfig(port=0),
        storage=dataclasses.replace(cfg.storage, dir=str(tmp)),
        outbox=dataclasses.replace(cfg.outbox, retry_base=0.05, retry_cap=0.2),
        agi=AgiConfig(port=0),  # any free port: daemons in tests never collide
    )
    return dataclasses.replace(cfg, **changes)


def with_sinks(cfg: Config, **sinks: Any) -> Config:
    return dataclasses.replace(cfg, sinks=dataclasses.replace(cfg.sinks, **sinks))


@contextlib.asynccontextmanager
async def running_app(cfg: Config) -> AsyncIterator[App]:
    """The real daemon, in this event loop; stopped (SIGTERM's path) on the way out."""
    app = App(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    if cfg.http.enabled:
        await until(lambda: app.http_server is not None and app.http_server.port != 0, interval=0.01)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def base_url(app: App) -> str:
    assert app.http_server is not None
    return f"http://127.0.0.1:{app.http_server.port}"


def telegram_sink(
    settings: TelegramSettings, http: Http, store: OutboxStore, directory: Directory
) -> TelegramSink:
    """The Telegram sink as the integration builds it (its own API client, typed state)."""
    return TelegramSink(settings, TelegramApi(settings, http), StateStore(store.db), directory)


def bitrix_sink(
    settings: Bitrix24Settings, http: Http, store: OutboxStore, directory: Directory
) -> Bitrix24Sink:
    """The Bitrix24 sink as the integration builds it (its own REST client, typed state)."""
    state = StateStore(store.db)
    return Bitrix24Sink(settings, BitrixClient(settings, http, state), state, directory, "Europe/Moscow")
