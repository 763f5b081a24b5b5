"""novofon-bridge status | call | callback: the PBX over connections of the CLI's own.

``call`` and ``callback`` go over ARI (a Stasis application of the command's own) when
``asterisk.ari`` is configured, over AMI otherwise; ``status`` uses AMI and reports ARI and AGI.
(``check`` is the preflight: bridge/cli/preflight.py; ARI's part: bridge/pbx/ari_preflight.py.)
Every AMI failure is said with its real cause (bridge/pbx/diagnose.py): nothing listening, not
AMI, a wrong password, a missing class.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from bridge.calls.numbers import InvalidNumber
from bridge.cli import agi
from bridge.cli.common import EXIT_AMI, EXIT_INTERRUPTED, say
from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.ari import AriClient, AriError, AriNotFound
from bridge.pbx.ari_actions import AriActions
from bridge.pbx.catchup import cdr_source
from bridge.pbx.cdr import CdrError
from bridge.pbx.diagnose import ami_failure
from bridge.pbx.open_calls import OpenCallStore
from bridge.pbx.originate import PbxActions, ari_settings, checked_callback, checked_test_number
from bridge.pbx.permissions import ActionRefused
from bridge.pbx.pipeline import ami_settings
from bridge.preflight import Check, Context, Result

Actions = AriActions | PbxActions

EXIT_USAGE = 2  # as argparse: the arguments themselves are wrong


async def with_pbx(cfg: Config, work: Callable[[PbxActions], Awaitable[int]]) -> int:
    """Open an AMI connection of our own for one command; exit 3 when AMI cannot be used."""
    try:
        actions = await PbxActions.open(cfg)
    except AmiError as e:
        return ami_failed(cfg, e)
    try:
        return await work(actions)
    except AmiError as e:
        return ami_failed(cfg, e)
    finally:
        await actions.close()


def ami_failed(cfg: Config, e: AmiError) -> int:
    """Say why AMI cannot be used, with its real cause and the fix; exit 3."""
    if isinstance(e, ActionRefused):  # a missing class in manager.conf: named, with the line to change
        print(f"AMI: {e}", file=sys.stderr)
    else:
        problem, fix = ami_failure(e, ami_settings(cfg))
        print(f"AMI: {problem}. {tr('Что сделать', 'Fix')}: {fix}", file=sys.stderr)
    return EXIT_AMI


async def report_ari(cfg: Config) -> int:
    """``status``: ARI login, and is the running daemon's Stasis application registered?
    0 logged in (or ARI not used), 3 no ARI. An application not registered is said, not failed:
    ``status`` also reads a stopped daemon's database (as AGI's counters, the last outage)."""
    a = cfg.asterisk.ari
    if not a.configured:
        why = "asterisk.ari.enabled: false" if not a.enabled else "пароль не задан (asterisk.ari.password)"
        print(f"ARI: не используется — {why}; звонки идут через AMI")
        return 0
    client = AriClient(ari_settings(cfg))
    try:
        info = await client.info()
        version = (info.get("system") or {}).get("version", "?")
        print(f"ARI: вход выполнен ({client.settings.base}, Asterisk {version})")
        try:
            await client.application(a.app)
        except AriNotFound:
            why = "демон не запущен или не подключён к ARI (journalctl -u novofon-bridge: ari.unavailable)"
            print(f"ARI: приложение {a.app} не зарегистрировано — {why}")
            return 0
        print(f"ARI: приложение {a.app} зарегистрировано (демон подключён), звонки идут через ARI")
        return 0
    except AriError as e:
        print(f"ARI: нет подключения — {e}", file=sys.stderr)
        return EXIT_AMI
    finally:
        await client.close()


async def status(actions: PbxActions) -> int:
    cfg, st = actions.cfg, await actions.status()
    print(f"AMI: подключено к {cfg.asterisk.ami.host}:{cfg.asterisk.ami.port} ({st.banner})")
    ari = await report_ari(cfg)  # 3: ARI cannot be used (as AMI that cannot be: exit 3)
    ok = True
    if not st.registrations:
        print("Транк: исходящих регистраций нет (проверьте type=registration в pjsip.conf)")
        ok = False
    for name, state in st.registrations.items():
        mark = "зарегистрирован" if state == "Registered" else f"НЕ зарегистрирован ({state})"
        ok = ok and state == "Registered"
        print(f"Транк {name}: {mark}")
    for line in link_lines(cfg):
        print(line)
    print(f"Активных звонков: {len(st.calls)}")
    for linkedid, channels in st.calls.items():
        print(f"  {linkedid}: " + "; ".join(channels))
    await agi.show_status(cfg)
    return ari or (0 if ok else 1)


async def open_actions(cfg: Config) -> Actions:
    """Calls go over ARI when it is configured (AriError), over AMI otherwise (AmiError)."""
    if cfg.asterisk.ari.configured:
        return await AriActions.open(cfg)
    return await PbxActions.open(cfg)


async def place(cfg: Config, args: argparse.Namespace) -> int:
    """``call`` / ``callback``: over ARI or AMI. The numbers are checked before the PBX is even
    connected to; Ctrl-C (or SIGTERM) hangs up what was placed."""
    try:
        if args.command == "call":
            checked_test_number(cfg, args.number)
        else:
            checked_callback(cfg, args.employee, args.client, args.did)
    except InvalidNumber as e:
        print(f"ошибка: {e}; звонок не сделан", file=sys.stderr)
        return EXIT_USAGE
    try:
        actions = await open_actions(cfg)
    except AriError as e:
        print(f"ARI: {tr('нет подключения', 'cannot connect')} — {e}", file=sys.stderr)
        return EXIT_AMI
    except AmiError as e:
        return ami_failed(cfg, e)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    on_term = task is not None and _on_sigterm(loop, task)
    try:
        return await place_call(args)(actions)
    except asyncio.CancelledError:  # the command's own top level: the call was hung up below
        if task is not None:
            task.uncancel()
        print("прервано: вызовы этой команды сброшены", file=sys.stderr)
        return EXIT_INTERRUPTED
    except AmiError as e:
        return ami_failed(cfg, e)
    finally:
        if on_term:
            loop.remove_signal_handler(signal.SIGTERM)
        await actions.close()


def _on_sigterm(loop: asyncio.AbstractEventLoop, task: asyncio.Task[int]) -> bool:
    """SIGTERM cancels the command as Ctrl-C does; False where signals cannot be caught (the CLI
    run in a thread other than the main one: tests, an embedding tool)."""
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (RuntimeError, ValueError):
        return False
    return True


def place_call(args: argparse.Namespace) -> Callable[[Actions], Awaitable[int]]:
    async def place(actions: Actions) -> int:
        if args.command == "call":
            outcome = await actions.test_call(args.number, say, args.timeout)
        else:
            outcome = await actions.callback(args.employee, args.client, args.did, say, args.timeout)
        if outcome.answered:
            print(f"готово: разговор {outcome.talk_seconds:.0f} с, завершён: {outcome.reason}")
        else:
            print(f"звонок не удался: {outcome.reason}", file=sys.stderr)
        return outcome.exit_code

    return place


def cdr_checks(ctx: Context) -> list[Check]:
    """The preflight's CDR part: can the source the daemon backfills from be read?"""
    return [Check("CDR", lambda: _cdr(ctx.cfg))]


