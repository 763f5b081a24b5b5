"""What the Novofon integration remembers: how many variants of one signed notification it kept.

Novofon signs neither ``internal`` nor ``pbx_call_id``; a NOTIFY_INTERNAL or NOTIFY_ANSWER may come
again for another phone of the same call, so such variants are kept — but only up to a bound, or a
captured notification could be replayed with a new ``internal`` each time.
"""

from __future__ import annotations

from bridge.outbox.state import StateStore

OWNER = "novofon"


def variants(state: StateStore, signed_key: str) -> int:
    raw = state.get(OWNER, f"variants:{signed_key}")
    return 0 if raw is None else int(raw)


def add_variant(state: StateStore, signed_key: str) -> None:
    state.put(OWNER, f"variants:{signed_key}", str(variants(state, signed_key) + 1))


def call_start(state: StateStore, pbx_call_id: str, now: str) -> str:
    """A Novofon 2.0 call's start: the time of its first notification, remembered per call."""
    key = f"start:{pbx_call_id}"
    first = state.get(OWNER, key)
    if first is None:
        state.put(OWNER, key, now)
        return now
    return first
