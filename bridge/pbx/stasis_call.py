"""One call of our Stasis application: its channels (ids derived from the call id, so they are
known before the call starts and can be found again after a restart), what happened to each leg,
and how it ended (``result``). No I/O here: bridge/pbx/stasis.py drives it from ARI events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from bridge.pbx.follow import CallResult, LegEnd, client_end, employee_end

CALLBACK, TEST = "callback", "test"
EMPLOYEE, CLIENT, FAR, TRUNK = "employee", "client", "far", "trunk"
#: Dial() results that end an attempt (RINGING, PROGRESS, ANSWER and "" are on the way).
FINAL_DIAL = frozenset({"BUSY", "NOANSWER", "CANCEL", "CONGESTION", "CHANUNAVAIL", "DONTCALL", "INVALIDARGS"})


class CallWatcher(Protocol):
    """Who wants to know how a call goes (the CLI narrates; the daemon logs)."""

    def step(self, key: str, detail: str = "") -> None: ...

    def finished(self, result: CallResult) -> None: ...


@dataclass(frozen=True)
class StasisSettings:
    app: str
    outgoing_context: str = "novofon-outgoing"  # asterisk.outgoing_context
    employee_timeout: float = 30.0  # the employee's phone rings this long
    client_timeout: float = 120.0  # above the dialplan's Dial() timeout: the dialplan decides first
    test_media: str = "sound:hello-world"
    max_call_age: float = 14400.0  # a call not over after this long is forgotten (pbx.max_call_age)


@dataclass
class StasisCall:
    call_id: str
    kind: str
    employee: str = ""  # extension
    client: str = ""  # the number dialled through the trunk
    did: str = ""  # our number shown to the client ("" = the dialplan's default)
    watcher: CallWatcher | None = None
    created: float = field(default_factory=time.monotonic)
    adopted: bool = False  # found in Asterisk (a restart), not placed by us
    up: set[str] = field(default_factory=set)  # our channels that answered (entered Stasis)
    alive: set[str] = field(default_factory=set)  # our channels not destroyed yet
    left: set[str] = field(default_factory=set)  # our channels that left the application (hanging up)
    causes: dict[str, int] = field(default_factory=dict)
    trunk: str = ""
    dialstatus: str = ""
    trunk_cause: int | None = None
    answered_at: float | None = None
    gone_at: float | None = None
    first_gone: str = ""  # the leg that left first
    bridged: bool = False
    ending: bool = False
    awaiting_trunk: bool = False  # our channels are gone; the trunk leg's cause is still to come

    @property
    def employee_chan(self) -> str:
        return self.call_id if self.kind == CALLBACK else ""

    @property
    def client_chan(self) -> str:
        return f"{self.call_id}-c" if self.kind == CALLBACK else self.call_id

    @property
    def far_chan(self) -> str:  # the Local channel's second half, which dials the trunk
        return f"{self.call_id}-c2" if self.kind == CALLBACK else f"{self.call_id}-2"

    @property
    def bridge(self) -> str:
        return f"{self.call_id}-b"

    def role(self, chan: str) -> str:
        if chan and chan == self.employee_chan:
            return EMPLOYEE
        return {self.client_chan: CLIENT, self.far_chan: FAR, self.trunk: TRUNK}.get(chan, "")

    def step(self, key: str, detail: str = "") -> None:
        if self.watcher is not None:
            self.watcher.step(key, detail)

    def result(self) -> CallResult:
        """How the call ended, leg by leg (once every channel of ours is gone)."""
        call = self
        emp, cli = call.employee_chan, call.client_chan
        if call.kind == CALLBACK and emp not in call.up:
            cause = call.causes.get(emp)
            return CallResult(False, EMPLOYEE, employee_end(cause, answered=False), cause)
        if call.answered_at is None:
            if call.kind == CALLBACK and call.first_gone == EMPLOYEE:
                return CallResult(False, EMPLOYEE, LegEnd.HUNG_UP, call.causes.get(emp))
            end = client_end(call.trunk_cause, call.dialstatus, call.causes.get(cli))
            cause = call.trunk_cause or call.causes.get(cli)
            return CallResult(False, CLIENT, end, cause, call.dialstatus)
        talk = (call.gone_at or time.monotonic()) - call.answered_at
        who = call.first_gone if call.first_gone in (EMPLOYEE, CLIENT) else ""
        return CallResult(True, talk_seconds=max(0.0, talk), hung_up_by=who)
