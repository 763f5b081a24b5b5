"""Closed by default (issue 11, item 3): no secret, no entry; /status for this machine only; every
malformed body a 400 with an error id, every failure of ours a 500 with an incident id."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from bridge.config import Config, HttpConfig
from bridge.http.server import HttpLimits, HttpServer, Route
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.novofon.settings import NovofonSettings
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.telegram.settings import TelegramSettings
from tests.helpers import base_url, offline_config, running_app, with_sinks

SMS = {
    "virtual_phone_number": "74951234567",
    "notification_time": "2024-03-25 15:21:00.000000",
    "contact_phone_number": "OZON.ru",
    "message": "Ваш заказ доставлен",
}
BROKEN_MULTIPART = b"--BOUNDARY\r\nxx"


def stored(app: object) -> int:
    return int(app.store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0])  # type: ignore[attr-defined]


def everything_on(tmp: Path, **http: object) -> Config:
    cfg = offline_config(
        tmp,
        http=HttpConfig(port=0, **http),  # type: ignore[arg-type]
        novofon=NovofonSettings(api_secret="s", sms_token="sms-token"),
    )
    return with_sinks(
        cfg,
        sms=SmsSettings(
            enabled=True, api_url="http://127.0.0.1:1/send.php", login="x", password="y", callback_token="c"
        ),
        bitrix24=Bitrix24Settings(
            enabled=True, webhook_url="http://127.0.0.1:1/rest/1/x/", application_token="b", sync_interval=0
        ),
        telegram=TelegramSettings(
            enabled=True,
            token="1:x",
            api_url="http://127.0.0.1:1",
            group_chats=["-1001"],
            bot_updates="webhook",
            webhook_url="https://pbx.example.ru/telegram",
            webhook_secret="w",
        ),
    )


async def test_sms_is_closed_without_a_token(tmp_path: Path) -> None:
    async with running_app(offline_config(tmp_path)) as app, aiohttp.ClientSession() as s:
        async with s.get(f"{base_url(app)}/sms", params=SMS) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "not-configured"
        assert stored(app) == 0


async def test_zd_echo_is_plain_text_that_no_browser_sniffs(tmp_path: Path) -> None:
    async with (
        running_app(offline_config(tmp_path)) as app,
        aiohttp.ClientSession() as s,
        s.get(f"{base_url(app)}/call", params={"zd_echo": "<b>hi</b>"}) as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "<b>hi</b>")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.content_type == "text/plain"


async def test_status_answers_this_machine_only_or_a_token(tmp_path: Path) -> None:
    async with running_app(offline_config(tmp_path)) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/status"
        async with s.get(url) as resp:
            assert resp.status == 200 and "outbox" in await resp.json()
        async with s.get(url, headers={"X-Forwarded-For": "203.0.113.9"}) as resp:  # via nginx
            assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    cfg = offline_config(tmp_path, http=HttpConfig(port=0, status_token="status-secret"))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/status"
        proxied = {"X-Forwarded-For": "203.0.113.9"}
        async with s.get(url, headers={**proxied, "Authorization": "Bearer status-secret"}) as resp:
            assert resp.status == 200 and "outbox" in await resp.json()
        async with s.get(url, headers=proxied, params={"token": "status-secret"}) as resp:
            assert resp.status == 200
        async with s.get(url, headers={**proxied, "Authorization": "Bearer guess"}) as resp:
            body = await resp.text()
            assert resp.status == 401 and "status-secret" not in body
        async with s.get(f"{base_url(app)}/healthz", headers=proxied) as resp:
            assert resp.status == 200  # only {"ok": ...}: for any monitor


@pytest.mark.parametrize(
    "path", ["/call", "/sms?token=sms-token", "/smsc?token=c", "/api/bitrix/webhook", "/telegram"]
)
async def test_a_broken_multipart_part_is_a_400_with_an_error_id(tmp_path: Path, path: str) -> None:
    async with running_app(everything_on(tmp_path)) as app, aiohttp.ClientSession() as s:
        headers = {
            "Content-Type": "multipart/form-data; boundary=BOUNDARY",
            "X-Telegram-Bot-Api-Secret-Token": "w",
        }
        async with s.post(f"{base_url(app)}{path}", data=BROKEN_MULTIPART, headers=headers) as resp:
            assert 400 <= resp.status < 500, await resp.text()
            assert (await resp.json())["error"] in ("malformed", "unsupported-media-type")
        for part in (
            b"--BOUNDARY\r\nContent-Disposition: form-data\r\n\r\nx\r\n--BOUNDARY--\r\n",
            b"--X\r\n",
        ):
            async with s.post(f"{base_url(app)}{path}", data=part, headers=headers) as resp:
                assert 400 <= resp.status < 500
        assert stored(app) == 0 and app.jobs.pending() == 0


async def test_an_unknown_charset_is_a_400(tmp_path: Path) -> None:
    async with running_app(everything_on(tmp_path)) as app, aiohttp.ClientSession() as s:
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=x-nothing"}
        for path in ("/call", "/sms?token=sms-token", "/smsc?token=c"):
            async with s.post(f"{base_url(app)}{path}", data=b"a=b", headers=headers) as resp:
                assert resp.status == 400 and (await resp.json())["error"] == "bad-encoding"


async def test_a_failing_handler_is_a_500_with_an_incident_id_never_a_traceback() -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("internal detail nobody outside should read")

    server = HttpServer("127.0.0.1", 0, [Route("/broken", broken)], dict, limits=HttpLimits())
    await server.start()
    try:
        with structlog.testing.capture_logs() as logs:
            async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{server.port}/broken") as resp:
                assert resp.status == 500
                body = await resp.text()
    finally:
        await server.stop()
    answer = json.loads(body)
    assert answer["error"] == "internal-error" and len(answer["incident"]) == 8
    assert "Traceback" not in body and "internal detail" not in body
    (line,) = [e for e in logs if e["event"] == "http.handler_failed"]
    assert line["incident"] == answer["incident"] and line["error"] == "RuntimeError" and line["exc_info"]
