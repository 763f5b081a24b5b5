"""Work that an inbound request asked for, committed before we answered and done afterwards.

Bitrix24 and Telegram do not retry their deliveries, so a request is checked and stored as a job
in SQLite, answered, and then worked off here, with the outbox's discipline:

- the age is checked *before* a job runs: a click-to-call committed before a restart is dropped
  (dead, visible) after its own deadline instead of ringing hours later;
- every handler runs under a catch-all: an unexpected exception is a failed attempt, logged with
  the job id, retried with backoff — never the end of the runner;
- ``PermanentFailure`` and expiry leave a dead letter that ``novofon-bridge jobs`` lists and retries;
- ``add(..., once=KEY)`` remembers the dedupe key and enqueues in one transaction.

A handler must make each of its outside side effects happen at most once per job: one that does
two things (link a chat, then say so) enqueues the second as a job of its own.

When the storage refuses writes (disk full, read-only): ``add`` raises StorageUnavailable (the HTTP
route answers 503, nothing is stored), and a job that ran but whose outcome cannot be written is
remembered in memory, never run again, and its outcome written as soon as the storage takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.errors import PermanentFailure, RetryLater, StorageUnavailable
from bridge.outbox.health import StorageHealth, is_storage_error

log = structlog.get_logger("bridge.jobs")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    created_at  REAL NOT NULL,
    last_error  TEXT
);
CREATE TABLE IF NOT EXISTS inbound_seen (
    key        TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
"""

Handler = Callable[[dict[str, Any]], Awaitable[None]]
BATCH = 20


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: float
    state: str
    last_error: str | None


