"""Novofon 2.0 notifications become the records the tracker makes (one call, every type)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from bridge.calls.records import FIELDS, Event
from bridge.errors import BadRequest
from bridge.integrations.novofon.v2 import is_v2, notification

MSK = ZoneInfo("Europe/Moscow")


class Starts:
    """Remembers each call's first time, as the route does in the bridge's state."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, pbx_call_id: str, now: str) -> str:
        return self.seen.setdefault(pbx_call_id, now)


def note(kind: str, **fields: str) -> dict[str, str]:
    return {
        "type": kind,
        "call_session_id": "3141592",
        "notification_time": "2026-11-29 12:00:00.123456",
        "virtual_phone_number": "74951234567",
        "contact_phone_number": "+7 (916) 123-45-67",
        **fields,
    }


def test_an_answered_inbound_call_in_every_step() -> None:
    starts = Starts()
    steps = [
        note("incoming"),
        note("waiting", extension_phone_number="101", notification_time="2026-11-29 12:00:02.000000"),
        note("talk_start", extension_phone_number="101", notification_time="2026-11-29 12:00:05.000000"),
        note("talk_end", extension_phone_number="101"),
        note(
            "call_end",
            extension_phone_number="101",
            talk_time_duration="62",
            file_link="https://x.novofon.ru/r/1.mp3",
        ),
        note("recorded", file_link="https://x.novofon.ru/r/1.mp3"),
    ]
    records = [r for s in steps for r in notification(s, MSK, "7", starts)[1]]
    assert [r.event for r in records] == [Event.START, Event.INTERNAL, Event.ANSWER, Event.END, Event.RECORD]
    for r in records:
        assert tuple(r.fields) == FIELDS[r.event]
        assert r.pbx_call_id == "n2_3141592"
    assert {r.fields.get("call_start") for r in records[:4]} == {"2026-11-29 12:00:00"}
    start, internal, answer, end, record = records
    assert start.fields["caller_id"] == "79161234567" and start.fields["called_did"] == "74951234567"
    assert internal.fields["internal"] == "101" and answer.fields["internal"] == "101"
    assert end.fields["disposition"] == "answered" and end.fields["duration"] == "62"
    assert end.fields["is_recorded"] == "1"
    assert record.meta["recording_url"] == "https://x.novofon.ru/r/1.mp3"


def test_a_lost_call_is_missed_and_an_outgoing_call_is_out() -> None:
    _, (lost,) = notification(note("lost", talk_time_duration="0"), MSK, "7", Starts())
    assert lost.event is Event.END and lost.fields["disposition"] == "no answer"
    starts = Starts()
    _, (out,) = notification(note("outgoing", employee_id="102", direction="out"), MSK, "7", starts)
    _, (out_end,) = notification(
        note("call_end", employee_id="102", direction="out", talk_time_duration="5"), MSK, "7", starts
    )
    assert out.event is Event.OUT_START and out.fields["destination"] == "79161234567"
    assert (
        out_end.event is Event.OUT_END and out_end.fields["caller_id"] == "74951234567"
    )  # what the client saw


def test_iso_times_with_an_offset_are_put_in_the_pbx_zone() -> None:
    _, (r,) = notification(
        note("incoming", notification_time="2026-11-29T09:00:00+00:00"), MSK, "7", Starts()
    )
    assert r.fields["call_start"] == "2026-11-29 12:00:00"


@pytest.mark.parametrize(
    "data, error",
    [
        ({"call_session_id": "1"}, "unknown-type"),
        ({"type": "nonsense", "call_session_id": "1"}, "unknown-type"),
        ({"type": "incoming"}, "missing-field"),
        ({"type": "incoming", "call_session_id": "1", "notification_time": "yesterday"}, "bad-field"),
        ({"type": "recorded", "call_session_id": "1", "file_link": "javascript:alert(1)"}, "bad-field"),
        ({"type": "call_end", "call_session_id": "1", "talk_time_duration": "many"}, "bad-field"),
        ({"type": "incoming", "call_session_id": "1", "contact_phone_number": "7916\r\nX: y"}, "bad-field"),
    ],
)
def test_bad_notifications_are_refused(data: dict[str, str], error: str) -> None:
    with pytest.raises(BadRequest) as e:
        notification(data, MSK, "7", Starts())
    assert e.value.error == error and e.value.status == 400


def test_v1_and_v2_are_told_apart() -> None:
    assert is_v2(note("incoming")) and not is_v2({"event": "NOTIFY_START", "call_start": "x"})
