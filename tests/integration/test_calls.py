"""Real SIP calls through the real lab: each test asserts the exact records the daemon produced."""

from __future__ import annotations

import asyncio
import re

import pytest

from bridge.app import App
from bridge.calls.records import CallRecord
from bridge.pbx.ami import AmiConnection
from tests.conftest import arx
from tests.helpers import MemorySink
from tests.lab import lab as L
from tests.lab.calls import call_in, call_out

pytestmark = pytest.mark.lab
BOTH = pytest.mark.profiles(*L.PROFILES)  # the scenario runs on the plain and the FreePBX-style PBX
# How each PBX ends a call nobody answered: the plain snippet hangs up with cause 19 (no answer);
# FreePBX plays Congestion() (chan_pjsip answers 503: cause 34), in macro-exten-vm for an extension
# and in macro-dialout-trunk for the trunk.
NO_ANSWER_CAUSE = {"plain": "19", "freepbx": "34"}

CALLER = "89581114585"  # as a Russian caller's number often arrives: 8XXXXXXXXXX
CALLER_NORM = "79581114585"


def shape(records: list[CallRecord], prefix: str) -> list[dict[str, str]]:
    """All records belong to one call; return their fields minus the per-call id and start time."""
    ids = {r.pbx_call_id for r in records}
    assert len(ids) == 1, ids
    assert ids.pop().startswith(prefix)
    starts = {r.fields.get("call_start") for r in records} - {None}
    assert len(starts) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", starts.pop() or "")
    return [{k: v for k, v in r.fields.items() if k not in ("pbx_call_id", "call_start")} for r in records]


def end_fields(**kw: str) -> dict[str, str]:
    base = {"is_recorded": "0", "call_id_with_rec": ""}
    base.update(kw)
    return base


async def test_trunk_registers_with_digest_auth(lab: L.Lab) -> None:
    regs = await arx(lab, L.PBX, "pjsip show registrations")
    pattern = rf"novofon-reg/sip:{re.escape(L.PROVIDER_IP)}:5060\s+novofon-auth\s+Registered"
    assert re.search(pattern, regs), regs
    aor = await arx(lab, L.PROVIDER, f"pjsip show aor {L.TRUNK_LOGIN}")
    assert f"sip:{L.TRUNK_LOGIN}@{L.PBX_IP}:5060" in aor, aor
    # The provider really demands digest auth from the trunk (auth= on its endpoint).
    ep = await arx(lab, L.PROVIDER, f"pjsip show endpoint {L.TRUNK_LOGIN}")
    assert re.search(rf"InAuth:\s+{L.TRUNK_LOGIN}/{L.TRUNK_LOGIN}", ep), ep


@BOTH
async def test_inbound_answered(daemon: tuple[App, MemorySink], provider: AmiConnection, lab: L.Lab) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_101, talk=2)
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
    rec = records[-1].fields["call_id_with_rec"]
    assert rec
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_101},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_101, "internal": "101"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": "101", "internal": "101"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_101,
            "internal": "101",
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


@BOTH
async def test_inbound_not_answered_is_missed(
    daemon: tuple[App, MemorySink], provider: AmiConnection, lab_profile: str
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_103)
    records = await sink.wait_events("NOTIFY_END", timeout=L.RING_TIMEOUT + 20)
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_103},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_103, "internal": "103"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_103,
            "internal": "103",
            **end_fields(duration="0", disposition="no answer", status_code=NO_ANSWER_CAUSE[lab_profile]),
        },
    ]


@BOTH
async def test_inbound_to_busy_extension(daemon: tuple[App, MemorySink], provider: AmiConnection) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_104)
    records = await sink.wait_events("NOTIFY_END")
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_104},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_104, "internal": "104"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_104,
            "internal": "104",
            **end_fields(duration="0", disposition="busy", status_code="17"),
        },
    ]


@BOTH
async def test_ring_group_one_answers_other_not_missed(
    daemon: tuple[App, MemorySink], provider: AmiConnection, lab_profile: str
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_GROUP, talk=2)
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
    rec = records[-1].fields["call_id_with_rec"]
    if lab_profile == "freepbx":  # members ring through Local channels: they start in either order
        records[1:3] = sorted(records[1:3], key=lambda r: r.fields["internal"])
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_GROUP},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_GROUP, "internal": "101"},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_GROUP, "internal": "102"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": "101", "internal": "101"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_GROUP,
            "internal": "101",
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


@BOTH
async def test_caller_hangs_up_while_ringing_is_cancel(
    daemon: tuple[App, MemorySink], provider: AmiConnection
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_103)
    await sink.wait_events("NOTIFY_INTERNAL")
    result = await provider.action("Hangup", {"Channel": f"/^PJSIP\\/{L.TRUNK_LOGIN}-/", "Cause": "16"})
    assert result.ok, result.response
    records = await sink.wait_events("NOTIFY_END")
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_103},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER_NORM, "called_did": L.DID_103, "internal": "103"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_103,
            "internal": "103",
            **end_fields(duration="0", disposition="cancel", status_code="16"),
        },
    ]


