"""novofon-bridge check | status | call | callback: the PBX over an AMI connection of the CLI's own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from bridge.calls.numbers import InvalidNumber
from bridge.cli import agi
from bridge.cli.common import EXIT_AMI, say
from bridge.config import Config
from bridge.integrations.bitrix24.checks import check_portal
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.originate import PbxActions, checked_callback, checked_test_number

EXIT_USAGE = 2  # as argparse: the arguments themselves are wrong


async def with_pbx(cfg: Config, work: Callable[[PbxActions], Awaitable[int]]) -> int:
    """Open an AMI connection of our own for one command; exit 3 when AMI is unreachable."""
    try:
        actions = await PbxActions.open(cfg)
    except AmiError as e:
        print(f"AMI: нет подключения — {e}", file=sys.stderr)
        return EXIT_AMI
    try:
        return await work(actions)
    finally:
        await actions.close()


async def check(cfg: Config, connect: bool) -> int:
    print(f"{cfg.source}: конфигурация в порядке")
    if not connect:
        return 0
    agi_ok = await agi.check_port(cfg)

    notes: list[str] | None = [] if cfg.agi.enabled else None
    bitrix = []
    if cfg.sinks.bitrix24.enabled:
        bitrix = await check_portal(cfg.sinks.bitrix24, cfg.outbox_path, notes)
    for problem in bitrix:
        print(f"Bitrix24: {problem}", file=sys.stderr)
    for note in notes or []:
        print(f"Bitrix24: {note}")

    async def login(actions: PbxActions) -> int:
        status = await actions.status()
        print(f"AMI: вход выполнен ({cfg.asterisk.ami.host}:{cfg.asterisk.ami.port}, {status.banner})")
        await agi.check_modules(cfg, actions.conn)
        return 0 if agi_ok and not bitrix else 1

    return await with_pbx(cfg, login)


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
