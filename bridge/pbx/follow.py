"""Following the calls we place and telling people how they went (in Russian).

- ``CallFollower``: one call originated over AMI, followed by its Linkedid.
- ``AriFollower``: one call of our Stasis application (bridge/pbx/stasis.py), told by its steps
  and its ``CallResult``.
- ``employee_end`` / ``client_end``: the exact outcome of each leg of a call-back (busy, no answer,
  rejected, unallocated …), shared by the CLI, the records (``employee_disposition``) and the logs.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.calls.records import Disposition
from bridge.calls.tracker import Role, classify_channel
from bridge.config import Config
from bridge.pbx.ami_protocol import AmiMessage

# Q.850 hangup causes as Asterisk reports them (Hangup's Cause), and the SIP answers it maps to
# them (chan_pjsip: 404/485/604 -> 1, 486/600 -> 17, 408 -> 18, 480 -> 19, 403/603 -> 21, 484 -> 28,
# 503 -> 34, 488/606 -> 58, 504 -> 102 ...).
CAUSES_RU = {
    0: "причина не сообщена",
    1: "номер не существует",
    2: "нет маршрута в сеть назначения",
    3: "нет маршрута до абонента",
    16: "нормальное завершение",
    17: "занято",
    18: "абонент не отвечает (телефон не ответил на вызов)",
    19: "нет ответа",
    20: "абонент недоступен",
    21: "вызов отклонён",
    22: "номер изменился",
    26: "ответили на другом телефоне",
    27: "телефон абонента неисправен или недоступен",
    28: "неверный формат номера",
    29: "услуга отклонена",
    31: "нормальное завершение (без уточнения)",
    34: "нет свободных линий",
    38: "сеть не работает",
    41: "временный сбой",
    42: "перегрузка оборудования",
    44: "запрошенный канал недоступен",
    50: "услуга не подключена",
    52: "исходящие вызовы запрещены",
    54: "входящие вызовы запрещены",
    57: "нет права на этот вид связи",
    58: "несовместимые кодеки (нет общего формата звука)",
    65: "этот вид связи не поддерживается",
    66: "тип канала не поддерживается",
    69: "услуга не реализована",
    81: "неверная ссылка на вызов",
    88: "несовместимый получатель",
    95: "неверное сообщение",
    96: "не хватает обязательного элемента сообщения",
    97: "неизвестный тип сообщения",
    100: "неверное содержимое сообщения",
    102: "истекло время ожидания",
    111: "ошибка протокола",
    127: "неизвестная ошибка",
}
# Dial()'s DIALSTATUS (the DialEnd event's DialStatus).
DIAL_RU = {
    "ANSWER": "ответили",
    "BUSY": "занято",
    "NOANSWER": "нет ответа",
    "CANCEL": "вызов отменён",
    "CONGESTION": "перегрузка или отказ сети",
    "CHANUNAVAIL": "канал недоступен (транк не зарегистрирован, эндпоинт не найден или оператор недоступен)",
    "DONTCALL": "вызов запрещён (DONTCALL)",
    "TORTURE": "вызов отправлен в TORTURE",
    "INVALIDARGS": "неверные аргументы Dial()",
}
# The causes that only say "it ended" (no reason of their own), and the dial status each other cause
# naturally goes with: when Dial() reports another status, the network's cause is the real one
# (an unknown number gives cause 1 while Dial() says NOANSWER).
_NO_REASON = frozenset({0, 16, 31, 127})
_CAUSE_DIAL = {
    17: "BUSY",
    18: "NOANSWER",
    19: "NOANSWER",
    34: "CONGESTION",
    42: "CONGESTION",
    44: "CONGESTION",
}


def cause_text(cause: int, dial_status: str = "") -> str:
    dial = f", Dial: {dial_status}" if dial_status else ""
    return f"{CAUSES_RU.get(cause, 'причина ' + str(cause))} (cause {cause}{dial})"


def dial_text(status: str) -> str:
    return f"{DIAL_RU.get(status, status)} ({status})"


def end_reason(dial_status: str, trunk_cause: int | None) -> str:
    """Why an unanswered call through the trunk ended: the network's cause when it says more than
    Dial()'s status (or disagrees with it), Dial()'s status otherwise."""
    telling = trunk_cause is not None and trunk_cause not in _NO_REASON
    if telling and trunk_cause is not None and _CAUSE_DIAL.get(trunk_cause) != dial_status:
        return cause_text(trunk_cause, dial_status)
    if dial_status:
        return dial_text(dial_status)
    return cause_text(trunk_cause or 0)


Printer = Callable[[str], None]
TRUNK_CAUSE_GRACE = 2.0  # seconds to wait for the trunk leg's Hangup after the call's own

# What people are told while a call goes on (the same for AMI and ARI).
STEPS_RU = {
    "employee_ringing": "звонит телефон сотрудника…",
    "employee_answered": "сотрудник ответил, звоним клиенту…",
    "trying": "набор номера через транк ({detail})…",
    "ringing": "идёт вызов (абоненту звонит телефон)…",
    "answered": "ответили, идёт разговор",
}


class LegEnd(enum.StrEnum):
    """How one leg of a call ended."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    UNALLOCATED = "unallocated"
    UNAVAILABLE = "unavailable"  # the phone is not registered / unreachable
    HUNG_UP = "hung_up"  # the employee answered, then hung up before the client did
    FAILED = "failed"


