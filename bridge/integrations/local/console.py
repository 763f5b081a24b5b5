"""Console sink: one readable line per record, in Russian, for people watching the daemon.

Under systemd each stdout line becomes a journal entry, and records carry text from outside (an
SMS, a caller's name): control characters are shown escaped (``bridge.logs.one_line``), so such
text can neither start a forged journal line nor send escape sequences to a terminal.
"""

from __future__ import annotations

import sys
from typing import TextIO

from bridge.calls.numbers import pretty
from bridge.calls.records import CallRecord, Event
from bridge.logs import one_line
from bridge.outbox.store import Delivery

DISPOSITIONS_RU = {
    "answered": "отвечен",
    "busy": "занято",
    "cancel": "звонящий положил трубку",
    "no answer": "без ответа",
    "failed": "не удалось соединить",
    "unallocated number": "номер не существует",
}


def describe(r: CallRecord) -> str:
    f = r.fields
    who = pretty(f.get("caller_id", ""))
    name = r.meta.get("caller_name")
    if name:
        who = f"{who} ({name})"
    ev = r.event
    if ev is Event.START:
        line = r.meta.get("line_name")
        text = f"входящий звонок {who} на {pretty(f['called_did'])}" + (f" «{line}»" if line else "")
    elif ev is Event.IVR:
        text = f"{who} в голосовом меню"
    elif ev is Event.INTERNAL:
        text = f"звонит у сотрудника {f['internal']}"
    elif ev is Event.ANSWER:
        text = (
            f"ответил сотрудник {f['internal']}"
            if r.meta.get("direction") == "in"
            else (f"{pretty(f['destination'])} ответил")
        )
    elif ev is Event.OUT_START:
        text = f"исходящий звонок {f['internal'] or 'АТС'} → {pretty(f['destination'])}"
    elif ev in (Event.END, Event.OUT_END):
        disp = DISPOSITIONS_RU.get(f["disposition"], f["disposition"])
        missed = " — ПРОПУЩЕН" if ev is Event.END and f["disposition"] != "answered" else ""
        text = f"завершён: {disp}{missed}, разговор {f['duration']} с, причина {f['status_code']}"
        if f["is_recorded"] == "1":
            text += ", записан"
    elif ev is Event.SMS:
        return (
            f"{f['notification_time'][11:19]} SMS от {pretty(f['contact_phone_number'])} "
            f"на {pretty(f['virtual_phone_number'])}: {f['message']}"
        )
    else:
        text = f"запись разговора готова: {f['call_id_with_rec']}"
    mark = " [восстановлено после потери связи с Asterisk]" if r.reconstructed else ""
    return f"{f.get('call_start', '')[11:] or '        '} {f['pbx_call_id']}  {text}{mark}"


class ConsoleSink:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def send(self, delivery: Delivery) -> None:
        print(one_line(describe(delivery.record)), file=self.stream, flush=True)

    async def close(self) -> None:
        pass
