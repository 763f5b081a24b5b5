"""Issue 8's field scenarios on transcripts recorded from the real lab: the exact records the tracker
makes for forwarding to a mobile, a voice menu, voicemail, numbers dialled as 8…/+7… and the caller
ID of outbound calls (tests/integration/test_field_scenarios.py runs the same calls live).

Every scenario was recorded on both lab profiles (tests/transcripts/ = plain, tests/transcripts/freepbx/
= the FreePBX-style dialplan: follow-me through Local/…@from-internal and the outbound route,
voicemail as a ring group's failover, the IVR of ivr-N, macro-dialout-trunk's OUTCID): the records
are the same."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.calls.events import ChannelEvent, Kind
from bridge.calls.records import CallRecord, Event
from bridge.calls.snapshot import CallSnapshot
from bridge.calls.tracker import Tracker, TrackerSettings
from tests.lab import lab as L
from tests.transcripts import events, replay

CALLER = "79581114585"  # the lab's caller, sent by the provider as 89581114585
# Where each lab profile's transcripts are (tests/lab/record_transcripts.py --profile NAME).
PROFILES = pytest.mark.parametrize("profile", ["", "freepbx/"], ids=["plain", "freepbx"])


def fields(records: list[CallRecord]) -> list[dict[str, str]]:
    """Every record's fields but the per-call id and start time (one call, checked)."""
    assert len({r.pbx_call_id for r in records}) == 1
    assert len({r.fields.get("call_start") for r in records} - {None}) == 1
    return [{k: v for k, v in r.fields.items() if k not in ("pbx_call_id", "call_start")} for r in records]


def rec_id(records: list[CallRecord]) -> str:
    return records[-1].fields["call_id_with_rec"]


@PROFILES
def test_forwarded_to_a_mobile_is_one_inbound_call_answered_by_that_number(profile: str) -> None:
    records = replay(profile + "inbound_forward_mobile")
    assert records[0].pbx_call_id.startswith("in_")
    rec = rec_id(records)
    assert fields(records) == [
        {"event": "NOTIFY_START", "caller_id": CALLER, "called_did": L.DID_FORWARD},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER, "destination": L.NUM_MOBILE, "internal": ""},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER,
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


@PROFILES
def test_forwarded_call_rung_out_unanswered_is_missed(profile: str) -> None:
    """The mobile's leg ends NOANSWER: no ANSWER, the call is not answered."""
    evs = [
        dataclasses.replace(e, dial_status="NOANSWER")
        if e.kind is Kind.DIAL_END and e.channel.startswith("Local/")
        else e
        for e in events(profile + "inbound_forward_mobile")
        if not (e.kind is Kind.DIAL_END and e.channel.startswith("PJSIP/novofon"))
    ]
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert [r.fields["event"] for r in records] == ["NOTIFY_START", "NOTIFY_END"]
    assert records[-1].fields["disposition"] != "answered"


def _is_callers_dial_end(e: ChannelEvent, caller: str) -> bool:
    """The DialEnd of the caller's own Dial (of the Local channel that reaches the mobile)."""
    return e.kind is Kind.DIAL_END and e.uniqueid == caller


@PROFILES
def test_forwarded_call_is_answered_when_the_caller_is_connected(profile: str) -> None:
    """The mobile's leg is dialled through a Local channel: ANSWER comes with the caller's own Dial
    answering (after FreePBX's "Confirm Calls" the mobile pressed 1), not when the mobile picks up."""
    evs = events(profile + "inbound_forward_mobile")
    tracker = Tracker()
    answered_on = [e for e in evs if any(r.event is Event.ANSWER for r in tracker.feed(e))]
    assert len(answered_on) == 1 and _is_callers_dial_end(answered_on[0], evs[0].uniqueid)
    mobile_picked_up = next(e for e in evs if e.kind is Kind.DIAL_END and "novofon" in e.dest_channel)
    assert mobile_picked_up.dial_status == "ANSWER" and mobile_picked_up.uniqueid != evs[0].uniqueid


@PROFILES
def test_forwarded_call_the_mobile_picked_up_but_never_confirmed_is_no_answer(profile: str) -> None:
    """FreePBX's "Confirm Calls": the mobile's own voicemail picks up, nobody presses 1, the ring
    group / follow-me times out (the caller's Dial: NOANSWER). Not answered, no ANSWER."""
    evs = events(profile + "inbound_forward_mobile")
    caller = evs[0].uniqueid
    evs = [
        dataclasses.replace(e, dial_status="NOANSWER") if _is_callers_dial_end(e, caller) else e for e in evs
    ]
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert [r.fields["event"] for r in records] == ["NOTIFY_START", "NOTIFY_END"]
    assert records[1].fields["disposition"] == "no answer"


