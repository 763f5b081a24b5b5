"""Recordings served over HTTP with expiring signed links.

CRMs built for Novofon fetch a recording by ``call_id_with_rec`` from Novofon's API, which knows
nothing of calls on our own Asterisk. So the daemon serves the files itself:
``GET /recordings/<file>?exp=<unix time>&sig=<HMAC>`` answers the file while the link is valid
and its signature (HMAC-SHA256 over the file's path in the recordings folder, e.g.
``2026/11/29/in-74950000120-….wav`` for FreePBX's dated folders, and the expiry, with
``novofon.recordings_key``) matches; anything else is a 403 or 404 that says nothing about the
files there. Each record with a recording gets its link in ``meta.recording_url`` (Bitrix24 can
attach by that URL; Telegram and the JSONL file show it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from bridge.calls.records import CallRecord
from bridge.errors import BadRequest

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")  # one folder or file name: never ".." or hidden
MAX_DEPTH = 6  # folders below recordings_dir (FreePBX: YYYY/MM/DD)
AUDIO = (".wav", ".mp3", ".ogg", ".gsm", ".wav49")


def valid_name(name: str) -> bool:
    """A file's path inside the recordings folder, as links name it: plain parts, no way out."""
    parts = name.split("/")
    return len(parts) <= MAX_DEPTH + 1 and all(_PART.fullmatch(p) and ".." not in p for p in parts)


class RecordingLinks:
    def __init__(self, base_url: str, key: str, ttl: float, folder: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key.encode()
        self.ttl = ttl
        self.folder = folder

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._key, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()[:40]

    def link(self, path: Path, now: float | None = None) -> str | None:
        """A link to ``path`` valid for ``ttl`` seconds; None for a file outside the folder."""
        try:
            name = path.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return None
        if not valid_name(name):
            return None
        expires = int((time.time() if now is None else now) + self.ttl)
        sig = self._sign(name, expires)
        return f"{self.base_url}/recordings/{quote(name)}?exp={expires}&sig={sig}"

    def meta_for(self, r: CallRecord) -> dict[str, str]:
        """The pipeline's enricher: a link for a record that names a recording file."""
        file = r.meta.get("recording_file")
        if not file:
            return {}
        url = self.link(Path(file))
        return {"recording_url": url} if url else {}

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "")
        if not valid_name(name) or not name.lower().endswith(AUDIO):
            raise BadRequest(404, "not-found", "no such recording")
        try:
            expires = int(request.query.get("exp", ""))
        except ValueError:
            raise BadRequest(403, "bad-link", "the link is incomplete") from None
        given = request.query.get("sig", "")
        if not hmac.compare_digest(given.encode(), self._sign(name, expires).encode()):
            raise BadRequest(403, "bad-link", "the link's signature does not match")
        if expires < time.time():
            raise BadRequest(403, "link-expired", "the link has expired: ask for a new one")
        path = self.folder / name
        try:  # a symbolic link inside the folder that leads out of it is no recording of ours
            path.resolve().relative_to(self.folder.resolve())
        except ValueError:
            raise BadRequest(404, "not-found", "no such recording") from None
        if not path.is_file():
            raise BadRequest(404, "not-found", "no such recording (deleted, or not written yet)")
        return web.FileResponse(
            path, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private"}
        )
