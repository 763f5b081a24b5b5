"""SMS after a missed call (SMSC-style gateway) and the gateway's callback (/smsc)."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bridge.app import App
from bridge.config import Config
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.outbox.store import State
from tests.fakes.base import Fault
from tests.fakes.smsc import LOGIN, PASSWORD, FakeSmsc
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import base_url, offline_config, running_app, until, with_sinks
from tests.transcripts import replay

GROUP = "-1004440000001"
SECRET = "smsc-callback-secret"
TOKEN_Q = "smsc-url-token"


def config(tmp: Path, smsc_url: str, tg_url: str, password: str = PASSWORD) -> Config:
    return with_sinks(
        offline_config(tmp),
        telegram=TelegramSettings(
            enabled=True, token=TOKEN, api_url=tg_url, group_chats=[GROUP], bot_updates="off"
        ),
        sms=SmsSettings(
            enabled=True,
            api_url=f"{smsc_url}/sys/send.php",
            login=LOGIN,
            password=password,
            company="ООО Ромашка",
            callback_secret=SECRET,
            callback_token=TOKEN_Q,
        ),
    )


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[tuple[App, str]]:
    async with running_app(cfg) as app:
        yield app, base_url(app)


@contextlib.asynccontextmanager
async def fakes() -> AsyncIterator[tuple[FakeSmsc, FakeTelegram]]:
    smsc, tg = FakeSmsc(), FakeTelegram()
    await smsc.start()
    await tg.start()
    try:
        yield smsc, tg
    finally:
        await smsc.stop()
        await tg.stop()


def sms_settled(app: App, n: int) -> bool:
    c = app.store.counts().get("sms", {})
    return c.get("delivered", 0) + c.get("dead", 0) == n


async def test_one_sms_per_number_after_missed_calls_only(tmp_path: Path) -> None:
    async with fakes() as (smsc, tg), running(config(tmp_path, smsc.url, tg.url)) as (app, _):
        smsc.fail_next(Fault(500))  # the gateway hiccups once: retried
        app.publish(replay("inbound_missed"))
        app.publish(replay("inbound_busy"))  # the same caller again, missed again: no second SMS
        app.publish(replay("inbound_answered"))  # answered: no SMS
        app.publish(replay("outbound_busy"))  # outbound: no SMS
        await until(lambda: sms_settled(app, 3 + 3 + 5 + 2), timeout=10)
    (sms,) = smsc.sent
    assert sms["phones"] == "79581114585"
    # Whichever of the two missed calls got through first (the 500 delayed one of them) sent it.
    assert re.fullmatch(
        r"Здравствуйте! Мы пропустили ваш звонок на \+7 495 000-01-0[34] и перезвоним вам\. ООО Ромашка",
        sms["mes"],
    )


async def test_wrong_gateway_password_is_a_dead_letter_with_the_reason(tmp_path: Path) -> None:
    async with (
        fakes() as (smsc, tg),
        running(config(tmp_path, smsc.url, tg.url, password="wrong")) as (app, _),
    ):
        app.publish(replay("inbound_missed"))
        await until(lambda: sms_settled(app, 3), timeout=10)
        (dead,) = app.store.list(State.DEAD)
        assert dead.last_error == "SMS gateway error 2: authorise error"


async def test_callback_statuses_and_incoming_sms(tmp_path: Path) -> None:
    async with (
        fakes() as (smsc, tg),
        running(config(tmp_path, smsc.url, tg.url)) as (app, base),
        aiohttp.ClientSession() as s,
    ):
        url = f"{base}/smsc?token={TOKEN_Q}&charset=utf-8"
        status = {"id": "1001", "phone": "79581114585", "status": "1"}
        md5 = hashlib.md5(f"1001:79581114585:1:{SECRET}".encode()).hexdigest()
        async with s.post(url, data={**status, "md5": md5}) as resp:
            assert (resp.status, await resp.text()) == (200, "OK")
        assert app.state.get("sms", "status:1001") == "1"
        async with s.post(url, data={**status, "md5": "0" * 32}) as resp:
            assert resp.status == 401
        incoming = {
            "id": "77",
            "phone": "+79581114585",
            "mes": "Перезвоните, пожалуйста",
            "to": "74951234567",
            "status": "",
        }
        md5 = hashlib.md5(f"77:+79581114585::{SECRET}".encode()).hexdigest()
        async with s.post(url, data={**incoming, "md5": md5}) as resp:
            assert resp.status == 200
        await until(lambda: len(tg.texts(GROUP)) == 1, timeout=10)
    assert (
        tg.texts(GROUP)[0] == "✉️ <b>SMS</b> от +7 958 111-45-85 на +7 495 123-45-67\nПерезвоните, пожалуйста"
    )
