"""novofon-bridge status | call | callback: the PBX over an AMI connection of the CLI's own.

(``check`` is the preflight: bridge/cli/preflight.py.) Every AMI failure is said with its real
cause (bridge/pbx/diagnose.py): nothing listening, not AMI, a wrong password, a missing class.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable

from bridge.calls.numbers import InvalidNumber
from bridge.cli import agi
from bridge.cli.common import EXIT_AMI, say
from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.catchup import cdr_source
from bridge.pbx.cdr import CdrError
from bridge.pbx.diagnose import ami_failure
from bridge.pbx.open_calls import OpenCallStore
from bridge.pbx.originate import PbxActions, checked_callback, checked_test_number
from bridge.pbx.permissions import ActionRefused
from bridge.pbx.pipeline import ami_settings
from bridge.preflight import Check, Context, Result

EXIT_USAGE = 2  # as argparse: the arguments themselves are wrong


async def with_pbx(cfg: Config, work: Callable[[PbxActions], Awaitable[int]]) -> int:
    """Open an AMI connection of our own for one command; exit 3 when AMI cannot be used."""
    try:
        actions = await PbxActions.open(cfg)
    except AmiError as e:
        problem, fix = ami_failure(e, ami_settings(cfg))
        print(f"AMI: {problem}. {tr('Что сделать', 'Fix')}: {fix}", file=sys.stderr)
        return EXIT_AMI
    try:
        return await work(actions)
    except ActionRefused as e:  # a missing class in manager.conf: named, with the line to change
        print(f"AMI: {e}", file=sys.stderr)
        return EXIT_AMI
    except AmiError as e:
        problem, fix = ami_failure(e, ami_settings(cfg))
        print(f"AMI: {problem}. {tr('Что сделать', 'Fix')}: {fix}", file=sys.stderr)
        return EXIT_AMI
    finally:
        await actions.close()


async def status(actions: PbxActions) -> int:
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
    for line in link_lines(cfg):
        print(line)
    print(f"Активных звонков: {len(st.calls)}")
    for linkedid, channels in st.calls.items():
        print(f"  {linkedid}: " + "; ".join(channels))
    await agi.show_status(cfg)
    return 0 if ok else 1


async def place(cfg: Config, args: argparse.Namespace) -> int:
    """``call`` / ``callback``: the numbers are checked before AMI is even connected to."""
    try:
        if args.command == "call":
            checked_test_number(cfg, args.number)
        else:
            checked_callback(cfg, args.employee, args.client, args.did)
    except InvalidNumber as e:
        print(f"ошибка: {e}; звонок не сделан", file=sys.stderr)
        return EXIT_USAGE
    return await with_pbx(cfg, place_call(args))


def place_call(args: argparse.Namespace) -> Callable[[PbxActions], Awaitable[int]]:
    async def place(actions: PbxActions) -> int:
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
