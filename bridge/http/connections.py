"""Open connections, bounded: slow and idle clients cannot starve the server or the process of fds.

- Header timeout: aiohttp's keep-alive timer runs from the moment a connection opens, so a client
  that has not sent a whole request head within ``header_timeout`` (or sits idle that long between
  keep-alive requests) is closed (``RequestHandler(keepalive_timeout=...)``). The body has a
  deadline of its own (the server's middleware).
- A cap: never more than ``cap`` connections at once, and never so many that the process runs out
  of file descriptors (the cap stays ``RESERVED_FDS`` under ``RLIMIT_NOFILE``: SQLite, AMI and the
  HTTP client keep working). At the cap, a new connection makes room by closing the connection
  that has been idle longest (no request in progress: an idle keep-alive or a slow request head),
  so a flood of slow connections cannot lock out Novofon or /healthz; when every connection is
  busy in a request, the new one gets a 503 and is closed.
- Should accept() still hit EMFILE (fds taken by something else), asyncio's server stops
  accepting for a second and retries: new connections wait or are refused, nothing dies.
"""

from __future__ import annotations

import asyncio
import resource
import time

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("bridge.http")

RESERVED_FDS = 200  # for the database, AMI, the HTTP client's pool (100) and files we read
_BODY = b'{"error": "too-many-connections", "message": "the server is busy, try again later"}\n'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)


def fd_cap(configured: int, soft_limit: int | None = None) -> int:
    """``configured``, lowered to stay ``RESERVED_FDS`` under the process's open-files limit."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit < 0:
        return configured
    return max(1, min(configured, soft_limit - RESERVED_FDS))


class _Refusal(asyncio.Protocol):
    """Answers 503 and hangs up: the server is full of requests in progress."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(REFUSAL)
        transport.close()


class ConnectionGuard:
    """The protocol factory given to ``loop.create_server``: aiohttp's handler, under a cap."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self._server = server
        self.cap = cap
        # Per connection (aiohttp's handlers take no weak references: pruned as connections close).
        self._since: dict[RequestHandler, float] = {}
        self._busy: dict[RequestHandler, int] = {}
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        open_now = self._server.connections
        if len(self._since) > 2 * len(open_now) + 64:
            self._prune(open_now)
        live = [h for h in open_now if h.transport is not None]
        if len(live) >= self.cap:
            victim = self._idlest(live)
            if victim is None:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning("http.connection_refused", open=len(live), cap=self.cap, refused=self.refused)
                return _Refusal()
            victim.force_close()
            self.evicted += 1
            if self.evicted in (1, 10, 100) or self.evicted % 1000 == 0:
                log.warning("http.idle_connection_closed", open=len(live), cap=self.cap, evicted=self.evicted)
        handler = self._server()
        self._since[handler] = time.monotonic()
        return handler

    def _prune(self, open_now: list[RequestHandler]) -> None:
        keep = set(open_now)
        self._since = {h: t for h, t in self._since.items() if h in keep}
        self._busy = {h: n for h, n in self._busy.items() if h in keep and n}

    def _idlest(self, live: list[RequestHandler]) -> RequestHandler | None:
        idle = [h for h in live if not self._busy.get(h)]
        return min(idle, key=lambda h: self._since.get(h, 0.0)) if idle else None

    # The server's middleware says when a request is in progress on a connection.
    def enter(self, handler: RequestHandler) -> None:
        self._busy[handler] = self._busy.get(handler, 0) + 1

    def leave(self, handler: RequestHandler) -> None:
        self._busy[handler] = max(0, self._busy.get(handler, 0) - 1)
        self._since[handler] = time.monotonic()

    def stats(self) -> dict[str, int]:
        live = sum(1 for h in self._server.connections if h.transport is not None)
        return {"open": live, "cap": self.cap, "idle_closed": self.evicted, "refused": self.refused}


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard``."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, backlog=512)
        self._host, self._port = host, port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        if server.sockets:
            self._port = server.sockets[0].getsockname()[1]
