"""What Novofon's cloud sends us: call notifications (/call) and SMS notifications (/sms).

Each becomes the same CallRecord the tracker makes, so every sink treats a cloud call exactly like
a call on our own Asterisk. Validation is strict (known event, every field, Novofon's formats,
the Signature over Novofon's per-event string); repeats are dropped by key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from bridge.calls.records import FIELDS, CallRecord, Event, make, sign
from bridge.errors import BadRequest

_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_SMS_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?")
_NUMBER = re.compile(r"[0-9A-Za-z+*#._ -]{0,40}")  # digits, or an alphanumeric sender (OZON.ru)
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,100}")
DISPOSITIONS = {
    "answered",
    "busy",
    "cancel",
    "no answer",
    "failed",
    "no money",
    "unallocated number",
    "no limit",
    "no day limit",
    "line limit",
}
MAX_FIELD = 200
MAX_SMS = 2000


def _check(cond: bool, error: str, message: str, status: int = 400) -> None:
    if not cond:
        raise BadRequest(status, error, message)


def call_record(data: Mapping[str, str], signature: str | None, secret: str) -> tuple[str, CallRecord]:
    """Validate a Novofon call notification; return (dedupe key, record)."""
    _check(
        bool(secret), "not-configured", "novofon.api_secret is not set: notifications cannot be verified", 403
    )
    name = data.get("event", "")
    try:
        event = Event(name)
    except ValueError:
        raise BadRequest(400, "unknown-event", f"unknown event {name[:40]!r}") from None
    _check(event is not Event.SMS, "unknown-event", "NOTIFY_SMS is not a Novofon call event")
    values: dict[str, str] = {}
    for field in FIELDS[event][1:]:
        value = data.get(field)
        optional = field in ("internal", "call_id_with_rec", "is_recorded", "destination", "caller_id")
        _check(value is not None or optional, "missing-field", f"{field} is required for {name}")
        value = value or ""
        _check(len(value) <= MAX_FIELD, "field-too-long", f"{field} is longer than {MAX_FIELD} characters")
        values[field] = value
    if "call_start" in values:
        _check(
            bool(_TIME.fullmatch(values["call_start"])), "bad-field", "call_start must be YYYY-MM-DD HH:MM:SS"
        )
    _check(bool(_ID.fullmatch(values["pbx_call_id"])), "bad-field", "pbx_call_id has unexpected characters")
    for field in ("caller_id", "called_did", "destination", "internal"):
        if field in values:
            _check(bool(_NUMBER.fullmatch(values[field])), "bad-field", f"{field} is not a phone number")
    for field in ("duration", "status_code"):
        if field in values:
            _check(values[field].isdigit(), "bad-field", f"{field} must be a number")
    if "disposition" in values:
        _check(values["disposition"] in DISPOSITIONS, "bad-field", "unknown disposition")
    if "is_recorded" in values:
        values["is_recorded"] = values["is_recorded"] or "0"
        _check(values["is_recorded"] in ("0", "1"), "bad-field", "is_recorded must be 0 or 1")
    record = make(event, values, {"source": "novofon-cloud", "direction": "out" if "OUT" in name else "in"})
    expected = sign(record.fields, secret)
    _check(
        signature is not None and hmac.compare_digest(signature.encode(), expected.encode()),
        "bad-signature",
        "Signature does not match (check novofon.api_secret)",
        401,
    )
    key_part = values.get("internal", "") if event is Event.INTERNAL else ""
    return f"novofon:{values['pbx_call_id']}:{name}:{key_part}", record


def sms_record(data: Mapping[str, str]) -> tuple[str, CallRecord]:
    """Validate a Novofon SMS notification; return (dedupe key, record)."""
    values: dict[str, str] = {}
    for field in ("virtual_phone_number", "notification_time", "contact_phone_number", "message"):
        value = data.get(field)
        _check(value is not None and value != "", "missing-field", f"{field} is required")
        values[field] = value or ""
    _check(
        values["virtual_phone_number"].isdigit() and len(values["virtual_phone_number"]) <= 20,
        "bad-field",
        "virtual_phone_number must be digits",
    )
    _check(
        bool(_SMS_TIME.fullmatch(values["notification_time"])),
        "bad-field",
        "notification_time must be YYYY-MM-DD HH:MM:SS[.ffffff]",
    )
    _check(
        bool(_NUMBER.fullmatch(values["contact_phone_number"]))
        and values["contact_phone_number"].strip() != "",
        "bad-field",
        "contact_phone_number is not a number or sender name",
    )
    _check(
        len(values["message"]) <= MAX_SMS, "field-too-long", f"message is longer than {MAX_SMS} characters"
    )
    digest = hashlib.sha256("\x1f".join(values.values()).encode()).hexdigest()[:24]
    values["pbx_call_id"] = f"sms_{digest}"
    return f"sms:{digest}", make(Event.SMS, values, {"source": "novofon-cloud"})
