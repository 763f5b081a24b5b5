"""The employee directory: extension <-> name <-> Bitrix24 user <-> Telegram chat.

Kept in SQLite (the outbox's database) so that every sink can ask "who is extension 101" and the
answer survives restarts. Sources: static entries in config.yaml, Bitrix24 (events and periodic
sync), and employees linking their Telegram chat themselves (/start with a one-time code).

Sources have a priority: an active config.yaml entry is never overridden by Bitrix24 (a Bitrix24
user who puts 101 in their internal-phone field must not receive 101's calls). Such a claim is
refused and kept as a conflict, shown by ``novofon-bridge employees list`` and logged by the sync.
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
CREATE TABLE IF NOT EXISTS employee_conflicts (
    extension  TEXT NOT NULL,
    source     TEXT NOT NULL,
    claimant   TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    owner      TEXT NOT NULL,
    seen_at    REAL NOT NULL,
    PRIMARY KEY (extension, source, claimant)
);
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

# Lower wins. A source not listed here ranks below every listed one.
SOURCE_PRIORITY = {"config": 0, "bitrix24": 10}
_LOWEST = 1000


def priority(source: str) -> int:
    return SOURCE_PRIORITY.get(source, _LOWEST)


@dataclass(frozen=True)
class Employee:
    extension: str
    name: str = ""
    bitrix_user_id: str = ""
    telegram_chat_id: str = ""
    active: bool = True
    source: str = "config"


@dataclass(frozen=True)
class Conflict:
    """``source`` (its user ``claimant``, called ``name``) claims ``extension``, which ``owner``
    (a source of higher priority) holds: the claim was refused."""

    extension: str
    source: str
    claimant: str
    name: str
    owner: str
    seen_at: float


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
    def upsert(self, e: Employee, keep_telegram: bool = True) -> bool:
        """Insert or update ``e``; False when an active entry of a higher-priority source holds
        the extension (nothing changes; a conflict is recorded unless both name the same
        Bitrix24 user).

        A Telegram chat the employee linked themselves is kept when the source (Bitrix24 without
        a Telegram field, say) has none, as long as the entry stays the same person's (same
        source or same Bitrix24 user): an extension that changes hands never keeps the old chat.
        """
        row = self.db.execute(
            "SELECT source, active, bitrix_user_id, telegram_chat_id FROM employees WHERE extension=?",
            (e.extension,),
        ).fetchone()
        now = time.time()
        if row is not None and row[1] and priority(row[0]) < priority(e.source):
            if not (row[2] and row[2] == e.bitrix_user_id):
                self.db.execute(
                    "INSERT INTO employee_conflicts(extension, source, claimant, name, owner, seen_at)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT(extension, source, claimant) DO UPDATE SET"
                    " name=excluded.name, owner=excluded.owner, seen_at=excluded.seen_at",
                    (e.extension, e.source, e.bitrix_user_id, e.name, row[0], now),
                )
                return False
            self._clear_conflicts(e.extension, e.source)
            return False
        same_person = row is not None and (row[0] == e.source or (row[2] and row[2] == e.bitrix_user_id))
        chat = e.telegram_chat_id
        if not chat and keep_telegram and same_person and row is not None:
            chat = row[3]
        self.db.execute(
            "INSERT INTO employees(extension, name, bitrix_user_id, telegram_chat_id, active, source,"
            " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(extension) DO UPDATE SET"
            " name=excluded.name, bitrix_user_id=excluded.bitrix_user_id,"
            " telegram_chat_id=excluded.telegram_chat_id, active=excluded.active,"
            " source=excluded.source, updated_at=excluded.updated_at",
            (e.extension, e.name, e.bitrix_user_id, chat, int(e.active), e.source, now),
        )
        self._clear_conflicts(e.extension, e.source)
        return True

    def _clear_conflicts(self, extension: str, source: str) -> None:
        self.db.execute("DELETE FROM employee_conflicts WHERE extension=? AND source=?", (extension, source))

    def conflicts(self) -> list[Conflict]:
        rows = self.db.execute(
            "SELECT extension, source, claimant, name, owner, seen_at FROM employee_conflicts"
            " ORDER BY extension, source, claimant"
        ).fetchall()
        return [Conflict(*r) for r in rows]

    def set_telegram(self, extension: str, chat_id: str) -> None:
        self.db.execute("UPDATE employees SET telegram_chat_id='' WHERE telegram_chat_id=?", (chat_id,))
        self.db.execute(
            "UPDATE employees SET telegram_chat_id=?, updated_at=? WHERE extension=?",
            (chat_id, time.time(), extension),
        )

    def deactivate_others(self, source: str, keep: set[str]) -> int:
        """Employees from ``source`` that it no longer lists become inactive (kept, not deleted);
        its refused claims on extensions it no longer lists are forgotten."""
        for (ext,) in self.db.execute(
            "SELECT extension FROM employee_conflicts WHERE source=?", (source,)
        ).fetchall():
            if ext not in keep:
                self._clear_conflicts(ext, source)
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
