"""The daemon's HTTP server (aiohttp.web): it mounts the routes the integrations give it.

Every inbound route validates, commits to SQLite, and only then answers 200; bad input gets a 4xx
with a JSON error ({"error": stable id, "message": what is wrong}) and changes nothing. Bodies are
size-limited; nothing secret is logged (not the Signature, not the query string).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from bridge.errors import BadRequest, StorageUnavailable
from bridge.outbox.health import is_storage_error

log = structlog.get_logger("bridge.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORAGE_RETRY_AFTER = 30  # seconds: what a 503 for a full or read-only disk asks the sender to wait


@dataclass(frozen=True)
class Route:
    """One path an integration serves; ``methods`` as aiohttp spells them."""

    path: str
    handler: Handler
    methods: tuple[str, ...] = ("POST",)


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
    except (StorageUnavailable, sqlite3.Error) as e:
        if isinstance(e, sqlite3.Error) and not is_storage_error(e):
            raise
        # Nothing was committed: the sender keeps the request and tries again (Novofon retries).
        log.debug("http.storage_unavailable", path=request.path, error=str(e))
        response = error(503, "storage-unavailable", "cannot store the request now (disk full or read-only)")
        response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
        return response
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body-too-large", "the request body is over the limit")
    except web.HTTPException:
        raise
    except UnicodeDecodeError:
        return error(400, "bad-encoding", "the request is not valid UTF-8")
    except ValueError as e:  # malformed form bodies, bad percent-encoding, ...
        return error(400, "malformed", f"cannot parse the request: {type(e).__name__}")


class HttpServer:
    def __init__(
        self,
        bind: str,
        port: int,
        max_body: int,
        routes: Sequence[Route],
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.bind, self.port = bind, port
        self._status = status
        self._healthy = healthy
        self.app = web.Application(client_max_size=max_body, middlewares=[errors])
        taken: dict[str, str] = {"/healthz": "health", "/status": "status"}
        for route in routes:
            if route.path in taken:
                raise ValueError(f"HTTP path {route.path} is served twice")
            taken[route.path] = route.path
            for method in route.methods:
                self.app.router.add_route(method, route.path, route.handler)
        self.app.router.add_get("/healthz", self.healthz)
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

    async def healthz(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())
