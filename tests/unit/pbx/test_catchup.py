"""What happened while the bridge was not listening: the window, the facts, the backfill's dedupe."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from pathlib import Path

from bridge.calls.backfill import group
from bridge.calls.records import CallRecord
from bridge.calls.settings import TrackerSettings
from bridge.calls.snapshot import CallSnapshot
from bridge.config import Config, load
from bridge.pbx.catchup import CatchUp
from bridge.pbx.cdr import CsvCdr
from bridge.pbx.open_calls import LinkState, OpenCallStore
from tests.transcripts import DIR


def config(tmp: Path, **cdr: object) -> Config:
    cfg = load(None)
    a = dataclasses.replace(
        cfg.asterisk,
        recordings_dir=str(tmp),
        cdr=dataclasses.replace(cfg.asterisk.cdr, csv_path=str(DIR / "inbound_answered.cdr.csv"), **cdr),
    )
    return dataclasses.replace(cfg, asterisk=a)


def catchup(tmp: Path, committed: list[tuple[list[CallRecord], list[str]]], **cdr: object) -> CatchUp:
    store = OpenCallStore(sqlite3.connect(":memory:"))
    return CatchUp(config(tmp, **cdr), TrackerSettings(), store, lambda r, ids: committed.append((r, ids)))


def test_the_window_starts_when_we_stopped_listening(tmp_path: Path) -> None:
    c = catchup(tmp_path, [])
    now = time.time()
    assert c.window_start(now - 20, first=False) == now - 20  # a reconnect
    assert c.window_start(None, first=False) is None  # nothing was missed
    assert c.window_start(None, first=True) is None  # the first start ever: no history to flood
    c.previous_run_until = now - 300
    assert c.window_start(None, first=True) == now - 300  # a restart: since the last heartbeat
    c.previous_run_until = now - 30 * 86400
    assert abs(c.window_start(None, first=True) - (now - 86400)) < 5  # asterisk.cdr.max_age


def test_without_cdr_the_recording_file_tells_when_the_call_ended(tmp_path: Path) -> None:
    c = catchup(tmp_path, [], backfill=False)
    (tmp_path / "pbx-1.1.wav").write_bytes(b"RIFF")
    os.utime(tmp_path / "pbx-1.1.wav", (1000.0, 1000.0))
    snap = CallSnapshot("pbx-1.1", 900.0, 950.0, "", "in", recorded=("pbx-1.1",))
    (facts,) = c.facts([snap], []).values()
    assert (facts.ended_at, facts.source) == (1000.0, "recording")
    stale = dataclasses.replace(snap, last_seen=2000.0)  # a file older than the last event says nothing
    assert c.facts([stale], []) == {}


def test_backfill_skips_calls_seen_live_and_remembers_what_it_reported(tmp_path: Path) -> None:
    committed: list[tuple[list[CallRecord], list[str]]] = []
    c = catchup(tmp_path, committed)
    names = ("inbound_answered", "inbound_missed", "outbound_busy")
    calls = [group(CsvCdr(DIR / f"{n}.cdr.csv").read(0))[0] for n in names]
    live, seen, new = calls
    c.calls.mark_seen([seen.linkedid], 0.0)
    assert c.run(calls, 0.0, known={live.root.uniqueid}) == 1
    ((records, ids),) = committed
    assert records[0].pbx_call_id == f"out_{new.linkedid}" and new.linkedid in ids
    assert c.run(calls, new.end + 2, known=set()) == 0  # ended before the window (1 s of slack)


def test_status_says_when_the_link_was_down_and_what_was_backfilled(tmp_path: Path) -> None:
    c = catchup(tmp_path, [])
    c.outage_over(1000.0, 1020.0, 2)
    st = c.status(None)
    assert st["last_outage"] == {
        "from": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1000.0)),
        "to": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1020.0)),
        "seconds": 20.0,
        "backfilled_calls": 2,
    }
    assert st["backfilled_calls_total"] == 2 and st["down_since"] is None
    assert isinstance(c.calls.link(), LinkState) and c.calls.link().listening_until == 1020.0
