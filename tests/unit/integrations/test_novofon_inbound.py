"""Novofon v1 notifications as the official library reads them (issue 9, item 2), and every sink
taking a cloud call that went through a voice menu (NOTIFY_IVR) and ended in an odd way."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.calls.records import CallRecord, Event, sign
from bridge.directory import Directory, Employee
from bridge.errors import BadRequest
from bridge.http.client import Http
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.local.console import ConsoleSink
from bridge.integrations.local.jsonl import JsonlSink
from bridge.integrations.novofon.inbound import Notification, call_record
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.smsc.sink import SmsSink
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.sink import Sink
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from tests.fakes.bitrix import FakeBitrix, portal_user
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.fakes.smsc import LOGIN, PASSWORD, FakeSmsc
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import bitrix_sink, telegram_sink, until

SECRET = "novofon-api-secret"
MSK = ZoneInfo("Europe/Moscow")
GROUP = "-1001234567890"
NOW = datetime.now(MSK).strftime("%Y-%m-%d %H:%M:%S")
CALL = {
    "call_start": NOW,
    "pbx_call_id": "in_cloud-77",
    "caller_id": "79581114585",
    "called_did": "74951234567",
}


def note(event: str, **fields: str) -> Notification:
    data = {"event": event, **CALL, **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return call_record(data, sign(data, SECRET), SECRET, time.time(), MSK, 86400)


def test_no_money_no_limit_is_one_disposition() -> None:
    r = note(
        "NOTIFY_END", internal="", duration="0", disposition="no money, no limit", status_code="34"
    ).record
    assert r.fields["disposition"] == "no money, no limit"


def test_missing_called_did_and_status_code_are_empty() -> None:
    data = {"event": "NOTIFY_END", **CALL, "duration": "0", "disposition": "busy"}
    del data["called_did"]
    r = call_record(data, sign(data, SECRET), SECRET, time.time(), MSK, 86400).record
    assert r.fields["called_did"] == "" and r.fields["status_code"] == "" and r.fields["internal"] == ""
    with pytest.raises(BadRequest) as e:  # what a sink cannot do without is still required
        bad = {k: v for k, v in data.items() if k != "disposition"}
        call_record(bad, sign(bad, SECRET), SECRET, time.time(), MSK, 86400)
    assert e.value.error == "missing-field"


def test_notify_ivr_is_a_known_event_and_not_an_end() -> None:
    n = note("NOTIFY_IVR", **{"wait_dtmf[digits]": "1"})
    assert n.record.event is Event.IVR and n.record.event not in (Event.END, Event.OUT_END)
    assert list(n.record.fields) == ["event", "call_start", "pbx_call_id", "caller_id", "called_did"]


def test_second_recording_and_answer_after_a_transfer_are_kept() -> None:
    keys = {
        note("NOTIFY_RECORD", call_id_with_rec="1700000000.1").key,
        note("NOTIFY_RECORD", call_id_with_rec="1700000000.2").key,  # the transferred leg's recording
        note("NOTIFY_ANSWER", destination="101", internal="101").key,
        note("NOTIFY_ANSWER", destination="101", internal="102").key,  # answered again after a transfer
    }
    assert len(keys) == 4
    assert note("NOTIFY_RECORD", call_id_with_rec="1700000000.1").key in keys  # a repeat is a repeat


def test_call_id_with_rec_cannot_name_another_file() -> None:
    with pytest.raises(BadRequest) as e:
        note("NOTIFY_RECORD", call_id_with_rec="../../../etc/shadow")
    assert e.value.error == "bad-field"


# -- every sink takes it -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(*fakes: object) -> AsyncIterator[None]:
    for f in fakes:
        await f.start()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for f in fakes:
            await f.stop()  # type: ignore[attr-defined]


async def deliver(store: OutboxStore, sinks: list[Sink], records: list[CallRecord]) -> None:
    d = Dispatcher(store, sinks, RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5))
    store.add(records, d.sink_names)
    task = asyncio.create_task(d.run())
    try:
        await until(lambda: not store.list(State.PENDING), timeout=15, interval=0.02)
    finally:
        await d.stop(1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_sink_takes_a_cloud_call_through_a_voice_menu(tmp_path: Path) -> None:
    records = [
        note("NOTIFY_START").record,
        note("NOTIFY_IVR").record,
        note("NOTIFY_INTERNAL", internal="101").record,
        note(
            "NOTIFY_END",
            called_did=None,  # missing: empty
            internal="101",
            duration="0",
            disposition="no money, no limit",
            is_recorded="0",
        ).record,
    ]
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    directory = Directory(store.db)
    directory.upsert(Employee("101", "Иван", bitrix_user_id="11"))
    tg, bx, crm, smsc = (
        FakeTelegram(),
        FakeBitrix(users=[portal_user(11, "101", "Иван")]),
        NovofonReceiver(SECRET),
        FakeSmsc(),
    )
    console = io.StringIO()
    http = Http(timeout=5)
    try:
        async with serving(tg, bx, crm, smsc):
            sinks: list[Sink] = [
                telegram_sink(
                    TelegramSettings(token=TOKEN, api_url=tg.url, group_chats=[GROUP], per_chat_rate=100),
                    http,
                    store,
                    directory,
                ),
                bitrix_sink(
                    Bitrix24Settings(webhook_url=bx.webhook_url, rate=100, burst=100), http, store, directory
                ),
                WebhookSink("crm", f"{crm.url}/zadarma_webhook", SECRET, http),
                ConsoleSink(console),
                JsonlSink(tmp_path / "records.jsonl"),
                SmsSink(
                    SmsSettings(
                        enabled=True, api_url=f"{smsc.url}/sys/send.php", login=LOGIN, password=PASSWORD
                    ),
                    http,
                    StateStore(store.db),
                ),
            ]
            await deliver(store, sinks, records)
    finally:
        await http.close()
        dead = store.list(State.DEAD)
        store.close()
    assert [(d.sink, d.record.fields["event"], d.last_error) for d in dead] == []
    assert [r["event"] for r in crm.received] == [
        "NOTIFY_START",
        "NOTIFY_IVR",
        "NOTIFY_INTERNAL",
        "NOTIFY_END",
    ]
    assert crm.rejected == 0
    assert "в голосовом меню" in console.getvalue()
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == [r["event"] for r in crm.received]
    (text,) = tg.texts(GROUP)  # one message for the call, edited; the menu changed nothing in it
    assert "+7 958 111-45-85" in text
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "304"
    (sms,) = smsc.sent  # missed: the caller gets the SMS
    assert sms["phones"] == "79581114585"