async def _cdr(cfg: Config) -> list[Result]:
    source = cdr_source(cfg)
    if source is None:
        return [
            Result.ok(
                "CDR",
                tr(
                    "восстановление звонков из CDR выключено (asterisk.cdr.backfill: false)",
                    "backfill from the CDR is off (asterisk.cdr.backfill: false)",
                ),
            )
        ]
    try:
        return [Result.ok("CDR", await source.probe())]
    except CdrError as e:
        return [
            Result.warning(
                "CDR",
                tr(f"не читается — {e}", f"cannot be read — {e}"),
                tr(
                    "звонки, пропущенные при разрыве связи с AMI, не восстановятся: проверьте "
                    "asterisk.cdr.csv_path (права на чтение для пользователя службы) "
                    "или asterisk.cdr.mysql_dsn",
                    "calls missed while AMI was down will not be backfilled: check asterisk.cdr.csv_path "
                    "(readable by the service user) or asterisk.cdr.mysql_dsn",
                ),
            )
        ]


async def cdr_line(cfg: Config) -> str:
    """Whether the CDR the daemon backfills from can be read (asterisk.cdr)."""
    source = cdr_source(cfg)
    if source is None:
        return "CDR: восстановление звонков из CDR выключено (asterisk.cdr.backfill: false)"
    try:
        return f"CDR: {await source.probe()}"
    except CdrError as e:
        return f"CDR: НЕ читается — {e}; звонки, пропущенные при разрыве связи, не восстановятся"


def link_lines(cfg: Config) -> list[str]:
    """What the daemon noted about its AMI link: the last outage and the calls backfilled."""
    link = OpenCallStore.read_link(cfg.outbox_path)
    if link is None:
        return []
    out = []
    if link.last_outage_from is not None and link.last_outage_to is not None:
        seconds = round(link.last_outage_to - link.last_outage_from)
        out.append(
            f"Последний разрыв связи с AMI: {_when(link.last_outage_from)} — {_when(link.last_outage_to)}"
            f" ({seconds} с), восстановлено из CDR звонков: {link.last_outage_backfilled}"
        )
    else:
        out.append("Разрывов связи с AMI не было")
    out.append(f"Всего восстановлено из CDR звонков: {link.backfilled_total}")
    if link.last_backfill_error:
        out.append(f"CDR: последняя ошибка — {link.last_backfill_error}")
    return out


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
