"""The durable outbox: every record is committed to SQLite (WAL) before anything is sent.

Each (record, sink) pair is one delivery with its own state, attempts, next try time and last
error. Sinks keep the little state they need to be idempotent (Telegram message ids, Bitrix24
CALL_IDs) in the same database, through ``bridge.outbox.state``.

All calls are synchronous and short (a few hundred microseconds in WAL mode): they run on the event
loop, which keeps the ordering simple — a record is committed in the same loop step that produced it.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.calls.records import CallRecord, record_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id          INTEGER PRIMARY KEY,
    pbx_call_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    fields      TEXT NOT NULL,
    meta        TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    record_id   INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    sink        TEXT NOT NULL,
    pbx_call_id TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_error  TEXT,
    created_at  REAL NOT NULL,
    done_at     REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(sink, state, next_try_at);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(sink, state, id);
CREATE INDEX IF NOT EXISTS deliveries_call ON deliveries(sink, pbx_call_id, state, id);
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries(state, done_at);
CREATE TABLE IF NOT EXISTS inbound_seen (
    key        TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
"""


class State(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    id: int
    record_id: int
    sink: str
    record: CallRecord
    attempts: int
    created_at: float
    state: str = State.PENDING.value
    next_try_at: float = 0.0
    last_error: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Derived from the call and the event, never from a row id: the same for a record re-derived
        after any restart, so the far side may deduplicate on it."""
        return f"nb-{record_key(self.record.fields)}-{self.sink}"


class OutboxStore:
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (kill -9); FULL also survives power loss.
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        # Checkpoints (which fsync) run from a thread via checkpoint(), not inline in a commit on
        # the event loop (bench/outbox_bench.py: they were the p99 of the outbox's latency).
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.checkpoint()
        self.db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file. Safe from any thread: it uses its own connection."""
        db = sqlite3.connect(self.path, timeout=5)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    # -- writing -----------------------------------------------------------------------------
    def add(self, records: list[CallRecord], sinks: list[str], now: float | None = None) -> list[int]:
        """Commit records and one pending delivery per sink, in one transaction."""
        now = time.time() if now is None else now
        with self._tx():
            return self._insert(records, sinks, now)

    def _insert(self, records: list[CallRecord], sinks: list[str], now: float) -> list[int]:
        ids = []
        for r in records:
            cur = self.db.execute(
                "INSERT INTO records(pbx_call_id, event, fields, meta, created_at) VALUES (?,?,?,?,?)",
                (
                    r.pbx_call_id,
                    r.fields["event"],
                    json.dumps(r.fields, ensure_ascii=False),
                    json.dumps(r.meta, ensure_ascii=False),
                    now,
                ),
            )
            rid = int(cur.lastrowid or 0)
            ids.append(rid)
            self.db.executemany(
                "INSERT INTO deliveries(record_id, sink, pbx_call_id, next_try_at, created_at)"
                " VALUES (?,?,?,?,?)",
                [(rid, s, r.pbx_call_id, now, now) for s in sinks],
            )
        return ids

    def add_once(self, key: str, records: list[CallRecord], sinks: list[str]) -> bool:
        """Commit records received from outside unless ``key`` was seen before (their repeats)."""
        now = time.time()
        with self._tx():
            if self.db.execute("SELECT 1 FROM inbound_seen WHERE key=?", (key,)).fetchone():
                return False
            self.db.execute("INSERT INTO inbound_seen(key, created_at) VALUES (?,?)", (key, now))
            self._insert(records, sinks, now)
        return True

    def seen_recently(self, key: str, window: float, now: float | None = None) -> bool:
        """True if ``key`` was seen less than ``window`` seconds ago; remembers it now otherwise."""
        now = time.time() if now is None else now
        row = self.db.execute("SELECT created_at FROM inbound_seen WHERE key=?", (key,)).fetchone()
        if row is not None and now - float(row[0]) < window:
            return True
        self.db.execute(
            "INSERT INTO inbound_seen(key, created_at) VALUES (?,?)"
            " ON CONFLICT(key) DO UPDATE SET created_at=excluded.created_at",
            (key, now),
        )
        return False

    def mark_delivered(self, delivery_id: int, now: float | None = None) -> None:
        self.db.execute(
            "UPDATE deliveries SET state='delivered', attempts=attempts+1, done_at=?, last_error=NULL"
            " WHERE id=?",
            (time.time() if now is None else now, delivery_id),
        )

    def mark_retry(self, delivery_id: int, next_try_at: float, error: str) -> None:
        self.db.execute(
            "UPDATE deliveries SET attempts=attempts+1, next_try_at=?, last_error=? WHERE id=?",
            (next_try_at, error[:1000], delivery_id),
        )

    def mark_dead(self, delivery_id: int, reason: str, now: float | None = None) -> None:
        self.db.execute(
            "UPDATE deliveries SET state='dead', attempts=attempts+1, done_at=?, last_error=? WHERE id=?",
            (time.time() if now is None else now, reason[:1000], delivery_id),
        )

    # -- reading -----------------------------------------------------------------------------
    _SELECT = (
        "SELECT d.id, d.record_id, d.sink, r.fields, r.meta, d.attempts, d.created_at, d.state,"
        " d.next_try_at, d.last_error FROM deliveries d JOIN records r ON r.id = d.record_id"
    )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> Delivery:
        rid, rec, sink, fields, meta, attempts, created, state, next_try, error = row
        record = CallRecord(json.loads(fields), json.loads(meta))
        return Delivery(rid, rec, sink, record, attempts, created, state, next_try, error)

    def due(self, sink: str, now: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first, leaving out any whose call has an
        earlier delivery still waiting for its retry (an END never overtakes its START)."""
        rows = self.db.execute(
            self._SELECT + " WHERE d.sink=? AND d.state='pending' AND d.next_try_at<=?"
            " AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.sink=d.sink"
            "   AND e.pbx_call_id=d.pbx_call_id AND e.state='pending' AND e.id<d.id AND e.next_try_at>?)"
            " ORDER BY d.id LIMIT ?",
            (sink, now, now, limit),
        ).fetchall()
        return [self._row(r) for r in rows]

    def next_due_at(self, sink: str) -> float | None:
        """When the next head-of-call delivery for ``sink`` becomes due (None: nothing pending)."""
        row = self.db.execute(
            "SELECT MIN(d.next_try_at) FROM deliveries d WHERE d.sink=? AND d.state='pending'"
            " AND d.id = (SELECT MIN(id) FROM deliveries e"
            "             WHERE e.sink=d.sink AND e.pbx_call_id=d.pbx_call_id AND e.state='pending')",
            (sink,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def list(self, state: State, limit: int = 100) -> list[Delivery]:
        rows = self.db.execute(
            self._SELECT + " WHERE d.state=? ORDER BY d.id LIMIT ?", (state.value, limit)
        ).fetchall()
        return [self._row(r) for r in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for sink, state, n in self.db.execute(
            "SELECT sink, state, COUNT(*) FROM deliveries GROUP BY sink, state"
        ):
            out.setdefault(str(sink), {})[str(state)] = int(n)
        return out

    def oldest_pending(self) -> float | None:
        row = self.db.execute("SELECT MIN(created_at) FROM deliveries WHERE state='pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- maintenance -------------------------------------------------------------------------
    def retry_dead(self, sink: str | None = None, now: float | None = None) -> int:
        """Give dead deliveries another chance (after fixing what killed them)."""
        now = time.time() if now is None else now
        q = (
            "UPDATE deliveries SET state='pending', next_try_at=?, attempts=0, done_at=NULL"
            " WHERE state='dead'"
        )
        args: tuple[object, ...] = (now,)
        if sink:
            q += " AND sink=?"
            args += (sink,)
        return self.db.execute(q, args).rowcount

    def purge(self, older_than: float) -> int:
        """Drop delivered deliveries done before ``older_than``, and records with nothing left."""
        with self._tx():
            n = self.db.execute(
                "DELETE FROM deliveries WHERE state='delivered' AND done_at < ?", (older_than,)
            ).rowcount
            self.db.execute(
                "DELETE FROM records WHERE created_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.record_id = records.id)",
                (older_than,),
            )
        return n

    def purge_seen(self, older_than: float) -> int:
        """Forget inbound dedupe keys older than ``older_than``."""
        return self.db.execute("DELETE FROM inbound_seen WHERE created_at < ?", (older_than,)).rowcount

    def _tx(self) -> _Tx:
        return _Tx(self.db)

    def transaction(self) -> _Tx:
        """One commit for several writes: ``add`` inside it joins it (the pipeline commits records
        with the open-call snapshots that explain them)."""
        return _Tx(self.db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self.outer:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
