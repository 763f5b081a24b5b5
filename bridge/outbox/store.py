"""The durable outbox: every record is committed to SQLite (WAL) before anything is sent.

Each (record, sink) pair is one delivery with its own state, attempts, next try time and last
error. Sinks keep the little state they need to be idempotent (Telegram message ids, Bitrix24
CALL_IDs) in the same database, through ``bridge.outbox.state``.

All calls are synchronous and short (a few hundred microseconds in WAL mode): they run on the event
loop, which keeps the ordering simple — a record is committed in the same loop step that produced it.

Per sink, a call's deliveries go out strictly in order: only the *head* of a call (its oldest
delivery not yet delivered) is ever due. A dead head holds the rest of its call until
``retry_dead`` replays them in order (bridge/outbox/dispatcher.py ages held ones out).

A write refused by the machine (disk full, read-only, I/O error) raises ``StorageUnavailable`` and
marks ``health`` degraded (bridge/outbox/health.py); a database that cannot be opened at all is a
``StorageOpenError`` with a message for people.
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.calls.records import CallRecord, record_key
from bridge.errors import StorageUnavailable
from bridge.outbox.health import StorageHealth, StorageOpenError, is_storage_error

T = TypeVar("T")

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


# A call's head: no earlier delivery of the same call and sink is still pending or dead.
_HEAD = (
    " AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.sink=d.sink AND e.pbx_call_id=d.pbx_call_id"
    " AND e.state IN ('pending','dead') AND e.id<d.id)"
)


def _not_in(column: str, values: Collection[str]) -> tuple[str, tuple[str, ...]]:
    if not values:
        return "", ()
    return f" AND {column} NOT IN ({','.join('?' * len(values))})", tuple(values)


class OutboxStore:
    def __init__(
        self, path: Path, synchronous: str = "NORMAL", redact: Callable[[str], str] | None = None
    ) -> None:
        self.path = path
        self.health = StorageHealth(path)
        # Errors are stored with every known secret masked (bridge/redact.py): a transport error
        # can quote a URL that holds a webhook code, and last_error is read by `outbox list`.
        self.redact: Callable[[str], str] = redact or (lambda text: text)
        self._joined = False  # inside transaction(): writes join it, its commit decides
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (kill -9); FULL also survives power loss.
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
            # Checkpoints (which fsync) run from a thread via checkpoint(), not inline in a commit on
            # the event loop (bench/outbox_bench.py: they were the p99 of the outbox's latency).
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            raise StorageOpenError(path, e) from None
        self.db = db

    def _write(self, doing: str, fn: Callable[[], T]) -> T:
        """Run a write; a refusal by the machine becomes StorageUnavailable (health: degraded)."""
        try:
            result = fn()
        except sqlite3.Error as e:
            if not is_storage_error(e):
                raise
            self.health.failed(e, doing)
            raise StorageUnavailable(f"{self.path}: {e}") from e
        if not self._joined:  # inside a transaction() only its commit says the write is done
            self.health.ok()
        return result

    def close(self) -> None:
        self.checkpoint()  # a full disk must not stop the shutdown: it returns False then
        self.db.close()

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file. Safe from any thread: it uses its own connection.
        False when the machine refused it (disk full...): the WAL keeps everything meanwhile."""
        try:
            db = sqlite3.connect(self.path, timeout=5)
            try:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                db.close()
        except sqlite3.Error as e:
            if not is_storage_error(e):
                raise
            return False
        return True

    # -- writing -----------------------------------------------------------------------------
    def add(self, records: list[CallRecord], sinks: list[str], now: float | None = None) -> list[int]:
        """Commit records and one pending delivery per sink, in one transaction."""
        now = time.time() if now is None else now

        def insert() -> list[int]:
            with self._tx():
                return self._insert(records, sinks, now)

        return self._write("add", insert)

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

        def insert() -> bool:
            with self._tx():
                if self.db.execute("SELECT 1 FROM inbound_seen WHERE key=?", (key,)).fetchone():
                    return False
                self.db.execute("INSERT INTO inbound_seen(key, created_at) VALUES (?,?)", (key, now))
                self._insert(records, sinks, now)
            return True

        return self._write("add_once", insert)

    def mark_delivered(self, delivery_id: int, now: float | None = None) -> None:
        self._write(
            "mark_delivered",
            lambda: self.db.execute(
                "UPDATE deliveries SET state='delivered', attempts=attempts+1, done_at=?, last_error=NULL"
                " WHERE id=?",
                (time.time() if now is None else now, delivery_id),
            ),
        )

    def mark_retry(self, delivery_id: int, next_try_at: float, error: str) -> None:
        self._write(
            "mark_retry",
            lambda: self.db.execute(
                "UPDATE deliveries SET attempts=attempts+1, next_try_at=?, last_error=? WHERE id=?",
                (next_try_at, self.redact(error)[:1000], delivery_id),
            ),
        )

    def mark_dead(self, delivery_id: int, reason: str, now: float | None = None) -> None:
        self._write(
            "mark_dead",
            lambda: self.db.execute(
                "UPDATE deliveries SET state='dead', attempts=attempts+1, done_at=?, last_error=? WHERE id=?",
                (time.time() if now is None else now, self.redact(reason)[:1000], delivery_id),
            ),
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

    def due(self, sink: str, now: float, limit: int = 100, exclude: Collection[str] = ()) -> list[Delivery]:
        """The heads of calls whose time has come, oldest first: one delivery per call, and none
        of a call that has an earlier delivery pending or dead (an END never overtakes its START,
        a dead INTERNAL holds its END). ``exclude``: calls already being delivered."""
        skip, args = _not_in("d.pbx_call_id", exclude)
        # "+d.next_try_at": not through the next_try_at index, which would test every pending row
        # and sort them; walking deliveries_queue in id order stops at LIMIT heads.
        rows = self.db.execute(
            self._SELECT
            + " WHERE d.sink=? AND d.state='pending' AND +d.next_try_at<=?"
            + _HEAD
            + skip
            + " ORDER BY d.id LIMIT ?",
            (sink, now, *args, limit),
        ).fetchall()
        return [self._row(r) for r in rows]

    def head(self, sink: str, pbx_call_id: str, now: float) -> Delivery | None:
        """The call's next delivery for ``sink`` if it is due now (None: done, waiting or held)."""
        row = self.db.execute(
            self._SELECT + " WHERE d.sink=? AND d.pbx_call_id=? AND d.state IN ('pending','dead')"
            " ORDER BY d.id LIMIT 1",
            (sink, pbx_call_id),
        ).fetchone()
        if row is None:
            return None
        d = self._row(row)
        return d if d.state == State.PENDING.value and d.next_try_at <= now else None

    def next_due_at(self, sink: str, exclude: Collection[str] = ()) -> float | None:
        """When the next head of a call for ``sink`` becomes due (None: nothing pending)."""
        skip, args = _not_in("d.pbx_call_id", exclude)
        row = self.db.execute(
            "SELECT MIN(d.next_try_at) FROM deliveries d WHERE d.sink=? AND d.state='pending'" + _HEAD + skip,
            (sink, *args),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def held(self, limit: int = 100) -> list[tuple[Delivery, int, str]]:
        """Pending deliveries that wait behind an earlier one of their call: (the delivery, the id
        of the delivery that holds it, that one's state)."""
        pairs = self.db.execute(
            "SELECT id, holder FROM (SELECT d.id, (SELECT MIN(e.id) FROM deliveries e"
            " WHERE e.sink=d.sink AND e.pbx_call_id=d.pbx_call_id AND e.state IN ('pending','dead')"
            " AND e.id<d.id) AS holder FROM deliveries d WHERE d.state='pending')"
            " WHERE holder IS NOT NULL ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for delivery_id, holder in pairs:
            row = self.db.execute(self._SELECT + " WHERE d.id=?", (delivery_id,)).fetchone()
            state = self.db.execute("SELECT state FROM deliveries WHERE id=?", (holder,)).fetchone()
            if row is not None and state is not None:
                out.append((self._row(row), int(holder), str(state[0])))
        return out

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
    def expire_held(
        self, sink: str, older_than: float, now: float | None = None
    ) -> tuple[tuple[int, int], ...]:
        """Pending deliveries made before ``older_than`` that wait behind a dead one of their call
        go dead too, saying so ("held behind #N"); ``retry_dead`` replays them in order.
        Returns (delivery id, holder id) pairs."""
        now = time.time() if now is None else now
        rows = self.db.execute(
            "SELECT id, holder FROM (SELECT d.id, (SELECT MIN(e.id) FROM deliveries e"
            " WHERE e.sink=d.sink AND e.pbx_call_id=d.pbx_call_id AND e.state='dead' AND e.id<d.id)"
            " AS holder FROM deliveries d WHERE d.sink=? AND d.state='pending' AND d.created_at<?)"
            " WHERE holder IS NOT NULL ORDER BY id",
            (sink, older_than),
        ).fetchall()
        pairs = tuple((int(i), int(h)) for i, h in rows)
        if pairs:

            def update() -> None:
                with self._tx():
                    self.db.executemany(
                        "UPDATE deliveries SET state='dead', done_at=?, last_error=? WHERE id=?",
                        [(now, f"held behind #{h}: not sent while #{h} is dead", i) for i, h in pairs],
                    )

            self._write("expire_held", update)
        return pairs

    def retry_dead(self, sink: str | None = None, now: float | None = None) -> int:
        """Give dead deliveries another chance (after fixing what killed them). A call's dead
        deliveries are replayed in their order (the one that died first, then those it held),
        each with a fresh ``max_age``."""
        now = time.time() if now is None else now
        q = (
            "UPDATE deliveries SET state='pending', next_try_at=?, attempts=0, done_at=NULL,"
            " created_at=? WHERE state='dead'"
        )
        args: tuple[object, ...] = (now, now)
        if sink:
            q += " AND sink=?"
            args += (sink,)
        return self._write("retry_dead", lambda: self.db.execute(q, args).rowcount)

    def purge(self, older_than: float) -> int:
        """Drop delivered deliveries done before ``older_than``, and records with nothing left."""

        def delete() -> int:
            with self._tx():
                n = self.db.execute(
                    "DELETE FROM deliveries WHERE state='delivered' AND done_at < ?", (older_than,)
                ).rowcount
                self.db.execute(
                    "DELETE FROM records WHERE created_at < ? AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries d WHERE d.record_id = records.id)",
                    (older_than,),
                )
            return int(n)

        return self._write("purge", delete)

    def purge_seen(self, older_than: float) -> int:
        """Forget inbound dedupe keys older than ``older_than``."""
        return self._write(
            "purge_seen",
            lambda: self.db.execute("DELETE FROM inbound_seen WHERE created_at < ?", (older_than,)).rowcount,
        )

    def _tx(self) -> _Tx:
        return _Tx(self.db)

    @contextlib.contextmanager
    def transaction(self, doing: str = "commit") -> Iterator[None]:
        """One commit for several writes: ``add`` inside it joins it (the pipeline commits records
        with the open-call snapshots that explain them). A refusal by the machine, in any of the
        writes or in the commit, rolls it all back and becomes StorageUnavailable."""
        if self._joined:  # already inside one: join it
            yield
            return
        self._joined = True
        try:
            with self._tx():
                yield
        except sqlite3.Error as e:
            if not is_storage_error(e):
                raise
            self.health.failed(e, doing)
            raise StorageUnavailable(f"{self.path}: {e}") from e
        finally:
            self._joined = False
        self.health.ok()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.outer:
            return  # the outer transaction commits or rolls back
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): ROLLBACK would then fail
        # and hide the error that matters.
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
