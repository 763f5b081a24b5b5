"""Calls while the bridge is not listening, on the real lab: AMI cut for 20 s while calls come and
go (the PBX keeps working), and a kill -9 of the daemon with calls in progress."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from bridge.app import App
from bridge.calls.records import record_key
from bridge.outbox.store import OutboxStore, State
from bridge.pbx.ami import AmiConnection
from tests.conftest import arx, hangup_all, lab_config, lab_env
from tests.fakes.bitrix import FakeBitrix, portal_user
from tests.fakes.novofon_receiver import NovofonReceiver
from tests.fakes.telegram import FakeTelegram
from tests.helpers import MemorySink, until
from tests.integration.test_cli import cli
from tests.integration.test_delivery import (
    GROUP,
    SECRET,
    Fakes,
    config_with_fakes,
    fakes,
    kill9,
    running,
    settled,
    start_daemon,
    write_config,
)
from tests.lab import lab as L
from tests.lab.calls import call_in, call_out
from tests.lab.cut import LinkCut

pytestmark = pytest.mark.lab
__all__ = ["fakes"]  # the fixture, shared with test_delivery

OUTAGE = 20.0


def jsonl(state: Path) -> list[dict[str, object]]:
    path = state / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_call(records: list[dict[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in records:
        out.setdefault(r["pbx_call_id"], []).append(r["event"])
    return out


async def pbx_idle(lab: L.Lab) -> bool:
    return "0 active channels" in await arx(lab, L.PBX, "core show channels count")


async def test_calls_during_a_20_s_ami_cut_reach_every_sink_once_backfilled_from_the_cdr(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection, fakes: Fakes
) -> None:
    cut = LinkCut(L.PBX_IP, L.AMI_PORT)
    await cut.start()
    cfg = config_with_fakes(lab, tmp_path, fakes)
    ami = dataclasses.replace(cfg.asterisk.ami, host="127.0.0.1", port=cut.listen_port)
    cfg = dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, ami=ami))
    app = App(cfg)
    assert app.ami.backoff.max_delay * (1 + app.ami.backoff.jitter) <= 2.0  # a PBX on this machine
    try:
        async with running(app):
            # A call seen live, answered, that ends while the link is cut.
            await call_in(provider, L.DID_101, talk=8)
            await until(lambda: settled(app, 3), timeout=30)  # START, INTERNAL, ANSWER delivered
            live_id = app.store.list(State.DELIVERED)[0].record.pbx_call_id

            await cut.cut()
            cut_at = time.monotonic()
            await until(lambda: not app.ami.connected.is_set(), timeout=10)
            await call_in(provider, L.DID_101, talk=2)  # answered by 101
            await call_in(provider, L.DID_103)  # rings 4 s: no answer
            await asyncio.sleep(1)
            for _ in range(300):
                if await pbx_idle(lab) and time.monotonic() - cut_at >= OUTAGE:
                    break
                await asyncio.sleep(0.1)
            assert not app.ami.connected.is_set()
            await cut.restore()

            # 3 calls: the live one (5 records) and the two backfilled ones (5 + 3).
            await until(lambda: settled(app, 13), timeout=40)
            await until(lambda: not app.pipeline.catchup._passes, timeout=30)  # the later CDR passes
            assert settled(app, 13)
            status = app.status()["ami"]
    finally:
        await cut.cut()
        await hangup_all(lab)

    crm = by_call(fakes.crm.received)
    assert len(crm) == 3
    assert crm.pop(live_id) == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    assert sorted(crm.values()) == [
        ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_RECORD"],
        ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_END"],
    ]
    records = jsonl(tmp_path)
    assert Counter((r["pbx_call_id"], r["event"]) for r in records).most_common(1)[0][1] == 1
    ends = {r["pbx_call_id"]: r for r in records if r["event"] == "NOTIFY_END"}
    live_end = ends.pop(live_id)
    assert (live_end["disposition"], live_end["internal"], live_end["meta"]["reconstructed"]) == (
        "answered",
        "101",
        "1",
    )
    assert 6 <= int(live_end["duration"]) <= 10  # the CDR's end, not the moment the link dropped
    summary = sorted((e["called_did"], e["disposition"], e["internal"]) for e in ends.values())
    assert summary == [(L.DID_101, "answered", "101"), (L.DID_103, "no answer", "103")]
    backfilled = [r for r in records if r["pbx_call_id"] in ends]
    assert all(r["meta"]["reconstructed"] == "1" and r["meta"]["source"] == "cdr" for r in backfilled)
    # Telegram: one message per call in the group; Bitrix24: three calls, each finished once.
    assert len(fakes.tg.texts(GROUP)) == 3
    assert sorted(c.finish["STATUS_CODE"] for c in fakes.bx.calls.values() if c.finish) == [
        "200",
        "200",
        "304",
    ]
    assert status["last_outage"]["backfilled_calls"] == 2 and status["last_outage"]["seconds"] >= OUTAGE
    assert status["backfilled_calls_total"] == 2 and status["cdr_error"] is None

    # The CLI says the same from the daemon's database, and whether the CDR can be read.
    code, out, err = await cli(lab, tmp_path, "status")
    assert code == 0, out + err
    assert "Последний разрыв связи с AMI" in out and "восстановлено из CDR звонков: 2" in out
    code, out, err = await cli(lab, tmp_path, "check")
    # Warnings only here (the lab's HTTP port 0, no /etc/asterisk): exit 1, no error.
    assert code in (0, 1) and "[ОШИБКА]" not in out + err, out + err
    assert f"[ок] CDR: {lab.cdr_csv} читается" in out, out + err
    env = {**lab_env(lab, tmp_path), "ASTERISK_CDR_CSV": str(tmp_path / "nowhere.csv")}
    code, out, err = await cli(lab, tmp_path, "check", env=env)
    assert code == 1 and "[ВНИМАНИЕ] CDR: не читается" in err and "asterisk.cdr.csv_path" in err, out + err


# -- kill -9 with four calls in progress ------------------------------------------------------------


class KeyedReceiver(NovofonReceiver):
    """The CRM, also keeping every request it got with its Idempotency-Key (duplicates included)."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.raw: list[tuple[str, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        data = {k: str(v) for k, v in (await request.post()).items()}
        self.raw.append((request.headers.get("Idempotency-Key", ""), data))
        return await super().handle(request)


