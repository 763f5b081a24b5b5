"""AMI -> tracker -> outbox: the one-way core, and what it needs around it.

- every AMI event goes through the pure tracker; the records it returns are enriched (line names,
  recording paths) and committed to the outbox, in one transaction with the snapshots of the calls
  they belong to (bridge/pbx/open_calls.py), before any sink is woken; while the storage refuses
  writes (disk full, read-only) records and snapshots wait in memory, in order, and a timer commits
  them as soon as it takes writes again;
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
import functools
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from bridge.calls.events import LiveChannel
from bridge.calls.records import CallRecord, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.config import Config
from bridge.errors import StorageUnavailable
from bridge.outbox.dispatcher import Dispatcher
from bridge.outbox.store import OutboxStore
from bridge.pbx.ami import AmiConnection, AmiSettings
from bridge.pbx.ami_events import RECORDING_VARIABLE, to_channel_event, to_live_channel
from bridge.pbx.ami_protocol import AmiError, AmiMessage
from bridge.pbx.catchup import CatchUp
from bridge.pbx.open_calls import OpenCallStore
from bridge.pbx.recordings import recording_files

log = structlog.get_logger("bridge.pbx")

SWEEP_INTERVAL = 60.0
TICK = 1.0  # snapshots of changed calls are saved this often (records save theirs at once)
HEARTBEAT_INTERVAL = 5.0  # "still listening" is noted this often (a restart backfills from there)
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
        self.enrichers: list[Enricher] = []
        self._resync_buffer: list[AmiMessage] | None = None
        self.recordings = recording_files(cfg)
        self._conn: AmiConnection | None = None
        self._connects = 0
        # (records, ids of a backfilled call) the storage refused, oldest first
        self._unsaved: deque[tuple[list[CallRecord], list[str]]] = deque()
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
        order (``unsaved``), always in one transaction with the snapshots of the calls that changed:
        after a kill -9 the tracker knows exactly which records were committed."""
        self._queue([self._enrich(r) for r in records], [])
        for observe in self.record_observers:
            observe(records)

    def _commit_backfill(self, records: list[CallRecord], ids: list[str]) -> None:
        """A backfilled call: its records and the ids that say it was reported, in one commit."""
        self._queue([self._enrich(r) for r in records], ids)
        for observe in self.record_observers:
            observe(records)

    def save_snapshots(self) -> None:
        """Commit the snapshots of calls that changed without emitting a record (with any records
        still waiting for the storage: a snapshot is never ahead of the committed records)."""
        if self._commit_timer is not None:
            return  # the storage refused the last commit: its timer commits these too
        if self._unsaved or self.tracker.has_changes:
            self._commit_unsaved()

    @property
    def unsaved(self) -> int:
        """Records waiting for the storage to take writes again."""
        return sum(len(records) for records, _ in self._unsaved)

    def _unsaved_ids(self) -> set[str]:
        """Ids of backfilled calls still waiting for the storage (never backfilled twice)."""
        return {i for _, seen in self._unsaved for i in seen}

    def _queue(self, records: list[CallRecord], seen: list[str]) -> None:
        self._unsaved.append((records, seen))
        self._commit_unsaved()

    def _commit_unsaved(self) -> None:
        """Everything waiting, in order, plus the tracker's changed snapshots: one commit."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        batches = list(self._unsaved)
        changes = self.tracker.take_changes()
        now = time.time()
        try:
            with self.store.transaction():
                for records, seen in batches:
                    if records:
                        self.store.add(records, self.dispatcher.sink_names, now)
                    if seen:
                        self.open_calls.mark_seen(seen, now)
                self.open_calls.apply(changes, now)
        except StorageUnavailable:  # logged once by the store's health
            self.tracker.requeue(changes)
            self._retry_commit_later()
            return
        except BaseException:
            self.tracker.requeue(changes)
            raise
        for _ in batches:
            self._unsaved.popleft()
        self._commit_delay = COMMIT_RETRY_MIN
        if any(records for records, _ in batches):
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
            path = self._recording_path(r, rec)
            if path is None:
                meta.pop("recording_file", None)
            else:
                meta["recording_file"] = str(path)
        for enrich in self.enrichers:
            try:
                meta.update(enrich(CallRecord(r.fields, meta)))
            except Exception:  # extra meta is never worth losing the record
                log.exception("pipeline.enricher_failed", pbx_call_id=r.pbx_call_id)
        return CallRecord(r.fields, meta) if meta != r.meta else r

    def _recording_path(self, r: CallRecord, rec: str) -> Path | None:
        """The daemon's path of the recording: the file MixMonitor named (``meta.recording_file``
        from the tracker, or already the daemon's path from a backfill), else a file in the folder
        that holds the recorded channel's Uniqueid, else ``<uniqueid>.wav`` (the sinks wait for it)."""
        named = r.meta.get("recording_file")
        if named:
            return self.recordings.resolve(named)
        if self.recordings.folder is None:
            return None
        if r.meta.get("source", "").startswith("novofon-cloud"):  # HTTP, not our PBX: no search
            return self.recordings.folder / f"{rec}.wav"
        found = self.recordings.find([rec], [time.time(), *self._start_of(r)])
        return found or self.recordings.folder / f"{rec}.wav"

    def _start_of(self, r: CallRecord) -> list[float]:
        try:
            start = datetime.strptime(r.fields.get("call_start", ""), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return []
        return [start.replace(tzinfo=ZoneInfo(self.cfg.pbx.timezone)).timestamp()]

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
                backfilled = self.catchup.run(cdr, since, self.tracker.known_ids() | self._unsaved_ids())
            self.save_snapshots()
            self._link_write(lambda: self.catchup.outage_over(since, now, backfilled))
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
            got = await conn.action("Getvar", {"Channel": chan.channel, "Variable": RECORDING_VARIABLE})
            if got.ok and got.response.get("Value"):
                chan = dataclasses.replace(chan, recording=True, recording_file=got.response["Value"])
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
                if self.listening and not self._unsaved and loop.time() >= next_beat:
                    # never while records wait for the storage: a restart backfills from here
                    self._link_write(functools.partial(self.catchup.heartbeat, now))
                    next_beat = loop.time() + HEARTBEAT_INTERVAL
                window = self.catchup.due(now)
                if window is not None and self.listening:
                    await self._backfill_again(window)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_INTERVAL
                    self._link_write(functools.partial(self.catchup.forget_old, now))
                    records = self.tracker.sweep(now)
                    if records:
                        log.warning("calls.swept", records=len(records))
                        self.publish(records)
        finally:
            if self.listening:  # a clean stop: the next start backfills from this moment
                with contextlib.suppress(Exception):
                    self._commit_unsaved()
                    if not self._unsaved:
                        self._link_write(lambda: self.catchup.heartbeat(time.time()))

    async def _backfill_again(self, since: float) -> None:
        cdr = await self.catchup.rows(since, [])
        n = self.catchup.run(cdr, since, self.tracker.known_ids() | self._unsaved_ids())
        self._link_write(lambda: self.catchup.counted(n))
        if n:
            log.info("calls.backfill_pass", backfilled=n)

    def _link_write(self, write: Callable[[], None]) -> None:
        """A note on the AMI link or the calls seen (open_calls.py); while the storage refuses
        writes it is skipped (the store's health says so once; the next note says it again)."""
        with contextlib.suppress(StorageUnavailable), self.store.transaction():
            write()

    def link_status(self, down_since: float | None) -> dict[str, object]:
        """What /status says about the AMI link: the last outage and what was backfilled."""
        return self.catchup.status(down_since)
