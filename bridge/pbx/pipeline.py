"""AMI -> tracker -> outbox: the one-way core, and what it needs around it.

- every AMI event goes through the pure tracker; the records it returns are enriched (line names,
  recording paths) and committed to the outbox before any sink is woken; while the storage refuses
  writes (disk full, read-only) they wait in memory, in order, and a timer commits them as soon as
  it takes writes again;
- after every (re)connect the live channels are read (CoreShowChannels) and the tracker resyncs;
  events that arrive meanwhile are buffered and replayed after, in order;
- a sweeper closes calls that saw no event for too long; the trunk registry remembers what the
  PBX said about the trunk's registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.calls.events import LiveChannel
from bridge.calls.records import CallRecord, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.config import Config
from bridge.errors import StorageUnavailable
from bridge.outbox.dispatcher import Dispatcher
from bridge.outbox.store import OutboxStore
from bridge.pbx.ami import AmiConnection, AmiSettings
from bridge.pbx.ami_events import to_channel_event, to_live_channel
from bridge.pbx.ami_protocol import AmiError, AmiMessage

log = structlog.get_logger("bridge.pbx")

SWEEP_INTERVAL = 60.0
COMMIT_RETRY_MIN, COMMIT_RETRY_MAX = 0.5, 5.0  # while the disk is full: retry the commit this often

AmiObserver = Callable[[AmiMessage], None]
RecordObserver = Callable[[list[CallRecord]], None]
Enricher = Callable[[CallRecord], dict[str, str]]  # extra meta for a record (e.g. AGI routing)


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


class Pipeline:
    def __init__(self, cfg: Config, store: OutboxStore) -> None:
        self.cfg = cfg
        self.tracker = Tracker(tracker_settings(cfg))
        self.store = store
        self._dispatcher: Dispatcher | None = None
        self.trunk_registrations: dict[str, str] = {}
        self.ami_observers: list[AmiObserver] = []
        self.record_observers: list[RecordObserver] = []
        self.enrichers: list[Enricher] = []
        self._resync_buffer: list[AmiMessage] | None = None
        self._recordings = Path(cfg.asterisk.recordings_dir)
        self._unsaved: deque[list[CallRecord]] = deque()  # records the storage refused, oldest first
        self._commit_timer: asyncio.TimerHandle | None = None
        self._commit_delay = COMMIT_RETRY_MIN

    def attach(self, dispatcher: Dispatcher) -> None:
        """The outbox's dispatcher, once every sink is known (the integrations are built after us)."""
        self._dispatcher = dispatcher

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            raise RuntimeError("Pipeline.attach() was not called")
        return self._dispatcher

    # -- in ------------------------------------------------------------------------------------
    def on_ami_event(self, msg: AmiMessage) -> None:
        if self._resync_buffer is not None:
            self._resync_buffer.append(msg)
            return
        self._handle(msg)

    def _handle(self, msg: AmiMessage) -> None:
        ev = to_channel_event(msg, time.time())
        if ev is not None:
            records = self.tracker.feed(ev)
            if records:
                self.publish(records)
            for observe in self.ami_observers:
                observe(msg)
        elif msg.get("Event") == "Registry":
            self.trunk_registrations[msg.get("Username", msg.get("Domain", "?"))] = msg.get("Status", "")

    # -- out -----------------------------------------------------------------------------------
    def publish(self, records: list[CallRecord]) -> None:
        """Commit the records (one delivery per sink) before anything is sent, then wake the sinks.
        If the storage refuses them they wait behind any earlier ones and are committed later, in
        order (``unsaved``); the calls go on being tracked in memory meanwhile."""
        self._unsaved.append([self._enrich(r) for r in records])
        self._commit_unsaved()
        for observe in self.record_observers:
            observe(records)

    @property
    def unsaved(self) -> int:
        """Records waiting for the storage to take writes again."""
        return sum(len(batch) for batch in self._unsaved)

    def _commit_unsaved(self) -> None:
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        committed = False
        while self._unsaved:
            try:
                self.store.add(self._unsaved[0], self.dispatcher.sink_names)
            except StorageUnavailable:  # logged once by the store's health
                self._retry_commit_later()
                break
            self._unsaved.popleft()
            committed = True
            self._commit_delay = COMMIT_RETRY_MIN
        if committed:
            self.dispatcher.notify()

    def _retry_commit_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next publish tries again
            return
        self._commit_timer = loop.call_later(self._commit_delay, self._commit_unsaved)
        self._commit_delay = min(COMMIT_RETRY_MAX, self._commit_delay * 2)

    def commit_inbound(self, key: str, records: list[CallRecord]) -> bool:
        """Records that came over HTTP: committed once (repeats by ``key`` are dropped), then sent.
        Raises StorageUnavailable when the storage refuses them (the route answers 503)."""
        stored = self.store.add_once(key, [self._enrich(r) for r in records], self.dispatcher.sink_names)
        if stored:
            self.dispatcher.notify()
        return stored

    def _enrich(self, r: CallRecord) -> CallRecord:
        meta = dict(r.meta)
        did = r.fields.get("called_did")
        if did and did in self.cfg.pbx.lines:
            meta["line_name"] = self.cfg.pbx.lines[did]
        rec = r.fields.get("call_id_with_rec")
        if rec and r.event in (Event.RECORD, Event.END, Event.OUT_END):
            meta["recording_file"] = str(self._recordings / f"{rec}.wav")
        for enrich in self.enrichers:
            try:
                meta.update(enrich(CallRecord(r.fields, meta)))
            except Exception:  # extra meta is never worth losing the record
                log.exception("pipeline.enricher_failed", pbx_call_id=r.pbx_call_id)
        return CallRecord(r.fields, meta) if meta != r.meta else r

    # -- resync after every (re)connect --------------------------------------------------------
    async def on_connected(self, conn: AmiConnection, lost_at: float | None) -> None:
        """After every (re)connect: learn the live channels, close what ended while we were away."""
        self._resync_buffer = []
        try:
            result = await conn.action("CoreShowChannels")
            live = [to_live_channel(e) for e in result.events if e.get("Event") == "CoreShowChannel"]
            live = [await self._with_recording_state(conn, c) for c in live]
            records = self.tracker.resync(live, time.time(), lost_at)
            if records:
                self.publish(records)
            log.info(
                "ami.resynced",
                live_channels=len(live),
                records=len(records),
                reconstructed=lost_at is not None,
            )
            with contextlib.suppress(AmiError):
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

    async def sweeper(self) -> None:
        """Close calls that saw no AMI event for pbx.max_call_age (a lost Hangup)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            records = self.tracker.sweep(time.time())
            if records:
                log.warning("calls.swept", records=len(records))
                self.publish(records)
