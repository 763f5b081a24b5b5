"""Bitrix24 against a fake as strict as the portal: each refusal the portal makes, and what our side
does so as never to meet it (the card in one batch, hidden callers, users, scopes)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.calls.records import CallRecord, Event, make
from bridge.cli.main import main
from bridge.directory import Directory, Employee
from bridge.errors import PermanentFailure, RetryLater, SettingsError
from bridge.http.client import Http
from bridge.integrations.bitrix24.application import Application
from bridge.integrations.bitrix24.batch import BatchResult, Ref, command
from bridge.integrations.bitrix24.checks import problems
from bridge.integrations.bitrix24.client import AppNotInstalled, BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings, BitrixApp
from bridge.integrations.bitrix24.sink import HIDDEN_CALLER, Bitrix24Sink
from bridge.integrations.bitrix24.state import seed_call
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.sink import Sink
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore, State
from tests.fakes.bitrix import CLIENT_ID, CLIENT_SECRET, ExternalCall, FakeBitrix, portal_user
from tests.fakes.bitrix_batch import php_parse
from tests.helpers import bitrix_sink, delivery, until
from tests.transcripts import replay
from tests.unit.integrations.conftest import settled

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5)
USERS = [portal_user(1, "", "Администратор Портала"), portal_user(11, "101", "Иван Петров")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutboxStore]:
    s = OutboxStore(tmp_path / "outbox.sqlite3")
    yield s
    s.close()


@pytest.fixture
def directory(store: OutboxStore) -> Directory:
    d = Directory(store.db)
    d.upsert(Employee("101", "Иван", bitrix_user_id="11"))
    return d


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    h = Http(timeout=5)
    yield h
    await h.close()


@pytest.fixture
async def bx() -> AsyncIterator[FakeBitrix]:
    fake = FakeBitrix(users=list(USERS))
    await fake.start()
    yield fake
    await fake.stop()


def webhook(bx: FakeBitrix, **kw: object) -> Bitrix24Settings:
    base = Bitrix24Settings(enabled=True, webhook_url=bx.webhook_url, rate=100, burst=100)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def application(bx: FakeBitrix, **kw: object) -> Bitrix24Settings:
    app = BitrixApp(bx.url, CLIENT_ID, CLIENT_SECRET, oauth_url=f"{bx.url}/oauth/token/")
    base = Bitrix24Settings(enabled=True, app=app, rate=100, burst=100)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


async def deliver(store: OutboxStore, sink: Sink, records: list[CallRecord]) -> None:
    """Commit ``records`` and run the dispatcher until every delivery is settled."""
    d = Dispatcher(store, [sink], FAST)
    store.add(records, d.sink_names)
    task = asyncio.create_task(d.run())
    try:
        await until(lambda: settled(store), interval=0.02)
    finally:
        await d.stop(1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def changed(records: list[CallRecord], **fields: str) -> list[CallRecord]:
    """The same call with some fields changed where the record has them."""
    return [
        CallRecord({**r.fields, **{k: v for k, v in fields.items() if k in r.fields}}, r.meta)
        for r in records
    ]


# -- the card: register and show in one request --------------------------------------------------


async def test_the_first_ring_registers_and_shows_the_card_in_one_request(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    records = replay("inbound_ring_group")  # START, INTERNAL 101, INTERNAL 102, ANSWER, END, RECORD
    sink = bitrix_sink(webhook(bx), http, store, directory)
    await deliver(store, sink, records[:2])
    assert bx.http_requests == ["batch"]  # one round trip after the first ring
    (call,) = bx.calls.values()
    assert call.shown == {"11"} and call.params["SHOW"] == "0"  # shown by the batch's show command
    assert [m for m, _ in bx.log] == ["telephony.externalcall.register", "telephony.externalcall.show"]
    await deliver(store, sink, records[2:])
    assert [m for m, _ in bx.log].count("telephony.externalcall.register") == 1
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200"
    assert not store.list(State.DEAD)


async def test_a_phone_that_picks_up_a_call_gets_the_card_and_the_ringing_phone_loses_it(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    bx.users.append(portal_user(13, "103", "Пётр Сидоров"))
    directory.upsert(Employee("103", "Пётр", bitrix_user_id="13"))
    records = replay("inbound_pickup_directed")  # START, INTERNAL 103, ANSWER 101 (picked up), END
    assert [(r.event.value, r.fields.get("internal")) for r in records[1:3]] == [
        ("NOTIFY_INTERNAL", "103"),
        ("NOTIFY_ANSWER", "101"),
    ]
    await deliver(store, bitrix_sink(webhook(bx), http, store, directory), records)
    (call,) = bx.calls.values()
    assert call.shown - call.hidden == {"11"}  # 101 (user 11) answered: it has the card; 103's is hidden
    shows = [p["USER_ID"] for m, p in bx.log if m == "telephony.externalcall.show"]
    assert shows == ["13", "11"]
    assert call.finish is not None and call.finish["USER_ID"] == "11"
    assert not store.list(State.DEAD)


async def test_a_refused_registration_in_the_batch_is_a_dead_letter_with_the_portal_reason(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    directory.upsert(Employee("101", "Иван", bitrix_user_id="99"))  # fired: no such user on the portal
    await deliver(store, bitrix_sink(webhook(bx), http, store, directory), replay("inbound_answered")[:2])
    (dead,) = store.list(State.DEAD)
    assert "User is not found or is not active" in (dead.last_error or "")
    assert bx.calls == {}  # halted: no card shown for a call that does not exist


def test_batch_commands_read_back_as_the_portal_parses_them() -> None:
    line = command("telephony.externalcall.hide", {"CALL_ID": Ref("reg", "CALL_ID"), "USER_ID": ["11", "12"]})
    method, _, query = line.partition("?")
    assert method == "telephony.externalcall.hide"
    assert php_parse(query) == {"CALL_ID": "$result[reg][CALL_ID]", "USER_ID": ["11", "12"]}
    assert php_parse(command("x", {"F": {"A B": "1&2"}}).partition("?")[2]) == {"F": {"A B": "1&2"}}
    # PHP writes an empty result or result_error as [] and a filled one as an object
    parsed = BatchResult.parse(
        {"result": [], "result_error": {"a": {"error": "E", "error_description": "d"}}}
    )
    assert parsed.results == {} and parsed.errors["a"].error == "E"


# -- what the portal refuses: hidden numbers, unknown users --------------------------------------


async def test_the_portal_refuses_a_hidden_number(http: Http, store: OutboxStore, bx: FakeBitrix) -> None:
    client = BitrixClient(webhook(bx), http, StateStore(store.db))
    with pytest.raises(PermanentFailure, match="Unsupported phone number format"):
        await client.call(
            "telephony.externalcall.register", {"USER_ID": "11", "PHONE_NUMBER": "anonymous", "TYPE": "2"}
        )


@pytest.mark.parametrize("caller", ["anonymous", "", "unknown", "Restricted"])
async def test_hidden_callers_are_registered_with_a_placeholder_and_no_lead(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix, caller: str
) -> None:
    records = changed(replay("inbound_answered"), caller_id=caller)
    await deliver(store, bitrix_sink(webhook(bx), http, store, directory), records)
    assert not store.list(State.DEAD)
    (call,) = bx.calls.values()
    assert (call.params["PHONE_NUMBER"], call.params["CRM_CREATE"]) == (HIDDEN_CALLER, "0")
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200"


async def test_the_portal_refuses_an_internal_number_no_user_has(
    http: Http, store: OutboxStore, bx: FakeBitrix
) -> None:
    client = BitrixClient(webhook(bx), http, StateStore(store.db))
    with pytest.raises(PermanentFailure, match="User is not found"):
        await client.call(
            "telephony.externalcall.register",
            {"USER_PHONE_INNER": "104", "PHONE_NUMBER": "79001110001", "TYPE": "2"},
        )


async def test_an_extension_without_a_bitrix_user_goes_to_the_default_user(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    sink = bitrix_sink(webhook(bx, default_user_id="1"), http, store, directory)
    await deliver(store, sink, replay("inbound_busy"))  # rang 104, who is nobody in Bitrix24
    (call,) = bx.calls.values()
    assert call.params["USER_ID"] == "1" and "USER_PHONE_INNER" not in call.params
    assert call.finish is not None and (call.finish["USER_ID"], call.finish["STATUS_CODE"]) == ("1", "304")


async def test_without_a_default_user_the_dead_letter_says_what_to_set(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    await deliver(store, bitrix_sink(webhook(bx), http, store, directory), replay("inbound_busy"))
    dead = store.list(State.DEAD)
    assert dead and all("default_user_id не задан" in (d.last_error or "") for d in dead)
    assert "у внутреннего номера 104 нет пользователя Bitrix24" in (dead[0].last_error or "")
    assert bx.log == []  # nothing the portal would refuse was sent


# -- outbound: 603-S, 1 s, LINE_NUMBER ----------------------------------------------------------


async def test_outbound_cancel_zero_seconds_and_the_line(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    directory.upsert(Employee("102", "Пётр", bitrix_user_id="11"))
    settings, state = webhook(bx), StateStore(store.db)
    client = BitrixClient(settings, http, state)
    sink = Bitrix24Sink(settings, client, state, directory, "Europe/Moscow", default_line="74950000100")
    await deliver(store, sink, changed(replay("outbound_busy"), disposition="cancel"))
    await deliver(store, sink, changed(replay("outbound_answered"), duration="0"))
    cancelled, answered = bx.calls.values()
    assert cancelled.finish is not None and cancelled.finish["STATUS_CODE"] == "603-S"
    assert answered.finish is not None and (answered.finish["STATUS_CODE"], answered.finish["DURATION"]) == (
        "200",
        "1",
    )
    assert cancelled.params["LINE_NUMBER"] == answered.params["LINE_NUMBER"] == "74950000100"


@pytest.mark.parametrize(("leg_end", "status"), [("rejected", "603"), ("hung_up", "603-S"), ("busy", "486")])
async def test_click_to_call_the_employee_declined_is_603_not_cancelled(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix, leg_end: str, status: str
) -> None:
    """The employee's own leg closes the card (the client was never dialled): "declined" when they
    rejected it, though the records' disposition says "cancel" as for a call they hung up."""
    settings, state = webhook(bx), StateStore(store.db)
    seed_call(state, "out_b24-1", "externalCall.1")
    bx.calls["externalCall.1"] = ExternalCall("externalCall.1", {"TYPE": "1"})
    disposition = "busy" if leg_end == "busy" else "cancel"
    end = make(
        Event.OUT_END,
        {
            "call_start": "2026-11-29 10:00:00",
            "pbx_call_id": "out_b24-1",
            "caller_id": "101",
            "destination": "79001110001",
            "internal": "101",
            "duration": "0",
            "disposition": disposition,
            "status_code": "21",
            "is_recorded": "0",
            "call_id_with_rec": "",
        },
        {"direction": "out", "callback_leg": "employee", "leg_end": leg_end},
    )
    sink = Bitrix24Sink(settings, BitrixClient(settings, http, state), state, directory, "Europe/Moscow")
    await deliver(store, sink, [end])
    finish = bx.calls["externalCall.1"].finish
    assert finish is not None and (finish["STATUS_CODE"], finish["USER_ID"]) == (status, "11")


