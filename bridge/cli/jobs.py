"""novofon-bridge jobs [list|retry]: work asked for by Bitrix24 and Telegram (click-to-call, user
sync, «Перезвонить», bot replies) that died; retry it once its cause is fixed."""

from __future__ import annotations

import argparse
import sys
import time

from bridge.cli.state import cli_store
from bridge.config import Config
from bridge.logs import one_line
from bridge.outbox.jobs import Jobs


def run(cfg: Config, args: argparse.Namespace) -> int:
    if not cfg.outbox_path.exists():
        print(f"{cfg.outbox_path}: нет очереди (демон ещё не запускался с этим storage.dir)", file=sys.stderr)
        return 1
    with cli_store(cfg) as store:
        jobs = Jobs(store.db, redact=store.redact)
        if args.action == "retry":
            n = jobs.retry_dead(args.kind)
            print(f"повторное выполнение: {n} заданий возвращены в очередь (демон выполнит их сам)")
            return 0
        counts = jobs.counts()
        if not counts:
            print("заданий нет")
        print(", ".join(f"{state}: {n}" for state, n in sorted(counts.items())))
        for job in jobs.list("dead", args.limit):
            age = time.time() - job.created_at
            print(
                f"  [dead] #{job.id} {job.kind} {age:.0f} с назад, попыток {job.attempts} — "
                + one_line(jobs.redact(job.last_error or ""))
            )
        return 0
