"""What Novofon's cloud sends us: call notifications (/call) and SMS notifications (/sms).

Each becomes the same CallRecord the tracker makes, so every sink treats a cloud call exactly like
a call on our own Asterisk. Validation is strict (known event, Novofon's formats, the Signature
over Novofon's per-event string, call_start within the replay window) and reads what Novofon's own
library reads (a missing optional field is empty). Repeats are dropped by a key made of what
Novofon signs and the event, so a captured notification replayed with other unsigned values is a
repeat as well.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bridge.calls.records import FIELDS, CallRecord, Event, make, sign, signature_string
from bridge.errors import BadRequest

_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_SMS_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?")
_NUMBER = re.compile(r"[0-9A-Za-z+*#._ -]{0,40}")  # digits, or an alphanumeric sender (OZON.ru)
_ID = re.compile(r"[0-9A-Za-z_.:-]{1,100}")  # no "/": call_id_with_rec names a recording file
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
    "no money, no limit",  # one value with a comma in it (user-api-v1 NotifyEnd.php)
}
# The official library reads a missing key as an empty string; these must be there all the same.
REQUIRED = ("call_start", "pbx_call_id", "duration", "disposition")
# Events one call can legitimately repeat with the same signed content, told apart by the phone
# (several phones ring; after a transfer another one answers). Novofon does not sign ``internal``,
# so a replay may vary it: at most MAX_VARIANTS of them are kept per signed notification.
VARIANTS_BY_INTERNAL = (Event.INTERNAL, Event.ANSWER)
MAX_VARIANTS = 20
MAX_FIELD = 200
MAX_SMS = 2000


@dataclass(frozen=True)
class Notification:
    """A checked Novofon call notification."""

    key: str  # its repeats (and replays with altered unsigned fields) have the same key
    record: CallRecord
    variant_of: str | None = None  # the signed notification it is a variant of (INTERNAL, ANSWER)


def _check(cond: bool, error: str, message: str, status: int = 400) -> None:
    if not cond:
        raise BadRequest(status, error, message)


def _fields(event: Event, data: Mapping[str, str]) -> dict[str, str]:
    """Novofon's fields of ``event``, in form (a missing optional one is empty)."""
    name = event.value
    values: dict[str, str] = {}
    for field in FIELDS[event][1:]:
        value = data.get(field)
        _check(value is not None or field not in REQUIRED, "missing-field", f"{field} is required for {name}")
        value = value or ""
        _check(len(value) <= MAX_FIELD, "field-too-long", f"{field} is longer than {MAX_FIELD} characters")
        values[field] = value
    if "call_start" in values:
        _check(
            bool(_TIME.fullmatch(values["call_start"])), "bad-field", "call_start must be YYYY-MM-DD HH:MM:SS"
        )
    _check(bool(_ID.fullmatch(values["pbx_call_id"])), "bad-field", "pbx_call_id has unexpected characters")
    rec = values.get("call_id_with_rec", "")
    _check(not rec or bool(_ID.fullmatch(rec)), "bad-field", "call_id_with_rec has unexpected characters")
    for field in ("caller_id", "called_did", "destination", "internal"):
        if field in values:
            _check(bool(_NUMBER.fullmatch(values[field])), "bad-field", f"{field} is not a phone number")
    if "duration" in values:
        _check(values["duration"].isdigit(), "bad-field", "duration must be a number")
    if values.get("status_code"):
        _check(values["status_code"].isdigit(), "bad-field", "status_code must be a number")
    if "disposition" in values:
        _check(values["disposition"] in DISPOSITIONS, "bad-field", "unknown disposition")
    if "is_recorded" in values:
        values["is_recorded"] = values["is_recorded"] or "0"
        _check(values["is_recorded"] in ("0", "1"), "bad-field", "is_recorded must be 0 or 1")
    return values


def _check_fresh(call_start: str, now: float, tz: ZoneInfo, window: float) -> None:
    """A notification is only taken while its call_start is within ``window`` of now."""
    try:
        at = datetime.strptime(call_start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).timestamp()
    except ValueError:
        raise BadRequest(400, "bad-field", "call_start is not a real date and time") from None
    if now - at > window:
        raise BadRequest(
            400, "stale", f"call_start is more than {window:g} s old (novofon.replay_window): a replay?"
        )
    if at - now > window:
        raise BadRequest(
            400, "clock-skew", f"call_start is more than {window:g} s ahead of our clock: check pbx.timezone"
        )


def call_record(
    data: Mapping[str, str],
    signature: str | None,
    secret: str,
    now: float,
    tz: ZoneInfo,
    window: float,
) -> Notification:
    """Validate a Novofon call notification: fields, Signature, freshness; and its dedupe key."""
    _check(
        bool(secret), "not-configured", "novofon.api_secret is not set: notifications cannot be verified", 403
    )
    name = data.get("event", "")
    try:
        event = Event(name)
    except ValueError:
        raise BadRequest(400, "unknown-event", f"unknown event {name[:40]!r}") from None
    _check(event is not Event.SMS, "unknown-event", "NOTIFY_SMS is not a Novofon call event")
    values = _fields(event, data)
    outbound = event in (Event.OUT_START, Event.OUT_END)
    record = make(event, values, {"source": "novofon-cloud", "direction": "out" if outbound else "in"})
    expected = sign(record.fields, secret)
    _check(
        signature is not None and hmac.compare_digest(signature.encode(), expected.encode()),
        "bad-signature",
        "Signature does not match (check novofon.api_secret)",
        401,
    )
    if "call_start" in values:  # NOTIFY_RECORD has none: its signed pair is its key
        _check_fresh(values["call_start"], now, tz, window)
    # What Novofon signs, as it signs it (the concatenation: moving the boundary between two signed
    # fields keeps the Signature valid, and the key); not pbx_call_id, which nobody signs.
    signed = hashlib.sha256(signature_string(record.fields).encode()).hexdigest()[:32]
    base = f"novofon:{name}:{signed}"
    if event in VARIANTS_BY_INTERNAL:
        return Notification(f"{base}:{values['internal']}", record, variant_of=base)
    return Notification(base, record)


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
