"""A fake AMI server on loopback that records every byte it receives.

Used to assert what reaches the PBX from each entrance (the CLI, Bitrix24, Telegram): every action
is kept as parsed (``actions``) and as raw bytes (``raw``), so a smuggled second action shows up as
an extra entry. It answers Login (secret checked), Originate ("queued"), Logoff and anything else
with Success; it sends no call events.
"""

from __future__ import annotations

import asyncio
import contextlib

from bridge.pbx.ami import AmiSettings

SECRET = "fake-ami-secret"


class FakeAmi:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.connections = 0
        self.raw = b""
        self.actions: list[dict[str, str]] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def settings(self, **changes: float) -> AmiSettings:
        return AmiSettings(
            "127.0.0.1", self.port, "novofon-bridge", self.secret, connect_timeout=2, **changes
        )

    def names(self) -> list[str]:
        return [a.get("Action", "?") for a in self.actions]

    def of(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action") == name]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                self.raw += block
                fields: dict[str, str] = {}
                for line in block.decode("utf-8", "replace").split("\r\n"):
                    if line:
                        key, _, value = line.partition(": ")
                        fields[key] = fields[key] + "\n" + value if key in fields else value
                self.actions.append(fields)
                aid = fields.get("ActionID", "")
                action = fields.get("Action", "")
                if action == "Login":
                    ok = fields.get("Secret") == self.secret
                    answer = "Success\r\nMessage: Authentication accepted" if ok else "Error"
                elif action == "Originate":
                    answer = "Success\r\nMessage: Originate successfully queued"
                elif action == "Logoff":
                    answer = "Goodbye"
                elif action == "CoreShowChannels":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n".encode())
                    done = f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete"
                    writer.write(f"{done}\r\n\r\n".encode())
                    continue
                else:
                    answer = "Success"
                writer.write(f"Response: {answer}\r\nActionID: {aid}\r\n\r\n".encode())
