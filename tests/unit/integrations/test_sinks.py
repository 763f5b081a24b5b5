"""Telegram, Bitrix24 and webhook sinks through the real outbox, against loopback fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.directory import Directory
from bridge.http.client import Http
from bridge.integrations.bitrix24.settings import Bitrix24Settings, BitrixApp
from bridge.integrations.novofon.webhook_sink import WebhookSink
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.state import CallbackOrigin, save_callback
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from tests.fakes.base import Fault
from tests.fakes.bitrix import CLIENT_ID, CLIENT_SECRET, PORTAL_USERS, FakeBitrix, query_limit
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.fakes.telegram import TOKEN, FakeTelegram, too_many_requests
from tests.helpers import bitrix_sink, telegram_sink
from tests.transcripts import replay
from tests.unit.integrations.conftest import FAST, GROUP, IVAN, PETR, deliver, serving, with_recording

# -- Telegram -----------------------------------------------------------------------------------


def tg_settings(url: str, **kw: object) -> TelegramSettings:
    base = TelegramSettings(
        token=TOKEN,
        api_url=url,
        group_chats=(GROUP,),
        per_chat_rate=100,
        group_per_minute=6000,
        global_rate=1000,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def test_telegram_one_message_per_call_edited_in_place(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    tg = FakeTelegram()
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 1000)
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        await deliver(store, [sink], with_recording(replay("inbound_ring_group"), wav))
    for chat in (GROUP, IVAN, PETR):  # the group and both employees whose phones rang
        (text,) = tg.texts(chat)
        assert "✅ <b>Разговор состоялся</b>" in text
        assert "Кто звонит: +7 958 111-45-85 (Иван Петров)" in text
        assert "Ответил: 101" in text and "разговор 0:02" in text
    # START sends; INTERNAL, INTERNAL, ANSWER, END and RECORD ("запись ниже") edit the same message.
    assert tg.edits[GROUP] == 5 and len(tg.sent_texts) == 3
    assert sorted(c for c, _, _ in tg.audio) == sorted([GROUP, IVAN, PETR])


async def test_telegram_missed_call_is_marked_and_html_is_escaped(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    records = [
        CallRecord(r.fields, {**r.meta, "caller_name": "<ООО «Рога & Копыта»>"})
        for r in replay("inbound_missed")
    ]
    async with serving(tg):
        await deliver(store, [telegram_sink(tg_settings(tg.url), http, store, directory)], records)
    (text,) = tg.texts(GROUP)
    assert text.startswith("❌ <b>Пропущенный звонок</b>")
    assert "(&lt;ООО «Рога &amp; Копыта»&gt;)" in text
    assert "Итог: нет ответа" in text


async def test_telegram_callback_result_names_the_leg_that_failed(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    """«Перезвонить»: the employee's busy phone is not the client's busy line."""
    tg = FakeTelegram()
    tg.chats[GROUP] = {5: "❌ Пропущенный звонок"}
    state = StateStore(store.db)
    fields = {
        "call_start": "2026-11-29 10:00:00",
        "caller_id": "74950000100",
        "destination": "79001110001",
        "internal": "104",
        "duration": "0",
        "status_code": "17",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }
    by_employee = make(
        Event.OUT_END,
        {**fields, "pbx_call_id": "out_tg-1", "disposition": "busy"},
        {"direction": "out", "callback_leg": "employee", "leg_end": "busy"},
    )
    by_client = make(
        Event.OUT_END, {**fields, "pbx_call_id": "out_tg-2", "disposition": "busy"}, {"direction": "out"}
    )
    for pbx_call_id in ("out_tg-1", "out_tg-2"):
        save_callback(state, pbx_call_id, CallbackOrigin(GROUP, 5, "❌ Пропущенный звонок", "104"))
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        await deliver(store, [sink], [by_employee])
        assert tg.chats[GROUP][5] == "❌ Пропущенный звонок\n↩️ Не удалось перезвонить: сотрудник 104 занят"
        await deliver(store, [sink], [by_client])
        assert tg.chats[GROUP][5] == "❌ Пропущенный звонок\n↩️ Перезвонили (104): занято, разговор 0:00"


async def test_telegram_429_storm_is_waited_out_without_duplicates(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    tg.fail_next(too_many_requests(1), too_many_requests(1))
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        t0 = asyncio.get_running_loop().time()
        await deliver(
            store, [sink], replay("outbound_busy"), policy=dataclasses.replace(FAST, base=100, cap=100)
        )
        elapsed = asyncio.get_running_loop().time() - t0
    assert elapsed >= 2.0  # retry_after honoured twice, not the policy's 100 s, not immediately
    assert len(tg.texts(GROUP)) == 1 and len(tg.sent_texts) == 2  # the group and 102, once each


async def test_telegram_employee_who_never_started_the_bot_does_not_block_others(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram(blocked={PETR})
    async with serving(tg):
        await deliver(
            store, [telegram_sink(tg_settings(tg.url), http, store, directory)], replay("inbound_ring_group")
        )
    assert tg.texts(PETR) == [] and len(tg.texts(IVAN)) == 1 and len(tg.texts(GROUP)) == 1
    assert store.counts()["telegram"] == {"delivered": 6}


async def test_telegram_recording_too_large_is_said_in_the_chat(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    tg = FakeTelegram()
    wav = tmp_path / "big.wav"
    wav.write_bytes(b"\0" * 3 * 1024 * 1024)
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url, max_upload_mb=1), http, store, directory)
        await deliver(store, [sink], with_recording(replay("outbound_answered"), wav))
    assert tg.audio == []
    assert any("слишком большая для Telegram (3 МБ)" in text for _, text in tg.sent_texts)


async def test_telegram_gives_the_recordings_link_where_it_cannot_upload_the_file(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    """Too big for a bot, or only in the cloud (Novofon 2.0's file_link): the signed link."""
    tg = FakeTelegram()
    wav = tmp_path / "big.wav"
    wav.write_bytes(b"\0" * 3 * 1024 * 1024)
    link = 'https://pbx.example.ru/recordings/big.wav?exp=1&sig=a&b="x"'
    big = [
        CallRecord(r.fields, {**r.meta, "recording_url": link}) if r.event is Event.RECORD else r
        for r in with_recording(replay("outbound_answered"), wav)
    ]
    cloud = [
        CallRecord(r.fields, {"recording_url": "https://x.novofon.ru/r/1.mp3"})
        if r.event is Event.RECORD
        else r
        for r in replay("inbound_answered")
    ]
    assert any(r.event is Event.RECORD for r in cloud)
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url, max_upload_mb=1), http, store, directory)
        await deliver(store, [sink], big + cloud)
    assert tg.audio == [] and not store.list(State.DEAD)
    texts = [text for _, text in tg.sent_texts]
    escaped = "https://pbx.example.ru/recordings/big.wav?exp=1&amp;sig=a&amp;b=&quot;x&quot;"
    assert f'(3 МБ): она на сервере АТС, <a href="{escaped}">big.wav</a>' in "\n".join(texts)
    assert '🎙 Запись разговора: <a href="https://x.novofon.ru/r/1.mp3">прослушать</a>' in texts


