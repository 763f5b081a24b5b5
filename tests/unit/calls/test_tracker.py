"""The tracker on AMI transcripts recorded from the real lab, plus the paths a live lab rarely takes."""

from __future__ import annotations

import pytest

from bridge.calls.events import ChannelEvent, Kind, LiveChannel
from bridge.calls.records import FIELDS, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from tests.transcripts import NAMES, events, replay

# (event, internal, disposition, status_code, duration, is_recorded) per record, per scenario.
EXPECTED: dict[str, list[tuple[str, ...]]] = {
    "inbound_answered": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "inbound_missed": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "19", "0", "0"),
    ],
    "inbound_busy": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_END", "104", "busy", "17", "0", "0"),
    ],
    "inbound_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "cancel", "16", "0", "0"),
    ],
    "inbound_ring_group": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_INTERNAL", "102"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    # Ring timeouts: the PBX gave up (then hung up normally, cause 16 or the busy member's 17).
    "inbound_queue_timeout": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "16", "0", "0"),
    ],
    "inbound_local_group_timeout": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_END", "103", "no answer", "17", "0", "0"),
    ],
    # The caller hung up while the queue / the Local ring group rang.
    "inbound_queue_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "cancel", "16", "0", "0"),
    ],
    "inbound_local_group_cancel": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_INTERNAL", "104"),
        ("NOTIFY_END", "103", "cancel", "16", "0", "0"),
    ],
    "outbound_answered": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_OUT_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "outbound_busy": [("NOTIFY_OUT_START", "102"), ("NOTIFY_OUT_END", "102", "busy", "17", "0", "0")],
    "outbound_no_answer": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_OUT_END", "101", "no answer", "19", "0", "0"),
    ],
    # Field scenarios (issue 8); their exact fields: tests/unit/calls/test_field_scenarios.py.
    "inbound_forward_mobile": [
        ("NOTIFY_START",),
        ("NOTIFY_ANSWER", ""),
        ("NOTIFY_END", "", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "inbound_ivr_hangup": [("NOTIFY_START",), ("NOTIFY_END", "", "cancel", "16", "0", "0")],
    "inbound_voicemail": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_END", "103", "no answer", "16", "0", "0"),
    ],
    "outbound_dialled_8": [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_OUT_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "outbound_dialled_plus7": [
        ("NOTIFY_OUT_START", "102"),
        ("NOTIFY_ANSWER", "102"),
        ("NOTIFY_OUT_END", "102", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    # 105 answers, then transfers the call to 101 (REFER; attended: after a consultation call
    # 105 -> 101 that reports nothing of its own): the END names 101, the talk counts from 105's answer.
    "inbound_blind_transfer": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "6", "1"),
        ("NOTIFY_RECORD",),
    ],
    "inbound_attended_transfer": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "105"),
        ("NOTIFY_ANSWER", "105"),
        ("NOTIFY_INTERNAL", "101"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "6", "1"),
        ("NOTIFY_RECORD",),
    ],
    # 103 rings; 101 picks the call up (**103, *8): answered by 101, never missed.
    "inbound_pickup_directed": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
    "inbound_pickup_group": [
        ("NOTIFY_START",),
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_ANSWER", "101"),
        ("NOTIFY_END", "101", "answered", "16", "2", "1"),
        ("NOTIFY_RECORD",),
    ],
}
KEYS = ("event", "internal", "disposition", "status_code", "duration", "is_recorded")


def summary(name: str, chunk: int | None = None) -> list[tuple[str, ...]]:
    return [tuple(r.fields[k] for k in KEYS if k in r.fields) for r in replay(name, chunk=chunk)]


