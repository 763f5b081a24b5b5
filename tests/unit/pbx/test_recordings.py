"""The recording's file is what Asterisk says it is (MixMonitor's MIXMONITOR_FILENAME), wherever and
however it is named: absolute, relative to the monitor folder, FreePBX's dated folders, other
formats; it survives a restart mid-call; a CDR backfill finds it; nothing outside recordings_dir."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bridge.calls.backfill import group
from bridge.calls.events import Kind
from bridge.calls.records import CallRecord, Event
from bridge.calls.snapshot import CallSnapshot
from bridge.calls.tracker import Tracker
from bridge.config import Config, load
from bridge.outbox.dispatcher import Dispatcher
from bridge.outbox.store import OutboxStore
from bridge.pbx.ami_events import to_channel_event
from bridge.pbx.ami_protocol import AmiMessage
from bridge.pbx.catchup import CatchUp
from bridge.pbx.cdr import CsvCdr, mysql_row
from bridge.pbx.open_calls import OpenCallStore
from bridge.pbx.pipeline import Pipeline, tracker_settings
from bridge.pbx.recordings import RecordingFiles
from tests.helpers import MemorySink
from tests.transcripts import DIR, messages, raw

MONITOR = "/var/spool/asterisk/monitor"
UID = "pbx-1795968066.0"  # the trunk channel MixMonitor records in inbound_answered
DATED = f"2026/11/29/in-74950000101-89581114585-20261129-190106-{UID}.wav"


def varset(value: str, uniqueid: str = UID, variable: str = "MIXMONITOR_FILENAME") -> AmiMessage:
    return {
        "Event": "VarSet",
        "Timestamp": "1795968066.765",
        "Channel": "PJSIP/novofon-00000000",
        "Uniqueid": uniqueid,
        "Linkedid": UID,
        "Variable": variable,
        "Value": value,
    }


def with_file(value: str) -> list[AmiMessage]:
    """inbound_answered as the lab recorded it, with MixMonitor's VarSet just before its start event."""
    out: list[AmiMessage] = []
    for m in messages(raw("inbound_answered")):
        if m.get("Event") == "FullyBooted":
            continue
        if m.get("Event") == "MixMonitorStart":
            out.append(varset(value, m["Uniqueid"]))
        out.append(m)
    return out


def config(folder: Path, pbx_folder: str = MONITOR) -> Config:
    cfg = load(None)
    a = dataclasses.replace(cfg.asterisk, recordings_dir=str(folder), pbx_recordings_dir=pbx_folder)
    return dataclasses.replace(cfg, asterisk=a)


def pipeline(db: Path, cfg: Config) -> Pipeline:
    p = Pipeline(cfg, OutboxStore(db))
    p.attach(Dispatcher(p.store, [MemorySink("crm")]))
    return p


def committed(p: Pipeline, event: str) -> dict[str, str]:
    (meta,) = [r[0] for r in p.store.db.execute("SELECT meta FROM records WHERE event = ?", (event,))]
    return dict(json.loads(meta))


# -- AMI: the VarSet that names the file ------------------------------------------------------------


def test_mixmonitor_filename_varset_is_the_recording_with_its_file() -> None:
    ev = to_channel_event(varset(f"{MONITOR}/{DATED}"), 0.0)
    assert ev is not None and ev.kind is Kind.RECORDING
    assert (ev.uniqueid, ev.recording_file) == (UID, f"{MONITOR}/{DATED}")
    assert to_channel_event(varset("x", variable="CALLFILENAME"), 0.0) is None  # another variable
    assert to_channel_event(varset(""), 0.0) is None  # emptied: no recording starts
    plain = to_channel_event({"Event": "MixMonitorStart", "Uniqueid": UID}, 0.0)
    assert plain is not None and plain.kind is Kind.RECORDING and plain.recording_file == ""


def test_the_tracker_reports_the_file_as_asterisk_named_it_and_keeps_it_in_snapshots() -> None:
    tracker = Tracker(persist=True)
    msgs = with_file(f"{MONITOR}/{DATED}")
    cut = next(i for i, m in enumerate(msgs) if m.get("Event") == "BridgeEnter")
    for m in msgs[:cut]:
        ev = to_channel_event(m, 0.0)
        if ev is not None:
            tracker.feed(ev)
    (snap,) = tracker.take_changes().saved
    restored = Tracker()
    restored.restore([CallSnapshot.from_json(snap.to_json())])  # a restart mid-call
    out: list[CallRecord] = []
    for m in msgs[cut:]:
        ev = to_channel_event(m, 0.0)
        if ev is not None:
            out += restored.feed(ev)
    files = {r.event: r.meta.get("recording_file") for r in out}
    assert files == {Event.END: f"{MONITOR}/{DATED}", Event.RECORD: f"{MONITOR}/{DATED}"}


