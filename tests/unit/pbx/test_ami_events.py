import dataclasses

from bridge.calls.events import ChannelEvent, Kind
from bridge.pbx.ami_events import to_channel_event, to_live_channel
from tests.transcripts import messages, raw


def test_fast_built_events_equal_normally_built_ones() -> None:
    for msg in messages(raw("inbound_ring_group")):
        ev = to_channel_event(msg, 0.0)
        if ev is None:
            continue
        rebuilt = ChannelEvent(**{f.name: getattr(ev, f.name) for f in dataclasses.fields(ChannelEvent)})
        assert ev == rebuilt and hash(ev) == hash(rebuilt)
        assert list(vars(ev)) == [f.name for f in dataclasses.fields(ChannelEvent)]
        try:
            ev.uniqueid = "x"  # type: ignore[misc]
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("ChannelEvent must stay frozen")


def test_unknown_and_unused_events_are_ignored() -> None:
    assert to_channel_event({"Event": "VarSet"}, 0.0) is None
    assert to_channel_event({"Response": "Success"}, 0.0) is None


def test_missing_timestamp_falls_back_to_now() -> None:
    ev = to_channel_event({"Event": "Hangup", "Uniqueid": "1.1", "Cause": "x"}, 42.0)
    assert ev is not None and (ev.kind, ev.ts, ev.cause) == (Kind.HANGUP, 42.0, 0)


def test_core_show_channel_row() -> None:
    lc = to_live_channel(
        {
            "Event": "CoreShowChannel",
            "Uniqueid": "a",
            "Linkedid": "a",
            "Channel": "PJSIP/101-1",
            "ChannelState": "6",
            "Duration": "01:02:03",
            "BridgeId": "b1",
        }
    )
    assert (lc.age, lc.state, lc.bridged) == (3723.0, 6, True)
