"""The Telegram bot's own side: employees link themselves, and call back from a missed call.

Updates come by long polling (getUpdates: no public URL needed); the offset is kept in SQLite so a
restart neither loses nor repeats an update. ``/start CODE`` (a one-time code from
``novofon-bridge employees link 101``) or ``/start`` from a Telegram id already known from Bitrix24
links the chat to the extension; anybody else gets a polite refusal and nothing more. A press on
«Перезвонить» under a missed call (by a linked employee) is committed as a job that rings that
employee's phone and then the client; the message says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from typing import Any

import aiohttp
import structlog

from bridge.click_to_call import ClickToCall
from bridge.directory import Directory
from bridge.jobs import Jobs
from bridge.outbox.store import OutboxStore
from bridge.sinks.base import PermanentFailure, RetryLater
from bridge.sinks.http import Http
from bridge.sinks.telegram import CALLBACK_STATE, TelegramSettings

log = structlog.get_logger("bridge.telegram_bot")

POLL_TIMEOUT = 25
CALLBACK_PREFIX = "cb:"

TEXT_LINKED = "Готово: теперь вы получаете здесь уведомления о звонках на внутренний номер {ext}."
TEXT_UNKNOWN = (
    "Здравствуйте! Этот бот присылает сотрудникам уведомления о звонках. Чтобы получать их, "
    "попросите администратора выдать код привязки и отправьте его сюда: /start КОД"
)
TEXT_BAD_CODE = "Код не подошёл или устарел. Попросите администратора выдать новый: /start КОД"
TEXT_NOT_LINKED = "Сначала привяжите свой внутренний номер: /start КОД"
TEXT_CALLING = "Звоним: сначала вам ({ext}), затем клиенту"
LINE_CALLING = "↩️ Перезванивает сотрудник {ext}"
LINE_FAILED = "↩️ Не удалось перезвонить: {reason}"


class TelegramBot:
    state_sink = "telegram-bot"

    def __init__(
        self,
        settings: TelegramSettings,
        http: Http,
        store: OutboxStore,
        directory: Directory,
        jobs: Jobs,
        calls: ClickToCall,
    ) -> None:
        self.s = settings
        self._http = http
        self._store = store
        self._directory = directory
        self._calls = calls
        self.jobs = jobs
        jobs.handle("telegram-callback", self._callback_job, max_age=120)
        jobs.handle("telegram-update", self.handle, max_age=600)

    # -- Bot API -------------------------------------------------------------------------------
    async def api(self, method: str, payload: dict[str, Any], timeout: float = 30) -> Any:
        url = f"{self.s.api_url}/bot{self.s.token}/{method}"
        try:
            async with self._http.session.post(
                url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise RetryLater(f"Telegram {method}: {type(e).__name__}") from None
        if not body.get("ok"):
            code = int(body.get("error_code") or 0)
            text = f"Telegram {method} {code}: {body.get('description', '')}"
            if code == 429 or code >= 500:
                raise RetryLater(text, (body.get("parameters") or {}).get("retry_after"))
            raise PermanentFailure(text)
        return body.get("result")

    # -- webhook mode --------------------------------------------------------------------------
    async def register_webhook(self, url: str, secret: str) -> None:
        """Tell Telegram where to post updates (retried until it says yes)."""
        while True:
            try:
                await self.api(
                    "setWebhook",
                    {"url": url, "secret_token": secret, "allowed_updates": ["message", "callback_query"]},
                )
                log.info("telegram_bot.webhook_set", url=url)
                return
            except (RetryLater, PermanentFailure) as e:
                log.warning("telegram_bot.webhook_not_set", error=str(e).replace(self.s.token, "***"))
                await asyncio.sleep(30)

    # -- polling -------------------------------------------------------------------------------
    async def run(self) -> None:
        # getUpdates answers 409 while a webhook is set (say, from an earlier webhook setup).
        with contextlib.suppress(RetryLater, PermanentFailure):
            await self.api("deleteWebhook", {"drop_pending_updates": False})
        offset = int(self._store.get_state(self.state_sink, "offset") or 0)
        while True:
            try:
                updates = await self.api(
                    "getUpdates",
                    {
                        "offset": offset,
                        "timeout": POLL_TIMEOUT,
                        "allowed_updates": ["message", "callback_query"],
                    },
                    timeout=POLL_TIMEOUT + 10,
                )
            except RetryLater as e:
                log.warning("telegram_bot.poll_failed", error=str(e).replace(self.s.token, "***"))
                await asyncio.sleep(e.retry_after or 5)
                continue
            except PermanentFailure as e:
                log.error("telegram_bot.poll_refused", error=str(e).replace(self.s.token, "***"))
                await asyncio.sleep(60)
                continue
            for update in updates or []:
                offset = max(offset, int(update.get("update_id", 0)) + 1)
                try:
                    await self.handle(update)
                except (RetryLater, PermanentFailure) as e:
                    log.warning("telegram_bot.update_failed", error=str(e))
                self._store.set_state(self.state_sink, "offset", str(offset))

    async def handle(self, update: dict[str, Any]) -> None:
        if "message" in update:
            await self._message(update["message"])
        elif "callback_query" in update:
            await self._press(update["callback_query"])

    async def _message(self, msg: dict[str, Any]) -> None:
        chat = msg.get("chat") or {}
        text = str(msg.get("text") or "")
        if chat.get("type") != "private" or not text.startswith("/start"):
            return
        chat_id = str(chat.get("id"))
        code = text.removeprefix("/start").strip()
        if code:
            ext = self._directory.use_link_code(code)
            if ext is None:
                await self.api("sendMessage", {"chat_id": chat_id, "text": TEXT_BAD_CODE})
                return
            self._directory.set_telegram(ext, chat_id)
            log.info("telegram_bot.linked", extension=ext, how="code")
        else:
            known = self._directory.by_telegram(chat_id)  # the id Bitrix24's profile gave us
            if known is None or not known.active:
                await self.api("sendMessage", {"chat_id": chat_id, "text": TEXT_UNKNOWN})
                return
            ext = known.extension
            log.info("telegram_bot.linked", extension=ext, how="bitrix24")
        await self.api("sendMessage", {"chat_id": chat_id, "text": TEXT_LINKED.format(ext=ext)})

    async def _press(self, q: dict[str, Any]) -> None:
        data = str(q.get("data") or "")
        who = str((q.get("from") or {}).get("id", ""))
        message = q.get("message") or {}
        if not data.startswith(CALLBACK_PREFIX):
            await self.api("answerCallbackQuery", {"callback_query_id": q.get("id")})
            return
        employee = self._directory.by_telegram(who)
        if employee is None or not employee.active:
            await self.api(
                "answerCallbackQuery",
                {"callback_query_id": q.get("id"), "text": TEXT_NOT_LINKED, "show_alert": True},
            )
            return
        pbx_call_id = data.removeprefix(CALLBACK_PREFIX)
        raw = self._store.get_state("telegram", f"call:{pbx_call_id}")
        client = json.loads(raw)["view"].get("caller", "") if raw else ""
        if not client.isdigit():
            await self.api(
                "answerCallbackQuery",
                {"callback_query_id": q.get("id"), "text": "Номер клиента неизвестен", "show_alert": True},
            )
            return
        self.jobs.add(
            "telegram-callback",
            {
                "extension": employee.extension,
                "client": client,
                "pbx_call_id": pbx_call_id,
                "chat_id": str((message.get("chat") or {}).get("id", "")),
                "message_id": message.get("message_id"),
                "text": message.get("text", ""),
            },
        )
        await self.api(
            "answerCallbackQuery",
            {"callback_query_id": q.get("id"), "text": TEXT_CALLING.format(ext=employee.extension)},
        )

    async def _callback_job(self, job: dict[str, Any]) -> None:
        chan = self._calls.new_channel_id("tg")
        origin = {k: job.get(k) for k in ("chat_id", "message_id", "text", "extension")}
        try:
            # Remembered first: when this call ends, the Telegram sink puts its result under the
            # missed call the button was pressed on.
            self._store.set_state(CALLBACK_STATE, f"out_{chan}", json.dumps(origin, ensure_ascii=False))
            await self._calls.ring(job["extension"], job["client"], chan)
            line = LINE_CALLING.format(ext=job["extension"])
        except PermanentFailure as e:
            line = LINE_FAILED.format(reason=html.escape(str(e)))
        if job.get("chat_id") and job.get("message_id"):
            await edit_below(
                self, str(job["chat_id"]), int(job["message_id"]), str(job.get("text") or ""), line
            )


async def edit_below(bot: Any, chat_id: str, message_id: int, text: str, line: str) -> None:
    """Append ``line`` under a message (the buttons go: the callback has been asked for)."""
    try:
        await bot.api(
            "editMessageText",
            {
                "chat_id": chat_id,
                "message_id": message_id,
                "parse_mode": "HTML",
                "text": f"{html.escape(text, quote=False)}\n{line}"[:4096],
            },
        )
    except PermanentFailure as e:
        log.warning("telegram_bot.edit_failed", error=str(e))
