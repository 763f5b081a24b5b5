"""sd_notify without a dependency: READY, STATUS, STOPPING and WATCHDOG pings."""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to systemd if we run under Type=notify; return whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec when systemd asks for pings (and they are for this process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog() -> None:
    """Ping systemd from the event loop: if the loop stalls, the pings stop and systemd restarts us."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
