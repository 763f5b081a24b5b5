"""Exactly once per step, against the fakes: a dead letter holds its call and its replay goes
register -> finish -> attachRecord; a hung far side delays only its own call; a register or finish
whose answer was lost is not done twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.calls.records import Event
from bridge.cli.main import main
from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.sink import Sink
from bridge.outbox.store import OutboxStore, State
from tests.fakes.base import Fault
from tests.fakes.bitrix import PORTAL_USERS, FakeBitrix, portal_user
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import bitrix_sink, telegram_sink, until
from tests.transcripts import replay
from tests.unit.integrations.conftest import GROUP, IVAN, serving, settled, with_recording
from tests.unit.integrations.test_sinks import bx_settings, tg_settings

FAST = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=5)
REGISTER, FINISH, ATTACH = (
    "telephony.externalcall.register",
    "telephony.externalcall.finish",
    "telephony.externalCall.attachRecord",
)


# store and directory: tests/unit/integrations/conftest.py; here a longer client timeout than its 5 s.
@pytest.fixture
async def http() -> AsyncIterator[Http]:
    h = Http(timeout=30)
    yield h
    await h.close()


@contextlib.asynccontextmanager
async def dispatching(
    store: OutboxStore, sinks: list[Sink], policy: RetryPolicy = FAST
) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(store, sinks, policy)
    task = asyncio.create_task(d.run())
    try:
        yield d
    finally:
        await d.stop(0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def telephony(bx: FakeBitrix) -> list[str]:
    """What the portal did (refused requests changed nothing there)."""
    return [m for m, _ in bx.done if m in (REGISTER, FINISH, ATTACH)]


async def test_a_dead_letter_holds_its_call_and_the_replay_registers_finishes_attaches_once(
    store: OutboxStore, http: Http, directory: Directory, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  dir: {tmp_path}\n")  # the CLI's view of the same outbox
    wav = tmp_path / "rec.wav"
    wav.write_bytes(b"RIFF" + b"\1" * 300)
    records = with_recording(replay("inbound_answered"), wav)  # START INTERNAL ANSWER END RECORD
    bx = FakeBitrix(
        app_only=True, users=PORTAL_USERS
    )  # the portal refuses telephony from a webhook: WRONG_AUTH_TYPE
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)
        async with dispatching(store, [sink]) as d:
            store.add(records[:2], d.sink_names)
            d.notify()
            await until(lambda: store.counts()["bitrix24"].get("dead") == 1)
            (dead,) = store.list(State.DEAD)
            assert dead.record.event is Event.INTERNAL and "WRONG_AUTH_TYPE" in (dead.last_error or "")
            store.add(records[2:], d.sink_names)  # the rest of the call arrives meanwhile
            d.notify()
            await until(lambda: len(store.held()) == 3)
            assert {h for _, h, _ in store.held()} == {dead.id}  # each shows what holds it
            assert main(["outbox", "-c", str(config)]) == 0  # `outbox list` says so too

            bx.app_only = False  # the admin switched the portal to the application
            assert main(["outbox", "retry", "-c", str(config)]) == 0  # from its own process
            await until(lambda: store.counts()["bitrix24"] == {"delivered": 5}, timeout=10)
    assert telephony(bx) == [REGISTER, FINISH, ATTACH]
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "200"
    assert call.records == [("rec.wav", 408)]


async def test_telegram_replay_after_a_dead_letter_is_one_message_per_chat(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    tg = FakeTelegram()
    async with serving(tg):
        sink = telegram_sink(tg_settings(tg.url), http, store, directory)
        async with dispatching(store, [sink]) as d:
            tg.token = "1:revoked-token-aaaaaaaaaaaaaaaaaaaaaa"  # BotFather revoked it: 401
            records = replay("inbound_answered")
            store.add(records, d.sink_names)
            d.notify()
            await until(lambda: store.counts()["telegram"].get("dead") == 1)
            await until(lambda: len(store.held()) == len(records) - 1)
            tg.token = TOKEN  # the admin put the new token in config.yaml
            assert store.retry_dead() == 1
            d.notify()
            await until(lambda: store.counts()["telegram"] == {"delivered": len(records)}, timeout=10)
    for chat in (GROUP, IVAN):  # the group and the employee whose phone rang: one message each
        (text,) = tg.texts(chat)
        assert "Разговор состоялся" in text
    assert len(tg.sent_texts) == 2


async def test_a_hung_bitrix24_request_delays_only_its_own_call(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    bx.fail_next(Fault(hang=120))  # the first request never gets an answer
    busy, answered = replay("outbound_busy"), replay("outbound_answered")
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)
        policy = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=4)
        async with dispatching(store, [sink], policy) as d:
            store.add(busy + answered, d.sink_names)
            d.notify()
            # One call is finished well before the hung request's 4 s send timeout...
            await until(lambda: any(c.finish for c in bx.calls.values()), timeout=2.5, interval=0.02)
            # ...and the hung one gets through after its own timeout, registered once.
            await until(lambda: settled(store) and len(bx.calls) == 2, timeout=15)
    assert all(c.finish is not None for c in bx.calls.values())
    assert store.counts()["bitrix24"] == {"delivered": len(busy) + len(answered)}


async def test_a_register_whose_answer_was_lost_is_not_registered_twice(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(users=[*PORTAL_USERS, portal_user(31, "", "Иван (новая учётная запись)")])
    bx.fail_next(Fault(processed=True, hang=120))  # the portal registers it; the answer never comes
    records = replay("outbound_answered")
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)
        policy = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=1)
        async with dispatching(store, [sink], policy) as d:
            store.add(records, d.sink_names)
            d.notify()
            await until(lambda: telephony(bx) == [REGISTER], interval=0.01)
            # Meanwhile the directory sync moved extension 101 to another Bitrix24 user: a fresh
            # register would be a new call; the retry repeats the lost request exactly.
            directory.upsert(Employee("101", "Иван", bitrix_user_id="31", telegram_chat_id=IVAN))
            await until(lambda: settled(store), timeout=10)
    assert telephony(bx) == [REGISTER, REGISTER, FINISH]
    (call,) = bx.calls.values()  # one call card in the CRM, finished
    assert call.finish is not None and call.params["USER_ID"] == "11"
    assert store.counts()["bitrix24"] == {"delivered": len(records)}


async def test_a_finish_whose_answer_was_lost_is_not_a_dead_letter(
    store: OutboxStore, http: Http, directory: Directory
) -> None:
    bx = FakeBitrix(users=PORTAL_USERS)
    records = replay("outbound_busy")  # OUT_START, OUT_END
    async with serving(bx):
        sink = bitrix_sink(bx_settings(bx.webhook_url), http, store, directory)
        policy = RetryPolicy(base=0.01, cap=0.05, max_age=60, send_timeout=1)
        async with dispatching(store, [sink], policy) as d:
            store.add(records[:1], d.sink_names)
            d.notify()
            await until(lambda: store.counts()["bitrix24"] == {"delivered": 1})
            bx.fail_next(Fault(processed=True, hang=120))  # the portal finishes it; no answer
            store.add(records[1:], d.sink_names)
            d.notify()
            await until(lambda: settled(store), timeout=10)
    assert telephony(bx) == [REGISTER, FINISH]
    assert (FINISH, "ERROR_CORE") in bx.refused  # the retry heard "Call is not found": it was done
    assert store.counts()["bitrix24"] == {"delivered": 2}
    (call,) = bx.calls.values()
    assert call.finish is not None and call.finish["STATUS_CODE"] == "486"
