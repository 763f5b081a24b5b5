"""Telegram: call messages to group and personal chats (the sink), and the bot (employees link
themselves, «Перезвонить» under missed calls) by long polling or by webhook."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlparse

from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.telegram import polling, webhook
from bridge.integrations.telegram.api import TelegramApi
from bridge.integrations.telegram.bot import TelegramBot
from bridge.integrations.telegram.sink import TelegramSink


def setup(ctx: Context) -> Parts:
    t = ctx.cfg.sinks.telegram
    if not t.enabled:
        return Parts()
    api = TelegramApi(t, ctx.http)
    parts = Parts(sinks=[TelegramSink(t, api, ctx.state, ctx.directory)])
    if t.bot_updates == "off":
        return parts
    bot = TelegramBot(api, ctx.state, ctx.directory, ctx.jobs, ctx.calls)
    parts.job_handlers.update(bot.job_handlers())
    if t.bot_updates == "webhook":
        path = urlparse(t.webhook_url).path or "/telegram"
        parts.routes.append(Route(path, webhook.handler(bot, t.webhook_secret)))
        parts.tasks["telegram-webhook"] = partial(webhook.register, bot, t.webhook_url, t.webhook_secret)
    else:
        parts.tasks["telegram-bot"] = partial(polling.poll, bot)
    return parts
