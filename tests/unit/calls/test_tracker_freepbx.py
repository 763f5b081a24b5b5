"""The tracker on AMI transcripts recorded from the lab's FreePBX-style profile (tests/lab/freepbx.py:
ext-did, ring groups and queues through Local channels, Gosub dial-one, FreePBX's Busy()/Congestion()
after an unanswered dial, dialout-trunk with the trunk's outbound caller ID)."""

from __future__ import annotations

import pytest

from bridge.calls.events import Kind
from bridge.calls.records import FIELDS
from bridge.calls.tracker import Tracker
from tests.transcripts import DIR, events, replay

NAMES = sorted(f"freepbx/{p.stem}" for p in (DIR / "freepbx").glob("*.ami"))

# (event, internal, disposition, status_code, duration, is_recorded) per record, per scenario.
EXPECTED: dict[str, list[tuple[str, ...]]] = {
    "freepbx/inbound_answered": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    # FreePBX ends an unanswered extension with Congestion() (503, cause 34) and a busy one with
    # Busy() (486, cause 17); chan_pjsip then requests the hangup of the caller's channel itself:
    # that is not the caller giving up.
    "freepbx/inbound_missed": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "34", "0", "0"),
    ],
    "freepbx/inbound_busy": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_END", "104", "busy", "17", "0", "0"),
    ],
    "freepbx/inbound_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "cancel", "16", "0", "0"),
    ],
    # Ring group 600 (Local/10x@from-ring-group/n members: they start ringing in either order).
    "freepbx/inbound_ring_group": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "102"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/inbound_queue_timeout": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "16", "0", "0"),
    ],
    "freepbx/inbound_local_group_timeout": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "104", "no answer", "17", "0", "0"),
    ],
    "freepbx/inbound_queue_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "cancel", "16", "0", "0"),
    ],
    "freepbx/inbound_local_group_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "104", "cancel", "16", "0", "0"),
    ],
    # Transfers by the handset's REFER: the caller's channel enters TRANSFER_CONTEXT
    # (from-internal-xfer) → ext-local → macro-exten-vm (sub-record-check: ResetCDR, MixMonitor
    # again) → macro-dial-one; an attended transfer joins the consultation's callee to the caller.
    "freepbx/inbound_blind_transfer": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "6", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/inbound_attended_transfer": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "6", "1"),
        ("NOTIFY_RECORD",),
    ],
    # Ring group 603 rings 103 through Local/103@from-ring-group/n; 101 takes the call with
    # app-pickup's Pickup(103&103@PICKUPMARK) or features.conf's pickupexten *8 (chan_pjsip).
    "freepbx/inbound_pickup_directed": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/inbound_pickup_group": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/outbound_answered": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_OUT_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    # Follow-me (ext-findmefollow): the caller's channel dials Local/<mobile>@from-internal/n, whose
    # other half goes through outbound-allroutes and macro-dialout-trunk to the trunk.
    "freepbx/inbound_forward_mobile": [
        ("NOTIFY_START",),
        ("NOTIFY_ANSWER", ""),
        ("NOTIFY_END", "", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    # ivr-N answers the caller itself; the caller hangs up in the menu.
    "freepbx/inbound_ivr_hangup": [("NOTIFY_START",), ("NOTIFY_END", "", "cancel", "16", "0", "0")],
    # Ring group 602 rings 103, then its failover ext-local,vmu103 → macro-vm → VoiceMail() answers.
    "freepbx/inbound_voicemail": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "16", "0", "0"),
    ],
    # outrt-1's _8XXXXXXXXXX and _+7XXXXXXXXXX routes: the same trunk, the number as dialled.
    "freepbx/outbound_dialled_8": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_OUT_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/outbound_dialled_plus7": [
        ("NOTIFY_OUT_START", "102"),
        ("NOTIFY_ANSWER", "102"),
        ("NOTIFY_OUT_END", "102", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "freepbx/outbound_busy": [("NOTIFY_OUT_START", "102"), ("NOTIFY_OUT_END", "102", "busy", "17", "0", "0")],
    # macro-dialout-trunk's s-NOANSWER: Congestion(20) on the phone's channel.
    "freepbx/outbound_no_answer": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_OUT_END", "101", "no answer", "34", "0", "0"),
    ],
}
KEYS = ("event", "internal", "disposition", "status_code", "duration", "is_recorded")


def summary(name: str) -> list[tuple[str, ...]]:
    return [tuple(r.fields[k] for k in KEYS if k in r.fields) for r in replay(name)]


def test_every_freepbx_scenario_has_expectations() -> None:
    assert set(NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_freepbx_transcript_replay(name: str) -> None:
    assert summary(name) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_freepbx_records_have_exactly_novofon_fields(name: str) -> None:
    records = replay(name)
    assert len({r.pbx_call_id for r in records}) == 1
    prefix = "in_" if name.startswith("freepbx/inbound") else "out_"
    for r in records:
        assert tuple(r.fields) == FIELDS[r.event]
        assert r.pbx_call_id.startswith(prefix)


@pytest.mark.parametrize("name", ["freepbx/inbound_missed", "freepbx/inbound_busy"])
def test_the_pbx_refusing_the_caller_is_not_a_cancel(name: str) -> None:
    """The transcript holds what made these look like a cancel: a HangupRequest on the caller's
    channel, with the PBX's own cause, after the outer Dial said NOANSWER / BUSY."""
    evs = events(name)
    dial_end = next(i for i, e in enumerate(evs) if e.kind is Kind.DIAL_END and e.dial_status != "ANSWER")
    trunk = evs[0].uniqueid
    request = next(i for i, e in enumerate(evs) if e.kind is Kind.HANGUP_REQUEST and e.uniqueid == trunk)
    assert evs[request].cause in (17, 34)
    assert dial_end < request
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert records[-1].fields["disposition"] in ("no answer", "busy")
