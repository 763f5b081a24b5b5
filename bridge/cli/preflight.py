"""novofon-bridge check: the preflight. Every part contributes its own checks (a provider each);
this module lists the providers, prints the results and turns them into the exit code:
0 all good, 1 warnings only, 2 errors. ``--no-connect`` keeps the checks that need no connection
(the config, the folders, the HTTP port, manager.conf) — the systemd unit runs that before each start.

A new part adds its provider to ``PROVIDERS`` (see the places kept below), written against
bridge/preflight.py: ``def checks(ctx: Context) -> list[Check]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.cli import agi, pbx
from bridge.config import Config, ConfigError
from bridge.http import preflight as http_preflight
from bridge.i18n import tr
from bridge.integrations.bitrix24 import preflight as bitrix24_preflight
from bridge.integrations.smsc import preflight as smsc_preflight
from bridge.integrations.telegram import preflight as telegram_preflight
from bridge.pbx import ari_preflight
from bridge.pbx import preflight as pbx_preflight
from bridge.preflight import Check, Context, Provider, Result, Severity, exit_code, render, summary
from bridge.preflight import run as run_checks
from bridge.startup import storage_problem

DEFAULT_ETC = Path("/etc/asterisk")


def core(ctx: Context) -> list[Check]:
    """The config file (loaded already: it is valid) and the storage folder."""
    cfg = ctx.cfg

    async def config() -> list[Result]:
        return [Result.ok(tr("Настройки", "Config"), tr(f"{cfg.source} в порядке", f"{cfg.source} is valid"))]

    async def storage() -> list[Result]:
        name = tr("Хранилище", "Storage")
        problem = storage_problem(Path(cfg.storage.dir))
        if problem is not None:
            return [Result.error(name, *problem)]
        return [Result.ok(name, tr(f"{cfg.storage.dir}: запись возможна", f"{cfg.storage.dir} is writable"))]

    return [Check("config", config, online=False), Check("storage", storage, online=False)]


PROVIDERS: tuple[Provider, ...] = (
    core,  # the config file, the storage folder
    http_preflight.checks,  # HTTP: the bind address, the port free (or held by the running daemon)
    pbx_preflight.checks,  # recordings readable; manager.conf (privileges, event filter); AMI; the trunk
    ari_preflight.checks,  # ARI: login; the daemon's Stasis application registered (or not yet)
    agi.checks,  # AGI: the FastAGI port free (or held by the running daemon); res_agi, func_module loaded
    pbx.cdr_checks,  # CDR (asterisk.cdr.*): the source the backfill reads is readable
    telegram_preflight.checks,  # getMe, each configured chat reachable
    bitrix24_preflight.checks,  # credentials, installation, scopes
    smsc_preflight.checks,  # the SMS gateway accepts the login/password or API key (balance.php)
)


def show(result: Result) -> None:
    print(render(result), file=sys.stdout if result.severity is Severity.OK else sys.stderr, flush=True)


async def run(cfg: Config, connect: bool, etc: str | None) -> int:
    ctx = Context(cfg, Path(etc) if etc else DEFAULT_ETC, asterisk_etc_given=etc is not None)
    checks = [check for provider in PROVIDERS for check in provider(ctx)]
    results = await run_checks(checks, connect)
    for result in results:
        show(result)
    if not connect:
        print(
            tr(
                "AMI, ARI, транк, Telegram, Bitrix24 и SMS-шлюз не проверялись (--no-connect)",
                "AMI, ARI, the trunk, Telegram, Bitrix24 and the SMS gateway were not checked (--no-connect)",
            )
        )
    print(summary(results))
    return exit_code(results)


def config_failed(e: ConfigError) -> int:
    """``check`` on a config that does not load: that one error, said the preflight's way."""
    results = [Result.error(tr("Настройки", "Config"), str(e))]
    show(results[0])
    print(summary(results))
    return exit_code(results)
