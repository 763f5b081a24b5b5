"""JSONL sink: one JSON object per record (Novofon field names), appended and fsynced.

``reopen()`` (the daemon calls it on SIGHUP) closes the file and opens the same path again, so
that logrotate can move records.jsonl away and the next record starts a new file.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

from bridge.errors import RetryLater
from bridge.outbox.store import Delivery


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # a write (in a worker thread) never meets a reopen halfway
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _write(self, data: bytes) -> None:
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    async def send(self, delivery: Delivery) -> None:
        line = json.dumps(delivery.record.to_json(), ensure_ascii=False) + "\n"
        try:
            await asyncio.to_thread(self._write, line.encode())
        except OSError as e:  # disk full, read-only: the record stays in the outbox, tried again
            raise RetryLater(f"cannot write {self.path}: {e.strerror or e}") from None

    def reopen(self) -> None:
        """Start writing to a fresh ``path`` (after logrotate moved the old file away)."""
        with self._lock:
            fd = self._open()
            os.close(self._fd)
            self._fd = fd

    async def close(self) -> None:
        with self._lock:
            os.close(self._fd)
