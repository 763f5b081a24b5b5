"""novofon-bridge command line: run, check, call, callback, status, outbox, jobs, employees, asterisk.

Help and errors are in Russian, in English when the locale is English (bridge/i18n.py). No
traceback reaches the person at the terminal: every failure we know of is said with its cause
and fix; anything else is one line (NOVOFON_BRIDGE_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bridge import config as config_mod
from bridge import logs
from bridge.cli import asterisk, employees, envfile, jobs, outbox, pbx, preflight
from bridge.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_STORAGE
from bridge.config import Config, ConfigError
from bridge.i18n import LANG, tr
from bridge.outbox.health import StorageOpenError
from bridge.redact import Redactor
from bridge.startup import StartupError, StorageStartupError, require_storage


def _config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("NOVOFON_BRIDGE_CONFIG") or config_mod.DEFAULT_PATH)


def _load(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(_config_path(getattr(args, "config", None)))
    logs.setup(
        cfg.logging.format,
        "warning"
        if args.command in ("call", "callback", "status", "outbox", "jobs", "employees", "check")
        else cfg.logging.level,
        Redactor.from_settings(cfg),
    )
    return cfg


# argparse's own messages (Python 3.11-3.13), for the Russian help; anything else stays as it is.
_ARGPARSE_RU = [
    (r"the following arguments are required: (.*)", r"не хватает аргументов: \1"),
    (r"unrecognized arguments: (.*)", r"неизвестные аргументы: \1"),
    (
        r"argument (\S+): invalid choice: (.*) \(choose from (.*)\)",
        r"аргумент \1: недопустимое значение \2 (возможны: \3)",
    ),
    (r"argument (\S+): invalid (\w+) value: (.*)", r"аргумент \1: ожидается число (\2), а указано \3"),
    (r"argument (\S+): expected one argument", r"аргумент \1: нужно значение"),
    (r"argument (\S+): not allowed with argument (.*)", r"аргумент \1 нельзя указывать вместе с \2"),
]


class _Formatter(argparse.HelpFormatter):
    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        # prefix "" is argparse working out a sub-command's prog: kept empty.
        super().add_usage(
            usage, actions, groups, tr("использование: ", "usage: ") if prefix is None else prefix
        )


class Parser(argparse.ArgumentParser):
    """argparse in the user's language: section titles, -h, usage and error lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        add_help = kwargs.get("add_help", True)
        kwargs["add_help"] = False  # our own -h, in the user's language
        parents: list[argparse.ArgumentParser] = kwargs.pop("parents", [])
        super().__init__(*args, **kwargs)
        # The titles before the parents' options come in: argparse merges groups by title.
        self._positionals.title = tr("аргументы", "positional arguments")
        self._optionals.title = tr("параметры", "options")
        for parent in parents:  # what ArgumentParser(parents=...) does
            self._add_container_actions(parent)
            self._defaults.update(parent._defaults)
        if add_help:
            self.add_argument(
                "-h",
                "--help",
                action="help",
                help=tr("показать эту справку и выйти", "show this help and exit"),
            )

    def error(self, message: str) -> NoReturn:
        text = message
        if LANG == "ru":
            for pattern, ru in _ARGPARSE_RU:
                text = re.sub(pattern, ru, text)
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: {tr('ошибка', 'error')}: {text}\n")


