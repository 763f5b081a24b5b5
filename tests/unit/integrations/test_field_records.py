"""What Telegram and Bitrix24 make of issue 8's field scenarios (lab transcripts): a call forwarded
to a mobile, voicemail and a voice menu, and outbound records whose caller_id is the number the
client saw while the employee stays in ``internal``."""

from __future__ import annotations

from pathlib import Path

from bridge.directory import Directory
from bridge.http.client import Http
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.store import OutboxStore, State
from tests.fakes.bitrix import PORTAL_USERS, FakeBitrix
from tests.fakes.telegram import FakeTelegram
from tests.helpers import bitrix_sink, telegram_sink
from tests.lab import lab as L
from tests.transcripts import replay
from tests.unit.integrations.conftest import GROUP, IVAN, deliver, serving, with_recording
from tests.unit.integrations.test_sinks import tg_settings


async def test_telegram_names_the_mobile_that_answered_a_forwarded_call(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    tg = FakeTelegram()
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 1000)
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        await deliver(store, [sink], with_recording(replay("inbound_forward_mobile"), wav))
    (text,) = tg.texts(GROUP)
    assert text.startswith("✅ <b>Разговор состоялся</b>")
    assert "Ответил: +7 900 444-00-04" in text and "разговор 0:02" in text


async def test_telegram_voicemail_and_voice_menu_are_missed_calls(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        await deliver(store, [sink], replay("inbound_voicemail") + replay("inbound_ivr_hangup"))
    texts = tg.texts(GROUP)
    assert len(texts) == 2 and all(t.startswith("❌ <b>Пропущенный звонок</b>") for t in texts)
    assert {"Итог: нет ответа" in t for t in texts} == {True, False}  # voicemail; the menu: cancel


async def test_telegram_outbound_shows_the_employee_not_the_caller_id(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        await deliver(store, [sink], replay("outbound_dialled_8"))
    (text,) = tg.texts(IVAN)  # employee 101's own chat: found by `internal`
    assert "101" in text and "+7 900 111-00-01" in text


async def test_bitrix24_registers_an_outbound_call_on_the_employee_from_internal(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    records = replay("outbound_dialled_plus7")
    assert records[-2].fields["caller_id"] == L.LAB_OUTBOUND_CID
    async with serving(bx):
        settings = Bitrix24Settings(webhook_url=bx.webhook_url, rate=100, burst=100)
        sink = bitrix_sink(settings, http, store, directory)
        await deliver(store, [sink], records)
    assert store.list(State.DEAD) == []
    (call,) = bx.calls.values()
    assert (call.params["USER_ID"], call.params["PHONE_NUMBER"], call.params["TYPE"]) == (
        "12",
        L.NUM_ANSWER,
        "1",
    )
    assert call.finish is not None and call.finish["USER_ID"] == "12"
