"""/call takes Novofon 2.0 notifications too: token in the URL, GET or POST (form or JSON)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

from bridge.config import HttpConfig
from bridge.integrations.novofon.settings import NovofonSettings
from tests.helpers import base_url, offline_config, running_app, until

TOKEN = "n2-token-0123456789abcdef"


def now_msk(delta: float = 0) -> str:
    return (datetime.now(ZoneInfo("Europe/Moscow")) + timedelta(seconds=delta)).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )


def records(tmp: Path) -> list[dict[str, str]]:
    path = tmp / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_a_2_0_call_arrives_as_the_tracker_would_make_it(tmp_path: Path) -> None:
    cfg = offline_config(
        tmp_path, http=HttpConfig(port=0), novofon=NovofonSettings(api_secret="s", notifications_token=TOKEN)
    )
    common = {
        "call_session_id": "777",
        "virtual_phone_number": "74951234567",
        "contact_phone_number": "79161234567",
    }
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        async with s.get(
            url, params={"token": TOKEN, "type": "incoming", "notification_time": now_msk(), **common}
        ) as r:
            assert r.status == 200 and await r.text() == "ok"
        async with s.post(
            f"{url}?token={TOKEN}&type=talk_start",
            json={**common, "extension_phone_number": 101, "notification_time": now_msk(3)},
        ) as r:
            assert r.status == 200
        end = {
            **common,
            "extension_phone_number": "101",
            "talk_time_duration": "42",
            "notification_time": now_msk(45),
        }
        for _ in range(2):  # Novofon repeats a notification it thinks failed: kept once
            async with s.post(f"{url}?token={TOKEN}&type=call_end", data=end) as r:
                assert r.status == 200
        async with s.get(url, params={"token": "wrong", "type": "incoming", **common}) as r:
            assert r.status == 401 and (await r.json())["error"] == "bad-token"
        async with s.get(
            url,
            params={
                "token": TOKEN,
                "type": "incoming",
                "notification_time": now_msk(-3 * 86400),
                "call_session_id": "old",
            },
        ) as r:
            assert r.status == 400 and (await r.json())["error"] == "stale"
        await until(lambda: len(records(tmp_path)) == 3, timeout=10)
    got = records(tmp_path)
    assert [r["event"] for r in got] == ["NOTIFY_START", "NOTIFY_ANSWER", "NOTIFY_END"]
    assert {r["pbx_call_id"] for r in got} == {"n2_777"}
    assert got[2]["disposition"] == "answered" and got[2]["duration"] == "42" and got[2]["internal"] == "101"
    assert len({r["call_start"] for r in got}) == 1


async def test_without_a_token_configured_2_0_is_refused(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, http=HttpConfig(port=0), novofon=NovofonSettings(api_secret="s"))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        params = {"token": "x", "type": "incoming", "call_session_id": "1"}
        async with s.get(f"{base_url(app)}/call", params=params) as r:
            assert r.status == 403 and (await r.json())["error"] == "not-configured"
    assert records(tmp_path) == []
