"""``check`` for Asterisk: the recordings folder, the AMI user in manager.conf (privileges and the
event filter, against what we ship), AMI login, the permissions the bridge uses, the trunk.

The permissions are asked of Asterisk itself, harmlessly: ``ListCommands`` lists exactly the
actions this user may send (Asterisk filters it by the user's write= classes), so nothing is
originated or hung up to find out.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx import manager_conf, permissions
from bridge.pbx import recordings_access as rec
from bridge.pbx.ami import AmiConnection
from bridge.pbx.ami_protocol import AmiError, AmiMessage
from bridge.pbx.diagnose import ami_failure
from bridge.pbx.pipeline import ami_settings
from bridge.pbx.trunk import registration_results
from bridge.preflight import Check, Context, Result

FULLY_BOOTED_WAIT = 1.0  # seconds after login for Asterisk's FullyBooted (read=system)
DANGEROUS_WRITE = ("system", "command", "all")


def checks(ctx: Context) -> list[Check]:
    cfg = ctx.cfg
    return [
        Check(tr("Записи разговоров", "Recordings"), lambda: recordings(cfg), online=False),
        Check("manager.conf", lambda: manager_user(ctx), online=False),
        Check("AMI", lambda: ami(cfg)),
    ]


# -- recordings ---------------------------------------------------------------------------------------


async def recordings(cfg: Config) -> list[Result]:
    name = tr("Записи разговоров", "Recordings")
    folder = Path(cfg.asterisk.recordings_dir)
    key = "asterisk.recordings_dir"
    if not cfg.asterisk.recordings_dir:
        return [
            Result.ok(
                name,
                tr(f"{key} не задан: записи не отправляются", f"{key} is empty: recordings are not sent"),
            )
        ]
    hidden = rec.hidden_from_service(folder)
    if hidden:
        return [
            Result.warning(
                name,
                tr(
                    f"{key} {folder} — внутри {hidden}, а служба его не видит (ProtectHome/PrivateTmp в "
                    "юните)",
                    f"{key} {folder} is under {hidden}, which the service cannot see "
                    "(ProtectHome/PrivateTmp)",
                ),
                tr(
                    "держите записи в /var/spool/asterisk/monitor (так делают Asterisk и FreePBX)",
                    "keep recordings in /var/spool/asterisk/monitor (as Asterisk and FreePBX do)",
                ),
            )
        ]
    who = rec.service_identity()
    try:
        blocked = await asyncio.to_thread(rec.unreadable, folder, who)
    except FileNotFoundError:
        return [
            Result.warning(
                name,
                tr(f"папки {key} {folder} нет", f"{key} {folder} does not exist"),
                tr(
                    "укажите папку, куда MixMonitor пишет записи (Asterisk и FreePBX: "
                    "/var/spool/asterisk/monitor)",
                    "set the folder MixMonitor writes to (Asterisk and FreePBX: /var/spool/asterisk/monitor)",
                ),
            )
        ]
    except NotADirectoryError:
        return [Result.warning(name, tr(f"{key} {folder} — не папка", f"{key} {folder} is not a folder"))]
    except OSError as e:
        return [Result.warning(name, tr(f"{folder}: {e.strerror}", f"{folder}: {e.strerror}"))]
    subject = (
        who.name
        if who.service
        else tr(
            f"{who.name} (пользователя {rec.SERVICE_USER} на этой машине нет)",
            f"{who.name} (there is no {rec.SERVICE_USER} user on this machine)",
        )
    )
    if blocked is None:
        return [Result.ok(name, tr(f"{folder} читается ({subject})", f"{folder} is readable ({subject})"))]
    return [
        Result.warning(
            name,
            tr(
                f"{subject} не может прочитать записи: закрыто {blocked}; записи не попадут в Telegram и "
                "Bitrix24",
                f"{subject} cannot read the recordings: {blocked} is closed; recordings will not reach "
                "Telegram and Bitrix24",
            ),
            tr(
                "служба входит в группу asterisk (SupplementaryGroups=asterisk): дайте группе чтение — "
                f"sudo chmod -R g+rX {folder}; чтобы и новые файлы читались: "
                f"sudo setfacl -R -d -m u:{rec.SERVICE_USER}:rX {folder} (ACL эта проверка не видит)",
                "the service is in the asterisk group (SupplementaryGroups=asterisk): let the group read — "
                f"sudo chmod -R g+rX {folder}; for new files too: "
                f"sudo setfacl -R -d -m u:{rec.SERVICE_USER}:rX {folder} (this check does not see ACLs)",
            ),
        )
    ]


# -- manager.conf -------------------------------------------------------------------------------------


def _is_local(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def manager_user(ctx: Context) -> list[Result]:
    cfg, etc = ctx.cfg, ctx.asterisk_etc
    user = cfg.asterisk.ami.username
    name = tr(f"manager.conf [{user}]", f"manager.conf [{user}]")
    if not ctx.asterisk_etc_given and not _is_local(cfg.asterisk.ami.host):
        return [
            Result.warning(
                name,
                tr(
                    f"не проверено: Asterisk на другой машине ({cfg.asterisk.ami.host})",
                    f"not checked: Asterisk is on another machine ({cfg.asterisk.ami.host})",
                ),
                tr(
                    "скопируйте его /etc/asterisk сюда и укажите: novofon-bridge check --etc ПАПКА",
                    "copy its /etc/asterisk here and run: novofon-bridge check --etc DIR",
                ),
            )
        ]
    try:
        found = await asyncio.to_thread(manager_conf.find_user, etc, user)
    except FileNotFoundError:
        return [
            Result.warning(
                name,
                tr(f"не проверено: нет {etc / 'manager.conf'}", f"not checked: no {etc / 'manager.conf'}"),
                tr("укажите папку настроек Asterisk: --etc ПАПКА", "name Asterisk's folder: --etc DIR"),
            )
        ]
    except manager_conf.NotReadable as e:
        return [
            Result.warning(
                name,
                tr(
                    f"не проверено: {e.path} не читается ({e.reason})",
                    f"not checked: cannot read {e.path} ({e.reason})",
                ),
                tr(
                    "запустите проверку от root: sudo novofon-bridge check",
                    "run the check as root: sudo novofon-bridge check",
                ),
            )
        ]
    if found is None:
        return [
            Result.error(
                name,
                tr(
                    f"в {etc}/manager.conf нет пользователя [{user}]",
                    f"{etc}/manager.conf has no user [{user}]",
                ),
                tr(
                    "подключите настройки моста: sudo novofon-bridge asterisk install (FreePBX: --freepbx), "
                    "или поправьте asterisk.ami.username",
                    "wire the bridge in: sudo novofon-bridge asterisk install (FreePBX: --freepbx), "
                    "or fix asterisk.ami.username",
                ),
            )
        ]
    return [*_privileges(found, name), _filter(found, name)]


def _privileges(found: manager_conf.ManagerUser, name: str) -> list[Result]:
    user, results = found.name, []
    read = set(found.read or [])
    missing = [c for c in permissions.READ if c not in read and "all" not in read]
    essential = [c for c in missing if c not in permissions.READ_OPTIONAL]
    for missing_read in (essential, [c for c in missing if c in permissions.READ_OPTIONAL]):
        if not missing_read:
            continue
        needs = "; ".join(f"{c}: {permissions.READ[c].why}" for c in missing_read)
        results.append(
            (Result.error if missing_read is essential else Result.warning)(
                name,
                tr(
                    f"read = {','.join(found.read or []) or '(пусто)'}: нет {','.join(missing_read)} — "
                    f"{needs}",
                    f"read = {','.join(found.read or []) or '(empty)'}: lacks {','.join(missing_read)} — "
                    f"{needs}",
                ),
                permissions.fix_read(user, missing_read),
            )
        )
    write = set(found.write or [])
    risky = [c for c in DANGEROUS_WRITE if c in write]
    if risky:
        results.append(
            Result.warning(
                name,
                tr(
                    f"write = {','.join(found.write or [])}: {','.join(risky)} даёт запуск команд оболочки "
                    "тому, кто узнает пароль AMI",
                    f"write = {','.join(found.write or [])}: {','.join(risky)} lets whoever learns the AMI "
                    "password run shell commands",
                ),
                tr(
                    "оставьте как в поставке: write = call,originate,reporting; затем "
                    f"{permissions.manager_reload()}",
                    "keep it as shipped: write = call,originate,reporting; then "
                    f"{permissions.manager_reload()}",
                ),
            )
        )
    if not results:
        results.append(
            Result.ok(
                name,
                f"read = {','.join(found.read or [])}, write = {','.join(found.write or [])} "
                f"({', '.join(found.where)})",
            )
        )
    return results


RECORDING_FILTER = "VarSet(MIXMONITOR_FILENAME)"
SHIPPED_CONF = "asterisk-conf/novofon-bridge_manager.conf"


def _filter(found: manager_conf.ManagerUser, name: str) -> Result:
    shipped = manager_conf.shipped_filters()
    label = tr(f"{name}: фильтр событий", f"{name}: event filter")
    if shipped is None:
        return Result.warning(
            label,
            tr(
                "не проверено: не найден asterisk-conf/ из поставки",
                "not checked: the shipped asterisk-conf/ is missing",
            ),
            tr(
                "переустановите: sudo deploy/install.sh --upgrade",
                "reinstall: sudo deploy/install.sh --upgrade",
            ),
        )
    have = set(found.filters)
    if not have:
        return Result.warning(
            label,
            tr(
                "фильтра нет: Asterisk шлёт все события (~100 на звонок), мост разбирает лишнее",
                "no filter: Asterisk sends every event (~100 per call) and the bridge parses them all",
            ),
            tr(
                f"добавьте в [{found.name}] строки eventfilter из asterisk-conf/novofon-bridge_manager.conf",
                f"add the eventfilter lines of asterisk-conf/novofon-bridge_manager.conf to [{found.name}]",
            ),
        )
    missing = [line for line in shipped if line not in have]
    if missing and all(manager_conf.included_event(line) == RECORDING_FILTER for line in missing):
        return Result.warning(
            label,
            tr(
                f"фильтр не пропускает {RECORDING_FILTER}: имя файла записи мост не узнает и ищет запись "
                "по Uniqueid в имени файла (записи FreePBX и наши находятся, другие имена — нет)",
                f"the filter holds back {RECORDING_FILTER}: the bridge does not learn the recording's "
                "file and looks for it by the Uniqueid in its name (FreePBX's and ours are found)",
            ),
            tr(
                f"добавьте в [{found.name}] строку eventfilter с VarSet из {SHIPPED_CONF} и dialplan в "
                f"read=; затем {permissions.manager_reload()}",
                f"add the VarSet eventfilter line of {SHIPPED_CONF} to [{found.name}] and dialplan to "
                f"read=; then {permissions.manager_reload()}",
            ),
        )
    unknown = [
        line for line in found.filters if line not in shipped and manager_conf.included_event(line) is None
    ]
    if missing:
        events = ", ".join(manager_conf.included_event(line) or line for line in missing)
        return Result.error(
            label,
            tr(
                f"фильтр не пропускает события, нужные мосту: {events} (без Hangup звонки не завершаются, "
                "без Newchannel не начинаются)",
                f"the filter holds back events the bridge needs: {events} (without Hangup calls never end, "
                "without Newchannel they never start)",
            ),
            tr(
                f"верните в [{found.name}] строки eventfilter из asterisk-conf/novofon-bridge_manager.conf; "
                f"затем {permissions.manager_reload()}",
                f"put the eventfilter lines of asterisk-conf/novofon-bridge_manager.conf back into "
                f"[{found.name}]; then {permissions.manager_reload()}",
            ),
        )
    if unknown:
        return Result.warning(
            label,
            tr(
                "все строки из поставки на месте, но есть и другие, их действие не проверить: "
                f"{'; '.join(unknown)}",
                "every shipped line is there, and others whose effect cannot be checked: "
                f"{'; '.join(unknown)}",
            ),
            tr(
                "если звонки теряются, уберите лишние eventfilter-строки (исключающие или с регулярными "
                "выражениями)",
                "if calls go missing, remove the extra eventfilter lines (excluding or regular-expression "
                "ones)",
            ),
        )
    return Result.ok(
        label, tr(f"как в поставке ({len(shipped)} событий)", f"as shipped ({len(shipped)} events)")
    )


# -- AMI: login, permissions, trunk -------------------------------------------------------------------


async def ami(cfg: Config) -> list[Result]:
    s = ami_settings(cfg)
    booted = asyncio.Event()

    def on_event(msg: AmiMessage) -> None:
        if msg.get("Event") == "FullyBooted":
            booted.set()

    try:
        conn = await AmiConnection.open(s, on_event)
    except AmiError as e:
        problem, fix = ami_failure(e, s)
        skipped = tr(
            " (остальные проверки AMI и транка пропущены)", " (the other AMI and trunk checks skipped)"
        )
        return [Result.error(tr("AMI: вход", "AMI: login"), problem + skipped, fix)]
    try:
        banner = conn.protocol.banner_seen.result()
        results = [Result.ok(tr("AMI: вход", "AMI: login"), f"{s.username}@{s.address} ({banner})")]
        allowed = permissions.allowed_actions(await conn.action("ListCommands"))
        results += _write_results(allowed, s.username)
        results.append(await _read_system(booted, s.username))
        if "PJSIPShowRegistrationsOutbound" in allowed:
            regs = await conn.action("PJSIPShowRegistrationsOutbound")
            results += registration_results(regs, cfg.asterisk.trunk_endpoints)
        else:
            results.append(
                Result.warning(
                    tr("Транк", "Trunk"),
                    tr(
                        "не проверен: нет права на PJSIPShowRegistrationsOutbound",
                        "not checked: no permission",
                    ),
                    permissions.fix_write(s.username, ["reporting"]),
                )
            )
        return results
    except AmiError as e:
        problem, fix = ami_failure(e, s)
        return [Result.error("AMI", problem, fix)]
    finally:
        await conn.close()


def _write_results(allowed: dict[str, str], user: str) -> list[Result]:
    name = tr("AMI: права", "AMI: permissions")
    missing = [action for action in permissions.ACTIONS if action not in allowed]
    if not missing:
        return [
            Result.ok(
                name,
                tr("разрешены все нужные действия: ", "every action needed is allowed: ")
                + ", ".join(permissions.ACTIONS),
            )
        ]
    by_class: dict[str, list[str]] = {}
    for action in missing:
        by_class.setdefault(permissions.ACTIONS[action].grant, []).append(action)
    return [Result.error(name, *permissions.missing_write(actions, user)) for actions in by_class.values()]


async def _read_system(booted: asyncio.Event, user: str) -> Result:
    name = tr("AMI: события", "AMI: events")
    try:
        async with asyncio.timeout(FULLY_BOOTED_WAIT):
            await booted.wait()
    except TimeoutError:
        return Result.warning(
            name,
            tr(
                "после входа не пришло FullyBooted: нет read=system или фильтр событий его не пропускает — "
                "мост не увидит регистрацию транка",
                "no FullyBooted after login: read=system is missing or the event filter holds it back — the "
                "bridge will not see the trunk's registration",
            ),
            permissions.fix_read(user, ["system"]),
        )
    return Result.ok(
        name, tr("события приходят (FullyBooted после входа)", "events arrive (FullyBooted after login)")
    )
