"""Can the service user read Asterisk's recordings? (``check``: asterisk.recordings_dir)

``check`` is usually run as root, who can read anything, so the answer is worked out for the
user the service runs as (deploy/novofon-bridge.service: User=novofon-bridge,
SupplementaryGroups=asterisk) from the owners and mode bits of the folder, its parents and the
newest recordings (FreePBX files them in dated sub-folders). ACLs are not read: a folder opened
to the service by setfacl alone is reported as closed, and the fix says so.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "novofon-bridge"
SERVICE_GROUPS = ("asterisk",)  # SupplementaryGroups= of the systemd unit
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")  # ProtectHome, PrivateTmp
SAMPLE = 3  # newest files looked at


@dataclass(frozen=True)
class Who:
    name: str
    uid: int
    gids: frozenset[int]
    service: bool  # the service's own user (False: it does not exist here; the current user)


def service_identity() -> Who:
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        uid = os.geteuid()
        return Who(_owner(uid), uid, frozenset({os.getegid(), *os.getgroups()}), False)
    gids = {pw.pw_gid}
    gids.update(g.gr_gid for g in grp.getgrall() if SERVICE_USER in g.gr_mem)
    for name in SERVICE_GROUPS:
        with contextlib.suppress(KeyError):
            gids.add(grp.getgrnam(name).gr_gid)
    return Who(SERVICE_USER, pw.pw_uid, frozenset(gids), True)


def allows(st: os.stat_result, who: Who, want: int) -> bool:
    """Whether the mode bits give ``who`` every bit of ``want`` (4 read, 2 write, 1 search)."""
    if who.uid == 0:
        return True
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == who.uid:
        bits = mode >> 6
    elif st.st_gid in who.gids:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _describe(path: Path, st: os.stat_result) -> str:
    return f"{path} ({_owner(st.st_uid)}:{_group(st.st_gid)}, {stat.S_IMODE(st.st_mode):04o})"


def newest_files(folder: Path, limit: int = SAMPLE, depth: int = 3) -> list[Path]:
    """The newest files under ``folder``, following the newest sub-folder down (YYYY/MM/DD)."""
    here = folder
    for _ in range(depth + 1):
        try:
            entries = list(os.scandir(here))
        except OSError:
            return []
        files = sorted(
            (e for e in entries if e.is_file(follow_symlinks=False)),
            key=lambda e: e.stat().st_mtime,
            reverse=True,
        )
        if files:
            return [Path(e.path) for e in files[:limit]]
        dirs = sorted(
            (e for e in entries if e.is_dir(follow_symlinks=False)), key=lambda e: e.name, reverse=True
        )
        if not dirs:
            return []
        here = Path(dirs[0].path)
    return []


def unreadable(folder: Path, who: Who) -> str | None:
    """The first thing on the way to the recordings ``who`` cannot read (None: all readable).
    FileNotFoundError when the folder does not exist."""
    st = folder.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(str(folder))
    for parent in reversed(folder.parents):
        pst = parent.stat()
        if not allows(pst, who, 1):
            return _describe(parent, pst)
    if not allows(st, who, 4 | 1):
        return _describe(folder, st)
    for file in newest_files(folder):
        for part in reversed(file.relative_to(folder).parents):
            if part == Path("."):
                continue
            dst = (folder / part).stat()
            if not allows(dst, who, 4 | 1):
                return _describe(folder / part, dst)
        fst = file.stat()
        if not allows(fst, who, 4):
            return _describe(file, fst)
    return None


def hidden_from_service(folder: Path) -> str | None:
    """A place the hardened unit does not let the service see (ProtectHome=, PrivateTmp=)."""
    text = str(folder)
    for hidden in HIDDEN_FROM_SERVICE:
        if text == hidden or text.startswith(hidden + "/"):
            return hidden
    return None
