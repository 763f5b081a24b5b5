"""AMI -> tracker -> outbox: the one-way core, and what it needs around it.

- every AMI event goes through the pure tracker; the records it returns are enriched (line names,
  recording paths) and committed to the outbox, in one transaction with the snapshots of the calls
  they belong to (bridge/pbx/open_calls.py), before any sink is woken;
- at start the tracker takes back the open calls of the previous run; after every (re)connect and
  at every start the live channels are read (CoreShowChannels) and the tracker resyncs: calls that
  ended meanwhile are closed with what the CDR or the recording says (bridge/pbx/catchup.py), calls
  that began meanwhile are adopted, or backfilled from the CDR when they are over; events that
  arrive meanwhile are buffered and replayed after, in order;
- a housekeeping loop saves changed call snapshots every second, notes that we are listening,
  looks at the CDR again after a reconnect, and closes calls that saw no event for too long; the
  trunk registry remembers what the PBX said about the trunk's registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.calls.events import LiveChannel
from bridge.calls.records import CallRecord, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.config import Config
from bridge.outbox.dispatcher import Dispatcher
from bridge.outbox.store import OutboxStore
from bridge.pbx.ami import AmiConnection, AmiSettings
from bridge.pbx.ami_events import to_channel_event, to_live_channel
from bridge.pbx.ami_protocol import AmiError, AmiMessage
from bridge.pbx.catchup import CatchUp
from bridge.pbx.open_calls import OpenCallStore

log = structlog.get_logger("bridge.pbx")

SWEEP_INTERVAL = 60.0
TICK = 1.0  # snapshots of changed calls are saved this often (records save theirs at once)
HEARTBEAT_INTERVAL = 5.0  # "still listening" is noted this often (a restart backfills from there)

AmiObserver = Callable[[AmiMessage], None]
RecordObserver = Callable[[list[CallRecord]], None]


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
        local_max_delay=a.local_max_delay,
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
        settings = tracker_settings(cfg)
        self.tracker = Tracker(settings, persist=True)
        self.store = store
        self.open_calls = OpenCallStore(store.db)
        restored = self.tracker.restore(self.open_calls.load())
        if restored:
            log.info("calls.restored", open_calls=restored)
        self.catchup = CatchUp(cfg, settings, self.open_calls, self._commit_backfill)
        self._dispatcher: Dispatcher | None = None
        self.trunk_registrations: dict[str, str] = {}
        self.ami_observers: list[AmiObserver] = []
        self.record_observers: list[RecordObserver] = []
        self._resync_buffer: list[AmiMessage] | None = None
        self._recordings = Path(cfg.asterisk.recordings_dir)
        self._conn: AmiConnection | None = None
        self._connects = 0

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
        The snapshots of the calls that changed go in the same transaction: after a kill -9 the
        tracker knows exactly which records were committed."""
        enriched = [self._enrich(r) for r in records]
        self._commit(lambda: self.store.add(enriched, self.dispatcher.sink_names))
        self.dispatcher.notify()
        for observe in self.record_observers:
            observe(records)

    def _commit(self, write: Callable[[], object], seen: list[str] | None = None) -> None:
        changes = self.tracker.take_changes()
        now = time.time()
        try:
            with self.store.transaction():
                write()
                self.open_calls.apply(changes, now)
                if seen:
                    self.open_calls.mark_seen(seen, now)
        except BaseException:
            self.tracker.requeue(changes)
            raise

    def _commit_backfill(self, records: list[CallRecord], ids: list[str]) -> None:
        """A backfilled call: its records and the ids that say it was reported, in one commit."""
        enriched = [self._enrich(r) for r in records]
        self._commit(lambda: self.store.add(enriched, self.dispatcher.sink_names), ids)
        self.dispatcher.notify()
        for observe in self.record_observers:
            observe(records)

    def save_snapshots(self) -> None:
        """Commit the snapshots of calls that changed without emitting a record."""
        if self.tracker.has_changes:
            self._commit(lambda: None)

    def commit_inbound(self, key: str, records: list[CallRecord]) -> bool:
        """Records that came over HTTP: committed once (repeats by ``key`` are dropped), then sent."""
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
        return CallRecord(r.fields, meta) if meta != r.meta else r

    # -- resync after every (re)connect and at start ------------------------------------------
    async def on_connected(self, conn: AmiConnection, lost_at: float | None) -> None:
        """After every (re)connect: learn the live channels, close what ended while we were away,
        backfill what began and ended meanwhile."""
        self._resync_buffer = []
        first, self._connects = self._connects == 0, self._connects + 1
        try:
            result = await conn.action("CoreShowChannels")
            live = [to_live_channel(e) for e in result.events if e.get("Event") == "CoreShowChannel"]
            live = [await self._with_channel_state(conn, c) for c in live]
            since = self.catchup.window_start(lost_at, first)
            gone = self.tracker.vanished(c.uniqueid for c in live)
            cdr = await self.catchup.rows(since, gone)
            facts = self.catchup.facts(gone, cdr)
            now = time.time()
            records = self.tracker.resync(live, now, since, facts)
            if records:
                self.publish(records)
            backfilled = 0
            if since is not None:
                backfilled = self.catchup.run(cdr, since, self.tracker.known_ids())
            self.save_snapshots()
            self.catchup.outage_over(since, now, backfilled)
            self._conn = conn
            log.info(
                "ami.resynced",
                live_channels=len(live),
                records=len(records),
                reconstructed=since is not None,
                ended_meanwhile=len(gone),
                backfilled=backfilled,
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

    async def _with_channel_state(self, conn: AmiConnection, chan: LiveChannel) -> LiveChannel:
        """For a channel we are about to adopt: is MixMonitor recording it? (its variable says);
        for a call's first channel, the number its caller dialled (the dialplan may be far from
        the DID by now: a ring group's extension, a Queue's "s")."""
        if self.tracker.knows_channel(chan.uniqueid):
            return chan
        with contextlib.suppress(AmiError):
            got = await conn.action("Getvar", {"Channel": chan.channel, "Variable": "MIXMONITOR_FILENAME"})
            if got.ok and got.response.get("Value"):
                chan = dataclasses.replace(chan, recording=True)
            if chan.uniqueid == chan.linkedid:
                got = await conn.action("Getvar", {"Channel": chan.channel, "Variable": "CALLERID(dnid)"})
                did = got.response.get("Value", "") if got.ok else ""
                if did[:1].isdigit():
                    chan = dataclasses.replace(chan, did=did)
        return chan

    @property
    def listening(self) -> bool:
        return self._conn is not None and self._conn.is_open and self._resync_buffer is None

    async def sweeper(self) -> None:
        """The pipeline's housekeeping: save changed call snapshots (every second), note that we
        are listening (every few seconds), look at the CDR again after a reconnect, and close calls
        that saw no AMI event for pbx.max_call_age (a lost Hangup)."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + SWEEP_INTERVAL
        next_beat = 0.0
        try:
            while True:
                await asyncio.sleep(TICK)
                self.save_snapshots()
                now = time.time()
                if self.listening and loop.time() >= next_beat:
                    self.catchup.heartbeat(now)
                    next_beat = loop.time() + HEARTBEAT_INTERVAL
                window = self.catchup.due(now)
                if window is not None and self.listening:
                    await self._backfill_again(window)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_INTERVAL
                    self.catchup.forget_old(now)
                    records = self.tracker.sweep(now)
                    if records:
                        log.warning("calls.swept", records=len(records))
                        self.publish(records)
        finally:
            if self.listening:  # a clean stop: the next start backfills from this moment
                with contextlib.suppress(Exception):
                    self.save_snapshots()
                    self.catchup.heartbeat(time.time())

    async def _backfill_again(self, since: float) -> None:
        cdr = await self.catchup.rows(since, [])
        n = self.catchup.run(cdr, since, self.tracker.known_ids())
        self.catchup.counted(n)
        if n:
            log.info("calls.backfill_pass", backfilled=n)

    def link_status(self, down_since: float | None) -> dict[str, object]:
        """What /status says about the AMI link: the last outage and what was backfilled."""
        return self.catchup.status(down_since)
