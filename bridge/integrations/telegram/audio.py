"""Recordings made fit for Telegram: sendAudio takes MP3/M4A only (a WAV is refused there).

MixMonitor writes WAV. With LAME (Debian's `lame`, a few hundred KB, installed by deploy/install.sh)
the file becomes an MP3 that plays inline in the chat (about 1/10 of the WAV's size at telephone
quality); without it the WAV goes as a document, which Telegram takes in any format. Conversion runs
in a subprocess, off the event loop.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

CONVERT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Upload:
    method: str  # sendAudio | sendDocument
    field: str  # audio | document
    filename: str
    content_type: str
    content: bytes


def lame() -> str | None:
    return shutil.which("lame") or shutil.which("lame", path="/usr/bin:/usr/local/bin")


async def prepare(path: Path) -> Upload:
    """What to upload for ``path``: MP3 as audio when it is (or can become) one, else a document."""
    suffix = path.suffix.lower()
    if suffix in (".mp3", ".m4a"):
        content = await asyncio.to_thread(path.read_bytes)
        ctype = "audio/mpeg" if suffix == ".mp3" else "audio/mp4"
        return Upload("sendAudio", "audio", path.name, ctype, content)
    encoder = lame()
    if suffix == ".wav" and encoder is not None:
        mp3 = await _to_mp3(encoder, path)
        if mp3 is not None:
            return Upload("sendAudio", "audio", path.with_suffix(".mp3").name, "audio/mpeg", mp3)
    content = await asyncio.to_thread(path.read_bytes)
    return Upload("sendDocument", "document", path.name, "application/octet-stream", content)


async def _to_mp3(encoder: str, path: Path) -> bytes | None:
    """``lame`` into a temporary file; None when it fails (the WAV is then sent as it is)."""
    with tempfile.TemporaryDirectory(prefix="novofon-bridge-") as tmp:
        out = Path(tmp) / "recording.mp3"
        proc = await asyncio.create_subprocess_exec(
            encoder,
            "--quiet",
            "-V",
            "6",
            str(path),
            str(out),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(CONVERT_TIMEOUT):
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        if code != 0 or not out.is_file():
            return None
        return await asyncio.to_thread(out.read_bytes)
