"""Fake SMSC-style gateway: /sys/send.php with login/psw or apikey, fmt=3 JSON answers."""

from __future__ import annotations

import itertools

from aiohttp import web

from tests.fakes.base import FakeServer

LOGIN, PASSWORD = "office", "smsc-password"


class FakeSmsc(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []
        self._ids = itertools.count(1001)
        self.app.router.add_post("/sys/send.php", self.send)

    async def send(self, request: web.Request) -> web.Response:
        data = {k: str(v) for k, v in (await request.post()).items()}
        if data.get("fmt") != "3" or data.get("charset") != "utf-8":
            return web.json_response({"error": "parameters error", "error_code": 1})
        if (data.get("login"), data.get("psw")) != (LOGIN, PASSWORD):
            return web.json_response({"error": "authorise error", "error_code": 2})
        phone, mes = data.get("phones", ""), data.get("mes", "")
        if not phone.isdigit():
            return web.json_response({"error": "invalid number", "error_code": 7})
        if not mes:
            return web.json_response({"error": "parameters error", "error_code": 1})
        sms_id = next(self._ids)
        self.sent.append(data)
        return web.json_response({"id": sms_id, "cnt": 1})