@pytest.fixture
async def keyed_fakes() -> AsyncIterator[Fakes]:
    users = [portal_user(1, "", "Администратор Портала")] + [
        portal_user(uid, ext, name)
        for ext, uid, name in (("101", 11, "Иван И"), ("102", 12, "Пётр П"), ("104", 14, "Занятой З"))
    ]  # as test_delivery's fakes: the strict fake refuses a USER_ID the portal does not have
    f = Fakes(FakeTelegram(), FakeBitrix(users=users), KeyedReceiver(SECRET))
    for server in (f.tg, f.bx, f.crm):
        await server.start()
    yield f
    for server in (f.tg, f.bx, f.crm):
        await server.stop()


async def provider_channel(provider: AmiConnection, uniqueid: str) -> str:
    result = await provider.action("CoreShowChannels")
    names = [e["Channel"] for e in result.events if e.get("Uniqueid") == uniqueid]
    assert names, f"no provider channel {uniqueid}"
    return names[0]


async def test_kill9_with_four_calls_in_progress_nothing_twice_and_one_end_each(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection, phones: AmiConnection, keyed_fakes: Fakes
) -> None:
    f = keyed_fakes
    config = write_config(lab, tmp_path, f)
    data = yaml.safe_load(config.read_text())
    data["asterisk"]["cdr"] = {"csv_path": str(lab.cdr_csv)}
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    daemon = await start_daemon(config)
    try:
        talking = await call_in(
            provider, L.DID_101, talk=600
        )  # 101 talks; the caller hangs up while we are down
        await call_in(provider, L.DID_LONG)  # 103 rings for a minute
        await call_out(phones, "102", L.NUM_ANSWER, talk=600)  # 102 talks to a client
        await call_in(provider, L.DID_GROUP, talk=600)  # 101 and 102 ring, 101 answers
        # START/INTERNAL/ANSWER of every call delivered to all four sinks: 3 + 2 + 2 + 4 records.
        await until(lambda: settled(store, 11), timeout=40)
        first_keys = {key for key, _ in f.crm.raw}  # type: ignore[attr-defined]
        kill9(daemon)
        await daemon.wait()
        await asyncio.sleep(3)  # the calls go on while nobody listens; then the first caller hangs up
        await provider.action("Hangup", {"Channel": await provider_channel(provider, talking), "Cause": "16"})
        await until(lambda: "74950000101" not in lab.rx(L.PBX, "core show channels concise"), timeout=15)
        daemon = await start_daemon(config)
        await asyncio.sleep(2)  # the three calls go on under the new daemon for a while
        await hangup_all(lab)
        # + END/RECORD, END, OUT_END/RECORD, END/RECORD
        await until(lambda: settled(store, 18), timeout=40)
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 30)
        store.close()
        await hangup_all(lab)

    raw: list[tuple[str, dict[str, str]]] = f.crm.raw  # type: ignore[attr-defined]
    assert len(raw) == 18 == len({key for key, _ in raw})  # nothing was sent twice
    assert first_keys <= {key for key, _ in raw}
    for key, data in raw:  # keys derived from the call and the event: the same after any restart
        assert key == f"nb-{record_key(data)}-crm"
    calls = by_call([d for _, d in raw])
    dids = {}
    for _, d in raw:
        if "called_did" in d:
            dids.setdefault(d["pbx_call_id"], set()).add(d["called_did"])
    assert sorted(dids.values(), key=sorted) == [{L.DID_GROUP}, {L.DID_101}, {L.DID_LONG}]
    outbound = [c for c in calls if c.startswith("out_")]
    assert len(outbound) == 1 and len(calls) == 4
    ends = {d["pbx_call_id"]: d for _, d in raw if d["event"] in ("NOTIFY_END", "NOTIFY_OUT_END")}
    assert len(ends) == 4
    got = sorted(
        (e.get("called_did", "out"), e["disposition"] == "answered", e["internal"]) for e in ends.values()
    )
    assert got == [
        (L.DID_GROUP, True, "101"),
        (L.DID_101, True, "101"),
        (L.DID_LONG, False, "103"),
        ("out", True, "102"),
    ]
    ended_while_down = next(e for e in ends.values() if e.get("called_did") == L.DID_101)
    assert int(ended_while_down["duration"]) >= 2  # from the CDR: the talk went on while we were down
    lines = jsonl(tmp_path)
    assert len(lines) == 18 and len({(r["pbx_call_id"], r["event"], r.get("internal")) for r in lines}) == 18
    # Bitrix24: four calls, each registered once and finished once; Telegram: one message per call.
    assert len(f.bx.calls) == 4 and all(c.finish is not None for c in f.bx.calls.values())
    assert len(f.tg.texts(GROUP)) == 4


