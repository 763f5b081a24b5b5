"""Bitrix24's events to us (outgoing webhook / application events): checked, never trusted.

Bitrix24 posts its events form-encoded (``event``, ``data[...]``, ``auth[application_token]``) and
never retries a failed delivery, so an event is only checked and committed as a job
(bridge/outbox/jobs.py) before we answer; the job (a user.get, a click-to-call) runs afterwards.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from bridge.errors import BadRequest

USER_EVENTS = ("ONUSERADD", "ONUSERUPDATE")


def parse_event(form: Mapping[str, str], application_token: str) -> tuple[str, dict[str, str]]:
    """Check a Bitrix24 event; return (event name, data[...] flattened: "FIELDS][ID" -> "FIELDS.ID")."""
    if not application_token:
        raise BadRequest(
            403,
            "not-configured",
            "no application token yet: install the Bitrix24 application (ONAPPINSTALL) "
            "or set sinks.bitrix24.application_token",
        )
    token = form.get("auth[application_token]", "")
    if not hmac.compare_digest(token.encode(), application_token.encode()):
        raise BadRequest(401, "bad-token", "auth[application_token] does not match")
    event = form.get("event", "").upper()
    if not event or len(event) > 64 or not event.isalnum():
        raise BadRequest(400, "unknown-event", "event is missing or malformed")
    data = {}
    for key, value in form.items():
        if key.startswith("data[") and key.endswith("]"):
            data[key[5:-1].replace("][", ".")] = value
    return event, data


def user_id_of(data: Mapping[str, str]) -> str:
    uid = data.get("FIELDS.ID") or data.get("ID") or data.get("USER_ID") or ""
    if not uid.isdigit() or len(uid) > 12:
        raise BadRequest(400, "bad-field", "the event carries no numeric user ID")
    return uid
