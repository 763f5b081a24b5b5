"""The one Bot API client: every call (the sink's and the bot's) under the same limits and the same
typed errors.

Limits: about 1 message/s per private chat, 20/min per group, 30/s for the bot. A 429 names a
``retry_after``: the chat it was about is closed for every request until then (Telegram escalates
a penalty that is ignored); a 429 not tied to a chat pauses the whole bot.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bridge.errors import PermanentFailure, RetryLater
from bridge.http.client import Http, is_temporary, transport_error
from bridge.http.ratelimit import KeyedLimiter, TokenBucket
from bridge.integrations.telegram.settings import TelegramSettings

MAX_TEXT = 4096


class TelegramError(Exception):
    def __init__(
        self, code: int, description: str, retry_after: float | None, migrate_to: str | None = None
    ) -> None:
        super().__init__(f"Telegram {code}: {description}")
        self.code, self.description, self.retry_after = code, description, retry_after
        self.migrate_to = migrate_to

    @property
    def temporary(self) -> bool:
        return self.code == 0 or is_temporary(self.code)  # the statuses every API shares (http/client)

    def classified(self) -> RetryLater | PermanentFailure:
        """As the outbox and the jobs queue understand failures."""
        if self.temporary:
            return RetryLater(str(self), self.retry_after)
        return PermanentFailure(str(self))


def is_group(chat: str) -> bool:
    return chat.startswith("-")


class TelegramApi:
    def __init__(self, settings: TelegramSettings, http: Http) -> None:
        self.s = settings
        self._http = http
        self._chat_limit = KeyedLimiter(settings.per_chat_rate, 3)
        self._group_limit = KeyedLimiter(settings.group_per_minute / 60.0, 5)
        self._global = TokenBucket(settings.global_rate, settings.global_rate)

    def _bucket(self, chat: str) -> TokenBucket:
        return (self._group_limit if is_group(chat) else self._chat_limit).bucket(chat)

    async def call(
        self,
        method: str,
        payload: dict[str, Any] | aiohttp.FormData,
        chat: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method``; return its ``result`` or raise TelegramError (RetryLater on transport)."""
        if chat is not None:
            await self._bucket(chat).acquire()
        await self._global.acquire()
        url = f"{self.s.base_url}/bot{self.s.token}/{method}"
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if isinstance(payload, aiohttp.FormData):
            kwargs["data"] = payload
        else:
            kwargs["json"] = {k: v for k, v in payload.items() if v is not None}
        try:
            async with self._http.session.post(url, **kwargs) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
                if not isinstance(body, dict):
                    body = {"ok": False, "error_code": resp.status, "description": "not a Bot API answer"}
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RetryLater(self.hide_token(f"Telegram {method}: {transport_error(e)}")) from None
        if body.get("ok"):
            return body.get("result")
        raw_params = body.get("parameters")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        retry_after = float(params["retry_after"]) if "retry_after" in params else None
        error = TelegramError(
            int(body.get("error_code") or status),
            self.hide_token(str(body.get("description", ""))),
            retry_after,
            str(params["migrate_to_chat_id"]) if "migrate_to_chat_id" in params else None,
        )
        if error.code == 429:
            pause = retry_after if retry_after is not None else 1.0
            if chat is not None:
                self._bucket(chat).close_for(pause)
            else:
                self._global.close_for(pause)
        raise error

    async def request(
        self, method: str, payload: dict[str, Any], chat: str | None = None, timeout: float | None = None
    ) -> Any:
        """``call`` with failures as RetryLater / PermanentFailure (for the bot and its jobs)."""
        try:
            return await self.call(method, payload, chat, timeout)
        except TelegramError as e:
            raise e.classified() from None

    def hide_token(self, text: str) -> str:
        return text.replace(self.s.token, "***") if self.s.token else text
