"""Fake SMSC-style gateway, as strict as SMSC.

Our side calling SMSC: ``/sys/send.php`` and ``/sys/balance.php`` (GET or POST). Authentication is
``login`` + ``psw``, or ``apikey`` (SMSC's "API key instead of the login and password"; an empty
``login`` makes ``psw`` the API key); anything else is error 2. Text is read in the ``charset``
the request names, windows-1251 when it names none (SMSC's default): a client that sends UTF-8
without ``charset=utf-8`` gets its SMS sent as mojibake, as SMSC would. Answers are JSON only with
``fmt=3``; otherwise SMSC's plain text (``OK - 1 SMS, ID - 1001`` / ``ERROR = 2 (authorise error)``).
An identical send request within a minute of one it took is error 9 (no second SMS). Errors come
with HTTP 200, as SMSC's do.

SMSC calling us: ``callback()`` posts a delivery status or an incoming SMS to the handler URL the
way SMSC does: percent-encoded windows-1251 unless that URL carries ``charset=utf-8``, with the
md5/sha1 control hash of ``id:phone:status:<secret>`` when a secret is set in the cabinet.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web

from tests.fakes.base import FakeServer

LOGIN, PASSWORD = "office", "smsc-password"
API_KEY = "smsc-api-key-0f1e2d3c4b5a"
CHARSETS = {"": "cp1251", "windows-1251": "cp1251", "cp1251": "cp1251", "utf-8": "utf-8", "koi8-r": "koi8_r"}
ERRORS = {
    1: "parameters error",
    2: "authorise error",
    7: "invalid number",
    9: "duplicate request, wait a minute",
}
DUPLICATE_WINDOW = 60.0  # SMSC refuses an identical send request within a minute (error 9)


def _fields(raw: bytes) -> dict[str, str]:
    """Percent-encoded fields, read in the charset they name (SMSC's default: windows-1251)."""
    latin = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1"))
    charset = CHARSETS.get(latin.get("charset", "").lower(), "cp1251")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding=charset, errors="replace"))


class FakeSmsc(FakeServer):
    def __init__(self, secret: str = "", hash_algo: Literal["md5", "sha1"] = "md5") -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []
        self.refused: list[dict[str, str]] = []
        self.secret, self.hash_algo = secret, hash_algo  # the cabinet's callback signing secret
        self.balance = "123.45"
        self._ids = itertools.count(1001)
        self._seen: dict[tuple[tuple[str, str], ...], float] = {}  # send request -> when it was taken
        self.app.router.add_route("*", "/sys/send.php", self.send)
        self.app.router.add_route("*", "/sys/balance.php", self.balance_php)

    async def _read(self, request: web.Request) -> dict[str, str]:
        raw = request.rel_url.raw_query_string.encode("latin-1")
        if request.method == "POST":
            raw = raw + b"&" + await request.read() if raw else await request.read()
        return _fields(raw)

    @staticmethod
    def _authorised(data: dict[str, str]) -> bool:
        if "apikey" in data:
            return data["apikey"] == API_KEY
        if data.get("login", "") == "" and data.get("psw"):
            return data["psw"] == API_KEY
        return (data.get("login"), data.get("psw")) == (LOGIN, PASSWORD)

    @staticmethod
    def _answer(data: dict[str, str], body: dict[str, object]) -> web.Response:
        if data.get("fmt") == "3":
            return web.json_response(body)
        if "error_code" in body:
            return web.Response(text=f"ERROR = {body['error_code']} ({body['error']})")
        if "balance" in body:
            return web.Response(text=str(body["balance"]))
        return web.Response(text=f"OK - {body['cnt']} SMS, ID - {body['id']}")

    def _error(self, data: dict[str, str], code: int) -> web.Response:
        self.refused.append(data)
        return self._answer(data, {"error": ERRORS[code], "error_code": code})

    async def send(self, request: web.Request) -> web.Response:
        data = await self._read(request)
        if not self._authorised(data):
            return self._error(data, 2)
        phone, mes = data.get("phones", ""), data.get("mes", "")
        if not phone.lstrip("+").isdigit():
            return self._error(data, 7)
        if not mes:
            return self._error(data, 1)
        now = asyncio.get_running_loop().time()
        request_key = tuple(sorted(data.items()))
        if now - self._seen.get(request_key, -DUPLICATE_WINDOW) < DUPLICATE_WINDOW:
            return self._error(data, 9)
        self._seen[request_key] = now
        sms_id = next(self._ids)
        self.sent.append(data)
        return self._answer(data, {"id": sms_id, "cnt": 1})

    async def balance_php(self, request: web.Request) -> web.Response:
        data = await self._read(request)
        if not self._authorised(data):
            return self._error(data, 2)
        return self._answer(data, {"balance": self.balance})

    def signed(self, fields: dict[str, str]) -> dict[str, str]:
        if not self.secret:
            return dict(fields)
        text = f"{fields.get('id', '')}:{fields.get('phone', '')}:{fields.get('status', '')}:{self.secret}"
        return {**fields, self.hash_algo: hashlib.new(self.hash_algo, text.encode()).hexdigest()}

    async def callback(
        self, handler_url: str, fields: dict[str, str], method: str = "POST"
    ) -> tuple[int, str]:
        """SMSC calling the handler URL set in its cabinet: windows-1251 unless the URL asks for
        UTF-8. Returns our handler's (status, body) — SMSC retries anything but 200."""
        query = dict(parse_qsl(urlsplit(handler_url).query))
        charset = "utf-8" if query.get("charset", "").lower() == "utf-8" else "cp1251"
        body = urlencode(self.signed(fields), encoding=charset)
        async with aiohttp.ClientSession() as s:
            if method == "GET":
                sep = "&" if "?" in handler_url else "?"
                async with s.get(f"{handler_url}{sep}{body}") as resp:
                    return resp.status, await resp.text()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            async with s.post(handler_url, data=body.encode("ascii"), headers=headers) as resp:
                return resp.status, await resp.text()
