"""Bitrix24 card latency: register + show in one ``batch`` request against the two-request way,
in the same run.

N inbound calls ring at the same moment (their NOTIFY_START and first NOTIFY_INTERNAL committed
at once). The far side is the strict fake portal (tests/fakes/bitrix.py) answering every HTTP
request in 150 ms and applying Bitrix24's leaky bucket (burst 50, 2 requests/s: over it, 503
QUERY_LIMIT_EXCEEDED); our side is the real sink and REST client (its own 2/s, burst 50 bucket).
Measured: from the first ring to the portal showing that call's card (telephony.externalcall.show
handled), p50 / p99 over the calls.

Two ways of delivering:
- ``outbox``: the real dispatcher, as the daemon runs it (up to ``parallel_calls`` calls at once per sink);
- ``parallel``: each call's first ring sent at once (what per-call parallel delivery would give).

Run:  .venv/bin/python bench/bitrix_bench.py [--calls 20,50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge import logs  # noqa: E402
from bridge.calls.records import CallRecord  # noqa: E402
from bridge.directory import Directory, Employee  # noqa: E402
from bridge.errors import RetryLater  # noqa: E402
from bridge.http.client import Http  # noqa: E402
from bridge.integrations.bitrix24.client import BitrixClient  # noqa: E402
from bridge.integrations.bitrix24.settings import Bitrix24Settings  # noqa: E402
from bridge.integrations.bitrix24.sink import Bitrix24Sink  # noqa: E402
from bridge.integrations.bitrix24.state import BitrixCall  # noqa: E402
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy  # noqa: E402
from bridge.outbox.state import StateStore  # noqa: E402
from bridge.outbox.store import Delivery, OutboxStore, State  # noqa: E402
from tests.fakes.bitrix import FakeBitrix, portal_user  # noqa: E402
from tests.transcripts import replay  # noqa: E402

LATENCY = 0.150  # the portal's answer time
LIMIT = (50.0, 2.0)  # burst 50, drains 2 requests/s


class TwoRequestSink(Bitrix24Sink):
    """The way before: register, then show in a second request."""

    async def _register(self, r: CallRecord, st: BitrixCall, ext: str, show: str | None = None) -> None:
        await super()._register(r, st, ext, None)


def first_rings(calls: int) -> list[CallRecord]:
    start, first_internal = replay("inbound_ring_group")[:2]
    out: list[CallRecord] = []
    for i in range(calls):
        for r in (start, first_internal):
            out.append(CallRecord({**r.fields, "pbx_call_id": f"in_bench-{i}"}, r.meta))
    return out


async def run(calls: int, sink_type: type[Bitrix24Sink], delivery: str) -> tuple[list[float], int, int]:
    """Card latencies (s), HTTP requests the portal got, and how many it refused."""
    bx = FakeBitrix(users=[portal_user(11, "101", "Иван Петров")], latency=LATENCY, limit=LIMIT)
    await bx.start()
    http = Http(timeout=60)
    with tempfile.TemporaryDirectory() as tmp:
        store = OutboxStore(Path(tmp) / "outbox.sqlite3")
        directory = Directory(store.db)
        directory.upsert(Employee("101", "Иван", bitrix_user_id="11"))
        settings = Bitrix24Settings(enabled=True, webhook_url=bx.webhook_url)  # rate 2, burst 50
        state = StateStore(store.db)
        sink = sink_type(settings, BitrixClient(settings, http, state), state, directory, "Europe/Moscow")
        records = first_rings(calls)
        try:
            t0 = time.monotonic()
            if delivery == "outbox":
                await _through_outbox(store, sink, records, calls)
            else:
                await asyncio.gather(*(_send(sink, r) for r in records[1::2]))
            shown = [at - t0 for at in bx.shown_at.values()]
            assert len(shown) == calls, f"{len(shown)} of {calls} cards shown"
            return shown, len(bx.http_requests), sum(1 for _, e in bx.refused if e == "QUERY_LIMIT_EXCEEDED")
        finally:
            store.close()
            await http.close()
            await bx.stop()


async def _send(sink: Bitrix24Sink, record: CallRecord) -> None:
    """One call's first ring, retried after a 503 as the outbox would (without its jitter)."""
    while True:
        try:
            return await sink.send(Delivery(0, 0, "bitrix24", record, 0, 0.0))
        except RetryLater as e:
            await asyncio.sleep(e.retry_after or 1.0)


async def _through_outbox(
    store: OutboxStore, sink: Bitrix24Sink, records: list[CallRecord], calls: int
) -> None:
    d = Dispatcher(store, [sink], RetryPolicy(base=0.05, cap=1.0, max_age=600, send_timeout=60))
    task = asyncio.create_task(d.run())
    store.add(records, d.sink_names)
    d.notify()
    try:
        while store.list(State.PENDING, limit=1):
            await asyncio.sleep(0.01)
    finally:
        await d.stop(1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000


async def main_async(counts: list[int]) -> None:
    print(
        f"card latency: N inbound calls ringing at once; portal answers in {LATENCY * 1000:.0f} ms, "
        f"leaky bucket burst {LIMIT[0]:.0f}, {LIMIT[1]:.0f} req/s\n"
    )
    print(
        f"{'calls':>5}  {'delivery':<9} {'way':<13} {'requests':>8} {'503s':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p50 vs batch':>12} {'p99 vs batch':>12}"
    )
    for calls in counts:
        for delivery in ("outbox", "parallel"):
            rows = {}
            for way, sink_type in (("batch", Bitrix24Sink), ("two requests", TwoRequestSink)):
                shown, requests, refused = await run(calls, sink_type, delivery)
                rows[way] = (requests, refused, pct(shown, 50), pct(shown, 99))
            base = rows["batch"]
            for way, (requests, refused, p50, p99) in rows.items():
                print(
                    f"{calls:>5}  {delivery:<9} {way:<13} {requests:>8} {refused:>5} {p50:>8.0f} {p99:>8.0f} "
                    f"{p50 / base[2]:>11.2f}x {p99 / base[3]:>11.2f}x"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="20,50", help="comma-separated numbers of simultaneous calls")
    args = ap.parse_args()
    logs.setup("console", "error")  # the 503s are counted in the table, not logged
    asyncio.run(main_async([int(n) for n in args.calls.split(",")]))


if __name__ == "__main__":
    main()
