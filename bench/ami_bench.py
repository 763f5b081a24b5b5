"""AMI parsing + call tracker throughput and memory, against bare baselines in the same run.

The stream is built from the AMI transcripts recorded from the real lab (tests/transcripts/):
each recorded call is cloned many times with fresh Uniqueids/Linkedids and shifted timestamps,
and CONCURRENT calls are interleaved event by event, so the tracker holds many overlapping calls.
The bytes are fed in 4 KiB chunks, as TCP reads would deliver them.

Every variant runs in its own child process so that its peak RSS is its own:
  split      bytes.split(b"\\r\\n\\r\\n") framing only: the floor for any Python AMI reader
  panoramisk panoramisk 1.4's AMIProtocol.data_received (its stock parsing), no tracker
  parse      our Framer + parse_message + event filter, no tracker
  full       our Framer + parse + normalise + Tracker: what the daemon does per event

Run:  make bench        (or: .venv/bin/python bench/ami_bench.py --calls 20000)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import re
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.calls.tracker import Tracker  # noqa: E402
from bridge.pbx.ami_events import WANTED, to_channel_event  # noqa: E402
from bridge.pbx.ami_protocol import AmiProtocol  # noqa: E402

TRANSCRIPTS = ROOT / "tests" / "transcripts"
CHUNK = 4096
_ID = re.compile(rb"(pbx-\d+\.\d+|rec-[0-9a-f]{8})")
_TS = re.compile(rb"Timestamp: (\d+\.\d+)")


def _calls() -> list[list[bytes]]:
    """One list of AMI messages per recorded call (FullyBooted and the like dropped)."""
    out = []
    for path in sorted(TRANSCRIPTS.glob("*.ami")):
        blocks = [b for b in path.read_bytes().split(b"\r\n\r\n") if b.startswith(b"Event: ")]
        blocks = [b for b in blocks if not b.startswith((b"Event: FullyBooted", b"Event: ContactStatus"))]
        out.append(blocks)
    return out


def build_stream(calls: int, concurrent: int) -> tuple[bytes, int]:
    """Return (stream, number of events)."""
    templates = _calls()
    pieces: list[bytes] = []
    events = 0
    base_ts = 1_800_000_000.0
    for group in range(0, calls, concurrent):
        clones = []
        for k in range(group, min(group + concurrent, calls)):
            tpl = templates[k % len(templates)]
            ids: dict[bytes, bytes] = {}

            def rename(m: re.Match[bytes], ids: dict[bytes, bytes] = ids, k: int = k) -> bytes:
                return ids.setdefault(m.group(0), b"b%d.%d" % (k, len(ids)))

            shift = base_ts + group * 0.5

            def retime(m: re.Match[bytes], shift: float = shift) -> bytes:
                return b"Timestamp: %.6f" % (shift + float(m.group(1)) % 100)

            clones.append([_TS.sub(retime, _ID.sub(rename, b)) + b"\r\n\r\n" for b in tpl])
        # Interleave the concurrent calls' events round-robin: overlapping calls in the tracker.
        longest = max(len(c) for c in clones)
        for i in range(longest):
            for c in clones:
                if i < len(c):
                    pieces.append(c[i])
                    events += 1
    return b"".join(pieces), events


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


# -- variants (each returns a count it derived, so nothing is optimised away) ------------------


def v_split(chunks: list[bytes]) -> int:
    buf = b""
    n = 0
    for chunk in chunks:
        parts = (buf + chunk).split(b"\r\n\r\n")
        buf = parts.pop()
        n += len(parts)
    return n


def v_panoramisk(chunks: list[bytes]) -> int:
    from panoramisk.ami_protocol import AMIProtocol

    class Factory:
        save_stream = None
        n = 0

        def dispatch(self, message: object) -> None:
            self.n += 1

    class Transport:
        def close(self) -> None:
            pass

    proto = AMIProtocol()
    proto.connection_made(Transport())  # type: ignore[arg-type]
    proto.factory = Factory()  # type: ignore[assignment]
    proto.encoding = "utf-8"  # type: ignore[attr-defined]
    for chunk in chunks:
        proto.data_received(chunk)
    return int(proto.factory.n)  # type: ignore[attr-defined]


def _our_protocol(on_event: Callable[[dict[str, str]], None]) -> AmiProtocol:
    async def make() -> AmiProtocol:
        return AmiProtocol(on_event, WANTED)

    return asyncio.run(make())


def v_parse(chunks: list[bytes]) -> int:
    seen = [0]

    def on_event(msg: dict[str, str]) -> None:
        seen[0] += 1

    proto = _our_protocol(on_event)
    for chunk in chunks:
        proto.data_received(chunk)
    return seen[0]


def v_full(chunks: list[bytes]) -> int:
    tracker = Tracker()
    records = [0]

    def on_event(msg: dict[str, str]) -> None:
        ev = to_channel_event(msg, 0.0)
        if ev is not None:
            records[0] += len(tracker.feed(ev))

    proto = _our_protocol(on_event)
    for chunk in chunks:
        proto.data_received(chunk)
    assert tracker.active_channels == 0 and tracker.active_calls == 0, "state leaked"
    return records[0]


VARIANTS: dict[str, Callable[[list[bytes]], int]] = {
    "split": v_split,
    "panoramisk": v_panoramisk,
    "parse": v_parse,
    "full": v_full,
}


def _rss_kib() -> int:
    """Current resident set size (not the peak): what the process holds right now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def _child(name: str, calls: int, concurrent: int, repeat: int, trace: bool, conn: object) -> None:
    data, events = build_stream(calls, concurrent)
    chunks = _chunks(data)
    del data
    gc.collect()
    rss_before = _rss_kib()
    if trace:  # count the Python objects the run leaves behind (slower, so only when asked)
        tracemalloc.start()
    best = float("inf")
    result = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = VARIANTS[name](chunks)
        best = min(best, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc.collect()
    kept, traced_peak = tracemalloc.get_traced_memory() if trace else (0, 0)
    conn.send((events, best, result, rss_before, _rss_kib(), peak, kept, traced_peak))  # type: ignore[attr-defined]


Row = tuple[int, float, int, int, int, int, int, int]


def run_variant(name: str, calls: int, concurrent: int, repeat: int, trace: bool = False) -> Row:
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_child, args=(name, calls, concurrent, repeat, trace, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--concurrent", type=int, default=200, help="calls overlapping in the stream")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = ap.parse_args()

    print(
        f"stream: {args.calls} calls from {len(_calls())} recorded scenarios, "
        f"{args.concurrent} overlapping, fed in {CHUNK}-byte chunks; best of {args.repeat}; one core\n"
    )
    rows = {n: run_variant(n, args.calls, args.concurrent, args.repeat) for n in VARIANTS}
    events = rows["split"][0]
    full_time = rows["full"][1]
    print(
        f"{'variant':<11} {'events/s':>11} {'calls/s':>9} {'µs/event':>9} {'time vs full':>13} "
        f"{'peak RSS MB':>12} {'RSS kept MB':>12}"
    )
    for name, (ev, secs, _res, rss0, rss1, peak, _k, _p) in rows.items():
        print(
            f"{name:<11} {ev / secs:>11,.0f} {args.calls / secs:>9,.0f} {secs / ev * 1e6:>9.2f} "
            f"{secs / full_time:>12.2f}x {peak / 1024:>12.1f} {(rss1 - rss0) / 1024:>12.2f}"
        )
    print(
        "(peak RSS includes the stream itself, held in memory; RSS kept = resident after the run "
        "minus before it)"
    )
    print(f"\nevents in stream: {events:,}; records produced by 'full': {rows['full'][2]:,}")

    # Memory must stay flat as the number of finished calls grows: same concurrency, more calls.
    print(
        f"\nmemory vs finished calls, {args.concurrent} overlapping (full pipeline under tracemalloc):"
        f"\n{'calls':>9} {'events':>10} {'Python objects kept KB':>23} {'traced peak KB':>15} "
        f"{'RSS kept MB':>12}"
    )
    for calls in (args.calls // 4, args.calls, args.calls * 4):
        ev, _s, _res, rss0, rss1, _peak, kept, tpeak = run_variant("full", calls, args.concurrent, 1, True)
        print(
            f"{calls:>9,} {ev:>10,} {kept / 1024:>23.1f} {tpeak / 1024:>15.1f} {(rss1 - rss0) / 1024:>12.2f}"
        )


if __name__ == "__main__":
    main()
