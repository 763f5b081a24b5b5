"""novofon-bridge command line: run, check, call, callback, status, outbox, jobs, employees, asterisk."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import config as config_mod
from bridge import logs
from bridge.cli import asterisk, employees, envfile, jobs, outbox, pbx
from bridge.cli.common import EXIT_CONFIG, EXIT_STORAGE
from bridge.config import Config, ConfigError
from bridge.outbox.health import StorageOpenError
from bridge.redact import Redactor


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("NOVOFON_BRIDGE_CONFIG") or config_mod.DEFAULT_PATH)


def _load(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(_config_path(getattr(args, "config", None)))
    logs.setup(
        cfg.logging.format,
        "warning"
        if args.command in ("call", "callback", "status", "outbox", "jobs", "employees")
        else cfg.logging.level,
        Redactor.from_settings(cfg),
    )
    return cfg


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
    jb = sub.add_parser(
        "jobs", help="work asked for by Bitrix24 and Telegram: dead jobs; retry", parents=[common]
    )
    jb.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    jb.add_argument("--kind", default=None, help="retry only this kind of job (e.g. click2call)")
    jb.add_argument("--limit", type=int, default=50, help="list: at most N rows")
    asterisk.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; Ctrl-C anywhere ends it with exit code 130 and no traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\nпрервано (Ctrl-C)", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    # The daemon gets its secrets from systemd's EnvironmentFile; the CLI reads the same file.
    warning = envfile.load_into(os.environ, envfile.path())
    if warning:
        print(f"предупреждение: {warning}", file=sys.stderr)
    args = build_parser().parse_args(argv)
    if args.command == "asterisk":
        return asterisk.run(args)  # needs no config.yaml: it comes before the daemon is set up
    try:
        cfg = _load(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "run":
            from bridge.app import run_daemon  # only here: every other command stays light

            asyncio.run(run_daemon(cfg))
            return 0
        if args.command == "check":
            return asyncio.run(pbx.check(cfg, not args.no_connect))
        if args.command == "outbox":
            return outbox.run(cfg, args)
        if args.command == "jobs":
            return jobs.run(cfg, args)
        if args.command == "employees":
            return employees.run(cfg, args)
        if args.command == "status":
            return asyncio.run(pbx.with_pbx(cfg, pbx.status))
        return asyncio.run(pbx.place(cfg, args))
    except StorageOpenError as e:  # a corrupt or unwritable database: say which file and what to do
        print(f"ошибка хранилища: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt:
        print("\nпрервано (Ctrl-C)", file=sys.stderr)
        return 130


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv[1:]))
