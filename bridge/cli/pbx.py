"""novofon-bridge status | call | callback: the PBX over an AMI connection of the CLI's own.

(``check`` is the preflight: bridge/cli/preflight.py.) Every AMI failure is said with its real
cause (bridge/pbx/diagnose.py): nothing listening, not AMI, a wrong password, a missing class.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from bridge.calls.numbers import InvalidNumber
from bridge.cli import agi
from bridge.cli.common import EXIT_AMI, say
from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.diagnose import ami_failure
from bridge.pbx.originate import PbxActions, checked_callback, checked_test_number
from bridge.pbx.permissions import ActionRefused
from bridge.pbx.pipeline import ami_settings

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