async def test_telegram_bad_token_is_a_permanent_failure(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram(token="1:other-token-aaaaaaaaaaaaaaaaaaaa")
    async with serving(tg):
        await deliver(
            store, [telegram_sink(tg_settings(tg.url), http, store, directory)], replay("outbound_busy")[:1]
        )
    (dead,) = store.list(State.DEAD)
    assert "check sinks.telegram.token" in (dead.last_error or "")
    assert TOKEN not in (dead.last_error or "")


# -- Bitrix24 -----------------------------------------------------------------------------------


def bx_settings(url: str, **kw: object) -> Bitrix24Settings:
    base = Bitrix24Settings(webhook_url=url, rate=100, burst=100)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def test_bitrix_inbound_ring_group_lifecycle(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF" + b"\1" * 300)
    records = with_recording(replay("inbound_ring_group"), wav)
    async with serving(bx):
        await deliver(store, [bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)], records)
    (call,) = bx.calls.values()
    p = call.params
    assert (p["TYPE"], p["PHONE_NUMBER"], p["LINE_NUMBER"], p["EXTERNAL_CALL_ID"], p["USER_ID"]) == (
        "2",
        "79581114585",
        "74950000100",
        records[0].pbx_call_id,
        "11",
    )
    assert p["CALL_START_DATE"].endswith("+03:00")
    assert call.shown == {"11", "12"} and call.hidden == {"12"}
    assert call.finish is not None
    assert (call.finish["STATUS_CODE"], call.finish["DURATION"], call.finish["USER_ID"]) == ("200", "2", "11")
    assert call.records == [("rec.wav", 408)]  # 304 bytes, base64
    assert [m for m, _ in bx.log].count("telephony.externalcall.register") == 1


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("inbound_missed", "304"),
        ("inbound_busy", "304"),
        ("outbound_busy", "486"),
        ("outbound_no_answer", "480"),
    ],
)
async def test_bitrix_status_codes(
    store: OutboxStore, http: Http, directory: Directory, name: str, status: str
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url, default_user_id="1"), http, store, directory)
        await deliver(store, [sink], replay(name))
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == status
    assert call.params["TYPE"] == ("2" if name.startswith("inbound") else "1")


