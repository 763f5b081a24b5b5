"""Where a call's recording is, from what Asterisk says about it (not from a naming convention).

Live, MixMonitor names its file on the channel (``MIXMONITOR_FILENAME``, a VarSet event; Getvar for
a call adopted after a restart). MixMonitor resolves a relative name against Asterisk's monitor
folder (``<astspooldir>/monitor``), so the variable holds an absolute path *as Asterisk sees it*:
``/var/spool/asterisk/monitor/2026/11/29/in-74950000120-79001110001-20261129-101500-1764400500.12.wav``
on FreePBX, ``/var/spool/asterisk/monitor/1764400500.12.wav`` with our own snippet. The daemon may
see that folder elsewhere (a container's bind mount, a chroot): ``asterisk.pbx_recordings_dir``
names it as Asterisk does, ``asterisk.recordings_dir`` as the daemon does.

After the fact (a call that ended while nobody listened), the CDR may name the file (FreePBX's
``recordingfile`` column: the bare name, in the dated folder of the call's day); else the folder
is searched for a file whose name holds one of the call's Uniqueids: the top level and the dated
folders (``YYYY/MM/DD``) of the days the call touched.

A file outside ``recordings_dir`` is never named: the daemon sends what it names to Telegram,
Bitrix24 and anyone with a signed link.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from bridge.config import Config

log = structlog.get_logger("bridge.pbx")

AUDIO = (".wav", ".wav49", ".WAV", ".gsm", ".mp3", ".ogg", ".sln", ".g722", ".raw")
ASTERISK_MONITOR = "/var/spool/asterisk/monitor"  # Asterisk's default <astspooldir>/monitor


def _inside(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` (both absolute, normalised), or None when it is not inside."""
    if path == folder:
        return None
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else None


class RecordingFiles:
    def __init__(self, folder: str, pbx_folder: str = ASTERISK_MONITOR, timezone: str = "UTC") -> None:
        self.folder = Path(posixpath.normpath(folder)) if folder else None
        self.pbx_folder = posixpath.normpath(pbx_folder) if pbx_folder else ""
        self._tz = ZoneInfo(timezone)

    def resolve(self, reported: str) -> Path | None:
        """The daemon's path of a file Asterisk named (absolute as Asterisk sees it, or relative to
        its monitor folder); None when it would lie outside ``recordings_dir``."""
        if self.folder is None or not reported or "\0" in reported:
            return None
        local = str(self.folder)
        if reported.startswith("/"):
            name = posixpath.normpath(reported)
            rel = _inside(name, local)
            if rel is None and self.pbx_folder:
                rel = _inside(name, self.pbx_folder)
        else:
            rel = posixpath.normpath(reported)
        if rel is None or rel == "." or rel.startswith("../") or rel == ".." or rel.startswith("/"):
            log.warning("recordings.outside_folder", file=reported, recordings_dir=local)
            return None
        return self.folder / rel

    def find(self, ids: Iterable[str], when: Iterable[float], name: str = "") -> Path | None:
        """A recording that exists: ``name`` (a CDR's recordingfile) where it is, else in the dated
        folders of ``when``; else a file whose name holds one of ``ids`` (Uniqueids), at the top
        level or in those dated folders. None when nothing is there."""
        if self.folder is None:
            return None
        days = sorted({datetime.fromtimestamp(t, self._tz).strftime("%Y/%m/%d") for t in when})
        folders = [self.folder, *(self.folder / d for d in days)]
        if name:
            base = posixpath.basename(name)
            named = [name] if "/" in name else []
            for candidate in [*named, *(str(f / base) for f in folders)]:
                path = self.resolve(candidate)
                if path is not None and path.is_file():
                    return path
        wanted = [i for i in dict.fromkeys(ids) if i]
        for uid in wanted:  # our own snippet's name first: a stat, no listing
            for ext in AUDIO:
                path = self.folder / f"{uid}{ext}"
                if path.is_file():
                    return path
        for folder in folders:
            try:
                with os.scandir(folder) as entries:
                    names = [e.name for e in entries if e.is_file()]
            except OSError:
                continue
            for uid in wanted:
                for n in sorted(names):
                    if _holds(n, uid) and n.endswith(AUDIO):
                        return folder / n
        return None


def recording_files(cfg: Config) -> RecordingFiles:
    a = cfg.asterisk
    return RecordingFiles(a.recordings_dir, a.pbx_recordings_dir, cfg.pbx.timezone)


def _holds(name: str, uniqueid: str) -> bool:
    """``name`` holds ``uniqueid`` as a whole (1700000000.12 is not in 1700000000.123)."""
    start = name.find(uniqueid)
    while start >= 0:
        end = start + len(uniqueid)
        before = name[start - 1] if start else ""
        after = name[end] if end < len(name) else ""
        if not before.isdigit() and before != "." and (not after.isdigit()):
            return True
        start = name.find(uniqueid, start + 1)
    return False
