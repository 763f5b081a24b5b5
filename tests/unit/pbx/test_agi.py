"""The FastAGI server over loopback, spoken to as res_agi does: the contract's variables, values
made safe, and every kind of bad request or peer closed without holding anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.calls.records import Event, make
from bridge.config import AgiConfig
from bridge.directory import Directory, Employee
from bridge.outbox.store import OutboxStore
from bridge.pbx import agi
from bridge.pbx.agi import AgiServer, agi_value, answer_commands
from bridge.pbx.route_history import RouteHistory
from bridge.pbx.routing import CrmMatch, Route, Router
from tests.fakes.agi import agi_call, request_headers
from tests.helpers import until

USAGE_ERROR = (
    "520-Invalid command syntax.  Proper usage follows:\nUsage: SET VARIABLE\n520 End of proper usage."
)


class StaticCrm:
    """A CRM port that knows one client (the Bitrix24 adapter has its own tests)."""

    name = "bitrix24"

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def lookup(self, number: str) -> CrmMatch | None:
        self.asked.append(number)
        return CrmMatch("7", 'Анна "Аня"\nСмирнова', "CONTACT 5") if number == "79161110001" else None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[AgiServer]:
    store = OutboxStore(tmp_path / "o.sqlite3")
    directory = Directory(store.db)
    directory.upsert(Employee("101", "Иван Петров", bitrix_user_id="7"))
    router = Router(AgiConfig(), directory, RouteHistory(store.db), StaticCrm())
    srv = AgiServer("127.0.0.1", 0, router, route_timeout=12, country_code="7")
    task = asyncio.create_task(srv.run())
    await asyncio.wait_for(srv.listening.wait(), 5)
    try:
        yield srv
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()


async def test_a_known_client_gets_the_contract_variables(server: AgiServer) -> None:
    got = await agi_call(server.port, request_headers(callerid="89161110001"))
    assert got.commands == [
        'SET VARIABLE NOVOFON_ROUTE "101"',
        'SET VARIABLE NOVOFON_CALLER_NAME "Анна АняСмирнова"',
        'SET VARIABLE CALLERID(name) "Анна АняСмирнова"',
        'SET VARIABLE NOVOFON_ROUTE_TIMEOUT "12"',
    ]
    assert server.router.stats.routed == 1 and server.requests == 1


async def test_an_unknown_caller_gets_an_explicitly_empty_route_and_no_callerid_change(
    server: AgiServer,
) -> None:
    got = await agi_call(server.port, request_headers(callerid="79169990009"))
    assert got.commands == ['SET VARIABLE NOVOFON_ROUTE ""', 'SET VARIABLE NOVOFON_CALLER_NAME ""']


async def test_the_route_is_remembered_for_the_records_by_the_channel_uniqueid(server: AgiServer) -> None:
    await agi_call(server.port, request_headers(uniqueid="1712345678.42"))
    answer = make(
        Event.ANSWER,
        {
            "call_start": "",
            "pbx_call_id": "in_1712345678.42",
            "caller_id": "",
            "destination": "",
            "internal": "",
        },
    )
    meta = server.router.meta_for(answer)
    assert (meta["routed_to"], meta["route_source"]) == ("101", "bitrix24")
    # A uniqueid that is not one is not used as a key.
    await agi_call(server.port, request_headers(uniqueid="x' OR 1=1; --"))
    assert server.router.routed_calls == 1


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", "not AGI at all"),
        (b"agi_network: yes\nagi_network_script: route\n", "closed before the empty line"),
        (b"\n", "no variables"),
        (b"agi_callerid: " + b"7" * 10_000 + b"\n\n", "a line over the limit"),
        (b"".join(b"agi_x%d: y\n" % i for i in range(300)) + b"\n", "too many variables"),
        (b"agi_network_script: route\nagi_callerid: \xff\xfe\n\n", "undecodable bytes"),
    ],
)
async def test_a_bad_request_is_closed_at_once_and_the_server_keeps_serving(
    server: AgiServer, raw: bytes, why: str
) -> None:
    got = await agi_call(server.port, raw=raw, eof=why != "undecodable bytes")
    if why == "undecodable bytes":  # still a request: answered, with an empty route
        assert got.commands[0] == 'SET VARIABLE NOVOFON_ROUTE ""'
    else:
        assert got.commands == [], why
        assert server.bad_requests == 1
    assert got.seconds < 1
    assert (await agi_call(server.port)).variables["NOVOFON_ROUTE"] == "101"


async def test_a_silent_peer_is_dropped_after_the_header_timeout(
    server: AgiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agi, "HEADER_TIMEOUT", 0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
    finally:
        writer.close()
    assert server.bad_requests == 1


async def test_an_unknown_script_answers_an_empty_route(server: AgiServer) -> None:
    got = await agi_call(server.port, request_headers(script="rout"))
    assert got.variables == {"NOVOFON_ROUTE": "", "NOVOFON_CALLER_NAME": ""}
    assert server.bad_requests == 1


async def test_a_hangup_stops_the_answer(server: AgiServer) -> None:
    got = await agi_call(server.port, first_reply="HANGUP")
    assert len(got.commands) == 1
    assert server.hangups == 1


async def test_trying_and_multiline_usage_errors_are_read_to_their_end(server: AgiServer) -> None:
    got = await agi_call(server.port, first_reply="100 result=0 Trying...\n200 result=1")
    assert len(got.commands) == 4
    got = await agi_call(server.port, first_reply=USAGE_ERROR)
    assert len(got.commands) == 4  # the usage error did not desynchronise the conversation


async def test_an_asterisk_that_stops_answering_is_left_after_the_reply_timeout(
    server: AgiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agi, "REPLY_TIMEOUT", 0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(("".join(f"{k}: {v}\n" for k, v in request_headers().items()) + "\n").encode())
        first = await asyncio.wait_for(reader.readline(), 2)
        assert first.startswith(b"SET VARIABLE NOVOFON_ROUTE")
        assert await asyncio.wait_for(reader.read(), 2) == b""  # no reply from us: closed
    finally:
        writer.close()


async def test_a_crash_while_answering_closes_the_connection_and_is_counted(
    server: AgiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(route: Route, timeout: int) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(agi, "answer_commands", broken)
    got = await agi_call(server.port)
    assert got.commands == [] and server.failures == 1


async def test_the_probe_says_who_holds_the_port(server: AgiServer) -> None:
    got = await agi_call(server.port, request_headers(script="ping"))
    assert got.commands == [agi.PROBE_REPLY]
    assert server.requests == 0


async def test_status_counts_and_latency(server: AgiServer) -> None:
    for callerid in ("79161110001", "79161110001", "79169990009"):
        await agi_call(server.port, request_headers(callerid=callerid))
    await until(lambda: len(server.latencies) == 3)
    st = server.status()
    assert (st["requests"], st["routed"], st["cache_hits"], st["from_crm"]) == (3, 2, 1, 2)
    assert st["listening"] and st["latency_ms"]["p99"] is not None


def test_values_sent_to_asterisk_are_safe() -> None:
    assert agi_value('a"b\\c\nd\re\x00f') == '"abcdef"'
    assert agi_value("я" * 200) == '"' + "я" * agi.MAX_VALUE + '"'
    hostile = Route('101" ; EXEC System rm', "x\nHANGUP", "bitrix24")
    cmds = answer_commands(hostile, 15)
    assert cmds == [
        'SET VARIABLE NOVOFON_ROUTE ""',
        'SET VARIABLE NOVOFON_CALLER_NAME "xHANGUP"',
        'SET VARIABLE CALLERID(name) "xHANGUP"',
    ]
    assert all("\n" not in c for c in cmds)
