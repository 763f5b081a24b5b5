"""What the SMS integration remembers: when a number last got an SMS, and our SMS' statuses."""

from __future__ import annotations

import time

from bridge.outbox.state import StateStore

OWNER = "sms"


def last_sent(state: StateStore, number: str) -> float | None:
    raw = state.get(OWNER, f"last:{number}")
    return None if raw is None else float(raw)


def remember_sent(state: StateStore, number: str, sms_id: str) -> None:
    state.put(OWNER, f"last:{number}", str(time.time()))
    if sms_id:  # unknown when the gateway said it had taken the same request already
        state.put(OWNER, f"sms:{sms_id}", number)


def remember_status(state: StateStore, sms_id: str, status: str) -> None:
    state.put(OWNER, f"status:{sms_id}", status)


def status_of(state: StateStore, sms_id: str) -> str | None:
    return state.get(OWNER, f"status:{sms_id}")
