"""``check`` for the HTTP server: can it listen on http.bind:http.port?

A port that is taken is fine when the taker is this bridge's own running daemon: it answers
``GET /healthz`` with ``{"ok": ...}`` (bridge/http/server.py).
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import aiohttp

from bridge.i18n import tr
from bridge.preflight import Check, Context, Result
from bridge.startup import listen_problem, try_listen

HEALTHZ_TIMEOUT = 3.0


def checks(ctx: Context) -> list[Check]:
    return [Check("HTTP", lambda: http(ctx), online=False)]


def _local(bind: str) -> str:
    """Where to reach a server that listens on ``bind`` from this machine."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


async def held_by_daemon(bind: str, port: int) -> bool:
    """Whether a novofon-bridge daemon answers on bind:port (its /healthz)."""
    url = f"http://{_local(bind)}:{port}/healthz"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTHZ_TIMEOUT)) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            body: Any = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    return isinstance(body, dict) and set(body) == {"ok"} and isinstance(body["ok"], bool)


async def http(ctx: Context) -> list[Result]:
    h = ctx.cfg.http
    name = "HTTP"
    if not h.enabled:
        return [
            Result.ok(
                name,
                tr(
                    "выключен (http.enabled: false): уведомления Novofon и события Bitrix24 не принимаются",
                    "off (http.enabled: false): Novofon notifications and Bitrix24 events are not received",
                ),
            )
        ]
    if h.port == 0:
        return [
            Result.warning(
                name,
                tr(
                    "http.port: 0 — порт выбирается случайно при каждом запуске, Novofon и Bitrix24 не "
                    "узнают его",
                    "http.port: 0 — a random port at every start, Novofon and Bitrix24 cannot know it",
                ),
                tr("укажите постоянный порт (по умолчанию 2613)", "set a fixed port (default 2613)"),
            )
        ]
    failure = await asyncio.to_thread(try_listen, h.bind, h.port)
    where = f"{h.bind}:{h.port}"
    if failure is None:
        return [Result.ok(name, tr(f"{where} свободен", f"{where} is free"))]
    if failure.errno == errno.EADDRINUSE and await held_by_daemon(h.bind, h.port):
        return [
            Result.ok(
                name,
                tr(
                    f"{where} слушает уже запущенный novofon-bridge",
                    f"{where} is held by the running novofon-bridge",
                ),
            )
        ]
    problem, fix = listen_problem(failure, h.bind, h.port, "http")
    return [Result.error(name, problem, fix)]
