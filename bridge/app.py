"""Composition root: builds everything from the config and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from bridge import systemd
from bridge.calls.events import LiveChannel
from bridge.calls.records import CallRecord, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.config import Config
from bridge.pipeline import RecordPipeline
from bridge.sinks.base import Sink
from bridge.sinks.console import ConsoleSink
from bridge.sinks.jsonl import JsonlSink
from bridge.sources.ami import AmiConnection, AmiSettings, AmiSupervisor, Backoff
from bridge.sources.ami_events import WANTED, to_channel_event, to_live_channel
from bridge.sources.ami_protocol import AmiError, AmiMessage

log = structlog.get_logger("bridge.app")

SWEEP_INTERVAL = 60.0


def ami_settings(cfg: Config) -> AmiSettings:
    a = cfg.asterisk.ami
    return AmiSettings(
        a.host,
        a.port,
        a.username,
        a.secret,
        a.connect_timeout,
        ping_interval=a.ping_interval,
        ping_timeout=a.ping_timeout,
    )


def tracker_settings(cfg: Config) -> TrackerSettings:
    return TrackerSettings(
        trunk_endpoints=frozenset(cfg.asterisk.trunk_endpoints),
        internal_pattern=cfg.asterisk.internal_extensions,
        timezone=cfg.pbx.timezone,
        country_code=cfg.pbx.country_code,
        default_did=cfg.pbx.default_did,
        max_call_age=cfg.pbx.max_call_age,
    )


def build_sinks(cfg: Config) -> list[Sink]:
    sinks: list[Sink] = []
    if cfg.sinks.jsonl.enabled:
        sinks.append(JsonlSink(cfg.jsonl_path))
    if cfg.sinks.console.enabled:
        sinks.append(ConsoleSink())
    return sinks


class App:
    def __init__(self, cfg: Config, extra_sinks: Sequence[Sink] = ()) -> None:
        self.cfg = cfg
        self.tracker = Tracker(tracker_settings(cfg))
        self.pipeline = RecordPipeline([*build_sinks(cfg), *extra_sinks])
        a = cfg.asterisk.ami
        self.ami = AmiSupervisor(
            ami_settings(cfg),
            on_event=self._on_ami_event,
            on_connected=self._on_connected,
            events=WANTED,
            backoff=Backoff(min_delay=a.reconnect_min_delay, max_delay=a.reconnect_max_delay),
            on_state=self._report_status,
        )
        self.trunk_registrations: dict[str, str] = {}
        self._resync_buffer: list[AmiMessage] | None = None
        self._recordings = Path(cfg.asterisk.recordings_dir)

    # -- AMI -> tracker -> pipeline -------------------------------------------------------------
    def _on_ami_event(self, msg: AmiMessage) -> None:
        if self._resync_buffer is not None:
            self._resync_buffer.append(msg)
            return
        self._handle(msg)

    def _handle(self, msg: AmiMessage) -> None:
        ev = to_channel_event(msg, time.time())
        if ev is not None:
            records = self.tracker.feed(ev)
            if records:
                self._publish(records)
        elif msg.get("Event") == "Registry":
            self.trunk_registrations[msg.get("Username", msg.get("Domain", "?"))] = msg.get("Status", "")

    def _publish(self, records: list[CallRecord]) -> None:
        self.pipeline.publish(self._enrich(r) for r in records)

    def _enrich(self, r: CallRecord) -> CallRecord:
        meta = dict(r.meta)
        did = r.fields.get("called_did")
        if did and did in self.cfg.pbx.lines:
            meta["line_name"] = self.cfg.pbx.lines[did]
        rec = r.fields.get("call_id_with_rec")
        if rec and r.event in (Event.RECORD, Event.END, Event.OUT_END):
            meta["recording_file"] = str(self._recordings / f"{rec}.wav")
        return CallRecord(r.fields, meta) if meta != r.meta else r

    async def _on_connected(self, conn: AmiConnection, lost_at: float | None) -> None:
        """After every (re)connect: learn the live channels, close what ended while we were away."""
        self._resync_buffer = []
        try:
            result = await conn.action("CoreShowChannels")
            live = [to_live_channel(e) for e in result.events if e.get("Event") == "CoreShowChannel"]
            live = [await self._with_recording_state(conn, c) for c in live]
            records = self.tracker.resync(live, time.time(), lost_at)
            if records:
                self._publish(records)
            log.info(
                "ami.resynced",
                live_channels=len(live),
                records=len(records),
                reconstructed=lost_at is not None,
            )
            with contextlib.suppress(Exception):
                regs = await conn.action("PJSIPShowRegistrationsOutbound")
                for e in regs.events:
                    if e.get("Event") == "OutboundRegistrationDetail":
                        self.trunk_registrations[e.get("ObjectName", "?")] = e.get("Status", "")
        finally:
            buffered, self._resync_buffer = self._resync_buffer or [], None
            for msg in buffered:
                self._handle(msg)

    async def _with_recording_state(self, conn: AmiConnection, chan: LiveChannel) -> LiveChannel:
        """For a channel we are about to adopt: is MixMonitor recording it? (its variable says)."""
        if self.tracker.knows_channel(chan.uniqueid):
            return chan
        with contextlib.suppress(AmiError):
            got = await conn.action("Getvar", {"Channel": chan.channel, "Variable": "MIXMONITOR_FILENAME"})
            if got.ok and got.response.get("Value"):
                return dataclasses.replace(chan, recording=True)
        return chan

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            records = self.tracker.sweep(time.time())
            if records:
                log.warning("calls.swept", records=len(records))
                self._publish(records)

    def _report_status(self) -> None:
        state = "connected" if self.ami.connected.is_set() else f"unavailable ({self.ami.last_error})"
        systemd.notify(
            f"STATUS=AMI {state}; active calls {self.tracker.active_calls}; "
            f"records delivered {self.pipeline.delivered} of {self.pipeline.published}"
        )

    async def _status_reporter(self) -> None:
        while True:
            self._report_status()
            await asyncio.sleep(5)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        log.info("bridge.starting", config=self.cfg.source, ami=self.ami.settings.address)
        pipeline_task = asyncio.create_task(self.pipeline.run(), name="pipeline")
        background = [
            asyncio.create_task(self.ami.run(), name="ami"),
            asyncio.create_task(self._sweeper(), name="sweeper"),
            asyncio.create_task(self._status_reporter(), name="status"),
            asyncio.create_task(systemd.watchdog(), name="watchdog"),
        ]
        systemd.notify("READY=1")
        try:
            stopper = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait(
                [stopper, pipeline_task, *background[:2]], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            stopper.cancel()
        finally:
            systemd.notify("STOPPING=1")
            log.info("bridge.stopping", pending_records=self.pipeline.backlog)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.ami.stop()
            self.pipeline.finish()
            try:
                await asyncio.wait_for(pipeline_task, 30)
            except TimeoutError:
                log.error("bridge.records_not_delivered", count=self.pipeline.backlog)
            await self.pipeline.close()
            log.info("bridge.stopped", delivered=self.pipeline.delivered)


async def run_daemon(cfg: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await App(cfg).run(stop)