async def test_cyrillic_caller_name_survives(daemon: tuple[App, MemorySink], provider: AmiConnection) -> None:
    _, sink = daemon
    name = "Иван Петрович Сидоров-Щукин"
    await call_in(provider, L.DID_101, talk=1, name=name)
    records = await sink.wait_events("NOTIFY_END")
    assert {r.meta.get("caller_name") for r in records} == {name}
    assert records[0].fields["caller_id"] == CALLER_NORM


@BOTH
async def test_outbound_answered(
    daemon: tuple[App, MemorySink], phones: AmiConnection, lab: L.Lab, lab_profile: str
) -> None:
    _, sink = daemon
    await call_out(phones, "101", L.NUM_ANSWER, talk=2)
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    rec = records[-1].fields["call_id_with_rec"]
    assert shape(records, "out_") == [
        {"event": "NOTIFY_OUT_START", "internal": "101", "destination": L.NUM_ANSWER},
        {
            "event": "NOTIFY_ANSWER",
            "caller_id": L.LAB_OUTBOUND_CID,
            "destination": L.NUM_ANSWER,
            "internal": "101",
        },
        {
            "event": "NOTIFY_OUT_END",
            "caller_id": L.LAB_OUTBOUND_CID,
            "destination": L.NUM_ANSWER,
            "internal": "101",
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]
    # The recording named in the record exists where the record says.
    if lab_profile == "plain":
        assert (lab.recordings_dir / f"{rec}.wav").exists()
        assert records[-1].meta["recording_file"] == str(lab.recordings_dir / f"{rec}.wav")
        return
    # FreePBX's sub-record-check: monitor/YYYY/MM/DD/out-<number>-<ext>-<date>-<time>-<uniqueid>.wav
    (found,) = lab.recordings_dir.glob(
        f"[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/out-{L.NUM_ANSWER}-101-*-{rec}.wav"
    )
    assert records[-1].meta["recording_file"] == str(found)  # learned from MIXMONITOR_FILENAME


@BOTH
async def test_outbound_busy(daemon: tuple[App, MemorySink], phones: AmiConnection) -> None:
    _, sink = daemon
    await call_out(phones, "102", L.NUM_BUSY)
    records = await sink.wait_events("NOTIFY_OUT_END")
    assert shape(records, "out_") == [
        {"event": "NOTIFY_OUT_START", "internal": "102", "destination": L.NUM_BUSY},
        {
            "event": "NOTIFY_OUT_END",
            "caller_id": L.LAB_OUTBOUND_CID,
            "destination": L.NUM_BUSY,
            "internal": "102",
            **end_fields(duration="0", disposition="busy", status_code="17"),
        },
    ]


@BOTH
async def test_outbound_no_answer(
    daemon: tuple[App, MemorySink], phones: AmiConnection, lab_profile: str
) -> None:
    _, sink = daemon
    await call_out(phones, "101", L.NUM_NOANSWER)
    records = await sink.wait_events("NOTIFY_OUT_END", timeout=L.DIAL_TIMEOUT + 20)
    assert shape(records, "out_") == [
        {"event": "NOTIFY_OUT_START", "internal": "101", "destination": L.NUM_NOANSWER},
        {
            "event": "NOTIFY_OUT_END",
            "caller_id": L.LAB_OUTBOUND_CID,
            "destination": L.NUM_NOANSWER,
            "internal": "101",
            **end_fields(duration="0", disposition="no answer", status_code=NO_ANSWER_CAUSE[lab_profile]),
        },
    ]


async def test_burst_of_simultaneous_calls_is_tracked_without_losing_ami(
    daemon: tuple[App, MemorySink], provider: AmiConnection, phones: AmiConnection
) -> None:
    """20 inbound calls to the ring group and 10 outbound calls, all at once: every call gets its
    full record sequence and the AMI connection is never dropped for reading too slowly."""
    app, sink = daemon
    inbound, outbound = 20, 10
    await asyncio.gather(
        *(call_in(provider, L.DID_GROUP, talk=2, caller=f"8958000{i:04d}") for i in range(inbound)),
        *(call_out(phones, "102", L.NUM_ANSWER) for _ in range(outbound)),
    )

    def finished(records: list[CallRecord]) -> int:  # every call here is answered and recorded
        return sum(r.fields["event"] == "NOTIFY_RECORD" for r in records)

    records = await sink.wait_for(lambda rs: finished(rs) == inbound + outbound, timeout=90)
    by_call: dict[str, list[str]] = {}
    for r in records:
        by_call.setdefault(r.pbx_call_id, []).append(r.fields["event"])
    assert len(by_call) == inbound + outbound
    for events in by_call.values():
        assert events[0] in ("NOTIFY_START", "NOTIFY_OUT_START")
        assert events[-2] in ("NOTIFY_END", "NOTIFY_OUT_END") and events[-1] == "NOTIFY_RECORD"
    callers = {r.fields["caller_id"] for r in records if r.fields["event"] == "NOTIFY_START"}
    assert callers == {f"7958000{i:04d}" for i in range(inbound)}
    assert app.ami.connects == 1
    assert app.tracker.active_calls == 0
