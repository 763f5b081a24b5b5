"""Following one originated call by its Linkedid, and narrating it for people (in Russian)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.calls.tracker import Role, classify_channel
from bridge.config import Config
from bridge.pbx.ami_protocol import AmiMessage

CAUSES_RU = {
    1: "номер не существует",
    16: "нормальное завершение",
    17: "занято",
    18: "нет ответа от абонента",
    19: "нет ответа",
    20: "абонент недоступен",
    21: "вызов отклонён",
    26: "ответили на другом телефоне",
    34: "нет свободных линий",
    127: "неизвестная ошибка",
}
DIAL_RU = {
    "BUSY": "занято",
    "NOANSWER": "нет ответа",
    "CANCEL": "вызов отменён",
    "CONGESTION": "перегрузка или отказ сети",
    "CHANUNAVAIL": "канал недоступен (транк не зарегистрирован?)",
}

Printer = Callable[[str], None]


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
        self.done = asyncio.Event()
        self._trunk_uid: str | None = None
        self._answered_at: float | None = None
        self._seen: set[str] = set()
        self.channels: dict[str, str] = {}  # uniqueid -> channel name, for a Hangup on timeout

    def _step(self, key: str, text: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            self.outcome.steps.append(key)
            self.say(text)

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
                self._step("employee_ringing", "звонит телефон сотрудника…")
            elif name == "Newstate" and state == "6":
                self._step("employee_answered", "сотрудник ответил, звоним клиенту…")
        if name == "Newchannel" and role is Role.TRUNK:
            self._trunk_uid = uid
            self._step("trying", f"набор номера через транк ({channel})…")
        elif uid and uid == self._trunk_uid and name == "Newstate":
            if state == "5":
                self._step("ringing", "идёт вызов (абоненту звонит телефон)…")
            elif state == "6":
                self._answer()
        elif name == "DialEnd" and msg.get("DestUniqueid") == self._trunk_uid:
            status = msg.get("DialStatus", "")
            if status == "ANSWER":
                self._answer()
            else:
                self.outcome.reason = f"{DIAL_RU.get(status, status)} ({status})"
        elif name == "Hangup":
            cause = int(msg.get("Cause", "0") or 0)
            if uid == self._trunk_uid:
                self.outcome.cause = cause
            if uid == self.linkedid:
                if self.outcome.cause is None:
                    self.outcome.cause = cause
                self.finish(self.outcome.reason or self._cause_text(self.outcome.cause))

    def _answer(self) -> None:
        if self._answered_at is None:
            self._answered_at = time.monotonic()
            self.outcome.answered = True
            self._step("answered", "ответили, идёт разговор")

    def _cause_text(self, cause: int) -> str:
        if self.outcome.answered and cause in (0, 16):
            return "нормальное завершение"
        return f"{CAUSES_RU.get(cause, 'причина ' + str(cause))} (cause {cause})"

    def finish(self, reason: str) -> None:
        if self.done.is_set():
            return
        if self._answered_at is not None:
            self.outcome.talk_seconds = time.monotonic() - self._answered_at
        self.outcome.reason = reason
        self.done.set()
