"""The tracker's memory across restarts, in the outbox's database.

- ``open_calls``: a snapshot of every reported call that is still open, written in the same
  transaction as that call's records (``apply`` runs inside the pipeline's commit);
- ``seen_calls``: the ids (Linkedids, Uniqueids) of calls reported live or backfilled, so that a
  CDR backfill never reports a call twice;
- ``pbx_link``: when the bridge last listened to AMI, and what the last outage cost (for ``status``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from bridge.calls.snapshot import CallSnapshot, Changes

log = structlog.get_logger("bridge.pbx")

SCHEMA = """
CREATE TABLE IF NOT EXISTS open_calls (
    linkedid   TEXT PRIMARY KEY,
    snapshot   TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_calls (
    id      TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_calls_age ON seen_calls(seen_at);
CREATE TABLE IF NOT EXISTS pbx_link (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass
class LinkState:
    """What ``status`` says about the AMI link (kept in ``pbx_link``)."""

    listening_until: float | None = None  # last moment the bridge was known to listen to AMI
    last_outage_from: float | None = None
    last_outage_to: float | None = None
    last_outage_backfilled: int = 0
    backfilled_total: int = 0
    last_backfill_error: str = ""


class OpenCallStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    # -- open calls ------------------------------------------------------------------------------
    def load(self) -> list[CallSnapshot]:
        out = []
        for linkedid, text in self.db.execute("SELECT linkedid, snapshot FROM open_calls ORDER BY rowid"):
            try:
                out.append(CallSnapshot.from_json(text))
            except (ValueError, TypeError, KeyError) as e:
                log.warning("calls.snapshot_unreadable", linkedid=linkedid, error=str(e))
        return out

    def apply(self, changes: Changes, now: float) -> None:
        """Write ``changes`` (call inside the transaction that commits their records)."""
        if changes.saved:
            self.db.executemany(
                "INSERT INTO open_calls(linkedid, snapshot, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(linkedid) DO UPDATE SET snapshot=excluded.snapshot,"
                " updated_at=excluded.updated_at",
                [(s.linkedid, s.to_json(), now) for s in changes.saved],
            )
        if changes.ended:
            self.db.executemany(
                "DELETE FROM open_calls WHERE linkedid=?", [(e.linkedid,) for e in changes.ended]
            )
            self.mark_seen([i for e in changes.ended if e.reported for i in e.ids], now)

    def open_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM open_calls").fetchone()[0])

    # -- calls already reported ------------------------------------------------------------------
    def mark_seen(self, ids: Iterable[str], now: float) -> None:
        self.db.executemany(
            "INSERT INTO seen_calls(id, seen_at) VALUES (?,?) ON CONFLICT(id) DO NOTHING",
            [(i, now) for i in dict.fromkeys(ids) if i],
        )

    def seen(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` belong to calls already reported (open or finished)."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.db.execute(f"SELECT id FROM seen_calls WHERE id IN ({marks})", chunk)
            )
        return found

    def forget_seen(self, older_than: float) -> int:
        return self.db.execute("DELETE FROM seen_calls WHERE seen_at < ?", (older_than,)).rowcount

    # -- the AMI link ----------------------------------------------------------------------------
    def link(self) -> LinkState:
        row = self.db.execute("SELECT value FROM pbx_link WHERE key='state'").fetchone()
        if row is None:
            return LinkState()
        return _link(row[0])

    @staticmethod
    def read_link(path: Path) -> LinkState | None:
        """The daemon's notes on the AMI link, read-only (for ``novofon-bridge status``)."""
        if not path.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
            try:
                row = db.execute("SELECT value FROM pbx_link WHERE key='state'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return None if row is None else _link(row[0])

    def save_link(self, state: LinkState) -> None:
        self.db.execute(
            "INSERT INTO pbx_link(key, value) VALUES ('state', ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (json.dumps(asdict(state)),),
        )


def _link(text: str) -> LinkState:
    data: dict[str, Any] = json.loads(text)
    return LinkState(**{k: v for k, v in data.items() if k in LinkState.__dataclass_fields__})
