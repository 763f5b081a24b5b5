"""How a call the CLI placed ended, said by its real cause: an unknown number is not «нет ответа»
(Asterisk 22 reports Dial()'s status NOANSWER for it; the trunk's hangup cause 1 is the truth)."""

from __future__ import annotations

import pytest

from bridge.config import load
from bridge.pbx.follow import CallFollower, end_reason

LINKED = "nbcall-0123456789abcdef"


def events(dial_status: str, trunk_cause: str, local_cause: str) -> list[dict[str, str]]:
    """A test call's events as the lab's Asterisk 22 sent them (Local/N@novofon-outgoing -> trunk)."""
    local1 = {"Channel": "Local/79005550000@novofon-outgoing-00000001;1", "Uniqueid": LINKED}
    local2 = {"Channel": "Local/79005550000@novofon-outgoing-00000001;2", "Uniqueid": f"{LINKED}-2"}
    trunk = {"Channel": "PJSIP/novofon-00000001", "Uniqueid": "1764417412.7"}
    common = {"Linkedid": LINKED}
    return [
        {"Event": "Newchannel", **local1, **common, "ChannelState": "0"},
        {"Event": "Newchannel", **local2, **common, "ChannelState": "4"},
        {"Event": "Newchannel", **trunk, **common, "ChannelState": "0"},
        {"Event": "DialBegin", **local2, **common, "DestUniqueid": trunk["Uniqueid"]},
        {
            "Event": "DialEnd",
            **local2,
            **common,
            "DestUniqueid": trunk["Uniqueid"],
            "DialStatus": dial_status,
        },
        {"Event": "Hangup", **trunk, **common, "Cause": trunk_cause},
        {"Event": "Hangup", **local2, **common, "Cause": local_cause},
        {"Event": "Hangup", **local1, **common, "Cause": local_cause},
    ]


@pytest.mark.parametrize(
    ("dial_status", "trunk_cause", "local_cause", "reason"),
    [
        ("NOANSWER", "1", "20", "номер не существует (cause 1, Dial: NOANSWER)"),  # recorded in the lab
        ("BUSY", "17", "17", "занято (BUSY)"),
        ("NOANSWER", "0", "19", "нет ответа (NOANSWER)"),  # rang out: Asterisk cancelled it (cause 0)
        ("CONGESTION", "34", "34", "перегрузка или отказ сети (CONGESTION)"),
        ("CHANUNAVAIL", "21", "20", "вызов отклонён (cause 21, Dial: CHANUNAVAIL)"),  # SIP 403/603
        ("NOANSWER", "28", "20", "неверный формат номера (cause 28, Dial: NOANSWER)"),  # SIP 484
        (
            "CONGESTION",
            "58",
            "34",
            "несовместимые кодеки (нет общего формата звука) (cause 58, Dial: CONGESTION)",
        ),
    ],
)
def test_the_reason_is_the_real_cause(
    dial_status: str, trunk_cause: str, local_cause: str, reason: str
) -> None:
    said: list[str] = []
    follower = CallFollower(LINKED, load(None), said.append)
    for msg in events(dial_status, trunk_cause, local_cause):
        follower.on_event(msg)
    assert follower.done.is_set() and not follower.outcome.answered
    assert follower.outcome.reason == reason
    assert follower.outcome.cause == int(trunk_cause)
    assert said == ["набор номера через транк (PJSIP/novofon-00000001)…"]


def test_end_reason_table() -> None:
    assert end_reason("", 1) == "номер не существует (cause 1)"
    assert end_reason("", None) == "причина не сообщена (cause 0)"
    assert end_reason("CANCEL", 16) == "вызов отменён (CANCEL)"
    assert end_reason("NOANSWER", 18) == "нет ответа (NOANSWER)"  # 408 agrees with NOANSWER
    assert end_reason("BUSY", 3) == "нет маршрута до абонента (cause 3, Dial: BUSY)"
    assert end_reason("", 999) == "причина 999 (cause 999)"


async def test_the_trunks_cause_counts_even_when_its_hangup_comes_after_the_calls() -> None:
    """Under load the call's own Hangup can come before the trunk leg's: still cause 1."""
    follower = CallFollower(LINKED, load(None), [].append)
    msgs = events("NOANSWER", "1", "20")
    trunk_hangup = msgs.pop(5)
    for msg in msgs:  # the call's channels hang up first
        follower.on_event(msg)
    assert not follower.done.is_set()  # it waits a moment for the trunk's cause
    follower.on_event(trunk_hangup)
    assert follower.done.is_set()
    assert follower.outcome.reason == "номер не существует (cause 1, Dial: NOANSWER)"
