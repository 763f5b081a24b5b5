"""novofon-bridge check | status | call | callback: the PBX over connections of the CLI's own.

``call`` and ``callback`` go over ARI (a Stasis application of the command's own) when
``asterisk.ari`` is configured, over AMI otherwise; ``check`` and ``status`` use AMI and report ARI and AGI.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from bridge.calls.numbers import InvalidNumber
from bridge.cli import agi
from bridge.cli.common import EXIT_AMI, say
from bridge.config import Config
from bridge.integrations.bitrix24.checks import check_portal
from bridge.pbx.ami_protocol import AmiError
from bridge.pbx.ari import AriClient, AriError, AriNotFound
from bridge.pbx.ari_actions import AriActions
from bridge.pbx.originate import PbxActions, ari_settings, checked_callback, checked_test_number

Actions = AriActions | PbxActions

EXIT_USAGE = 2  # as argparse: the arguments themselves are wrong
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


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
        ari = await report_ari(cfg, daemon_expected=False)
        return ari or (0 if agi_ok and not bitrix else 1)

    return await with_pbx(cfg, login)


async def report_ari(cfg: Config, daemon_expected: bool = True) -> int:
    """ARI: log in, and is the daemon's Stasis application registered? 0 yes, 1 no, 3 no ARI.

    ``check`` is also the pre-flight before the service is first started (as its AGI port check,
    which accepts a free port or our running daemon): there (``daemon_expected=False``) an
    application not registered yet is said, not failed. ``status`` is about the running daemon."""
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
            if not daemon_expected:
                print(
                    f"ARI: приложение {a.app} пока не зарегистрировано — {why}; "
                    "запущенный демон его регистрирует"
                )
                return 0
            print(f"ARI: приложение {a.app} не зарегистрировано — {why}", file=sys.stderr)
            return 1
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
    ok = await report_ari(cfg) == 0
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
    except (AriError, AmiError) as e:
        print(f"{'ARI' if isinstance(e, AriError) else 'AMI'}: нет подключения — {e}", file=sys.stderr)
        return EXIT_AMI
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
