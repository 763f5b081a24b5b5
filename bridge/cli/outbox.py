"""novofon-bridge outbox: pending and dead deliveries; retry; purge (safe while the daemon runs)."""

from __future__ import annotations

import argparse
import sys
import time

from bridge.cli.state import cli_store
from bridge.config import Config
from bridge.logs import one_line
from bridge.outbox.store import State


def run(cfg: Config, args: argparse.Namespace) -> int:
    """Inspect and repair the outbox (safe while the daemon runs: SQLite WAL)."""
    if not cfg.outbox_path.exists():
        print(f"{cfg.outbox_path}: нет очереди (демон ещё не запускался с этим storage.dir)", file=sys.stderr)
        return 1
    with cli_store(cfg) as store:
        if args.action == "retry":
            n = store.retry_dead(args.sink)
            print(f"повторная отправка: {n} доставок возвращены в очередь (демон отправит их сам)")
        elif args.action == "purge":
            n = store.purge(time.time() - args.days * 86400)
            print(f"удалено доставленных записей старше {args.days:g} дн.: {n}")
        else:
            counts = store.counts()
            if not counts:
                print("очередь пуста")
            for sink, states in sorted(counts.items()):
                parts = ", ".join(f"{k}: {v}" for k, v in sorted(states.items()))
                print(f"{sink}: {parts}")
            oldest = store.oldest_pending()
            if oldest is not None:
                print(f"самая старая неотправленная запись: {time.time() - oldest:.0f} с назад")
            for state in (State.PENDING, State.DEAD):
                for d in store.list(state, args.limit):
                    f = d.record.fields
                    print(
                        f"  [{state.value}] #{d.id} {d.sink} {f['event']} {d.record.pbx_call_id} "
                        f"попыток {d.attempts}"
                        + (f" — {one_line(store.redact(d.last_error))}" if d.last_error else "")
                    )
        return 0
