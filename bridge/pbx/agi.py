"""FastAGI: Asterisk asks us who should answer a caller (``AGI(agi://127.0.0.1:4573/route)``).

The protocol (res_agi): Asterisk connects, sends ``agi_*: value`` lines and an empty line; we send
commands one line at a time (``SET VARIABLE NAME "value"``), each answered by ``200 result=1``
(``100 Trying`` first for some, ``520-`` lines for a usage error, ``HANGUP`` when the caller hung
up); closing the connection lets the dialplan go on. Our answer to ``/route``:

    NOVOFON_ROUTE           the extension to ring first, or empty
    NOVOFON_CALLER_NAME     the client's name, or empty
    CALLERID(name)          the client's name, only when one is known
    NOVOFON_ROUTE_TIMEOUT   seconds to ring NOVOFON_ROUTE (agi.route_timeout), with a route

Our own small server rather than panoramisk's FastAGI (README, "Routing calls … (AGI)" says why):
every read has a deadline and a size limit, and whatever goes wrong the connection is closed, so
the channel goes on through the dialplan with an empty route.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import statistics
import time
from collections import deque
from typing import Any

import structlog

from bridge.calls.numbers import normalise
from bridge.pbx.routing import EXTENSION, Route, Router

log = structlog.get_logger("bridge.agi")

HEADER_TIMEOUT = 2.0  # Asterisk sends its agi_* lines at once; a silent peer is not Asterisk
REPLY_TIMEOUT = 2.0  # Asterisk answers a SET VARIABLE at once
MAX_LINE = 4096
MAX_HEADERS = 200
MAX_VALUE = 80  # characters of a value sent back (a caller name fits; a handset shows fewer)
PROBE_SCRIPT = "ping"  # `novofon-bridge check` asks who holds the port
PROBE_REPLY = "NOOP novofon-bridge"
UNIQUEID = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')


class AgiProtocolError(Exception):
    pass


class AgiHangup(Exception):
    """Asterisk said HANGUP (the caller left) or closed the connection: stop talking."""


async def read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    """The ``agi_*`` variables up to the empty line (bounded in lines and length)."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise AgiProtocolError(f"connection closed after {len(headers)} variables") from None
        except asyncio.LimitOverrunError:
            raise AgiProtocolError(f"a line longer than {MAX_LINE} bytes") from None
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if not headers:
                raise AgiProtocolError("no agi_* variables")
            return headers
        key, sep, value = line.partition(": ")
        if not sep or not key.startswith("agi_"):
            raise AgiProtocolError(f"not an AGI variable line: {line[:60]!r}")
        headers[key] = value
    raise AgiProtocolError(f"more than {MAX_HEADERS} variables")


def script_of(headers: dict[str, str]) -> str:
    """``agi_network_script`` without a query or slashes: "route" for agi://host:port/route."""
    return headers.get("agi_network_script", "").split("?", 1)[0].strip("/")


def agi_value(value: str) -> str:
    """A value as one safe AGI argument: quoted, no quotes/backslashes/control characters."""
    return '"' + _UNSAFE.sub("", value)[:MAX_VALUE].strip() + '"'


def answer_commands(route: Route, route_timeout: int) -> list[str]:
    """The SET VARIABLE commands that carry ``route`` to the channel (values validated here)."""
    ext = route.extension if EXTENSION.match(route.extension) else ""
    name = agi_value(route.caller_name)
    commands = [f"SET VARIABLE NOVOFON_ROUTE {agi_value(ext)}", f"SET VARIABLE NOVOFON_CALLER_NAME {name}"]
    if name != '""':
        commands.append(f"SET VARIABLE CALLERID(name) {name}")
    if ext:
        commands.append(f"SET VARIABLE NOVOFON_ROUTE_TIMEOUT {agi_value(str(int(route_timeout)))}")
    return commands


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> str:
    """Send one AGI command and return Asterisk's final reply line ("200 result=1")."""
    writer.write(line.encode() + b"\n")
    await writer.drain()
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            raw = await reader.readline()
            if not raw:
                raise AgiHangup("connection closed")
            reply = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if reply == "HANGUP":
                raise AgiHangup("the caller hung up")
            if reply.startswith("100 "):  # "100 result=0 Trying...": the real answer follows
                continue
            if reply.startswith("520-"):  # a usage error spans lines up to "520 End of ..."
                while not reply.startswith("520 "):
                    raw = await reader.readline()
                    if not raw:
                        raise AgiHangup("connection closed")
                    reply = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            return reply


