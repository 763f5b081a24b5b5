"""Outbox throughput and latency, against posting straight from the tracker, in the same run.

The far side is a Novofon-webhook receiver (aiohttp) in a child process on loopback; the daemon
side runs our real code on one core: AMI bytes -> parser -> tracker -> [outbox: SQLite commit ->
dispatcher -> WebhookSink] or [baseline: an in-memory queue -> the same HTTP POST].

1. throughput: N records committed at once, then delivered; records/s.
2. latency: calls paced at 10 and 50 calls/s (events recorded from the lab, fresh ids per call);
   time from feeding the call's Hangup AMI event to the receiver holding its NOTIFY_END; p50/p99.

Run:  .venv/bin/python bench/outbox_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ami_bench import _ID, _calls  # noqa: E402

from bridge.calls.records import CallRecord  # noqa: E402
from bridge.calls.tracker import Tracker  # noqa: E402
from bridge.http.client import Http  # noqa: E402
from bridge.integrations.novofon.webhook_sink import WebhookSink  # noqa: E402
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy  # noqa: E402
from bridge.outbox.store import Delivery, OutboxStore  # noqa: E402
from bridge.pbx.ami_events import WANTED, to_channel_event  # noqa: E402
from bridge.pbx.ami_protocol import AmiProtocol  # noqa: E402

SECRET = "bench-secret"


# -- the far side, in its own process --------------------------------------------------------------


def _receiver(port_out: object) -> None:
    arrivals: list[tuple[str, str, float]] = []

    async def hook(request: web.Request) -> web.Response:
        data = await request.post()
        arrivals.append((str(data["event"]), str(data["pbx_call_id"]), time.time()))
        return web.Response(text="ok")

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        app.router.add_get("/dump", dump)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_out.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr,attr-defined]
        await asyncio.Event().wait()

    asyncio.run(main())


# -- calls ---------------------------------------------------------------------------------------


def call_bytes(k: int) -> bytes:
    """One recorded call (cycling through the scenarios) with ids unique to ``k``."""
    templates = _calls()
    blocks = templates[k % len(templates)]
    ids: dict[bytes, bytes] = {}
    return b"".join(
        _ID.sub(lambda m: ids.setdefault(m.group(0), b"c%d.%d" % (k, len(ids))), b) + b"\r\n\r\n"
        for b in blocks
    )


class Pipeline:
    """AMI bytes -> records, handed to ``publish``."""

    def __init__(self, publish: Callable[[list[CallRecord]], None]) -> None:
        self.tracker = Tracker()
        self.publish = publish

        def on_event(msg: dict[str, str]) -> None:
            ev = to_channel_event(msg, time.time())
            if ev is not None:
                records = self.tracker.feed(ev)
                if records:
                    publish(records)

        self.proto = AmiProtocol(on_event, WANTED)

    def feed(self, data: bytes) -> None:
        self.proto.data_received(data)


class Outbox:
    name = "outbox"

    def __init__(self, url: str, http: Http, tmp: Path) -> None:
        self.store = OutboxStore(tmp / "bench.sqlite3")
        self.sink = WebhookSink("crm", url, SECRET, http)
        self.dispatcher = Dispatcher(self.store, [self.sink], RetryPolicy(base=0.05, cap=0.1))
        self.task: asyncio.Task[None] | None = None
        self.cp: asyncio.Task[None]

    def publish(self, records: list[CallRecord]) -> None:
        self.store.add(records, ["crm"])
        self.dispatcher.notify()

    async def _checkpoints(self) -> None:  # as the daemon does
        while True:
            await asyncio.sleep(10)
            await asyncio.to_thread(self.store.checkpoint)

    async def start(self) -> None:
        self.task = asyncio.create_task(self.dispatcher.run())
        self.cp = asyncio.create_task(self._checkpoints())

    async def stop(self) -> None:
        await self.dispatcher.stop(1)
        assert self.task is not None
        self.task.cancel()
        self.cp.cancel()
        self.store.close()


class Direct:
    """The baseline: no SQLite, no retries: one task posting records in order as they come."""

    name = "direct"

    def __init__(self, url: str, http: Http, tmp: Path) -> None:
        self.sink = WebhookSink("crm", url, SECRET, http)
        self.queue: asyncio.Queue[CallRecord] = asyncio.Queue()
        self.n = 0
        self.task: asyncio.Task[None] | None = None

    def publish(self, records: list[CallRecord]) -> None:
        for r in records:
            self.queue.put_nowait(r)

    async def _run(self) -> None:
        while True:
            r = await self.queue.get()
            self.n += 1
            await self.sink.send(Delivery(self.n, self.n, "crm", r, 0, 0.0))

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()


async def arrivals(http: Http, base: str) -> list[tuple[str, str, float]]:
    async with http.session.get(f"{base}/dump") as resp:
        return [tuple(x) for x in await resp.json()]  # type: ignore[misc]


async def wait_for_count(http: Http, base: str, n: int, timeout: float = 120) -> list[tuple[str, str, float]]:
    deadline = time.monotonic() + timeout
    while True:
        got = await arrivals(http, base)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


Mode = Callable[[str, Http, Path], "Outbox | Direct"]


async def throughput(mode: Mode, base: str, http: Http, calls: int) -> tuple[int, float]:
    await http.session.post(f"{base}/reset")
    with tempfile.TemporaryDirectory() as tmp:
        m = mode(f"{base}/hook", http, Path(tmp))
        pipe = Pipeline(m.publish)
        data = [call_bytes(k) for k in range(calls)]
        await m.start()
        t0 = time.perf_counter()
        for d in data:
            pipe.feed(d)
        n = records_in(data)
        got = await wait_for_count(http, base, n)
        elapsed = time.perf_counter() - t0
        await m.stop()
    assert len(got) == n, (len(got), n)
    return n, elapsed


def records_in(data: list[bytes]) -> int:
    """How many records these calls make (the same for both modes)."""
    t = Tracker()
    count = 0

    def on_event(msg: dict[str, str]) -> None:
        nonlocal count
        ev = to_channel_event(msg, 0.0)
        if ev is not None:
            count += len(t.feed(ev))

    p = AmiProtocol(on_event, WANTED)
    for d in data:
        p.data_received(d)
    return count


async def latency(mode: Mode, base: str, http: Http, rate: float, seconds: float) -> list[float]:
    await http.session.post(f"{base}/reset")
    with tempfile.TemporaryDirectory() as tmp:
        m = mode(f"{base}/hook", http, Path(tmp))
        fed: dict[str, float] = {}

        def publish(records: list[CallRecord]) -> None:
            now = time.time()
            for r in records:
                if r.fields["event"] in ("NOTIFY_END", "NOTIFY_OUT_END"):
                    fed[r.pbx_call_id] = now  # the Hangup that closed the call was just fed
            m.publish(records)

        pipe = Pipeline(publish)
        await m.start()
        calls = int(rate * seconds)
        start = time.perf_counter()
        for k in range(calls):
            await asyncio.sleep(max(0.0, start + k / rate - time.perf_counter()))
            pipe.feed(call_bytes(10_000_000 + k))
        got = await arrivals(http, base)
        deadline = time.monotonic() + 60
        while sum(e in ("NOTIFY_END", "NOTIFY_OUT_END") for e, _, _ in got) < calls:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
            got = await arrivals(http, base)
        await m.stop()
    return [
        (t - fed[cid]) * 1000 for e, cid, t in got if e in ("NOTIFY_END", "NOTIFY_OUT_END") and cid in fed
    ]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def main_async(args: argparse.Namespace, port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    http = Http(timeout=30)
    try:
        print(f"throughput: {args.calls} calls at once, delivered to a webhook receiver on loopback\n")
        print(f"{'mode':<8} {'records':>8} {'seconds':>8} {'records/s':>10} {'time vs direct':>15}")
        rows = {}
        for name, mode in (("direct", Direct), ("outbox", Outbox)):
            rows[name] = await throughput(mode, base, http, args.calls)
        for name, (n, secs) in rows.items():
            print(f"{name:<8} {n:>8,} {secs:>8.2f} {n / secs:>10,.0f} {secs / rows['direct'][1]:>14.2f}x")

        print("\nlatency from the Hangup AMI event to the receiver holding NOTIFY_END (ms)\n")
        print(
            f"{'rate':>9} {'mode':<8} {'calls':>6} {'p50':>8} {'p99':>8} {'max':>8} {'p99 outbox cost':>16}"
        )
        for rate in (10.0, 50.0):
            lat = {}
            for name, mode in (("direct", Direct), ("outbox", Outbox)):
                lat[name] = await latency(mode, base, http, rate, args.seconds)
            for name, values in lat.items():
                cost = pct(values, 99) - pct(lat["direct"], 99) if name == "outbox" else 0.0
                print(
                    f"{rate:>6.0f}/s {name:<8} {len(values):>6} {statistics.median(values):>8.2f} "
                    f"{pct(values, 99):>8.2f} {max(values):>8.2f} "
                    f"{(f'{cost:+.2f}' if name == 'outbox' else ''):>16}"
                )
    finally:
        await http.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="throughput: calls committed at once")
    ap.add_argument("--seconds", type=float, default=10.0, help="latency: seconds per rate")
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_receiver, args=(child,), daemon=True)
    proc.start()
    port = parent.recv()
    try:
        asyncio.run(main_async(args, port))
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
