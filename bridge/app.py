"""The daemon's lifecycle: start the pipeline and the integrations, supervise every task, stop.

What is built comes from bridge/wiring.py; this module only runs it. Every background task runs
under the supervisor (a death is logged, the task restarted with backoff, its state in /status);
SIGTERM stops the daemon: in-flight sends may finish, everything pending stays committed.
SIGHUP (logrotate, ``systemctl reload``) opens the files the daemon writes again; it never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import structlog

from bridge import systemd
from bridge.calls.records import CallRecord
from bridge.config import Config
from bridge.http import peers
from bridge.http.preflight import held_by_daemon
from bridge.http.server import HttpLimits, HttpServer
from bridge.i18n import tr
from bridge.outbox.sink import Sink
from bridge.redact import Redactor
from bridge.startup import StartupError, listen_problem, require_storage, storage_failed
from bridge.supervisor import Supervisor
from bridge.wiring import build

log = structlog.get_logger("bridge.app")

HOUSEKEEPING_INTERVAL = 3600.0


@runtime_checkable
class Reopenable(Protocol):
    """A sink that writes a file of its own (records.jsonl) and can start it afresh."""

    def reopen(self) -> None: ...


CHECKPOINT_INTERVAL = 10.0
STATUS_INTERVAL = 5.0


def http_limits(cfg: Config) -> HttpLimits:
    h = cfg.http
    return HttpLimits(
        max_body=h.max_body_kb * 1024,
        header_timeout=h.header_timeout,
        body_timeout=h.body_timeout,
        max_connections=h.max_connections,
        trusted_proxies=peers.networks(h.trusted_proxies),
        status_token=h.status_token,
    )


def seen_keep_seconds(cfg: Config) -> float:
    """How long keys of received notifications are remembered: ``outbox.keep_days``, but never less
    than twice Novofon's replay window (a notification is accepted while its call_start is within
    the window either way of now, so its replay can come up to two windows after it)."""
    return max(cfg.outbox.keep_days * 86400, 2 * cfg.novofon.replay_window)


class App:
    def __init__(self, cfg: Config, extra_sinks: Sequence[Sink] = ()) -> None:
        self.cfg = cfg
        c = self.components = build(cfg, extra_sinks)
        self.store, self.state, self.http, self.directory = c.store, c.state, c.http, c.directory
        self.jobs, self.pipeline, self.ami, self.dispatcher = c.jobs, c.pipeline, c.ami, c.dispatcher
        self.tracker = c.pipeline.tracker
        self.supervisor = Supervisor()
        self.redact = Redactor.from_settings(cfg)
        h = cfg.http
        self.http_server = (
            HttpServer(h.bind, h.port, c.routes, self.safe_status, self.healthy, http_limits(cfg))
            if h.enabled
            else None
        )
        sup = self.supervisor
        sup.add("dispatcher", self.dispatcher.run)
        sup.add("ami", self.ami.run)
        if c.ari is not None:
            sup.add("ari", c.ari.run)
        sup.add("jobs", self.jobs.run)
        sup.add("sweeper", self.pipeline.sweeper)
        sup.add("housekeeping", self._housekeeping)
        sup.add("checkpointer", self._checkpointer)
        sup.add("status-reporter", self._status_reporter, required=False)
        sup.add("watchdog", systemd.watchdog, required=False)
        for parts in c.parts.values():
            for name, factory in parts.tasks.items():
                sup.add(name, factory)
        if c.agi is not None:
            sup.add("agi", c.agi.run)

    def publish(self, records: list[CallRecord]) -> None:
        """Commit records as the tracker would (tests and tools feed recorded calls this way)."""
        self.pipeline.publish(records)

    # -- health --------------------------------------------------------------------------------
    def healthy(self) -> bool:
        return self.supervisor.healthy

    @property
    def backlog(self) -> int:
        return sum(c.get("pending", 0) for c in self.store.counts().values())

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        oldest = self.store.oldest_pending()
        return {
            "ami": {
                "connected": self.ami.connected.is_set(),
                "address": self.ami.settings.address,
                "last_error": self.ami.last_error,
                "connects": self.ami.connects,
                # when the link was down, and the calls backfilled from the CDR since
                **self.pipeline.link_status(self.ami.down_since),
            },
            "ari": self._ari_status(),
            "trunk": self.pipeline.trunk_registrations,
            "calls": {"active": self.tracker.active_calls},
            "outbox": {
                "pending": sum(c.get("pending", 0) for c in counts.values()),
                "dead": sum(c.get("dead", 0) for c in counts.values()),
                "oldest_pending_age_s": None if oldest is None else round(time.time() - oldest, 1),
                "by_sink": counts,
            },
            "jobs": self.jobs.counts(),
            "storage": self.store.health.as_dict(),
            "directory": {"employees": len(self.directory)},
            "agi": self.components.agi.status() if self.components.agi else {"enabled": False},
            "tasks": self.supervisor.status(),
            "integrations": {
                name: parts.status() for name, parts in self.components.parts.items() if parts.status
            },
            "healthy": self.supervisor.healthy,
        }

    def _ari_status(self) -> dict[str, Any]:
        c = self.components
        if c.ari is None or c.stasis is None:
            a = self.cfg.asterisk.ari
            why = "asterisk.ari.enabled: false" if not a.enabled else "asterisk.ari.password is empty"
            return {"enabled": False, "calls_over": "ami", "reason": why}
        return {"enabled": True, "calls_over": "ari", **c.ari.status(), "calls": c.stasis.active}

    def safe_status(self) -> dict[str, Any]:
        """/status with every known secret value masked (errors can quote URLs with codes in them)."""
        return cast(dict[str, Any], json.loads(self.redact(json.dumps(self.status(), ensure_ascii=False))))

    def _report_status(self) -> None:
        state = "connected" if self.ami.connected.is_set() else f"unavailable ({self.ami.last_error})"
        dead = self.supervisor.dead
        systemd.notify(
            self.redact(
                f"STATUS=AMI {state}; active calls {self.tracker.active_calls};"
                f" deliveries pending {self.backlog}" + (f"; restarting: {', '.join(dead)}" if dead else "")
            )
        )

    def reopen_files(self) -> None:
        """SIGHUP: every file a sink writes is opened again (logrotate moved the old one away)."""
        for sink in self.dispatcher.sinks:
            if isinstance(sink, Reopenable):
                try:
                    sink.reopen()
                except OSError as e:
                    log.error("sink.reopen_failed", sink=sink.name, error=str(e))
                else:
                    log.info("sink.reopened", sink=sink.name)

    # -- background work of the daemon itself --------------------------------------------------
    def housekeep(self, now: float | None = None) -> None:
        """Purge delivered records and per-call state older than outbox.keep_days (keys of
        received notifications: see ``seen_keep_seconds``), talk history older than agi.sticky_days."""
        now = time.time() if now is None else now
        older = now - self.cfg.outbox.keep_days * 86400
        purged = self.store.purge(older)
        self.store.purge_seen(now - seen_keep_seconds(self.cfg))
        self.state.purge(older)
        self.jobs.purge_dead(older)
        self.components.router.history.purge(now - self.cfg.agi.sticky_days * 86400)
        if purged:
            log.info("outbox.purged", deliveries=purged, keep_days=self.cfg.outbox.keep_days)

    async def _housekeeping(self) -> None:
        while True:
            self.housekeep()
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            await asyncio.to_thread(self.store.checkpoint)

    async def _status_reporter(self) -> None:
        while True:
            self._report_status()
            await asyncio.sleep(STATUS_INTERVAL)

    # -- lifecycle -----------------------------------------------------------------------------
    async def _start_http(self) -> None:
        if self.http_server is None:
            return
        try:
            await self.http_server.start()
        except OSError as e:  # port in use, an address not of this machine, a name that does not resolve
            h = self.cfg.http
            if e.errno == errno.EADDRINUSE and await held_by_daemon(h.bind, h.port):
                raise StartupError(
                    tr(
                        f"порт {h.bind}:{h.port} занят: там уже работает novofon-bridge",
                        f"port {h.bind}:{h.port} is taken: a novofon-bridge already runs there",
                    ),
                    tr(
                        "второй экземпляр не нужен: systemctl status novofon-bridge (или другой http.port и "
                        "storage.dir для второго)",
                        "a second one is not needed: systemctl status novofon-bridge (or give the second "
                        "its own http.port and storage.dir)",
                    ),
                ) from None
            raise StartupError(*listen_problem(e, h.bind, h.port, "http")) from None

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "bridge.starting",
            config=self.cfg.source,
            ami=self.ami.settings.address,
            sinks=self.dispatcher.sink_names,
            outbox=str(self.cfg.outbox_path),
        )
        try:
            # The port first: when it cannot be had, nothing else has started yet.
            await self._start_http()
            self.supervisor.start()
            systemd.notify("READY=1")
            await stop.wait()
        finally:
            systemd.notify("STOPPING=1")
            log.info("bridge.stopping", pending_deliveries=self.backlog)
            # Every record is already committed: stopping only lets in-flight sends finish.
            if self.http_server is not None:
                await self.http_server.stop()
            await self.dispatcher.stop(grace=5.0)
            await self.supervisor.stop()
            with contextlib.suppress(Exception):
                await self.ami.stop()
            if self.components.ari is not None:  # closes the WebSocket only: calls stay up
                with contextlib.suppress(Exception):
                    await self.components.ari.stop()
            for sink in self.dispatcher.sinks:
                with contextlib.suppress(Exception):
                    await sink.close()
            await self.http.close()
            log.info("bridge.stopped", sent=self.dispatcher.sent, pending_deliveries=self.backlog)
            self.store.close()


async def run_daemon(cfg: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app: App | None = None

    def hangup() -> None:  # before the app exists too: SIGHUP must never kill the daemon
        if app is not None:
            app.reopen_files()

    loop.add_signal_handler(signal.SIGHUP, hangup)
    app = build_app(cfg)
    await app.run(stop)


def build_app(cfg: Config) -> App:
    """The App, or a StartupError that names the real cause (a storage folder that is a file or
    not writable, a database that does not open, a file a sink writes that cannot be created)."""
    folder = Path(cfg.storage.dir)
    require_storage(folder)
    try:
        return App(cfg)
    except sqlite3.Error as e:
        raise storage_failed(folder, e) from None
    except OSError as e:
        where = e.filename or folder
        raise StartupError(
            tr(f"не удалось открыть {where}: {e.strerror or e}", f"cannot open {where}: {e.strerror or e}"),
            tr(
                "проверьте, что папка существует и пользователь службы может в неё писать",
                "check that the folder exists and the service user can write to it",
            ),
        ) from None
