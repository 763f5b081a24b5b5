"""Our Stasis application against the fake ARI: what it asks Asterisk to do for each event, the
exact outcome of each leg, and re-adopting calls after a restart.

Events are the ones Asterisk 22 sends for these calls (recorded from the lab: see
tests/integration/test_ari.py for the same calls on the real PBX)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.pbx import stasis
from bridge.pbx.ari import AriBadRequest, AriClient, AriSettings
from bridge.pbx.follow import CallResult, LegEnd, client_end, describe, employee_end
from bridge.pbx.stasis import StasisApp
from bridge.pbx.stasis_call import StasisSettings
from tests.fakes.ari import PASSWORD, USER, FakeAri
from tests.helpers import until

APP = "novofon-bridge"
CALL = "b24-0123456789abcdef"
EMP, CLI, FAR, BRIDGE = CALL, f"{CALL}-c", f"{CALL}-c2", f"{CALL}-b"
CLIENT = "79001110001"


class Watch:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.results: list[CallResult] = []

    def step(self, key: str, detail: str = "") -> None:
        self.steps.append(key)

    def finished(self, result: CallResult) -> None:
        self.results.append(result)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


@pytest.fixture
async def app(fake: FakeAri) -> AsyncIterator[StasisApp]:
    client = AriClient(AriSettings(fake.base, USER, PASSWORD, APP))
    try:
        yield StasisApp(client, StasisSettings(APP, outgoing_context="outgoing"))
    finally:
        await client.close()


def chan(chan_id: str) -> dict[str, Any]:
    return {"id": chan_id, "name": f"X/{chan_id}"}


def start(chan_id: str, *args: str) -> dict[str, Any]:
    return {"type": "StasisStart", "channel": chan(chan_id), "args": list(args)}


def destroyed(chan_id: str, cause: int) -> dict[str, Any]:
    return {"type": "ChannelDestroyed", "channel": chan(chan_id), "cause": cause}


def dial(caller: str | None, peer: str, status: str, name: str = "PJSIP/novofon-00000001") -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "Dial", "peer": {"id": peer, "name": name}, "dialstatus": status}
    if caller:
        ev["caller"] = chan(caller)
    return ev


async def feed(app: StasisApp, fake: FakeAri, *events: dict[str, Any]) -> None:
    for ev in events:
        if ev["type"] == "ChannelDestroyed":
            fake.channels.pop(ev["channel"]["id"], None)
        await app.on_event(ev)


async def answered_callback(app: StasisApp, fake: FakeAri, watch: Watch) -> None:
    await app.start_callback(CALL, "101", CLIENT, "74950000100", "Иван Клиентов <79001110001>", watch)
    await feed(app, fake, dial(None, EMP, "RINGING"), start(EMP, "employee", CLIENT, "74950000100", "101"))
    await feed(
        app, fake, dial(FAR, "trunk-1", ""), dial(FAR, "trunk-1", "RINGING"), dial(FAR, "trunk-1", "ANSWER")
    )
    await feed(app, fake, start(CLI, "client"))


async def test_callback_rings_employee_then_client_and_bridges_them(app: StasisApp, fake: FakeAri) -> None:
    watch = Watch()
    await answered_callback(app, fake, watch)
    employee = fake.channels[EMP].params
    assert (employee["endpoint"], employee["app"], employee["timeout"]) == ("PJSIP/101", APP, "30")
    assert employee["callerId"] == "Иван Клиентов <79001110001>"  # the handset shows who it is
    client = fake.channels[CLI]
    assert client.params["endpoint"] == f"Local/{CLIENT}@outgoing/n"  # the dialplan dials the trunk
    assert client.params["originator"] == EMP  # same Linkedid: one call in the records
    assert client.params["callerId"] == "<101>"  # as if 101 dialled the client
    assert client.params["otherChannelId"] == FAR
    assert client.body == {"variables": {"_OUTBOUND_CALLERID": "74950000100"}}
    assert fake.bridges == {BRIDGE: [EMP, CLI]}
    assert fake.channels[EMP].ringing is False  # the ringback stopped once the client answered
    assert watch.steps == ["employee_ringing", "employee_answered", "trying", "ringing", "answered"]

    # The client hangs up: the employee is hung up and the bridge destroyed; nothing else.
    await feed(app, fake, {"type": "StasisEnd", "channel": chan(CLI)}, destroyed(CLI, 16))
    assert fake.hangups == [(EMP, "normal")] and fake.bridges == {}
    await feed(app, fake, destroyed(EMP, 16))
    (result,) = watch.results
    assert result.answered and result.hung_up_by == "client"
    assert describe(result, "101") == "клиент положил трубку"
    assert app.active == 0


@pytest.mark.parametrize(
    ("cause", "end", "text"),
    [
        (17, LegEnd.BUSY, "сотрудник 104 занят (cause 17)"),
        (19, LegEnd.NO_ANSWER, "сотрудник 104 не ответил (cause 19)"),
        (21, LegEnd.REJECTED, "сотрудник 104 отклонил вызов (cause 21)"),
        (20, LegEnd.UNAVAILABLE, "телефон сотрудника 104 недоступен (cause 20)"),
    ],
)
async def test_employee_leg_outcomes(
    app: StasisApp, fake: FakeAri, cause: int, end: LegEnd, text: str
) -> None:
    watch = Watch()
    await app.start_callback(CALL, "104", CLIENT, "", "Клиент <79001110001>", watch)
    await feed(app, fake, destroyed(EMP, cause))
    (result,) = watch.results
    assert (result.answered, result.leg, result.end, result.cause) == (False, "employee", end, cause)
    assert describe(result, "104") == text
    assert fake.hangups == [] and "POST /channels" in fake.log and len(fake.log) == 1  # the client never rang


@pytest.mark.parametrize(
    ("events", "end", "text"),
    [
        (
            [dial(FAR, "t", "BUSY"), destroyed("t", 17), destroyed(CLI, 17)],
            LegEnd.BUSY,
            "клиент: занято (BUSY)",
        ),
        (
            [dial(FAR, "t", "NOANSWER"), destroyed(CLI, 19), destroyed("t", 0)],
            LegEnd.NO_ANSWER,
            "клиент: нет ответа (NOANSWER)",
        ),
        # The lab's dialplan turns the network's "unallocated" into cause 20 on the Local channel:
        # the trunk leg's own cause (1) decides.
        (
            [dial(FAR, "t", "NOANSWER"), destroyed("t", 1), destroyed(CLI, 20)],
            LegEnd.UNALLOCATED,
            "клиент: номер не существует (cause 1, Dial: NOANSWER)",
        ),
    ],
)
async def test_client_leg_outcomes(
    app: StasisApp, fake: FakeAri, events: list[dict[str, Any]], end: LegEnd, text: str
) -> None:
    watch = Watch()
    await app.start_callback(CALL, "101", CLIENT, "", "Клиент <79001110001>", watch)
    await feed(app, fake, start(EMP, "employee", CLIENT, "", "101"), dial(FAR, "t", ""), *events)
    assert fake.hangups == [(EMP, "normal")]  # the employee is told by the line going down
    await feed(app, fake, destroyed(EMP, 16))
    (result,) = watch.results
    assert (result.answered, result.leg, result.end) == (False, "client", end)
    assert describe(result, "101") == text


async def test_employee_hangs_up_while_the_client_rings(app: StasisApp, fake: FakeAri) -> None:
    watch = Watch()
    await app.start_callback(CALL, "102", CLIENT, "", "Клиент <79001110001>", watch)
    await feed(app, fake, start(EMP, "employee", CLIENT, "", "102"), dial(FAR, "t", "RINGING"))
    await feed(app, fake, {"type": "StasisEnd", "channel": chan(EMP)})
    assert (CLI, "normal") in fake.hangups  # the client's phone stops ringing
    await feed(app, fake, destroyed(EMP, 16), destroyed(CLI, 16))
    assert watch.results[0].end is LegEnd.HUNG_UP and watch.results[0].leg == "employee"


async def test_client_not_dialled_hangs_up_the_employee(app: StasisApp, fake: FakeAri) -> None:
    watch = Watch()
    await app.start_callback(CALL, "101", CLIENT, "", "Клиент <79001110001>", watch)
    fake.unreachable.add(f"Local/{CLIENT}@outgoing/n")
    await feed(app, fake, start(EMP, "employee", CLIENT, "", "101"))
    assert fake.hangups == [(EMP, "congestion")]
    await feed(app, fake, destroyed(EMP, 34))
    assert watch.results[0].leg == "client" and watch.results[0].end is LegEnd.FAILED


async def test_hang_up_touches_only_this_call(app: StasisApp, fake: FakeAri) -> None:
    other = fake.add_live("someone-else", "PJSIP/103-00000009")
    await answered_callback(app, fake, Watch())
    await app.hang_up(CALL)
    assert sorted(c for c, _ in fake.hangups) == [EMP, CLI]
    assert other.id in fake.channels and fake.bridges == {}


async def test_test_call_plays_the_sound_then_hangs_up(app: StasisApp, fake: FakeAri) -> None:
    watch = Watch()
    await app.start_test("nbcall-0123456789abcdef", "79991234567", "novofon-bridge <79991234567>", watch)
    params = fake.channels["nbcall-0123456789abcdef"].params
    assert params["formats"] == "slin" and "originator" not in params
    await feed(app, fake, start("nbcall-0123456789abcdef", "test"))
    assert fake.channels["nbcall-0123456789abcdef"].played == ["sound:hello-world"]
    await feed(
        app, fake, {"type": "PlaybackFinished", "playback": {"target_uri": "channel:nbcall-0123456789abcdef"}}
    )
    assert fake.hangups == [("nbcall-0123456789abcdef", "normal")]
    await feed(app, fake, destroyed("nbcall-0123456789abcdef", 16))
    assert watch.results[0].answered and describe(watch.results[0]) == "нормальное завершение"


TEST_CALL = "nbcall-0123456789abcdef"


async def test_an_unknown_number_waits_for_the_trunks_cause_that_comes_after_ours(
    app: StasisApp, fake: FakeAri
) -> None:
    """The network says "unallocated" (cause 1) on the trunk leg; our Local channel ends with 20,
    and its ChannelDestroyed can come first: the call is finished when the trunk's arrives."""
    watch = Watch()
    await app.start_test(TEST_CALL, "79005550000", "novofon-bridge <79005550000>", watch)
    await feed(app, fake, dial(f"{TEST_CALL}-2", "t", ""), dial(f"{TEST_CALL}-2", "t", "NOANSWER"))
    await feed(app, fake, destroyed(TEST_CALL, 20))
    assert watch.results == []  # not «абонент недоступен»: the trunk's own cause is still to come
    await feed(app, fake, destroyed("t", 1))
    (result,) = watch.results
    assert describe(result) == "номер не существует (cause 1, Dial: NOANSWER)"


