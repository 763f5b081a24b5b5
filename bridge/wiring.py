"""config -> components: the one place that builds the daemon's parts, shared with the CLI.

Order matters only because the outbox's dispatcher needs every sink: the core (store, directory,
jobs, the AMI pipeline, call placing) is built first, then each integration's ``setup(ctx)``, then
the dispatcher over all the sinks they gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.config import Config
from bridge.directory import Directory, Employee
from bridge.http.client import Http
from bridge.http.server import Route
from bridge.integrations.base import Context, Parts
from bridge.integrations.bitrix24 import plugin as bitrix24
from bridge.integrations.local import plugin as local
from bridge.integrations.novofon import plugin as novofon
from bridge.integrations.smsc import plugin as smsc
from bridge.integrations.telegram import plugin as telegram
from bridge.outbox.dispatcher import Dispatcher, RetryPolicy
from bridge.outbox.jobs import Jobs
from bridge.outbox.sink import Sink
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.pbx.agi import AgiServer
from bridge.pbx.ami import AmiSupervisor, Backoff
from bridge.pbx.ami_events import WANTED
from bridge.pbx.ari import AriClient, AriSupervisor
from bridge.pbx.originate import Originator, ari_settings, stasis_settings
from bridge.pbx.pipeline import Pipeline, ami_settings
from bridge.pbx.route_history import RouteHistory
from bridge.pbx.routing import Router
from bridge.pbx.stasis import EVENTS as STASIS_EVENTS
from bridge.pbx.stasis import StasisApp
from bridge.redact import Redactor

INTEGRATIONS = {
    "local": local.setup,
    "novofon": novofon.setup,
    "telegram": telegram.setup,
    "bitrix24": bitrix24.setup,
    "smsc": smsc.setup,
}


def open_store(cfg: Config) -> OutboxStore:
    """The outbox's database; errors stored in it have the config's secrets masked."""
    return OutboxStore(cfg.outbox_path, cfg.outbox.synchronous.upper(), Redactor.from_settings(cfg))


def build_directory(cfg: Config, store: OutboxStore) -> Directory:
    """The directory in the outbox's database, with config.yaml's static employees (re)applied."""
    directory = Directory(store.db)
    for ext, e in cfg.directory.employees.items():
        directory.upsert(Employee(ext, e.name, e.bitrix_user_id, e.telegram_chat_id, True, "config"))
    directory.deactivate_others("config", set(cfg.directory.employees))
    return directory


def retry_policy(cfg: Config) -> RetryPolicy:
    o = cfg.outbox
    return RetryPolicy(
        base=o.retry_base,
        cap=o.retry_cap,
        max_age=o.max_age,
        send_timeout=o.send_timeout,
        parallel_calls=o.parallel_calls,
    )


@dataclass
class Components:
    cfg: Config
    store: OutboxStore
    state: StateStore
    http: Http
    directory: Directory
    jobs: Jobs
    pipeline: Pipeline
    ami: AmiSupervisor
    ari: AriSupervisor | None  # None: ARI is off (or has no password): calls go over AMI
    stasis: StasisApp | None
    calls: Originator
    dispatcher: Dispatcher
    router: Router
    agi: AgiServer | None = None  # None: agi.enabled is false
    parts: dict[str, Parts] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)


def build(cfg: Config, extra_sinks: Sequence[Sink] = ()) -> Components:
    store = open_store(cfg)
    state = StateStore(store.db)
    http = Http(timeout=cfg.outbox.send_timeout)
    directory = build_directory(cfg, store)
    jobs = Jobs(store.db, redact=store.redact, health=store.health)
    pipeline = Pipeline(cfg, store)
    a = cfg.asterisk.ami
    ami = AmiSupervisor(
        ami_settings(cfg),
        on_event=pipeline.on_ami_event,
        on_connected=pipeline.on_connected,
        events=WANTED,
        backoff=Backoff(min_delay=a.reconnect_min_delay, max_delay=a.reconnect_max_delay),
    )
    ari, stasis = build_ari(cfg)
    calls = Originator(cfg, ami, pipeline.publish, ari, stasis)
    pipeline.ami_observers.append(calls.on_ami)
    pipeline.record_observers.append(calls.on_records)
    ctx = Context(cfg, state, http, directory, jobs, calls, pipeline.publish, pipeline.commit_inbound)
    parts = {name: setup(ctx) for name, setup in INTEGRATIONS.items()}
    sinks: list[Sink] = [s for p in parts.values() for s in p.sinks]
    for p in parts.values():
        for kind, (handler, max_age) in p.job_handlers.items():
            jobs.handle(kind, handler, max_age)
    dispatcher = Dispatcher(store, [*sinks, *extra_sinks], retry_policy(cfg))
    pipeline.attach(dispatcher)
    routes = [r for p in parts.values() for r in p.routes]
    pipeline.enrichers.extend(e for p in parts.values() for e in p.enrichers)
    router, agi = build_routing(cfg, store, directory, pipeline, parts)
    return Components(
        cfg,
        store,
        state,
        http,
        directory,
        jobs,
        pipeline,
        ami,
        ari,
        stasis,
        calls,
        dispatcher,
        router,
        agi,
        parts,
        routes,
    )


def build_routing(
    cfg: Config, store: OutboxStore, directory: Directory, pipeline: Pipeline, parts: dict[str, Parts]
) -> tuple[Router, AgiServer | None]:
    """Routing to the responsible manager: our own talk history (kept from the records whether
    or not AGI is on), the CRM an integration offers, and the FastAGI server when enabled."""
    history = RouteHistory(store.db, store.health)
    pipeline.record_observers.append(history.observe)
    crm = next((p.responsible for p in parts.values() if p.responsible is not None), None)
    router = Router(cfg.agi, directory, history, crm, max_call_age=cfg.pbx.max_call_age)
    if not cfg.agi.enabled:
        return router, None
    pipeline.enrichers.append(router.meta_for)
    pipeline.record_observers.append(router.on_records)
    a = cfg.agi
    return router, AgiServer(a.bind, a.port, router, a.route_timeout, cfg.pbx.country_code)


def build_ari(cfg: Config) -> tuple[AriSupervisor | None, StasisApp | None]:
    """Our Stasis application and the events WebSocket that feeds it (same backoff as AMI)."""
    if not cfg.asterisk.ari.configured:
        return None, None
    a = cfg.asterisk.ami
    client = AriClient(ari_settings(cfg))
    stasis = StasisApp(client, stasis_settings(cfg, cfg.asterisk.ari.app))
    backoff = Backoff(min_delay=a.reconnect_min_delay, max_delay=a.reconnect_max_delay)
    return AriSupervisor(client, stasis.on_event, stasis.readopt, STASIS_EVENTS, backoff), stasis
