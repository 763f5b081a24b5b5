"""Transfers (SIP REFER from the handset) and call pickups, on transcripts recorded from the lab:
the exact records, and the paths a live lab rarely takes."""

from __future__ import annotations

import re

import pytest

from bridge.calls.events import ChannelEvent, Kind, LiveChannel
from bridge.calls.model import local_member
from bridge.calls.records import CallRecord
from bridge.calls.snapshot import CallSnapshot
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.pbx import manager_conf
from bridge.pbx.ami_events import WANTED, to_channel_event
from tests.transcripts import events, messages, raw, replay
from tests.unit.calls.test_restart import live_after

CALLER = "79581114585"
DID_TRANSFER = "74950000112"
DID_LONG = "74950000107"


def fields(records: list[CallRecord]) -> list[dict[str, str]]:
    """Every field but the call's id and start time (checked once: the same on every record)."""
    assert len({r.pbx_call_id for r in records}) == 1
    assert len({r.fields.get("call_start") for r in records} - {None}) == 1
    return [{k: v for k, v in r.fields.items() if k not in ("pbx_call_id", "call_start")} for r in records]


def transferred(rec: str) -> list[dict[str, str]]:
    """105 answered on DID_TRANSFER, then 101 took the call over; the caller hung up 6 s after
    105's answer."""
    call = {"caller_id": CALLER, "called_did": DID_TRANSFER}
    return [
        {"event": "NOTIFY_START", **call},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "105"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER, "destination": "105", "internal": "105"},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "101"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER, "destination": "101", "internal": "101"},
        {
            "event": "NOTIFY_END",
            **call,
            "internal": "101",
            "duration": "6",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


def picked_up(rec: str) -> list[dict[str, str]]:
    """103 rang on DID_LONG; 101 picked the call up and hung up 2 s later."""
    call = {"caller_id": CALLER, "called_did": DID_LONG}
    return [
        {"event": "NOTIFY_START", **call},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "103"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER, "destination": "101", "internal": "101"},
        {
            "event": "NOTIFY_END",
            **call,
            "internal": "101",
            "duration": "2",
            "disposition": "answered",
            "status_code": "16",
            "is_recorded": "1",
            "call_id_with_rec": rec,
        },
        {"event": "NOTIFY_RECORD", "call_id_with_rec": rec},
    ]


# The same scenarios recorded on both lab profiles: "" (plain) and "freepbx/" (FreePBX 17 style:
# from-internal-xfer / ext-local / macro-dial-one for the REFER's target, app-pickup and
# pickupexten for the pickups, ring group 603 ringing 103 through a Local channel).
PROFILES = pytest.mark.parametrize("profile", ["", "freepbx/"], ids=["plain", "freepbx"])


@PROFILES
def test_blind_transfer(profile: str) -> None:
    tracker = Tracker()
    records = replay(f"{profile}inbound_blind_transfer", tracker)
    assert fields(records) == transferred(records[-1].fields["call_id_with_rec"])
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


@PROFILES
def test_attended_transfer_and_its_consultation_reports_nothing_of_its_own(profile: str) -> None:
    tracker = Tracker()
    records = replay(f"{profile}inbound_attended_transfer", tracker)
    assert fields(records) == transferred(records[-1].fields["call_id_with_rec"])
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


@PROFILES
def test_directed_pickup(profile: str) -> None:
    tracker = Tracker()
    records = replay(f"{profile}inbound_pickup_directed", tracker)
    assert fields(records) == picked_up(records[-1].fields["call_id_with_rec"])
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


@PROFILES
def test_group_pickup(profile: str) -> None:
    tracker = Tracker()
    records = replay(f"{profile}inbound_pickup_group", tracker)
    assert fields(records) == picked_up(records[-1].fields["call_id_with_rec"])
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


def test_attended_transfer_event_names_the_target_and_the_transferee() -> None:
    (msg,) = [m for m in messages(raw("inbound_attended_transfer")) if m.get("Event") == "AttendedTransfer"]
    ev = to_channel_event(msg, 0.0)
    assert ev is not None and ev.kind is Kind.TRANSFER
    assert (ev.uniqueid, ev.dest_uniqueid) == (msg["TransferTargetUniqueid"], msg["TransfereeUniqueid"])
    assert ev.channel.startswith("PJSIP/101-") and ev.dest_channel.startswith("PJSIP/novofon-")
    assert to_channel_event({**msg, "Result": "Fail"}, 0.0) is None
    assert to_channel_event({**msg, "DestType": "App", "TransferTargetUniqueid": ""}, 0.0) is None


