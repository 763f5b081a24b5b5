"""Our own memory of who talked to whom: for each client number, the employee of the last answered
call (either direction) and the client's name as the PBX saw it. It lets routing keep a client
with "their" employee when no CRM is configured (``agi.sticky_days``).

A small SQLite table in the outbox's database, written by a record observer of the pipeline.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from bridge.calls.records import CallRecord, Disposition, Event
from bridge.outbox.health import StorageHealth, is_storage_error

SCHEMA = """
CREATE TABLE IF NOT EXISTS route_history (
    number    TEXT PRIMARY KEY,
    extension TEXT NOT NULL,
    name      TEXT NOT NULL DEFAULT '',
    talked_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class LastTalk:
    extension: str
    name: str
    talked_at: float


def _person_name(name: str) -> str:
    """A caller name worth remembering: some letters, not the number again (trunks send that)."""
    name = name.strip()
    return name if any(ch.isalpha() for ch in name) and name != "<unknown>" else ""


class RouteHistory:
    def __init__(self, db: sqlite3.Connection, health: StorageHealth | None = None) -> None:
        self.db = db
        self.health = health  # told when the machine refuses a write (disk full, read-only...)
        db.executescript(SCHEMA)

    def talked(self, number: str, extension: str, name: str = "", at: float | None = None) -> None:
        """``extension`` talked to ``number``; a known name is kept when this call brought none."""
        self.db.execute(
            "INSERT INTO route_history(number, extension, name, talked_at) VALUES (?,?,?,?)"
            " ON CONFLICT(number) DO UPDATE SET extension=excluded.extension,"
            " name=CASE WHEN excluded.name='' THEN route_history.name ELSE excluded.name END,"
            " talked_at=excluded.talked_at",
            (number, extension, _person_name(name), time.time() if at is None else at),
        )

    def last(self, number: str, since: float) -> LastTalk | None:
        row = self.db.execute(
            "SELECT extension, name, talked_at FROM route_history WHERE number=? AND talked_at>=?",
            (number, since),
        ).fetchone()
        return None if row is None else LastTalk(str(row[0]), str(row[1]), float(row[2]))

    def observe(self, records: list[CallRecord]) -> None:
        """Record observer: an answered call's END says who talked to which number. A storage
        that refuses the write loses this one memory, never the call's records (the pipeline
        keeps those until the storage is back)."""
        for r in records:
            f = r.fields
            if r.event not in (Event.END, Event.OUT_END) or f.get("disposition") != Disposition.ANSWERED:
                continue
            number = f.get("caller_id", "") if r.event is Event.END else f.get("destination", "")
            extension = f.get("internal", "")
            if number.isdigit() and extension.isdigit():
                name = r.meta.get("caller_name", "") if r.event is Event.END else ""
                try:
                    self.talked(number, extension, name)
                except sqlite3.Error as e:
                    if not is_storage_error(e):
                        raise
                    if self.health is not None:
                        self.health.failed(e, "route_history")

    def purge(self, older_than: float) -> int:
        return self.db.execute("DELETE FROM route_history WHERE talked_at<?", (older_than,)).rowcount

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM route_history").fetchone()[0])
