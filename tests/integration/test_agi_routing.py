"""Routing to the responsible manager on the real lab: Asterisk's dialplan asks the daemon over
FastAGI (asterisk-conf/novofon-bridge_extensions.conf [novofon-route], installed by the lab through
``novofon-bridge asterisk install``; only L.DID_ROUTED asks, through [novofon-route-calls]; its
usual destination is 103, a phone that never answers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.app import App
from bridge.config import Config, DirectoryConfig, EmployeeConfig
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.pbx.ami import AmiConnection, AmiSettings
from bridge.pbx.ami_protocol import AmiMessage
from tests.conftest import arx, hangup_all, lab_config
from tests.fakes.bitrix import FakeBitrix, portal_user
from tests.helpers import MemorySink
from tests.integration.test_cli import cli
from tests.lab import lab as L
from tests.lab.calls import call_in

pytestmark = pytest.mark.lab

MANAGER = portal_user(7, "101", "Иван Петров")  # the portal's user behind extension 101
CLIENT, CLIENT_TYPED = "79161110001", "+7 (916) 111-00-01"  # a contact in the CRM, manager = user 7
BUDGET_MS = 300


def config(lab: L.Lab, state: Path, bitrix_url: str | None) -> Config:
    cfg = lab_config(lab, state)
    sinks = dataclasses.replace(cfg.sinks, console=dataclasses.replace(cfg.sinks.console, enabled=False))
    if bitrix_url is not None:
        bx = Bitrix24Settings(enabled=True, webhook_url=bitrix_url, sync_interval=0, rate=50, burst=50)
        sinks = dataclasses.replace(sinks, bitrix24=bx)
    employees = {"101": EmployeeConfig(name="Иван Петров", bitrix_user_id="7"), "102": EmployeeConfig()}
    agi = dataclasses.replace(cfg.agi, budget_ms=BUDGET_MS, route_timeout=3)
    return dataclasses.replace(cfg, sinks=sinks, directory=DirectoryConfig(employees), agi=agi)


@contextlib.asynccontextmanager
async def daemon(lab: L.Lab, cfg: Config) -> AsyncIterator[tuple[App, MemorySink]]:
    sink = MemorySink()
    app = App(cfg, extra_sinks=[sink])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await asyncio.wait_for(app.ami.connected.wait(), 20)
    assert app.components.agi is not None
    await asyncio.wait_for(app.components.agi.listening.wait(), 5)
    try:
        yield app, sink
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await hangup_all(lab)


@contextlib.asynccontextmanager
async def ami(ip: str, user: str, secret: str) -> AsyncIterator[tuple[AmiConnection, list[AmiMessage]]]:
    events: list[AmiMessage] = []
    conn = await AmiConnection.open(AmiSettings(host=ip, username=user, secret=secret), events.append)
    try:
        yield conn, events
    finally:
        await conn.close()


async def trunk_vars(pbx: AmiConnection, *names: str) -> dict[str, str]:
    """Channel variables of the inbound (trunk) channel of the call now up on the PBX."""
    listing = await pbx.action("CoreShowChannels")
    chans = [e["Channel"] for e in listing.events if e.get("Channel", "").startswith("PJSIP/novofon-")]
    assert len(chans) == 1, chans
    out = {}
    for name in names:
        got = await pbx.action("Getvar", {"Channel": chans[0], "Variable": name})
        out[name] = got.response.get("Value", "")
    return out


def handset_names(events: list[AmiMessage], ext: str) -> list[str]:
    """Caller names with which the phones instance saw a call for ``ext`` arrive (its display)."""
    return [
        e.get("CallerIDName", "") for e in events if e.get("Event") == "Newchannel" and e.get("Exten") == ext
    ]


async def test_a_known_client_rings_their_manager_with_their_name_on_the_handset(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    bx = FakeBitrix(users=[MANAGER])
    await bx.start()
    bx.add_crm("CONTACT", 5, [CLIENT_TYPED], "7", NAME="Анна", LAST_NAME="Смирнова")
    try:
        async with (
            ami(L.PHONES_IP, "lab", "lab") as (_, handset_events),
            ami(L.PBX_IP, L.AMI_USER, L.AMI_SECRET) as (pbx, _),
            daemon(lab, config(lab, tmp_path, bx.webhook_url)) as (_, sink),
        ):
            await call_in(provider, L.DID_ROUTED, talk=4, caller="89161110001", name="Клиент")
            await sink.wait_events("NOTIFY_ANSWER")
            assert await trunk_vars(pbx, "NOVOFON_ROUTE", "NOVOFON_CALLER_NAME", "CALLERID(name)") == {
                "NOVOFON_ROUTE": "101",
                "NOVOFON_CALLER_NAME": "Анна Смирнова",
                "CALLERID(name)": "Анна Смирнова",
            }
            records = await sink.wait_events("NOTIFY_END")
            assert handset_names(handset_events, "101") == ["Анна Смирнова"]
            assert handset_names(handset_events, "103") == []  # the usual destination never rang
    finally:
        await bx.stop()
    answer = next(r for r in records if r.fields["event"] == "NOTIFY_ANSWER")
    assert answer.fields["internal"] == "101"
    for r in records[1:]:  # the START is made before the dialplan asks
        assert (r.meta["routed_to"], r.meta["route_source"], r.meta["routed_to_name"]) == (
            "101",
            "bitrix24",
            "Иван Петров",
        )
        assert r.meta["caller_name"] == "Анна Смирнова"
    end = next(r.fields for r in records if r.fields["event"] == "NOTIFY_END")
    assert (end["disposition"], end["internal"], end["caller_id"]) == ("answered", "101", CLIENT)
    assert [m for m, _ in bx.log if m.startswith("crm.")] == ["crm.duplicate.findbycomm", "crm.contact.get"]


async def test_with_the_crm_hanging_the_call_goes_its_usual_way_within_the_budget(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    bx = FakeBitrix(users=[MANAGER])
    await bx.start()
    bx.latency = 3600  # the portal accepts the request and never answers
    try:
        async with (
            ami(L.PBX_IP, L.AMI_USER, L.AMI_SECRET) as (pbx, _),
            daemon(lab, config(lab, tmp_path, bx.webhook_url)) as (app, sink),
        ):
            await call_in(provider, L.DID_ROUTED, caller="89162220002")
            await sink.wait_for(
                lambda rs: any(
                    r.fields["event"] == "NOTIFY_INTERNAL" and r.fields["internal"] == "103" for r in rs
                )
            )
            assert await trunk_vars(pbx, "AGISTATUS", "NOVOFON_ROUTE") == {
                "AGISTATUS": "SUCCESS",
                "NOVOFON_ROUTE": "",
            }
            server = app.components.agi
            assert server is not None
            st = server.status()
            assert (st["requests"], st["fallbacks"], st["routed"]) == (1, 1, 0)
            # The answer took the budget (the CRM was given its chance) and not much more.
            assert BUDGET_MS <= server.latencies[0] <= BUDGET_MS + 100, server.latencies
            records = await sink.wait_events("NOTIFY_END", timeout=30)
    finally:
        await bx.stop()
    end = next(r.fields for r in records if r.fields["event"] == "NOTIFY_END")
    assert (end["disposition"], end["internal"]) == ("no answer", "103")
    assert all("routed_to" not in r.meta for r in records)


async def test_without_any_crm_a_caller_goes_back_to_who_talked_to_them(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    async with (
        ami(L.PHONES_IP, "lab", "lab") as (_, handset_events),
        daemon(lab, config(lab, tmp_path, None)) as (_, sink),
    ):
        # Last time the client called the DID that rings 101, and 101 talked to them.
        await call_in(provider, L.DID_101, talk=1, caller="89163330003", name="Пётр")
        await sink.wait_events("NOTIFY_END")
        for _ in range(150):  # the first call is fully gone before the second comes
            if "0 active channels" in await arx(lab, L.PBX, "core show channels count"):
                break
            await asyncio.sleep(0.1)
        sink.records.clear()
        handset_events.clear()
        # Now they call the routed DID, with no name from the network this time.
        await call_in(provider, L.DID_ROUTED, talk=1, caller="89163330003", name="")
        records = await sink.wait_events("NOTIFY_ANSWER", "NOTIFY_END")
        assert handset_names(handset_events, "101") == ["Пётр"]
    assert {r.fields["internal"] for r in records if r.fields["event"] == "NOTIFY_ANSWER"} == {"101"}
    routed = [r for r in records if r.fields["event"] != "NOTIFY_START"]
    assert routed and all((r.meta["routed_to"], r.meta["route_source"]) == ("101", "history") for r in routed)


async def test_with_nobody_listening_for_agi_the_call_goes_its_usual_way(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    cfg = config(lab, tmp_path, None)
    cfg = dataclasses.replace(cfg, agi=dataclasses.replace(cfg.agi, enabled=False))
    sink = MemorySink()
    app = App(cfg, extra_sinks=[sink])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        await asyncio.wait_for(app.ami.connected.wait(), 20)
        async with ami(L.PBX_IP, L.AMI_USER, L.AMI_SECRET) as (pbx, _):
            await call_in(provider, L.DID_ROUTED, caller="89164440004")
            await sink.wait_for(
                lambda rs: any(
                    r.fields["event"] == "NOTIFY_INTERNAL" and r.fields["internal"] == "103" for r in rs
                )
            )
            assert (await trunk_vars(pbx, "AGISTATUS"))["AGISTATUS"] == "FAILURE"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await hangup_all(lab)


async def test_check_sees_the_agi_port_and_the_modules_and_a_pbx_missing_one_keeps_its_calls(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    code, out, err = await cli(lab, tmp_path, "check")
    # Warnings only (exit 1: the lab's HTTP port 0, no /etc/asterisk here); no error.
    assert code in (0, 1) and "[ОШИБКА]" not in out + err, out + err
    assert f"[ок] AGI: порт 127.0.0.1:{L.AGI_PORT} свободен" in out
    assert "[ок] AGI: модули Asterisk: загружены: res_agi, func_module" in out
    # Without IFMODULE() the guard in [novofon-route] cannot tell whether AGI() exists (without
    # res_agi, AGI() would hang up every inbound call): routing is skipped, the call goes on.
    assert "unloaded" in (await arx(lab, L.PBX, "module unload func_module.so")).lower()
    try:
        code, out, err = await cli(lab, tmp_path, "check")
        assert code == 1 and "[ВНИМАНИЕ] AGI: модули Asterisk: не загружено: func_module.so" in err, out + err
        async with daemon(lab, config(lab, tmp_path, None)) as (app, sink):
            await call_in(provider, L.DID_ROUTED, caller="89165550005")
            await sink.wait_for(
                lambda rs: any(
                    r.fields["event"] == "NOTIFY_INTERNAL" and r.fields["internal"] == "103" for r in rs
                )
            )
            assert app.components.agi is not None and app.components.agi.requests == 0
    finally:
        assert "loaded" in (await arx(lab, L.PBX, "module load func_module.so")).lower()