def build_parser() -> argparse.ArgumentParser:
    # -c works before or after the command: "novofon-bridge -c F call N" and "... call -c F N".
    common = Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        metavar=tr("ФАЙЛ", "FILE"),
        help=tr(
            f"файл настроек (по умолчанию: $NOVOFON_BRIDGE_CONFIG или {config_mod.DEFAULT_PATH})",
            f"config file (default: $NOVOFON_BRIDGE_CONFIG or {config_mod.DEFAULT_PATH})",
        ),
    )
    p = Parser(
        prog="novofon-bridge",
        description=tr(
            "Мост между Asterisk и Telegram, Bitrix24 и CRM по протоколу уведомлений Novofon.",
            "Bridges Asterisk to Telegram, Bitrix24 and CRMs that speak Novofon's notifications.",
        ),
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", required=True, title=tr("команды", "commands"))
    sub.add_parser(
        "run",
        help=tr("запустить демон (служба systemd)", "run the daemon (the systemd service)"),
        parents=[common],
    )
    chk = sub.add_parser(
        "check",
        help=tr("проверить всё перед запуском (preflight)", "check everything before the start (preflight)"),
        description=tr(
            "Проверяет настройки, папки, HTTP-порт, вход и права в AMI, фильтр событий, регистрацию "
            "транка, ARI и AGI, Telegram, Bitrix24 и SMS-шлюз — и говорит, что исправить. Код выхода: "
            "0 — всё в порядке, 1 — есть предупреждения, 2 — есть ошибки.",
            "Checks the config, folders, the HTTP port, AMI login and permissions, the event filter, the "
            "trunk's registration, ARI login, AGI, Telegram, Bitrix24 and the SMS gateway; each problem "
            "with its fix. "
            "Exit code: 0 all good, 1 warnings, 2 errors.",
        ),
        parents=[common],
    )
    chk.add_argument(
        "--no-connect",
        action="store_true",
        help=tr(
            "только то, что проверяется без подключений (настройки, папки, порт)",
            "only what needs no connection (the config, folders, the port)",
        ),
    )
    chk.add_argument(
        "--etc",
        default=None,
        metavar=tr("ПАПКА", "DIR"),
        help=tr(
            f"папка настроек Asterisk, откуда читается manager.conf (по умолчанию {preflight.DEFAULT_ETC})",
            f"Asterisk's configuration folder to read manager.conf from (default {preflight.DEFAULT_ETC})",
        ),
    )
    call = sub.add_parser(
        "call",
        help=tr(
            "тестовый звонок через транк, с рассказом о ходе звонка",
            "place a test call through the trunk and follow it",
        ),
        parents=[common],
    )
    call.add_argument(
        "number", metavar=tr("НОМЕР", "NUMBER"), help=tr("например 79991234567", "e.g. 79991234567")
    )
    call.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="N",
        help=tr("сдаться, если никто не ответил за N секунд", "give up if nobody answers within N seconds"),
    )
    cb = sub.add_parser(
        "callback",
        help=tr(
            "обратный звонок: сначала сотруднику, затем клиенту",
            "ring an employee, then connect them to a client",
        ),
        parents=[common],
    )
    cb.add_argument(
        "--employee",
        required=True,
        metavar=tr("ДОБ", "EXT"),
        help=tr("внутренний номер, например 101", "extension, e.g. 101"),
    )
    cb.add_argument(
        "--client",
        required=True,
        metavar=tr("НОМЕР", "NUMBER"),
        help=tr("номер клиента, например 79004443322", "client number, e.g. 79004443322"),
    )
    cb.add_argument(
        "--from",
        dest="did",
        default=None,
        metavar="DID",
        help=tr("наш номер (DID), который увидит клиент", "our number (DID) shown to the client"),
    )
    cb.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="N",
        help=tr(
            "сдаться, если никто не ответил за N секунд (разговор не ограничен)",
            "give up if nobody answers within N s (no talk limit)",
        ),
    )
    sub.add_parser(
        "status",
        help=tr(
            "подключение к AMI и ARI, регистрация транка, текущие звонки",
            "AMI and ARI connections, trunk registration, active calls",
        ),
        parents=[common],
    )
    em = sub.add_parser(
        "employees",
        help=tr(
            "справочник сотрудников; синхронизация с Bitrix24",
            "the employee directory; sync it from Bitrix24",
        ),
        parents=[common],
    )
    em.add_argument(
        "action",
        nargs="?",
        choices=["list", "sync", "link"],
        default="list",
        help=tr(
            "list — показать (по умолчанию); sync — обновить из Bitrix24; link — код для привязки Telegram",
            "list: show them (default); sync: update from Bitrix24; link: a code to link Telegram",
        ),
    )
    em.add_argument(
        "extension",
        nargs="?",
        metavar=tr("НОМЕР", "EXTENSION"),
        help=tr(
            "link: внутренний номер, для которого сделать код Telegram",
            "link: the extension to make a Telegram code for",
        ),
    )
    ob = sub.add_parser(
        "outbox",
        help=tr(
            "очередь отправки: ожидающие и неудавшиеся доставки; повтор; очистка",
            "pending and dead deliveries; retry; purge",
        ),
        parents=[common],
    )
    ob.add_argument(
        "action",
        nargs="?",
        choices=["list", "retry", "purge"],
        default="list",
        help=tr(
            "list — показать (по умолчанию); retry — повторить неудавшиеся; purge — удалить доставленные",
            "list: show them (default); retry: retry the dead ones; purge: delete delivered records",
        ),
    )
    ob.add_argument(
        "--sink",
        default=None,
        metavar=tr("ПОЛУЧАТЕЛЬ", "SINK"),
        help=tr(
            "повторить неудавшиеся доставки только этого получателя", "retry only this sink's dead deliveries"
        ),
    )
    ob.add_argument(
        "--days",
        type=float,
        default=7.0,
        metavar="N",
        help=tr("purge: доставленные записи старше N дней", "purge: delivered records older than N days"),
    )
    ob.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help=tr("list: не больше N строк на состояние", "list: at most N rows per state"),
    )
    jb = sub.add_parser(
        "jobs",
        help=tr(
            "задания от Bitrix24 и Telegram: неудавшиеся; повтор",
            "work asked for by Bitrix24 and Telegram: dead jobs; retry",
        ),
        parents=[common],
    )
    jb.add_argument(
        "action",
        nargs="?",
        choices=["list", "retry"],
        default="list",
        help=tr(
            "list — показать (по умолчанию); retry — повторить неудавшиеся",
            "list: show them (default); retry: retry the dead ones",
        ),
    )
    jb.add_argument(
        "--kind",
        default=None,
        metavar=tr("ВИД", "KIND"),
        help=tr(
            "повторить только задания этого вида (например click2call)",
            "retry only this kind of job (e.g. click2call)",
        ),
    )
    jb.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help=tr("list: не больше N строк", "list: at most N rows"),
    )
    asterisk.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; Ctrl-C anywhere ends it with exit code 130 and no traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\n" + tr("прервано (Ctrl-C)", "interrupted (Ctrl-C)"), file=sys.stderr)
        return EXIT_INTERRUPTED
    except StartupError as e:
        print(f"{tr('ошибка', 'error')}: {e}", file=sys.stderr)
        return EXIT_STORAGE if isinstance(e, StorageStartupError) else EXIT_FAILED
    except StorageOpenError as e:  # a corrupt or unwritable database: say which file and what to do
        print(f"{tr('ошибка хранилища', 'storage error')}: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except Exception as e:  # the last line of defence: one line for people, never a traceback
        if os.environ.get("NOVOFON_BRIDGE_DEBUG"):
            raise
        print(
            tr(
                f"непредвиденная ошибка: {type(e).__name__}: {e}. Это ошибка novofon-bridge: сообщите о ней; "
                "подробности покажет запуск с NOVOFON_BRIDGE_DEBUG=1",
                f"unexpected error: {type(e).__name__}: {e}. A bug in novofon-bridge: please report it; "
                "run with NOVOFON_BRIDGE_DEBUG=1 for the details",
            ),
            file=sys.stderr,
        )
        return EXIT_FAILED


def _main(argv: Sequence[str] | None) -> int:
    # The daemon gets its secrets from systemd's EnvironmentFile; the CLI reads the same file.
    warning = envfile.load_into(os.environ, envfile.path())
    if warning:
        print(f"{tr('предупреждение', 'warning')}: {warning}", file=sys.stderr)
    args = build_parser().parse_args(argv)
    if args.command == "asterisk":
        return asterisk.run(args)  # needs no config.yaml: it comes before the daemon is set up
    try:
        cfg = _load(args)
    except ConfigError as e:
        if args.command == "check":
            return preflight.config_failed(e)
        print(f"{tr('ошибка в настройках', 'config error')}: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run":
        from bridge.app import run_daemon  # only here: every other command stays light

        asyncio.run(run_daemon(cfg))
        return 0
    if args.command == "check":
        return asyncio.run(preflight.run(cfg, not args.no_connect, args.etc))
    if args.command in ("outbox", "jobs", "employees"):
        require_storage(Path(cfg.storage.dir))  # a folder that is a file is said so, not "no queue"
    if args.command == "outbox":
        return outbox.run(cfg, args)
    if args.command == "jobs":
        return jobs.run(cfg, args)
    if args.command == "employees":
        return employees.run(cfg, args)
    if args.command == "status":
        return asyncio.run(pbx.with_pbx(cfg, pbx.status))
    return asyncio.run(pbx.place(cfg, args))


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main(sys.argv[1:]))
