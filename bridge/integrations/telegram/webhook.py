"""Webhook mode: Telegram posts updates to our HTTPS URL (behind nginx); the secret token is
checked, the update committed as a job, then 200. ``register`` tells Telegram where to post."""

from __future__ import annotations

import asyncio
import hmac

import structlog
from aiohttp import web

from bridge.errors import BadRequest, PermanentFailure, RetryLater
from bridge.http.server import Handler
from bridge.integrations.telegram.bot import TelegramBot
from bridge.integrations.telegram.polling import ALLOWED

log = structlog.get_logger("bridge.telegram_bot")


def handler(bot: TelegramBot, secret: str) -> Handler:
    async def telegram_update(request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise BadRequest(401, "bad-token", "X-Telegram-Bot-Api-Secret-Token does not match")
        if request.content_type != "application/json":
            raise BadRequest(415, "unsupported-media-type", "Telegram sends JSON")
        try:
            update = await request.json()
        except ValueError:
            raise BadRequest(400, "malformed", "the body is not JSON") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise BadRequest(400, "malformed", "not a Telegram update")
        bot.accept(update)
        return web.json_response({"ok": True})

    return telegram_update


async def register(bot: TelegramBot, url: str, secret: str) -> None:
    """setWebhook, retried until Telegram says yes."""
    while True:
        try:
            await bot.api.request(
                "setWebhook", {"url": url, "secret_token": secret, "allowed_updates": ALLOWED}
            )
            log.info("telegram_bot.webhook_set", url=url)
            return
        except (RetryLater, PermanentFailure) as e:
            log.warning("telegram_bot.webhook_not_set", error=str(e))
            await asyncio.sleep(30)
