"""What the Bitrix24 integration remembers, typed: per call (Bitrix24's CALL_ID, who was shown the
card, what was done), and the local application's credentials (never purged): its OAuth tokens
and what ONAPPINSTALL said (application_token, portal)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bridge.outbox.state import Retention, StateStore

OWNER = "bitrix24"


@dataclass
class BitrixCall:
    call_id: str | None = None  # Bitrix24's CALL_ID for this call
    shown: list[str] = field(default_factory=list)  # users who have the card open
    finished: bool = False
    attached: bool = False
    # A register sent whose answer we never saw (timeout, reset): the exact parameters and when,
    # so a retry sends the very same request and the portal answers with the CALL_ID it made.
    register: dict[str, Any] | None = None
    register_at: float = 0.0
    finish_sent: bool = False  # a finish went out and its answer was lost


def load_call(state: StateStore, pbx_call_id: str) -> BitrixCall:
    raw = state.get_json(OWNER, f"call:{pbx_call_id}")
    return BitrixCall(**raw) if isinstance(raw, dict) else BitrixCall()


def save_call(state: StateStore, pbx_call_id: str, call: BitrixCall) -> None:
    state.put_json(OWNER, f"call:{pbx_call_id}", asdict(call))


def seed_call(state: StateStore, pbx_call_id: str, bitrix_call_id: str) -> None:
    """A call Bitrix24 registered itself (click-to-call): report on its CALL_ID, never a new one."""
    save_call(state, pbx_call_id, BitrixCall(call_id=bitrix_call_id))


@dataclass
class OAuthToken:
    access_token: str
    refresh_token: str
    expires: float


def load_token(state: StateStore) -> OAuthToken | None:
    raw = state.get_json(OWNER, "oauth")
    return OAuthToken(**raw) if isinstance(raw, dict) else None


def save_token(state: StateStore, token: OAuthToken) -> None:
    state.put_json(OWNER, "oauth", asdict(token), Retention.CREDENTIAL)


@dataclass
class AppInstall:
    """What ONAPPINSTALL told us about the installation (a credential: never purged): the
    application_token every later event must carry, and the portal it came from."""

    application_token: str
    member_id: str
    domain: str
    installed_at: float


def load_install(state: StateStore) -> AppInstall | None:
    raw = state.get_json(OWNER, "install")
    return AppInstall(**raw) if isinstance(raw, dict) else None


def save_install(state: StateStore, install: AppInstall, token: OAuthToken) -> None:
    """The installation and its first tokens, in one transaction."""
    state.db.execute("BEGIN IMMEDIATE")
    try:
        state.put_json(OWNER, "install", asdict(install), Retention.CREDENTIAL)
        save_token(state, token)
        state.db.execute("COMMIT")
    except BaseException:
        state.db.execute("ROLLBACK")
        raise