# -- scopes ------------------------------------------------------------------------------------


async def test_user_get_without_the_user_scope_is_refused_and_check_says_so(
    http: Http, store: OutboxStore
) -> None:
    bx = FakeBitrix(users=list(USERS), webhook_scopes=frozenset({"telephony"}))
    await bx.start()
    try:
        client = BitrixClient(webhook(bx), http, StateStore(store.db))
        with pytest.raises(PermanentFailure, match="insufficient_scope"):
            await client.call("user.get", {})
        (problem,) = await problems(webhook(bx), client)
        assert "нет права «user»" in problem and "user.get" in problem
        bx.webhook_scopes = frozenset({"telephony", "user"})
        assert await problems(webhook(bx), client) == []
    finally:
        await bx.stop()


async def test_check_notes_a_missing_crm_scope_only_when_routing_asks(http: Http, store: OutboxStore) -> None:
    bx = FakeBitrix(users=list(USERS), webhook_scopes=frozenset({"telephony", "user"}))
    await bx.start()
    try:
        client = BitrixClient(webhook(bx), http, StateStore(store.db))
        with pytest.raises(PermanentFailure, match="insufficient_scope"):  # the fake is as strict
            await client.call("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["79161110001"]})
        notes: list[str] = []
        assert await problems(webhook(bx), client, notes) == []  # not an error: history still routes
        (note,) = notes
        assert "нет права «crm»" in note and "crm.duplicate.findbycomm" in note
        assert await problems(webhook(bx), client) == []  # routing off: nothing said
        bx.webhook_scopes = frozenset({"telephony", "user", "crm"})
        notes.clear()
        assert await problems(webhook(bx), client, notes) == [] and notes == []
    finally:
        await bx.stop()


# -- application mode: no token yet --------------------------------------------------------------


async def test_application_without_a_token_says_to_install_it(
    http: Http, store: OutboxStore, bx: FakeBitrix
) -> None:
    settings = application(bx, public_url="https://pbx.example.ru")
    settings.validate()  # no refresh_token in the config: valid, the token comes with ONAPPINSTALL
    client = BitrixClient(settings, http, StateStore(store.db))
    with pytest.raises(AppNotInstalled, match="не установлено") as e:
        await client.call("user.get", {})
    assert isinstance(e.value, RetryLater)  # records wait for the installation, they are not lost
    assert "https://pbx.example.ru/api/bitrix/webhook" in str(e.value)
    assert await problems(settings, client) == [
        "локальное приложение не установлено на портале: нет токена (ждём ONAPPINSTALL)"
    ]
    assert bx.http_requests == []


async def test_calls_wait_for_the_installation_then_go(
    store: OutboxStore, http: Http, directory: Directory, bx: FakeBitrix
) -> None:
    sink = bitrix_sink(application(bx), http, store, directory)
    out_start = replay("outbound_answered")[0]
    with pytest.raises(AppNotInstalled):  # RetryLater: the outbox keeps the record
        await sink.send(delivery(out_start))
    form = bx.install_form()
    state = StateStore(store.db)
    await Application(application(bx), sink.client, state, {}).accept_install(form)
    await sink.send(delivery(out_start))
    (call,) = bx.calls.values()
    assert call.params["USER_ID"] == "11" and bx.refreshes == 0  # the installation's own token


async def test_check_command_reports_missing_scopes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bx = FakeBitrix(users=list(USERS), webhook_scopes=frozenset({"telephony"}))
    await bx.start()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"storage:\n  dir: {tmp_path}\nasterisk:\n  ami:\n    port: 1\n"
        f"sinks:\n  bitrix24:\n    enabled: true\n    webhook_url: {bx.webhook_url}\n",
        encoding="utf-8",
    )
    try:
        code = await asyncio.to_thread(main, ["check", "-c", str(cfg)])
    finally:
        await bx.stop()
    err = capsys.readouterr().err
    assert "Bitrix24: у входящего вебхука нет права «user»" in err
    assert code != 0


