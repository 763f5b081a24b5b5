"""«Перезвонить» under a missed call, pressed in Telegram: a real call employee -> client."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from bridge.app import App
from bridge.config import DirectoryConfig, EmployeeConfig
from bridge.integrations.telegram.bot import TEXT_NOT_LINKED
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.pbx.ami import AmiConnection
from tests.conftest import hangup_all, lab_config
from tests.fakes.telegram import TOKEN, FakeTelegram
from tests.helpers import until
from tests.lab import lab as L
from tests.lab.calls import call_in

pytestmark = pytest.mark.lab

GROUP = "-1007770000001"
RESULT = re.compile(r"\n↩️ Перезвонили \(102\): отвечен, разговор 0:0\d$")


async def test_missed_call_button_rings_the_employee_then_the_client(
    lab: L.Lab, tmp_path: Path, provider: AmiConnection
) -> None:
    tg = FakeTelegram()
    await tg.start()
    cfg = lab_config(lab, tmp_path)
    cfg = dataclasses.replace(
        cfg,
        sinks=dataclasses.replace(
            cfg.sinks,
            telegram=TelegramSettings(
                enabled=True, token=TOKEN, api_url=tg.url, group_chats=[GROUP], per_chat_rate=50
            ),
        ),
        directory=DirectoryConfig({"102": EmployeeConfig(name="Пётр", telegram_chat_id="702")}),
    )
    app = App(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    try:
        await asyncio.wait_for(app.ami.connected.wait(), 20)
        # A client whose number the network answers calls a DID that never answers: missed.
        await call_in(provider, L.DID_103, caller=L.NUM_ANSWER)
        await until(lambda: any(m for m in tg.markups.values()), timeout=L.RING_TIMEOUT + 20)
        ((key, markup),) = [(k, m) for k, m in tg.markups.items() if m]
        chat, message_id = key
        assert markup["inline_keyboard"][0][0]["text"] == "📞 Перезвонить"
        data = markup["inline_keyboard"][0][0]["callback_data"]

        tg.press("999", chat, message_id, data)  # somebody not linked: refused, nothing rings
        await until(lambda: len(tg.answers) == 1, timeout=10)
        assert tg.answers[0]["text"] == TEXT_NOT_LINKED

        tg.press("702", chat, message_id, data)  # employee 102
        await until(lambda: len(tg.answers) == 2, timeout=10)
        assert tg.answers[1]["text"] == "Звоним: сначала вам (102), затем клиенту"
        # 102 answers after 2 s, the client is dialled, answers, 102 hangs up 3 s later.
        await until(
            lambda: any("Разговор состоялся" in t and "Сотрудник: 102" in t for t in tg.texts(GROUP)),
            timeout=40,
        )
        # The missed call's message says how the callback went.
        await until(
            lambda: any(RESULT.search(t) for t in tg.texts(GROUP)),
            timeout=20,
        )
        rows = app.store.db.execute(
            "SELECT pbx_call_id, fields FROM records WHERE event='NOTIFY_OUT_END'"
        ).fetchall()
        assert len(rows) == 1 and rows[0][0].startswith("out_tg-")
        assert '"destination": "79001110001"' in rows[0][1] and '"disposition": "answered"' in rows[0][1]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await tg.stop()
        await hangup_all(lab)
