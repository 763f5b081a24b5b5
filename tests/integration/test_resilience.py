"""Faults on the real lab: Asterisk restarts mid-call, a half-open AMI connection, daemon restarts,
SIGTERM under systemd's notify protocol."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from bridge.app import App
from bridge.config import Config
from bridge.errors import RetryLater
from bridge.outbox.store import Delivery
from bridge.pbx.ami import AmiConnection
from tests.conftest import REPO, hangup_all, lab_config, lab_env
from tests.helpers import MemorySink, until
from tests.integration.test_calls import CALLER_NORM
from tests.lab import lab as L
from tests.lab.calls import call_in
from tests.transcripts import replay

pytestmark = pytest.mark.lab


def with_ami(cfg: Config, **changes: float) -> Config:
    ami = dataclasses.replace(cfg.asterisk.ami, **changes)
    return dataclasses.replace(cfg, asterisk=dataclasses.replace(cfg.asterisk, ami=ami))


async def test_asterisk_restart_mid_call_closes_the_call_reconstructed(
    daemon: tuple[App, MemorySink], provider: AmiConnection, lab: L.Lab
) -> None:
    app, sink = daemon
    await call_in(provider, L.DID_101, talk=600)
    await sink.wait_events("NOTIFY_ANSWER")
    try:
        # A crash: Asterisk dies with the call up and never sends its Hangup events.
        await asyncio.to_thread(lab.stop, L.PBX, True)
        await until(lambda: not app.ami.connected.is_set(), timeout=10)
        await asyncio.to_thread(lab.start, L.PBX)
        records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=60)
    finally:
        await asyncio.to_thread(lab.wait_registered, 60)
    assert app.ami.connects == 2
    assert [r.fields["event"] for r in records] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    assert [r.reconstructed for r in records] == [False, False, False, True, True]
    end = records[3].fields
    assert (end["disposition"], end["internal"], end["status_code"], end["is_recorded"]) == (
        "answered",
        "101",
        "0",
        "1",
    )
    assert int(end["duration"]) >= 0
    assert app.tracker.active_calls == 0


async def test_half_open_ami_connection_is_detected_and_recovered(lab: L.Lab, tmp_path: Path) -> None:
    cfg = with_ami(
        lab_config(lab, tmp_path),
        ping_interval=0.5,
        ping_timeout=1.0,
        connect_timeout=1.0,
        reconnect_max_delay=1.0,
    )
    app = App(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    pid = lab.procs["pbx"].pid
    try:
        await asyncio.wait_for(app.ami.connected.wait(), 20)
        os.kill(pid, signal.SIGSTOP)  # TCP stays open, nothing answers: a half-open connection
        try:
            await until(lambda: not app.ami.connected.is_set(), timeout=10)
            assert "no Ping reply" in (app.ami.last_error or "")
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(app.ami.connected.is_set, timeout=30)
        assert app.ami.connects == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_daemon_restart_mid_call_keeps_pbx_call_id_and_closes_the_call(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    """A stop and start while a call is up: the new daemon takes the call back from the snapshot the
    old one committed with its records; it re-emits nothing and closes the call once."""
    first, second = MemorySink(), MemorySink()
    cfg = lab_config(lab, tmp_path)
    app1 = App(cfg, extra_sinks=[first])
    stop1 = asyncio.Event()
    task1 = asyncio.create_task(app1.run(stop1))
    try:
        await asyncio.wait_for(app1.ami.connected.wait(), 20)
        await call_in(provider, L.DID_101, talk=4)
        await first.wait_events("NOTIFY_ANSWER")
    finally:
        stop1.set()
        await asyncio.wait_for(task1, 30)
    app2 = App(cfg, extra_sinks=[second])
    assert app2.tracker.active_calls == 1  # taken back before AMI is even connected
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(app2.run(stop2))
    try:
        records = await second.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=30)
    finally:
        stop2.set()
        await asyncio.wait_for(task2, 30)
        await hangup_all(lab)
    assert {r.pbx_call_id for r in records} == {first.records[0].pbx_call_id}
    assert [r.fields["event"] for r in records] == ["NOTIFY_END", "NOTIFY_RECORD"]
    assert [r.fields["event"] for r in first.records] == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER"]
    end = records[0].fields
    assert (end["disposition"], end["internal"], end["status_code"]) == ("answered", "101", "16")
    assert end["called_did"] == L.DID_101 and end["caller_id"] == CALLER_NORM
    assert not records[0].reconstructed  # the new daemon saw it end


async def test_run_under_systemd_notify_and_sigterm(
    lab: L.Lab, provider: AmiConnection, tmp_path: Path
) -> None:
    """`novofon-bridge run` as systemd runs it: READY, WATCHDOG, STOPPING; SIGTERM exits 0 and every
    record of the call is in the JSONL file."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    env = {**lab_env(lab, tmp_path), "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "-c",
        str(REPO / "config.yaml"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    loop = asyncio.get_running_loop()
    notes: list[str] = []

    async def note(wanted: str) -> None:
        while not any(n.startswith(wanted) for n in notes):
            notes.append((await asyncio.wait_for(loop.sock_recv(sock, 4096), 20)).decode())

    jsonl = tmp_path / "records.jsonl"

    def records() -> list[dict[str, str]]:
        return [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []

    try:
        await note("READY=1")
        await note("WATCHDOG=1")
        await note("STATUS=AMI connected")
        await call_in(provider, L.DID_101, talk=1)
        await until(lambda: any(r["event"] == "NOTIFY_RECORD" for r in records()), timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await note("STOPPING=1")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
        await hangup_all(lab)
    assert code == 0
    assert [r["event"] for r in records()] == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    stdout = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "входящий звонок +7 958 111-45-85 (Клиент) на +7 495 000-01-01" in stdout
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert {"bridge.starting", "ami.connected", "bridge.stopped"} <= {entry["event"] for entry in logs}
    assert L.AMI_SECRET not in stderr + stdout


async def test_records_survive_a_stop_with_a_sink_down_and_go_out_after_restart(
    lab: L.Lab, tmp_path: Path
) -> None:
    """A sink that is down when the daemon stops: its records wait in the outbox, committed, and are
    delivered in order once the daemon runs again."""

    class DownSink(MemorySink):
        async def send(self, delivery: Delivery) -> None:
            raise RetryLater("far side down")

    produced = replay("inbound_answered")
    down = DownSink("crm")
    app = App(lab_config(lab, tmp_path), extra_sinks=[down])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await asyncio.wait_for(app.ami.connected.wait(), 20)
    app.publish(produced)
    await until(lambda: app.store.counts().get("jsonl", {}).get("delivered") == len(produced))
    stop.set()
    await asyncio.wait_for(task, 30)
    assert down.records == []

    up = MemorySink("crm")
    app2 = App(lab_config(lab, tmp_path), extra_sinks=[up])
    app2.dispatcher.policy = dataclasses.replace(app2.dispatcher.policy, base=0.01)
    app2.store.retry_dead()  # nothing is dead; pending ones are retried on their own schedule
    app2.store.db.execute("UPDATE deliveries SET next_try_at=0 WHERE state='pending'")
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(app2.run(stop2))
    try:
        await up.wait_events(*[r.fields["event"] for r in produced], timeout=20)
    finally:
        stop2.set()
        await asyncio.wait_for(task2, 30)
    assert [r.fields for r in up.records] == [r.fields for r in produced]
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == [r.fields["event"] for r in produced]