EMPLOYEE_RU = {
    LegEnd.BUSY: "сотрудник {ext} занят",
    LegEnd.NO_ANSWER: "сотрудник {ext} не ответил",
    LegEnd.REJECTED: "сотрудник {ext} отклонил вызов",
    LegEnd.UNAVAILABLE: "телефон сотрудника {ext} недоступен",
    LegEnd.HUNG_UP: "сотрудник {ext} положил трубку, не дождавшись ответа клиента",
    LegEnd.FAILED: "не удалось позвонить сотруднику {ext}",
}
CLIENT_RU = {
    LegEnd.BUSY: "занято",
    LegEnd.NO_ANSWER: "нет ответа",
    LegEnd.REJECTED: "вызов отклонён",
    LegEnd.UNALLOCATED: "номер не существует",
    LegEnd.UNAVAILABLE: "абонент недоступен",
    LegEnd.FAILED: "не удалось дозвониться",
}
# The employee's leg in the records (the Originator's OUT_END when the client was never dialled):
# Bitrix24 then finishes the card with 486 / 480 / 603 / 503.
EMPLOYEE_DISPOSITION = {
    LegEnd.BUSY: Disposition.BUSY,
    LegEnd.NO_ANSWER: Disposition.NO_ANSWER,
    LegEnd.REJECTED: Disposition.CANCEL,
    LegEnd.HUNG_UP: Disposition.CANCEL,
}


def employee_end(cause: int | None, answered: bool) -> LegEnd:
    """The employee's leg, from its hangup cause (it never reached the client)."""
    if answered:
        return LegEnd.HUNG_UP if cause in (None, 0, 16) else LegEnd.FAILED
    if cause == 17:
        return LegEnd.BUSY
    if cause == 21:
        return LegEnd.REJECTED
    if cause in (None, 0, 16, 18, 19):
        return LegEnd.NO_ANSWER
    if cause in (3, 20, 27):
        return LegEnd.UNAVAILABLE
    return LegEnd.FAILED


def client_end(trunk_cause: int | None, dialstatus: str, cause: int | None) -> LegEnd:
    """The client's leg that was not answered: the trunk's own cause first (the dialplan maps
    Dial()'s result to a cause of its own on the Local channel), then Dial()'s status."""
    causes = (trunk_cause, cause)
    if 1 in causes or 3 in causes:
        return LegEnd.UNALLOCATED
    if 17 in causes or dialstatus == "BUSY":
        return LegEnd.BUSY
    if 21 in causes:
        return LegEnd.REJECTED
    if dialstatus == "NOANSWER" or 19 in causes or 18 in causes:
        return LegEnd.NO_ANSWER
    if dialstatus == "CHANUNAVAIL" or 20 in causes:
        return LegEnd.UNAVAILABLE
    return LegEnd.FAILED


