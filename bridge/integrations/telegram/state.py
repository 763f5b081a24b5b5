"""What the Telegram integration remembers, typed: per call (its view and the message in each chat),
the «Перезвонить» presses (which missed-call message a call-back belongs to), the bot's offset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.calls.numbers import is_ascii_digits
from bridge.outbox.state import Retention, StateStore

SINK = "telegram"
CALLBACKS = "telegram-callback"
BOT = "telegram-bot"


@dataclass
class TelegramCall:
    view: dict[str, Any] = field(default_factory=dict)  # the call as people see it (render.fold)
    messages: dict[str, int] = field(default_factory=dict)  # chat -> message id
    applied: list[int] = field(default_factory=list)  # record ids already folded into the view
    audio: list[str] = field(default_factory=list)  # chats that have the recording
    gone: list[str] = field(default_factory=list)  # chats that refused this call (bot blocked, ...)


def load_call(state: StateStore, pbx_call_id: str) -> TelegramCall:
    raw = state.get_json(SINK, f"call:{pbx_call_id}")
    return TelegramCall(**raw) if isinstance(raw, dict) else TelegramCall()


def save_call(state: StateStore, pbx_call_id: str, call: TelegramCall) -> None:
    state.put_json(SINK, f"call:{pbx_call_id}", asdict(call))


def caller_of(state: StateStore, pbx_call_id: str) -> str:
    """The client's number of a call the sink has shown ("" when unknown)."""
    return str(load_call(state, pbx_call_id).view.get("caller", ""))


def callback_details_of(state: StateStore, pbx_call_id: str) -> dict[str, str]:
    """For calling the client back: their name (when known) and the number they called (our
    DID, shown to them as the caller of the call-back)."""
    view = load_call(state, pbx_call_id).view
    did = str(view.get("did") or "")
    return {"name": str(view.get("caller_name") or ""), "did": did if is_ascii_digits(did) else ""}


@dataclass
class CallbackOrigin:
    """A «Перезвонить» press: the message it was on, and who called back."""

    chat_id: str = ""
    message_id: int | None = None
    text: str = ""
    extension: str = ""
    done: bool = False


def load_callback(state: StateStore, pbx_call_id: str) -> CallbackOrigin | None:
    raw = state.get_json(CALLBACKS, pbx_call_id)
    return CallbackOrigin(**raw) if isinstance(raw, dict) else None


def save_callback(state: StateStore, pbx_call_id: str, origin: CallbackOrigin) -> None:
    state.put_json(CALLBACKS, pbx_call_id, asdict(origin))


def load_offset(state: StateStore) -> int:
    return int(state.get(BOT, "offset") or 0)


def save_offset(state: StateStore, offset: int) -> None:
    state.put(BOT, "offset", str(offset), Retention.CURSOR)


def migrated_chats(state: StateStore) -> dict[str, str]:
    """Groups that became supergroups: old chat id -> new one (kept until config.yaml is updated)."""
    raw = state.get_json(BOT, "migrations")
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def save_migration(state: StateStore, old: str, new: str) -> None:
    state.put_json(BOT, "migrations", {**migrated_chats(state), old: new}, Retention.CURSOR)
