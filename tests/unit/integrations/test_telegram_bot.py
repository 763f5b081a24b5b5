"""The bot's own side without the lab: employees link their chats with /start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp

from bridge.config import Config, DirectoryConfig, EmployeeConfig, HttpConfig
from bridge.integrations.telegram.bot import TEXT_BAD_CODE, TEXT_LINKED, TEXT_UNKNOWN
from bridge.integrations.telegram.settings import TelegramSettings
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import offline_config, running_app, until, with_sinks

GROUP = "-1005550000001"


def config(tmp: Path, tg_url: str) -> Config:
    cfg = with_sinks(
        offline_config(tmp, http=HttpConfig(enabled=False)),
        telegram=TelegramSettings(enabled=True, token=TOKEN, api_url=tg_url, group_chats=[GROUP]),
    )
    return dataclasses.replace(
        cfg,
        directory=DirectoryConfig(
            {"101": EmployeeConfig(name="Иван"), "102": EmployeeConfig(name="Пётр", telegram_chat_id="902")}
        ),
    )


running = running_app


def replies(tg: FakeTelegram, chat: str) -> list[str]:
    return tg.texts(chat)


async def test_start_links_by_code_by_known_id_and_refuses_strangers(tmp_path: Path) -> None:
    tg = FakeTelegram()
    tg.webhook = {"url": "https://old-setup.example.ru/telegram"}  # getUpdates answers 409 until deleted
    await tg.start()
    try:
        async with running(config(tmp_path, tg.url)) as app:
            code = app.directory.new_link_code("101")
            tg.say("901", "/start 12345678")  # a wrong code
            tg.say("901", f"/start {code}")
            tg.say("902", "/start")  # already known (from config here; from Bitrix24 in real life)
            tg.say("903", "/start")  # a stranger
            await until(lambda: len(replies(tg, "903")) == 1 and len(replies(tg, "901")) == 2, timeout=10)
            assert app.directory.telegram_chat("101") == "901"
            assert replies(tg, "901") == [TEXT_BAD_CODE, TEXT_LINKED.format(ext="101")]
            assert replies(tg, "902") == [TEXT_LINKED.format(ext="102")]
            assert replies(tg, "903") == [TEXT_UNKNOWN]
            assert app.directory.by_telegram("903") is None
            offset = app.state.get("telegram-bot", "offset")
        assert offset == "5"  # kept: a restart does not handle these updates again
    finally:
        await tg.stop()


async def test_webhook_mode_registers_and_takes_updates(tmp_path: Path) -> None:
    tg = FakeTelegram()
    await tg.start()
    secret = "s3cret-token-for-telegram-webhook"
    cfg = config(tmp_path, tg.url)
    tg_cfg = dataclasses.replace(
        cfg.sinks.telegram,
        bot_updates="webhook",
        webhook_url="https://pbx.example.ru/telegram",
        webhook_secret=secret,
    )
    cfg = dataclasses.replace(
        cfg, sinks=dataclasses.replace(cfg.sinks, telegram=tg_cfg), http=HttpConfig(port=0)
    )
    try:
        async with running(cfg) as app, aiohttp.ClientSession() as s:
            await until(lambda: tg.webhook is not None, timeout=10)
            assert tg.webhook == {
                "url": "https://pbx.example.ru/telegram",
                "secret_token": secret,
                "allowed_updates": ["message", "callback_query"],
            }
            assert app.http_server is not None
            url = f"http://127.0.0.1:{app.http_server.port}/telegram"
            update = {
                "update_id": 41,
                "message": {
                    "message_id": 1,
                    "from": {"id": 902},
                    "text": "/start",
                    "chat": {"id": 902, "type": "private"},
                },
            }
            async with s.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
                assert resp.status == 401
            for _ in range(2):  # Telegram redelivers when unsure: handled once
                async with s.post(
                    url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
                ) as resp:
                    assert resp.status == 200
            await until(lambda: replies(tg, "902") == [TEXT_LINKED.format(ext="102")], timeout=10)
            assert "getUpdates" not in tg.methods
    finally:
        await tg.stop()
