"""The AMI privileges the bridge needs, and what to say when one is missing.

Asterisk grants an action when the user's ``write=`` classes meet the action's own classes (for
Originate: ``originate``); events arrive when the user's ``read=`` classes meet the event's. When
a class is missing Asterisk answers only "Permission denied": this module names the class, the
line of manager.conf to change and what the bridge needs the action for. The classes were read
from Asterisk 22's ``ListCommands`` ("Priv: ..."); the one named first is the one the shipped
asterisk-conf/novofon-bridge_manager.conf grants (never ``system``: it opens the shell).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.i18n import tr
from bridge.pbx.ami_protocol import ActionResult, AmiError

PERMISSION_DENIED = "Permission denied"


@dataclass(frozen=True)
class Need:
    classes: tuple[str, ...]  # any of these grants it; the first is the one to add
    why_ru: str
    why_en: str

    @property
    def grant(self) -> str:
        return self.classes[0]

    @property
    def why(self) -> str:
        return tr(self.why_ru, self.why_en)


#: The actions the daemon and the CLI send (besides Login, Logoff, Ping and ListCommands, which
#: every user may send).
ACTIONS: dict[str, Need] = {
    "Originate": Need(
        ("originate",),
        "тестовые и обратные звонки, click-to-call из Bitrix24, кнопка «Перезвонить» в Telegram",
        "test calls, call-backs, Bitrix24 click-to-call, Telegram's call-back button",
    ),
    "Hangup": Need(
        ("call", "system"),
        "сбросить звонок, который команда начала и не дождалась",
        "hang up a call a command placed and gave up on",
    ),
    "Getvar": Need(
        ("call", "reporting"),
        "файл записи (MixMonitor) звонков, подхваченных после переподключения",
        "the MixMonitor file of calls picked up after a reconnect",
    ),
    "CoreShowChannels": Need(
        ("reporting", "system"),
        "звонки, которые уже идут, когда мост подключается (после перезапуска)",
        "calls already in progress when the bridge connects (after a restart)",
    ),
    "PJSIPShowRegistrationsOutbound": Need(
        ("reporting", "system"),
        "регистрация транка (status, check)",
        "the trunk's registration (status, check)",
    ),
}

#: read= classes: without them the events never arrive (Asterisk says nothing about it).
READ: dict[str, Need] = {
    "call": Need(
        ("call",),
        "события звонков: каналы, набор, ответ, соединение, завершение, MixMonitor — без него звонки не "
        "видны",
        "call events: channels, dials, answers, bridges, hangups, MixMonitor — without it no call is seen",
    ),
    "system": Need(
        ("system",),
        "FullyBooted и Registry: готовность Asterisk и регистрация транка",
        "FullyBooted and Registry: Asterisk being ready and the trunk's registration",
    ),
    "dialplan": Need(
        ("dialplan",),
        "VarSet MIXMONITOR_FILENAME: файл, в который MixMonitor пишет запись (без него запись ищется по "
        "Uniqueid в имени файла)",
        "VarSet MIXMONITOR_FILENAME: the file MixMonitor records into (without it the recording is looked "
        "for by the Uniqueid in its name)",
    ),
}
#: read= classes the bridge works without, less well: a warning, not an error.
READ_OPTIONAL = frozenset({"dialplan"})


def manager_reload() -> str:
    return "asterisk -rx 'manager reload'"


def missing_write(actions: list[str], user: str) -> tuple[str, str]:
    """(what is wrong, the fix) for actions Asterisk refuses with "Permission denied", which all
    want the same class (ACTIONS) — or, for an action not in ACTIONS, how to find its class."""
    known = [a for a in actions if a in ACTIONS]
    if not known:
        action = actions[0]
        return (
            tr(
                f"Asterisk отказал в действии {action}: у пользователя AMI {user!r} нет нужного права",
                f"Asterisk refused action {action}: AMI user {user!r} lacks the permission for it",
            ),
            tr(
                f"посмотрите нужный класс: asterisk -rx 'manager show command {action}' и добавьте его в "
                f"write= секции [{user}] manager.conf; затем {manager_reload()}",
                f"see the class it needs: asterisk -rx 'manager show command {action}' and add it to "
                f"write= in manager.conf's [{user}]; then {manager_reload()}",
            ),
        )
    grant = ACTIONS[known[0]].grant
    names = ", ".join(known)
    why = "; ".join(ACTIONS[a].why for a in known)
    return (
        tr(
            f"у пользователя AMI {user!r} нет права write={grant} (manager.conf) — Asterisk отказывает в "
            f"{names} («Permission denied»); это нужно для: {why}",
            f"AMI user {user!r} lacks write={grant} (manager.conf) — Asterisk refuses {names} "
            f'("Permission denied"); needed for: {why}',
        ),
        fix_write(user, [grant]),
    )


def fix_write(user: str, classes: list[str]) -> str:
    add = ",".join(classes)
    return tr(
        f"добавьте {add} в строку write= секции [{user}] в manager.conf (или manager_custom.conf во "
        "FreePBX); "
        f"как в поставке: write = call,originate,reporting; затем {manager_reload()}",
        f"add {add} to write= in [{user}] of manager.conf (manager_custom.conf on FreePBX); as shipped: "
        f"write = call,originate,reporting; then {manager_reload()}",
    )


def fix_read(user: str, classes: list[str]) -> str:
    add = ",".join(classes)
    return tr(
        f"добавьте {add} в строку read= секции [{user}] в manager.conf (или manager_custom.conf во FreePBX); "
        f"как в поставке: read = call,dialplan,agent,user,system; затем {manager_reload()}",
        f"add {add} to read= in [{user}] of manager.conf (manager_custom.conf on FreePBX); as shipped: "
        f"read = call,dialplan,agent,user,system; then {manager_reload()}",
    )


def refused(action: str, result: ActionResult, user: str) -> str:
    """Why Asterisk refused ``action``, for people: a missing class is named with its fix."""
    if result.message == PERMISSION_DENIED:
        problem, fix = missing_write([action], user)
        return f"{problem}. {tr('Что сделать', 'Fix')}: {fix}"
    return result.message or tr("без объяснения причины", "no reason given")


class ActionRefused(AmiError):
    """Asterisk answered an action with an error; the message says why, for people."""

    def __init__(self, action: str, result: ActionResult, user: str) -> None:
        super().__init__(refused(action, result, user))
        self.action, self.result = action, result


def allowed_actions(result: ActionResult) -> dict[str, str]:
    """ListCommands' answer: every action this user may send -> its "Priv:" classes."""
    found: dict[str, str] = {}
    for key, value in result.response.items():
        if key in ("Response", "ActionID", "Message", "EventList"):
            continue
        privs = value.rsplit("(Priv: ", 1)[1].rstrip(") ") if "(Priv: " in value else ""
        found[key] = privs
    return found
