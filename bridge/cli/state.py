"""The daemon's database for the CLI's commands (outbox, jobs, employees), safe to run as root.

An admin often types ``sudo novofon-bridge outbox list``. SQLite then creates the database (or its
``-wal`` / ``-shm`` files) as root, mode 0644, and the service, running as ``novofon-bridge``,
can no longer open it. So when the CLI runs as root and the state directory belongs to someone
else (the service user), every file of the database that root owns is handed to the directory's
owner with mode 0600, right after opening and again after closing. Run as the service user
(``sudo -u novofon-bridge ...``) nothing needs handing over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bridge.config import Config
from bridge.outbox.store import OutboxStore
from bridge.wiring import open_store


def database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def hand_over(path: Path) -> list[Path]:
    """Root-owned files of the database at ``path`` given to the owner of its directory (0600).

    Nothing happens unless we are root and the directory belongs to another user. Returns the
    files handed over."""
    if os.geteuid() != 0:
        return []
    try:
        folder = path.parent.stat()
    except FileNotFoundError:
        return []
    if folder.st_uid == 0:
        return []
    moved = []
    for file in database_files(path):
        with contextlib.suppress(FileNotFoundError):  # -wal/-shm come and go with connections
            if file.stat().st_uid == 0:
                os.chown(file, folder.st_uid, folder.st_gid)
                os.chmod(file, 0o600)
                moved.append(file)
    return moved


@contextlib.contextmanager
def cli_store(cfg: Config) -> Iterator[OutboxStore]:
    """The outbox database as the daemon opens it (secrets masked in stored errors), its files
    left to the state directory's owner."""
    store = open_store(cfg)
    hand_over(cfg.outbox_path)
    try:
        yield store
    finally:
        store.close()
        hand_over(cfg.outbox_path)
