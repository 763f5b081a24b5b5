"""The SMS gateway against a fake as strict as SMSC: its authentication (login + psw, or apikey),
the charset it reads our text in, and its callbacks in windows-1251 unless the URL asks for UTF-8."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bridge.app import App
from bridge.config import Config, load
from bridge.integrations.smsc import preflight
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.outbox.store import State
from bridge.preflight import Context, Severity
from tests.fakes.base import Fault
from tests.fakes.smsc import API_KEY, LOGIN, PASSWORD, FakeSmsc
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import base_url, offline_config, running_app, until, with_sinks
from tests.transcripts import replay

GROUP = "-1004440000002"
CALLBACK_TOKEN = "smsc-url-token-for-the-strict-fake"
SECRET = "smsc-cabinet-secret"
TEXT = "Здравствуйте! Мы пропустили ваш звонок"


def sms(smsc: FakeSmsc, **changes: object) -> SmsSettings:
    base = SmsSettings(
        enabled=True,
        api_url=f"{smsc.url}/sys/send.php",
        login=LOGIN,
        password=PASSWORD,
        template=TEXT,
        callback_token=CALLBACK_TOKEN,
        callback_secret=SECRET,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def config(tmp: Path, settings: SmsSettings, tg_url: str = "") -> Config:
    telegram = TelegramSettings(
        enabled=bool(tg_url),
        token=TOKEN,
        api_url=tg_url or "http://127.0.0.1:1",
        group_chats=[GROUP],
        bot_updates="off",
    )
    return with_sinks(offline_config(tmp), sms=settings, telegram=telegram)


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[FakeSmsc]:
    smsc = FakeSmsc(secret=SECRET)
    await smsc.start()
    try:
        yield smsc
    finally:
        await smsc.stop()


def settled(app: App, n: int) -> bool:
    c = app.store.counts().get("sms", {})
    return c.get("delivered", 0) + c.get("dead", 0) == n


async def test_the_fake_reads_text_in_the_charset_named_and_windows_1251_by_default() -> None:
    """What keeps the bridge honest: UTF-8 without charset=utf-8 arrives as SMSC would send it."""
    async with gateway() as smsc, aiohttp.ClientSession() as s:
        form = {"login": LOGIN, "psw": PASSWORD, "phones": "79581114585", "mes": "Привет", "fmt": "3"}
        async with s.post(f"{smsc.url}/sys/send.php", data=form) as resp:
            assert (await resp.json())["id"] == 1001
        async with s.post(f"{smsc.url}/sys/send.php", data={**form, "charset": "utf-8"}) as resp:
            assert (await resp.json())["id"] == 1002
        async with s.post(f"{smsc.url}/sys/send.php", data={**form, "fmt": "0"}) as resp:
            assert await resp.text() == "OK - 1 SMS, ID - 1003"
    assert [m["mes"] for m in smsc.sent] == [
        "Привет".encode().decode("cp1251"),
        "Привет",
        "Привет".encode().decode("cp1251"),
    ]


async def test_an_api_key_instead_of_login_and_password(tmp_path: Path) -> None:
    async with gateway() as smsc:
        cfg = config(tmp_path, sms(smsc, login="", password="", api_key=API_KEY))
        async with running_app(cfg) as app:
            app.publish(replay("inbound_missed"))
            await until(lambda: settled(app, 3), timeout=10)
    (sent,) = smsc.sent
    assert sent["apikey"] == API_KEY and "psw" not in sent and "login" not in sent
    assert (sent["mes"], sent["charset"], sent["fmt"]) == (TEXT, "utf-8", "3")


async def test_a_wrong_api_key_is_a_dead_letter_that_says_so(tmp_path: Path) -> None:
    async with gateway() as smsc:
        cfg = config(tmp_path, sms(smsc, api_key="not-the-key"))
        async with running_app(cfg) as app:
            app.publish(replay("inbound_missed"))
            await until(lambda: settled(app, 3), timeout=10)
            (dead,) = app.store.list(State.DEAD)
    assert dead.last_error == "SMS gateway error 2: authorise error"
    assert smsc.sent == [] and smsc.refused[0]["apikey"] == "not-the-key"


async def test_check_asks_the_gateway_whether_it_accepts_our_credentials(tmp_path: Path) -> None:
    async with gateway() as smsc:
        results = {}
        for label, s in {
            "password": sms(smsc),
            "key": sms(smsc, login="", password="", api_key=API_KEY),
            "wrong password": sms(smsc, password="wrong"),
            "wrong key": sms(smsc, api_key="wrong"),
        }.items():
            (results[label],) = await preflight.gateway(s)
        down = sms(smsc, api_url="http://127.0.0.1:1/sys/send.php")
        (unreachable,) = await preflight.gateway(down)
    assert results["password"].severity is Severity.OK and "баланс 123.45" in results["password"].text
    assert results["key"].severity is Severity.OK
    wrong = results["wrong password"]
    assert wrong.severity is Severity.ERROR and wrong.text == "ошибка 2: authorise error"
    assert "логин и пароль" in wrong.fix and "SMSC_PASSWORD" in wrong.fix
    assert "API-ключ" in results["wrong key"].fix and "SMSC_API_KEY" in results["wrong key"].fix
    assert all(PASSWORD not in r.text + r.fix and "wrong" not in r.text + r.fix for r in results.values())
    assert unreachable.severity is Severity.ERROR and "недоступен" in unreachable.text
    # Only when the SMS gateway is on.
    assert preflight.checks(Context(load(None), Path("/nonexistent"))) == []


async def test_smsc_calls_back_in_windows_1251_unless_the_url_asks_for_utf_8(tmp_path: Path) -> None:
    """Our SMS's delivery status and a Cyrillic SMS to our number, posted by the fake the way SMSC
    posts them, to the URL the README tells the admin to give SMSC — and to one without
    charset=utf-8 (SMSC's default windows-1251) and over GET."""
    tg = FakeTelegram()
    await tg.start()
    try:
        async with gateway() as smsc, running_app(config(tmp_path, sms(smsc), tg.url)) as app:
            app.publish(replay("inbound_missed"))
            await until(lambda: len(smsc.sent) == 1, timeout=10)
            documented = f"{base_url(app)}/smsc?token={CALLBACK_TOKEN}&charset=utf-8"
            bare = f"{base_url(app)}/smsc?token={CALLBACK_TOKEN}"
            status = {"id": "1001", "phone": "79581114585", "status": "1", "err": "0"}
            assert await smsc.callback(documented, status) == (200, "OK")
            await until(lambda: app.state.get("sms", "status:1001") == "1")
            for n, (url, method) in enumerate(((documented, "POST"), (bare, "POST"), (bare, "GET"))):
                incoming = {
                    "id": f"9{n}",
                    "phone": "79581114585",
                    "mes": f"Перезвоните {n}",
                    "to": "74951234567",
                }
                assert await smsc.callback(url, incoming, method) == (200, "OK")
            forged = FakeSmsc(secret="another-secret")
            assert (await forged.callback(bare, {**status, "status": "3"}))[0] == 401
            await until(lambda: len(tg.texts(GROUP)) == 4, timeout=10)
            assert app.state.get("sms", "status:1001") == "1"
    finally:
        await tg.stop()
    sms_texts = sorted(t for t in tg.texts(GROUP) if t.startswith("✉️"))
    assert sms_texts == [
        f"✉️ <b>SMS</b> от +7 958 111-45-85 на +7 495 123-45-67\nПерезвоните {n}" for n in range(3)
    ]


async def test_a_send_whose_answer_was_lost_is_not_sent_twice(tmp_path: Path) -> None:
    """SMSC took the SMS, its answer never came (a 502 after the send): the retry is the same
    request, which SMSC refuses for a minute (error 9). That means "sent", not "try again later" —
    a retry after the minute would text the client twice."""
    async with gateway() as smsc:
        smsc.fail_next(Fault(status=502, processed=True))
        async with running_app(config(tmp_path, sms(smsc))) as app:
            app.publish(replay("inbound_missed"))
            await until(lambda: settled(app, 3), timeout=10)
            assert app.store.list(State.DEAD) == []
            assert app.state.get("sms", "last:79581114585") is not None  # no SMS for a day
    assert len(smsc.sent) == 1
    assert [r.get("mes") for r in smsc.refused] == [TEXT]  # the retry: refused as a duplicate
