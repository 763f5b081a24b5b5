"""`make demo`: the whole thing on this machine, with no PBX and no tokens of your own.

Starts the Asterisk lab (provisioning it the first time), runs the real daemon with the shipped
config.yaml pointed at the lab, places an inbound call (Novofon -> DID -> ring group), an outbound
call from extension 101, and a `novofon-bridge call` test call, and shows the records as they come.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from bridge.sources.ami import AmiConnection, AmiSettings
from tests.lab import lab as L

REPO = Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


async def wait_for_events(path: Path, count: int, timeout: float = 60) -> list[dict[str, object]]:
    for _ in range(int(timeout * 10)):
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        records = [json.loads(line) for line in lines]
        if sum(r["event"] in ("NOTIFY_END", "NOTIFY_OUT_END") for r in records) >= count:
            return records
        await asyncio.sleep(0.1)
    raise SystemExit(f"demo: the records did not arrive within {timeout} s (see the daemon output above)")


async def main() -> int:
    lab = L.Lab()
    say("starting the Asterisk 22 lab: PBX (our asterisk-conf/), Novofon stand-in, employees' phones")
    lab.up()
    state = Path(tempfile.mkdtemp(prefix="novofon-bridge-demo-"))
    env = {
        **os.environ,
        "AMI_HOST": L.PBX_IP,
        "AMI_SECRET": L.AMI_SECRET,
        "NOVOFON_BRIDGE_STATE": str(state),
        "ASTERISK_RECORDINGS": str(lab.recordings_dir),
    }
    cmd = [sys.executable, "-m", "bridge", "-c", str(REPO / "config.yaml")]
    say("novofon-bridge status")
    await (await asyncio.create_subprocess_exec(*cmd, "status", env=env)).wait()
    say("starting the daemon: novofon-bridge run -c config.yaml (records appear below)")
    daemon = await asyncio.create_subprocess_exec(*cmd, "run", env=env, stderr=asyncio.subprocess.DEVNULL)
    provider = phones = None
    try:
        settings = {"username": "lab", "secret": "lab"}
        provider = await AmiConnection.open(AmiSettings(host=L.PROVIDER_IP, **settings))  # type: ignore[arg-type]
        phones = await AmiConnection.open(AmiSettings(host=L.PHONES_IP, **settings))  # type: ignore[arg-type]
        await asyncio.sleep(1)  # let the daemon log in before the first call

        say(f"inbound: a client calls {L.DID_GROUP}; extensions 101 and 102 ring, 101 answers")
        await provider.action(
            "Originate",
            {
                "Channel": f"PJSIP/{L.DID_GROUP}@{L.TRUNK_LOGIN}",
                "Context": "caller",
                "Exten": "talk",
                "Priority": "1",
                "CallerID": "Иван Петров <89581114585>",
                "Variable": "TALK=3",
                "Async": "true",
                "ChannelId": f"demo-{uuid.uuid4().hex[:8]}",
            },
        )
        await wait_for_events(state / "records.jsonl", 1)

        say(f"outbound: extension 101 calls {L.NUM_ANSWER}")
        await phones.action(
            "Originate",
            {
                "Channel": f"PJSIP/{L.NUM_ANSWER}@101",
                "Context": "employee",
                "Exten": "talk",
                "Priority": "1",
                "Variable": "TALK=2",
                "Async": "true",
            },
        )
        await wait_for_events(state / "records.jsonl", 2)

        say(f"staff test call: novofon-bridge call {L.NUM_TEST}")
        await (await asyncio.create_subprocess_exec(*cmd, "call", L.NUM_TEST, env=env)).wait()
        records = await wait_for_events(state / "records.jsonl", 3)

        say(f"{len(records)} records in {state / 'records.jsonl'} (Novofon field names):")
        for r in records:
            print(json.dumps({k: v for k, v in r.items() if k != "meta"}, ensure_ascii=False))
        return 0
    finally:
        for conn in (provider, phones):
            if conn is not None:
                await conn.close()
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()
        lab.down()
        say("done: the lab is stopped. Run `make test` for the full suite.")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