async def test_bitrix_query_limit_is_retried_without_registering_twice(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    bx.fail_next(query_limit(), query_limit(), Fault(500), Fault(hang=30))
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)
        await deliver(
            store, [sink], replay("outbound_answered"), policy=dataclasses.replace(FAST, send_timeout=1)
        )
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200"
    assert store.counts()["bitrix24"] == {"delivered": 4}


async def test_bitrix_webhook_refused_by_the_portal_is_dead_with_advice(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(app_only=True, users=PORTAL_USERS)
    async with serving(bx):
        await deliver(
            store,
            [bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)],
            replay("outbound_busy"),
        )
    dead = store.list(State.DEAD)
    assert dead and "configure sinks.bitrix24.app" in (dead[0].last_error or "")


async def test_bitrix_application_mode_refreshes_tokens(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(app_only=True, users=PORTAL_USERS)
    async with serving(bx):
        app = BitrixApp(
            portal_url=bx.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token="refresh-0",
            oauth_url=f"{bx.url}/oauth/token/",
        )
        sink = bitrix_sink(bx_settings("", app=app), http, store, directory)
        await deliver(store, [sink], replay("outbound_busy")[:1])
        bx.expire_tokens()
        await deliver(store, [sink], replay("outbound_busy")[1:])
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "486"
    assert bx.refreshes == 2  # the first token, then a refresh when it expired
    assert StateStore(store.db).get("bitrix24", "oauth") is not None


# -- Novofon-compatible webhooks ----------------------------------------------------------------


async def test_webhook_posts_signed_form_fields_that_a_novofon_crm_accepts(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    crm = NovofonReceiver(secret="novofon-api-secret")
    crm.fail_next(Fault(502), Fault(hang=30))
    records = replay("inbound_answered") + replay("outbound_busy")
    async with serving(crm):
        sink = WebhookSink("crm", f"{crm.url}/zadarma_webhook", "novofon-api-secret", http)
        await deliver(store, [sink], records, policy=dataclasses.replace(FAST, send_timeout=1))
    assert crm.rejected == 0
    assert crm.received == [r.fields for r in records]


async def test_webhook_with_the_wrong_secret_is_rejected_and_dead_lettered(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    crm = NovofonReceiver(secret="the-real-secret")
    async with serving(crm):
        sink = WebhookSink("crm", f"{crm.url}/zadarma_webhook", "a-wrong-secret", http)
        await deliver(store, [sink], replay("outbound_busy"))
    # The first record died; the second waits behind it (never sent out of order).
    assert crm.received == [] and crm.rejected == 1
    (dead,) = store.list(State.DEAD)
    assert "HTTP 401" in (dead.last_error or "")
    ((held, holder, _),) = store.held()
    assert holder == dead.id and held.record.fields["event"] == "NOTIFY_OUT_END"


async def test_webhook_event_filter(store: OutboxStore, http: Http, directory: Directory) -> None:
    crm = NovofonReceiver(secret="s")
    async with serving(crm):
        sink = WebhookSink("crm", f"{crm.url}/zadarma_webhook", "s", http, frozenset({"NOTIFY_END"}))
        await deliver(store, [sink], replay("inbound_answered"))
    assert [r["event"] for r in crm.received] == ["NOTIFY_END"]


async def test_bitrix_recording_over_the_cap_is_a_dead_letter_or_goes_by_its_link(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    wav = tmp_path / "big.wav"
    wav.write_bytes(b"RIFF" + b"\0" * (2 * 1024 * 1024))  # 2 MB against a 1 MB cap
    records = with_recording(replay("inbound_answered"), wav)
    linked = replay("outbound_answered")
    linked = [
        CallRecord(r.fields, {**r.meta, "recording_file": str(wav), "recording_url": "https://x.ru/r/1.mp3"})
        if r.fields.get("call_id_with_rec")
        else r
        for r in linked
    ]
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url, max_upload_mb=1), http, store, directory)
        await deliver(store, [sink], records + linked)
    (dead,) = store.list(State.DEAD)
    assert dead.record.event.value == "NOTIFY_RECORD" and "больше sinks.bitrix24.max_upload_mb" in (
        dead.last_error or ""
    )
    attached = [c.records for c in bx.calls.values() if c.records]
    assert attached == [[("https://x.ru/r/1.mp3", 0)]]  # the linked one: by URL, no upload
