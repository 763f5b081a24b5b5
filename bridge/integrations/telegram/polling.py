"""Long polling (getUpdates): no public URL needed. Each update is committed as a job, then the
offset moves on (kept as a cursor, so a restart neither loses nor repeats an update)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from bridge.errors import PermanentFailure, RetryLater
from bridge.integrations.telegram.bot import TelegramBot
from bridge.integrations.telegram.state import load_offset, save_offset

log = structlog.get_logger("bridge.telegram_bot")

POLL_TIMEOUT = 25
ALLOWED = ["message", "callback_query"]


async def poll(bot: TelegramBot) -> None:
    api, state = bot.api, bot.state
    # getUpdates answers 409 while a webhook is set (say, from an earlier webhook setup).
    with contextlib.suppress(RetryLater, PermanentFailure):
        await api.request("deleteWebhook", {"drop_pending_updates": False})
    offset = load_offset(state)
    while True:
        try:
            updates = await api.request(
                "getUpdates",
                {"offset": offset, "timeout": POLL_TIMEOUT, "allowed_updates": ALLOWED},
                timeout=POLL_TIMEOUT + 10,
            )
        except RetryLater as e:
            log.warning("telegram_bot.poll_failed", error=str(e))
            await asyncio.sleep(e.retry_after or 5)
            continue
        except PermanentFailure as e:
            log.error("telegram_bot.poll_refused", error=str(e))
            await asyncio.sleep(60)
            continue
        for update in updates if isinstance(updates, list) else []:
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                continue
            bot.accept(update)
            offset = max(offset, update["update_id"] + 1)
            save_offset(state, offset)
