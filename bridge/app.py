"""Composition root: builds everything from the config and owns the daemon's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog

from bridge import systemd
from bridge.bitrix_events import USER_EVENTS, DirectorySync, parse_event, user_id_of
from bridge.calls.events import LiveChannel
from bridge.calls.records import CallRecord, Event
from bridge.calls.tracker import Tracker, TrackerSettings
from bridge.click_to_call import ClickToCall
from bridge.config import Config
from bridge.directory import Directory, Employee
from bridge.http import smsc
from bridge.http.server import HttpServer
from bridge.jobs import Jobs
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.store import OutboxStore
from bridge.sinks.base import Sink
from bridge.sinks.bitrix24 import Bitrix24Sink, BitrixClient, BitrixSettings
from bridge.sinks.console import ConsoleSink
from bridge.sinks.http import Http
from bridge.sinks.jsonl import JsonlSink
from bridge.sinks.sms import SmsSettings, SmsSink
from bridge.sinks.telegram import TelegramSettings, TelegramSink
from bridge.sinks.webhook import WebhookSink
from bridge.sources.ami import AmiConnection, AmiSettings, AmiSupervisor, Backoff
from bridge.sources.ami_events import WANTED, to_channel_event, to_live_channel
from bridge.sources.ami_protocol import AmiError, AmiMessage
from bridge.telegram_bot import TelegramBot

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


def build_directory(cfg: Config, store: OutboxStore) -> Directory:
    """The directory in the outbox's database, with config.yaml's static employees (re)applied."""
    directory = Directory(store.db)
    for ext, e in cfg.directory.employees.items():
        directory.upsert(Employee(ext, e.name, e.bitrix_user_id, e.telegram_chat_id, True, "config"))
    directory.deactivate_others("config", set(cfg.directory.employees))
    return directory


def telegram_settings(cfg: Config) -> TelegramSettings:
    t = cfg.sinks.telegram
    return TelegramSettings(
        token=t.token,
        api_url=t.api_url.rstrip("/"),
        group_chats=tuple(t.group_chats),
        send_recordings=t.send_recordings,
        max_upload_mb=t.max_upload_mb,
        per_chat_rate=t.per_chat_rate,
        group_per_minute=t.group_per_minute,
        global_rate=t.global_rate,
        templates=t.templates,
        sms_chats=tuple(t.sms_chats),
        callback_button=t.callback_button and t.bot_updates != "off",
    )


def bitrix_settings(cfg: Config) -> BitrixSettings:
    b = cfg.sinks.bitrix24
    return BitrixSettings(
        webhook_url=b.webhook_url,
        app=b.app,
        default_user_id=b.default_user_id,
        crm_create=b.crm_create,
        show_card=b.show_card,
        attach_recordings=b.attach_recordings,
        timezone=cfg.pbx.timezone,
        rate=b.rate,
        burst=b.burst,
    )


def build_sinks(
    cfg: Config, store: OutboxStore, http: Http, directory: Directory, bitrix: BitrixClient | None = None
) -> list[Sink]:
    sinks: list[Sink] = []
    s = cfg.sinks
    if s.jsonl.enabled:
        sinks.append(JsonlSink(cfg.jsonl_path))
    if s.console.enabled:
        sinks.append(ConsoleSink())
    if s.telegram.enabled:
        settings = telegram_settings(cfg)
        sinks.append(TelegramSink(settings, http, store, directory))
    if s.bitrix24.enabled:
        sinks.append(Bitrix24Sink(bitrix_settings(cfg), http, store, directory, bitrix))
    if s.sms.enabled:
        m = s.sms
        sinks.append(
            SmsSink(
                SmsSettings(
                    api_url=m.api_url,
                    login=m.login,
                    password=m.password,
                    api_key=m.api_key,
                    sender=m.sender,
                    template=m.template,
                    company=m.company,
                    per_number_interval=m.per_number_interval,
                ),
                http,
                store,
            )
        )
    for i, hook in enumerate(s.webhooks):
        sinks.append(
            WebhookSink(hook.name or f"webhook{i + 1}", hook.url, hook.secret, http, frozenset(hook.events))
        )
    return sinks


def retry_policy(cfg: Config) -> RetryPolicy:
    o = cfg.outbox
    return RetryPolicy(base=o.retry_base, cap=o.retry_cap, max_age=o.max_age, send_timeout=o.send_timeout)


class App:
    def __init__(self, cfg: Config, extra_sinks: Sequence[Sink] = ()) -> None:
        self.cfg = cfg
        self.tracker = Tracker(tracker_settings(cfg))
        self.store = OutboxStore(cfg.outbox_path, cfg.outbox.synchronous.upper())
        self.http = Http(timeout=cfg.outbox.send_timeout)
        self.directory = build_directory(cfg, self.store)
        b = cfg.sinks.bitrix24
        self.bitrix = BitrixClient(bitrix_settings(cfg), self.http, self.store) if b.enabled else None
        self.jobs = Jobs(self.store.db)
        self.directory_sync = (
            DirectorySync(self.bitrix, self.directory, self.jobs, b.telegram_field, b.sync_interval)
            if self.bitrix is not None
            else None
        )
        sinks = [*build_sinks(cfg, self.store, self.http, self.directory, self.bitrix), *extra_sinks]
        self.dispatcher = Dispatcher(self.store, sinks, retry_policy(cfg))
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
        self.click_to_call: ClickToCall | None = ClickToCall(
            cfg, self.directory, self.store, self.ami, self.jobs, self._publish
        )
        t = cfg.sinks.telegram
        self.telegram_bot = (
            TelegramBot(
                telegram_settings(cfg), self.http, self.store, self.directory, self.jobs, self.click_to_call
            )
            if t.enabled and t.bot_updates != "off"
            else None
        )
        h = cfg.http
        self.http_server = (
            HttpServer(
                h.bind,
                h.port,
                h.max_body_kb * 1024,
                self._commit_inbound,
                self.status,
                cfg.novofon.api_secret,
                cfg.novofon.sms_token,
                (b.events_path, self._bitrix_event) if self.directory_sync is not None else None,
                self._smsc_callback if cfg.sinks.sms.enabled else None,
                (urlparse(t.webhook_url).path or "/telegram", t.webhook_secret, self._telegram_update)
                if self.telegram_bot is not None and t.bot_updates == "webhook"
                else None,
            )
            if h.enabled
            else None
        )
        self._resync_buffer: list[AmiMessage] | None = None
        self._recordings = Path(cfg.asterisk.recordings_dir)

    # -- AMI -> tracker -> outbox ---------------------------------------------------------------
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
            if self.click_to_call is not None:
                self.click_to_call.on_ami(msg)
        elif msg.get("Event") == "Registry":
            self.trunk_registrations[msg.get("Username", msg.get("Domain", "?"))] = msg.get("Status", "")

    def _publish(self, records: list[CallRecord]) -> None:
        """Commit the records (one delivery per sink) before anything is sent, then wake the sinks."""
        self.store.add([self._enrich(r) for r in records], self.dispatcher.sink_names)
        self.dispatcher.notify()
        if self.click_to_call is not None:
            self.click_to_call.on_records(records)

    def _commit_inbound(self, key: str, records: list[CallRecord]) -> bool:
        """Records that came over HTTP: committed once (repeats by ``key`` are dropped), then sent."""
        stored = self.store.add_once(key, [self._enrich(r) for r in records], self.dispatcher.sink_names)
        if stored:
            self.dispatcher.notify()
        return stored

    def _bitrix_event(self, form: dict[str, str]) -> str:
        """A Bitrix24 event, checked and committed as a job (Bitrix24 never retries a delivery)."""
        assert self.directory_sync is not None
        event, data = parse_event(form, self.cfg.sinks.bitrix24.application_token)
        if event in USER_EVENTS:
            self.jobs.add("bitrix-user", {"user_id": user_id_of(data)})
            return "queued"
        if event == "ONEXTERNALCALLSTART" and self.click_to_call is not None:
            return self.click_to_call.accept(data)
        log.info("bitrix24.event_ignored", bitrix_event=event)
        return "ignored"

    def _telegram_update(self, update: dict[str, Any]) -> None:
        """A Telegram webhook update: committed (a job) before Telegram hears 200; handled after."""
        if not self.store.seen_recently(f"tg-update:{update['update_id']}", 86400):
            self.jobs.add("telegram-update", update)

    def _smsc_callback(self, data: dict[str, str]) -> None:
        """SMS gateway callback: a delivery status is remembered, an incoming SMS goes to Telegram."""
        sms = self.cfg.sinks.sms
        smsc.check(data, sms.callback_secret, sms.callback_hash)
        kind, sms_id, phone = smsc.parse(data)
        if kind == "incoming":
            key, record = smsc.incoming_record(data, phone, self.cfg.pbx.default_did)
            self._commit_inbound(key, [record])
            return
        self.store.set_state("sms", f"status:{sms_id}", data["status"])
        log.info("sms.status", sms_id=sms_id, status=data["status"], error=data.get("err", ""))

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        oldest = self.store.oldest_pending()
        return {
            "ami": {
                "connected": self.ami.connected.is_set(),
                "address": self.ami.settings.address,
                "last_error": self.ami.last_error,
                "connects": self.ami.connects,
            },
            "trunk": self.trunk_registrations,
            "calls": {"active": self.tracker.active_calls},
            "outbox": {
                "pending": sum(c.get("pending", 0) for c in counts.values()),
                "dead": sum(c.get("dead", 0) for c in counts.values()),
                "oldest_pending_age_s": None if oldest is None else round(time.time() - oldest, 1),
                "by_sink": counts,
            },
            "directory": {"employees": len(self.directory)},
        }

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
            f"STATUS=AMI {state}; active calls {self.tracker.active_calls}; deliveries pending {self.backlog}"
        )

    @property
    def backlog(self) -> int:
        return sum(c.get("pending", 0) for c in self.store.counts().values())

    async def _housekeeping(self) -> None:
        """Purge delivered records older than outbox.keep_days, once an hour."""
        while True:
            older = time.time() - self.cfg.outbox.keep_days * 86400
            purged = self.store.purge(older)
            self.store.purge_state(older)
            if purged:
                log.info("outbox.purged", deliveries=purged, keep_days=self.cfg.outbox.keep_days)
            await asyncio.sleep(3600)

    def _telegram_tasks(self) -> list[asyncio.Task[None]]:
        bot, t = self.telegram_bot, self.cfg.sinks.telegram
        if bot is None:
            return []
        if t.bot_updates == "webhook":
            return [
                asyncio.create_task(bot.register_webhook(t.webhook_url, t.webhook_secret), name="tg-webhook")
            ]
        return [asyncio.create_task(bot.run(), name="telegram-bot")]

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(10)
            await asyncio.to_thread(self.store.checkpoint)

    async def _status_reporter(self) -> None:
        while True:
            self._report_status()
            await asyncio.sleep(5)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "bridge.starting",
            config=self.cfg.source,
            ami=self.ami.settings.address,
            sinks=self.dispatcher.sink_names,
            outbox=str(self.cfg.outbox_path),
        )
        tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self.ami.run(), name="ami"),
            asyncio.create_task(self._sweeper(), name="sweeper"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
            asyncio.create_task(self._checkpointer(), name="checkpointer"),
            asyncio.create_task(self.jobs.run(), name="jobs"),
            *self._telegram_tasks(),
            *(
                [asyncio.create_task(self.directory_sync.run(), name="directory")]
                if self.directory_sync and self.cfg.sinks.bitrix24.sync_interval > 0
                else []
            ),
            asyncio.create_task(self._status_reporter(), name="status"),
            asyncio.create_task(systemd.watchdog(), name="watchdog"),
        ]
        if self.http_server is not None:
            await self.http_server.start()
        systemd.notify("READY=1")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopper, *tasks[:2]], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stopper.cancel()
            systemd.notify("STOPPING=1")
            log.info("bridge.stopping", pending_deliveries=self.backlog)
            # Every record is already committed: stopping only lets in-flight sends finish.
            if self.http_server is not None:
                await self.http_server.stop()
            await self.dispatcher.stop(grace=5.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.ami.stop()
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
    await App(cfg).run(stop)
