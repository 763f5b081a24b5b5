"""Record AMI transcripts from the real lab into tests/transcripts/ (run as root):

    python -m tests.lab.record_transcripts

Each scenario is one real call through the lab PBX; the file holds the exact bytes Asterisk sent
to a logged-in AMI user with our manager.conf event filter. Unit tests and bench/ replay them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.lab import lab as L
from tests.lab.calls import call_in, call_out, open_instance
from tests.lab.capture import Capture

OUT = Path(__file__).resolve().parents[1] / "transcripts"
NAME = "Иван Петров"


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
    provider = await open_instance(L.PROVIDER_IP)
    phones = await open_instance(L.PHONES_IP)

    async def cancel() -> None:
        await call_in(provider, L.DID_103, name=NAME)
        await asyncio.sleep(1.5)
        await provider.action("Hangup", {"Channel": f"/^PJSIP\\/{L.TRUNK_LOGIN}-/", "Cause": "16"})

    scenarios: dict[str, Callable[[], Awaitable[None]]] = {
        "inbound_answered": lambda: call_in(provider, L.DID_101, name=NAME),
        "inbound_missed": lambda: call_in(provider, L.DID_103, name=NAME),
        "inbound_busy": lambda: call_in(provider, L.DID_104, name=NAME),
        "inbound_ring_group": lambda: call_in(provider, L.DID_GROUP, name=NAME),
        "inbound_cancel": cancel,
        "outbound_answered": lambda: call_out(phones, "101", L.NUM_ANSWER),
        "outbound_busy": lambda: call_out(phones, "102", L.NUM_BUSY),
        "outbound_no_answer": lambda: call_out(phones, "101", L.NUM_NOANSWER),
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
