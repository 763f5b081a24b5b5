"""The daemon's Originator: ARI or AMI by config, and the employee's own outcome in the records
when the client was never dialled (so Bitrix24 finishes its card with the right STATUS_CODE)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.config import AriConfig, Config
from bridge.config import load as load_config
from bridge.errors import PermanentFailure, RetryLater
from bridge.pbx.ami import AmiSettings, AmiSupervisor
from bridge.pbx.ari import AriClient, AriSupervisor
from bridge.pbx.originate import Originator, _Pending, ari_settings, stasis_settings
from bridge.pbx.stasis import StasisApp
from tests.fakes.ari import PASSWORD, USER, FakeAri

CHAN = "b24-0123456789abcdef"


async def _nothing(*_: object) -> None:
    return None


def ami() -> AmiSupervisor:
    return AmiSupervisor(AmiSettings(port=1), lambda _m: None, _nothing)


def config(fake: FakeAri | None = None) -> Config:
    cfg = load_config(None)
    ari = AriConfig(url=fake.base, username=USER, password=PASSWORD) if fake else AriConfig(enabled=False)
    return dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, ari=ari))


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


def over_ari(cfg: Config, published: list[CallRecord]) -> tuple[Originator, AriSupervisor, StasisApp]:
    client = AriClient(ari_settings(cfg))
    stasis = StasisApp(client, stasis_settings(cfg, cfg.asterisk.ari.app))
    sup = AriSupervisor(client, stasis.on_event, stasis.readopt)
    return Originator(cfg, ami(), published.extend, sup, stasis), sup, stasis


def msg(**fields: str) -> dict[str, str]:
    return fields


async def test_ari_rings_the_employee_with_the_clients_name(fake: FakeAri) -> None:
    published: list[CallRecord] = []
    calls, sup, _ = over_ari(config(fake), published)
    with pytest.raises(RetryLater, match="ARI"):  # the application is not registered: never originate
        await calls.ring("101", "79001110001", CHAN)
    assert "POST /channels" not in fake.log
    sup.connected.set()
    await calls.ring("101", "79001110001", CHAN, did="74950000100", name="Иван Петров")
    params = fake.channels[CHAN].params
    assert (params["endpoint"], params["callerId"]) == ("PJSIP/101", "Иван Петров <79001110001>")
    assert params["appArgs"] == "employee,79001110001,74950000100,101"
    await sup.client.close()


async def test_ari_refusal_closes_the_call_with_the_employees_outcome(fake: FakeAri) -> None:
    published: list[CallRecord] = []
    calls, sup, _ = over_ari(config(fake), published)
    sup.connected.set()
    fake.unreachable.add("PJSIP/109")
    with pytest.raises(PermanentFailure, match="телефон сотрудника 109 недоступен"):
        await calls.ring("109", "79001110001", CHAN)
    (record,) = published
    assert (record.event.value, record.pbx_call_id, record.fields["disposition"]) == (
        "NOTIFY_OUT_END",
        f"out_{CHAN}",
        "failed",
    )
    # caller_id: the number the client would have seen, never the extension (no line, no default_did:
    # unknown); with a line, that line.
    assert (record.fields["caller_id"], record.fields["internal"]) == ("", "109")
    with pytest.raises(PermanentFailure):
        await calls.ring("109", "79001110001", "nbc2-0001", did="74950000100")
    assert published[-1].fields["caller_id"] == "74950000100"
    await sup.client.close()


@pytest.mark.parametrize(
    ("dial", "cause", "disposition", "leg_end"),
    [
        ("BUSY", "17", "busy", "busy"),
        ("NOANSWER", "19", "no answer", "no_answer"),
        ("NOANSWER", "21", "cancel", "rejected"),  # Bitrix24: 603 declined
    ],
)
async def test_employee_never_answers(dial: str, cause: str, disposition: str, leg_end: str) -> None:
    published: list[CallRecord] = []
    calls = Originator(config(), ami(), published.extend)
    calls._pending[CHAN] = _pending("104")
    calls.on_ami(msg(Event="Newchannel", Uniqueid=CHAN, Linkedid=CHAN, Channel="PJSIP/104-00000001"))
    calls.on_ami(msg(Event="DialEnd", DestUniqueid=CHAN, DestLinkedid=CHAN, DialStatus=dial))
    calls.on_ami(msg(Event="Hangup", Uniqueid=CHAN, Linkedid=CHAN, Cause=cause))
    (record,) = published
    f = record.fields
    assert (f["event"], f["internal"], f["destination"]) == ("NOTIFY_OUT_END", "104", "79001110001")
    assert f["caller_id"] == "74951234567"  # the line the client would have seen, never the extension
    assert (f["disposition"], f["status_code"], f["duration"]) == (disposition, cause, "0")
    assert record.meta["callback_leg"] == "employee" and record.meta["leg_end"] == leg_end


async def test_employee_answers_then_hangs_up_before_the_trunk_is_dialled() -> None:
    """Over ARI the client's Local channel shares the Linkedid: the call is over only when it is gone."""
    published: list[CallRecord] = []
    calls = Originator(config(), ami(), published.extend)
    calls._pending[CHAN] = _pending("101")
    calls.on_ami(msg(Event="Newchannel", Uniqueid=CHAN, Linkedid=CHAN))
    calls.on_ami(msg(Event="DialEnd", DestUniqueid=CHAN, DialStatus="ANSWER"))
    calls.on_ami(msg(Event="Newchannel", Uniqueid=f"{CHAN}-c", Linkedid=CHAN))
    calls.on_ami(msg(Event="Hangup", Uniqueid=CHAN, Linkedid=CHAN, Cause="16"))
    assert published == []  # the client's leg is still there
    calls.on_ami(msg(Event="Hangup", Uniqueid=f"{CHAN}-c", Linkedid=CHAN, Cause="16"))
    (record,) = published
    assert record.fields["disposition"] == "cancel" and record.meta["leg_end"] == "hung_up"


async def test_once_the_trunk_is_dialled_the_tracker_reports() -> None:
    published: list[CallRecord] = []
    calls = Originator(config(), ami(), published.extend)
    calls._pending[CHAN] = _pending("101")
    calls.on_ami(msg(Event="Newchannel", Uniqueid=CHAN, Linkedid=CHAN))
    start = make(
        Event.OUT_START,
        {
            "call_start": "2026-01-01 10:00:00",
            "pbx_call_id": f"out_{CHAN}",
            "internal": "101",
            "destination": "7",
        },
    )
    calls.on_records([start])
    calls.on_ami(msg(Event="Hangup", Uniqueid=CHAN, Linkedid=CHAN, Cause="16"))
    assert published == []


def _pending(ext: str) -> _Pending:
    return _Pending(ext, "79001110001", "2026-01-01 10:00:00", 0.0, caller_id="74951234567")
