"""Every background task of the daemon runs here: a death is logged with its exception, the task
is restarted with backoff, and its state is reported in /status (and /healthz for required ones).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from bridge.backoff import Backoff

log = structlog.get_logger("bridge.supervisor")

TaskFactory = Callable[[], Awaitable[None]]
STABLE_AFTER = 60.0  # a task that ran this long before dying starts its backoff from the beginning


@dataclass
class TaskState:
    name: str
    required: bool
    state: str = "starting"  # running | restarting | finished | stopped
    restarts: int = 0
    last_error: str | None = None
    since: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "required": self.required,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "for_s": round(time.time() - self.since, 1),
        }


class Supervisor:
    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff(min_delay=1.0, max_delay=60.0)
        self._specs: dict[str, tuple[TaskFactory, TaskState]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, factory: TaskFactory, required: bool = True) -> None:
        """``required``: while it is not running, the daemon is not healthy (/healthz 503)."""
        if name in self._specs:
            raise ValueError(f"task {name} is supervised twice")
        self._specs[name] = (factory, TaskState(name, required, since=time.time()))

    def start(self) -> None:
        for name, (factory, state) in self._specs.items():
            self._tasks.append(asyncio.create_task(self._keep(factory, state), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, state in self._specs.values():
            state.state = "stopped"

    async def _keep(self, factory: TaskFactory, st: TaskState) -> None:
        failures = 0
        while True:
            st.state, st.since = "running", time.time()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures = 1 if time.time() - st.since > STABLE_AFTER else failures + 1
                delay = self.backoff.delay(failures)
                st.state, st.since = "restarting", time.time()
                st.restarts += 1
                st.last_error = f"{type(e).__name__}: {e}"
                log.exception("task.died", task=st.name, attempt=failures, restart_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            st.state, st.since = "finished", time.time()
            log.info("task.finished", task=st.name)
            return

    def status(self) -> dict[str, dict[str, object]]:
        return {name: st.as_dict() for name, (_, st) in self._specs.items()}

    @property
    def healthy(self) -> bool:
        return all(st.state in ("running", "finished") for _, st in self._specs.values() if st.required)

    @property
    def dead(self) -> list[str]:
        return [n for n, (_, st) in self._specs.items() if st.required and st.state == "restarting"]
