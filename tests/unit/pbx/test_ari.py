"""The ARI client against a loopback fake ARI: error mapping, reconnect, resubscribe, status.

(The same client drives the real Asterisk in tests/integration/test_ari.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from bridge.backoff import Backoff
from bridge.pbx.ari import (
    AriAuthError,
    AriBadRequest,
    AriClient,
    AriConflict,
    AriDialFailed,
    AriNotFound,
    AriSettings,
    AriSupervisor,
    AriUnavailable,
    classify,
)
from tests.fakes.ari import PASSWORD, USER, FakeAri
from tests.helpers import until

APP = "novofon-bridge"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    ari = FakeAri()
    await ari.start()
    try:
        yield ari
    finally:
        await ari.stop()


def settings(fake: FakeAri, password: str = PASSWORD) -> AriSettings:
    return AriSettings(fake.base, USER, password, APP, connect_timeout=2, request_timeout=2, heartbeat=1)


@pytest.fixture
async def client(fake: FakeAri) -> AsyncIterator[AriClient]:
    c = AriClient(settings(fake))
    try:
        yield c
    finally:
        await c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, '{"message":"Authentication required"}', AriAuthError),
        (403, "", AriAuthError),
        (404, '{"message":"Channel not found"}', AriNotFound),
        (409, '{"message":"Channel not in Stasis application"}', AriConflict),
        (400, '{"message":"Endpoint must be specified"}', AriBadRequest),
        (422, '{"message":"Bridge type invalid"}', AriBadRequest),
        (500, '{"error":"Allocation failed"}', AriDialFailed),
        (500, '{"error":"Internal Server Error"}', AriUnavailable),
        (503, "not json at all", AriUnavailable),
    ],
)
def test_every_answer_maps_to_one_error(status: int, body: str, error: type[Exception]) -> None:
    e = classify(status, body, "POST /channels")
    assert type(e) is error
    assert e is not None and e.status == status
    assert classify(204, "", "DELETE /channels/x") is None


async def test_rest_errors_are_typed_and_keep_the_password_out(fake: FakeAri) -> None:
    bad = AriClient(settings(fake, password="wrong-password-123"))
    with pytest.raises(AriAuthError) as e:
        await bad.info()
    assert "check asterisk.ari.username/password" in str(e.value)
    assert "wrong-password-123" not in str(e.value) and "wrong-password-123" not in repr(bad.settings)
    await bad.close()

    good = AriClient(settings(fake))
    assert (await good.info())["system"]["version"] == "22.10.1"
    assert await good.hangup("no-such-channel") is False  # already gone: not an error
    fake.unreachable.add("PJSIP/999")
    with pytest.raises(AriDialFailed):
        await good.originate("PJSIP/999", app=APP, app_args=("employee",), channel_id="c1")
    await good.originate(
        "PJSIP/101", app=APP, app_args=("employee", "79001110001", "", "101"), channel_id="c1"
    )
    with pytest.raises(AriConflict):
        await good.originate("PJSIP/101", app=APP, app_args=(), channel_id="c1")
    assert fake.channels["c1"].params["appArgs"] == "employee,79001110001,,101"
    with pytest.raises(AriNotFound):
        await good.application(APP)  # nobody holds its WebSocket
    await good.close()

    down = AriClient(AriSettings(f"http://127.0.0.1:{free_port()}/ari", USER, PASSWORD, APP, 1, 1))
    with pytest.raises(AriUnavailable) as e2:
        await down.info()
    assert "no answer from" in str(e2.value)
    await down.close()


async def test_ids_never_escape_their_path_segment(fake: FakeAri, client: AriClient) -> None:
    assert await client.hangup("../bridges/x") is False
    assert fake.log[-1] == "DELETE /channels/../bridges/x"  # one segment, percent-encoded on the wire


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.connected = 0

    async def on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("type") == "Boom":
            raise RuntimeError("a bug in one handler")
        self.events.append(ev)

    async def on_connected(self) -> None:
        self.connected += 1


@contextlib.asynccontextmanager
async def supervised(sup: AriSupervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sup.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sup.stop()


async def test_events_in_order_reconnect_and_resubscribe(fake: FakeAri) -> None:
    rec = Recorder()
    sup = AriSupervisor(
        AriClient(settings(fake)),
        rec.on_event,
        rec.on_connected,
        ("StasisStart", "Dial"),
        Backoff(0.01, 0.05),
    )
    async with supervised(sup):
        await until(sup.connected.is_set, timeout=5)
        assert fake.connects[0] == {"app": APP, "subscribeAll": "true"}
        assert fake.filters[APP] == ["StasisStart", "Dial"]  # only what the application uses
        assert rec.connected == 1
        for n in range(3):
            await fake.emit(APP, {"type": "StasisStart", "n": n})
        await fake.emit(APP, {"type": "ChannelVarset"})  # filtered out by Asterisk
        await fake.emit(APP, {"type": "Boom"})  # a handler that raises does not drop the connection
        await fake.emit(APP, {"type": "Dial", "n": 3})
        await until(lambda: len(rec.events) == 4, timeout=5)
        assert [e["n"] for e in rec.events] == [0, 1, 2, 3]
        assert sup.connects == 1

        fake.filters.clear()
        await fake.drop(APP)  # Asterisk restarts
        await until(lambda: sup.connects == 2 and sup.connected.is_set(), timeout=5)
        assert len(fake.connects) == 2 and fake.filters[APP] == ["StasisStart", "Dial"]  # set again
        assert rec.connected == 2  # the application re-adopts its calls on every connect
        await fake.emit(APP, {"type": "Dial", "n": 4})
        await until(lambda: len(rec.events) == 5, timeout=5)
        st = sup.status()
        assert st["connected"] is True and st["app"] == APP and st["connects"] == 2
        assert st["last_error"] is None


async def test_a_half_open_connection_is_noticed_by_the_heartbeat(fake: FakeAri) -> None:
    fake.answer_pings = False  # the first connection goes silent: no pongs, no close
    rec = Recorder()
    sup = AriSupervisor(AriClient(settings(fake)), rec.on_event, rec.on_connected, None, Backoff(0.01, 0.05))
    async with supervised(sup):
        await until(sup.connected.is_set, timeout=5)
        fake.answer_pings = True  # the next one is healthy
        await until(lambda: sup.connects == 2 and sup.connected.is_set(), timeout=10)  # heartbeat 1 s
    assert len(fake.connects) == 2


async def test_refused_login_is_reported_and_retried_slowly(fake: FakeAri) -> None:
    rec = Recorder()
    backoff = Backoff(0.01, 0.3)
    sup = AriSupervisor(
        AriClient(settings(fake, "wrong-password-456")), rec.on_event, rec.on_connected, None, backoff
    )
    with structlog.testing.capture_logs() as logged:
        async with supervised(sup):
            await until(lambda: sup.last_error is not None, timeout=5)
    assert not sup.connected.is_set() and rec.connected == 0
    assert "HTTP 401" in str(sup.last_error) and "check asterisk.ari.username/password" in str(sup.last_error)
    warning = next(e for e in logged if e["event"] == "ari.unavailable")
    assert warning["retry_in"] >= backoff.max_delay * (1 - backoff.jitter)  # no hammering with a bad password
    assert "wrong-password-456" not in repr(logged) + repr(sup.status())


async def test_unreachable_ari_backs_off_then_connects(fake: FakeAri) -> None:
    port = free_port()
    s = AriSettings(f"http://127.0.0.1:{port}/ari", USER, PASSWORD, APP, 1, 1, heartbeat=1)
    rec = Recorder()
    sup = AriSupervisor(AriClient(s), rec.on_event, rec.on_connected, None, Backoff(0.01, 0.05))
    async with supervised(sup):
        await until(lambda: sup.last_error is not None and "cannot connect" in sup.last_error, timeout=5)
        assert not sup.connected.is_set()
        assert sup.status()["connected"] is False
