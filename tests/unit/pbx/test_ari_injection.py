"""The ARI path refuses what the AMI path refuses (tests/unit/pbx/test_injection.py), entrance by
entrance, against the fake ARI that logs every REST call: the CLI before it connects, the CLI's
``AriActions``, the daemon's ``Originator.ring`` and the Stasis application's dial strings. A
valid value beside each shows the harness does see what is sent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.calls.numbers import InvalidNumber
from bridge.calls.records import CallRecord
from bridge.cli.main import main
from bridge.config import AriConfig, Config
from bridge.config import load as load_config
from bridge.errors import PermanentFailure
from bridge.pbx.ami import AmiSettings, AmiSupervisor
from bridge.pbx.ari import AriBadRequest, AriClient, AriSettings, AriSupervisor
from bridge.pbx.ari_actions import AriActions
from bridge.pbx.originate import Originator, ari_settings, stasis_settings
from bridge.pbx.stasis import StasisApp
from bridge.pbx.stasis_call import StasisSettings
from tests.fakes.ari import PASSWORD, USER, FakeAri
from tests.helpers import until
from tests.unit.pbx.test_injection import HOSTILE_EXTENSIONS, HOSTILE_NUMBERS

CLIENT = "79001234567"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


def config(fake: FakeAri) -> Config:
    cfg = load_config(None)
    ari = AriConfig(url=fake.base, username=USER, password=PASSWORD)
    ami = dataclasses.replace(cfg.asterisk.ami, port=1, connect_timeout=1)
    return dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, ari=ari, ami=ami))


def originate_calls(fake: FakeAri) -> list[str]:
    return [line for line in fake.log if line == "POST /channels"]


# -- the CLI -------------------------------------------------------------------------------------


def cli_config(tmp: Path, fake: FakeAri) -> Path:
    path = tmp / "config.yaml"
    path.write_text(
        "asterisk:\n  ami:\n    port: 1\n    secret: x\n    connect_timeout: 1\n"
        f"  ari:\n    url: {fake.base}\n    username: {USER}\n    password: {PASSWORD}\n"
        f"storage:\n  dir: {tmp}\nsinks:\n  console:\n    enabled: false\n"
    )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["call", HOSTILE_NUMBERS[0]],
        ["call", "sip:attacker@evil.example"],
        ["callback", "--employee", "101/..", "--client", CLIENT],
        ["callback", "--employee", "101", "--client", "٧٩٠٠١٢٣٤٥٦٧"],
        ["callback", "--employee", "101", "--client", CLIENT, "--from", "7495@evil.example"],
    ],
)
async def test_cli_over_ari_refuses_hostile_values_before_connecting(
    args: list[str], fake: FakeAri, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["-c", str(cli_config(tmp_path, fake)), *args])
    assert code == 2
    assert "звонок не сделан" in capsys.readouterr().err
    assert fake.connects == [] and fake.log == []  # ARI was never even connected to


async def test_ari_actions_check_every_value_before_anything_is_sent(fake: FakeAri) -> None:
    actions = await AriActions.open(config(fake))
    try:
        for number in HOSTILE_NUMBERS:
            with pytest.raises(InvalidNumber):
                await actions.test_call(number, lambda _line: None, 0.1)
            with pytest.raises(InvalidNumber):
                await actions.callback("101", number, None, lambda _line: None, 0.1)
            with pytest.raises(InvalidNumber):
                await actions.callback("101", CLIENT, number, lambda _line: None, 0.1)
        for extension in HOSTILE_EXTENSIONS:
            with pytest.raises(InvalidNumber):
                await actions.callback(extension, CLIENT, None, lambda _line: None, 0.1)
        assert originate_calls(fake) == []
        # The control: a valid call-back, typed as people type numbers, reaches ARI normalised.
        placing = asyncio.create_task(
            actions.callback("101", "8 (900) 123-45-67", "+7 495 000-01-00", lambda _line: None, 5)
        )
        await until(lambda: bool(fake.channels))
        (employee,) = fake.channels.values()
        assert (employee.params["endpoint"], employee.params["appArgs"]) == (
            "PJSIP/101",
            "employee,79001234567,74950000100,101",
        )
        assert originate_calls(fake) == ["POST /channels"]
        placing.cancel()  # Ctrl-C: what it placed is hung up
        with contextlib.suppress(asyncio.CancelledError):
            await placing
        assert fake.hangups == [(employee.id, "normal")]
    finally:
        await actions.close()


# -- the daemon ----------------------------------------------------------------------------------


def over_ari(cfg: Config, published: list[CallRecord]) -> tuple[Originator, AriSupervisor]:
    client = AriClient(ari_settings(cfg))
    stasis = StasisApp(client, stasis_settings(cfg, cfg.asterisk.ari.app))
    sup = AriSupervisor(client, stasis.on_event, stasis.readopt)
    ami = AmiSupervisor(AmiSettings(port=1), lambda _m: None, _nothing)
    return Originator(cfg, ami, published.extend, sup, stasis), sup


async def _nothing(*_: object) -> None:
    return None


@pytest.mark.parametrize(
    ("extension", "phone", "did", "chan"),
    [
        *(("101", n, "", "tg-0123456789abcdef") for n in HOSTILE_NUMBERS),
        *((e, CLIENT, "", "tg-0123456789abcdef") for e in HOSTILE_EXTENSIONS),
        ("101", CLIENT, "74950000100\r\nAction: Command", "tg-0123456789abcdef"),
        ("101", CLIENT, "7495@evil.example", "tg-0123456789abcdef"),
        ("101", CLIENT, "", "tg-1/../../bridges"),
        ("101", CLIENT, "", "tg-1\r\nAction: Command"),
    ],
)
async def test_originator_over_ari_refuses_hostile_values(
    fake: FakeAri, extension: str, phone: str, did: str, chan: str
) -> None:
    """Originator.ring is where click-to-call and «Перезвонить» reach ARI too: refused there,
    nothing sent and no record made up for a call that never was."""
    published: list[CallRecord] = []
    calls, sup = over_ari(config(fake), published)
    sup.connected.set()
    try:
        with pytest.raises(PermanentFailure):
            await calls.ring(extension, phone, chan, did=did)
        assert fake.log == [] and published == []
        await calls.ring("101", CLIENT, "tg-0123456789abcdef", did="74950000100")  # the control
        assert originate_calls(fake) == ["POST /channels"]
        assert fake.channels["tg-0123456789abcdef"].params["endpoint"] == "PJSIP/101"
    finally:
        await sup.client.close()


# -- the Stasis application's dial string --------------------------------------------------------


async def test_the_client_is_dialled_through_the_configured_context(fake: FakeAri) -> None:
    cfg = config(fake)
    assert cfg.asterisk.outgoing_context == "novofon-outgoing"  # what asterisk install puts in
    client = AriClient(ari_settings(cfg))
    app = StasisApp(client, stasis_settings(cfg, cfg.asterisk.ari.app))
    try:
        await app.start_test("nbcall-0123456789abcdef", CLIENT, f"novofon-bridge <{CLIENT}>")
        params = fake.channels["nbcall-0123456789abcdef"].params
        assert params["endpoint"] == f"Local/{CLIENT}@novofon-outgoing/n"
    finally:
        await client.close()


@pytest.mark.parametrize("context", ["novofon-outgoing/n@x", "out going", "a,b", "", "ctx\r\n"])
async def test_an_unsafe_context_never_reaches_a_dial_string(fake: FakeAri, context: str) -> None:
    client = AriClient(AriSettings(fake.base, USER, PASSWORD, "novofon-bridge"))
    app = StasisApp(client, StasisSettings("novofon-bridge", outgoing_context=context))
    try:
        with pytest.raises(AriBadRequest, match="outgoing_context"):
            await app.start_test("nbcall-0123456789abcdef", CLIENT, "x <1>")
        assert fake.log == [] and app.active == 0
    finally:
        await client.close()
