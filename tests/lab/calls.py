"""Place calls in the lab the way the outside world would: through the provider or a handset."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import quote

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


async def call_out(phones: AmiConnection, ext: str, number: str, talk: float = 2) -> None:
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


# ---- what the test-driven handset 105 does: transfers by SIP REFER, as a real phone -------------
async def _until_var(
    conn: AmiConnection, variable: str, channel: str = "", timeout: float = 15, wanted: str = ""
) -> str:
    """Poll ``Getvar`` on the phones instance until ``variable`` has a value (``wanted``, when
    given), never with a fixed sleep."""
    fields = {"Variable": variable, **({"Channel": channel} if channel else {})}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await conn.action("Getvar", fields)
        value = result.response.get("Value", "") if result.ok else ""
        if value and value != "(null)" and value == (wanted or value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"phones: {variable} never got a value ({result.response})")
        await asyncio.sleep(0.1)


async def handset_105_call(phones: AmiConnection, timeout: float = 15) -> str:
    """The phones-side channel of the call 105 answered (its dialplan names it in HANDSET_105);
    forgotten once read, and a name left by an earlier call that is gone is skipped."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        channel = (await phones.action("Getvar", {"Variable": "HANDSET_105"})).response.get("Value", "")
        if channel and channel != "(null)":
            state = await phones.action("Getvar", {"Channel": channel, "Variable": "CHANNEL(state)"})
            result = await phones.action("Setvar", {"Variable": "HANDSET_105", "Value": ""})
            assert result.ok, result.response
            if state.ok and state.response.get("Value") == "Up":
                return channel
        await asyncio.sleep(0.1)
    raise AssertionError("phones: 105 answered no call")


async def _refer(phones: AmiConnection, channel: str, refer_to: str) -> None:
    """Press the handset's transfer key on ``channel``: Transfer() sends the REFER."""
    result = await phones.action("Setvar", {"Channel": channel, "Variable": "XFER_TO", "Value": refer_to})
    assert result.ok, result.response
    result = await phones.action(
        "Redirect", {"Channel": channel, "Context": "handset-transfer", "Exten": "s", "Priority": "1"}
    )
    assert result.ok, result.response


async def blind_transfer(phones: AmiConnection, channel: str, ext: str) -> None:
    """Handset 105 transfers its call ``channel`` blind to ``ext``: REFER with Refer-To: <ext>."""
    await _refer(phones, channel, f"<sip:{ext}@{L.PBX_IP}>")


async def consult(phones: AmiConnection, ext: str, caller: str = "105") -> str:
    """Handset ``caller`` calls ``ext`` on a second line (the consultation before an attended
    transfer); returns that line's channel id on the phones instance once ``ext`` answered."""
    chan_id = f"lab-consult-{uuid.uuid4().hex[:8]}"
    result = await phones.action(
        "Originate",
        {
            "Channel": f"PJSIP/{ext}@{caller}",
            "Application": "Wait",
            "Data": "3600",
            "Timeout": "30000",
            "Async": "true",
            "ChannelId": chan_id,
        },
    )
    assert result.ok, result.response
    await _until_var(phones, "CHANNEL(state)", chan_id, wanted="Up")
    return chan_id


async def attended_transfer(phones: AmiConnection, channel: str, consultation: str, ext: str) -> None:
    """Handset 105 completes an attended transfer: REFER on the first call ``channel`` with
    Refer-To: <sip:ext@pbx?Replaces=<the consultation's dialog>> (RFC 3891, as phones send it)."""
    call_id = await _until_var(phones, "CHANNEL(pjsip,call-id)", consultation)
    local = await _until_var(phones, "CHANNEL(pjsip,local_tag)", consultation)
    remote = await _until_var(phones, "CHANNEL(pjsip,remote_tag)", consultation)
    replaces = quote(f"{call_id};to-tag={remote};from-tag={local}", safe="")
    await _refer(phones, channel, f"<sip:{ext}@{L.PBX_IP}?Replaces={replaces}>")