class Jobs:
    def __init__(
        self,
        db: sqlite3.Connection,
        max_age: float = 6 * 3600.0,
        redact: Callable[[str], str] | None = None,
        health: StorageHealth | None = None,
    ) -> None:
        self.db = db
        self.max_age = max_age
        self.redact: Callable[[str], str] = redact or (lambda text: text)  # for stored errors
        self.health = health
        self.handlers: dict[str, tuple[Handler, float]] = {}
        self.wake = asyncio.Event()
        self._unsettled: dict[int, Callable[[], None]] = {}  # job id -> its outcome, not yet written
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        if "state" not in columns:
            db.execute("ALTER TABLE jobs ADD COLUMN state TEXT NOT NULL DEFAULT 'pending'")

    def handle(self, kind: str, handler: Handler, max_age: float | None = None) -> None:
        self.handlers[kind] = (handler, self.max_age if max_age is None else max_age)

    def add(self, kind: str, payload: dict[str, Any], once: str | None = None, window: float = 86400) -> bool:
        """Commit a job; with ``once``, only if that key was not seen within ``window`` seconds
        (the key is remembered in the same transaction). False: a repeat, nothing added."""
        now = time.time()
        try:
            return self._add(kind, payload, once, window, now)
        except sqlite3.Error as e:
            if not is_storage_error(e):
                raise
            if self.health is not None:
                self.health.failed(e, "jobs.add")
            raise StorageUnavailable(str(e)) from e

    def _add(self, kind: str, payload: dict[str, Any], once: str | None, window: float, now: float) -> bool:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if once is not None:
                row = self.db.execute("SELECT created_at FROM inbound_seen WHERE key=?", (once,)).fetchone()
                if row is not None and now - float(row[0]) < window:
                    self.db.execute("ROLLBACK")
                    return False
                self.db.execute(
                    "INSERT INTO inbound_seen(key, created_at) VALUES (?,?)"
                    " ON CONFLICT(key) DO UPDATE SET created_at=excluded.created_at",
                    (once, now),
                )
            self.db.execute(
                "INSERT INTO jobs(kind, payload, next_try_at, created_at) VALUES (?,?,?,?)",
                (kind, json.dumps(payload, ensure_ascii=False), now, now),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite may have rolled back already (disk full)
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise
        if self.health is not None:
            self.health.ok()
        self.wake.set()
        return True

    # -- reading and repair (also used by the CLI while the daemon runs) ----------------------
    def pending(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE state='pending'").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def list(self, state: str = "dead", limit: int = 100) -> list[Job]:
        rows = self.db.execute(
            "SELECT id, kind, payload, attempts, created_at, state, last_error FROM jobs"
            " WHERE state=? ORDER BY id LIMIT ?",
            (state, limit),
        ).fetchall()
        return [Job(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def retry_dead(self, kind: str | None = None) -> int:
        """Dead jobs run again, as if just asked for (their deadline starts anew)."""
        now = time.time()
        q = "UPDATE jobs SET state='pending', attempts=0, next_try_at=?, created_at=? WHERE state='dead'"
        args: tuple[object, ...] = (now, now)
        if kind:
            q += " AND kind=?"
            args += (kind,)
        n = self.db.execute(q, args).rowcount
        self.wake.set()
        return n

    def purge_dead(self, older_than: float) -> int:
        return self.db.execute(
            "DELETE FROM jobs WHERE state='dead' AND next_try_at < ?", (older_than,)
        ).rowcount

    # -- running -------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self.wake.clear()
            await self.work()
            row = self.db.execute("SELECT MIN(next_try_at) FROM jobs WHERE state='pending'").fetchone()
            timeout = 60.0 if row[0] is None else min(60.0, max(0.05, row[0] - time.time()))
            if self._unsettled:
                timeout = min(timeout, 1.0)
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def work(self) -> None:
        for job_id, write in list(self._unsettled.items()):
            if not self._settle(job_id, write):
                return  # the storage still refuses writes: run nothing new meanwhile
        rows = self.db.execute(
            "SELECT id, kind, payload, attempts, created_at FROM jobs"
            " WHERE state='pending' AND next_try_at<=? ORDER BY id LIMIT ?",
            (time.time(), BATCH),
        ).fetchall()
        for job_id, kind, payload, attempts, created in rows:
            if job_id not in self._unsettled:
                await self._run_one(job_id, kind, payload, attempts, created)

    def _settle(self, job_id: int, write: Callable[[], None]) -> bool:
        """Write a job's outcome; if the storage refuses it, keep it for later (True: written)."""
        try:
            write()
        except sqlite3.Error as e:
            if not is_storage_error(e):
                raise
            if self.health is not None:
                self.health.failed(e, "jobs")
            self._unsettled[job_id] = write
            return False
        self._unsettled.pop(job_id, None)
        if self.health is not None:
            self.health.ok()
        return True

    async def _run_one(self, job_id: int, kind: str, payload: str, attempts: int, created: float) -> None:
        handler, max_age = self.handlers.get(kind, (None, self.max_age))
        if handler is None:
            self._settle(job_id, lambda: self._dead(job_id, kind, f"no handler for job kind {kind!r}"))
            return
        age = time.time() - created
        if age > max_age:
            reason = f"too old to run ({age:.0f} s > {max_age:.0f} s): dropped"
            self._settle(job_id, lambda: self._dead(job_id, kind, reason))
            return
        try:
            await handler(json.loads(payload))
        except PermanentFailure as e:
            reason = str(e)
            self._settle(job_id, lambda: self._dead(job_id, kind, reason))
            return
        except RetryLater as e:
            error, after = str(e), e.retry_after
            self._settle(job_id, lambda: self._retry(job_id, kind, attempts, created, max_age, error, after))
            return
        except Exception as e:  # a bug in a handler: a failed attempt, never the end of the runner
            log.exception("job.crashed", job=job_id, kind=kind)
            error = f"{type(e).__name__}: {e}"
            self._settle(job_id, lambda: self._retry(job_id, kind, attempts, created, max_age, error, None))
            return
        self._settle(job_id, lambda: self._done(job_id))

    def _done(self, job_id: int) -> None:
        self.db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def _retry(
        self,
        job_id: int,
        kind: str,
        attempts: int,
        created: float,
        max_age: float,
        error: str,
        retry_after: float | None,
    ) -> None:
        delay = (
            retry_after
            if retry_after is not None
            else random.uniform(0.5, 1.0) * min(600.0, 2.0 * 2**attempts)
        )
        if time.time() + delay - created > max_age:
            self._dead(job_id, kind, f"gave up after {attempts + 1} attempts: {error}")
            return
        log.warning("job.retry", job=job_id, kind=kind, error=error, retry_in=round(delay, 2))
        self.db.execute(
            "UPDATE jobs SET attempts=attempts+1, next_try_at=?, last_error=? WHERE id=?",
            (time.time() + delay, self.redact(error)[:500], job_id),
        )

    def _dead(self, job_id: int, kind: str, reason: str) -> None:
        log.error("job.dead", job=job_id, kind=kind, reason=reason)
        self.db.execute(
            "UPDATE jobs SET state='dead', attempts=attempts+1, next_try_at=?, last_error=? WHERE id=?",
            (time.time(), self.redact(reason)[:500], job_id),
        )
