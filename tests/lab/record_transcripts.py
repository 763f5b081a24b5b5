"""Record AMI transcripts from the real lab into tests/transcripts/ (run as root):

    python -m tests.lab.record_transcripts [--profile freepbx] [SCENARIO ...]   (default: every scenario)

Each scenario is one real call through the lab PBX; ``NAME.ami`` holds the exact bytes Asterisk
sent to a logged-in AMI user with our event filter (asterisk-conf/novofon-bridge_manager.conf),
``NAME.cdr.csv`` the lines cdr_csv wrote to Master.csv for that call. Unit tests and bench/ replay them.
On the freepbx lab profile they go to tests/transcripts/freepbx/ (replayed as ``freepbx/NAME``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.lab import lab as L
from tests.lab.calls import (
    attended_transfer,
    blind_transfer,
    call_in,
    call_out,
    consult,
    handset_105_call,
    open_instance,
)
from tests.lab.capture import Capture

OUT = Path(__file__).resolve().parents[1] / "transcripts"
NAME = "Иван Петров"
IVR_TALK = 2  # the caller hangs up 2 s into the voice menu
VOICEMAIL_TALK = 10  # ... 10 s after voicemail answered: past the greeting and the beep, while recording


async def _idle(lab: L.Lab) -> None:
    for _ in range(300):
        counts = [await asyncio.to_thread(lab.rx, i, "core show channels count") for i in L.INSTANCES]
        if all("0 active channels" in c for c in counts):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("calls did not end")


async def main() -> None:
    args = sys.argv[1:]
    profile = "plain"
    if args[:1] == ["--profile"]:
        profile, args = (args[1] if len(args) > 1 else ""), args[2:]
    lab = L.Lab(profile=profile)
    out = OUT if profile == "plain" else OUT / profile
    lab.up()
    provider = await open_instance(L.PROVIDER_IP)
    phones = await open_instance(L.PHONES_IP)

    async def hang_up_while_ringing(did: str) -> None:
        """The caller gives up after 1.5 s of ringing (before any timeout of the PBX)."""
        await call_in(provider, did, name=NAME)
        await asyncio.sleep(1.5)
        await provider.action("Hangup", {"Channel": f"/^PJSIP\\/{L.TRUNK_LOGIN}-/", "Cause": "16"})

    async def transfer(attended: bool) -> None:
        """105 answers a call on DID_TRANSFER, then transfers it to 101 (blind, or after talking
        to 101 on a second line); the caller talks 6 s from 105's answer."""
        await call_in(provider, L.DID_TRANSFER, talk=6, name=NAME)
        channel = await handset_105_call(phones)
        if attended:
            await attended_transfer(phones, channel, await consult(phones, "101"), "101")
        else:
            await blind_transfer(phones, channel, "101")

    async def pickup(code: str) -> None:
        """101 picks up the call ringing 103 (DID_LONG) by dialling ``code``; talks 2 s."""
        await call_in(provider, L.DID_LONG, name=NAME)
        await asyncio.to_thread(lab.wait_for, L.PBX, "core show channels", r"PJSIP/103-\S+.*Ringing")
        await call_out(phones, "101", code, talk=2)

    scenarios: dict[str, Callable[[], Awaitable[None]]] = {
        "inbound_blind_transfer": lambda: transfer(attended=False),
        "inbound_attended_transfer": lambda: transfer(attended=True),
        "inbound_pickup_directed": lambda: pickup(L.PICKUP_DIRECTED + "103"),
        "inbound_pickup_group": lambda: pickup(L.PICKUP_GROUP),
        "inbound_answered": lambda: call_in(provider, L.DID_101, name=NAME),
        "inbound_missed": lambda: call_in(provider, L.DID_103, name=NAME),
        "inbound_busy": lambda: call_in(provider, L.DID_104, name=NAME),
        "inbound_ring_group": lambda: call_in(provider, L.DID_GROUP, name=NAME),
        "inbound_cancel": lambda: hang_up_while_ringing(L.DID_103),
        # Ring timeouts end the ringing, not the caller: "no answer", whatever hung up last.
        "inbound_queue_timeout": lambda: call_in(provider, L.DID_QUEUE, name=NAME),
        "inbound_local_group_timeout": lambda: call_in(provider, L.DID_LOCAL_GROUP, name=NAME),
        "inbound_queue_cancel": lambda: hang_up_while_ringing(L.DID_QUEUE),
        "inbound_local_group_cancel": lambda: hang_up_while_ringing(L.DID_LOCAL_GROUP),
        "outbound_answered": lambda: call_out(phones, "101", L.NUM_ANSWER),
        "outbound_busy": lambda: call_out(phones, "102", L.NUM_BUSY),
        "outbound_no_answer": lambda: call_out(phones, "101", L.NUM_NOANSWER),
        # Field scenarios (issue 8): forwarding to a mobile, a voice menu, voicemail, numbers as dialled.
        "inbound_forward_mobile": lambda: call_in(provider, L.DID_FORWARD, name=NAME),
        "inbound_ivr_hangup": lambda: call_in(provider, L.DID_IVR, name=NAME, talk=IVR_TALK),
        "inbound_voicemail": lambda: call_in(provider, L.DID_VOICEMAIL, name=NAME, talk=VOICEMAIL_TALK),
        "outbound_dialled_8": lambda: call_out(phones, "101", "8" + L.NUM_ANSWER[1:]),
        "outbound_dialled_plus7": lambda: call_out(phones, "102", "+" + L.NUM_ANSWER),
    }
    wanted = args or list(scenarios)
    unknown = set(wanted) - set(scenarios)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}; known: {', '.join(scenarios)}")
    out.mkdir(exist_ok=True)
    try:
        master = lab.host_path(L.PBX, "log", "cdr-csv", "Master.csv")
        for name in wanted:
            place = scenarios[name]
            before = master.stat().st_size if master.exists() else 0
            async with Capture(out / f"{name}.ami"):
                await place()
                await asyncio.sleep(1)
                await _idle(lab)
            await asyncio.sleep(1)  # cdr_csv writes a call's lines just after it ends
            with master.open("rb") as f:
                f.seek(before)
                (out / f"{name}.cdr.csv").write_bytes(f.read())
            print(f"recorded {name}")
    finally:
        await provider.close()
        await phones.close()
        lab.down()


if __name__ == "__main__":
    asyncio.run(main())