def test_the_shipped_event_filter_lets_through_every_event_the_daemon_uses() -> None:
    shipped = manager_conf.shipped_filters()
    assert shipped is not None
    passed = {(manager_conf.included_event(line) or "").partition("(")[0] for line in shipped}
    assert passed >= WANTED, WANTED - passed


def test_without_the_attended_transfer_event_the_first_employee_keeps_the_call() -> None:
    """An older manager.conf filters AttendedTransfer out: nothing is lost or doubled, but the
    call stays with 105 (what `novofon-bridge check` reports as a filter to update)."""
    tracker = Tracker()
    records = [
        r for e in events("inbound_attended_transfer") if e.kind is not Kind.TRANSFER for r in tracker.feed(e)
    ]
    assert [(r.fields["event"], r.fields.get("internal")) for r in records] == [
        ("NOTIFY_START", None),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_END", "105"),
        ("NOTIFY_RECORD", None),
    ]
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


def test_a_transfer_mid_call_survives_a_restart() -> None:
    """Restarted during the consultation, or just after the transfer: the snapshots of the call
    and the channels Asterisk lists (the consultation is internal-only, never persisted, so it is
    adopted again) let the new tracker finish the call exactly as one that never stopped."""
    evs = events("inbound_attended_transfer")
    baseline = [r.fields for r in replay("inbound_attended_transfer")]
    transfer = next(i for i, e in enumerate(evs) if e.kind is Kind.TRANSFER)
    for cut in range(transfer - 6, transfer + 4):
        first = Tracker(persist=True)
        before = [r for e in evs[:cut] for r in first.feed(e)]
        saved = [CallSnapshot.from_json(s.to_json()) for s in first.take_changes().saved]
        second = Tracker(persist=True)
        assert second.restore(saved) == 1, cut
        now = evs[cut - 1].ts
        after = second.resync(live_after(evs[:cut], now), now, lost_at=None)
        after += [r for e in evs[cut:] for r in second.feed(e)]
        assert [r.fields for r in before + after] == baseline, cut
        assert (second.active_calls, second.active_channels) == (0, 0)


def _ev(kind: Kind, uid: str, linkedid: str, channel: str = "", **kw: object) -> ChannelEvent:
    return ChannelEvent(kind, float(kw.pop("ts", 1_700_000_000)), uid, linkedid, channel, **kw)  # type: ignore[arg-type]


def _answered_call(t: Tracker) -> list[CallRecord]:
    out = t.feed(_ev(Kind.NEW, "in", "in", "PJSIP/novofon-01", caller_num="79000000001", exten="74950000000"))
    out += t.feed(_ev(Kind.NEW, "a", "in", "PJSIP/105-02"))
    out += t.feed(_ev(Kind.DIAL_BEGIN, "in", "in", dest_uniqueid="a"))
    out += t.feed(_ev(Kind.DIAL_END, "in", "in", dest_uniqueid="a", dial_status="ANSWER", ts=1_700_000_001))
    return out


def test_refer_on_the_consultation_line_joins_the_same_way() -> None:
    """Some phones send the REFER on the second call: Asterisk then names the caller the transfer
    target. The employee's channel still joins the reported call, never the other way round."""
    t = Tracker()
    out = _answered_call(t)
    out += t.feed(_ev(Kind.NEW, "b", "b", "PJSIP/105-03", caller_num="105", exten="101"))
    out += t.feed(_ev(Kind.NEW, "c", "b", "PJSIP/101-04"))
    out += t.feed(_ev(Kind.DIAL_BEGIN, "b", "b", dest_uniqueid="c"))
    out += t.feed(_ev(Kind.DIAL_END, "b", "b", dest_uniqueid="c", dial_status="ANSWER"))
    out += t.feed(_ev(Kind.TRANSFER, "in", "in", dest_uniqueid="c", dial_status="Success"))
    for uid, ts in (("a", 2), ("b", 2), ("in", 11), ("c", 11)):
        out += t.feed(_ev(Kind.HANGUP, uid, "in", cause=16, ts=1_700_000_000 + ts))
    assert [(r.fields["event"], r.fields.get("internal")) for r in out] == [
        ("NOTIFY_START", None),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101"),
    ]
    assert out[-1].fields["duration"] == "10"
    assert (t.active_calls, t.active_channels) == (0, 0)


