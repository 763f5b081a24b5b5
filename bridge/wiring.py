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
from bridge.pbx.ami import AmiSupervisor, Backoff
from bridge.pbx.ami_events import WANTED
from bridge.pbx.originate import Originator
from bridge.pbx.pipeline import Pipeline, ami_settings
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
    calls: Originator
    dispatcher: Dispatcher
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
    calls = Originator(cfg, ami, pipeline.publish)
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
    return Components(
        cfg, store, state, http, directory, jobs, pipeline, ami, calls, dispatcher, parts, routes
    )