def employee_disposition(end: LegEnd) -> Disposition:
    return EMPLOYEE_DISPOSITION.get(end, Disposition.FAILED)


@dataclass(frozen=True)
class CallResult:
    """How a call of our Stasis application ended, leg by leg."""

    answered: bool  # the client answered (a test call: the number answered)
    leg: str = ""  # the leg that failed: "employee" | "client" ("" when answered)
    end: LegEnd = LegEnd.ANSWERED
    cause: int | None = None  # the hangup cause that decided it
    dialstatus: str = ""  # Dial()'s status towards the trunk, when there was one
    talk_seconds: float = 0.0
    hung_up_by: str = ""  # answered calls: "employee" | "client" | "" (unknown, e.g. re-adopted)


def describe(result: CallResult, employee: str = "") -> str:
    """The end of a call in one Russian line."""
    if result.answered:
        return {"employee": "сотрудник положил трубку", "client": "клиент положил трубку"}.get(
            result.hung_up_by, "нормальное завершение"
        )
    cause = f"cause {result.cause}" if result.cause is not None else ""
    if result.leg == "employee":
        text = EMPLOYEE_RU.get(result.end, EMPLOYEE_RU[LegEnd.FAILED]).format(ext=employee)
        return f"{text} ({cause})" if cause else text
    if result.dialstatus or result.cause:  # as the AMI path says it: Dial()'s status, or the cause
        text = end_reason(result.dialstatus, result.cause)  # when it says more or disagrees
    else:
        text = CLIENT_RU.get(result.end, CLIENT_RU[LegEnd.FAILED])
    return f"клиент: {text}" if employee else text


@dataclass
class Outcome:
    answered: bool = False
    reason: str = ""
    cause: int | None = None
    talk_seconds: float = 0.0
    steps: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.answered else 1


