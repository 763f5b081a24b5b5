"""Slow and idle connections (issue 11, item 5): the daemon stays reachable, the slow ones are
closed, and running short of file descriptors refuses connections instead of killing anything.
Loopback only; the number of connections is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bridge.config import HttpConfig
from bridge.http.connections import RESERVED_FDS, fd_cap
from tests.helpers import base_url, offline_config, running_app, until

GENEROUS = 10.0  # seconds: "answers", not a latency benchmark (bench/slow_connections.py measures)


@contextlib.asynccontextmanager
async def slow_clients(port: int, n: int, trickle: bool) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``n`` connections that never finish a request: silent ones, or slowloris-style ones that send
    a header line now and then."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    tasks: list[asyncio.Task[None]] = []

    async def drip(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"POST /call HTTP/1.1\r\nHost: x\r\n")
            while True:
                await asyncio.sleep(0.3)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()

    try:
        for i in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            conns.append((reader, writer))
            if trickle and i % 2:
                tasks.append(asyncio.create_task(drip(writer)))
        yield [r for r, _ in conns]
    finally:
        for t in tasks:
            t.cancel()
        for _, w in conns:
            w.close()
        await asyncio.gather(*tasks, return_exceptions=True)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    return True


async def healthz(session: aiohttp.ClientSession, base: str) -> int:
    async with asyncio.timeout(GENEROUS), session.get(f"{base}/healthz") as resp:
        return resp.status


async def test_300_slow_connections_healthz_answers_and_they_are_closed(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, http=HttpConfig(port=0, header_timeout=1.0))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        assert app.http_server is not None
        base = base_url(app)
        async with slow_clients(app.http_server.port, 300, trickle=True) as readers:
            assert await healthz(s, base) == 200
            async with asyncio.timeout(GENEROUS + 5):  # header_timeout, plus slack for a busy machine
                assert all(await asyncio.gather(*(closed_by_server(r) for r in readers)))
            assert await healthz(s, base) == 200


async def test_at_the_cap_the_idlest_connection_makes_room(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, http=HttpConfig(port=0, header_timeout=300, max_connections=50))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        assert app.http_server is not None
        base = base_url(app)
        async with slow_clients(app.http_server.port, 200, trickle=False) as readers:
            assert await healthz(s, base) == 200
            async with s.get(f"{base}/status") as resp:
                http = (await resp.json())["http"]
            assert http["cap"] == 50 and http["open"] <= 50 and http["idle_closed"] >= 150
            async with asyncio.timeout(GENEROUS):  # the oldest ones were closed, long before their timeout
                assert await closed_by_server(readers[0])


async def test_when_every_connection_is_busy_a_new_one_gets_503(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, http=HttpConfig(port=0, max_connections=3, body_timeout=2.0))
    async with running_app(cfg) as app:
        assert app.http_server is not None
        port = app.http_server.port
        busy = []
        for _ in range(3):  # heads in, bodies trickling: requests in progress
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100\r\n\r\nevent=NOTI"
            )
            busy.append((reader, writer))
        await until(lambda: app.http_server is not None and _busy(app) == 3, timeout=GENEROUS)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(GENEROUS):
            refusal = await reader.read()
        writer.close()
        assert refusal.startswith(b"HTTP/1.1 503") and b'"too-many-connections"' in refusal
        async with asyncio.timeout(GENEROUS):  # the body deadline answers the slow ones
            answers = [await r.read() for r, _ in busy]
        for _, w in busy:
            w.close()
        assert all(a.startswith(b"HTTP/1.1 408") and b'"body-timeout"' in a for a in answers), answers
        assert app.store.db.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 0


def _busy(app: object) -> int:
    guard = app.http_server.guard  # type: ignore[attr-defined]
    return sum(1 for n in guard._busy.values() if n)


def test_the_cap_stays_under_the_open_files_limit() -> None:
    assert fd_cap(512, soft_limit=65536) == 512
    assert fd_cap(512, soft_limit=1024) == 512
    assert fd_cap(1000, soft_limit=1024) == 1024 - RESERVED_FDS
    assert fd_cap(512, soft_limit=RESERVED_FDS) == 1
    assert fd_cap(512, soft_limit=resource.RLIM_INFINITY) == 512


DAEMON = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from bridge.cli.main import main
sys.exit(main(["run", "-c", sys.argv[1]]))
"""


async def test_short_of_file_descriptors_connections_are_refused_nothing_dies(tmp_path: Path) -> None:
    """A daemon limited to 320 open files, 400 connections at it: it lowers its cap, keeps
    answering, and every background task keeps running."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"storage: {{dir: {tmp_path}}}\n"
        "asterisk: {ami: {port: 1, reconnect_max_delay: 1}}\n"
        "sinks: {console: {enabled: false}}\n"
        "logging: {format: json}\n"
        "http: {port: 0, max_connections: 1000, header_timeout: 300}\n"
        "agi: {port: 0}\n"  # any free port: never another daemon's 4573 on a shared machine
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DAEMON, str(cfg), "320", stderr=subprocess.PIPE, env=env
    )
    try:
        assert proc.stderr is not None
        port = 0
        async with asyncio.timeout(30):
            while not port:
                line = json.loads(await proc.stderr.readline())
                if line["event"] == "http.listening":
                    port = line["port"]
                    assert line["max_connections"] == 320 - RESERVED_FDS

        async def drain_log() -> None:  # keep reading, so the daemon never blocks on a full pipe
            assert proc.stderr is not None
            while await proc.stderr.readline():
                pass

        logs = asyncio.create_task(drain_log())
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s, slow_clients(port, 400, trickle=False):
            assert await healthz(s, base) == 200
            async with asyncio.timeout(GENEROUS), s.get(f"{base}/status") as resp:
                st = await resp.json()
        assert st["http"]["cap"] == 320 - RESERVED_FDS and st["http"]["idle_closed"] > 0
        assert st["healthy"] is True
        assert {t["state"] for t in st["tasks"].values()} <= {"running", "finished"}
        assert all(t["restarts"] == 0 for name, t in st["tasks"].items() if name != "ami"), st["tasks"]
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()
        if "logs" in locals():
            logs.cancel()
    assert proc.returncode == 0