# -- the daemon's path of what Asterisk named ----------------------------------------------------


def test_paths_absolute_relative_dated_and_mapped_from_asterisks_view(tmp_path: Path) -> None:
    local = tmp_path / "monitor"
    same = RecordingFiles(str(local), str(local))
    assert same.resolve(f"{local}/1.2.wav") == local / "1.2.wav"  # the daemon sees what Asterisk sees
    assert same.resolve(f"{local}/{DATED}") == local / DATED  # FreePBX's dated folders
    assert same.resolve(DATED) == local / DATED  # relative: against the monitor folder, as MixMonitor
    mapped = RecordingFiles(str(local), "/lab4/spool/monitor")  # a chroot, a container's bind mount
    assert mapped.resolve(f"/lab4/spool/monitor/{DATED}") == local / DATED
    assert mapped.resolve(f"{local}/a/1.2.gsm") == local / "a" / "1.2.gsm"


def test_nothing_outside_the_recordings_folder_is_ever_named(tmp_path: Path) -> None:
    files = RecordingFiles(str(tmp_path / "monitor"), MONITOR)
    for bad in (
        f"{MONITOR}/../../../../etc/passwd",
        f"{MONITOR}/2026/../../x.wav",
        "../secret.wav",
        "2026/../../secret.wav",
        "/etc/asterisk/manager.conf",
        str(tmp_path / "monitor-other" / "1.wav"),  # a sibling whose name starts the same
        MONITOR,
        f"{tmp_path}/monitor/a\0.wav",
    ):
        assert files.resolve(bad) is None, bad
    assert RecordingFiles("").resolve(f"{MONITOR}/1.wav") is None  # recordings_dir unset


def test_find_by_the_cdrs_name_or_the_uniqueid_in_dated_folders(tmp_path: Path) -> None:
    files = RecordingFiles(str(tmp_path), MONITOR, "Europe/Moscow")
    when = datetime(2026, 11, 29, 23, 59, 30, tzinfo=ZoneInfo("Europe/Moscow")).timestamp()
    day = tmp_path / "2026" / "11" / "29"
    day.mkdir(parents=True)
    (day / "out-101-79001110001-20261129-235930-1.10.wav49").write_bytes(b"x")
    (day / "in-7495-7900-20261129-235930-1.123.wav").write_bytes(b"x")
    assert files.find(["1.12"], [when]) is None  # 1.12 is not 1.123
    (day / "in-7495-7900-20261129-235930-1.12.mp3").write_bytes(b"x")
    # FreePBX's CDR(recordingfile): the bare name, in the dated folder of the call's day
    assert files.find(["9.9"], [when], name="in-7495-7900-20261129-235930-1.123.wav") == (
        day / "in-7495-7900-20261129-235930-1.123.wav"
    )
    assert files.find(["1.12"], [when]) == day / "in-7495-7900-20261129-235930-1.12.mp3"
    assert files.find(["1.10"], [when]) == day / "out-101-79001110001-20261129-235930-1.10.wav49"
    assert files.find(["1.10"], [when + 86400]) is None  # another day's folder
    (tmp_path / "1.1.wav").write_bytes(b"x")  # our own snippet's <uniqueid>.wav
    assert files.find(["1.1"], []) == tmp_path / "1.1.wav"
    assert (
        files.find(["1.12"], [when], name="../../etc/passwd") == day / "in-7495-7900-20261129-235930-1.12.mp3"
    )


# -- the pipeline: meta.recording_file is the daemon's path, across a restart ----------------------


def test_the_record_names_the_daemons_path_even_after_a_restart_mid_call(tmp_path: Path) -> None:
    cfg = config(tmp_path / "monitor", "/lab4/spool/monitor")
    msgs = with_file(f"/lab4/spool/monitor/{DATED}")
    cut = next(i for i, m in enumerate(msgs) if m.get("Event") == "BridgeEnter")
    first = pipeline(tmp_path / "outbox.sqlite3", cfg)
    for m in msgs[:cut]:
        first.on_ami_event(m)
    second = pipeline(tmp_path / "outbox.sqlite3", cfg)  # kill -9, a new process
    for m in msgs[cut:]:
        second.on_ami_event(m)
    want = str(tmp_path / "monitor" / DATED)
    assert committed(second, "NOTIFY_RECORD")["recording_file"] == want
    assert committed(second, "NOTIFY_END")["recording_file"] == want


def test_a_file_outside_the_folder_is_left_out_of_the_record(tmp_path: Path) -> None:
    p = pipeline(tmp_path / "outbox.sqlite3", config(tmp_path / "monitor"))
    for m in with_file("/etc/shadow"):
        p.on_ami_event(m)
    assert "recording_file" not in committed(p, "NOTIFY_RECORD")


