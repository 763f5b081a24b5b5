"""The daemon's HTTP server (aiohttp.web): it mounts the routes the integrations give it.

Every inbound route validates, commits to SQLite, and only then answers 200; bad input gets a 4xx
with a JSON error ({"error": stable id, "message": what is wrong}) and changes nothing; a failure of
ours is a 500 with an incident id that is also in the log, never a traceback. Bodies are
size-limited and must arrive within ``body_timeout``; connections are bounded (connections.py).
Nothing secret is logged (not the Signature, not the query string). /status answers only on this
machine (not through a proxy) or with ``http.status_token``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bridge.errors import BadRequest, StorageUnavailable
from bridge.http import peers
from bridge.http.connections import ConnectionGuard, GuardedSite, fd_cap
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


@dataclass(frozen=True)
class HttpLimits:
    """What a client may take from us (config.yaml ``http``)."""

    max_body: int = 64 * 1024
    header_timeout: float = 10.0  # to send a request head (and idle time between keep-alive requests)
    body_timeout: float = 10.0  # to send the body, once the head is in
    max_connections: int = 512
    trusted_proxies: tuple[peers.Network, ...] = ()
    status_token: str = field(default="", repr=False)


def error(status: int, err: str, message: str) -> web.Response:
    return web.json_response({"error": err, "message": message}, status=status)


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token", "")


class HttpServer:
    def __init__(
        self,
        bind: str,
        port: int,
        routes: Sequence[Route],
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool] = lambda: True,
        limits: HttpLimits = HttpLimits(),
    ) -> None:
        self.bind, self.port = bind, port
        self.limits = limits
        self._status = status
        self._healthy = healthy
        self.app = web.Application(client_max_size=limits.max_body, middlewares=[self._errors, self._body])
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
        self.guard: ConnectionGuard | None = None
        self.started_at = time.time()

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.header_timeout,
            lingering_time=min(1.0, self.limits.body_timeout),
            shutdown_timeout=5.0,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        cap = fd_cap(self.limits.max_connections)
        if cap < self.limits.max_connections:
            log.warning("http.connection_cap_lowered", configured=self.limits.max_connections, cap=cap)
        self.guard = ConnectionGuard(self._runner.server, cap)
        site = GuardedSite(self._runner, self.bind, self.port, self.guard)
        await site.start()
        self.port = site.port
        log.info("http.listening", bind=self.bind, port=self.port, max_connections=cap)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- middlewares ---------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bad input never becomes a 5xx or a traceback: it is answered as what it is."""
        forwarded = request.headers.get("X-Forwarded-For")
        client = peers.resolve(request.remote, forwarded, self.limits.trusted_proxies)
        request[peers.CLIENT_KEY] = client
        guard, protocol = self.guard, request.protocol
        if guard is not None:
            guard.enter(protocol)
        try:
            return await handler(request)
        except BadRequest as e:
            log.info("http.rejected", path=request.path, error=e.error, status=e.status, client=str(client))
            return error(e.status, e.error, str(e))
        except (StorageUnavailable, sqlite3.Error) as e:
            if isinstance(e, sqlite3.Error) and not is_storage_error(e):
                raise
            # Nothing was committed: the sender keeps the request and tries again (Novofon retries).
            log.debug("http.storage_unavailable", path=request.path, error=str(e))
            why = "cannot store the request now (disk full or read-only)"
            response = error(503, "storage-unavailable", why)
            response.headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
            return response
        except web.HTTPRequestEntityTooLarge:
            return error(413, "body-too-large", "the request body is over the limit")
        except web.HTTPException:
            raise
        except HttpProcessingError as e:  # a multipart part with a broken header, say
            log.info("http.rejected", path=request.path, error="malformed", status=400, client=str(client))
            return error(400, "malformed", f"cannot parse the request: {type(e).__name__}")
        except UnicodeDecodeError:
            return error(400, "bad-encoding", "the request is not valid text in its charset")
        except LookupError:  # a charset nobody knows, declared in Content-Type
            return error(400, "bad-encoding", "the request declares an unknown charset")
        except ValueError as e:  # malformed form bodies, bad percent-encoding, ...
            return error(400, "malformed", f"cannot parse the request: {type(e).__name__}")
        except ConnectionError:
            raise  # the client went away: nobody to answer
        except Exception as e:
            incident = secrets.token_hex(4)
            log.exception("http.handler_failed", path=request.path, incident=incident, error=type(e).__name__)
            return web.json_response(
                {
                    "error": "internal-error",
                    "message": f"the bridge could not handle this request (incident {incident} in its log)",
                    "incident": incident,
                },
                status=500,
            )
        finally:
            if guard is not None:
                guard.leave(protocol)

    @web.middleware
    async def _body(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The whole body within ``body_timeout`` (read here once; handlers get it from memory)."""
        if request.body_exists:
            try:
                async with asyncio.timeout(self.limits.body_timeout):
                    await request.read()
            except TimeoutError:
                limit = self.limits.body_timeout
                log.info("http.body_timeout", path=request.path, client=str(request.get(peers.CLIENT_KEY)))
                resp = error(408, "body-timeout", f"the body did not arrive within {limit:g} s")
                resp.force_close()
                return resp
        return await handler(request)

    # -- built-in routes -----------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def status(self, request: web.Request) -> web.Response:
        if not peers.is_local(request):
            token = self.limits.status_token
            if not token:
                raise BadRequest(
                    403,
                    "forbidden",
                    "/status answers on this machine only (not through a proxy); set http.status_token "
                    "to ask from elsewhere",
                )
            if not hmac.compare_digest(_bearer(request).encode(), token.encode()):
                raise BadRequest(401, "bad-token", "send Authorization: Bearer <http.status_token>")
        data = self._status()
        if self.guard is not None:
            data["http"] = self.guard.stats()
        return web.json_response(data)
