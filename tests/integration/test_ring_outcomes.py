"""Who ended the ringing, on real calls: the PBX giving up is "no answer", the caller giving up is
"cancel" — for a Queue with a timeout and a ring group of Local/…@from-internal channels alike."""

from __future__ import annotations

import asyncio

import pytest

from bridge.app import App
from bridge.pbx.ami import AmiConnection
from tests.helpers import MemorySink
from tests.lab import lab as L
from tests.lab.calls import call_in

pytestmark = pytest.mark.lab


async def _hang_up_caller(provider: AmiConnection) -> None:
    result = await provider.action("Hangup", {"Channel": f"/^PJSIP\\/{L.TRUNK_LOGIN}-/", "Cause": "16"})
    assert result.ok, result.response


@pytest.mark.profiles(*L.PROFILES)
@pytest.mark.parametrize(
    ("did", "caller_gives_up", "disposition", "internal"),
    [
        (L.DID_QUEUE, False, "no answer", {"103"}),
        (L.DID_LOCAL_GROUP, False, "no answer", {"103", "104"}),
        (L.DID_QUEUE, True, "cancel", {"103"}),
        (L.DID_LOCAL_GROUP, True, "cancel", {"103", "104"}),
        (L.DID_103, True, "cancel", {"103"}),
    ],
    ids=["queue-timeout", "local-group-timeout", "queue-cancel", "local-group-cancel", "dial-cancel"],
)
async def test_ring_outcome(
    daemon: tuple[App, MemorySink],
    provider: AmiConnection,
    did: str,
    caller_gives_up: bool,
    disposition: str,
    internal: set[str],
) -> None:
    """``internal``: the extensions that ring (the END names the first one that rang)."""
    _, sink = daemon
    await call_in(provider, did)
    if caller_gives_up:
        await sink.wait_for(lambda rs: sum(r.fields["event"] == "NOTIFY_INTERNAL" for r in rs) >= 1)
        await asyncio.sleep(0.5)  # ringing, well before any timeout of the PBX (3-4 s)
        await _hang_up_caller(provider)
    records = await sink.wait_events("NOTIFY_START", "NOTIFY_END", timeout=30)
    (end,) = [r.fields for r in records if r.fields["event"] == "NOTIFY_END"]
    assert (end["called_did"], end["disposition"]) == (did, disposition)
    assert end["internal"] in internal
    assert not any(r.reconstructed for r in records)
