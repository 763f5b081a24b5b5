"""The daemon's HTTP server (aiohttp.web): Novofon's cloud notifications, health and status.

Every inbound route validates, commits to SQLite, and only then answers 200; bad input gets a 4xx
with a JSON error ({"error": stable id, "message": what is wrong}) and changes nothing. Bodies are
size-limited; nothing secret is logged (not the Signature, not the query string).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiMapping

from bridge.calls.records import CallRecord
from bridge.http.novofon import BadRequest, call_record, sms_record

log = structlog.get_logger("bridge.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Commit = Callable[[str, list[CallRecord]], bool]  # (dedupe key, records) -> stored (False: a repeat)
MAX_ECHO = 200


def error(status: int, err: str, message: str) -> web.Response:
    return web.json_response({"error": err, "message": message}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input never becomes a 5xx or a traceback: it is answered as what it is."""
    try:
        return await handler(request)
    except BadRequest as e:
        log.info("http.rejected", path=request.path, error=e.error, status=e.status)
        return error(e.status, e.error, str(e))
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body-too-large", "the request body is over the limit")
    except web.HTTPException:
        raise
    except UnicodeDecodeError:
        return error(400, "bad-encoding", "the request is not valid UTF-8")
    except ValueError as e:  # malformed form bodies, bad percent-encoding, ...
        return error(400, "malformed", f"cannot parse the request: {type(e).__name__}")


async def _params(request: web.Request) -> dict[str, str]:
    """GET query or POST form (application/x-www-form-urlencoded or multipart), as one flat dict."""
    merged: dict[str, str] = {}
    sources: list[MultiMapping[Any]] = [request.query]
    if request.method == "POST":
        ctype = request.content_type
        if ctype not in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/octet-stream",
            "",
        ):
            raise BadRequest(415, "unsupported-media-type", "send form-encoded fields")
        sources.append(await request.post())
    for source in sources:
        for key, value in source.items():
            if not isinstance(value, str):
                raise BadRequest(400, "malformed", f"{key} must be a text field, not a file")
            if key in merged and merged[key] != value:
                raise BadRequest(400, "malformed", f"{key} is given twice with different values")
            merged[key] = value
    return merged


class HttpServer:
    def __init__(
        self,
        bind: str,
        port: int,
        max_body: int,
        commit: Commit,
        status: Callable[[], dict[str, Any]],
        api_secret: str,
        sms_token: str,
        bitrix: tuple[str, Callable[[dict[str, str]], str]] | None = None,
        smsc: Callable[[dict[str, str]], None] | None = None,
        telegram: tuple[str, str, Callable[[dict[str, Any]], None]] | None = None,
    ) -> None:
        self.bind, self.port = bind, port
        self._commit = commit
        self._status = status
        self._secret = api_secret
        self._sms_token = sms_token
        self.app = web.Application(client_max_size=max_body, middlewares=[errors])
        self.app.router.add_route("GET", "/call", self.call)
        self.app.router.add_route("POST", "/call", self.call)
        self.app.router.add_route("GET", "/sms", self.sms)
        self.app.router.add_route("POST", "/sms", self.sms)
        self.app.router.add_get("/healthz", self.healthz)
        if telegram is not None:
            path, self._tg_secret, self._tg_update = telegram
            self.app.router.add_post(path, self.telegram_update)
        if smsc is not None:
            self._smsc = smsc
            self.app.router.add_route("GET", "/smsc", self.smsc)
            self.app.router.add_route("POST", "/smsc", self.smsc)
        if bitrix is not None:
            path, self._bitrix = bitrix
            self.app.router.add_post(path, self.bitrix_event)
        self.app.router.add_get("/status", self.status)
        self._runner: web.AppRunner | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        await site.start()
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:  # port 0: tell what we got
            self.port = server.sockets[0].getsockname()[1]
        log.info("http.listening", bind=self.bind, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- routes --------------------------------------------------------------------------------
    async def call(self, request: web.Request) -> web.Response:
        data = await _params(request)
        if "zd_echo" in data and "event" not in data:  # Novofon checks the URL when it is saved
            echo = data["zd_echo"]
            if len(echo) > MAX_ECHO or not echo.isprintable():
                raise BadRequest(400, "bad-field", "zd_echo must be short printable text")
            return web.Response(text=echo)
        key, record = call_record(data, request.headers.get("Signature"), self._secret)
        stored = self._commit(key, [record])
        log.info(
            "http.novofon_call",
            record_event=record.fields["event"],
            pbx_call_id=record.pbx_call_id,
            repeat=not stored,
        )
        return web.Response(text="ok")

    async def sms(self, request: web.Request) -> web.Response:
        data = await _params(request)
        if self._sms_token:
            token = data.pop("token", "")
            if not hmac.compare_digest(token.encode(), self._sms_token.encode()):
                raise BadRequest(
                    401, "bad-token", "the token query parameter does not match novofon.sms_token"
                )
        key, record = sms_record(data)
        stored = self._commit(key, [record])
        log.info("http.novofon_sms", pbx_call_id=record.pbx_call_id, repeat=not stored)
        return web.Response(text="ok")

    async def bitrix_event(self, request: web.Request) -> web.Response:
        """Bitrix24 outgoing webhook / application event: checked, committed as a job, answered."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise BadRequest(415, "unsupported-media-type", "Bitrix24 events are form-encoded")
        outcome = self._bitrix(await _params(request))
        return web.json_response({"result": outcome})

    async def smsc(self, request: web.Request) -> web.Response:
        """SMS gateway callback: delivery statuses and incoming SMS (checked, committed, then "OK")."""
        self._smsc(await _params(request))
        return web.Response(text="OK")

    async def telegram_update(self, request: web.Request) -> web.Response:
        """Telegram's webhook: the secret token checked, the update committed, then 200."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self._tg_secret.encode()):
            raise BadRequest(401, "bad-token", "X-Telegram-Bot-Api-Secret-Token does not match")
        if request.content_type != "application/json":
            raise BadRequest(415, "unsupported-media-type", "Telegram sends JSON")
        try:
            update = await request.json()
        except ValueError:
            raise BadRequest(400, "malformed", "the body is not JSON") from None
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise BadRequest(400, "malformed", "not a Telegram update")
        self._tg_update(update)
        return web.json_response({"ok": True})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())
