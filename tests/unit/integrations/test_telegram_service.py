"""Telegram as it really behaves: audio formats, supergroup migration, 4096 before escaping,
replies to deleted messages, deprecated parameters, getUpdates while a webhook is set."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path
from typing import Any

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.directory import Directory
from bridge.http.client import Http
from bridge.integrations.telegram import audio
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.state import migrated_chats
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from tests.fakes.base import Fault
from tests.fakes.telegram import TOKEN, FakeTelegram, check_html
from tests.helpers import telegram_sink
from tests.transcripts import replay
from tests.unit.integrations.conftest import GROUP, deliver, serving, with_recording


def settings(url: str) -> TelegramSettings:
    return TelegramSettings(
        enabled=True,
        token=TOKEN,
        api_url=url,
        group_chats=[GROUP],
        per_chat_rate=100,
        group_per_minute=6000,
        global_rate=1000,
    )


def real_wav(path: Path, seconds: float = 1.0) -> Path:
    """What MixMonitor writes: 8 kHz, 16-bit, mono PCM (a 440 Hz tone here)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        frames = int(8000 * seconds)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000))) for i in range(frames)
            )
        )
    return path


async def test_a_wav_recording_arrives_as_mp3_audio(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    assert audio.lame() is not None, "lame is installed by `make sysdeps`"
    tg = FakeTelegram()
    wav = real_wav(tmp_path / "rec.wav")
    async with serving(tg):
        sink = telegram_sink(settings(tg.url), http, store, directory)
        await deliver(store, [sink], with_recording(replay("outbound_answered"), wav))
    assert not store.list(State.DEAD)
    ((_chat, name, size),) = [a for a in tg.audio if a[0] == GROUP]
    assert name == "rec.mp3" and 0 < size < wav.stat().st_size
    assert tg.deprecated == []


async def test_without_lame_the_wav_goes_as_a_document(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "lame", lambda: None)
    tg = FakeTelegram()
    wav = real_wav(tmp_path / "rec.wav", 0.2)
    async with serving(tg):
        await deliver(
            store,
            [telegram_sink(settings(tg.url), http, store, directory)],
            with_recording(replay("outbound_answered"), wav),
        )
    assert "sendDocument" in tg.methods and "sendAudio" not in tg.methods
    assert [a[1] for a in tg.audio if a[0] == GROUP] == ["rec.wav"]


async def test_a_refused_recording_is_a_dead_letter_not_a_silent_loss(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    tg = FakeTelegram()
    wav = real_wav(tmp_path / "rec.wav", 0.2)
    body = {"ok": False, "error_code": 400, "description": "Bad Request: AUDIO_EXT_INVALID"}
    tg.fail_method("sendAudio", *[Fault(400, body)] * 5)
    async with serving(tg):
        await deliver(
            store,
            [telegram_sink(settings(tg.url), http, store, directory)],
            with_recording(replay("outbound_answered"), wav),
        )
    (dead,) = store.list(State.DEAD)
    assert dead.record.event is Event.RECORD and "refused the recording rec.wav" in (dead.last_error or "")


async def test_a_group_that_became_a_supergroup_is_followed(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    tg.migrated[GROUP] = "-1009999999999"
    async with serving(tg):
        sink = telegram_sink(settings(tg.url), http, store, directory)
        await deliver(store, [sink], replay("inbound_missed"))
        await deliver(store, [sink], replay("inbound_busy"))
    assert not store.list(State.DEAD)
    assert len(tg.texts("-1009999999999")) == 2  # each call's message, in the supergroup
    assert GROUP not in tg.chats
    assert migrated_chats(StateStore(store.db)) == {GROUP: "-1009999999999"}


async def test_sms_text_is_cut_before_escaping(store: OutboxStore, http: Http, directory: Directory) -> None:
    tg = FakeTelegram()
    sms = make(
        Event.SMS,
        {
            "pbx_call_id": "sms_1",
            "virtual_phone_number": "74951234567",
            "notification_time": "2026-11-29 12:00:00",
            "contact_phone_number": "OZON.ru",
            "message": "<" * 2000 + "&" * 2000,
        },
        {"source": "novofon-cloud"},
    )
    async with serving(tg):
        await deliver(store, [telegram_sink(settings(tg.url), http, store, directory)], [sms])
    assert not store.list(State.DEAD)
    (text,) = tg.texts(GROUP)
    assert len(text) <= 4096 and check_html(text) is None and text.endswith("…")


async def test_a_reply_to_a_deleted_message_keeps_the_recording(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    tg = FakeTelegram()
    wav = real_wav(tmp_path / "rec.wav", 0.2)
    records = with_recording(replay("outbound_answered"), wav)
    before_record = [r for r in records if r.event is not Event.RECORD]
    recording = [r for r in records if r.event is Event.RECORD]
    async with serving(tg):
        sink = telegram_sink(settings(tg.url), http, store, directory)
        await deliver(store, [sink], before_record)
        (message_id,) = tg.chats[GROUP]
        # Somebody deletes the call's message between its last edit and the upload.
        show = sink._show

        async def show_then_delete(chat: str, *args: Any) -> None:
            await show(chat, *args)
            tg.delete(chat, message_id)

        sink._show = show_then_delete  # type: ignore[method-assign]
        await deliver(store, [sink], [CallRecord(r.fields, r.meta) for r in recording])
    assert not store.list(State.DEAD)
    assert GROUP in [a[0] for a in tg.audio]
