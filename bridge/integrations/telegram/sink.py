"""Telegram: one message per call and chat, edited in place as the call goes on.

Telegram has no idempotency key, so the sink keeps, per call, the message id it got in each chat
(typed state, integrations/telegram/state.py) and edits that message instead of sending another.
The call's view (who called, who rang, who answered, how it ended) is folded from the records in
order and stored before anything is sent, so a retry renders exactly the same text.

Routing: every configured group chat, plus the personal chat of each employee whose phone rang
(inbound) or who placed the call (outbound), from the employee directory.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bridge.calls.records import CallRecord, Event
from bridge.directory import Directory
from bridge.errors import PermanentFailure, RetryLater
from bridge.integrations.telegram import audio
from bridge.integrations.telegram.api import MAX_TEXT, TelegramApi, TelegramError
from bridge.integrations.telegram.render import (
    DISPOSITIONS_RU,
    LINE_NOT_CALLED,
    LINE_RESULT,
    fmt_duration,
    fold,
    render,
)
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.state import (
    TelegramCall,
    load_call,
    load_callback,
    migrated_chats,
    save_call,
    save_callback,
    save_migration,
)
from bridge.outbox.state import StateStore
from bridge.outbox.store import Delivery
from bridge.pbx.follow import EMPLOYEE_RU, LegEnd

log = structlog.get_logger("bridge.telegram")

RECORDING_WAIT_ATTEMPTS = 6  # MixMonitor closes the file just after the hangup; wait a little
CALLBACK_PREFIX = "cb:"
LISTEN = "прослушать"  # the text of a recording's link


class TelegramSink:
    name = "telegram"

    def __init__(
        self, settings: TelegramSettings, api: TelegramApi, state: StateStore, directory: Directory
    ) -> None:
        self.s = settings
        self.api = api
        self._state = state
        self._directory = directory

    def _chats(self, view: dict[str, Any]) -> list[str]:
        moved = migrated_chats(self._state)
        if view.get("sms"):
            return [moved.get(c, c) for c in self.s.sms_chats or self.s.group_chats]
        chats = [moved.get(c, c) for c in self.s.group_chats]
        exts = view.get("rung", []) if view.get("direction") == "in" else [view.get("internal", "")]
        for ext in exts:
            chat = self._directory.telegram_chat(ext)
            if chat and chat not in chats:
                chats.append(chat)
        return chats

    # -- delivery ------------------------------------------------------------------------------
    async def send(self, delivery: Delivery) -> None:
        r = delivery.record
        if r.event is Event.OUT_END:
            await self._callback_result(r)
        call = load_call(self._state, r.pbx_call_id)
        if delivery.record_id not in call.applied:
            call.view = fold(call.view, r)
            call.applied.append(delivery.record_id)
            save_call(self._state, r.pbx_call_id, call)
        text = render(call.view, self.s.templates)
        markup = self._markup(call.view, r.pbx_call_id)
        for chat in self._chats(call.view):
            if chat in call.gone:
                continue
            try:
                await self._deliver(chat, r, call, text, markup, delivery.attempts)
            except TelegramError as e:
                if e.migrate_to is None:
                    self._classify(e, chat, call, r.pbx_call_id)
                    continue
                self._migrate(chat, e.migrate_to)
                try:
                    await self._deliver(e.migrate_to, r, call, text, markup, delivery.attempts)
                except TelegramError as again:
                    self._classify(again, e.migrate_to, call, r.pbx_call_id)

    async def _deliver(
        self,
        chat: str,
        r: CallRecord,
        call: TelegramCall,
        text: str,
        markup: dict[str, Any] | None,
        attempts: int,
    ) -> None:
        await self._show(chat, text, call, r.pbx_call_id, markup)
        if r.event is Event.RECORD and self.s.send_recordings and chat not in call.audio:
            await self._send_recording(chat, r, call, attempts)

    def _migrate(self, old: str, new: str) -> None:
        """A group became a supergroup: follow it now, and tell the sysadmin to update config.yaml."""
        save_migration(self._state, old, new)
        log.warning(
            "telegram.chat_migrated",
            old_chat=old,
            new_chat=new,
            fix=f"группа стала супергруппой: замените {old} на {new} в sinks.telegram (config.yaml)",
        )

    async def _callback_result(self, r: CallRecord) -> None:
        """This call was a «Перезвонить» press: say how it went under the missed call."""
        origin = load_callback(self._state, r.pbx_call_id)
        if origin is None or origin.done or not origin.chat_id or not origin.message_id:
            return
        f = r.fields
        line = LINE_RESULT.format(
            ext=html.escape(origin.extension),
            disposition=DISPOSITIONS_RU.get(f["disposition"], f["disposition"]),
            duration=fmt_duration(f["duration"]),
        )
        if r.meta.get("callback_leg") == "employee":  # the client was never dialled: say why
            texts = {end.value: text for end, text in EMPLOYEE_RU.items()}
            leg = texts.get(r.meta.get("leg_end", ""), EMPLOYEE_RU[LegEnd.FAILED])
            line = LINE_NOT_CALLED.format(reason=html.escape(leg.format(ext=origin.extension)))
        text = html.escape(origin.text, quote=False)
        try:
            await self.api.call(
                "editMessageText",
                {
                    "chat_id": origin.chat_id,
                    "message_id": origin.message_id,
                    "parse_mode": "HTML",
                    "text": f"{text}\n{line}"[:MAX_TEXT],
                },
                chat=origin.chat_id,
            )
        except TelegramError as e:
            if e.temporary:
                raise RetryLater(str(e), e.retry_after) from None
            log.warning("telegram.callback_result_not_shown", error=str(e))
        origin.done = True
        save_callback(self._state, r.pbx_call_id, origin)

    def _markup(self, view: dict[str, Any], pbx_call_id: str) -> dict[str, Any] | None:
        """The «Перезвонить» button under a missed inbound call from a real number."""
        data = f"{CALLBACK_PREFIX}{pbx_call_id}"
        missed = view.get("ended") and view.get("disposition") != "answered" and view.get("direction") == "in"
        if not (self.s.buttons and missed and str(view.get("caller", "")).isdigit()) or len(data) > 64:
            return None
        return {"inline_keyboard": [[{"text": "📞 Перезвонить", "callback_data": data}]]}

    async def _show(
        self, chat: str, text: str, call: TelegramCall, pbx_call_id: str, markup: dict[str, Any] | None
    ) -> None:
        message_id = call.messages.get(chat)
        if message_id is not None:
            try:
                await self.api.call(
                    "editMessageText",
                    {
                        "chat_id": chat,
                        "message_id": message_id,
                        "text": text,
                        "parse_mode": "HTML",
                        "reply_markup": markup,
                    },
                    chat=chat,
                )
                return
            except TelegramError as e:
                if "message is not modified" in e.description:
                    return
                if "message to edit not found" not in e.description:
                    raise
        result = await self.api.call(
            "sendMessage",
            {
                "chat_id": chat,
                "text": text,
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True},
                "reply_markup": markup,
            },
            chat=chat,
        )
        call.messages[chat] = int(result["message_id"])
        save_call(self._state, pbx_call_id, call)  # at once: a retry must edit this message, not send another

    async def _send_recording(self, chat: str, r: CallRecord, call: TelegramCall, attempts: int) -> None:
        # A signed link (novofon.recordings_*) or the cloud's own (Novofon 2.0 file_link): where the
        # file cannot be uploaded (too big, or not on this machine), the chat gets the link.
        link = r.meta.get("recording_url", "")
        t = self.s.templates
        notice = None
        path = Path(r.meta.get("recording_file") or ".")
        if not r.meta.get("recording_file"):
            if not link:
                return
            notice = t.recording_link.format(link=_anchor(link, LISTEN))
        elif not path.is_file():
            if attempts < RECORDING_WAIT_ATTEMPTS:
                raise RetryLater(f"recording {path} is not there yet", retry_after=2.0 * (attempts + 1))
            notice = t.recording_missing.format(file=html.escape(str(path)))
        elif (size := path.stat().st_size) > self.s.max_upload_mb * 1024 * 1024:
            where = _anchor(link, path.name) if link else html.escape(str(path))
            notice = t.recording_too_big.format(size_mb=f"{size / 1048576:.0f}", file=where)
        # A reply to a message that was deleted meanwhile still goes out (as a plain message).
        reply = call.messages.get(chat)
        reply_to = {"message_id": reply, "allow_sending_without_reply": True} if reply is not None else None
        if notice is not None:
            await self.api.call(
                "sendMessage",
                {"chat_id": chat, "text": notice, "parse_mode": "HTML", "reply_parameters": reply_to},
                chat=chat,
            )
        else:
            await self._upload(chat, path, reply_to, r.pbx_call_id)
        call.audio.append(chat)
        save_call(self._state, r.pbx_call_id, call)

    async def _upload(self, chat: str, path: Path, reply_to: dict[str, Any] | None, pbx_call_id: str) -> None:
        upload = await audio.prepare(path)  # MP3 (sendAudio) when LAME is there, else the WAV as a document
        form = aiohttp.FormData()
        form.add_field("chat_id", chat)
        if reply_to is not None:
            form.add_field("reply_parameters", json.dumps(reply_to))
        if upload.method == "sendAudio":
            form.add_field("title", f"Звонок {pbx_call_id}")
        form.add_field(
            upload.field, upload.content, filename=upload.filename, content_type=upload.content_type
        )
        try:
            await self.api.call(upload.method, form, chat=chat)
        except TelegramError as e:
            if e.code != 400 or e.migrate_to is not None or "chat" in e.description.lower():
                raise
            # Telegram refused the file itself: a dead letter with the reason, never a silent loss.
            log.error("telegram.recording_refused", file=path.name, chat=chat, error=str(e))
            raise PermanentFailure(
                f"Telegram refused the recording {path.name} ({upload.method}): {e}"
            ) from None

    def _classify(self, e: TelegramError, chat: str, call: TelegramCall, pbx_call_id: str) -> None:
        if e.temporary:
            raise RetryLater(str(e), e.retry_after)
        if e.code == 401 or e.code == 404:
            raise PermanentFailure(f"{e} (check sinks.telegram.token)")
        # 400 chat not found, 403 bot blocked / never started by the employee: skip this chat only.
        log.warning("telegram.chat_skipped", chat=chat, error=str(e), pbx_call_id=pbx_call_id)
        call.gone.append(chat)
        save_call(self._state, pbx_call_id, call)

    async def close(self) -> None:
        pass


def _anchor(url: str, text: str) -> str:
    """An HTML link Telegram accepts: only http(s) URLs, quotes escaped."""
    if not url.startswith(("https://", "http://")):
        return html.escape(url)
    return f'<a href="{html.escape(url, quote=True)}">{html.escape(text)}</a>'
