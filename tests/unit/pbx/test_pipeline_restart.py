"""The pipeline commits each call's snapshot with its records: a new process on the same database
takes the open calls back and adds only what is new; a failed commit leaves neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load
from bridge.errors import StorageUnavailable
from bridge.outbox.dispatcher import Dispatcher
from bridge.outbox.store import OutboxStore
from bridge.pbx.pipeline import Pipeline
from tests.helpers import MemorySink
from tests.transcripts import messages, raw


def pipeline(path: Path) -> Pipeline:
    p = Pipeline(load(None), OutboxStore(path))
    p.attach(Dispatcher(p.store, [MemorySink("crm")]))
    return p


def events_of(store: OutboxStore) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT event FROM records ORDER BY id")]


def test_a_new_process_takes_the_open_call_back_and_adds_only_what_is_new(tmp_path: Path) -> None:
    msgs = [m for m in messages(raw("inbound_answered")) if m.get("Event") != "FullyBooted"]
    cut = next(i for i, m in enumerate(msgs) if m.get("Event") == "BridgeEnter")
    first = pipeline(tmp_path / "outbox.sqlite3")
    for m in msgs[:cut]:
        first.on_ami_event(m)
    assert events_of(first.store) == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER"]
    # kill -9: nothing more is written; a new process opens the same database.
    second = pipeline(tmp_path / "outbox.sqlite3")
    assert second.tracker.active_calls == 1
    for m in msgs[cut:]:
        second.on_ami_event(m)
    assert events_of(second.store) == [
        "NOTIFY_START",
        "NOTIFY_INTERNAL",
        "NOTIFY_ANSWER",
        "NOTIFY_END",
        "NOTIFY_RECORD",
    ]
    assert second.open_calls.open_count() == 0
    assert second.open_calls.seen([msgs[0]["Linkedid"]]) == {msgs[0]["Linkedid"]}


def test_records_and_their_snapshot_commit_together_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pipeline(tmp_path / "outbox.sqlite3")
    msgs = list(messages(raw("inbound_answered")))

    def disk_full(*_: object) -> None:
        raise OSError("database or disk is full")

    monkeypatch.setattr(p.open_calls, "apply", disk_full)
    with pytest.raises(OSError):
        p.on_ami_event(next(m for m in msgs if m.get("Event") == "Newchannel"))
    assert events_of(p.store) == [] and p.open_calls.open_count() == 0
    monkeypatch.undo()
    p.save_snapshots()  # the snapshot was handed back, and goes in with the next commit
    assert p.open_calls.open_count() == 1


def test_while_the_storage_refuses_records_no_snapshot_gets_ahead_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full: the records wait in memory and so do their calls' snapshots (a kill -9 then
    leaves no snapshot that says START was sent); once it takes writes, all go in one commit."""
    p = pipeline(tmp_path / "outbox.sqlite3")
    msgs = [m for m in messages(raw("inbound_answered")) if m.get("Event") != "FullyBooted"]
    cut = next(i for i, m in enumerate(msgs) if m.get("Event") == "BridgeEnter")

    def disk_full(*_: object, **__: object) -> list[int]:
        raise StorageUnavailable("database or disk is full")

    monkeypatch.setattr(p.store, "add", disk_full)
    for m in msgs[:cut]:
        p.on_ami_event(m)  # nothing raised: the calls go on being tracked
    p.save_snapshots()  # the housekeeping tick: the snapshot waits with its records
    assert p.unsaved == 3 and events_of(p.store) == [] and p.open_calls.open_count() == 0
    assert pipeline(tmp_path / "outbox.sqlite3").tracker.active_calls == 0  # a kill -9 now: nothing half-done
    monkeypatch.undo()
    p.save_snapshots()
    assert events_of(p.store) == ["NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_ANSWER"]
    assert p.unsaved == 0 and p.open_calls.open_count() == 1
    restarted = pipeline(tmp_path / "outbox.sqlite3")
    assert restarted.tracker.active_calls == 1
    for m in msgs[cut:]:
        restarted.on_ami_event(m)
    assert events_of(restarted.store)[3:] == ["NOTIFY_END", "NOTIFY_RECORD"]
