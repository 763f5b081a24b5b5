"""Record AMI transcripts from the real lab into tests/transcripts/ (run as root):

    python -m tests.lab.record_transcripts

Each scenario is one real call through the lab PBX; the file holds the exact bytes Asterisk sent
to a logged-in AMI user with our manager.conf event filter. Unit tests and bench/ replay them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.sources.ami import AmiConnection, AmiSettings
from tests.lab import lab as L
from tests.lab.capture import Capture

OUT = Path(__file__).resolve().parents[1] / "transcripts"


async def _in(provider: AmiConnection, did: str, talk: int = 2, name: str = "Иван Петров") -> None:
    await provider.action(
        "Originate",
        {
            "Channel": f"PJSIP/{did}@{L.TRUNK_LOGIN}",
            "Context": "caller",
            "Exten": "talk",
            "Priority": "1",
            "CallerID": f"{name} <89581114585>",
            "Variable": f"TALK={talk}",
            "Timeout": "30000",
            "Async": "true",
            "ChannelId": f"rec-{uuid.uuid4().hex[:8]}",
        },
    )


async def _out(phones: AmiConnection, ext: str, number: str, talk: int = 2) -> None:
    await phones.action(
        "Originate",
        {
            "Channel": f"PJSIP/{number}@{ext}",
            "Context": "employee",
            "Exten": "talk",
            "Priority": "1",
            "Variable": f"TALK={talk}",
            "Timeout": "30000",
            "Async": "true",
        },
    )


async def _idle(lab: L.Lab) -> None:
    for _ in range(300):
        counts = [await asyncio.to_thread(lab.rx, i, "core show channels count") for i in L.INSTANCES]
        if all("0 active channels" in c for c in counts):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("calls did not end")


async def main() -> None:
    lab = L.Lab()
    lab.up()
    settings = {"username": "lab", "secret": "lab"}
    provider = await AmiConnection.open(AmiSettings(host=L.PROVIDER_IP, **settings))  # type: ignore[arg-type]
    phones = await AmiConnection.open(AmiSettings(host=L.PHONES_IP, **settings))  # type: ignore[arg-type]

    async def cancel() -> None:
        await _in(provider, L.DID_103)
        await asyncio.sleep(1.5)
        await provider.action("Hangup", {"Channel": f"/^PJSIP\\/{L.TRUNK_LOGIN}-/", "Cause": "16"})

    scenarios: dict[str, Callable[[], Awaitable[None]]] = {
        "inbound_answered": lambda: _in(provider, L.DID_101),
        "inbound_missed": lambda: _in(provider, L.DID_103),
        "inbound_busy": lambda: _in(provider, L.DID_104),
        "inbound_ring_group": lambda: _in(provider, L.DID_GROUP),
        "inbound_cancel": cancel,
        "outbound_answered": lambda: _out(phones, "101", L.NUM_ANSWER),
        "outbound_busy": lambda: _out(phones, "102", L.NUM_BUSY),
        "outbound_no_answer": lambda: _out(phones, "101", L.NUM_NOANSWER),
    }
    OUT.mkdir(exist_ok=True)
    try:
        for name, place in scenarios.items():
            async with Capture(OUT / f"{name}.ami"):
                await place()
                await asyncio.sleep(1)
                await _idle(lab)
            print(f"recorded {name}")
    finally:
        await provider.close()
        await phones.close()
        lab.down()


if __name__ == "__main__":
    asyncio.run(main())
