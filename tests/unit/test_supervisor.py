"""Every background task runs under the supervisor: a death is logged, restarted, reported."""

from __future__ import annotations

import asyncio

from bridge.backoff import Backoff
from bridge.supervisor import Supervisor
from tests.helpers import until


async def test_a_dead_task_is_restarted_and_reported() -> None:
    sup = Supervisor(Backoff(min_delay=0.05, max_delay=0.05))
    runs = 0
    release = asyncio.Event()

    async def fragile() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError(24, "Too many open files")
        await release.wait()

    async def optional() -> None:
        raise RuntimeError("not needed for health")

    sup.add("checkpointer", fragile)
    sup.add("status-reporter", optional, required=False)
    sup.start()
    try:
        await until(lambda: sup.status()["checkpointer"]["state"] == "restarting", timeout=2, interval=0.005)
        assert not sup.healthy and sup.dead == ["checkpointer"]
        await until(lambda: runs == 3 and sup.status()["checkpointer"]["state"] == "running", timeout=2)
        st = sup.status()["checkpointer"]
        assert st["restarts"] == 2 and "Too many open files" in str(st["last_error"])
        assert sup.healthy  # an optional task's death does not make the daemon unhealthy
        release.set()
        await until(lambda: sup.status()["checkpointer"]["state"] == "finished", timeout=2)
    finally:
        await sup.stop()
    assert sup.status()["checkpointer"]["state"] == "stopped"