def test_without_the_varset_the_file_holding_the_uniqueid_is_found(tmp_path: Path) -> None:
    """An AMI user whose event filter predates the VarSet line: the folder is searched."""
    folder = tmp_path / "monitor"
    day = datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y/%m/%d")
    (folder / day).mkdir(parents=True)
    (folder / day / f"in-74950000101-x-{UID}.wav").write_bytes(b"x")
    p = pipeline(tmp_path / "outbox.sqlite3", config(folder))
    for m in messages(raw("inbound_answered")):
        p.on_ami_event(m)
    assert committed(p, "NOTIFY_RECORD")["recording_file"] == str(
        folder / day / f"in-74950000101-x-{UID}.wav"
    )


# -- after an outage: the CDR and the folder ------------------------------------------------------


def catchup(folder: Path, out: list[tuple[list[CallRecord], list[str]]]) -> CatchUp:
    cfg = config(folder)
    cdr = dataclasses.replace(cfg.asterisk.cdr, csv_path=str(DIR / "inbound_answered.cdr.csv"))
    cfg = dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, cdr=cdr))
    store = OpenCallStore(sqlite3.connect(":memory:"))
    return CatchUp(cfg, tracker_settings(cfg), store, lambda r, ids: out.append((r, ids)))


def test_a_backfilled_call_names_its_recording_in_the_dated_folder(tmp_path: Path) -> None:
    out: list[tuple[list[CallRecord], list[str]]] = []
    c = catchup(tmp_path, out)
    (call,) = group(CsvCdr(DIR / "inbound_answered.cdr.csv").read(0))
    day = tmp_path / datetime.fromtimestamp(call.start, ZoneInfo("Europe/Moscow")).strftime("%Y/%m/%d")
    day.mkdir(parents=True)
    (day / f"in-74950000101-89581114585-{call.root.uniqueid}.wav").write_bytes(b"x")
    assert c.run([call], 0.0, set()) == 1
    ((records, _),) = out
    (rec,) = [r for r in records if r.event is Event.RECORD]
    assert rec.meta["recording_file"] == str(day / f"in-74950000101-89581114585-{call.root.uniqueid}.wav")
    assert rec.fields["call_id_with_rec"] == call.root.uniqueid  # the stable id, as live


def test_a_backfill_without_a_file_reports_no_recording(tmp_path: Path) -> None:
    out: list[tuple[list[CallRecord], list[str]]] = []
    c = catchup(tmp_path, out)
    (call,) = group(CsvCdr(DIR / "inbound_answered.cdr.csv").read(0))
    assert c.run([call], 0.0, set()) == 1
    ((records, _),) = out
    assert Event.RECORD not in {r.event for r in records}


def test_freepbx_cdr_recordingfile_is_read() -> None:
    row = mysql_row(
        {
            "calldate": "2026-11-29 19:01:06",
            "uniqueid": "1.1",
            "disposition": "ANSWERED",
            "recordingfile": "in-7495-7900-20261129-190106-1.1.wav",
        },
        ZoneInfo("UTC"),
    )
    assert row is not None and row.recordingfile == "in-7495-7900-20261129-190106-1.1.wav"


def test_a_vanished_recorded_call_ends_when_its_named_file_was_last_written(tmp_path: Path) -> None:
    c = catchup(tmp_path, [])
    (tmp_path / "2026" / "11" / "29").mkdir(parents=True)
    file = tmp_path / DATED
    file.write_bytes(b"RIFF")
    os.utime(file, (1000.0, 1000.0))
    snap = CallSnapshot("x.1", 900.0, 950.0, "", "in", recorded=(UID,), files=((UID, f"{MONITOR}/{DATED}"),))
    c.source = None
    (facts,) = c.facts([snap], []).values()
    assert (facts.ended_at, facts.source) == (1000.0, "recording")


def test_a_cloud_record_never_searches_the_folder(tmp_path: Path) -> None:
    """Records from Novofon's cloud (HTTP) keep the plain name; the folder is not scanned for them."""
    folder = tmp_path / "monitor"
    day = datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y/%m/%d")
    (folder / day).mkdir(parents=True)
    (folder / day / "in-x-77.1.wav").write_bytes(b"x")  # holds the id, but is no file of this call
    p = pipeline(tmp_path / "outbox.sqlite3", config(folder))
    values = {"call_start": "2026-11-29 10:00:00", "pbx_call_id": "in_77.1", "call_id_with_rec": "77.1"}
    cloud = CallRecord({"event": "NOTIFY_RECORD", **values}, {"source": "novofon-cloud"})
    assert p.commit_inbound("k1", [cloud])
    assert committed(p, "NOTIFY_RECORD")["recording_file"] == str(folder / "77.1.wav")