@PROFILES
def test_forwarded_call_restarted_between_pick_up_and_connect(profile: str) -> None:
    """A restart after the mobile picked up, before the caller was connected: the snapshot keeps
    which leg picked up, and ANSWER names the mobile."""
    name = profile + "inbound_forward_mobile"
    evs = events(name)
    cut = 1 + next(i for i, e in enumerate(evs) if e.kind is Kind.DIAL_END and "novofon" in e.dest_channel)
    assert not _is_callers_dial_end(evs[cut - 1], evs[0].uniqueid)
    snap = CallSnapshot.from_json(_snapshot_json(name, cut))
    assert [c.answered for c in snap.channels if c.name == evs[cut - 1].dest_channel] == [True]
    assert fields(_restarted(name, cut)) == fields(replay(name))


@PROFILES
def test_ivr_hangup_is_exactly_one_end_and_a_cancel(profile: str) -> None:
    assert fields(replay(profile + "inbound_ivr_hangup")) == [
        {"event": "NOTIFY_START", "caller_id": CALLER, "called_did": L.DID_IVR},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER,
            "called_did": L.DID_IVR,
            "internal": "",
            "duration": "0",
            "disposition": "cancel",
            "status_code": "16",
            "is_recorded": "0",
            "call_id_with_rec": "",
        },
    ]


@PROFILES
def test_voicemail_after_nobody_answered_is_no_answer(profile: str) -> None:
    """The PBX answered into VoiceMail and the caller hung up while leaving a message: still missed,
    and "no answer" (the ringing ended by the PBX), not "cancel"."""
    assert fields(replay(profile + "inbound_voicemail")) == [
        {"event": "NOTIFY_START", "caller_id": CALLER, "called_did": L.DID_VOICEMAIL},
        {"event": "NOTIFY_INTERNAL", "caller_id": CALLER, "called_did": L.DID_VOICEMAIL, "internal": "103"},
        {
            "event": "NOTIFY_END",
            "caller_id": CALLER,
            "called_did": L.DID_VOICEMAIL,
            "internal": "103",
            "duration": "0",
            "disposition": "no answer",
            "status_code": "16",
            "is_recorded": "0",
            "call_id_with_rec": "",
        },
    ]


