"""novofon-bridge employees [list|sync|link]: the employee directory.

Names and numbers come from Bitrix24 users, who can type anything: every value is printed as one
line with control characters escaped (bridge.logs.one_line). Conflicts, Bitrix24 users claiming an
extension config.yaml gives someone else, are listed under the directory (config.yaml wins).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bridge.cli.state import cli_store
from bridge.config import Config
from bridge.directory import Directory
from bridge.errors import DeliveryError
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.directory_sync import DirectorySync
from bridge.logs import one_line
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.wiring import build_directory

SOURCES_RU = {"config": "config.yaml", "bitrix24": "Bitrix24"}


def run(cfg: Config, args: argparse.Namespace) -> int:
    """List the directory, or sync it from Bitrix24 now."""
    with cli_store(cfg) as store:
        directory = build_directory(cfg, store)
        if args.action == "link":
            employee = directory.get(args.extension or "")
            if employee is None:
                print(
                    f"внутреннего номера {one_line(repr(args.extension))} нет в справочнике "
                    "(novofon-bridge employees)",
                    file=sys.stderr,
                )
                return 1
            code = directory.new_link_code(employee.extension)
            print(
                f"Код для {employee.extension} ({one_line(employee.name) or 'без имени'}), "
                "действует сутки, один раз:"
            )
            print(f"  отправьте боту в Telegram: /start {code}")
            return 0
        if args.action == "sync":
            if not cfg.sinks.bitrix24.enabled:
                print("Bitrix24 не настроен (sinks.bitrix24.enabled: false)", file=sys.stderr)
                return 1
            return asyncio.run(_sync(cfg, store, directory))
        show(directory)
        return 0


def show(directory: Directory) -> None:
    rows = directory.all()
    if not rows:
        print("справочник пуст: добавьте directory.employees в config.yaml или настройте Bitrix24")
    for e in rows:
        state = "" if e.active else " (неактивен)"
        print(
            one_line(
                f"{e.extension:>6}  {e.name or '—'}  telegram: {e.telegram_chat_id or '—'}  "
                f"bitrix24: {e.bitrix_user_id or '—'}  [{e.source}]{state}"
            )
        )
    conflicts = directory.conflicts()
    if conflicts:
        print(f"Конфликты ({len(conflicts)}): номер закреплён за источником с большим приоритетом")
    for c in conflicts:
        who = f"пользователь {SOURCES_RU.get(c.source, c.source)} {c.claimant or '?'}"
        print(
            one_line(
                f"{c.extension:>6}  {who} ({c.name or 'без имени'}) указал этот номер, но он закреплён "
                f"в {SOURCES_RU.get(c.owner, c.owner)} — звонки получает запись из "
                f"{SOURCES_RU.get(c.owner, c.owner)}. Исправьте внутренний номер (UF_PHONE_INNER) "
                f'в Bitrix24 или, если это тот же человек, добавьте bitrix_user_id: "{c.claimant}" '
                f"в directory.employees.{c.extension} в config.yaml"
            )
        )


async def _sync(cfg: Config, store: OutboxStore, directory: Directory) -> int:
    http = Http()
    try:
        sync = DirectorySync(
            BitrixClient(cfg.sinks.bitrix24, http, StateStore(store.db)),
            directory,
            cfg.sinks.bitrix24.telegram_field,
            extensions=cfg.asterisk.internal_extensions,
        )
        try:
            result = await sync.sync_all()
        except DeliveryError as e:
            print(f"синхронизация не удалась: {one_line(store.redact(str(e)))}", file=sys.stderr)
            return 1
        print(
            f"Bitrix24: пользователей {result.seen}, сотрудников с внутренним номером {result.saved}, "
            f"отключено {result.deactivated}"
        )
        conflicts = directory.conflicts()
        if conflicts:
            print(f"конфликтов: {len(conflicts)} (подробности: novofon-bridge employees list)")
        return 0
    finally:
        await http.close()