async def test_a_trunk_cause_that_never_comes_does_not_hold_the_call(
    app: StasisApp, fake: FakeAri, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stasis, "TRUNK_CAUSE_GRACE", 0.05)
    watch = Watch()
    await app.start_test(TEST_CALL, "79005550000", "novofon-bridge <79005550000>", watch)
    await feed(app, fake, dial(f"{TEST_CALL}-2", "t", ""), dial(f"{TEST_CALL}-2", "t", "NOANSWER"))
    await feed(app, fake, destroyed(TEST_CALL, 20))
    await until(lambda: watch.results, timeout=2, interval=0.01)
    assert describe(watch.results[0]) == "абонент недоступен (cause 20, Dial: NOANSWER)"
    assert app.active == 0


async def test_a_restart_readopts_the_talk_and_ends_it_when_a_side_hangs_up(
    app: StasisApp, fake: FakeAri
) -> None:
    # What Asterisk still has after the daemon restarted mid-call: both legs in our application,
    # bridged. Nothing may be hung up; the bridge is not rebuilt.
    fake.add_live(EMP, "PJSIP/101-00000001", f"{APP},employee,{CLIENT},,101")
    fake.add_live(CLI, f"Local/{CLIENT}@outgoing-00000001;1", f"{APP},client")
    fake.add_live("other-app-chan", "PJSIP/103-00000002", "another-app,whatever")
    fake.bridges[BRIDGE] = [EMP, CLI]
    await app.readopt()
    assert fake.hangups == [] and fake.bridges == {BRIDGE: [EMP, CLI]}
    assert not any(line.startswith(("POST /bridges", "DELETE")) for line in fake.log)
    assert app.active == 1
    await feed(app, fake, {"type": "StasisEnd", "channel": chan(EMP)}, destroyed(EMP, 16))
    assert fake.hangups == [(CLI, "normal")] and fake.bridges == {}
    await feed(app, fake, destroyed(CLI, 16))
    assert app.active == 0