def test_settings_application_needs_only_the_portal_and_not_a_webhook_too() -> None:
    # client_id/secret appear in Bitrix24's form only after saving, when ONAPPINSTALL is posted
    Bitrix24Settings(enabled=True, app=BitrixApp("https://example.bitrix24.ru")).validate()
    both = Bitrix24Settings(
        enabled=True,
        webhook_url="https://example.bitrix24.ru/rest/1/c0de/",
        app=BitrixApp("https://example.bitrix24.ru"),
    )
    with pytest.raises(SettingsError, match="не оба сразу"):
        both.validate()


async def test_renewing_a_token_without_client_credentials_says_what_to_set(
    http: Http, store: OutboxStore, bx: FakeBitrix
) -> None:
    settings = application(bx, app=BitrixApp(bx.url, oauth_url=f"{bx.url}/oauth/token/"))
    state = StateStore(store.db)
    client = BitrixClient(settings, http, state)
    await Application(settings, client, state, {}).accept_install(bx.install_form())
    assert await client.call("user.get", {"ID": "11"})  # the installation's access token works
    bx.expire_tokens()
    with pytest.raises(RetryLater, match="client_id и client_secret"):
        await client.call("user.get", {"ID": "11"})
    assert any("client_id / client_secret" in p for p in await problems(settings, client))
