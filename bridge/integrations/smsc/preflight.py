"""``check`` for the SMS gateway: its login and password (or API key) are accepted, asked the way
SMSC is asked for the balance (``balance.php`` next to ``send.php``, ``fmt=3``). Without it, a
wrong password shows only as a dead letter after the first missed call."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from bridge.http.client import Http
from bridge.i18n import tr
from bridge.integrations.smsc.settings import SmsSettings
from bridge.preflight import Check, Context, Result

TIMEOUT = 10.0


def checks(ctx: Context) -> list[Check]:
    if not ctx.cfg.sinks.sms.enabled:
        return []
    return [Check(tr("SMS-шлюз", "SMS gateway"), lambda: gateway(ctx.cfg.sinks.sms))]


def balance_url(api_url: str) -> str:
    """SMSC's balance.php beside the configured send.php (any other gateway URL: itself)."""
    base, sep, _ = api_url.rpartition("/send.php")
    return f"{base}/balance.php" if sep else api_url


def credentials(s: SmsSettings) -> dict[str, str]:
    """What send.php is given too: the API key when set, else the login and password."""
    return {"apikey": s.api_key} if s.api_key else {"login": s.login, "psw": s.password}


async def gateway(s: SmsSettings) -> list[Result]:
    name = tr("SMS-шлюз: вход", "SMS gateway: login")
    url = balance_url(s.api_url)
    http = Http(timeout=TIMEOUT)
    try:
        async with http.session.post(url, data={**credentials(s), "fmt": "3"}) as resp:
            status, text = resp.status, await resp.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as e:
        return [
            Result.error(
                name,
                tr(f"{url} недоступен: {type(e).__name__}", f"{url} is unreachable: {type(e).__name__}"),
                tr(
                    "проверьте доступ в интернет (HTTPS наружу) и sinks.sms.api_url",
                    "check internet access (outgoing HTTPS) and sinks.sms.api_url",
                ),
            )
        ]
    finally:
        await http.close()
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or status != 200:
        return [
            Result.warning(
                name,
                tr(
                    f"шлюз ответил не так, как SMSC (HTTP {status}): вход не проверен",
                    f"the gateway does not answer as SMSC does (HTTP {status}): login not checked",
                ),
                tr(
                    "sinks.sms.api_url должен вести на send.php шлюза (https://smsc.ru/sys/send.php)",
                    "sinks.sms.api_url must point to the gateway's send.php (https://smsc.ru/sys/send.php)",
                ),
            )
        ]
    if "error_code" in body or "error" in body:
        code = str(body.get("error_code", ""))
        what, where = (
            (tr("API-ключ (api_key)", "API key (api_key)"), "SMSC_API_KEY")
            if s.api_key
            else (
                tr("логин и пароль (login, password)", "login and password (login, password)"),
                "SMSC_PASSWORD",
            )
        )
        fix = (
            tr(
                f"шлюз не принял {what}: исправьте в config.yaml / {where} в "
                "/etc/novofon-bridge/env (ключ API — в кабинете SMSC, «Настройки»)",
                f"the gateway refused the {what}: correct it in config.yaml / {where} in "
                "/etc/novofon-bridge/env (the API key is in SMSC's cabinet, Settings)",
            )
            if code == "2"
            else tr("см. коды ошибок SMSC (4 — IP временно заблокирован)", "see SMSC's error codes")
        )
        error = str(body.get("error", ""))[:200]
        return [Result.error(name, tr(f"ошибка {code}: {error}", f"error {code}: {error}"), fix)]
    balance = str(body.get("balance", "?"))[:40]
    return [Result.ok(name, tr(f"вход принят, баланс {balance}", f"login accepted, balance {balance}"))]
