"""The HTTP server: Novofon's /call and /sms, /healthz, /status; and a suite of bad requests.

The daemon here runs for real (App) with its Asterisk unreachable — it keeps retrying AMI and
says so in /status — so the HTTP side is exercised without the lab."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import string
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bridge.app import App
from bridge.calls.records import sign
from bridge.config import Config, HttpConfig
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.novofon.settings import NovofonSettings
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.telegram.settings import TelegramSettings
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import base_url, offline_config, running_app, until, with_sinks

SECRET = "novofon-api-secret"
GROUP = "-1009000000001"
START = {
    "event": "NOTIFY_START",
    "call_start": datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S"),
    "pbx_call_id": "in_cloud-1",
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
BITRIX_EVENT = {
    "event": "ONEXTERNALCALLSTART",
    "data[PHONE_NUMBER]": "79001110001",
    "data[USER_ID]": "1",
    "data[CALL_ID]": "externalCall.1",
    "auth[application_token]": "wrong-token",
}
SMSC_STATUS = {"id": "1001", "phone": "79581114585", "status": "1", "md5": "0" * 32}
SMS = {
    "virtual_phone_number": "74951234567",
    "notification_time": "2024-03-25 15:21:00.000000",
    "contact_phone_number": "OZON.ru",
    "message": "Ваш заказ <№42> & доставлен",
}


def config(tmp: Path, tg_url: str | None = None, sms_token: str = "") -> Config:
    cfg = offline_config(
        tmp,
        http=HttpConfig(port=0, max_body_kb=8),
        novofon=NovofonSettings(api_secret=SECRET, sms_token=sms_token),
    )
    if tg_url:
        cfg = with_sinks(
            cfg,
            telegram=TelegramSettings(
                enabled=True,
                token=TOKEN,
                api_url=tg_url,
                group_chats=[GROUP],
                per_chat_rate=50,
                bot_updates="off",
            ),
        )
    return cfg


@contextlib.asynccontextmanager
async def daemon(cfg: Config) -> AsyncIterator[tuple[App, str, aiohttp.ClientSession]]:
    async with running_app(cfg) as app, aiohttp.ClientSession() as session:
        yield app, base_url(app), session


def stored(app: App) -> int:
    return int(app.store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])


async def post(
    session: aiohttp.ClientSession, url: str, data: dict[str, str], secret: str = SECRET
) -> tuple[int, str]:
    async with session.post(url, data=data, headers={"Signature": sign(data, secret)}) as resp:
        return resp.status, await resp.text()


async def test_zd_echo_answers_the_url_check(tmp_path: Path) -> None:
    async with (
        daemon(config(tmp_path)) as (_, base, s),
        s.get(f"{base}/call", params={"zd_echo": "f1a2b3"}) as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "f1a2b3")


async def test_signed_notifications_are_committed_once(tmp_path: Path) -> None:
    async with daemon(config(tmp_path)) as (app, base, s):
        assert await post(s, f"{base}/call", START) == (200, "ok")
        assert await post(s, f"{base}/call", START) == (200, "ok")  # Novofon repeats: answered, not stored
        assert await post(s, f"{base}/call", END) == (200, "ok")
        assert stored(app) == 2
        events = [r[0] for r in app.store.db.execute("SELECT event FROM records ORDER BY id")]
        assert events == ["NOTIFY_START", "NOTIFY_END"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"event": "NOTIFY_NOPE"}, 400, "unknown-event"),
        ({"call_start": "23.11.2026 12:00"}, 400, "bad-field"),
        ({"caller_id": "<script>"}, 400, "bad-field"),
        ({"pbx_call_id": "x" * 500}, 400, "field-too-long"),
    ],
)
async def test_bad_notifications_are_refused_with_a_reason(
    tmp_path: Path, change: dict[str, str], status: int, error: str
) -> None:
    async with daemon(config(tmp_path)) as (app, base, s):
        async with s.post(
            f"{base}/call", data={**START, **change}, headers={"Signature": sign(START, SECRET)}
        ) as resp:
            assert resp.status == status
            assert (await resp.json())["error"] == error
        assert stored(app) == 0


async def test_wrong_signature_changes_nothing(tmp_path: Path) -> None:
    async with daemon(config(tmp_path)) as (app, base, s):
        status, body = await post(s, f"{base}/call", START, secret="not-the-secret")
        assert status == 401 and '"bad-signature"' in body and SECRET not in body
        data = dict(START)
        del data["call_start"]
        async with s.post(f"{base}/call", data=data) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "missing-field"
        assert stored(app) == 0


async def test_sms_with_token(tmp_path: Path) -> None:
    async with daemon(config(tmp_path, sms_token="sms-token-1")) as (app, base, s):
        async with s.get(f"{base}/sms", params=SMS) as resp:
            assert resp.status == 401
        async with s.get(f"{base}/sms", params={**SMS, "token": "sms-token-1"}) as resp:
            assert resp.status == 200
        async with s.get(f"{base}/sms", params={**SMS, "token": "sms-token-1"}) as resp:
            assert resp.status == 200  # a repeat
        assert stored(app) == 1


async def test_health_and_status_say_ami_is_down(tmp_path: Path) -> None:
    async with daemon(config(tmp_path)) as (app, base, s):
        async with s.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        await until(lambda: app.ami.last_error is not None, timeout=5)
        await post(s, f"{base}/call", START)
        async with s.get(f"{base}/status") as resp:
            st = await resp.json()
        assert st["ami"]["connected"] is False
        assert "cannot connect to AMI at 127.0.0.1:1" in st["ami"]["last_error"]
        assert sum(st["outbox"]["by_sink"]["jsonl"].values()) == 1  # the notification, pending or sent
        assert set(st) == {
            *("ami", "ari", "trunk", "calls", "outbox", "directory"),
            *("jobs", "agi", "tasks", "healthy", "integrations", "http", "storage"),
        }
        assert st["http"]["open"] >= 1 and st["http"]["refused"] == 0
        assert st["ari"] == {
            "enabled": False,
            "calls_over": "ami",
            "reason": "asterisk.ari.password is empty",
        }
        assert st["tasks"]["ami"]["state"] == "running" and st["healthy"] is True


async def test_cloud_calls_and_sms_reach_telegram(tmp_path: Path) -> None:
    tg = FakeTelegram()
    await tg.start()
    try:
        async with daemon(config(tmp_path, tg_url=tg.url, sms_token="t1")) as (_, base, s):
            await post(s, f"{base}/call", START)
            await post(s, f"{base}/call", END)
            async with s.post(f"{base}/sms", data=SMS, params={"token": "t1"}) as resp:
                assert resp.status == 200
            await until(lambda: len(tg.texts(GROUP)) == 2 and tg.edits.get(GROUP) == 1, timeout=10)
    finally:
        await tg.stop()
    call, sms = tg.texts(GROUP)
    assert call.startswith("✅") and "Кто звонит: +7 958 111-45-85" in call and "Ответил: 101" in call
    assert sms == "✉️ <b>SMS</b> от OZON.ru на +7 495 123-45-67\nВаш заказ &lt;№42&gt; &amp; доставлен"


def _garbage(rng: random.Random) -> tuple[str, str, dict[str, str] | None, bytes | None, dict[str, str]]:
    """One malformed request: (method, path, query, body, headers)."""
    path = rng.choice(
        [
            "/call",
            "/sms",
            "/call",
            "/sms",
            "/smsc",
            "/api/bitrix/webhook",
            "/api/bitrix/webhook",
            "/status",
            "/healthz",
            "/nope",
            "/call/../sms",
        ]
    )
    method = rng.choice(["GET", "POST", "POST", "PUT", "DELETE"])
    good = dict(rng.choice([START, END, SMS, BITRIX_EVENT, SMSC_STATUS]))
    kind = rng.randrange(9)
    headers: dict[str, str] = {}
    query: dict[str, str] | None = None
    body: bytes | None = None
    if kind == 0:  # wrongly signed
        headers["Signature"] = sign(START, "guess")
        body = "&".join(f"{k}={v}" for k, v in START.items()).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind == 1:  # unsigned but otherwise perfect
        query = good
    elif kind == 2:  # random bytes, not UTF-8
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        headers["Content-Type"] = rng.choice(
            ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
        )
    elif kind == 3:  # oversized
        body = b"event=NOTIFY_START&caller_id=" + b"7" * (9 * 1024 + rng.randrange(50_000))
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind == 4:  # fields mangled one by one
        key = rng.choice(list(good))
        good[key] = rng.choice(["", "\x00", "🙂" * 300, "<b>", "%ZZ", "' OR 1=1 --", "\r\nX: y"])
        query = good
    elif kind == 5:  # JSON where a form is expected
        body = b'{"event": "NOTIFY_START"}'
        headers["Content-Type"] = "application/json"
    elif kind == 6:  # bad percent-encoding and duplicate keys
        body = b"event=NOTIFY_START&event=NOTIFY_END&caller_id=%E0%A4%A&called_did=%%"
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind == 7:  # wrong charset declared
        body = "event=NOTIFY_START&caller_id=Иван".encode("cp1251")
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=windows-1251"
    else:  # random keys and values
        query = {
            "".join(rng.choices(string.printable, k=rng.randrange(1, 20))): "".join(
                rng.choices(string.printable, k=rng.randrange(0, 40))
            )
            for _ in range(rng.randrange(1, 8))
        }
        if rng.random() < 0.3:
            query["zd_echo"] = "x" * rng.randrange(150, 400)
    return method, path, query, body, headers


async def test_a_thousand_bad_requests_no_5xx_nothing_stored(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    tg = FakeTelegram()
    await tg.start()
    statuses: dict[int, int] = {}
    try:
        cfg = config(tmp_path, tg_url=tg.url, sms_token="sms-token-1")
        sinks = dataclasses.replace(
            cfg.sinks,
            sms=SmsSettings(
                enabled=True,
                api_url="http://127.0.0.1:1/sys/send.php",
                login="x",
                password="y",
                callback_secret="smsc-secret",
            ),
            bitrix24=Bitrix24Settings(
                enabled=True,
                webhook_url="http://127.0.0.1:1/rest/1/x/",
                application_token="bitrix-token",
                sync_interval=0,
            ),
        )
        async with daemon(dataclasses.replace(cfg, sinks=sinks)) as (app, base, s):
            for _ in range(1200):
                method, path, query, body, headers = _garbage(rng)
                async with s.request(method, base + path, params=query, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert stored(app) == 0
            assert app.jobs.pending() == 0
            async with s.get(f"{base}/healthz") as resp:
                assert resp.status == 200  # still alive and well
    finally:
        await tg.stop()
    assert not [code for code in statuses if code >= 500], statuses
    assert set(tg.methods) <= {"getUpdates"}  # nothing was forwarded (the bot only polled)
    assert sum(statuses.values()) == 1200
