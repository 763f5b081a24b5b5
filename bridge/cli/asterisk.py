"""novofon-bridge asterisk install | uninstall: wire novofon-bridge into the PBX's own Asterisk.

The file edits are planned and written by bridge/pbx/install.py; here: the secrets (from the
service's env file, or new ones stored there, never printed), the output, and reloading Asterisk
through ``asterisk -rx`` when its control socket says it runs.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge.cli import envfile
from bridge.cli.common import say
from bridge.i18n import tr
from bridge.pbx import install
from bridge.pbx.conf import control_socket, walk
from bridge.pbx.install import InstallError, Plan
from bridge.pbx.snippets import Secrets

DEFAULT_ETC = Path("/etc/asterisk")
EXIT_REFUSED = 1
PLACEHOLDERS = ("change-me", "change_me", "changeme")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "asterisk",
        help=tr(
            "подключить novofon-bridge к Asterisk (#include) или FreePBX (*_custom.conf) и отключить",
            "wire novofon-bridge into Asterisk (#include) or FreePBX (*_custom.conf), and out again",
        ),
        description=tr(
            "Подключает настройки novofon-bridge к Asterisk, не меняя ни одной существующей строки.",
            "Wires novofon-bridge's settings into Asterisk without changing a single existing line.",
        ),
    )
    p.add_argument(
        "action",
        choices=["install", "uninstall"],
        help=tr(
            "install — подключить; uninstall — убрать ровно то, что добавил install",
            "install: wire in; uninstall: remove exactly what install added",
        ),
    )
    p.add_argument(
        "--etc",
        default=str(DEFAULT_ETC),
        metavar=tr("ПАПКА", "DIR"),
        help=tr(
            f"папка настроек Asterisk (по умолчанию {DEFAULT_ETC})",
            f"Asterisk's configuration folder (default {DEFAULT_ETC})",
        ),
    )
    p.add_argument(
        "--freepbx",
        action="store_true",
        help=tr(
            "FreePBX: писать только в *_custom.conf, оставленные для администратора",
            "FreePBX: write only the *_custom.conf files kept for the administrator",
        ),
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help=tr("показать изменения (diff) и ничего не записывать", "show the changes (diff), write nothing"),
    )


def run(args: argparse.Namespace) -> int:
    etc = Path(args.etc)
    try:
        if args.action == "install":
            return _install(etc, args.freepbx, args.dry_run)
        return _uninstall(etc, args.dry_run)
    except InstallError as e:
        print(str(e), file=sys.stderr)
        return EXIT_REFUSED
    except PermissionError as e:
        print(f"нет прав на запись в {e.filename or etc}: запустите команду от root (sudo)", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as e:
        print(f"{e.filename or etc}: {e.strerror or e}", file=sys.stderr)
        return EXIT_REFUSED


def _placeholder(value: str | None) -> bool:
    return not value or any(p in value.lower() for p in PLACEHOLDERS)


# Where an earlier install put each secret: (module file, our section, key).
INSTALLED = {
    "AMI_SECRET": ("manager.conf", "novofon-bridge", "secret"),
    "ARI_PASSWORD": ("ari.conf", "novofon-bridge", "password"),
}


def _installed(etc: Path, name: str) -> str | None:
    root, section, key = INSTALLED[name]
    for _, parsed in walk(etc, root, install.read_file):
        for s in parsed.sections:
            if s.ours and s.name == section and not _placeholder(s.get(key)):
                return s.get(key)
    return None


def _secrets(etc: Path) -> tuple[Secrets, dict[str, str], Path]:
    """The AMI secret and ARI password from the env file; where it has none, the one Asterisk
    already has from an earlier install, or a new one. Never printed."""
    file = envfile.path()
    try:
        values = envfile.read(file) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(
            f"{file}: не прочитан ({e}); исправьте файл или его права и запустите снова"
        ) from None
    new: dict[str, str] = {}
    for name in INSTALLED:
        installed = _installed(etc, name)
        if _placeholder(values.get(name)):
            new[name] = installed or secrets.token_hex(24)
        elif installed is not None and installed != values[name]:
            say(
                f"ВНИМАНИЕ: {name} в {file} не тот, что уже записан в настройках Asterisk "
                f"({INSTALLED[name][0]}, пользователь novofon-bridge): впишите один и тот же в оба места"
            )
    merged = {**values, **new}
    return Secrets(merged["AMI_SECRET"], merged["ARI_PASSWORD"]), new, file


def _install(etc: Path, freepbx: bool, dry_run: bool) -> int:
    found, new, env_file = _secrets(etc)
    plan = install.plan_install(etc, freepbx, found, install.find_snippets())
    say(
        f"Asterisk: {etc} — "
        + ("FreePBX (файлы *_custom.conf)" if freepbx else "обычный Asterisk (#include)")
    )
    _show(plan, dry_run, (found.ami_secret, found.ari_password))
    if new and not dry_run:
        envfile.store(env_file, new)
    for name in INSTALLED:
        how = "будет записан" if dry_run else "записан"
        say(f"{name}: " + (f"{how} в {env_file} (0600)" if name in new else f"взят из {env_file}"))
    if not plan.changes:
        say("Ничего не изменено в Asterisk: novofon-bridge уже подключён.")
        return 0
    if dry_run:
        say("Пробный запуск: ничего не записано. Asterisk выполнил бы: " + "; ".join(plan.reloads))
        return 0
    _apply(plan)
    code = _reload(etc, plan.reloads)
    if not freepbx:
        say(
            f"Дальше: впишите SIP-логин и пароль из my.novofon.com в {etc / 'novofon-bridge_pjsip.conf'} "
            f"(YOUR_SIP_LOGIN_HERE, YOUR_SIP_PASSWORD_HERE) и свои номера в "
            f"{etc / 'novofon-bridge_extensions.conf'} ([novofon-routes]), затем: "
            'asterisk -rx "module reload res_pjsip.so"; asterisk -rx "dialplan reload"'
        )
    else:
        say(
            f"Дальше: впишите SIP-логин и пароль из my.novofon.com в {etc}/pjsip.*_custom.conf "
            "(YOUR_SIP_LOGIN_HERE, YOUR_SIP_PASSWORD_HERE), входящие маршруты настройте во FreePBX, "
            'затем: asterisk -rx "module reload res_pjsip.so"'
        )
    return code


def _uninstall(etc: Path, dry_run: bool) -> int:
    plan = install.plan_uninstall(etc)
    say(f"Asterisk: {etc}")
    _show(plan, dry_run, ())
    if not plan.changes:
        say("Ничего не изменено: novofon-bridge не подключён.")
        return 0
    if dry_run:
        say("Пробный запуск: ничего не записано. Asterisk выполнил бы: " + "; ".join(plan.reloads))
        return 0
    _apply(plan)
    return _reload(etc, plan.reloads)


def _show(plan: Plan, dry_run: bool, hide: tuple[str, ...]) -> None:
    if dry_run:
        diff = plan.diff(hide)
        if diff:
            print(diff, end="", flush=True)
    for c in plan.changes:
        say(f"  {c.path.name}: {c.what}")
    for note in plan.notes:
        say(f"  заметка: {note}")


def _apply(plan: Plan) -> None:
    backup = install.apply(plan)
    if backup is not None:
        say(f"Резервные копии прежних файлов: {backup}")


def _reload(etc: Path, commands: list[str]) -> int:
    """Apply the changes in a running Asterisk; say so when it does not run."""
    sock = control_socket(etc)
    if not sock.is_socket():
        say(f"Asterisk не запущен (нет {sock}): изменения вступят в силу при его запуске.")
        return 0
    binary = shutil.which("asterisk") or next(
        (p for p in ("/usr/sbin/asterisk", "/usr/local/sbin/asterisk") if Path(p).is_file()), None
    )
    if binary is None:
        say(
            "Не найдена программа asterisk: выполните сами: "
            + "; ".join(f'asterisk -rx "{c}"' for c in commands)
        )
        return EXIT_REFUSED
    config = etc / "asterisk.conf"
    prefix = [binary, *(["-C", str(config)] if etc != DEFAULT_ETC and config.is_file() else [])]
    failed = False
    for command in commands:
        try:
            done = subprocess.run([*prefix, "-rx", command], capture_output=True, text=True, timeout=30)
            detail = (done.stderr + done.stdout).strip()
            # asterisk -rx exits 0 even when the command is unknown or fails: read what it says.
            ok = done.returncode == 0 and not any(
                w in detail for w in ("No such command", "failed", "Unable")
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            ok, detail = False, str(e)
        say(f"Asterisk: {command} — " + ("выполнено" if ok else f"ОШИБКА: {detail}"))
        failed = failed or not ok
    return EXIT_REFUSED if failed else 0
