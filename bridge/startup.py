"""What stops the daemon or a command from starting, said for people: the real cause and the fix.

Shared by the daemon's start (bridge/app.py), the CLI (bridge/cli/main.py) and ``check``
(bridge/cli/preflight.py), so that a port in use or a storage folder that is a file reads the same
in the journal, on the terminal and in the preflight.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from bridge.i18n import tr


class StartupError(Exception):
    """The daemon or a command cannot start: ``problem`` is what is wrong, ``fix`` what to do."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix

    def __str__(self) -> str:
        return f"{self.problem}. {tr('Что сделать', 'Fix')}: {self.fix}" if self.fix else self.problem


# -- listening on a port ----------------------------------------------------------------------------


def try_listen(bind: str, port: int) -> OSError | None:
    """Whether ``bind:port`` can be listened on now (None: yes), with the socket options the
    daemon's servers use (SO_REUSEADDR, as asyncio's create_server)."""
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return e
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1)
        except OSError as e:
            return e
        finally:
            sock.close()
    return None


def listen_problem(e: OSError, bind: str, port: int, key: str) -> tuple[str, str]:
    """(what is wrong, the fix) for a failure to listen on ``bind:port``; ``key`` is the config
    section that sets them (``http``: http.bind / http.port)."""
    where = f"{bind}:{port}"
    if isinstance(e, socket.gaierror):
        return (
            tr(
                f"адрес {key}.bind {bind!r} не удаётся разрешить: {e.strerror}",
                f"{key}.bind {bind!r} does not resolve: {e.strerror}",
            ),
            tr(
                f"укажите в {key}.bind IP-адрес этой машины, 127.0.0.1 или 0.0.0.0",
                f"set {key}.bind to an IP address of this machine, 127.0.0.1 or 0.0.0.0",
            ),
        )
    if e.errno == errno.EADDRINUSE:
        return (
            tr(
                f"порт {where} уже занят другой программой",
                f"port {where} is already in use by another program",
            ),
            tr(
                f"посмотрите, кто его держит: ss -ltnp 'sport = :{port}'; освободите порт или укажите "
                f"другой {key}.port",
                f"see who holds it: ss -ltnp 'sport = :{port}'; free the port or set another {key}.port",
            ),
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return (
            tr(f"адреса {bind} нет на этой машине", f"address {bind} does not belong to this machine"),
            tr(
                f"укажите в {key}.bind один из адресов машины (ip -br addr), 127.0.0.1 или 0.0.0.0",
                f"set {key}.bind to one of this machine's addresses (ip -br addr), 127.0.0.1 or 0.0.0.0",
            ),
        )
    if e.errno == errno.EACCES:
        return (
            tr(
                f"нет прав открыть порт {where} (порты ниже 1024 открывает только root)",
                f"no permission to listen on {where} (ports below 1024 need root)",
            ),
            tr(
                f"укажите {key}.port от 1024 (по умолчанию 2613); для 443 поставьте перед мостом nginx",
                f"set {key}.port to 1024 or above (default 2613); for 443 put nginx in front",
            ),
        )
    return (
        tr(f"нельзя открыть порт {where}: {e.strerror or e}", f"cannot listen on {where}: {e.strerror or e}"),
        tr(f"проверьте {key}.bind и {key}.port", f"check {key}.bind and {key}.port"),
    )


# -- the storage folder -------------------------------------------------------------------------------


class StorageStartupError(StartupError):
    """The daemon's database cannot live where storage.dir says (exit code 4, as a broken one)."""


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def storage_problem(folder: Path) -> tuple[str, str] | None:
    """(what is wrong, the fix) when the daemon could not keep its database in ``folder``."""
    key = "storage.dir"
    if folder.exists() and not folder.is_dir():
        return (
            tr(f"{key} {folder} — это файл, а не папка", f"{key} {folder} is a file, not a folder"),
            tr(
                f"укажите в {key} папку (по умолчанию /var/lib/novofon-bridge) или уберите этот файл",
                f"set {key} to a folder (default /var/lib/novofon-bridge) or move the file away",
            ),
        )
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if not parent.is_dir():
            return (
                tr(
                    f"{key} {folder}: {parent} — это файл, папку в нём не создать",
                    f"{key} {folder}: {parent} is a file, no folder can be made in it",
                ),
                tr(f"укажите в {key} другую папку", f"set {key} to another folder"),
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            return (
                tr(
                    f"папки {key} {folder} нет, и создать её нельзя: нет прав на запись в {parent}",
                    f"{key} {folder} does not exist and cannot be made: no write access to {parent}",
                ),
                tr(
                    f"создайте её: sudo install -d -o novofon-bridge -g novofon-bridge -m 0750 {folder}",
                    f"create it: sudo install -d -o novofon-bridge -g novofon-bridge -m 0750 {folder}",
                ),
            )
        return None
    if _read_only(folder):
        db = folder / "outbox.sqlite3"
        return (
            tr(
                f"{key} {folder} на файловой системе только для чтения: {db} не записать",
                f"{key} {folder} is on a read-only file system: {db} cannot be written",
            ),
            tr(
                "смонтируйте её на запись (mount -o remount,rw …) или укажите другую папку в storage.dir",
                "remount it read-write (mount -o remount,rw …) or set storage.dir to another folder",
            ),
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            tr(f"нет прав на запись в {key} {folder}", f"no write access to {key} {folder}"),
            tr(
                f"запускайте от владельца папки или отдайте её пользователю службы: "
                f"sudo chown -R novofon-bridge:novofon-bridge {folder}",
                f"run as the folder's owner or give it to the service user: "
                f"sudo chown -R novofon-bridge:novofon-bridge {folder}",
            ),
        )
    for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"):
        db = folder / name
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            return (
                tr(f"нет прав на чтение и запись {db}", f"no read and write access to {db}"),
                tr(
                    f"sudo chown novofon-bridge:novofon-bridge {db} (или запускайте от его владельца)",
                    f"sudo chown novofon-bridge:novofon-bridge {db} (or run as its owner)",
                ),
            )
    return None


def require_storage(folder: Path) -> None:
    """StartupError when the daemon's database could not live in ``folder``."""
    problem = storage_problem(folder)
    if problem is not None:
        raise StorageStartupError(*problem)


def storage_failed(folder: Path, e: Exception) -> StartupError:
    """The database in ``folder`` would not open although the folder looked usable (a full disk,
    a read-only file system, a damaged file)."""
    return StorageStartupError(
        tr(
            f"база данных в {folder} не открывается: {e}",
            f"the database in {folder} does not open: {e}",
        ),
        tr(
            "проверьте место на диске (df -h), что файловая система доступна на запись, и права на "
            "outbox.sqlite3; повреждённую базу переименуйте — мост создаст новую",
            "check free space (df -h), that the file system is writable, and outbox.sqlite3's "
            "permissions; rename a damaged database away and the bridge makes a new one",
        ),
    )