async def test_a_restart_finishes_a_call_whose_side_hung_up_meanwhile(app: StasisApp, fake: FakeAri) -> None:
    fake.add_live(EMP, "PJSIP/101-00000001", f"{APP},employee,{CLIENT},,101")
    fake.bridges[BRIDGE] = [EMP]  # the client left while nobody listened
    fake.bridges["nbcb-00000000000000aa-b"] = []  # an empty bridge of an older call of ours
    fake.bridge_times["nbcb-00000000000000aa-b"] = "2026-01-01T00:00:00.000+0000"
    fake.bridges["somebody-elses"] = []
    await app.readopt()
    assert fake.hangups == [(EMP, "normal")]
    assert sorted(fake.bridges) == ["somebody-elses"]


async def test_a_client_answering_after_a_restart_is_bridged(app: StasisApp, fake: FakeAri) -> None:
    fake.add_live(EMP, "PJSIP/101-00000001", f"{APP},employee,{CLIENT},,101")
    fake.add_live(CLI, f"Local/{CLIENT}@outgoing-00000001;1", state="Ringing")  # not answered yet
    await app.readopt()
    assert fake.hangups == [] and fake.bridges == {}
    await feed(app, fake, start(CLI, "client"))
    assert fake.bridges == {BRIDGE: [EMP, CLI]}


