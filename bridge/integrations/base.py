"""What an integration is given (``Context``) and what it gives back (``Parts``).

Each outside system's package has ``setup(ctx) -> Parts`` (in the spirit of wazo-calld's
``Plugin.load(dependencies)``): it builds its sinks, HTTP routes, job handlers and background
tasks from its own settings, and the composition root (bridge/wiring.py) mounts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.calls.records import CallRecord
from bridge.config import Config
from bridge.directory import Directory
from bridge.http.client import Http
from bridge.http.server import Route
from bridge.outbox.jobs import Handler, Jobs
from bridge.outbox.sink import Sink
from bridge.outbox.state import StateStore
from bridge.pbx.originate import Originator
from bridge.pbx.routing import ResponsibleLookup

TaskFactory = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Context:
    cfg: Config
    state: StateStore
    http: Http
    directory: Directory
    jobs: Jobs
    calls: Originator  # places calls: click-to-call, the «Перезвонить» button
    publish: Callable[[list[CallRecord]], None]  # commit records made here (tracker-like)
    commit_inbound: Callable[[str, list[CallRecord]], bool]  # commit records received, once per key


@dataclass
class Parts:
    sinks: list[Sink] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    job_handlers: dict[str, tuple[Handler, float | None]] = field(default_factory=dict)
    tasks: dict[str, TaskFactory] = field(default_factory=dict)  # name -> run forever, supervised
    status: Callable[[], dict[str, Any]] | None = None
    responsible: ResponsibleLookup | None = None  # a CRM that knows clients' managers (AGI routing)
    enrichers: list[Callable[[CallRecord], dict[str, str]]] = field(default_factory=list)  # extra meta

    def merge(self, other: Parts) -> None:
        self.responsible = self.responsible or other.responsible
        self.sinks += other.sinks
        self.routes += other.routes
        self.job_handlers.update(other.job_handlers)
        self.enrichers += other.enrichers
        self.tasks.update(other.tasks)
