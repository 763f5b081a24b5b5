"""State that adapters keep between deliveries, typed by how long it must live.

Three kinds, because housekeeping must treat them differently:

- ``CALL``: per-call views (Telegram message ids, the Bitrix24 CALL_ID of a call), SMS statuses and
  other short-lived memory — purged ``keep_days`` after its last change;
- ``CURSOR``: positions in an outside stream (the Telegram bot's update offset) — kept;
- ``CREDENTIAL``: tokens we were given (the Bitrix24 OAuth refresh token) — never purged.

Owners read and write their state through typed functions of their own (for example
``integrations/bitrix24/state.py``); nobody reads another owner's rows through string keys.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sink_state (
    sink  TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    kind  TEXT NOT NULL DEFAULT 'call',
    PRIMARY KEY (sink, key)
);
"""


class Retention(enum.StrEnum):
    CALL = "call"
    CURSOR = "cursor"
    CREDENTIAL = "credential"


class StateStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(sink_state)")}
        if "kind" not in columns:  # a database from before retention kinds
            db.execute("ALTER TABLE sink_state ADD COLUMN kind TEXT NOT NULL DEFAULT 'call'")
            db.execute("UPDATE sink_state SET kind='credential' WHERE key='oauth'")
            db.execute("UPDATE sink_state SET kind='cursor' WHERE key='offset'")

    def get(self, owner: str, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM sink_state WHERE sink=? AND key=?", (owner, key)).fetchone()
        return None if row is None else str(row[0])

    def put(self, owner: str, key: str, value: str, kind: Retention = Retention.CALL) -> None:
        self.db.execute(
            "INSERT INTO sink_state(sink, key, value, updated_at, kind) VALUES (?,?,?,?,?)"
            " ON CONFLICT(sink, key) DO UPDATE SET value=excluded.value,"
            " updated_at=excluded.updated_at, kind=excluded.kind",
            (owner, key, value, time.time(), kind.value),
        )

    def get_json(self, owner: str, key: str) -> Any:
        raw = self.get(owner, key)
        return None if raw is None else json.loads(raw)

    def put_json(self, owner: str, key: str, value: Any, kind: Retention = Retention.CALL) -> None:
        self.put(owner, key, json.dumps(value, ensure_ascii=False), kind)

    def purge(self, older_than: float) -> int:
        """Forget per-call state untouched since ``older_than``; cursors and credentials stay."""
        return self.db.execute(
            "DELETE FROM sink_state WHERE kind=? AND updated_at < ?", (Retention.CALL.value, older_than)
        ).rowcount
