"""Issue 8's field scenarios through the real daemon and the real lab: forwarding to a mobile, a voice
menu, voicemail, numbers dialled as 8…/+7…, and the caller ID outbound records carry.

Profile-neutral: only the lab's shared constants (SCENARIOS.md), never a context name, so the same
tests run on every lab dialplan profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app import App
from bridge.calls.records import CallRecord
from bridge.pbx.ami import AmiConnection
from tests.helpers import MemorySink
from tests.integration.test_calls import CALLER_NORM, end_fields, shape
from tests.integration.test_cli import cli
from tests.lab import lab as L
from tests.lab.calls import call_in, call_out

pytestmark = [pytest.mark.lab, pytest.mark.profiles(*L.PROFILES)]  # every scenario on both PBXes

IVR_TALK = 2  # the caller hangs up 2 s into the voice menu
VOICEMAIL_TALK = 10  # ... 10 s after voicemail answered: past the greeting, while recording


async def test_forwarded_to_a_mobile_is_one_inbound_call_answered_by_that_number(
    daemon: tuple[App, MemorySink], provider: AmiConnection
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_FORWARD, talk=2)
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD")
    rec = records[-1].fields["call_id_with_rec"]
    assert rec
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_FORWARD},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": L.NUM_MOBILE, "internal": ""},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_FORWARD,
            "internal": "",
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


async def test_caller_hangs_up_in_the_voice_menu_one_end_cancel(
    daemon: tuple[App, MemorySink], provider: AmiConnection
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_IVR, talk=IVR_TALK)
    records = await sink.wait_events("NOTIFY_END")
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_IVR},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_IVR,
            "internal": "",
            **end_fields(duration="0", disposition="cancel", status_code="16"),
        },
    ]


async def test_voicemail_after_nobody_answered_is_a_missed_no_answer(
    daemon: tuple[App, MemorySink], provider: AmiConnection
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_VOICEMAIL, talk=VOICEMAIL_TALK)
    records = await sink.wait_events("NOTIFY_END", timeout=L.RING_TIMEOUT + VOICEMAIL_TALK + 20)
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", "caller_id": CALLER_NORM, "called_did": L.DID_VOICEMAIL},
        {
            "event": "NOTIFY_INTERNAL",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_VOICEMAIL,
            "internal": "103",
        },
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER_NORM,
            "called_did": L.DID_VOICEMAIL,
            "internal": "103",
            **end_fields(duration="0", disposition="no answer", status_code="16"),
        },
    ]


def outbound_answered(records: list[CallRecord], ext: str, number: str) -> list[dict[str, str]]:
    rec = records[-1].fields["call_id_with_rec"]
    assert rec
    return [
        {"event": "NOTIFY_OUT_START", "internal": ext, "destination": number},
        {"event": "NOTIFY_ANSWER", "caller_id": L.LAB_OUTBOUND_CID, "destination": number, "internal": ext},
        {
            "event": "NOTIFY_OUT_END",
            "caller_id": L.LAB_OUTBOUND_CID,
            "destination": number,
            "internal": ext,
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


@pytest.mark.parametrize(
    "dialled", ["8" + L.NUM_ANSWER[1:], "+" + L.NUM_ANSWER, L.NUM_ANSWER], ids=["8", "plus7", "7"]
)
async def test_outbound_number_as_dialled_on_the_handset(
    daemon: tuple[App, MemorySink], phones: AmiConnection, dialled: str
) -> None:
    """Whatever form the employee dials, the records say 7XXXXXXXXXX, the caller ID the client saw
    and the employee's extension apart."""
    _, sink = daemon
    await call_out(phones, "101", dialled, talk=2)
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    assert shape(records, "out_") == outbound_answered(records, "101", L.NUM_ANSWER)


async def test_outbound_unanswered_carries_the_outbound_caller_id(
    daemon: tuple[App, MemorySink], phones: AmiConnection
) -> None:
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


async def test_cli_call_takes_the_number_as_people_write_it(
    daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path
) -> None:
    """``novofon-bridge call "+7 (999) 123-45-67"``: a test call placed by the PBX itself."""
    _, sink = daemon
    n = L.NUM_TEST
    typed = f"+7 ({n[1:4]}) {n[4:7]}-{n[7:9]}-{n[9:]}"
    code, out, err = await cli(lab, tmp_path, "call", typed)
    assert code == 0, out + err
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    expected = outbound_answered(records, "", n)
    duration = records[2].fields["duration"]  # as long as the test recording plays
    assert int(duration) >= 1
    expected[2]["duration"] = duration
    assert shape(records, "out_") == expected


async def test_callback_takes_the_number_as_people_write_it(
    daemon: tuple[App, MemorySink], lab: L.Lab, tmp_path: Path
) -> None:
    """``callback --client "+7 (XXX) XXX-XX-XX"``: the employee's phone first, then the client."""
    _, sink = daemon
    n = L.NUM_ANSWER
    typed = f"+7 ({n[1:4]}) {n[4:7]}-{n[7:9]}-{n[9:]}"
    code, out, err = await cli(lab, tmp_path, "callback", "--employee", "102", "--client", typed)
    assert code == 0, out + err
    records = await sink.wait_events("NOTIFY_OUT_END", "NOTIFY_RECORD")
    got = shape(records, "out_")
    assert [(r["event"], r.get("destination"), r.get("internal")) for r in got] == [
        ("NOTIFY_OUT_START", n, "102"),
        ("NOTIFY_ANSWER", n, "102"),
        ("NOTIFY_OUT_END", n, "102"),
        ("NOTIFY_RECORD", None, None),
    ]
    assert [r.get("caller_id") for r in got[1:3]] == [L.LAB_OUTBOUND_CID] * 2
    assert got[2]["disposition"] == "answered"
