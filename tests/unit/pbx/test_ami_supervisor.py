"""Reconnects, login errors and the Ping watchdog, against a small AMI server on loopback.

(The same behaviours run against the real Asterisk in tests/integration/test_resilience.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import pytest

from bridge.pbx.ami import AmiConnection, AmiLoginError, AmiSettings, AmiSupervisor, Backoff
from tests.helpers import until


class TinyAmi:
    """Speaks enough AMI for the client: banner, Login, Ping (unless told to go silent)."""

    def __init__(self, secret: str = "s3cret") -> None:
        self.secret = secret
        self.silent = False
        self.logins = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode()
                fields = dict(line.split(": ", 1) for line in block.strip().split("\r\n"))
                if self.silent:
                    continue
                aid = fields.get("ActionID", "")
                if fields["Action"] == "Login":
                    ok = fields.get("Secret") == self.secret
                    self.logins += ok
                    resp = (
                        "Success\r\nMessage: Authentication accepted"
                        if ok
                        else ("Error\r\nMessage: Authentication failed")
                    )
                elif fields["Action"] == "CoreShowChannels":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n".encode())
                    resp = None
                    writer.write(
                        f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete"
                        "\r\n\r\n".encode()
                    )
                else:
                    resp = "Success\r\nPing: Pong"
                if resp:
                    writer.write(f"Response: {resp}\r\nActionID: {aid}\r\n\r\n".encode())

    def kick_all(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()


@pytest.fixture
async def tiny() -> AsyncIterator[tuple[TinyAmi, int]]:
    ami = TinyAmi()
    server = await asyncio.start_server(ami.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield ami, port
    ami.kick_all()
    server.close()
    await server.wait_closed()


def settings(port: int, secret: str = "s3cret") -> AmiSettings:
    return AmiSettings(
        "127.0.0.1", port, "bridge", secret, connect_timeout=1, ping_interval=0.2, ping_timeout=0.3
    )


async def test_wrong_secret_is_a_clear_error_without_the_secret(tiny: tuple[TinyAmi, int]) -> None:
    _, port = tiny
    with pytest.raises(AmiLoginError) as err:
        await AmiConnection.open(settings(port, "wrong-one"))
    assert "refused user 'bridge'" in str(err.value)
    assert "wrong-one" not in str(err.value)


async def test_reconnects_after_the_server_drops_us_and_resyncs(tiny: tuple[TinyAmi, int]) -> None:
    ami, port = tiny
    resyncs: list[float | None] = []

    async def on_connected(conn: AmiConnection, lost_at: float | None) -> None:
        resyncs.append(lost_at)
        await conn.action("CoreShowChannels")

    sup = AmiSupervisor(settings(port), lambda m: None, on_connected, backoff=Backoff(0.05, 0.1))
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.connected.wait(), 5)
        ami.kick_all()
        await until(lambda: sup.connects >= 2, timeout=5, interval=0.02)
        await asyncio.wait_for(sup.connected.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert resyncs[0] is None and resyncs[1] is not None  # the second resync knows when we lost it
    assert ami.logins == 2


async def test_silent_server_is_detected_by_the_ping_watchdog(tiny: tuple[TinyAmi, int]) -> None:
    ami, port = tiny

    async def on_connected(conn: AmiConnection, lost_at: float | None) -> None:
        pass

    sup = AmiSupervisor(settings(port), lambda m: None, on_connected, backoff=Backoff(0.05, 0.1))
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.wait_for(sup.connected.wait(), 5)
        ami.silent = True
        await until(lambda: not sup.connected.is_set(), timeout=10, interval=0.02)
        assert "no Ping reply" in (sup.last_error or "")
        ami.silent = False
        await asyncio.wait_for(sup.connected.wait(), 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_unreachable_asterisk_is_reported_and_retried() -> None:
    sup = AmiSupervisor(
        settings(1), lambda m: None, lambda c, t: asyncio.sleep(0), backoff=Backoff(0.01, 0.02)
    )
    task = asyncio.create_task(sup.run())
    try:
        await until(lambda: sup.last_error is not None, timeout=5, interval=0.01)
        assert "cannot connect to AMI at 127.0.0.1:1" in sup.last_error
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_backoff_grows_caps_and_jitters() -> None:
    b = Backoff(min_delay=1, max_delay=8, factor=2, jitter=0.1)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        delays = {b.delay(attempt) for _ in range(50)}
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays)
        assert len(delays) > 1  # jittered: reconnecting clients do not stampede together
    with pytest.raises(ValueError):
        Backoff(min_delay=5, max_delay=1)


async def test_asterisk_that_accepts_but_never_speaks_is_an_ami_error_and_retried() -> None:
    accepted = 0

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()  # accept, say nothing (a hung Asterisk still completes TCP handshakes)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sup = AmiSupervisor(
        AmiSettings("127.0.0.1", port, "bridge", "x", connect_timeout=0.2),
        lambda m: None,
        lambda c, t: asyncio.sleep(0),
        backoff=Backoff(0.01, 0.02),
    )
    task = asyncio.create_task(sup.run())
    try:
        await until(lambda: sup.last_error is not None, timeout=5, interval=0.01)
        assert "sent no banner within 0.2 s" in sup.last_error
        await until(lambda: accepted >= 3, timeout=5, interval=0.01)  # it came back, again and again
        assert not task.done()  # still retrying, never crashed
        assert sup.connects == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.0.4.11", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("10.0.0.5", False), ("pbx.example.ru", False)],
)  # fmt: skip
def test_a_pbx_on_this_machine_is_retried_at_least_every_local_max_delay(host: str, local: bool) -> None:
    sup = AmiSupervisor(
        AmiSettings(host, local_max_delay=2.0),
        lambda m: None,
        lambda c, t: asyncio.sleep(0),
        backoff=Backoff(),
    )
    assert AmiSettings(host).is_local is local
    assert max(sup.backoff.delay(20) for _ in range(200)) <= (2.0 if local else 36.0)
    assert sup.backoff.max_delay > (1.5 if local else 29)


async def test_a_local_asterisk_down_for_seconds_is_back_within_the_local_cap() -> None:
    """After a 4 s outage the remote-PBX backoff (0.5 s doubling to 30 s) would wait 4 s more."""
    ami = TinyAmi()
    server = await asyncio.start_server(ami.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    sup = AmiSupervisor(
        dataclasses.replace(settings(port), local_max_delay=1.0),
        lambda m: None,
        lambda c, t: asyncio.sleep(0),
        backoff=Backoff(min_delay=0.5, max_delay=30),
    )
    task = asyncio.create_task(sup.run())
    try:
        await asyncio.sleep(4)  # the outage: refused all along (0.5 + 1 + 2 s of backoff so far)
        server = await asyncio.start_server(ami.handle, "127.0.0.1", port)
        back = asyncio.get_running_loop().time()
        await asyncio.wait_for(sup.connected.wait(), 5)
        assert asyncio.get_running_loop().time() - back <= 1.0 + 0.3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ami.kick_all()
        server.close()
        await server.wait_closed()
