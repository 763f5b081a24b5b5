"""novofon-bridge outbox: pending, held and dead deliveries; retry; purge (safe while the daemon runs)."""

from __future__ import annotations

import argparse
import sys
import time

from bridge.cli.state import cli_store
from bridge.config import Config
from bridge.errors import StorageUnavailable
from bridge.logs import one_line
from bridge.outbox.store import Delivery, OutboxStore, State


def _line(label: str, d: Delivery, tail: str = "") -> str:
    f = d.record.fields
    return f"  [{label}] #{d.id} {d.sink} {f['event']} {d.record.pbx_call_id} попыток {d.attempts}" + tail


def run(cfg: Config, args: argparse.Namespace) -> int:
    """Inspect and repair the outbox (safe while the daemon runs: SQLite WAL)."""
    if not cfg.outbox_path.exists():
        print(f"{cfg.outbox_path}: нет очереди (демон ещё не запускался с этим storage.dir)", file=sys.stderr)
        return 1
    try:
        with cli_store(cfg) as store:
            return _act(store, args)
    except StorageUnavailable as e:
        print(f"не удалось записать в очередь: {e} (место на диске? права?)", file=sys.stderr)
        return 1


def _act(store: OutboxStore, args: argparse.Namespace) -> int:
    if args.action == "retry":
        n = store.retry_dead(args.sink)
        print(
            f"повторная отправка: {n} доставок возвращены в очередь (демон отправит их сам, "
            "записи каждого звонка — по порядку)"
        )
    elif args.action == "purge":
        n = store.purge(time.time() - args.days * 86400)
        print(f"удалено доставленных записей старше {args.days:g} дн.: {n}")
    else:
        _list(store, args.limit)
    return 0


def _list(store: OutboxStore, limit: int) -> None:
    def error(d: Delivery) -> str:
        return f" — {one_line(store.redact(d.last_error))}" if d.last_error else ""

    counts = store.counts()
    if not counts:
        print("очередь пуста")
    for sink, states in sorted(counts.items()):
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(states.items()))
        print(f"{sink}: {parts}")
    oldest = store.oldest_pending()
    if oldest is not None:
        print(f"самая старая неотправленная запись: {time.time() - oldest:.0f} с назад")
    held = {d.id: (holder, state) for d, holder, state in store.held(limit * 10)}
    for d in store.list(State.PENDING, limit):
        if d.id in held:
            holder, state = held[d.id]
            why = "мёртвая, ждёт outbox retry" if state == State.DEAD.value else "ещё не доставлена"
            print(_line("held", d, f" — ждёт #{holder} ({why})"))
        else:
            print(_line(State.PENDING.value, d, error(d)))
    for d in store.list(State.DEAD, limit):
        print(_line(State.DEAD.value, d, error(d)))
