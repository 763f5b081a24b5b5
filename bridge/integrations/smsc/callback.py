"""The SMS gateway's callback (/smsc): delivery statuses of our SMS, and SMS sent to our number.

Closed until ``callback_token`` is set: the gateway calls ``/smsc?token=...&charset=utf-8``
(without ``charset=utf-8`` SMSC sends windows-1251, which is read as such). The control hash, when
``callback_secret`` is set, covers ``id:phone:status`` and not the text, so an incoming SMS is
remembered by its gateway ``id`` and phone: a captured callback replayed with another text is a
repeat, not a new SMS.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import datetime

from bridge.calls.records import CallRecord, Event, make
from bridge.errors import BadRequest

_ID = re.compile(r"[0-9A-Za-z_-]{1,40}")
_PHONE = re.compile(r"\+?[0-9]{3,20}")
MAX_SMS = 2000


def control_hash(data: Mapping[str, str], secret: str, algo: str) -> str:
    text = f"{data.get('id', '')}:{data.get('phone', '')}:{data.get('status', '')}:{secret}"
    return hashlib.new(algo, text.encode()).hexdigest()


def charset_of(query: Mapping[str, str]) -> str:
    """The charset SMSC encoded the callback in: UTF-8 only when the URL asks for it."""
    return "utf-8" if query.get("charset", "").lower().replace("_", "-") in ("utf-8", "utf8") else "cp1251"


def check_token(data: Mapping[str, str], token: str) -> None:
    if not token:
        raise BadRequest(
            403, "not-configured", "sinks.sms.callback_token is not set: /smsc is closed (see the README)"
        )
    if not hmac.compare_digest(data.get("token", "").encode(), token.encode()):
        raise BadRequest(
            401, "bad-token", "the token query parameter does not match sinks.sms.callback_token"
        )


def check(data: Mapping[str, str], secret: str, algo: str) -> None:
    if not secret:
        return
    given = data.get(algo, "")
    if not hmac.compare_digest(given.lower().encode(), control_hash(data, secret, algo).encode()):
        raise BadRequest(
            401, "bad-signature", f"the {algo} control hash does not match (check sinks.sms.callback_secret)"
        )


def parse(data: Mapping[str, str]) -> tuple[str, str, str]:
    """Validate; return (kind: "status" | "incoming", id, phone)."""
    sms_id, phone = data.get("id", ""), data.get("phone", "")
    if sms_id and not _ID.fullmatch(sms_id):
        raise BadRequest(400, "bad-field", "id has unexpected characters")
    if not _PHONE.fullmatch(phone):
        raise BadRequest(400, "bad-field", "phone is not a phone number")
    if "mes" in data:
        if not data["mes"] or len(data["mes"]) > MAX_SMS:
            raise BadRequest(400, "bad-field", f"mes must be 1..{MAX_SMS} characters")
        return "incoming", sms_id, phone.lstrip("+")
    status = data.get("status", "")
    if not re.fullmatch(r"-?\d{1,3}", status):
        raise BadRequest(400, "bad-field", "status must be the gateway's numeric status")
    if not sms_id:
        raise BadRequest(400, "missing-field", "id is required for a status")
    return "status", sms_id, phone.lstrip("+")


def incoming_record(data: Mapping[str, str], phone: str, our_number: str) -> tuple[str, CallRecord]:
    to = "".join(ch for ch in data.get("to", "") if ch.isdigit()) or our_number or "0"
    now = datetime.fromtimestamp(time.time()).strftime("%Y-%m-%d %H:%M:%S")
    digest = hashlib.sha256(
        f"{data.get('id', '')}:{phone}:{data['mes']}:{data.get('sent', '')}".encode()
    ).hexdigest()
    sms_id = data.get("id", "")
    key = f"smsc:in:{sms_id}:{phone}" if sms_id else f"smsc:{digest}"
    values = {
        "pbx_call_id": f"sms_{digest[:24]}",
        "virtual_phone_number": to,
        "notification_time": now,
        "contact_phone_number": phone,
        "message": data["mes"],
    }
    return key, make(Event.SMS, values, {"source": "sms-gateway"})
