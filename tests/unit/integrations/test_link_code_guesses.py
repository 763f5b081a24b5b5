"""Telegram link codes cannot be guessed: a chat gets LINK_CODE_MISSES wrong codes an hour, then a
polite refusal, and its further codes are not even tried (issue 11, item 3)."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.directory import LINK_CODE_MISS_WINDOW, LINK_CODE_MISSES, Directory
from bridge.integrations.telegram.bot import TEXT_BAD_CODE, TEXT_LINKED, TEXT_TOO_MANY_CODES
from bridge.outbox.store import OutboxStore
from tests.fakes.telegram import FakeTelegram
from tests.helpers import running_app, until
from tests.unit.integrations.test_telegram_bot import config


async def test_a_chat_that_keeps_guessing_is_refused(tmp_path: Path) -> None:
    tg = FakeTelegram()
    await tg.start()
    try:
        async with running_app(config(tmp_path, tg.url)) as app:
            code = app.directory.new_link_code("101")
            for guess in range(LINK_CODE_MISSES):
                tg.say("901", f"/start {10000000 + guess}")
            tg.say("901", f"/start {code}")  # the right one, after too many wrong ones: not tried
            await until(lambda: len(tg.texts("901")) == LINK_CODE_MISSES + 1, timeout=10)
            assert tg.texts("901") == [TEXT_BAD_CODE] * LINK_CODE_MISSES + [TEXT_TOO_MANY_CODES]
            assert app.directory.telegram_chat("101") is None
            tg.say("904", f"/start {code}")  # the employee's own chat: the code is still good
            await until(lambda: len(tg.texts("904")) == 1, timeout=10)
            assert tg.texts("904") == [TEXT_LINKED.format(ext="101")]
            assert app.directory.telegram_chat("101") == "904"
    finally:
        await tg.stop()


def test_misses_are_forgotten_after_the_window(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    try:
        d = Directory(store.db)
        t = time.time()
        for i in range(LINK_CODE_MISSES):
            d.note_link_code_miss("901", now=t + i)
        d.note_link_code_miss("902", now=t)
        assert d.link_code_misses("901", now=t + 10) == LINK_CODE_MISSES
        assert d.link_code_misses("901", now=t + LINK_CODE_MISS_WINDOW + LINK_CODE_MISSES) == 0
        assert d.link_code_misses("902", now=t + LINK_CODE_MISS_WINDOW + 1) == 0
    finally:
        store.close()
