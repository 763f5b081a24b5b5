"""The call as people see it: a view folded from the records in order, and its text (HTML)."""

from __future__ import annotations

import html
from typing import Any

from bridge.calls.numbers import pretty
from bridge.calls.records import CallRecord, Event
from bridge.integrations.telegram.api import MAX_TEXT
from bridge.integrations.telegram.settings import TelegramTemplates

LINE_RESULT = "↩️ Перезвонили ({ext}): {disposition}, разговор {duration}"
LINE_NOT_CALLED = "↩️ Не удалось перезвонить: {reason}"  # the employee's phone never reached the client

DISPOSITIONS_RU = {
    "answered": "отвечен",
    "busy": "занято",
    "cancel": "звонящий положил трубку",
    "no answer": "нет ответа",
    "failed": "не удалось соединить",
    "unallocated number": "номер не существует",
}


MAX_VALUE = 300  # one value (a caller's name from a CRM, say) never takes over the message


def escape_fit(text: str, budget: int) -> str:
    """HTML-escape ``text``, cut *before* escaping so that the result fits ``budget`` characters
    (cutting after escaping can split an entity such as ``&lt;`` and Telegram refuses the HTML)."""
    out: list[str] = []
    used = 0
    for i, ch in enumerate(text):
        piece = html.escape(ch, quote=False)
        rest_fits = used + len(piece) <= budget - (1 if i < len(text) - 1 else 0)
        if not rest_fits:
            out.append("…")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def fmt_duration(seconds: str) -> str:
    s = int(seconds or 0)
    return f"{s // 60}:{s % 60:02d}"


def fold(view: dict[str, Any], r: CallRecord) -> dict[str, Any]:
    """The call as people see it, after record ``r``."""
    f, ev = r.fields, r.event
    v = dict(view)
    v.setdefault("rung", [])
    if ev is Event.SMS:
        v["sms"] = {k: f[k] for k in ("contact_phone_number", "virtual_phone_number", "message")}
        return v
    if ev in (Event.START, Event.IVR, Event.INTERNAL, Event.END):
        v["direction"] = "in"
        v["caller"] = f["caller_id"]
        v["did"] = f["called_did"]
    if ev in (Event.OUT_START, Event.OUT_END):
        v["direction"] = "out"
        v["destination"] = f["destination"]
        v["internal"] = f["internal"]
    if r.meta.get("caller_name"):
        v["caller_name"] = r.meta["caller_name"]
    if r.meta.get("line_name"):
        v["line_name"] = r.meta["line_name"]
    if r.meta.get("routed_to"):
        name = r.meta.get("routed_to_name")
        v["responsible"] = f"{name} ({r.meta['routed_to']})" if name else r.meta["routed_to"]
    if ev is Event.INTERNAL and f["internal"] not in v["rung"]:
        v["rung"] = [*v["rung"], f["internal"]]
    if ev is Event.ANSWER:
        # A call forwarded to a mobile is answered by that number (``destination``), no extension.
        v["answered_by"] = f["internal"] or pretty(f["destination"])
    if ev in (Event.END, Event.OUT_END):
        v["ended"] = True
        v["disposition"] = f["disposition"]
        v["duration"] = f["duration"]
        if f.get("internal"):
            v["answered_by" if f["disposition"] == "answered" else "last_internal"] = f["internal"]
    if ev is Event.RECORD:
        v["recording"] = r.meta.get("recording_file") or f["call_id_with_rec"]
    if r.reconstructed:
        v["reconstructed"] = True
    return v


def render(v: dict[str, Any], t: TelegramTemplates) -> str:
    def e(value: object) -> str:
        return escape_fit(str(value), MAX_VALUE)

    if v.get("sms"):
        sms = v["sms"]
        head = dict(sender=e(pretty(sms["contact_phone_number"])), did=e(pretty(sms["virtual_phone_number"])))
        budget = MAX_TEXT - len(t.sms.format(**head, message=""))
        return t.sms.format(**head, message=escape_fit(sms["message"], budget))

    inbound = v.get("direction") == "in"
    ended, disp = v.get("ended"), v.get("disposition")
    if ended and disp != "answered":
        title = t.missed if inbound else t.not_reached
    elif ended:
        title = t.answered
    else:
        title = t.incoming if inbound else t.outgoing
    lines = [title]
    if inbound:
        caller = pretty(v.get("caller", "")) or "номер скрыт"
        if v.get("caller_name"):
            caller += f" ({v['caller_name']})"
        did = pretty(v.get("did", ""))
        if v.get("line_name"):
            did += f" «{v['line_name']}»"
        lines.append(t.caller.format(caller=e(caller)))
        lines.append(t.line.format(did=e(did)))
        if v.get("responsible"):
            lines.append(t.responsible.format(employee=e(v["responsible"])))
        if v.get("rung") and not v.get("answered_by"):
            lines.append(t.ringing.format(extensions=e(", ".join(v["rung"]))))
    else:
        lines.append(t.employee.format(internal=e(v.get("internal") or "АТС")))
        lines.append(t.destination.format(destination=e(pretty(v.get("destination", "")))))
    if v.get("answered_by") and inbound:
        lines.append(t.answered_by.format(internal=e(v["answered_by"])))
    if ended:
        lines.append(
            t.result.format(
                disposition=e(DISPOSITIONS_RU.get(disp or "", disp)),
                duration=e(fmt_duration(v.get("duration", "0"))),
            )
        )
    if v.get("recording"):
        lines.append(t.recorded)
    if v.get("reconstructed"):
        lines.append(t.reconstructed)
    return "\n".join(lines)[:MAX_TEXT]