def outbound(ext: str, records: list[CallRecord], cid: str = L.LAB_OUTBOUND_CID) -> list[dict[str, str]]:
    rec = rec_id(records)
    return [
        {"event": "NOTIFY_OUT_START", "internal": ext, "destination": L.NUM_ANSWER},
        {"event": "NOTIFY_ANSWER", "caller_id": cid, "destination": L.NUM_ANSWER, "internal": ext},
        {
            "event": "NOTIFY_OUT_END",
            "caller_id": cid,
            "destination": L.NUM_ANSWER,
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
    ("name", "ext", "dialled"),
    [
        ("outbound_answered", "101", L.NUM_ANSWER),
        ("outbound_dialled_8", "101", "8" + L.NUM_ANSWER[1:]),
        ("outbound_dialled_plus7", "102", "+" + L.NUM_ANSWER),
    ],
)
@PROFILES
def test_outbound_number_as_dialled_is_normalised(profile: str, name: str, ext: str, dialled: str) -> None:
    name = profile + name
    first = events(name)[0]
    assert (first.channel.startswith(f"PJSIP/{ext}-"), first.exten) == (True, dialled)
    records = replay(name)
    assert fields(records) == outbound(ext, records)


@PROFILES
@pytest.mark.parametrize(
    "dial_string",
    ["novofon/sip:89001110001@sip.novofon.ru", "novofon/sip:+79001110001@10.0.0.1:5060;transport=udp"],
)
def test_outbound_dialled_as_a_sip_uri_is_normalised(profile: str, dial_string: str) -> None:
    """``Dial(PJSIP/novofon/sip:${EXTEN}@sip.novofon.ru)`` (endpoint/URI, common in hand-written
    dialplans): the destination is the URI's number, normalised."""
    evs = [
        dataclasses.replace(e, dial_string=dial_string) if e.kind is Kind.DIAL_BEGIN else e
        for e in events(profile + "outbound_answered")
    ]
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert fields(records) == outbound("101", records)


@PROFILES
def test_forwarded_through_a_sip_uri_is_answered_by_that_number(profile: str) -> None:
    """The mobile's leg dialled as endpoint/URI; its channel's caller number says nothing (a
    FreePBX follow-me leg carries the caller's or the trunk's number there)."""
    evs = [
        dataclasses.replace(e, dial_string="novofon/sip:+79004440004@sip.novofon.ru")
        if e.kind is Kind.DIAL_BEGIN and "novofon" in e.dest_channel
        else e
        for e in events(profile + "inbound_forward_mobile")
    ]
    evs = [
        dataclasses.replace(e, caller_num="s")
        if "novofon" in e.channel and e.uniqueid != evs[0].uniqueid
        else e
        for e in evs
    ]
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert [r.fields.get("destination") for r in records if r.event is Event.ANSWER] == [L.NUM_MOBILE]


def test_outbound_caller_id_follows_the_trunk_legs_connected_line() -> None:
    """The caller ID comes from the trunk leg (what its INVITE presents), not from the employee's
    channel: a different number there changes the records."""
    evs = [
        dataclasses.replace(e, connected_num="+7 (495) 000-00-99")
        if e.kind is Kind.CALLERID and e.channel.startswith("PJSIP/novofon")
        else e
        for e in events("outbound_answered")
    ]
    tracker = Tracker()
    records = [r for e in evs for r in tracker.feed(e)]
    assert fields(records) == outbound("101", records, cid="74950000099")


@pytest.mark.parametrize(("default_did", "expected"), [("", ""), ("84950000001", "74950000001")])
def test_outbound_caller_id_never_falls_back_to_the_extension(default_did: str, expected: str) -> None:
    """NOVOFON_CALLERID left empty: the trunk leg presents the extension (101); Novofon puts the
    account's number on the call, which the bridge takes to be pbx.default_did."""
    evs = [
        dataclasses.replace(e, connected_num="101")
        if e.kind is Kind.CALLERID and e.channel.startswith("PJSIP/novofon")
        else e
        for e in events("outbound_answered")
    ]
    tracker = Tracker(TrackerSettings(default_did=default_did))
    records = [r for e in evs for r in tracker.feed(e)]
    assert {r.fields["caller_id"] for r in records if "caller_id" in r.fields} == {expected}
    assert {r.fields["internal"] for r in records if "internal" in r.fields} == {"101"}


def _restarted(name: str, cut: int) -> list[CallRecord]:
    """Feed ``name`` up to event ``cut``, snapshot through JSON into a new tracker, feed the rest."""
    evs = events(name)
    first = Tracker(persist=True)
    before = [r for e in evs[:cut] for r in first.feed(e)]
    snaps = [CallSnapshot.from_json(s.to_json()) for s in first.take_changes().saved]
    second = Tracker(persist=True)
    assert second.restore(snaps) == 1
    return before + [r for e in evs[cut:] for r in second.feed(e)]


@pytest.mark.parametrize("name", ["inbound_forward_mobile", "outbound_dialled_8", "inbound_voicemail"])
@PROFILES
def test_snapshots_keep_what_these_scenarios_need(profile: str, name: str) -> None:
    """A restart after the trunk leg's caller ID / the forwarded leg's dial: same records."""
    name = profile + name
    evs = events(name)
    cut = 1 + next(
        i
        for i, e in enumerate(evs)
        if (e.kind is Kind.DIAL_BEGIN and "novofon" in e.dest_channel) or e.dial_status == "NOANSWER"
    )
    assert fields(_restarted(name, cut)) == fields(replay(name))
    snap = CallSnapshot.from_json(_snapshot_json(name, cut))
    assert snap.channels and CallSnapshot.from_json(snap.to_json()) == snap


def _snapshot_json(name: str, cut: int) -> str:
    tracker = Tracker(persist=True)
    for e in events(name)[:cut]:
        tracker.feed(e)
    (snap,) = tracker.take_changes().saved
    return snap.to_json()


def test_snapshot_keeps_the_trunk_legs_connected_line() -> None:
    evs = events("outbound_dialled_8")
    cut = next(i for i, e in enumerate(evs) if e.kind is Kind.DIAL_BEGIN) + 1
    snap = CallSnapshot.from_json(_snapshot_json("outbound_dialled_8", cut))
    trunk = [c for c in snap.channels if c.name.startswith("PJSIP/novofon")]
    assert [c.connected_num for c in trunk] == [L.LAB_OUTBOUND_CID]


def test_a_forwarded_call_that_ended_unseen_is_answered_by_the_mobile_per_the_cdr() -> None:
    """The link was down from the forwarded leg's dial to the end: the CDR says who answered."""
    from bridge.calls.backfill import Backfill, group
    from bridge.pbx.cdr import CsvCdr
    from tests.transcripts import DIR

    (cdr_call,) = group(CsvCdr(DIR / "inbound_forward_mobile.cdr.csv").read(0.0))
    facts = Backfill(TrackerSettings()).facts(cdr_call)
    assert facts.forwarded_to == L.NUM_MOBILE and facts.answered_by == ""
    evs = events("inbound_forward_mobile")
    cut = next(i for i, e in enumerate(evs) if e.kind is Kind.DIAL_BEGIN and "novofon" in e.dest_channel) + 1
    tracker = Tracker()
    before = [r for e in evs[:cut] for r in tracker.feed(e)]
    linkedid = evs[0].linkedid
    after = tracker.resync([], now=evs[-1].ts + 60, lost_at=evs[cut].ts, facts={linkedid: facts})
    got = fields(before + after)
    assert [r["event"] for r in got] == ["NOTIFY_START", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_RECORD"]
    assert got[1]["destination"] == L.NUM_MOBILE
    assert (got[2]["disposition"], got[2]["duration"]) == ("answered", "2")
