"""A full disk, read-only or corrupt storage: degrade, say so once, recover by itself; at start, a
message that names the file and what to do. On a real size-limited tmpfs (tests/disk.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import structlog.testing

from bridge.app import App
from bridge.calls.records import sign
from bridge.cli.main import main
from bridge.config import Config, HttpConfig
from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.local.settings import JsonlSettings
from bridge.integrations.novofon.settings import NovofonSettings
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.jobs import Jobs
from bridge.outbox.store import OutboxStore
from tests.disk import SmallDisk, small_disk
from tests.fakes.bitrix import PORTAL_USERS, FakeBitrix
from tests.helpers import MemorySink, base_url, bitrix_sink, offline_config, until, with_sinks
from tests.transcripts import replay

SECRET = "novofon-api-secret"
START = {
    "event": "NOTIFY_START",
    "call_start": datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S"),  # fresh
    "pbx_call_id": "in_cloud-7",
    "caller_id": "79581114585",
    "called_did": "74951234567",
}
END = {
    **START,
    "event": "NOTIFY_END",
    "internal": "101",
    "duration": "15",
    "disposition": "answered",
    "status_code": "16",
    "is_recorded": "0",
    "call_id_with_rec": "",
}


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "state") as d:
        yield d


def config(disk: SmallDisk) -> Config:
    cfg = offline_config(
        disk.path,
        http=HttpConfig(port=0),
        novofon=NovofonSettings(api_secret=SECRET),
        outbox=dataclasses.replace(offline_config(disk.path).outbox, retry_base=0.05, retry_cap=0.2),
    )
    return with_sinks(cfg, jsonl=JsonlSettings(enabled=False))


@contextlib.asynccontextmanager
async def running(app: App) -> Any:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await until(lambda: app.http_server is not None and app.http_server.port != 0, interval=0.01)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def events(logs: list[dict[str, Any]], name: str) -> int:
    return sum(1 for e in logs if e.get("event") == name)


async def post(s: aiohttp.ClientSession, url: str, data: dict[str, str]) -> aiohttp.ClientResponse:
    async with s.post(url, data=data, headers={"Signature": sign(data, SECRET)}) as resp:
        await resp.read()
        return resp


async def test_webhooks_answer_503_while_the_disk_is_full_and_store_again_after(disk: SmallDisk) -> None:
    app = App(config(disk))
    async with running(app), aiohttp.ClientSession() as s:
        base = base_url(app)
        assert (await post(s, f"{base}/call", START)).status == 200
        disk.fill()
        resp = await post(s, f"{base}/call", END)
        assert resp.status == 503 and resp.headers["Retry-After"] == "30"
        async with s.post(f"{base}/call", data=END, headers={"Signature": sign(END, SECRET)}) as r:
            assert (await r.json())["error"] == "storage-unavailable"
        async with s.get(f"{base}/healthz") as r:
            assert r.status == 200  # nothing died: the daemon degrades, it does not crash
        disk.free()
        assert (await post(s, f"{base}/call", END)).status == 200  # Novofon's repeat gets in
        rows = app.store.db.execute("SELECT event FROM records ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["NOTIFY_START", "NOTIFY_END"]
        assert all(t["state"] == "running" for t in app.supervisor.status().values() if t["required"])


async def test_calls_are_tracked_in_memory_and_committed_in_order_when_space_returns(disk: SmallDisk) -> None:
    sink = MemorySink()
    app = App(config(disk), extra_sinks=[sink])
    first, second = replay("inbound_answered"), replay("outbound_busy")
    with structlog.testing.capture_logs() as logs:
        async with running(app):
            disk.fill()
            app.publish(first)
            app.publish(second[:1])
            app.publish(second[1:])
            assert app.pipeline.unsaved == len(first) + len(second)
            assert app.store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0
            await until(lambda: app.store.health.failed_writes >= 5, timeout=10)  # the timer retries
            disk.free()
            await sink.wait_for(lambda rs: len(rs) == len(first) + len(second), timeout=15)
            assert app.pipeline.unsaved == 0
    for call in (first, second):  # every record once, each call in order (calls go out in parallel)
        got = [r.fields for r in sink.records if r.pbx_call_id == call[0].pbx_call_id]
        assert got == [r.fields for r in call]
    assert events(logs, "storage.degraded") == 1 and events(logs, "storage.recovered") == 1


async def test_the_dispatcher_holds_a_call_until_its_outcome_is_written(disk: SmallDisk) -> None:
    store = OutboxStore(disk.path / "outbox.sqlite3")
    try:
        sink = MemorySink("crm")
        records = replay("outbound_busy") + replay("outbound_answered")  # 2 + 4 records, two calls
        store.add(records, ["crm"])
        d = Dispatcher(store, [sink], RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5))
        disk.fill()
        task = asyncio.create_task(d.run())
        try:
            # Each call's first record goes out; its "delivered" cannot be written, so the call
            # waits (nothing is sent twice, nothing out of order) and the dispatcher lives on.
            await sink.wait_for(lambda rs: len(rs) == 2)
            await until(lambda: store.health.failed_writes >= 6, timeout=10)
            assert len(sink.records) == 2 and not task.done()
            disk.free()
            await sink.wait_for(lambda rs: len(rs) == len(records), timeout=15)
            await until(lambda: store.counts() == {"crm": {"delivered": len(records)}})
        finally:
            await d.stop(0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for call in {r.pbx_call_id for r in records}:  # each record once, each call in its order
            assert [r for r in sink.records if r.pbx_call_id == call] == [
                r for r in records if r.pbx_call_id == call
            ]
    finally:
        store.close()


async def test_a_sink_that_cannot_save_its_state_sends_nothing_until_it_can(disk: SmallDisk) -> None:
    store = OutboxStore(disk.path / "outbox.sqlite3")
    http = Http(timeout=5)
    bx = FakeBitrix(users=PORTAL_USERS)
    await bx.start()
    try:
        directory = Directory(store.db)
        directory.upsert(Employee("101", "Иван", bitrix_user_id="11"))
        directory.upsert(Employee("102", "Пётр", bitrix_user_id="12"))
        sink = bitrix_sink(
            Bitrix24Settings(webhook_url=bx.webhook_url, rate=100, burst=100), http, store, directory
        )
        records = replay("outbound_busy")
        store.add(records, [sink.name])
        disk.fill()
        d = Dispatcher(store, [sink], RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5))
        task = asyncio.create_task(d.run())
        try:
            # A register is remembered before it is sent; it cannot be: nothing goes to Bitrix24.
            await until(lambda: store.health.failed_writes >= 3, timeout=10)
            assert bx.log == [] and not task.done()
            disk.free()
            await until(lambda: store.counts() == {"bitrix24": {"delivered": len(records)}}, timeout=15)
        finally:
            await d.stop(0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        methods = [m for m, _ in bx.log]
        assert methods == ["telephony.externalcall.register", "telephony.externalcall.finish"]
    finally:
        await http.close()
        await bx.stop()
        store.close()


async def test_a_job_that_ran_is_not_run_again_while_its_outcome_cannot_be_written(disk: SmallDisk) -> None:
    store = OutboxStore(disk.path / "outbox.sqlite3")
    try:
        jobs = Jobs(store.db, health=store.health)
        ran: list[dict[str, Any]] = []

        async def ring(payload: dict[str, Any]) -> None:
            ran.append(payload)

        jobs.handle("click2call", ring)
        assert jobs.add("click2call", {"n": 1})
        disk.fill()
        with pytest.raises(Exception, match="full"):
            jobs.add("click2call", {"n": 2})  # a webhook's job is refused (its route answers 503)
        await jobs.work()
        await jobs.work()
        assert ran == [{"n": 1}] and jobs.pending() == 1  # ran once; its DELETE waits
        disk.free()
        await jobs.work()
        assert ran == [{"n": 1}] and jobs.pending() == 0
    finally:
        store.close()


def test_a_corrupt_database_at_start_names_the_file_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage:\n  dir: {tmp_path}\n")
    (tmp_path / "outbox.sqlite3").write_bytes(b"this is not a database, just some bytes" * 100)
    for command in (["outbox"], ["run"]):
        assert main([*command, "-c", str(cfg)]) == 4
        err = capsys.readouterr().err
        assert str(tmp_path / "outbox.sqlite3") in err and "повреждён" in err and ".broken" in err
        assert "Traceback" not in err


def test_an_unwritable_storage_dir_at_start_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_disk(tmp_path / "ro"):
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")], check=True)
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"storage:\n  dir: {tmp_path / 'ro'}\n")
        assert main(["run", "-c", str(cfg)]) == 4
        err = capsys.readouterr().err
        assert str(tmp_path / "ro" / "outbox.sqlite3") in err and "только для чтения" in err
        assert "Traceback" not in err
