"""Typed state keeps what must live: per-call views are purged, cursors and credentials are not."""

from __future__ import annotations

import sqlite3
import time

from bridge.integrations.bitrix24.state import OAuthToken, load_token, save_token
from bridge.integrations.telegram.state import TelegramCall, load_call, load_offset, save_call, save_offset
from bridge.outbox.state import StateStore


def test_housekeeping_never_purges_credentials_or_cursors() -> None:
    state = StateStore(sqlite3.connect(":memory:", isolation_level=None))
    save_token(state, OAuthToken("access", "refresh-once", time.time() + 3600))
    save_offset(state, 42)
    save_call(state, "in_1", TelegramCall(messages={"-100": 7}))
    state.db.execute("UPDATE sink_state SET updated_at = updated_at - 30 * 86400")  # a month quiet
    assert state.purge(time.time() - 7 * 86400) == 1
    assert load_call(state, "in_1") == TelegramCall()
    token = load_token(state)
    assert token is not None and token.refresh_token == "refresh-once"  # the one-time token survives
    assert load_offset(state) == 42


def test_an_old_database_gets_retention_kinds() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute(
        "CREATE TABLE sink_state (sink TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " updated_at REAL NOT NULL, PRIMARY KEY (sink, key))"
    )
    db.execute("INSERT INTO sink_state VALUES ('bitrix24', 'oauth', '{}', 0)")
    db.execute("INSERT INTO sink_state VALUES ('telegram-bot', 'offset', '3', 0)")
    db.execute("INSERT INTO sink_state VALUES ('telegram', 'call:in_1', '{}', 0)")
    state = StateStore(db)
    assert state.purge(time.time()) == 1
    assert state.get("bitrix24", "oauth") == "{}" and state.get("telegram-bot", "offset") == "3"
