"""Routing to the responsible manager: the CRM through its cache and budget, our own history, and
what the records say — against the fake Bitrix24 over loopback, through the real REST client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.config import AgiConfig
from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.crm_lookup import BitrixResponsible
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.pbx import routing
from bridge.pbx.route_history import RouteHistory
from bridge.pbx.routing import CrmMatch, Route, Router
from tests.fakes.bitrix import FakeBitrix
from tests.helpers import until

CLIENT = "79161110001"  # a contact in the CRM whose responsible user is 7 = extension 101
STRANGER = "79169990009"  # nobody knows this number


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    bx: FakeBitrix
    store: OutboxStore
    directory: Directory
    history: RouteHistory
    crm: BitrixResponsible
    http: Http

    def router(self, crm: bool = True, clock: Clock | None = None, **settings: float) -> Router:
        cfg = AgiConfig(**{"budget_ms": 300, **settings})  # type: ignore[arg-type]
        return Router(
            cfg, self.directory, self.history, self.crm if crm else None, clock=clock or time.monotonic
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    bx = FakeBitrix()
    await bx.start()
    bx.add_crm("CONTACT", 5, ["+7 (916) 111-00-01"], "7", NAME="Анна", LAST_NAME="Смирнова")
    store = OutboxStore(tmp_path / "o.sqlite3")
    directory = Directory(store.db)
    directory.upsert(Employee("101", "Иван Петров", bitrix_user_id="7"))
    directory.upsert(Employee("102", "Пётр Сидоров", bitrix_user_id="8"))
    http = Http(timeout=30)
    settings = Bitrix24Settings(enabled=True, webhook_url=bx.webhook_url, rate=1000, burst=1000)
    client = BitrixClient(settings, http, StateStore(store.db))
    try:
        yield Env(bx, store, directory, RouteHistory(store.db), BitrixResponsible(client, "7"), http)
    finally:
        await http.close()
        await bx.stop()
        store.close()


def crm_calls(bx: FakeBitrix) -> list[str]:
    """CRM requests the portal received (answered or still hanging)."""
    return [m for m in bx.http_requests if m.startswith("crm.")]


async def test_a_known_client_goes_to_the_crm_responsible_and_then_comes_from_the_cache(env: Env) -> None:
    router = env.router()
    assert await router.route(CLIENT) == Route("101", "Анна Смирнова", "bitrix24")
    assert crm_calls(env.bx) == ["crm.duplicate.findbycomm", "crm.contact.get"]
    assert await router.route(CLIENT) == Route("101", "Анна Смирнова", "bitrix24")
    assert crm_calls(env.bx) == ["crm.duplicate.findbycomm", "crm.contact.get"]  # no new request
    s = router.stats
    assert (s.requests, s.cache_hits, s.from_crm, s.fallbacks) == (2, 1, 2, 0)


async def test_an_unknown_number_is_cached_too_and_asks_nobody_when_warm(env: Env) -> None:
    router = env.router()
    assert await router.route(STRANGER) == Route()
    assert await router.route(STRANGER) == Route()
    assert crm_calls(env.bx) == ["crm.duplicate.findbycomm"]


async def test_a_hanging_crm_costs_the_call_at_most_the_budget_and_fills_the_cache_later(env: Env) -> None:
    env.bx.latency = 0.4  # the portal answers, but after the budget
    router = env.router(budget_ms=100)
    started = time.perf_counter()
    assert await router.route(CLIENT) == Route()  # no route rather than a held call
    assert time.perf_counter() - started < 0.1 + 0.05
    assert router.stats.fallbacks == 1
    await until(lambda: router.cached_numbers == 1, timeout=5, interval=0.02)  # filled behind
    started = time.perf_counter()
    assert await router.route(CLIENT) == Route("101", "Анна Смирнова", "bitrix24")
    assert time.perf_counter() - started < 0.05  # warm: no wait at all


async def test_what_the_request_already_took_comes_off_the_budget(env: Env) -> None:
    env.bx.latency = 3600
    router = env.router(budget_ms=300)
    started = time.perf_counter()
    assert await router.route(CLIENT, spent=0.25) == Route()
    assert time.perf_counter() - started < 0.05 + 0.04  # 300 ms budget, 250 ms of it gone already
    assert await router.route(CLIENT, spent=1.0) == Route()  # nothing left: no wait at all
    assert time.perf_counter() - started < 0.05 + 0.06
    await router.close()


async def test_a_crm_that_never_answers_still_leaves_our_history(env: Env) -> None:
    env.bx.latency = 3600
    env.history.talked(CLIENT, "102", "Анна")
    router = env.router(budget_ms=50)
    started = time.perf_counter()
    assert await router.route(CLIENT) == Route("102", "Анна", "history")
    assert time.perf_counter() - started < 0.05 + 0.05
    # A second call while the first lookup still hangs joins it rather than asking again.
    assert await router.route(CLIENT) == Route("102", "Анна", "history")
    assert crm_calls(env.bx) == ["crm.duplicate.findbycomm"]
    await router.close()


async def test_a_dead_crm_is_counted_not_cached_and_routing_goes_on_without_it(env: Env) -> None:
    await env.bx.stop()  # connection refused
    env.history.talked(CLIENT, "102")
    router = env.router()
    assert await router.route(CLIENT) == Route("102", "", "history")
    assert (router.stats.crm_errors, router.stats.fallbacks, router.cached_numbers) == (1, 1, 0)


async def test_a_crash_inside_a_lookup_is_an_empty_route(env: Env) -> None:
    class Broken:
        name = "broken"

        async def lookup(self, number: str) -> CrmMatch | None:
            raise RuntimeError("a bug in the CRM adapter")

    router = Router(AgiConfig(), env.directory, env.history, Broken())
    assert await router.route(CLIENT) == Route()
    assert router.stats.crm_errors == 1


async def test_a_crash_in_routing_itself_is_an_empty_route(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    router = env.router(crm=False)

    def broken(number: str, since: float) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(env.history, "last", broken)
    assert await router.route(CLIENT) == Route()
    assert router.stats.errors == 1


async def test_the_crm_owner_unknown_to_the_directory_falls_back_to_history_with_the_crm_name(
    env: Env,
) -> None:
    env.bx.add_crm("CONTACT", 6, ["89162220002"], "99", NAME="Ольга")  # user 99 has no extension
    env.history.talked("79162220002", "102", "Оля")
    router = env.router()
    assert await router.route("79162220002") == Route("102", "Ольга", "history")


async def test_an_employee_who_left_is_not_routed_to(env: Env) -> None:
    env.directory.upsert(Employee("101", "Иван Петров", bitrix_user_id="7", active=False))
    env.history.talked(STRANGER, "101")
    router = env.router()
    assert await router.route(CLIENT) == Route("", "Анна Смирнова", "")
    assert await router.route(STRANGER) == Route()


async def test_sticky_routing_works_without_any_crm_and_only_within_sticky_days(env: Env) -> None:
    env.history.talked(CLIENT, "102", "Анна", at=time.time() - 3 * 86400)
    assert await env.router(crm=False, sticky_days=7).route(CLIENT) == Route("102", "Анна", "history")
    assert await env.router(crm=False, sticky_days=2).route(CLIENT) == Route()
    assert await env.router(crm=False, sticky_days=0).route(CLIENT) == Route()
    assert env.bx.http_requests == []


async def test_hidden_and_alphanumeric_callers_get_an_empty_route_without_lookups(env: Env) -> None:
    router = env.router()
    for number in ("", "anonymous", "OZON.ru"):
        assert await router.route(number) == Route()
    assert env.bx.http_requests == []


async def test_a_stale_answer_is_served_at_once_and_refreshed_behind(env: Env) -> None:
    clock = Clock()
    router = env.router(clock=clock)
    assert (await router.route(CLIENT)).extension == "101"
    env.bx.crm["CONTACT"]["5"]["ASSIGNED_BY_ID"] = "8"  # the client got a new manager (102)
    clock.now += routing.CACHE_FRESH + 1
    assert (await router.route(CLIENT)).extension == "101"  # stale, but no wait
    await until(lambda: len(crm_calls(env.bx)) == 4, timeout=5, interval=0.02)
    await until(lambda: router.lookups_in_flight == 0, timeout=5, interval=0.02)
    assert (await router.route(CLIENT)).extension == "102"
    clock.now += routing.CACHE_MAX_AGE + 1  # too old to trust: cold again, the CRM is asked
    env.bx.crm["CONTACT"]["5"]["ASSIGNED_BY_ID"] = "7"
    assert (await router.route(CLIENT)).extension == "101"


async def test_too_many_lookups_in_flight_means_no_waiting_at_all(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing, "MAX_INFLIGHT", 2)
    env.bx.latency = 3600
    router = env.router(budget_ms=200)
    await asyncio.gather(router.route("79160000001"), router.route("79160000002"))
    started = time.perf_counter()
    assert await router.route("79160000003") == Route()
    assert time.perf_counter() - started < 0.05
    assert router.stats.fallbacks == 3
    await router.close()


def record(event: Event, call_id: str, **values: str) -> CallRecord:
    base = {
        "call_start": "2026-01-01 10:00:00",
        "pbx_call_id": call_id,
        "caller_id": CLIENT,
        "called_did": "74950000105",
        "internal": "101",
        "destination": CLIENT,
        "duration": "5",
        "disposition": "answered",
        "status_code": "16",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }
    return make(event, {**base, **values}, {"direction": "in", "caller_name": "Клиент"})


async def test_records_of_a_routed_call_say_who_and_why_until_shortly_after_the_end(env: Env) -> None:
    clock = Clock()
    router = env.router(clock=clock)
    await router.route(CLIENT, "in_1700000000.1")
    answer = record(Event.ANSWER, "in_1700000000.1")
    assert router.meta_for(answer) == {
        "routed_to": "101",
        "route_source": "bitrix24",
        "routed_to_name": "Иван Петров",
        "caller_name": "Анна Смирнова",
    }
    assert router.meta_for(record(Event.ANSWER, "in_other")) == {}
    router.on_records([record(Event.END, "in_1700000000.1")])
    clock.now += routing.ROUTED_KEEP_AFTER_END - 1
    assert router.meta_for(record(Event.RECORD, "in_1700000000.1"))["routed_to"] == "101"
    clock.now += 2
    router.on_records([])
    assert router.meta_for(record(Event.RECORD, "in_1700000000.1")) == {}
    assert router.routed_calls == 0


async def test_a_routed_call_whose_end_never_comes_is_forgotten_after_max_call_age(env: Env) -> None:
    clock = Clock()
    router = env.router(clock=clock)
    await router.route(CLIENT, "in_1")
    clock.now += router.max_call_age + 1
    await router.route(CLIENT, "in_2")  # remembering a new call sweeps the old
    assert router.routed_calls == 1


def test_history_learns_from_answered_ends_in_both_directions(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite3")
    try:
        h = RouteHistory(store.db)
        h.observe([record(Event.END, "in_1", caller_id="79161110001", internal="101")])
        h.observe([record(Event.OUT_END, "out_2", destination="79162220002", internal="102")])
        h.observe([record(Event.END, "in_3", caller_id="79163330003", disposition="no answer")])
        h.observe([record(Event.ANSWER, "in_4", caller_id="79164440004")])
        one, two = h.last("79161110001", 0), h.last("79162220002", 0)
        assert one is not None and (one.extension, one.name) == ("101", "Клиент")
        assert two is not None and (two.extension, two.name) == ("102", "")
        assert h.last("79163330003", 0) is None and h.last("79164440004", 0) is None
        # A later call with no name keeps the name; a number as the "name" is not a name.
        h.talked("79161110001", "103", "79161110001")
        one = h.last("79161110001", 0)
        assert one is not None and (one.extension, one.name) == ("103", "Клиент")
        assert h.purge(time.time() + 1) == 2 and len(h) == 0
    finally:
        store.close()
