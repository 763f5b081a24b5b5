"""The Telegram bot's own side: employees link themselves, and call back from a missed call.

Updates (from polling or the webhook) are committed as jobs and handled here, with the jobs queue's
discipline. Each handler makes at most one outside side effect itself and enqueues the rest as
jobs of their own, so a retry never repeats one already done: a «Перезвонить» press rings once even
when answerCallbackQuery fails; ``/start CODE`` never answers "bad code" to a chat it has just linked.

``/start CODE`` (a one-time code from ``novofon-bridge employees link 101``) or ``/start`` from a
Telegram id already known from Bitrix24 links the chat to the extension; anybody else gets a polite
refusal and nothing more.
"""

from __future__ import annotations

import html
from typing import Any

import structlog

from bridge.directory import LINK_CODE_MISSES, Directory
from bridge.errors import PermanentFailure, RetryLater
from bridge.integrations.telegram.api import MAX_TEXT, TelegramApi
from bridge.integrations.telegram.sink import CALLBACK_PREFIX
from bridge.integrations.telegram.state import (
    CallbackOrigin,
    callback_details_of,
    caller_of,
    load_callback,
    save_callback,
)
from bridge.outbox.jobs import Jobs
from bridge.outbox.state import StateStore
from bridge.pbx.originate import Originator

log = structlog.get_logger("bridge.telegram_bot")

TEXT_LINKED = "Готово: теперь вы получаете здесь уведомления о звонках на внутренний номер {ext}."
TEXT_UNKNOWN = (
    "Здравствуйте! Этот бот присылает сотрудникам уведомления о звонках. Чтобы получать их, "
    "попросите администратора выдать код привязки и отправьте его сюда: /start КОД"
)
TEXT_BAD_CODE = "Код не подошёл или устарел. Попросите администратора выдать новый: /start КОД"
TEXT_TOO_MANY_CODES = (
    "Слишком много неверных кодов. Попробуйте через час или попросите администратора выдать новый код."
)
TEXT_NOT_LINKED = "Сначала привяжите свой внутренний номер: /start КОД"
TEXT_CALLING = "Звоним: сначала вам ({ext}), затем клиенту"
TEXT_NO_CLIENT = "Номер клиента неизвестен"
LINE_CALLING = "↩️ Перезванивает сотрудник {ext}"
LINE_FAILED = "↩️ Не удалось перезвонить: {reason}"

# Job kinds and how long each may wait before it is pointless.
UPDATE, SEND, CALLBACK = "telegram-update", "telegram-send", "telegram-callback"
MAX_AGE = {UPDATE: 600.0, SEND: 3600.0, CALLBACK: 120.0}


