"""The outbox's storage when the machine fails: open it with a clear message, degrade on writes.

- At start, a database that cannot be opened (missing or unwritable folder, a file that is not a
  database, a read-only file system, no space) is a ``StorageOpenError``: one Russian message that
  names the file and says what to do, for the CLI to print instead of a traceback.
- At run time, a write that SQLite refuses for reasons of the machine (disk full, read-only, I/O
  error, a corrupted page) marks the storage degraded: logged once when it starts and once when a
  later write succeeds again (``StorageHealth``). The callers keep what they could not write and
  try again; an HTTP route answers 503 (bridge.errors.StorageUnavailable).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import structlog

log = structlog.get_logger("bridge.storage")


# SQLite's primary result codes that mean the machine, not our SQL: PERM, BUSY, LOCKED, NOMEM,
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
MACHINE_CODES = frozenset({3, 5, 6, 7, 8, 10, 11, 13, 14, 26})


def is_storage_error(e: BaseException) -> bool:
    """True for failures of the machine (disk full, read-only, I/O error, locked, corrupt), False
    for mistakes in our own SQL ("no such table", IntegrityError...)."""
    if not isinstance(e, sqlite3.Error):
        return False
    code = getattr(e, "sqlite_errorcode", None)
    if code is None:
        return isinstance(e, sqlite3.OperationalError)
    return (int(code) & 0xFF) in MACHINE_CODES


class StorageHealth:
    """Whether writes to ``path`` currently succeed; logs each change of state once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.degraded_since: float | None = None
        self.last_error = ""
        self.failed_writes = 0

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def failed(self, error: BaseException, doing: str) -> None:
        self.failed_writes += 1
        self.last_error = str(error)
        if self.degraded_since is None:
            self.degraded_since = time.time()
            log.error(
                "storage.degraded",
                file=str(self.path),
                error=self.last_error,
                doing=doing,
                advice=advice(self.last_error, self.path),
            )

    def ok(self) -> None:
        if self.degraded_since is not None:
            log.warning(
                "storage.recovered",
                file=str(self.path),
                after_s=round(time.time() - self.degraded_since, 1),
                failed_writes=self.failed_writes,
            )
            self.degraded_since = None
            self.failed_writes = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "degraded": self.degraded,
            "since": self.degraded_since,
            "last_error": self.last_error if self.degraded else None,
        }


def advice(error: str, path: Path) -> str:
    """What a sysadmin should do about ``error`` on ``path`` (Russian)."""
    e = error.lower()
    folder = path.parent
    if "full" in e:
        return f"на диске нет места: освободите место в {folder} (df -h {folder})"
    if "readonly" in e or "read-only" in e:
        return (
            f"файл или диск только для чтения: проверьте, что {folder} смонтирован на запись "
            f"(mount | grep ' {folder}') и что файл принадлежит пользователю службы"
        )
    if "not a database" in e or "malformed" in e or "corrupt" in e:
        return (
            f"файл повреждён: остановите службу, переименуйте его (mv {path} {path}.broken) и "
            f"запустите снова — очередь начнётся пустой; недоставленные записи можно спасти "
            f"командой sqlite3 {path}.broken .recover"
        )
    if "unable to open" in e or "permission" in e or "access" in e:
        return (
            f"нет доступа: каталог {folder} должен существовать и принадлежать пользователю службы "
            f"(chown -R novofon-bridge: {folder}); или задайте другой storage.dir в config.yaml"
        )
    if "i/o" in e:
        return f"ошибка ввода-вывода: проверьте диск ({folder}) и журнал ядра (dmesg)"
    if "locked" in e or "busy" in e:
        return "база занята другим процессом: повторите позже"
    return f"проверьте файл {path} и каталог {folder}"


def diagnose(path: Path, error: str) -> str:
    """Look at the file system itself: SQLite says "unable to open" for several causes."""
    folder = path.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return f"каталога {folder} нет и создать его не удалось: создайте его или задайте другой storage.dir"
    if st.f_flag & os.ST_RDONLY:
        return advice("read-only", path)
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.R_OK | os.W_OK)):
        return advice("permission", path)
    if st.f_bavail == 0:
        return advice("full", path)
    return advice(error, path)


class StorageOpenError(Exception):
    """The database cannot be opened at start: the message is for people (Russian)."""

    def __init__(self, path: Path, error: BaseException | str) -> None:
        self.path = path
        self.error = str(error)
        super().__init__(f"не удаётся открыть очередь {path}: {self.error} — {diagnose(path, self.error)}")
