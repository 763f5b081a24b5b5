"""Asterisk's side of FastAGI, as res_agi speaks it: the agi_* variables, then a reply per command.

Used by the unit tests and bench/agi_bench.py to talk to our server over loopback exactly as
Asterisk would (the integration tests use the real Asterisk).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


def request_headers(
    script: str = "route", callerid: str = "79161110001", uniqueid: str = "1700000000.1", port: int = 4573
) -> dict[str, str]:
    """What Asterisk 22 sends for ``AGI(agi://127.0.0.1:PORT/<script>)`` on an inbound channel."""
    return {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": "PJSIP/novofon-00000001",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "22.0.0",
        "agi_callerid": callerid,
        "agi_calleridname": "Клиент",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "74950000105",
        "agi_rdnis": "unknown",
        "agi_context": "novofon-route",
        "agi_extension": "s",
        "agi_priority": "1",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140000000000000",
    }


@dataclass
class AgiExchange:
    commands: list[str] = field(default_factory=list)
    seconds: float = 0.0  # from connect to the server closing the connection

    @property
    def variables(self) -> dict[str, str]:
        """SET VARIABLE NAME "value" commands as {NAME: value}."""
        out = {}
        for c in self.commands:
            if c.startswith("SET VARIABLE "):
                name, _, value = c.removeprefix("SET VARIABLE ").partition(" ")
                out[name] = value.removeprefix('"').removesuffix('"')
        return out


async def agi_call(
    port: int,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    reply: str = "200 result=1",
    first_reply: str | None = None,
    timeout: float = 5.0,
    eof: bool = False,
) -> AgiExchange:
    """Connect as Asterisk, send the request (``raw`` bytes instead, to send garbage), answer each
    command with ``reply`` (the first with ``first_reply`` if given), until the server closes.
    ``eof``: close our sending side right after the request (a peer that went away)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = AgiExchange()
    try:
        if raw is None:
            lines = (headers or request_headers()).items()
            raw = ("".join(f"{k}: {v}\n" for k, v in lines) + "\n").encode()
        writer.write(raw)
        await writer.drain()
        if eof:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while line := await reader.readline():
                out.commands.append(line.decode().rstrip("\n"))
                answer = first_reply if first_reply is not None and len(out.commands) == 1 else reply
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        out.seconds = loop.time() - started
        return out
    finally:
        writer.close()