class AgiServer:
    """The FastAGI listener (a supervised task: ``run``), answering ``/route`` from the router."""

    def __init__(self, bind: str, port: int, router: Router, route_timeout: int, country_code: str) -> None:
        self.bind, self.port = bind, port
        self.router = router
        self.route_timeout = route_timeout
        self.country_code = country_code
        self.listening = asyncio.Event()
        self.requests = 0
        self.bad_requests = 0
        self.hangups = 0
        self.failures = 0  # our own crashes while answering (the call went on with no route)
        self.latencies: deque[float] = deque(maxlen=1000)  # ms, connection to close
        self._writers: set[asyncio.StreamWriter] = set()

    async def run(self) -> None:
        try:
            server = await asyncio.start_server(self._handle, self.bind, self.port, limit=MAX_LINE)
        except OSError as e:
            busy = " — порт занят другой программой" if e.errno == errno.EADDRINUSE else ""
            raise OSError(
                e.errno,
                f"FastAGI не может слушать {self.bind}:{self.port}: {os.strerror(e.errno or 0)}{busy}"
                " (agi.bind / agi.port; тот же адрес — в AGI(agi://…) диалплана)",
            ) from None
        self.port = server.sockets[0].getsockname()[1]
        log.info("agi.listening", address=f"{self.bind}:{self.port}")
        self.listening.set()
        try:
            await server.serve_forever()
        finally:
            self.listening.clear()
            server.close()
            for writer in list(self._writers):
                writer.close()
            await self.router.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        self._writers.add(writer)
        try:
            await self._serve(reader, writer, started)
        except AgiHangup:
            self.hangups += 1
        except (ConnectionError, TimeoutError) as e:
            log.info("agi.connection_lost", error=f"{type(e).__name__}: {e}")
        except Exception:
            self.failures += 1
            log.exception("agi.answer_failed")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.latencies.append((time.perf_counter() - started) * 1000)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, started: float
    ) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                headers = await read_request(reader)
        except (AgiProtocolError, TimeoutError) as e:
            self.bad_requests += 1
            log.warning("agi.bad_request", error=str(e) or "no request in time")
            return
        script = script_of(headers)
        if script == PROBE_SCRIPT:
            writer.write(PROBE_REPLY.encode() + b"\n")
            return
        self.requests += 1
        if script != "route":
            self.bad_requests += 1
            log.warning("agi.unknown_script", script=script[:60], expected="agi://HOST:PORT/route")
            route = Route()
        else:
            number = normalise(headers.get("agi_callerid", ""), self.country_code)
            uniqueid = headers.get("agi_uniqueid", "")
            # The AGI runs on the trunk's channel: the call's first, whose Uniqueid is its Linkedid.
            call_id = f"in_{uniqueid}" if UNIQUEID.match(uniqueid) else ""
            route = await self.router.route(number, call_id, spent=time.perf_counter() - started)
            log.info(
                "agi.routed",
                number=number,
                call=call_id,
                extension=route.extension,
                source=route.source,
                named=bool(route.caller_name),
            )
        for line in answer_commands(route, self.route_timeout):
            reply = await command(reader, writer, line)
            if not reply.startswith("200"):
                log.warning("agi.command_refused", command=line.split(" ", 3)[2], reply=reply[:80])

    def status(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "enabled": True,
            "listening": self.listening.is_set(),
            "address": f"{self.bind}:{self.port}",
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "hangups": self.hangups,
            "failures": self.failures,
            **self.router.stats.as_dict(),
            "cached_numbers": self.router.cached_numbers,
            "latency_ms": {
                "p50": round(statistics.median(lat), 2) if lat else None,
                "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
                "max": round(lat[-1], 2) if lat else None,
            },
        }
