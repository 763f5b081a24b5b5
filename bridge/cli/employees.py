"""novofon-bridge employees [list|sync|link]: the employee directory."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bridge.config import Config
from bridge.directory import Directory
from bridge.errors import DeliveryError
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.directory_sync import DirectorySync
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.wiring import build_directory


def run(cfg: Config, args: argparse.Namespace) -> int:
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
            BitrixClient(cfg.sinks.bitrix24, http, StateStore(store.db)),
            directory,
            cfg.sinks.bitrix24.telegram_field,
            extensions=cfg.asterisk.internal_extensions,
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
