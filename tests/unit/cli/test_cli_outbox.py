from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli.main import main
from bridge.outbox.store import OutboxStore
from tests.transcripts import replay


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage:\n  dir: {tmp_path}\n")
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    store.add(replay("outbound_busy"), ["telegram", "bitrix24"], now=1000.0)
    rows = store.db.execute("SELECT id FROM deliveries WHERE sink='bitrix24' ORDER BY id").fetchall()
    store.mark_dead(rows[0][0], "400 WRONG_AUTH_TYPE: use the application mode")
    store.mark_delivered(rows[1][0], now=1000.0)
    store.close()
    return cfg


def test_outbox_lists_pending_and_dead(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "bitrix24: dead: 1, delivered: 1" in out
    assert "telegram: pending: 2" in out
    assert "[dead]" in out and "WRONG_AUTH_TYPE" in out
    assert "самая старая неотправленная запись" in out


def test_outbox_retry_and_purge(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "retry", "--sink", "bitrix24", "-c", str(config)]) == 0
    assert "1 доставок возвращены" in capsys.readouterr().out
    assert main(["outbox", "purge", "--days", "1", "-c", str(config)]) == 0
    assert "старше 1 дн.: 1" in capsys.readouterr().out
    store = OutboxStore(config.parent / "outbox.sqlite3")
    assert store.counts() == {"bitrix24": {"pending": 1}, "telegram": {"pending": 2}}
    store.close()


def test_outbox_list_shows_held_records_and_what_holds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage:\n  dir: {tmp_path}\n")
    store = OutboxStore(tmp_path / "outbox.sqlite3")
    store.add(replay("inbound_missed"), ["bitrix24"], now=1000.0)  # START, INTERNAL, END
    ids = [r[0] for r in store.db.execute("SELECT id FROM deliveries ORDER BY id")]
    store.mark_delivered(ids[0])
    store.mark_dead(ids[1], "401 WRONG_AUTH_TYPE")
    store.close()
    assert main(["outbox", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"[held] #{ids[2]} bitrix24 NOTIFY_END" in out
    assert f"ждёт #{ids[1]} (мёртвая, ждёт outbox retry)" in out
    assert f"[dead] #{ids[1]} bitrix24 NOTIFY_INTERNAL" in out
