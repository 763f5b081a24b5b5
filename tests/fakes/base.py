"""A loopback aiohttp server that fakes an outside API, with scripted faults."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    status: int = 500
    body: Any = None  # JSON body; None = a plain-text error
    hang: float = 0.0  # seconds to sit on the request before answering (or never, if huge)
    headers: dict[str, str] | None = None
    processed: bool = False  # handle the request for real first, then hang and fail: the far side
    #                          has done it, the caller never hears so (a crash between send and ack)


class FakeServer:
    def __init__(self) -> None:
        self.app = web.Application(client_max_size=80 * 1024 * 1024, middlewares=[self._faults])
        self.faults: deque[Fault] = deque()
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._hanging: set[asyncio.Task[object]] = set()
        self.url = ""

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests += 1
        if self.faults:
            fault = self.faults.popleft()
            if fault.processed:
                await handler(request)
            if fault.hang:
                task = asyncio.current_task()
                assert task is not None
                self._hanging.add(task)
                try:
                    await asyncio.sleep(fault.hang)
                finally:
                    self._hanging.discard(task)
            if fault.body is None:
                return web.Response(status=fault.status, text="fault injected", headers=fault.headers)
            return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        return await handler(request)

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for task in list(self._hanging):  # a hung request must not hold the shutdown for its full hang
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
