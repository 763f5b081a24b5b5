"""Is the daemon reachable while many idle and slow clients hold connections to it?

The daemon runs as it does under systemd (``novofon-bridge run``, a process of its own, default
``http`` settings: header_timeout 10 s, max_connections 512), on loopback with its Asterisk
unreachable. This process opens N connections to it — half silent, half slowloris (a request head
that never ends, one header line every second) — and, while they are held, times GET /healthz and
a signed POST /call once every 100 ms. It reports the latencies, how many requests failed, and how
many of the slow connections the daemon had closed by the end.

Run:  .venv/bin/python bench/slow_connections.py [--connections 1000] [--hold 15] [--daemon-nofile 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.calls.records import sign  # noqa: E402

SECRET = "bench-secret"


async def start_daemon(tmp: Path, nofile: int | None) -> tuple[asyncio.subprocess.Process, int]:
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"storage: {{dir: {tmp}}}\n"
        "asterisk: {ami: {port: 1}}\n"
        "sinks: {console: {enabled: false}}\n"
        f"novofon: {{api_secret: {SECRET}}}\n"
        "logging: {format: json}\n"
        "http: {port: 0}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "-c",
        str(cfg),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=None if nofile is None else lambda: _limit_files(nofile),
    )
    assert proc.stderr is not None
    while True:
        line = json.loads(await proc.stderr.readline())
        if line["event"] == "http.listening":
            return proc, int(line["port"])


def _limit_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


async def hold(port: int, n: int, stop: asyncio.Event) -> tuple[int, int]:
    """Open ``n`` slow connections, keep them until ``stop``; return (opened, closed by the daemon)."""
    closed = 0

    async def one(i: int) -> bool:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        try:
            if i % 2:
                writer.write(b"POST /call HTTP/1.1\r\nHost: x\r\n")
            while not stop.is_set():
                read = asyncio.ensure_future(reader.read(65536))
                waiter = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({read, waiter}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if read in done:
                    if not read.result():
                        closed += 1  # EOF: the daemon hung up on us
                        return True
                    continue
                read.cancel()
                if i % 2:
                    writer.write(b"X-Slow: 1\r\n")
            return True
        except ConnectionError:
            closed += 1
            return True
        finally:
            writer.close()

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results), closed


async def probe(base: str, stop: asyncio.Event) -> tuple[list[float], list[float], int]:
    health: list[float] = []
    calls: list[float] = []
    failed = 0
    msk = ZoneInfo("Europe/Moscow")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        i = 0
        while not stop.is_set():
            i += 1
            t = time.perf_counter()
            try:
                async with s.get(f"{base}/healthz") as r:
                    await r.read()
                    ok = r.status == 200
                health.append(time.perf_counter() - t)
                data = {
                    "event": "NOTIFY_START",
                    "call_start": datetime.now(msk).strftime("%Y-%m-%d %H:%M:%S"),
                    "pbx_call_id": f"in_bench-{i}",
                    "caller_id": f"7958{i:07d}",
                    "called_did": "74951234567",
                }
                t = time.perf_counter()
                async with s.post(f"{base}/call", data=data, headers={"Signature": sign(data, SECRET)}) as r:
                    await r.read()
                    ok = ok and r.status == 200
                calls.append(time.perf_counter() - t)
                failed += not ok
            except (aiohttp.ClientError, TimeoutError):
                failed += 1
            await asyncio.sleep(0.1)
    return health, calls, failed


async def status(port: int) -> object:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(f"http://127.0.0.1:{port}/status") as r,
        ):
            return (await r.json()).get("http")
    except (aiohttp.ClientError, TimeoutError) as e:
        return f"/status unreachable ({type(e).__name__})"


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return f"{values[min(len(values) - 1, int(q * len(values)))] * 1000:.1f}"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument(
        "--daemon-nofile", type=int, help="the daemon's open-files limit (systemd's default: 1024)"
    )
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 500)), hard))
    with tempfile.TemporaryDirectory() as d:
        proc, port = await start_daemon(Path(d), args.daemon_nofile)
        drain = asyncio.create_task(_drain(proc))
        try:
            stop = asyncio.Event()
            holding = asyncio.create_task(hold(port, args.connections, stop))
            probing = asyncio.create_task(probe(f"http://127.0.0.1:{port}", stop))
            await asyncio.sleep(args.hold)
            http = await status(port)
            stop.set()
            (opened, closed), (health, calls, failed) = await asyncio.gather(holding, probing)
        finally:
            proc.terminate()
            await proc.wait()
            drain.cancel()
    print(f"slow connections opened: {opened} of {args.connections}, held {args.hold:g} s")
    print(f"closed by the daemon by then: {closed}; daemon's view at the end: {http}")
    for name, values in (("GET /healthz", health), ("POST /call", calls)):
        p50, p99, top = ms(values, 0.5), ms(values, 0.99), ms(values, 1)
        print(f"{name:13} n={len(values)}  p50 {p50} ms  p99 {p99} ms  max {top} ms")
    print(
        f"failed probes: {failed}; mean /healthz {statistics.fmean(health) * 1000:.1f} ms" if health else ""
    )


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    with contextlib.suppress(Exception):
        while await proc.stderr.readline():
            pass


if __name__ == "__main__":
    asyncio.run(main())