async def test_a_call_never_heard_of_again_is_forgotten(app: StasisApp, fake: FakeAri) -> None:
    await app.start_callback(CALL, "101", CLIENT, "", "Клиент <79001110001>", Watch())
    app.calls[CALL].created -= app.s.max_call_age + 1  # its events were lost for longer than any call
    await app.start_callback("b24-00000000000000ff", "102", CLIENT, "", "Клиент <79001110001>", Watch())
    assert list(app.calls) == ["b24-00000000000000ff"]


@pytest.mark.parametrize(
    ("employee", "client", "did"),
    [("101", "123@from-internal", ""), ("101/x", CLIENT, ""), ("101", CLIENT, "7495,evil"), ("", CLIENT, "")],
)
async def test_nothing_unsafe_reaches_a_dial_string(
    app: StasisApp, fake: FakeAri, employee: str, client: str, did: str
) -> None:
    with pytest.raises(AriBadRequest, match="недопустимое значение"):
        await app.start_callback(CALL, employee, client, did, "x <1>", Watch())
    with pytest.raises(AriBadRequest):
        await app.start_test(CALL, "1@x", "x <1>")
    assert fake.log == [] and app.active == 0


def test_leg_classification() -> None:
    assert employee_end(16, answered=True) is LegEnd.HUNG_UP
    assert employee_end(38, answered=True) is LegEnd.FAILED
    assert employee_end(None, answered=False) is LegEnd.NO_ANSWER
    assert client_end(None, "CONGESTION", 34) is LegEnd.FAILED
    assert client_end(None, "", 21) is LegEnd.REJECTED
    assert client_end(None, "CHANUNAVAIL", 20) is LegEnd.UNAVAILABLE
