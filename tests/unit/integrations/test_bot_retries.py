"""The bot's side effects happen once even when a step fails and its job is tried again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.integrations.telegram.api import TelegramApi
from bridge.integrations.telegram.bot import TEXT_BAD_CODE, TEXT_LINKED, TelegramBot
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.integrations.telegram.state import TelegramCall, callback_details_of, save_call
from bridge.outbox.jobs import Jobs
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from tests.fakes.base import Fault
from tests.fakes.telegram import TOKEN, FakeTelegram


class RecordingCalls:
    """Stands in for the PBX side (bridge.pbx.originate.Originator): counts the calls placed."""

    def __init__(self) -> None:
        self.rung: list[tuple[str, str, str]] = []
        self.shown: list[tuple[str, str]] = []  # (did, name): the client sees our DID, the employee the name

    @staticmethod
    def new_channel_id(prefix: str) -> str:
        return f"{prefix}-0000000000000001"

    async def ring(self, extension: str, phone: str, chan: str, did: str = "", name: str = "") -> None:
        self.rung.append((extension, phone, chan))
        self.shown.append((did, name))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[TelegramBot, FakeTelegram, RecordingCalls, Jobs]]:
    tg = FakeTelegram()
    await tg.start()
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    http = Http()
    settings = TelegramSettings(enabled=True, token=TOKEN, api_url=tg.url, group_chats=["-100"])
    directory = Directory(store.db)
    directory.upsert(Employee("101", "Иван", telegram_chat_id="901"))
    jobs = Jobs(store.db)
    calls = RecordingCalls()
    bot = TelegramBot(TelegramApi(settings, http), StateStore(store.db), directory, jobs, calls)  # type: ignore[arg-type]
    for kind, (handler, max_age) in bot.job_handlers().items():
        jobs.handle(kind, handler, max_age)
    try:
        yield bot, tg, calls, jobs
    finally:
        await http.close()
        store.close()
        await tg.stop()


async def drain(jobs: Jobs) -> None:
    """Run every job that is due, retries included (their waits skipped), until none is left."""
    for _ in range(20):
        jobs.db.execute("UPDATE jobs SET next_try_at=0 WHERE state='pending'")
        if not jobs.pending():
            return
        await jobs.work()
    raise AssertionError(f"jobs still pending: {jobs.counts()}")


async def test_press_rings_once_when_answer_callback_query_fails(
    world: tuple[TelegramBot, FakeTelegram, RecordingCalls, Jobs],
) -> None:
    bot, tg, calls, jobs = world
    view = {"caller": "79001112233", "caller_name": "Ольга", "did": "74950000101", "direction": "in"}
    save_call(bot.state, "in_1", TelegramCall(view=view))
    tg.chats["-100"] = {5: "Пропущенный звонок"}  # the missed-call message the button is under
    tg.fail_method(
        "answerCallbackQuery", Fault(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    )
    update = {
        "update_id": 7,
        "callback_query": {
            "id": "q1",
            "from": {"id": 901},
            "data": "cb:in_1",
            "message": {"message_id": 5, "chat": {"id": -100}, "text": "Пропущенный звонок"},
        },
    }
    assert bot.accept(update)
    assert not bot.accept(update)  # Telegram (or our poller after a restart) hands it over again
    await drain(jobs)
    # The handler is run again too (a crash before its job was marked done): still one call.
    await bot.handle(update)
    await drain(jobs)
    assert calls.rung == [("101", "79001112233", "tg-0000000000000001")]
    assert calls.shown == [("74950000101", "Ольга")]  # called back from the number the client called
    assert jobs.counts() == {}
    assert tg.texts("-100") == ["Пропущенный звонок\n↩️ Перезванивает сотрудник 101"]


async def test_start_code_retried_never_says_bad_code_to_the_chat_it_linked(
    world: tuple[TelegramBot, FakeTelegram, RecordingCalls, Jobs],
) -> None:
    bot, tg, _calls, jobs = world
    code = bot._directory.new_link_code("101")
    update = {
        "update_id": 8,
        "message": {"message_id": 1, "text": f"/start {code}", "chat": {"id": 905, "type": "private"}},
    }
    tg.fail_method("sendMessage", Fault(500, {"ok": False, "error_code": 500, "description": "Internal"}))
    await bot.handle(update)
    await bot.handle(update)  # the same update again: the code is spent, the chat is linked
    await drain(jobs)
    assert bot._directory.telegram_chat("101") == "905"
    assert tg.texts("905") == [TEXT_LINKED.format(ext="101")] * 2
    assert TEXT_BAD_CODE not in tg.texts("905")


@pytest.mark.parametrize("did", ["74950000101\r\nAction: Command", "novofon", "٧٤٩٥٠٠٠٠١٠١"])
def test_a_did_that_is_not_digits_is_left_to_the_dialplan(tmp_path: Path, did: str) -> None:
    """The number shown to the client comes from a record: anything but ASCII digits is dropped
    (the call-back still goes, from the dialplan's own number) instead of failing the call."""
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    try:
        state = StateStore(store.db)
        save_call(state, "in_1", TelegramCall(view={"caller": "79001112233", "did": did}))
        save_call(state, "in_2", TelegramCall(view={"caller": "79001112233", "did": "74950000101"}))
        assert callback_details_of(state, "in_1") == {"name": "", "did": ""}
        assert callback_details_of(state, "in_2")["did"] == "74950000101"  # the control
    finally:
        store.close()
