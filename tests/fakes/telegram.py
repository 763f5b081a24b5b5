"""Fake Telegram Bot API: checks requests as the real one does and keeps every chat's messages."""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Fault

TOKEN = "123456789:AAEfakeTokenForTheLabOnly_abcdefghij"
ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "blockquote",
    "span",
}


class _HtmlCheck(HTMLParser):
    """Telegram's HTML parse mode: a few tags, balanced; '<', '>' and '&' must be escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.error = f"Unsupported start tag {tag!r}"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.error = f"Unexpected end tag {tag!r}"


def check_html(text: str) -> str | None:
    if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text):
        return "Can't parse entities: unsupported entity or bare '&'"
    p = _HtmlCheck()
    p.feed(text)
    p.close()
    if p.error:
        return f"Can't parse entities: {p.error}"
    if p.stack:
        return "Can't parse entities: can't find end tag"
    return None


def too_many_requests(retry_after: int) -> Fault:
    return Fault(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        },
    )


class FakeTelegram(FakeServer):
    def __init__(self, token: str = TOKEN, blocked: set[str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.blocked = blocked or set()  # chats whose user never /started the bot
        self.chats: dict[str, dict[int, str]] = {}  # chat -> message_id -> current text
        self.edits: dict[str, int] = {}
        self.audio: list[tuple[str, str, int]] = []  # (chat, filename, size)
        self.media: dict[str, set[int]] = {}  # chat -> ids of audio/document messages
        self.sent_texts: list[tuple[str, str]] = []
        self.methods: list[str] = []
        self.markups: dict[tuple[str, int], Any] = {}  # (chat, message_id) -> reply_markup
        self.answers: list[dict[str, Any]] = []  # answerCallbackQuery payloads
        self.updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.webhook: dict[str, Any] | None = None
        self.known_chats: set[str] | None = None  # when set, other chats are "chat not found"
        self.migrated: dict[str, str] = {}  # group -> the supergroup it became
        self.deprecated: list[str] = []  # deprecated parameters we were sent (tests want none)
        self.method_faults: dict[str, list[Fault]] = {}  # method -> faults for its next calls
        self.too_early: list[tuple[str, float]] = []  # (chat, seconds early): a closed chat was hit
        self._closed_until: dict[str, float] = {}
        self._update_ids = itertools.count(1)
        self._ids = itertools.count(100)
        self.app.router.add_post("/bot{token}/{method}", self.handle)

    @staticmethod
    def _error(code: int, description: str) -> web.Response:
        return web.json_response({"ok": False, "error_code": code, "description": description}, status=code)

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        self.methods.append(method)
        if request.content_type == "application/json":
            data: dict[str, Any] = await request.json()
        else:
            form = await request.post()
            data = {k: v for k, v in form.items()}
        chat_id = str(data.get("chat_id", ""))
        now = asyncio.get_running_loop().time()
        if chat_id and self._closed_until.get(chat_id, 0) > now:  # Telegram escalates; tests fail
            self.too_early.append((chat_id, self._closed_until[chat_id] - now))
        if self.method_faults.get(method):
            fault = self.method_faults[method].pop(0)
            retry_after = (fault.body or {}).get("parameters", {}).get("retry_after")
            if fault.status == 429 and chat_id and retry_after:
                self._closed_until[chat_id] = now + float(retry_after)
            return web.json_response(fault.body, status=fault.status)
        for old in ("disable_web_page_preview", "reply_to_message_id"):
            if old in data:
                self.deprecated.append(old)
        if method == "getUpdates":
            if self.webhook is not None:
                return self._error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            return await self._get_updates(data)
        if method in ("setWebhook", "deleteWebhook"):
            self.webhook = data if method == "setWebhook" else None
            return web.json_response({"ok": True, "result": True})
        if method == "answerCallbackQuery":
            if not data.get("callback_query_id"):
                return self._error(400, "Bad Request: query is too old and response timeout expired")
            self.answers.append(data)
            return web.json_response({"ok": True, "result": True})
        markup = data.get("reply_markup")
        if markup is not None:
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    if len(button.get("callback_data", "").encode()) > 64:
                        return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
        chat = str(data.get("chat_id", ""))
        if not chat:
            return self._error(400, "Bad Request: chat_id is empty")
        if chat in self.blocked:
            return self._error(403, "Forbidden: bot can't initiate conversation with a user")
        if chat in self.migrated:
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": int(self.migrated[chat])},
                },
                status=400,
            )
        if self.known_chats is not None and chat not in self.known_chats:
            return self._error(400, "Bad Request: chat not found")
        if (problem := self._reply_problem(chat, data)) is not None:
            return self._error(400, problem)
        if method in ("sendMessage", "editMessageText"):
            text = data.get("text")
            if not isinstance(text, str) or not 1 <= len(text) <= 4096:
                return self._error(400, "Bad Request: message text is empty or too long")
            if data.get("parse_mode") == "HTML" and (problem := check_html(text)):
                return self._error(400, f"Bad Request: {problem}")
            msgs = self.chats.setdefault(chat, {})
            if method == "sendMessage":
                mid = next(self._ids)
                msgs[mid] = text
                self.sent_texts.append((chat, text))
                self.markups[(chat, mid)] = markup
            else:
                mid = int(data.get("message_id", 0))
                if mid not in msgs:
                    return self._error(400, "Bad Request: message to edit not found")
                if msgs[mid] == text:
                    return self._error(
                        400,
                        "Bad Request: message is not modified: specified new message "
                        "content and reply markup are exactly the same",
                    )
                msgs[mid] = text
                self.markups[(chat, mid)] = markup
                self.edits[chat] = self.edits.get(chat, 0) + 1
            return web.json_response(
                {"ok": True, "result": {"message_id": mid, "chat": {"id": chat}, "text": text}}
            )
        if method in ("sendAudio", "sendDocument"):
            field = data.get("audio") or data.get("document")
            if not isinstance(field, web.FileField):
                return self._error(400, "Bad Request: there is no audio in the request")
            if method == "sendAudio" and not field.filename.lower().endswith((".mp3", ".m4a")):
                return self._error(400, "Bad Request: AUDIO_EXT_INVALID")
            size = len(field.file.read())
            if size > 50 * 1024 * 1024:
                return self._error(413, "Request Entity Too Large")
            self.audio.append((chat, field.filename, size))
            mid = next(self._ids)
            self.media.setdefault(chat, set()).add(mid)
            return web.json_response({"ok": True, "result": {"message_id": mid}})
        return self._error(404, "Not Found: method not found")

    def _reply_problem(self, chat: str, data: dict[str, Any]) -> str | None:
        """A reply to a message that is not there: refused unless allow_sending_without_reply."""
        params = data.get("reply_parameters")
        if isinstance(params, str):
            params = json.loads(params)
        if params is None and data.get("reply_to_message_id") is not None:
            params = {"message_id": data["reply_to_message_id"]}
        if not params:
            return None
        target = int(params.get("message_id", 0))
        exists = target in self.chats.get(chat, {}) or target in self.media.get(chat, set())
        if exists or params.get("allow_sending_without_reply"):
            return None
        return "Bad Request: message to be replied not found"

    def delete(self, chat: str, message_id: int) -> None:
        """Somebody deleted a message in the chat."""
        self.chats.get(chat, {}).pop(message_id, None)

    async def _get_updates(self, data: dict[str, Any]) -> web.Response:
        """Long polling: hand out what is queued, or wait up to ``timeout`` seconds for something."""
        timeout = min(float(data.get("timeout", 0)), 2.0)  # short in tests; the bot's loop is the same
        batch: list[dict[str, Any]] = []
        with contextlib.suppress(TimeoutError, asyncio.QueueEmpty):
            batch.append(
                await asyncio.wait_for(self.updates.get(), timeout) if timeout else self.updates.get_nowait()
            )
        while not self.updates.empty():
            batch.append(self.updates.get_nowait())
        offset = int(data.get("offset", 0))
        return web.json_response({"ok": True, "result": [u for u in batch if u["update_id"] >= offset]})

    def push(self, update: dict[str, Any]) -> None:
        """What a user does in Telegram (a message, a button press), queued for getUpdates."""
        self.updates.put_nowait({"update_id": next(self._update_ids), **update})

    def press(self, user_id: str, chat: str, message_id: int, data: str) -> None:
        # Like Telegram: the message comes back as plain text (its HTML markup became entities).
        plain = html.unescape(re.sub(r"<[^>]+>", "", self.chats[chat][message_id]))
        self.push(
            {
                "callback_query": {
                    "id": f"q{message_id}",
                    "from": {"id": int(user_id)},
                    "data": data,
                    "message": {
                        "message_id": message_id,
                        "chat": {"id": int(chat)},
                        "text": plain,
                    },
                }
            }
        )

    def say(self, user_id: str, text: str) -> None:
        """A user writes to the bot in a private chat."""
        uid = int(user_id)
        self.push(
            {
                "message": {
                    "message_id": next(self._ids),
                    "from": {"id": uid},
                    "text": text,
                    "chat": {"id": uid, "type": "private"},
                }
            }
        )

    def fail_method(self, method: str, *faults: Fault) -> None:
        """The next calls of ``method`` fail with ``faults`` (a 429 closes that chat as Telegram does)."""
        self.method_faults.setdefault(method, []).extend(faults)

    def texts(self, chat: str) -> list[str]:
        return list(self.chats.get(chat, {}).values())