class CallFollower:
    """Follow one originated call by its Linkedid and narrate it: trying, ringing, answered, end."""

    def __init__(self, linkedid: str, cfg: Config, say: Printer, employee_leg: bool = False) -> None:
        self.linkedid = linkedid
        self.cfg = cfg
        self.say = say
        self.employee_leg = employee_leg  # callback: the first leg is an employee's phone
        self._trunks = frozenset(cfg.asterisk.trunk_endpoints)
        self._internal = re.compile(cfg.asterisk.internal_extensions)
        self.outcome = Outcome()
        self.answered = asyncio.Event()  # the client answered: from here on no timer applies
        self.done = asyncio.Event()
        self._trunk_uid: str | None = None
        self._root_gone = False
        self._dial_status = ""  # Dial()'s status towards the trunk
        self._answered_at: float | None = None
        self._seen: set[str] = set()
        self.channels: dict[str, str] = {}  # uniqueid -> channel name, for a Hangup on timeout

    def _step(self, key: str, detail: str = "") -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.outcome.steps.append(key)
            self.say(STEPS_RU[key].format(detail=detail))

    def _role(self, channel: str) -> Role:
        return classify_channel(channel, self._trunks, self._internal)[0]

    def on_event(self, msg: AmiMessage) -> None:
        name = msg.get("Event")
        if name == "OriginateResponse" and msg.get("Response") == "Failure":
            # Only decisive when no channel of ours ever appeared; otherwise its Hangup says more.
            if not self.channels and msg.get("Uniqueid") in (self.linkedid, "<null>", ""):
                reason = msg.get("Reason", "")
                self.finish(f"не удалось начать вызов (Originate Failure, reason {reason})")
            return
        if msg.get("Linkedid") != self.linkedid and msg.get("DestLinkedid") != self.linkedid:
            return
        channel, uid, state = msg.get("Channel", ""), msg.get("Uniqueid", ""), msg.get("ChannelState")
        if name == "Newchannel":
            self.channels[uid] = channel
        role = self._role(channel)
        if self.employee_leg and uid == self.linkedid:
            if name == "Newstate" and state == "5":
                self._step("employee_ringing")
            elif name == "Newstate" and state == "6":
                self._step("employee_answered")
        if name == "Newchannel" and role is Role.TRUNK:
            self._trunk_uid = uid
            self._step("trying", channel)
        elif uid and uid == self._trunk_uid and name == "Newstate":
            if state == "5":
                self._step("ringing")
            elif state == "6":
                self._answer()
        elif name == "DialEnd" and msg.get("DestUniqueid") == self._trunk_uid:
            status = msg.get("DialStatus", "")
            if status == "ANSWER":
                self._answer()
            else:
                self._dial_status = status
        elif name == "Hangup":
            cause = int(msg.get("Cause", "0") or 0)
            if uid == self._trunk_uid:
                self.outcome.cause = cause
                if self._root_gone:  # the call ended first; the trunk's cause was still to come
                    self.finish(end_reason(self._dial_status, cause))
            if uid == self.linkedid:
                if self._trunk_uid is None or self.outcome.answered:
                    if self.outcome.cause is None:
                        self.outcome.cause = cause
                    self.finish(self._cause_text(self.outcome.cause))
                elif self.outcome.cause is None:
                    # The trunk was dialled, did not answer, and its Hangup (with the network's own
                    # cause: why it failed) can come just after ours: wait for it a moment.
                    self._root_gone = True
                    asyncio.get_running_loop().call_later(
                        TRUNK_CAUSE_GRACE,
                        lambda: self.finish(end_reason(self._dial_status, self.outcome.cause)),
                    )
                else:  # the trunk was dialled and did not answer: its own cause says why
                    self.finish(end_reason(self._dial_status, self.outcome.cause))

    def _answer(self) -> None:
        if self._answered_at is None:
            self._answered_at = time.monotonic()
            self.outcome.answered = True
            self.answered.set()
            self._step("answered")

    def _cause_text(self, cause: int) -> str:
        if self.outcome.answered and cause in (0, 16):
            return "нормальное завершение"
        return cause_text(cause)

    def finish(self, reason: str) -> None:
        if self.done.is_set():
            return
        if self._answered_at is not None:
            self.outcome.talk_seconds = time.monotonic() - self._answered_at
        self.outcome.reason = reason
        self.done.set()


class AriFollower:
    """Narrate one call of our Stasis application (a ``CallWatcher``) and keep its ``Outcome``."""

    def __init__(self, say: Printer, employee: str = "") -> None:
        self.say = say
        self.employee = employee
        self.outcome = Outcome()
        self.answered = asyncio.Event()  # the client answered: from here on no timer applies
        self.done = asyncio.Event()
        self._answered_at: float | None = None

    def step(self, key: str, detail: str = "") -> None:
        if key in self.outcome.steps or key not in STEPS_RU:
            return
        self.outcome.steps.append(key)
        self.say(STEPS_RU[key].format(detail=detail))
        if key == "answered":
            self._answered_at = time.monotonic()
            self.outcome.answered = True
            self.answered.set()

    def finished(self, result: CallResult) -> None:
        if self.done.is_set():
            return
        self.outcome.answered = result.answered
        self.outcome.cause = result.cause
        self.outcome.talk_seconds = result.talk_seconds
        self.outcome.reason = describe(result, self.employee)
        self.done.set()

    def abandon(self, reason: str) -> None:
        """We hung the call up ourselves (no answer in time, Ctrl-C)."""
        if not self.done.is_set():
            if self._answered_at is not None:
                self.outcome.talk_seconds = time.monotonic() - self._answered_at
            self.outcome.reason = reason
            self.done.set()
