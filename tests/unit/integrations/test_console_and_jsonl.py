from __future__ import annotations

import io
import json
from pathlib import Path

from bridge.integrations.local.console import ConsoleSink, describe
from bridge.integrations.local.jsonl import JsonlSink
from tests.helpers import delivery
from tests.transcripts import replay


async def test_console_lines_in_russian() -> None:
    records = replay("inbound_ring_group")
    buf = io.StringIO()
    sink = ConsoleSink(buf)
    for r in records:
        await sink.send(delivery(r))
    lines = buf.getvalue().splitlines()
    assert "входящий звонок +7 958 111-45-85 (Иван Петров) на +7 495 000-01-00" in lines[0]
    assert lines[1].endswith("звонит у сотрудника 101")
    assert lines[3].endswith("ответил сотрудник 101")
    assert "завершён: отвечен, разговор 2 с, причина 16, записан" in lines[4]


def test_missed_call_is_marked() -> None:
    end = replay("inbound_missed")[-1]
    assert "без ответа — ПРОПУЩЕН" in describe(end)


async def test_jsonl_appends_one_object_per_record(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "records.jsonl"
    sink = JsonlSink(path)
    records = replay("outbound_answered")
    for r in records:
        await sink.send(delivery(r))
    await sink.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [{k: v for k, v in line.items() if k != "meta"} for line in lines] == [r.fields for r in records]


async def test_jsonl_reopen_starts_a_new_file_after_logrotate_moved_it(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    sink = JsonlSink(path)
    first, second = replay("outbound_answered")[:2]
    await sink.send(delivery(first))
    path.rename(tmp_path / "records.jsonl.1")  # what logrotate does before its postrotate (SIGHUP)
    sink.reopen()
    await sink.send(delivery(second))
    await sink.close()
    assert [json.loads(x)["event"] for x in (tmp_path / "records.jsonl.1").read_text().splitlines()] == [
        first.fields["event"]
    ]
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == [second.fields["event"]]
