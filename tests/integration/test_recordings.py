"""Recordings named as FreePBX names them, on the real lab: the file is learnt from Asterisk
(MixMonitor's MIXMONITOR_FILENAME), not from a naming convention — live, across a daemon restart
mid-call (the call's snapshot), and for a call the daemon adopts after starting mid-call (Getvar)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bridge.app import App
from bridge.calls.records import CallRecord
from bridge.pbx.ami import AmiConnection
from tests.conftest import arx, hangup_all, lab_config
from tests.helpers import MemorySink, until
from tests.lab import lab as L
from tests.lab.calls import call_in

pytestmark = pytest.mark.lab

CALLER = "89581114585"
# monitor/YYYY/MM/DD/in-<DID>-<caller>-<YYYYmmdd-HHMMSS>-<uniqueid>.wav, relative to the monitor folder
DATED = re.compile(
    rf"(\d{{4}})/(\d\d)/(\d\d)/in-{L.DID_RECORDED_FREEPBX}-{CALLER}-(\d{{8}})-\d{{6}}-(?P<uid>[\w.-]+)\.wav"
)


def dated_file(lab: L.Lab, records: list[CallRecord]) -> Path:
    """The recording the END and the RECORD name: one file, in a dated folder, that exists, named
    for the recorded channel whose Uniqueid is the stable call_id_with_rec."""
    end, rec = records[-2], records[-1]
    assert (end.fields["event"], rec.fields["event"]) == ("NOTIFY_END", "NOTIFY_RECORD")
    assert end.fields["is_recorded"] == "1" and end.meta["recording_file"] == rec.meta["recording_file"]
    path = Path(rec.meta["recording_file"])
    relative = path.relative_to(lab.recordings_dir).as_posix()
    m = DATED.fullmatch(relative)
    assert m is not None, relative
    assert m["uid"] == rec.fields["call_id_with_rec"] == end.fields["call_id_with_rec"]
    assert m[4] == m[1] + m[2] + m[3]  # the folder is the call's day
    assert path.read_bytes()[:4] == b"RIFF"  # MixMonitor's own file, where the record says
    return path


async def test_a_recording_in_freepbxs_dated_folders_is_named_in_the_record(
    daemon: tuple[App, MemorySink], provider: AmiConnection, lab: L.Lab
) -> None:
    app, sink = daemon
    named: list[str] = []  # what Asterisk itself said, through the shipped event filter
    app.pipeline.ami_observers.append(
        lambda m: named.append(m["Value"]) if m.get("Variable") == "MIXMONITOR_FILENAME" else None
    )
    await call_in(provider, L.DID_RECORDED_FREEPBX, talk=2, caller=CALLER)
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
    assert [r.fields["event"] for r in records] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    assert records[-2].fields["disposition"] == "answered"
    path = dated_file(lab, records)
    assert named == [f"{lab.pbx_recordings_dir}/{path.relative_to(lab.recordings_dir).as_posix()}"]
    assert not (lab.recordings_dir / f"{records[-1].fields['call_id_with_rec']}.wav").exists()


async def test_a_restart_mid_call_still_finds_the_file(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    """The file is in the call's snapshot: the next run names it though it never saw the VarSet."""
    first, second = MemorySink(), MemorySink()
    cfg = lab_config(lab, tmp_path)
    app1 = App(cfg, extra_sinks=[first])
    stop1 = asyncio.Event()
    task1 = asyncio.create_task(app1.run(stop1))
    try:
        await asyncio.wait_for(app1.ami.connected.wait(), 20)
        await call_in(provider, L.DID_RECORDED_FREEPBX, talk=5, caller=CALLER)
        await first.wait_events("NOTIFY_ANSWER")
    finally:
        stop1.set()
        await asyncio.wait_for(task1, 30)
    app2 = App(cfg, extra_sinks=[second])
    (snap,) = app2.tracker.vanished([])  # the call as the first run committed it
    ((_, file),) = snap.files
    assert file.startswith(f"{lab.pbx_recordings_dir}/") and L.DID_RECORDED_FREEPBX in file
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(app2.run(stop2))
    try:
        records = await second.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=30)
    finally:
        stop2.set()
        await asyncio.wait_for(task2, 30)
        await hangup_all(lab)
    assert [r.fields["event"] for r in first.records] == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER"]
    assert [r.fields["event"] for r in records] == ["NOTIFY_END", "NOTIFY_RECORD"]
    dated_file(lab, records)


async def test_a_call_adopted_mid_call_asks_asterisk_for_the_file(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    """The daemon starts while the call is up (nothing of it in its state): it adopts the call and
    reads the recorded channel's MIXMONITOR_FILENAME (Getvar)."""
    await call_in(provider, L.DID_RECORDED_FREEPBX, talk=6, caller=CALLER)

    async def talking() -> bool:
        out = await arx(lab, L.PBX, "core show channels concise")
        return any(line.startswith("PJSIP/101-") and "!Up!" in line for line in out.splitlines())

    for _ in range(100):
        if await talking():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("101 never answered")
    sink = MemorySink()
    app = App(lab_config(lab, tmp_path), extra_sinks=[sink])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        await until(lambda: app.tracker.active_calls == 1)
        (snap,) = app.tracker.vanished([])  # the adopted call, as Getvar told
        ((_, file),) = snap.files
        assert file.startswith(f"{lab.pbx_recordings_dir}/") and L.DID_RECORDED_FREEPBX in file
        records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await hangup_all(lab)
    assert records[0].fields["event"] == "NOTIFY_START" and records[0].reconstructed
    dated_file(lab, records)
