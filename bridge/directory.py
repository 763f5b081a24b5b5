"""The employee directory: extension <-> name <-> Bitrix24 user <-> Telegram chat.

Kept in SQLite (the outbox's database) so that every sink can ask "who is extension 101" and the
answer survives restarts. Sources: static entries in config.yaml, Bitrix24 (events and periodic
sync), and employees linking their Telegram chat themselves (/start with a one-time code).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS employees (
    extension        TEXT PRIMARY KEY,
    name             TEXT NOT NULL DEFAULT '',
    bitrix_user_id   TEXT NOT NULL DEFAULT '',
    telegram_chat_id TEXT NOT NULL DEFAULT '',
    active           INTEGER NOT NULL DEFAULT 1,
    source           TEXT NOT NULL DEFAULT 'config',
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS employees_bitrix ON employees(bitrix_user_id);
CREATE INDEX IF NOT EXISTS employees_telegram ON employees(telegram_chat_id);
CREATE TABLE IF NOT EXISTS link_codes (
    code       TEXT PRIMARY KEY,
    extension  TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS link_code_misses (
    chat_id TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS link_code_misses_chat ON link_code_misses(chat_id, at);
"""

LINK_CODE_TTL = 24 * 3600.0
# A chat may try this many wrong link codes per window, then it is refused until the window passes
# (8-digit codes: guessing one takes millions of tries, not a few per hour).
LINK_CODE_MISSES = 5
LINK_CODE_MISS_WINDOW = 3600.0


@dataclass(frozen=True)
class Employee:
    extension: str
    name: str = ""
    bitrix_user_id: str = ""
    telegram_chat_id: str = ""
    active: bool = True
    source: str = "config"


class Directory:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    # -- reading -------------------------------------------------------------------------------
    def _one(self, where: str, arg: str) -> Employee | None:
        row = self.db.execute(
            "SELECT extension, name, bitrix_user_id, telegram_chat_id, active, source FROM employees"
            f" WHERE {where} = ? ORDER BY active DESC LIMIT 1",
            (arg,),
        ).fetchone()
        return None if row is None else Employee(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def get(self, extension: str) -> Employee | None:
        return self._one("extension", extension) if extension else None

    def by_bitrix_user(self, user_id: str) -> Employee | None:
        return self._one("bitrix_user_id", user_id) if user_id else None

    def by_telegram(self, chat_id: str) -> Employee | None:
        return self._one("telegram_chat_id", chat_id) if chat_id else None

    def all(self) -> list[Employee]:
        rows = self.db.execute(
            "SELECT extension, name, bitrix_user_id, telegram_chat_id, active, source FROM employees"
            " ORDER BY extension"
        ).fetchall()
        return [Employee(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in rows]

    def telegram_chat(self, extension: str) -> str | None:
        e = self.get(extension)
        return e.telegram_chat_id if e and e.active and e.telegram_chat_id else None

    def bitrix_user(self, extension: str) -> str | None:
        e = self.get(extension)
        return e.bitrix_user_id if e and e.active and e.bitrix_user_id else None

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM employees WHERE active=1").fetchone()[0])

    # -- writing -------------------------------------------------------------------------------
    def upsert(self, e: Employee, keep_telegram: bool = True) -> None:
        """Insert or update; a Telegram chat the employee linked themselves is kept when the
        source (Bitrix24 without a Telegram field, say) has none."""
        self.db.execute(
            "INSERT INTO employees(extension, name, bitrix_user_id, telegram_chat_id, active, source,"
            " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(extension) DO UPDATE SET"
            " name=excluded.name, bitrix_user_id=excluded.bitrix_user_id,"
            " telegram_chat_id=CASE WHEN excluded.telegram_chat_id='' AND ? THEN employees.telegram_chat_id"
            "                  ELSE excluded.telegram_chat_id END,"
            " active=excluded.active, source=excluded.source, updated_at=excluded.updated_at",
            (
                e.extension,
                e.name,
                e.bitrix_user_id,
                e.telegram_chat_id,
                int(e.active),
                e.source,
                time.time(),
                int(keep_telegram),
            ),
        )

    def set_telegram(self, extension: str, chat_id: str) -> None:
        self.db.execute("UPDATE employees SET telegram_chat_id='' WHERE telegram_chat_id=?", (chat_id,))
        self.db.execute(
            "UPDATE employees SET telegram_chat_id=?, updated_at=? WHERE extension=?",
            (chat_id, time.time(), extension),
        )

    def deactivate_others(self, source: str, keep: set[str]) -> int:
        """Employees from ``source`` that it no longer lists become inactive (kept, not deleted)."""
        rows = self.db.execute(
            "SELECT extension FROM employees WHERE source=? AND active=1", (source,)
        ).fetchall()
        gone = [r[0] for r in rows if r[0] not in keep]
        for ext in gone:
            self.db.execute(
                "UPDATE employees SET active=0, updated_at=? WHERE extension=?", (time.time(), ext)
            )
        return len(gone)

    # -- one-time Telegram link codes ----------------------------------------------------------
    def new_link_code(self, extension: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        code = f"{secrets.randbelow(10**8):08d}"
        self.db.execute("DELETE FROM link_codes WHERE extension=? OR expires_at<?", (extension, now))
        self.db.execute(
            "INSERT INTO link_codes(code, extension, expires_at) VALUES (?,?,?)",
            (code, extension, now + LINK_CODE_TTL),
        )
        return code

    def link_code_misses(self, chat_id: str, now: float | None = None) -> int:
        """Wrong codes this chat sent within the last ``LINK_CODE_MISS_WINDOW`` seconds."""
        now = time.time() if now is None else now
        self.db.execute("DELETE FROM link_code_misses WHERE at < ?", (now - LINK_CODE_MISS_WINDOW,))
        row = self.db.execute("SELECT COUNT(*) FROM link_code_misses WHERE chat_id=?", (chat_id,)).fetchone()
        return int(row[0])

    def note_link_code_miss(self, chat_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute("INSERT INTO link_code_misses(chat_id, at) VALUES (?,?)", (chat_id, now))

    def use_link_code(self, code: str, now: float | None = None) -> str | None:
        """The extension the code was made for, once: the code is consumed."""
        now = time.time() if now is None else now
        row = self.db.execute("SELECT extension, expires_at FROM link_codes WHERE code=?", (code,)).fetchone()
        if row is None:
            return None
        self.db.execute("DELETE FROM link_codes WHERE code=?", (code,))
        return str(row[0]) if row[1] >= now else None
