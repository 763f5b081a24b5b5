"""``novofon-bridge check`` for Bitrix24: can the portal do what we will ask of it?

The scopes come from the ``scope`` method (user.get needs ``user``; register/finish need
``telephony``); in application mode, ``app.info`` says whether the installation is complete, and
the token must exist (ONAPPINSTALL) — and ``public_url`` must be set for click-to-call.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.errors import DeliveryError
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.state import StateStore

REQUIRED_SCOPES = {
    "telephony": "звонки в CRM (telephony.externalcall.*)",
    "user": "сотрудники (user.get)",
}


async def problems(settings: Bitrix24Settings, client: BitrixClient) -> list[str]:
    """What is wrong with the portal's side, in Russian, one line each; empty when all is well."""
    if not settings.enabled:
        return []
    found: list[str] = []
    if settings.app_mode and not settings.public_url:
        found.append(
            "не задан sinks.bitrix24.public_url: события (click-to-call, новые сотрудники) не будут "
            "подписаны (event.bind)"
        )
    if settings.app_mode and not (settings.app.client_id and settings.app.client_secret):
        found.append(
            "не заданы sinks.bitrix24.app.client_id / client_secret: токен не обновится через час "
            "(возьмите их из формы локального приложения)"
        )
    if settings.app_mode and not client.has_credentials():
        return [*found, "локальное приложение не установлено на портале: нет токена (ждём ONAPPINSTALL)"]
    try:
        scopes = await client.call("scope", {})
        if settings.app_mode:
            info = await client.call("app.info", {})
            if isinstance(info, dict) and info.get("INSTALLED") is False:
                found.append("установка приложения не завершена (app.info: INSTALLED = false)")
    except DeliveryError as e:
        return [*found, f"портал не ответил на проверку: {e}"]
    have = {str(s) for s in scopes} if isinstance(scopes, list) else set()
    for scope, why in REQUIRED_SCOPES.items():
        if scope not in have:
            where = "приложения" if settings.app_mode else "входящего вебхука"
            found.append(f"у {where} нет права «{scope}» — нужно для: {why}; добавьте его в настройках")
    return found


async def check_portal(settings: Bitrix24Settings, db_path: Path) -> list[str]:
    """``problems`` with a client of its own (the CLI's), reading the application's tokens from
    the daemon's database when there is one."""
    db = sqlite3.connect(db_path if db_path.is_file() else ":memory:", isolation_level=None)
    http = Http()
    try:
        return await problems(settings, BitrixClient(settings, http, StateStore(db)))
    finally:
        await http.close()
        db.close()
