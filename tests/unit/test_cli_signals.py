"""Signals from people and from logrotate: Ctrl-C never prints a traceback; SIGHUP never kills the
daemon and makes it open records.jsonl again."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def silent_ami() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP port that accepts connections and never says a word (no AMI banner)."""
    clients: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], clients
    for w in clients:
        w.close()
    server.close()
    await server.wait_closed()


def write_config(tmp_path: Path, ami_port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"asterisk:\n  ami:\n    port: {ami_port}\n    secret: x\n    connect_timeout: 30\n"
        f"    reconnect_max_delay: 1\nstorage:\n  dir: {tmp_path}\nhttp:\n  port: 0\n"
        "sinks:\n  console:\n    enabled: false\n"
        "agi:\n  port: 0\n"  # any free port: never another daemon's 4573 on a shared machine
    )
    return path


async def start(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "NOVOFON_BRIDGE_ENV": os.devnull, "PYTHONUNBUFFERED": "1"}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_ctrl_c_while_a_command_waits_for_asterisk_prints_no_traceback(
    tmp_path: Path, silent_ami: tuple[int, list[asyncio.StreamWriter]]
) -> None:
    port, clients = silent_ami
    proc = await start("call", "79991234567", "-c", str(write_config(tmp_path, port)))
    await until(lambda: clients, timeout=20)  # it is waiting for the AMI banner now
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and "прервано (Ctrl-C)" in err.decode()
    assert "never retrieved" not in err.decode()


async def test_sighup_reopens_records_jsonl_and_never_stops_the_daemon(
    tmp_path: Path, silent_ami: tuple[int, list[asyncio.StreamWriter]]
) -> None:
    port, _ = silent_ami
    records = tmp_path / "records.jsonl"
    proc = await start("run", "-c", str(write_config(tmp_path, port)))
    try:
        await until(records.exists, timeout=20)
        for n in range(1, 4):
            records.rename(tmp_path / f"records.jsonl.{n}")  # logrotate, then its postrotate:
            proc.send_signal(signal.SIGHUP)
            await until(records.exists, timeout=10)  # opened again, at the same path
            assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C on the daemon: a clean stop
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode() and "never retrieved" not in err.decode(), err.decode()
    assert err.decode().count("sink.reopened") == 3
