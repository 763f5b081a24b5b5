"""The one client per outside API: Bitrix24's single-flight token refresh, Telegram's 429 per chat."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings, BitrixApp
from bridge.integrations.telegram.api import TelegramApi, TelegramError
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from tests.fakes.bitrix import CLIENT_ID, CLIENT_SECRET, FakeBitrix
from tests.fakes.telegram import TOKEN, FakeTelegram, too_many_requests


async def test_concurrent_first_calls_refresh_the_oauth_token_once(tmp_path: Path) -> None:
    bx = FakeBitrix()
    await bx.start()
    store, http = OutboxStore(tmp_path / "o.sqlite3"), Http()
    app = BitrixApp(bx.url, CLIENT_ID, CLIENT_SECRET, "refresh-0", f"{bx.url}/oauth/token/")
    client = BitrixClient(
        Bitrix24Settings(enabled=True, app=app, rate=100, burst=100), http, StateStore(store.db)
    )
    try:
        results = await asyncio.gather(*(client.call("user.get", {}) for _ in range(3)))
        assert len(results) == 3  # before: 1 success and 2 "reinstall the application"
        assert bx.refreshes == 1
        bx.expire_tokens()  # Bitrix24 says expired_token: again one refresh for everybody
        await asyncio.gather(*(client.call("user.get", {}) for _ in range(3)))
        assert bx.refreshes == 2
    finally:
        await http.close()
        store.close()
        await bx.stop()


async def test_a_429_closes_that_chat_for_retry_after_and_only_that_chat() -> None:
    tg = FakeTelegram()
    await tg.start()
    http = Http()
    api = TelegramApi(TelegramSettings(enabled=True, token=TOKEN, api_url=tg.url, per_chat_rate=50), http)
    try:
        tg.fail_method("sendMessage", too_many_requests(1))
        try:
            await api.call("sendMessage", {"chat_id": "901", "text": "a"}, chat="901")
            raise AssertionError("a 429 must raise")
        except TelegramError as e:
            assert e.code == 429 and e.retry_after == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        other = await api.call("sendMessage", {"chat_id": "902", "text": "b"}, chat="902")
        assert other["message_id"] and loop.time() - started < 0.5  # another chat is not held
        await api.call("sendMessage", {"chat_id": "901", "text": "c"}, chat="901")  # waits for it
        assert tg.too_early == []  # nothing reached the closed chat before its retry_after
        assert tg.texts("901") == ["c"]
    finally:
        await http.close()
        await tg.stop()
