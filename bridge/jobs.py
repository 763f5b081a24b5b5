"""Work that an inbound request asked for, committed before we answered and done afterwards.

Bitrix24 and Telegram do not retry their deliveries, so a request is checked and stored as a job
in SQLite, answered, and then worked off here — retried with backoff until it is too old.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bridge.sinks.base import DeliveryError, PermanentFailure

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
"""

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Jobs:
    def __init__(self, db: sqlite3.Connection, max_age: float = 6 * 3600.0) -> None:
        self.db = db
        self.max_age = max_age
        self.handlers: dict[str, tuple[Handler, float]] = {}
        self.wake = asyncio.Event()
        db.executescript(SCHEMA)

    def handle(self, kind: str, handler: Handler, max_age: float | None = None) -> None:
        self.handlers[kind] = (handler, self.max_age if max_age is None else max_age)

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO jobs(kind, payload, next_try_at, created_at) VALUES (?,?,?,?)",
            (kind, json.dumps(payload, ensure_ascii=False), now, now),
        )
        self.wake.set()

    def pending(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    async def run(self) -> None:
        while True:
            self.wake.clear()
            await self.work()
            row = self.db.execute("SELECT MIN(next_try_at) FROM jobs").fetchone()
            timeout = 60.0 if row[0] is None else min(60.0, max(0.05, row[0] - time.time()))
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def work(self) -> None:
        now = time.time()
        rows = self.db.execute(
            "SELECT id, kind, payload, attempts, created_at FROM jobs WHERE next_try_at<=?"
            " ORDER BY id LIMIT 20",
            (now,),
        ).fetchall()
        for job_id, kind, payload, attempts, created in rows:
            handler, max_age = self.handlers.get(kind, (None, 0.0))
            try:
                if handler is None:
                    raise PermanentFailure(f"no handler for job kind {kind!r}")
                await handler(json.loads(payload))
                self.db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            except PermanentFailure as e:
                log.error("job.failed", job=job_id, kind=kind, error=str(e))
                self.db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            except DeliveryError as e:
                if time.time() - created > max_age:
                    log.error("job.expired", job=job_id, kind=kind, error=str(e))
                    self.db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
                    continue
                delay = min(600.0, 2.0 * 2**attempts)
                log.warning("job.retry", job=job_id, kind=kind, error=str(e), retry_in=delay)
                self.db.execute(
                    "UPDATE jobs SET attempts=attempts+1, next_try_at=?, last_error=? WHERE id=?",
                    (time.time() + delay, str(e)[:500], job_id),
                )
