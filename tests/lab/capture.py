"""Record the raw AMI byte stream of the lab PBX into a transcript file (for unit tests/bench)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tests.lab import lab


class Capture:
    """Log in to the lab PBX and append every byte Asterisk sends (minus the login) to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.started = asyncio.Event()

    async def _run(self) -> None:
        reader, writer = await asyncio.open_connection(lab.PBX_IP, lab.AMI_PORT)
        self._writer = writer
        await reader.readline()
        writer.write(
            f"Action: Login\r\nUsername: {lab.AMI_USER}\r\nSecret: {lab.AMI_SECRET}\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        self.started.set()
        with self.path.open("wb") as out:
            while data := await reader.read(65536):
                out.write(data)
                out.flush()

    async def __aenter__(self) -> Capture:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.started.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._writer is not None
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._task
