"""Place calls in the lab the way the outside world would: through the provider or a handset."""

from __future__ import annotations

import uuid

from bridge.pbx.ami import AmiConnection, AmiSettings
from tests.lab import lab as L


async def open_instance(ip: str) -> AmiConnection:
    """AMI on the provider or phones instance (their lab-only manager.conf user)."""
    return await AmiConnection.open(AmiSettings(host=ip, username="lab", secret="lab"))


async def call_in(
    provider: AmiConnection, did: str, talk: int = 2, caller: str = "89581114585", name: str = "Клиент"
) -> str:
    """The provider (Novofon) sends a call to ``did``; the caller hangs up ``talk`` s after the answer.
    Returns the provider-side channel id."""
    chan_id = f"lab-in-{uuid.uuid4().hex[:8]}"
    result = await provider.action(
        "Originate",
        {
            "Channel": f"PJSIP/{did}@{L.TRUNK_LOGIN}",
            "Context": "caller",
            "Exten": "talk",
            "Priority": "1",
            "CallerID": f"{name} <{caller}>",
            "Variable": f"TALK={talk}",
            "Timeout": "30000",
            "Async": "true",
            "ChannelId": chan_id,
        },
    )
    assert result.ok, result.response
    return chan_id


async def call_out(phones: AmiConnection, ext: str, number: str, talk: int = 2) -> None:
    """Employee ``ext`` dials ``number`` from their handset and hangs up ``talk`` s after the answer."""
    result = await phones.action(
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
    assert result.ok, result.response