async def test_calls_while_the_daemon_is_stopped_are_backfilled_at_the_next_start(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    sink1, sink2 = MemorySink(), MemorySink()
    cfg = lab_config(lab, tmp_path)
    app = App(cfg, extra_sinks=[sink1])
    async with running(app):
        await call_in(provider, L.DID_101, talk=1)  # seen live
        await sink1.wait_events("NOTIFY_END", "NOTIFY_RECORD")
    # Stopped (an upgrade): two short calls, one answered, one missed.
    await call_in(provider, L.DID_101, talk=2)
    await call_in(provider, L.DID_104)  # busy
    await until(lambda: lab.cdr_csv.read_text().count("\n") >= 3, timeout=30)
    try:
        app2 = App(cfg, extra_sinks=[sink2])
        async with running(app2):
            records = await sink2.wait_for(lambda rs: sum(r.fields["event"] == "NOTIFY_END" for r in rs) == 2)
            await until(lambda: not app2.pipeline.catchup._passes, timeout=30)
            records = list(sink2.records)
    finally:
        await hangup_all(lab)
    assert sink1.records[0].pbx_call_id not in {r.pbx_call_id for r in records}  # never backfilled again
    calls = by_call([r.fields for r in records])
    assert sorted(calls.values()) == [
        ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER", "NOTIFY_END", "NOTIFY_RECORD"],
        ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_END"],
    ]
    ends = sorted(
        (r.fields["called_did"], r.fields["disposition"], r.fields["internal"])
        for r in records
        if r.event.name == "END"
    )
    assert ends == [(L.DID_101, "answered", "101"), (L.DID_104, "busy", "104")]
    assert all(r.reconstructed for r in records)
