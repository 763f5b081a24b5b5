"""The daemon with AGI wired in (no Asterisk): history learnt from its own records, the FastAGI
answer, routed records in meta and in Telegram («Ответственный»), /status and /healthz."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp

from bridge.calls.records import CallRecord, Event, make
from bridge.config import AgiConfig, Config, DirectoryConfig, EmployeeConfig
from bridge.integrations.telegram.settings import TelegramSettings
from tests.fakes.agi import agi_call, request_headers
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import base_url, offline_config, running_app, until, with_sinks

GROUP = "-1005550000001"
CLIENT = "79161110001"


def config(tmp: Path, **changes: object) -> Config:
    cfg = offline_config(tmp, **changes)
    return dataclasses.replace(
        cfg, directory=DirectoryConfig({"101": EmployeeConfig(name="Иван Петров"), "102": EmployeeConfig()})
    )


def call(linkedid: str, internal: str, caller: str = CLIENT, name: str = "Анна") -> list[CallRecord]:
    v = {
        "call_start": "2026-01-01 10:00:00",
        "pbx_call_id": f"in_{linkedid}",
        "caller_id": caller,
        "called_did": "74950000105",
        "internal": internal,
        "destination": internal,
        "duration": "7",
        "disposition": "answered",
        "status_code": "16",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }
    meta = {"direction": "in", "caller_name": name} if name else {"direction": "in"}
    return [make(e, v, meta) for e in (Event.START, Event.INTERNAL, Event.ANSWER, Event.END)]


def routed_records(cfg: Config) -> list[dict[str, Any]]:
    """The routed call's records as the JSONL sink wrote them, once all four are there."""
    if not cfg.jsonl_path.exists():
        return []
    lines = [json.loads(line) for line in cfg.jsonl_path.read_text().splitlines()]
    mine = [r for r in lines if r["pbx_call_id"] == "in_1700000099.5"]
    return mine if len(mine) == 4 else []


async def test_a_caller_goes_back_to_who_talked_to_them_and_telegram_says_so(tmp_path: Path) -> None:
    tg = FakeTelegram()
    await tg.start()
    cfg = with_sinks(
        config(tmp_path),
        telegram=TelegramSettings(enabled=True, token=TOKEN, api_url=tg.url, group_chats=[GROUP]),
    )
    try:
        async with running_app(cfg) as app:
            agi = app.components.agi
            assert agi is not None
            await until(agi.listening.is_set)
            app.publish(call("1700000000.1", "101"))  # last week: 101 talked to the client
            got = await agi_call(
                agi.port, request_headers(callerid="8 916 111-00-01", uniqueid="1700000099.5")
            )
            assert got.variables == {
                "NOVOFON_ROUTE": "101",
                "NOVOFON_CALLER_NAME": "Анна",
                "CALLERID(name)": "Анна",
                "NOVOFON_ROUTE_TIMEOUT": "15",
            }
            app.publish(call("1700000099.5", "101", name=""))  # the routed call, answered by 101
            await until(lambda: any("Ответственный" in t for t in tg.texts(GROUP)), timeout=10)
            text = next(t for t in tg.texts(GROUP) if "Ответственный" in t)
            assert "Ответственный: Иван Петров (101)" in text
            assert "Анна" in text  # the name the handset showed, though the trunk sent none
            routed = await until(lambda: routed_records(cfg), timeout=10)
            assert [r["event"] for r in routed] == [
                "NOTIFY_START",
                "NOTIFY_INTERNAL",
                "NOTIFY_ANSWER",
                "NOTIFY_END",
            ]
            for r in routed:
                assert (r["meta"]["routed_to"], r["meta"]["route_source"]) == ("101", "history")
                assert r["meta"]["caller_name"] == "Анна"
            async with aiohttp.ClientSession() as s, s.get(base_url(app) + "/status") as resp:
                st = (await resp.json())["agi"]
            assert (st["listening"], st["requests"], st["routed"], st["from_history"]) == (True, 1, 1, 1)
            assert app.status()["tasks"]["agi"]["state"] == "running"
    finally:
        await tg.stop()


async def test_a_taken_agi_port_is_reported_unhealthy_not_fatal(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        cfg = config(tmp_path, agi=AgiConfig(port=taken.getsockname()[1]))
        async with running_app(cfg) as app, aiohttp.ClientSession() as s:
            await until(lambda: app.status()["tasks"]["agi"]["state"] == "restarting", timeout=10)
            async with s.get(base_url(app) + "/healthz") as resp:
                assert resp.status == 503
            error = app.status()["tasks"]["agi"]["last_error"] or ""
            assert f"127.0.0.1:{taken.getsockname()[1]}" in error and "порт занят другой программой" in error
    finally:
        taken.close()


async def test_agi_disabled_listens_nowhere(tmp_path: Path) -> None:
    async with running_app(config(tmp_path, agi=AgiConfig(enabled=False))) as app:
        assert app.components.agi is None
        assert "agi" not in app.status()["tasks"] and app.status()["agi"] == {"enabled": False}
