"""novofon-bridge command line: run | check | call | callback | status | outbox | employees."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bridge import config as config_mod
from bridge import logs
from bridge.actions import PbxActions
from bridge.app import bitrix_settings, build_directory, run_daemon
from bridge.bitrix_events import DirectorySync
from bridge.config import Config, ConfigError
from bridge.directory import Directory
from bridge.outbox.store import OutboxStore, State
from bridge.sinks.base import DeliveryError
from bridge.sinks.bitrix24 import BitrixClient
from bridge.sinks.http import Http
from bridge.sources.ami_protocol import AmiError

EXIT_CONFIG = 2
EXIT_AMI = 3


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("NOVOFON_BRIDGE_CONFIG") or config_mod.DEFAULT_PATH)


def _load(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(_config_path(getattr(args, "config", None)))
    logs.setup(
        cfg.logging.format,
        "warning"
        if args.command in ("call", "callback", "status", "outbox", "employees")
        else cfg.logging.level,
    )
    return cfg


def _say(text: str) -> None:
    print(text, flush=True)


async def _with_pbx(cfg: Config, work: Callable[[PbxActions], Awaitable[int]]) -> int:
    """Open an AMI connection of our own for one command; exit 3 when AMI is unreachable."""
    try:
        actions = await PbxActions.open(cfg)
    except AmiError as e:
        print(f"AMI: нет подключения — {e}", file=sys.stderr)
        return EXIT_AMI
    try:
        return await work(actions)
    finally:
        await actions.close()


async def _check(cfg: Config, connect: bool) -> int:
    print(f"{cfg.source}: конфигурация в порядке")
    if not connect:
        return 0

    async def login(actions: PbxActions) -> int:
        status = await actions.status()
        print(f"AMI: вход выполнен ({cfg.asterisk.ami.host}:{cfg.asterisk.ami.port}, {status.banner})")
        return 0

    return await _with_pbx(cfg, login)


async def _status(actions: PbxActions) -> int:
    cfg, st = actions.cfg, await actions.status()
    print(f"AMI: подключено к {cfg.asterisk.ami.host}:{cfg.asterisk.ami.port} ({st.banner})")
    ok = True
    if not st.registrations:
        print("Транк: исходящих регистраций нет (проверьте type=registration в pjsip.conf)")
        ok = False
    for name, state in st.registrations.items():
        mark = "зарегистрирован" if state == "Registered" else f"НЕ зарегистрирован ({state})"
        ok = ok and state == "Registered"
        print(f"Транк {name}: {mark}")
    print(f"Активных звонков: {len(st.calls)}")
    for linkedid, channels in st.calls.items():
        print(f"  {linkedid}: " + "; ".join(channels))
    return 0 if ok else 1


def _call(args: argparse.Namespace) -> Callable[[PbxActions], Awaitable[int]]:
    async def place(actions: PbxActions) -> int:
        if args.command == "call":
            outcome = await actions.test_call(args.number, _say, args.timeout)
        else:
            outcome = await actions.callback(args.employee, args.client, args.did, _say, args.timeout)
        if outcome.answered:
            print(f"готово: разговор {outcome.talk_seconds:.0f} с, завершён: {outcome.reason}")
        else:
            print(f"звонок не удался: {outcome.reason}", file=sys.stderr)
        return outcome.exit_code

    return place


def _outbox(cfg: Config, args: argparse.Namespace) -> int:
    """Inspect and repair the outbox (safe while the daemon runs: SQLite WAL)."""
    if not cfg.outbox_path.exists():
        print(f"{cfg.outbox_path}: нет очереди (демон ещё не запускался с этим storage.dir)", file=sys.stderr)
        return 1
    store = OutboxStore(cfg.outbox_path)
    try:
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
                        f"попыток {d.attempts}" + (f" — {d.last_error}" if d.last_error else "")
                    )
        return 0
    finally:
        store.close()


def _employees(cfg: Config, args: argparse.Namespace) -> int:
    """List the directory, or sync it from Bitrix24 now."""
    store = OutboxStore(cfg.outbox_path)
    try:
        directory = build_directory(cfg, store)
        if args.action == "link":
            employee = directory.get(args.extension or "")
            if employee is None:
                print(
                    f"внутреннего номера {args.extension!r} нет в справочнике (novofon-bridge employees)",
                    file=sys.stderr,
                )
                return 1
            code = directory.new_link_code(employee.extension)
            print(
                f"Код для {employee.extension} ({employee.name or 'без имени'}), действует сутки, один раз:"
            )
            print(f"  отправьте боту в Telegram: /start {code}")
            return 0
        if args.action == "sync":
            if not cfg.sinks.bitrix24.enabled:
                print("Bitrix24 не настроен (sinks.bitrix24.enabled: false)", file=sys.stderr)
                return 1
            return asyncio.run(_sync(cfg, store, directory))
        rows = directory.all()
        if not rows:
            print("справочник пуст: добавьте directory.employees в config.yaml или настройте Bitrix24")
        for e in rows:
            state = "" if e.active else " (неактивен)"
            print(
                f"{e.extension:>6}  {e.name or '—'}  telegram: {e.telegram_chat_id or '—'}  "
                f"bitrix24: {e.bitrix_user_id or '—'}  [{e.source}]{state}"
            )
        return 0
    finally:
        store.close()


async def _sync(cfg: Config, store: OutboxStore, directory: Directory) -> int:
    http = Http()
    try:
        sync = DirectorySync(
            BitrixClient(bitrix_settings(cfg), http, store),
            directory,
            None,
            cfg.sinks.bitrix24.telegram_field,
        )
        try:
            result = await sync.sync_all()
        except DeliveryError as e:
            print(f"синхронизация не удалась: {e}", file=sys.stderr)
            return 1
        print(
            f"Bitrix24: пользователей {result.seen}, сотрудников с внутренним номером {result.saved}, "
            f"отключено {result.deactivated}"
        )
        return 0
    finally:
        await http.close()


def build_parser() -> argparse.ArgumentParser:
    # -c works before or after the command: "novofon-bridge -c F call N" and "... call -c F N".
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"config file (default: $NOVOFON_BRIDGE_CONFIG or {config_mod.DEFAULT_PATH})",
    )
    p = argparse.ArgumentParser(prog="novofon-bridge", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon", parents=[common])
    chk = sub.add_parser("check", help="validate the config and log in to AMI", parents=[common])
    chk.add_argument("--no-connect", action="store_true", help="only validate the file")
    call = sub.add_parser("call", help="place a test call through the trunk and follow it", parents=[common])
    call.add_argument("number")
    call.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    cb = sub.add_parser("callback", help="ring an employee, then connect them to a client", parents=[common])
    cb.add_argument("--employee", required=True, help="extension, e.g. 101")
    cb.add_argument("--client", required=True, help="client number, e.g. 79004443322")
    cb.add_argument("--from", dest="did", default=None, help="our number (DID) shown to the client")
    cb.add_argument("--timeout", type=float, default=None)
    sub.add_parser("status", help="AMI connection, trunk registration, active calls", parents=[common])
    em = sub.add_parser("employees", help="the employee directory; sync it from Bitrix24", parents=[common])
    em.add_argument("action", nargs="?", choices=["list", "sync", "link"], default="list")
    em.add_argument("extension", nargs="?", help="link: the extension to make a Telegram code for")
    ob = sub.add_parser("outbox", help="pending and dead deliveries; retry; purge", parents=[common])
    ob.add_argument("action", nargs="?", choices=["list", "retry", "purge"], default="list")
    ob.add_argument("--sink", default=None, help="retry only this sink's dead deliveries")
    ob.add_argument("--days", type=float, default=7.0, help="purge: delivered records older than N days")
    ob.add_argument("--limit", type=int, default=50, help="list: at most N rows per state")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "run":
            asyncio.run(run_daemon(cfg))
            return 0
        if args.command == "check":
            return asyncio.run(_check(cfg, not args.no_connect))
        if args.command == "outbox":
            return _outbox(cfg, args)
        if args.command == "employees":
            return _employees(cfg, args)
        if args.command == "status":
            return asyncio.run(_with_pbx(cfg, _status))
        return asyncio.run(_with_pbx(cfg, _call(args)))
    except KeyboardInterrupt:
        return 130


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv[1:]))