def test_a_transfer_back_to_the_same_employee_reports_nothing_new() -> None:
    t = Tracker()
    _answered_call(t)
    t.feed(_ev(Kind.NEW, "b", "in", "PJSIP/105-05"))
    t.feed(_ev(Kind.DIAL_BEGIN, "in", "in", dest_uniqueid="b"))
    assert t.feed(_ev(Kind.DIAL_END, "in", "in", dest_uniqueid="b", dial_status="ANSWER")) == []


def test_an_unanswered_blind_transfer_leaves_the_call_with_who_answered() -> None:
    """105 transfers blind to 103, who never answers: 103 rang, the END still names 105."""
    t = Tracker()
    out = _answered_call(t)
    out += t.feed(_ev(Kind.HANGUP, "a", "in", cause=16))
    out += t.feed(_ev(Kind.NEW, "b", "in", "PJSIP/103-06"))
    out += t.feed(_ev(Kind.DIAL_BEGIN, "in", "in", dest_uniqueid="b"))
    out += t.feed(_ev(Kind.DIAL_END, "in", "in", dest_uniqueid="b", dial_status="NOANSWER"))
    out += t.feed(_ev(Kind.HANGUP, "b", "in", cause=16))
    out += t.feed(_ev(Kind.HANGUP, "in", "in", cause=19, ts=1_700_000_009))
    assert [(r.fields["event"], r.fields.get("internal"), r.fields.get("disposition")) for r in out] == [
        ("NOTIFY_START", None, None),
        ("NOTIFY_INTERNAL", "105", None),
        ("NOTIFY_ANSWER", "105", None),
        ("NOTIFY_INTERNAL", "103", None),
        ("NOTIFY_END", "105", "answered"),
    ]


def test_a_transfer_during_an_outage_is_found_by_the_resync() -> None:
    """The link came back after 105 transferred the call to 101: 105's channel is gone, 101's
    talks in the call. INTERNAL and ANSWER for 101, and the snapshot committed with them names 101."""
    t = Tracker(persist=True)
    _answered_call(t)
    t.take_changes()
    live = [
        LiveChannel("in", "in", "PJSIP/novofon-01", 6, "79000000001", "", "from-novofon", "101", 9.0, True),
        LiveChannel("x", "in", "PJSIP/101-07", 6, "101", "", "from-internal", "", 3.0, True),
    ]
    out = t.resync(live, 1_700_000_010, lost_at=1_700_000_005)
    assert [(r.fields["event"], r.fields["internal"]) for r in out] == [
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
    ]
    (snap,) = t.take_changes().saved
    assert (snap.internal, snap.rung) == ("101", ("105", "101"))
    end = t.feed(_ev(Kind.HANGUP, "in", "in", cause=16, ts=1_700_000_011))
    assert (
        end == []
        and t.feed(_ev(Kind.HANGUP, "x", "in", cause=16, ts=1_700_000_011))[0].fields["internal"] == "101"
    )


def test_a_pickup_during_an_outage_leaves_the_ring_group_member_that_rang() -> None:
    """FreePBX rings 103 through Local/103@from-ring-group; 101 picked the call up and hung up
    while nobody listened, the caller still talks to the Local channel when the link comes back:
    the adopted Local channel tells that 103 rang, so the END names a phone that rang."""
    name = "freepbx/inbound_pickup_directed"
    evs = events(name)
    gone = next(i for i, e in enumerate(evs) if e.kind is Kind.HANGUP and e.channel.startswith("PJSIP/101-"))
    first = Tracker(persist=True)
    before = first.feed(evs[0])
    second = Tracker(persist=True)
    assert second.restore(first.take_changes().saved) == 1
    now = evs[gone].ts
    live = live_after(evs[: gone + 1], now)
    assert sorted(c.channel.partition("@")[0][:6] for c in live) == ["Local/", "Local/", "PJSIP/"]
    after = second.resync(live, now, lost_at=evs[0].ts)
    after += [r for e in evs[gone + 1 :] for r in second.feed(e)]
    assert [(r.fields["event"], r.fields.get("internal")) for r in before + after] == [
        ("NOTIFY_START", None),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103"),
    ]
    assert (second.active_calls, second.active_channels) == (0, 0)


def test_only_a_local_channel_to_an_extension_names_a_member() -> None:
    internal = re.compile(TrackerSettings().internal_pattern)
    assert local_member("Local/103@from-ring-group-0000001a;1", internal) == "103"
    assert local_member("Local/102@from-queue-00000003;2", internal) == "102"
    assert local_member("Local/79004440004@from-internal-00000002;1", internal) == ""
    assert local_member("Local/s@macro-dial-00000002;1", internal) == ""
    assert local_member("PJSIP/103-00000008", internal) == ""
