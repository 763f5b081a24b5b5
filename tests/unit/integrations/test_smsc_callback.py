"""/smsc, hardened: closed without a token, read in the charset SMSC really used, replays dropped."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bridge.app import App
from bridge.config import Config
from bridge.integrations.smsc.settings import SmsSettings
from tests.helpers import base_url, offline_config, running_app, with_sinks

TOKEN = "smsc-url-token"
SECRET = "smsc-callback-secret"


def config(tmp: Path, token: str = TOKEN, secret: str = SECRET) -> Config:
    return with_sinks(
        offline_config(tmp),
        sms=SmsSettings(
            enabled=True,
            api_url="http://127.0.0.1:1/sys/send.php",
            login="x",
            password="y",
            callback_token=token,
            callback_secret=secret,
        ),
    )


def messages(app: App) -> list[str]:
    rows = app.store.db.execute("SELECT fields FROM records WHERE event='NOTIFY_SMS' ORDER BY id")
    return [json.loads(r[0])["message"] for r in rows]


def md5(sms_id: str, phone: str, status: str = "") -> str:
    return hashlib.md5(f"{sms_id}:{phone}:{status}:{SECRET}".encode()).hexdigest()


async def test_smsc_is_closed_without_a_callback_token(tmp_path: Path) -> None:
    cfg = config(tmp_path, token="", secret="")
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        incoming = {"id": "5", "phone": "79581114585", "mes": "forged"}
        async with s.post(f"{base_url(app)}/smsc", data=incoming) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "not-configured"
        assert messages(app) == []


async def test_smsc_needs_the_token_in_its_url(tmp_path: Path) -> None:
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        base = base_url(app)
        incoming = {"id": "5", "phone": "79581114585", "mes": "hi", "md5": md5("5", "79581114585")}
        for url in (f"{base}/smsc?charset=utf-8", f"{base}/smsc?token=guess&charset=utf-8"):
            async with s.post(url, data=incoming) as resp:
                assert resp.status == 401 and (await resp.json())["error"] == "bad-token"
        async with s.post(f"{base}/smsc", data={**incoming, "token": TOKEN}) as resp:
            assert resp.status == 401  # in the body is not in the URL the gateway was given
        assert messages(app) == []


async def test_windows_1251_unless_the_url_asks_for_utf_8(tmp_path: Path) -> None:
    """SMSC's default: cp1251 bytes, percent-encoded, in the query or the form body."""
    text = "Привет, перезвоните"
    cp1251, utf8 = quote(text.encode("cp1251")), quote(text.encode())
    phone = "79581114585"
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        base = base_url(app)
        q = f"id=1&phone={phone}&md5={md5('1', phone)}&mes={cp1251}"
        async with s.get(f"{base}/smsc?token={TOKEN}&{q}") as resp:
            assert resp.status == 200, await resp.text()
        body = f"id=2&phone={phone}&md5={md5('2', phone)}&mes={cp1251}"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        async with s.post(f"{base}/smsc?token={TOKEN}", data=body, headers=form) as resp:
            assert resp.status == 200, await resp.text()
        body = f"id=3&phone={phone}&md5={md5('3', phone)}&mes={utf8}"
        async with s.post(f"{base}/smsc?token={TOKEN}&charset=utf-8", data=body, headers=form) as resp:
            assert resp.status == 200, await resp.text()
        # Bytes that are no cp1251 text (UTF-8 "И" is D0 98; 98 is unassigned in cp1251): refused.
        body = f"id=4&phone={phone}&md5={md5('4', phone)}&mes={quote('Иван'.encode())}"
        async with s.post(f"{base}/smsc?token={TOKEN}", data=body, headers=form) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad-encoding"
        assert messages(app) == [text, text, text]


async def test_a_captured_incoming_sms_cannot_be_replayed_with_another_text(tmp_path: Path) -> None:
    """The control hash covers id:phone:status, not the text: the gateway's id is the key."""
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/smsc?token={TOKEN}&charset=utf-8"
        captured = {
            "id": "77",
            "phone": "79581114585",
            "mes": "Здравствуйте",
            "md5": md5("77", "79581114585"),
        }
        for mes in ("Здравствуйте", "Переведите 1000 руб.", "Ещё одно"):
            async with s.post(url, data={**captured, "mes": mes}) as resp:
                assert resp.status == 200
        assert messages(app) == ["Здравствуйте"]


def test_settings_keep_the_token_out_of_repr() -> None:
    s = dataclasses.replace(SmsSettings(), callback_token="very-secret-token")
    assert "very-secret-token" not in repr(s)