class TelegramBot:
    def __init__(
        self, api: TelegramApi, state: StateStore, directory: Directory, jobs: Jobs, calls: Originator
    ) -> None:
        self.api = api
        self.state = state
        self._directory = directory
        self._calls = calls
        self.jobs = jobs

    def job_handlers(self) -> dict[str, tuple[Any, float | None]]:
        return {
            UPDATE: (self.handle, MAX_AGE[UPDATE]),
            SEND: (self._send_job, MAX_AGE[SEND]),
            CALLBACK: (self._callback_job, MAX_AGE[CALLBACK]),
        }

    def accept(self, update: dict[str, Any]) -> bool:
        """Commit an update (from polling or the webhook) once; False when it was seen already."""
        return self.jobs.add(UPDATE, update, once=f"tg-update:{update['update_id']}")

    def _say(self, chat_id: str, text: str, **extra: Any) -> None:
        """A message to a chat, as a job of its own (retried alone, never repeated by its cause)."""
        self.jobs.add(
            SEND,
            {
                "method": "sendMessage",
                "chat": chat_id,
                "payload": {"chat_id": chat_id, "text": text, **extra},
            },
        )

    async def _send_job(self, job: dict[str, Any]) -> None:
        call = job.get("unless_ended")  # "calling back…" must not overwrite how the call-back ended
        if call and (origin := load_callback(self.state, str(call))) is not None and origin.done:
            return
        await self.api.request(job["method"], job["payload"], chat=job.get("chat"))

    # -- updates -------------------------------------------------------------------------------
    async def handle(self, update: dict[str, Any]) -> None:
        if isinstance(update.get("message"), dict):
            self._message(update["message"])
        elif isinstance(update.get("callback_query"), dict):
            await self._press(update["callback_query"])

    def _message(self, msg: dict[str, Any]) -> None:
        chat = msg.get("chat") or {}
        text = str(msg.get("text") or "")
        if chat.get("type") != "private" or not text.startswith("/start"):
            return
        chat_id = str(chat.get("id"))
        code = text.removeprefix("/start").strip()
        if code:
            if self._directory.link_code_misses(chat_id) >= LINK_CODE_MISSES:  # guessing: not even tried
                log.warning("telegram_bot.link_code_refused", chat=chat_id, reason="too many wrong codes")
                self._say(chat_id, TEXT_TOO_MANY_CODES)
                return
            ext = self._directory.use_link_code(code)
            if ext is None:
                linked = self._directory.by_telegram(chat_id)
                if linked is not None and linked.active:  # this very update linked it before a retry
                    self._say(chat_id, TEXT_LINKED.format(ext=linked.extension))
                else:
                    self._directory.note_link_code_miss(chat_id)
                    self._say(chat_id, TEXT_BAD_CODE)
                return
            self._directory.set_telegram(ext, chat_id)
            log.info("telegram_bot.linked", extension=ext, how="code")
        else:
            known = self._directory.by_telegram(chat_id)  # the id Bitrix24's profile gave us
            if known is None or not known.active:
                self._say(chat_id, TEXT_UNKNOWN)
                return
            ext = known.extension
            log.info("telegram_bot.linked", extension=ext, how="bitrix24")
        self._say(chat_id, TEXT_LINKED.format(ext=ext))

    async def _press(self, q: dict[str, Any]) -> None:
        data = str(q.get("data") or "")
        who = str((q.get("from") or {}).get("id", ""))
        message = q.get("message") or {}
        answer: dict[str, Any] = {"callback_query_id": q.get("id")}
        employee = self._directory.by_telegram(who)
        client = caller_of(self.state, data.removeprefix(CALLBACK_PREFIX))
        if not data.startswith(CALLBACK_PREFIX):
            pass
        elif employee is None or not employee.active:
            answer.update(text=TEXT_NOT_LINKED, show_alert=True)
        elif not client.isdigit():
            answer.update(text=TEXT_NO_CLIENT, show_alert=True)
        else:
            self.jobs.add(
                CALLBACK,
                {
                    "extension": employee.extension,
                    "client": client,
                    **callback_details_of(self.state, data.removeprefix(CALLBACK_PREFIX)),
                    "pbx_call_id": data.removeprefix(CALLBACK_PREFIX),
                    "chat_id": str((message.get("chat") or {}).get("id", "")),
                    "message_id": message.get("message_id"),
                    "text": message.get("text", ""),
                },
                once=f"tg-press:{q.get('id')}",
            )
            answer.update(text=TEXT_CALLING.format(ext=employee.extension))
        try:
            await self.api.request("answerCallbackQuery", answer)
        except (RetryLater, PermanentFailure) as e:  # the pop-up is a courtesy; the call is committed
            log.warning("telegram_bot.answer_failed", error=str(e))

    async def _callback_job(self, job: dict[str, Any]) -> None:
        """Ring the employee, then the client; the line under the message is a job of its own."""
        chan = self._calls.new_channel_id("tg")
        origin = CallbackOrigin(
            chat_id=str(job.get("chat_id") or ""),
            message_id=job.get("message_id"),
            text=str(job.get("text") or ""),
            extension=str(job["extension"]),
        )
        # Remembered first: when this call ends, the Telegram sink puts its result under the
        # missed call the button was pressed on.
        save_callback(self.state, f"out_{chan}", origin)
        try:
            await self._calls.ring(
                job["extension"],
                job["client"],
                chan,
                did=str(job.get("did") or ""),
                name=str(job.get("name") or ""),
            )
            line = LINE_CALLING.format(ext=job["extension"])
        except PermanentFailure as e:
            line = LINE_FAILED.format(reason=html.escape(str(e)))
        if origin.chat_id and origin.message_id:
            self.jobs.add(
                SEND,
                {
                    "method": "editMessageText",
                    "chat": origin.chat_id,
                    "unless_ended": f"out_{chan}",
                    "payload": {
                        "chat_id": origin.chat_id,
                        "message_id": origin.message_id,
                        "parse_mode": "HTML",
                        "text": f"{html.escape(origin.text, quote=False)}\n{line}"[:MAX_TEXT],
                    },
                },
            )
