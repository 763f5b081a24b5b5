"""Real calls through the lab, delivered to fake Telegram, Bitrix24 and a Novofon-webhook CRM.

Includes the faults: a sink down for the whole call, 429 storms, and kill -9 of the daemon between
commit and send and between send and acknowledgement; then a restart. Everything must arrive, in
order, without duplicates where the far side allows deduplication."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from bridge.app import App
from bridge.config import Config, DirectoryConfig, EmployeeConfig
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.novofon.settings import WebhookSettings
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.outbox.store import OutboxStore, State
from bridge.pbx.ami import AmiConnection
from tests.conftest import hangup_all, lab_config
from tests.fakes.base import Fault
from tests.fakes.bitrix import ExternalCall, FakeBitrix, portal_user, query_limit
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.fakes.telegram import TOKEN, FakeTelegram, too_many_requests
from tests.helpers import until
from tests.lab import lab as L
from tests.lab.calls import call_in, call_out

pytestmark = pytest.mark.lab

GROUP, IVAN = "-1001000000001", "700101"
SECRET = "novofon-api-secret-for-the-lab"


@dataclasses.dataclass
class Fakes:
    tg: FakeTelegram
    bx: FakeBitrix
    crm: NovofonReceiver

    def sinks_yaml(self) -> dict[str, object]:
        return {
            "console": {"enabled": False},
            "telegram": {
                "enabled": True,
                "token": TOKEN,
                "api_url": self.tg.url,
                "group_chats": [GROUP],
                "bot_updates": "off",  # these tests are about delivery; the bot has its own
                "per_chat_rate": 50,
                "group_per_minute": 3000,
            },
            "bitrix24": {
                "enabled": True,
                "webhook_url": self.bx.webhook_url,
                "default_user_id": "1",
                "rate": 50,
            },
            "webhooks": [{"name": "crm", "url": f"{self.crm.url}/zadarma_webhook", "secret": SECRET}],
        }

    @staticmethod
    def directory_yaml() -> dict[str, object]:
        return {
            "employees": {
                "101": {"name": "Иван", "telegram_chat_id": IVAN, "bitrix_user_id": "11"},
                "102": {"name": "Пётр", "bitrix_user_id": "12"},
                "104": {"name": "Занятой", "bitrix_user_id": "14"},
            }
        }


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    users = [portal_user(1, "", "Администратор Портала")] + [
        portal_user(uid, ext, name)
        for ext, uid, name in (("101", 11, "Иван И"), ("102", 12, "Пётр П"), ("104", 14, "Занятой З"))
    ]  # the strict fake refuses a USER_ID the portal does not have
    f = Fakes(FakeTelegram(), FakeBitrix(users=users), NovofonReceiver(SECRET))
    for server in (f.tg, f.bx, f.crm):
        await server.start()
    yield f
    for server in (f.tg, f.bx, f.crm):
        await server.stop()


def config_with_fakes(lab: L.Lab, state: Path, f: Fakes) -> Config:
    cfg = lab_config(lab, state)
    s = f.sinks_yaml()
    tg, bx, hook = s["telegram"], s["bitrix24"], s["webhooks"][0]  # type: ignore[index]
    sinks = dataclasses.replace(
        cfg.sinks,
        console=dataclasses.replace(cfg.sinks.console, enabled=False),
        telegram=TelegramSettings(**tg),  # type: ignore[arg-type]
        bitrix24=Bitrix24Settings(**bx),  # type: ignore[arg-type]
        webhooks=[WebhookSettings(**hook)],  # type: ignore[arg-type]
    )
    outbox = dataclasses.replace(cfg.outbox, retry_base=0.2, retry_cap=1.0)
    employees = {ext: EmployeeConfig(**e) for ext, e in f.directory_yaml()["employees"].items()}  # type: ignore[attr-defined]
    return dataclasses.replace(cfg, sinks=sinks, outbox=outbox, directory=DirectoryConfig(employees))


@contextlib.asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await asyncio.wait_for(app.ami.connected.wait(), 20)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def settled(app_or_store: App | OutboxStore, records: int, sinks: int = 4) -> bool:
    store = app_or_store.store if isinstance(app_or_store, App) else app_or_store
    counts = store.counts()
    return len(counts) == sinks and all(
        c.get("delivered", 0) + c.get("dead", 0) == records and not c.get("pending") for c in counts.values()
    )


async def test_calls_reach_telegram_bitrix_and_the_crm(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection, phones: AmiConnection, fakes: Fakes
) -> None:
    app = App(config_with_fakes(lab, tmp_path, fakes))
    async with running(app):
        await call_in(provider, L.DID_101, talk=2, name="Иван Петров")  # answered by 101, recorded
        await until(lambda: settled(app, 5), timeout=40)
        await call_in(provider, L.DID_104)  # busy: a missed call
        await until(lambda: settled(app, 8), timeout=40)
        await call_out(phones, "101", L.NUM_ANSWER)  # outbound, answered, recorded
        await until(lambda: settled(app, 12), timeout=40)
        assert not app.store.list(State.DEAD)

    # Telegram: one message per call in the group, each edited in place; 101's calls in 101's chat.
    group = fakes.tg.texts(GROUP)
    assert len(group) == 3 and len(fakes.tg.sent_texts) == 5  # 3 in the group, 2 in Ivan's chat
    answered, missed, outbound = group
    assert answered.startswith("✅") and "(Иван Петров)" in answered and "Ответил: 101" in answered
    assert missed.startswith("❌ <b>Пропущенный звонок</b>") and "занято" in missed
    assert outbound.startswith("✅") and "Куда: +7 900 111-00-01" in outbound
    assert len(fakes.tg.texts(IVAN)) == 2
    assert sorted(chat for chat, _, _ in fakes.tg.audio) == sorted([GROUP, IVAN, GROUP, IVAN])

    # Bitrix24: three external calls with the right lifecycle.
    calls = list(fakes.bx.calls.values())
    assert [(c.params["TYPE"], c.finish and c.finish["STATUS_CODE"]) for c in calls] == [
        ("2", "200"),
        ("2", "304"),
        ("1", "200"),
    ]
    assert [len(c.records) for c in calls] == [1, 0, 1]
    assert calls[0].shown == {"11"} and calls[0].params["LINE_NUMBER"] == L.DID_101

    # The CRM got every record, signed as Novofon signs them.
    assert fakes.crm.rejected == 0
    assert [r["event"] for r in fakes.crm.received] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_END",
        "NOTIFY_OUT_START",
        "NOTIFY_ANSWER",
        "NOTIFY_OUT_END",
        "NOTIFY_RECORD",
    ]


async def test_sinks_down_for_the_whole_call_then_back(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection, fakes: Fakes
) -> None:
    fakes.tg.fail_next(*[too_many_requests(1)] * 3)
    fakes.bx.fail_next(*[query_limit()] * 3, *[Fault(500)] * 5)
    fakes.crm.fail_next(*[Fault(503)] * 6)
    app = App(config_with_fakes(lab, tmp_path, fakes))
    async with running(app):
        await call_in(provider, L.DID_GROUP, talk=2)
        await until(lambda: settled(app, 6), timeout=60)
    assert len(fakes.tg.texts(GROUP)) == 1 and len(fakes.tg.sent_texts) == 2  # group + Ivan (101 rang)
    (call,) = fakes.bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200" and len(call.records) == 1
    assert [r["event"] for r in fakes.crm.received] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]


# -- kill -9 ------------------------------------------------------------------------------------


def write_config(lab: L.Lab, state: Path, f: Fakes) -> Path:
    cfg = {
        "asterisk": {
            "ami": {"host": L.PBX_IP, "secret": L.AMI_SECRET, "reconnect_max_delay": 1},
            "recordings_dir": str(lab.recordings_dir),
            "pbx_recordings_dir": lab.pbx_recordings_dir,
        },
        "storage": {"dir": str(state)},
        "http": {"port": 0},
        "logging": {"format": "json"},
        "outbox": {"retry_base": 0.2, "retry_cap": 1.0, "send_timeout": 30},
        "sinks": f.sinks_yaml(),
        "directory": f.directory_yaml(),
    }
    path = state / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path


async def start_daemon(config: Path) -> asyncio.subprocess.Process:
    """`novofon-bridge run` in a process of its own; returns once it has resynced with Asterisk."""
    log = config.parent / "daemon.log"
    seen = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "run",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=out,
        )
    await until(lambda: b"ami.resynced" in log.read_bytes()[seen:] or proc.returncode is not None, timeout=20)
    assert proc.returncode is None, log.read_text()
    return proc


def kill9(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)


async def test_kill9_between_commit_and_send_and_between_send_and_ack(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection, fakes: Fakes
) -> None:
    config = write_config(lab, tmp_path, fakes)
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    # 1. Everything far away hangs: records get committed, nothing gets through. kill -9.
    for fake in (fakes.tg, fakes.bx, fakes.crm):
        fake.fail_next(*[Fault(hang=3600)] * 50)
    daemon = await start_daemon(config)
    try:
        await call_in(provider, L.DID_101, talk=1)
        await until(lambda: store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 5, timeout=30)
        kill9(daemon)
        await daemon.wait()
    finally:
        if daemon.returncode is None:
            kill9(daemon)
        await hangup_all(lab)
    assert fakes.tg.sent_texts == [] and fakes.bx.calls == {} and fakes.crm.received == []

    # 2. The far sides come back, but each does the work and then never answers (the ack is lost):
    #    kill -9 again while those requests hang.
    for fake in (fakes.tg, fakes.bx, fakes.crm):
        fake.faults.clear()
        fake.requests = 0
    fakes.tg.fail_next(Fault(processed=True, hang=3600))  # sendMessage in the group is done, unacked
    fakes.bx.fail_next(Fault(processed=True, hang=3600))  # register is done, unacked
    fakes.crm.fail_next(Fault(processed=True, hang=3600))  # NOTIFY_START is stored, unacked
    daemon = await start_daemon(config)
    try:
        await until(
            lambda: fakes.tg.requests >= 1 and fakes.bx.requests >= 1 and fakes.crm.requests >= 1, timeout=30
        )
        kill9(daemon)
        await daemon.wait()
    finally:
        if daemon.returncode is None:
            kill9(daemon)

    # 3. A clean restart delivers everything.
    daemon = await start_daemon(config)
    try:
        await until(lambda: settled(store, 5), timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 30) == 0
        store.close()

    # Bitrix24 and the CRM deduplicate on EXTERNAL_CALL_ID / Idempotency-Key: exactly one of each.
    (call,) = fakes.bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200"
    assert [r["event"] for r in fakes.crm.received] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    # Telegram has no idempotency key: the first message of a call, sent but never acknowledged
    # before the crash, is sent again (the one duplicate Telegram allows us no way to avoid);
    # after that the stored message id is edited, never re-sent.
    group = fakes.tg.texts(GROUP)
    assert len(group) == 2 and group[-1].startswith("✅")
    assert len(fakes.tg.texts(IVAN)) == 1


# -- Bitrix24 click-to-call -------------------------------------------------------------------------

APP_TOKEN = "lab-bitrix-application-token"


def with_bitrix_events(cfg: Config) -> Config:
    bx = dataclasses.replace(cfg.sinks.bitrix24, application_token=APP_TOKEN, sync_interval=0)
    return dataclasses.replace(cfg, sinks=dataclasses.replace(cfg.sinks, bitrix24=bx))


async def click(app: App, call_id: str, user_id: str, phone: str) -> str:
    assert app.http_server is not None
    url = f"http://127.0.0.1:{app.http_server.port}{app.cfg.sinks.bitrix24.events_path}"
    form = {
        "event": "ONEXTERNALCALLSTART",
        "data[PHONE_NUMBER]": phone,
        "data[USER_ID]": user_id,
        "data[CALL_ID]": call_id,
        "data[CRM_ENTITY_TYPE]": "CONTACT",
        "data[CRM_ENTITY_ID]": "42",
        "ts": "1700000000",
        "auth[domain]": "example.bitrix24.ru",
        "auth[application_token]": APP_TOKEN,
    }
    async with aiohttp.ClientSession() as s, s.post(url, data=form) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["result"])


async def test_bitrix_click_to_call_reports_on_bitrix_call_id(
    lab: L.Lab, tmp_path: Path, fakes: Fakes
) -> None:
    fakes.bx.calls["externalCall.777"] = ExternalCall("externalCall.777", {"TYPE": "1"})  # made by the click
    app = App(with_bitrix_events(config_with_fakes(lab, tmp_path, fakes)))
    async with running(app):
        assert await click(app, "externalCall.777", "12", "+7 (900) 111-00-01") == "queued"
        assert await click(app, "externalCall.777", "12", "+7 (900) 111-00-01") == "repeat"
        await until(lambda: settled(app, 4), timeout=40)  # OUT_START, ANSWER, OUT_END, RECORD
        events = [r[0] for r in app.store.db.execute("SELECT event FROM records ORDER BY id")]
        assert events == ["NOTIFY_OUT_START", "NOTIFY_ANSWER", "NOTIFY_OUT_END", "NOTIFY_RECORD"]
    assert [m for m, _ in fakes.bx.log if m.endswith("register")] == []  # reported on Bitrix24's own CALL_ID
    call = fakes.bx.calls["externalCall.777"]
    assert call.finish is not None and (call.finish["STATUS_CODE"], call.finish["USER_ID"]) == ("200", "12")
    assert len(call.records) == 1
    await hangup_all(lab)


async def test_bitrix_click_to_call_employee_busy_finishes_the_card(
    lab: L.Lab, tmp_path: Path, fakes: Fakes
) -> None:
    fakes.bx.calls["externalCall.888"] = ExternalCall("externalCall.888", {"TYPE": "1"})
    app = App(with_bitrix_events(config_with_fakes(lab, tmp_path, fakes)))
    async with running(app):
        assert await click(app, "externalCall.888", "14", "79001110001") == "queued"  # 104 is busy
        await until(lambda: settled(app, 1), timeout=40)
    call = fakes.bx.calls["externalCall.888"]
    assert call.finish is not None and call.finish["STATUS_CODE"] == "486"
    await hangup_all(lab)
