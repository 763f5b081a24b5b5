"""Telegram: one message per call and chat, edited in place as the call goes on.

Telegram has no idempotency key, so the sink keeps, per call, the message id it got in each chat
(outbox ``sink_state``) and edits that message instead of sending another. The call's view (who
called, who rang, who answered, how it ended) is folded from the records in order and stored
before anything is sent, so a retry renders exactly the same text.

Routing: every configured group chat, plus the personal chat of each employee whose phone rang
(inbound) or who placed the call (outbound), from the employee directory.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bridge.calls.numbers import pretty
from bridge.calls.records import CallRecord, Event
from bridge.directory import Directory
from bridge.outbox.ratelimit import KeyedLimiter, TokenBucket
from bridge.outbox.store import Delivery, OutboxStore
from bridge.sinks.base import PermanentFailure, RetryLater
from bridge.sinks.http import Http, transport_error

log = structlog.get_logger("bridge.telegram")

MAX_TEXT = 4096
RECORDING_WAIT_ATTEMPTS = 6  # MixMonitor closes the file just after the hangup; wait a little
CALLBACK_STATE = "telegram-callback"  # sink_state: out_<chan> -> the message «Перезвонить» was on
LINE_RESULT = "↩️ Перезвонили ({ext}): {disposition}, разговор {duration}"


@dataclass(frozen=True)
class TelegramTemplates:
    """Lines of the call message (HTML; values are escaped before they are put in)."""

    incoming: str = "📞 <b>Входящий звонок</b>"
    outgoing: str = "📤 <b>Исходящий звонок</b>"
    missed: str = "❌ <b>Пропущенный звонок</b>"
    answered: str = "✅ <b>Разговор состоялся</b>"
    not_reached: str = "⚠️ <b>Не дозвонились</b>"
    caller: str = "Кто звонит: {caller}"
    line: str = "На номер: {did}"
    destination: str = "Куда: {destination}"
    employee: str = "Сотрудник: {internal}"
    ringing: str = "Звонит у: {extensions}"
    answered_by: str = "Ответил: {internal}"
    result: str = "Итог: {disposition}, разговор {duration}"
    recorded: str = "🎙 Запись разговора ниже"
    recording_too_big: str = (
        "🎙 Запись слишком большая для Telegram ({size_mb} МБ): она на сервере АТС, {file}"
    )
    recording_missing: str = "🎙 Файл записи не найден на сервере АТС: {file}"
    reconstructed: str = "<i>(восстановлено после потери связи с Asterisk)</i>"
    sms: str = "✉️ <b>SMS</b> от {sender} на {did}\n{message}"


DISPOSITIONS_RU = {
    "answered": "отвечен",
    "busy": "занято",
    "cancel": "звонящий положил трубку",
    "no answer": "нет ответа",
    "failed": "не удалось соединить",
    "unallocated number": "номер не существует",
}


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    api_url: str = "https://api.telegram.org"
    group_chats: tuple[str, ...] = ()
    send_recordings: bool = True
    max_upload_mb: float = 50.0
    per_chat_rate: float = 1.0
    group_per_minute: float = 20.0
    global_rate: float = 30.0
    templates: TelegramTemplates = TelegramTemplates()
    sms_chats: tuple[str, ...] = ()  # where SMS go (default: group_chats)
    callback_button: bool = True  # «Перезвонить» under missed calls (the bot handles the press)


class TelegramError(Exception):
    def __init__(self, code: int, description: str, retry_after: float | None) -> None:
        super().__init__(f"Telegram {code}: {description}")
        self.code, self.description, self.retry_after = code, description, retry_after


def _fmt_duration(seconds: str) -> str:
    s = int(seconds or 0)
    return f"{s // 60}:{s % 60:02d}"


def fold(view: dict[str, Any], r: CallRecord) -> dict[str, Any]:
    """The call as people see it, after record ``r``."""
    f, ev = r.fields, r.event
    v = dict(view)
    v.setdefault("rung", [])
    if ev is Event.SMS:
        v["sms"] = {k: f[k] for k in ("contact_phone_number", "virtual_phone_number", "message")}
        return v
    if ev in (Event.START, Event.INTERNAL, Event.END):
        v["direction"] = "in"
        v["caller"] = f["caller_id"]
        v["did"] = f["called_did"]
    if ev in (Event.OUT_START, Event.OUT_END):
        v["direction"] = "out"
        v["destination"] = f["destination"]
        v["internal"] = f["internal"]
    if r.meta.get("caller_name"):
        v["caller_name"] = r.meta["caller_name"]
    if r.meta.get("line_name"):
        v["line_name"] = r.meta["line_name"]
    if ev is Event.INTERNAL and f["internal"] not in v["rung"]:
        v["rung"] = [*v["rung"], f["internal"]]
    if ev is Event.ANSWER:
        v["answered_by"] = f["internal"]
    if ev in (Event.END, Event.OUT_END):
        v["ended"] = True
        v["disposition"] = f["disposition"]
        v["duration"] = f["duration"]
        if f.get("internal"):
            v["answered_by" if f["disposition"] == "answered" else "last_internal"] = f["internal"]
    if ev is Event.RECORD:
        v["recording"] = r.meta.get("recording_file") or f["call_id_with_rec"]
    if r.reconstructed:
        v["reconstructed"] = True
    return v


def render(v: dict[str, Any], t: TelegramTemplates) -> str:
    def e(value: object) -> str:
        return html.escape(str(value), quote=False)

    if v.get("sms"):
        sms = v["sms"]
        text = t.sms.format(
            sender=e(pretty(sms["contact_phone_number"])),
            did=e(pretty(sms["virtual_phone_number"])),
            message=e(sms["message"]),
        )
        return text[:MAX_TEXT]

    inbound = v.get("direction") == "in"
    ended, disp = v.get("ended"), v.get("disposition")
    if ended and disp != "answered":
        title = t.missed if inbound else t.not_reached
    elif ended:
        title = t.answered
    else:
        title = t.incoming if inbound else t.outgoing
    lines = [title]
    if inbound:
        caller = pretty(v.get("caller", "")) or "номер скрыт"
        if v.get("caller_name"):
            caller += f" ({v['caller_name']})"
        did = pretty(v.get("did", ""))
        if v.get("line_name"):
            did += f" «{v['line_name']}»"
        lines.append(t.caller.format(caller=e(caller)))
        lines.append(t.line.format(did=e(did)))
        if v.get("rung") and not v.get("answered_by"):
            lines.append(t.ringing.format(extensions=e(", ".join(v["rung"]))))
    else:
        lines.append(t.employee.format(internal=e(v.get("internal") or "АТС")))
        lines.append(t.destination.format(destination=e(pretty(v.get("destination", "")))))
    if v.get("answered_by") and inbound:
        lines.append(t.answered_by.format(internal=e(v["answered_by"])))
    if ended:
        lines.append(
            t.result.format(
                disposition=e(DISPOSITIONS_RU.get(disp or "", disp)),
                duration=e(_fmt_duration(v.get("duration", "0"))),
            )
        )
    if v.get("recording"):
        lines.append(t.recorded)
    if v.get("reconstructed"):
        lines.append(t.reconstructed)
    return "\n".join(lines)[:MAX_TEXT]


class TelegramSink:
    name = "telegram"

    def __init__(
        self, settings: TelegramSettings, http: Http, store: OutboxStore, directory: Directory
    ) -> None:
        self.s = settings
        self._http = http
        self._store = store
        self._directory = directory
        self._chat_limit = KeyedLimiter(settings.per_chat_rate, 3)
        self._group_limit = KeyedLimiter(settings.group_per_minute / 60.0, 5)
        self._global = TokenBucket(settings.global_rate, settings.global_rate)

    # -- state ---------------------------------------------------------------------------------
    def _load(self, pbx_call_id: str) -> dict[str, Any]:
        raw = self._store.get_state(self.name, f"call:{pbx_call_id}")
        return (
            json.loads(raw) if raw else {"view": {}, "messages": {}, "applied": [], "audio": [], "gone": []}
        )

    def _save(self, pbx_call_id: str, state: dict[str, Any]) -> None:
        self._store.set_state(self.name, f"call:{pbx_call_id}", json.dumps(state, ensure_ascii=False))

    def _chats(self, view: dict[str, Any]) -> list[str]:
        if view.get("sms"):
            return list(self.s.sms_chats or self.s.group_chats)
        chats = list(self.s.group_chats)
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
        state = self._load(r.pbx_call_id)
        if delivery.record_id not in state["applied"]:
            state["view"] = fold(state["view"], r)
            state["applied"].append(delivery.record_id)
            self._save(r.pbx_call_id, state)
        text = render(state["view"], self.s.templates)
        markup = self._markup(state["view"], r.pbx_call_id)
        for chat in self._chats(state["view"]):
            if chat in state["gone"]:
                continue
            try:
                await self._show(chat, text, state, r.pbx_call_id, markup)
                if r.event is Event.RECORD and self.s.send_recordings and chat not in state["audio"]:
                    await self._send_recording(chat, r, state, delivery.attempts)
            except TelegramError as e:
                self._classify(e, chat, state, r.pbx_call_id)

    async def _callback_result(self, r: CallRecord) -> None:
        """This call was a «Перезвонить» press: say how it went under the missed call."""
        raw = self._store.get_state(CALLBACK_STATE, r.pbx_call_id)
        if raw is None:
            return
        origin = json.loads(raw)
        if origin.get("done") or not origin.get("chat_id") or not origin.get("message_id"):
            return
        f = r.fields
        line = LINE_RESULT.format(
            ext=html.escape(str(origin.get("extension", ""))),
            disposition=DISPOSITIONS_RU.get(f["disposition"], f["disposition"]),
            duration=_fmt_duration(f["duration"]),
        )
        text = html.escape(str(origin.get("text") or ""), quote=False)
        try:
            await self._call(
                "editMessageText",
                str(origin["chat_id"]),
                {
                    "chat_id": origin["chat_id"],
                    "message_id": origin["message_id"],
                    "parse_mode": "HTML",
                    "text": f"{text}\n{line}"[:MAX_TEXT],
                },
            )
        except TelegramError as e:
            if e.code == 429 or e.code >= 500:
                raise RetryLater(str(e), e.retry_after) from None
            log.warning("telegram.callback_result_not_shown", error=str(e))
        origin["done"] = True
        self._store.set_state(CALLBACK_STATE, r.pbx_call_id, json.dumps(origin, ensure_ascii=False))

    def _markup(self, view: dict[str, Any], pbx_call_id: str) -> dict[str, Any] | None:
        """The «Перезвонить» button under a missed inbound call from a real number."""
        data = f"cb:{pbx_call_id}"
        missed = view.get("ended") and view.get("disposition") != "answered" and view.get("direction") == "in"
        if (
            not (self.s.callback_button and missed and str(view.get("caller", "")).isdigit())
            or len(data) > 64
        ):
            return None
        return {"inline_keyboard": [[{"text": "📞 Перезвонить", "callback_data": data}]]}

    async def _show(
        self,
        chat: str,
        text: str,
        state: dict[str, Any],
        pbx_call_id: str,
        markup: dict[str, Any] | None = None,
    ) -> None:
        message_id = state["messages"].get(chat)
        if message_id is not None:
            try:
                await self._call(
                    "editMessageText",
                    chat,
                    {
                        "chat_id": chat,
                        "message_id": message_id,
                        "text": text,
                        "parse_mode": "HTML",
                        "reply_markup": markup,
                    },
                )
                return
            except TelegramError as e:
                if "message is not modified" in e.description:
                    return
                if "message to edit not found" not in e.description:
                    raise
        result = await self._call(
            "sendMessage",
            chat,
            {
                "chat_id": chat,
                "text": text,
                "parse_mode": "HTML",
                "disable_web_page_preview": True,
                "reply_markup": markup,
            },
        )
        state["messages"][chat] = result["message_id"]
        self._save(pbx_call_id, state)  # at once: a retry must edit this message, not send another

    async def _send_recording(self, chat: str, r: CallRecord, state: dict[str, Any], attempts: int) -> None:
        if not r.meta.get("recording_file"):
            return
        path = Path(r.meta["recording_file"])
        t = self.s.templates
        notice = None
        if not path.is_file():
            if attempts < RECORDING_WAIT_ATTEMPTS:
                raise RetryLater(f"recording {path} is not there yet", retry_after=2.0 * (attempts + 1))
            notice = t.recording_missing.format(file=html.escape(str(path)))
        elif (size := path.stat().st_size) > self.s.max_upload_mb * 1024 * 1024:
            notice = t.recording_too_big.format(size_mb=f"{size / 1048576:.0f}", file=html.escape(str(path)))
        reply = state["messages"].get(chat)
        if notice is not None:
            await self._call(
                "sendMessage",
                chat,
                {"chat_id": chat, "text": notice, "parse_mode": "HTML", "reply_to_message_id": reply},
            )
        else:
            form = aiohttp.FormData()
            form.add_field("chat_id", chat)
            if reply is not None:
                form.add_field("reply_to_message_id", str(reply))
            form.add_field("title", f"Звонок {r.pbx_call_id}")
            form.add_field("audio", path.read_bytes(), filename=path.name, content_type="audio/wav")
            await self._call("sendAudio", chat, form)
        state["audio"].append(chat)
        self._save(r.pbx_call_id, state)

    def _classify(self, e: TelegramError, chat: str, state: dict[str, Any], pbx_call_id: str) -> None:
        if e.code == 429:
            (self._group_limit if chat.startswith("-") else self._chat_limit).bucket(chat).drain()
            raise RetryLater(str(e), e.retry_after)
        if e.code >= 500 or e.code == 0:
            raise RetryLater(str(e), e.retry_after)
        if e.code == 401 or e.code == 404:
            raise PermanentFailure(f"{e} (check sinks.telegram.token)")
        # 400 chat not found, 403 bot blocked / never started by the employee: skip this chat only.
        log.warning("telegram.chat_skipped", chat=chat, error=str(e), pbx_call_id=pbx_call_id)
        state["gone"].append(chat)
        self._save(pbx_call_id, state)

    async def _call(
        self, method: str, chat: str, payload: dict[str, Any] | aiohttp.FormData
    ) -> dict[str, Any]:
        await (self._group_limit if chat.startswith("-") else self._chat_limit).acquire(chat)
        await self._global.acquire()
        url = f"{self.s.api_url}/bot{self.s.token}/{method}"
        try:
            if isinstance(payload, aiohttp.FormData):
                req = self._http.session.post(url, data=payload)
            else:
                req = self._http.session.post(url, json={k: v for k, v in payload.items() if v is not None})
            async with req as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = {"ok": False, "error_code": resp.status, "description": (await resp.text())[:200]}
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RetryLater(self._hide_token(str(transport_error(e)))) from None
        if body.get("ok"):
            return dict(body.get("result") or {})
        params = body.get("parameters") or {}
        raise TelegramError(
            int(body.get("error_code") or resp.status),
            str(body.get("description", "")),
            float(params["retry_after"]) if "retry_after" in params else None,
        )

    def _hide_token(self, text: str) -> str:
        return text.replace(self.s.token, "***") if self.s.token else text

    async def close(self) -> None:
        pass