def test_every_recorded_scenario_has_expectations() -> None:
    assert set(NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcript_replay(name: str) -> None:
    assert summary(name) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_records_have_exactly_novofon_fields(name: str) -> None:
    records = replay(name)
    assert len({r.pbx_call_id for r in records}) == 1
    prefix = "in_" if name.startswith("inbound") else "out_"
    for r in records:
        assert tuple(r.fields) == FIELDS[r.event]
        assert r.pbx_call_id.startswith(prefix)
        assert all(isinstance(v, str) for v in r.fields.values())


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_any_tcp_chunking_gives_the_same_records(chunk: int) -> None:
    """Cyrillic names split across reads, headers split mid-line: nothing changes."""
    for name in EXPECTED:
        assert [r.fields for r in replay(name, chunk=chunk)] == [r.fields for r in replay(name)]
    assert {r.meta.get("caller_name") for r in replay("inbound_answered", chunk=1)} == {"Иван Петров"}


def test_inbound_fields_are_novofon_formatted() -> None:
    start = replay("inbound_answered")[0].fields
    assert start["caller_id"] == "79581114585"  # the trunk sent 89581114585
    assert start["called_did"] == "74950000101"
    ts = events("inbound_answered")[0].ts
    from datetime import datetime
    from zoneinfo import ZoneInfo

    assert start["call_start"] == datetime.fromtimestamp(ts, ZoneInfo("Europe/Moscow")).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


@pytest.mark.parametrize(
    ("name", "disposition"),
    [
        ("inbound_queue_timeout", "no answer"),
        ("inbound_local_group_timeout", "no answer"),
        ("inbound_queue_cancel", "cancel"),
        ("inbound_local_group_cancel", "cancel"),
    ],
)
def test_ring_outcome_without_hangup_request_events(name: str, disposition: str) -> None:
    """An older manager.conf filters (Soft)HangupRequest out: the outer dials still decide."""
    requests = (Kind.HANGUP_REQUEST, Kind.SOFT_HANGUP_REQUEST)
    tracker = Tracker()
    records = [r for e in events(name) if e.kind not in requests for r in tracker.feed(e)]
    assert records[-1].fields["disposition"] == disposition


def test_no_state_outlives_its_call() -> None:
    tracker = Tracker()
    for name in EXPECTED:
        replay(name, tracker)
    assert (tracker.active_calls, tracker.active_channels) == (0, 0)


def _partial(name: str, stop_before: Kind) -> tuple[Tracker, list[ChannelEvent]]:
    """Feed a transcript up to (not including) the first event of kind ``stop_before``."""
    tracker = Tracker()
    evs = events(name)
    cut = next(i for i, e in enumerate(evs) if e.kind is stop_before)
    for ev in evs[:cut]:
        tracker.feed(ev)
    return tracker, evs


def test_lost_hangup_is_swept_after_max_age() -> None:
    tracker, evs = _partial("inbound_answered", Kind.HANGUP)
    last = max(e.ts for e in evs if e.kind is not Kind.HANGUP)
    assert tracker.sweep(last + 60) == []  # still young
    records = tracker.sweep(last + TrackerSettings().max_call_age + 1)
    assert [r.fields["event"] for r in records] == ["NOTIFY_END", "NOTIFY_RECORD"]
    assert records[0].fields["disposition"] == "answered"
    assert records[0].reconstructed
    assert tracker.active_channels == 0


def test_resync_closes_calls_that_ended_during_an_outage() -> None:
    tracker, evs = _partial("inbound_answered", Kind.HANGUP)
    answered_at = next(e.ts for e in evs if e.kind is Kind.DIAL_END)
    records = tracker.resync([], now=answered_at + 100, lost_at=answered_at + 30)
    end = records[0]
    assert end.fields["event"] == "NOTIFY_END"
    assert end.fields["duration"] == "30"  # up to the moment the connection was lost
    assert end.fields["status_code"] == "0"  # unknown: nobody saw the hangup
    assert end.reconstructed
    assert tracker.active_calls == 0


def test_resync_keeps_calls_that_are_still_up() -> None:
    tracker, evs = _partial("inbound_answered", Kind.HANGUP)
    live = [
        LiveChannel(
            e.uniqueid, e.linkedid, e.channel, 6, e.caller_num, e.caller_name, e.context, e.exten, 5, True
        )
        for e in evs
        if e.kind is Kind.NEW
    ]
    assert tracker.resync(live, now=evs[-1].ts + 5, lost_at=evs[-1].ts) == []
    records = [r for e in evs if e.kind is Kind.HANGUP for r in tracker.feed(e)]
    assert [r.fields["event"] for r in records] == ["NOTIFY_END", "NOTIFY_RECORD"]
    assert not records[0].reconstructed


def test_daemon_started_mid_call_adopts_it() -> None:
    evs = events("outbound_answered")
    news = [e for e in evs if e.kind is Kind.NEW]
    live = [
        LiveChannel(
            e.uniqueid,
            e.linkedid,
            e.channel,
            6,
            e.caller_num,
            e.caller_name,
            e.context,
            e.exten,
            age=10 - i,
            bridged=True,
            recording=e.uniqueid == e.linkedid,
        )
        for i, e in enumerate(news)
    ]
    tracker = Tracker()
    now = evs[-1].ts
    adopted = tracker.resync(live, now=now, lost_at=None)
    assert [(r.fields["event"], r.fields["internal"]) for r in adopted] == [
        ("NOTIFY_OUT_START", "101"),
        ("NOTIFY_ANSWER", "101"),
    ]
    assert all(r.reconstructed for r in adopted)
    assert adopted[0].pbx_call_id == replay("outbound_answered")[0].pbx_call_id
    ends = [r for e in evs if e.kind is Kind.HANGUP for r in tracker.feed(e)]
    assert [r.fields["event"] for r in ends] == ["NOTIFY_OUT_END", "NOTIFY_RECORD"]


def _ev(kind: Kind, uid: str, linkedid: str, channel: str = "", **kw: object) -> ChannelEvent:
    return ChannelEvent(kind, float(kw.pop("ts", 1_700_000_000)), uid, linkedid, channel, **kw)  # type: ignore[arg-type]


def test_internal_only_call_produces_no_records() -> None:
    t = Tracker()
    out = []
    out += t.feed(_ev(Kind.NEW, "a", "a", "PJSIP/101-00000001", caller_num="101", exten="102"))
    out += t.feed(_ev(Kind.NEW, "b", "a", "PJSIP/102-00000002"))
    out += t.feed(_ev(Kind.DIAL_BEGIN, "a", "a", dest_uniqueid="b"))
    out += t.feed(_ev(Kind.DIAL_END, "a", "a", dest_uniqueid="b", dial_status="ANSWER"))
    out += t.feed(_ev(Kind.HANGUP, "b", "a", cause=16))
    out += t.feed(_ev(Kind.HANGUP, "a", "a", cause=16))
    assert out == []
    assert t.active_calls == 0


def test_linkedid_change_on_transfer_moves_the_channel() -> None:
    """Two calls; a channel of the second is bridged into the first (attended transfer)."""
    t = Tracker()
    t.feed(_ev(Kind.NEW, "in1", "in1", "PJSIP/novofon-01", caller_num="79000000001", exten="74950000000"))
    t.feed(_ev(Kind.NEW, "x", "x", "PJSIP/101-02"))
    t.feed(_ev(Kind.BRIDGE, "x", "in1"))
    assert t.active_calls == 1  # the second call disappeared into the first
    out = t.feed(_ev(Kind.HANGUP, "in1", "in1", cause=16)) + t.feed(_ev(Kind.HANGUP, "x", "in1", cause=16))
    assert [r.fields["event"] for r in out] == ["NOTIFY_END"]
    assert t.active_calls == 0 and t.active_channels == 0


def test_default_did_when_trunk_sends_s() -> None:
    t = Tracker(TrackerSettings(default_did="84951234567"))
    (start,) = t.feed(_ev(Kind.NEW, "a", "a", "PJSIP/novofon-01", caller_num="+7 (958) 111-45-85", exten="s"))
    assert start.event is Event.START
    assert (start.fields["caller_id"], start.fields["called_did"]) == ("79581114585", "74951234567")


def test_finished_calls_are_freed_by_refcounting_not_left_to_the_cyclic_gc() -> None:
    import gc

    from bridge.calls.tracker import Call, Channel

    gc.collect()
    gc.disable()
    try:
        tracker = Tracker()
        for _ in range(20):
            for name in EXPECTED:
                replay(name, tracker)
        leftovers = [o for o in gc.get_objects() if isinstance(o, (Call, Channel))]
    finally:
        gc.enable()
    assert leftovers == []
