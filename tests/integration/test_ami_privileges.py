"""The shipped AMI user (asterisk-conf/manager.conf) on the real Asterisk 22: everything the daemon
and the CLI use works, and nothing that reaches a shell does (least privilege)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.pbx.ami import AmiConnection, AmiSettings
from bridge.pbx.ami_protocol import AmiMessage
from tests.helpers import until
from tests.lab import lab as L

pytestmark = pytest.mark.lab


@pytest.fixture
async def shipped(lab: L.Lab) -> AsyncIterator[tuple[AmiConnection, list[AmiMessage]]]:
    events: list[AmiMessage] = []
    conn = await AmiConnection.open(
        AmiSettings(host=L.PBX_IP, port=L.AMI_PORT, username=L.AMI_USER, secret=L.AMI_SECRET), events.append
    )
    yield conn, events
    await conn.close()


async def test_the_actions_the_bridge_uses_are_allowed(
    shipped: tuple[AmiConnection, list[AmiMessage]],
) -> None:
    conn, events = shipped
    regs = await conn.action("PJSIPShowRegistrationsOutbound")  # `status`: needs reporting, not system
    assert regs.ok and any(e.get("Event") == "OutboundRegistrationDetail" for e in regs.events)
    assert (await conn.action("CoreShowChannels")).ok  # resync after a reconnect
    assert (await conn.action("Getvar", {"Variable": "EPOCH"})).ok  # MixMonitor file of adopted calls
    hangup = await conn.action("Hangup", {"Channel": "PJSIP/nobody-00000000"})
    assert hangup.message == "No such channel"  # allowed (write=call), just nothing to hang up
    # Read classes: FullyBooted (sent on login), like Registry (the trunk's state), is a "system"
    # event; without read=system it never arrives. (Re-registering the trunk here to see a
    # Registry event would disturb the call tests that share the lab.)
    await until(lambda: any(e.get("Event") == "FullyBooted" for e in events), timeout=5)


@pytest.mark.parametrize(
    "fields",
    [
        {"Application": "System", "Data": "touch /tmp/novofon-bridge-pwned"},
        {"Application": "TrySystem", "Data": "true"},
        {"Application": "Exec", "Data": "System(true)"},
        {"Application": "Playback", "Data": "${SHELL(true)}"},
        {"Application": "NoOp", "Data": "${EVAL(x)}"},
    ],
)
async def test_originate_into_a_shell_is_forbidden(
    shipped: tuple[AmiConnection, list[AmiMessage]], fields: dict[str, str]
) -> None:
    conn, _ = shipped
    result = await conn.action("Originate", {"Channel": "Local/1@nowhere", "Async": "true", **fields})
    assert not result.ok
    assert "Forbidden" in result.message


async def test_command_is_not_permitted(shipped: tuple[AmiConnection, list[AmiMessage]]) -> None:
    conn, _ = shipped
    result = await conn.action("Command", {"Command": "core show version"})
    assert not result.ok and result.message == "Permission denied"
