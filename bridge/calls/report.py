"""The records a call produces, from the tracker's state of it (Novofon's fields, our meta)."""

from __future__ import annotations

from bridge.calls.disposition import disposition
from bridge.calls.model import Call, Direction
from bridge.calls.records import CallRecord, Event, make


def end_records(call: Call, ts: float) -> list[CallRecord]:
    """END (or OUT_END) of a finished call, and its RECORD when an answered call was recorded."""
    out: list[CallRecord] = []
    end = call.ended_at or ts
    duration = round(end - call.answered_at) if call.answered_at is not None else 0
    # The trunk leg's cause is what the network said; when Asterisk itself cancelled that leg
    # (Dial timeout: cause 0) the first channel's cause (the dialplan's Hangup(19)) tells why.
    cause = (call.trunk.cause if call.trunk else None) or call.root_cause
    rec_id = call.recorded[0] if call.recorded and call.answered_at is not None else ""
    values = {
        "duration": str(max(0, duration)),
        "disposition": disposition(call, cause).value,
        "status_code": str(cause),
        "is_recorded": "1" if rec_id else "0",
        "call_id_with_rec": rec_id,
    }
    if call.direction is Direction.INBOUND:
        out.append(record(call, Event.END, **values))
    else:
        out.append(record(call, Event.OUT_END, **values))
    if rec_id:
        out.append(record(call, Event.RECORD, call_id_with_rec=rec_id))
        file = call.files.get(rec_id)
        if file:  # as Asterisk named it: the pipeline turns it into the daemon's path
            out[-2:] = [CallRecord(r.fields, {**r.meta, "recording_file": file}) for r in out[-2:]]
    return out


def record(call: Call, event: Event, **extra: str) -> CallRecord:
    values = {
        "call_start": call.call_start,
        "pbx_call_id": call.pbx_call_id,
        "caller_id": call.caller_id,
        "called_did": call.called_did,
        "internal": call.internal,
        "destination": call.destination,
    }
    values.update(extra)
    meta = {"direction": call.direction.value}
    if call.caller_name:
        meta["caller_name"] = call.caller_name
    if call.reconstructed:
        meta["reconstructed"] = "1"
    return make(event, values, meta)
