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
from pathlib import Path

from tests.lab import lab as L
from tests.lab.calls import call_in, call_out, open_instance

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
        "ASTERISK_PBX_RECORDINGS": lab.pbx_recordings_dir,
    }
    cmd = [sys.executable, "-m", "bridge", "-c", str(REPO / "config.yaml")]
    say("novofon-bridge status")
    await (await asyncio.create_subprocess_exec(*cmd, "status", env=env)).wait()
    say("starting the daemon: novofon-bridge run -c config.yaml (records appear below)")
    daemon = await asyncio.create_subprocess_exec(*cmd, "run", env=env, stderr=asyncio.subprocess.DEVNULL)
    provider = phones = None
    try:
        provider = await open_instance(L.PROVIDER_IP)
        phones = await open_instance(L.PHONES_IP)
        await asyncio.sleep(1)  # let the daemon log in before the first call (it would resync anyway)

        say(f"inbound: a client calls {L.DID_GROUP}; extensions 101 and 102 ring, 101 answers")
        await call_in(provider, L.DID_GROUP, talk=3, name="Иван Петров")
        await wait_for_events(state / "records.jsonl", 1)

        say(f"outbound: extension 101 calls {L.NUM_ANSWER}")
        await call_out(phones, "101", L.NUM_ANSWER)
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
