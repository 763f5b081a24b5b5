"""JSONL sink: one JSON object per record (Novofon field names), appended and fsynced."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from bridge.errors import RetryLater
from bridge.outbox.store import Delivery


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _write(self, data: bytes) -> None:
        os.write(self._fd, data)
        os.fsync(self._fd)

    async def send(self, delivery: Delivery) -> None:
        line = json.dumps(delivery.record.to_json(), ensure_ascii=False) + "\n"
        try:
            await asyncio.to_thread(self._write, line.encode())
        except OSError as e:  # disk full, read-only: the record stays in the outbox, tried again
            raise RetryLater(f"cannot write {self.path}: {e.strerror or e}") from None

    async def close(self) -> None:
        os.close(self._fd)
