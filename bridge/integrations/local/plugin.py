"""Local outputs: a JSONL file of every record, and readable lines on the console."""

from __future__ import annotations

from bridge.integrations.base import Context, Parts
from bridge.integrations.local.console import ConsoleSink
from bridge.integrations.local.jsonl import JsonlSink
from bridge.outbox.sink import Sink


def setup(ctx: Context) -> Parts:
    sinks: list[Sink] = []
    if ctx.cfg.sinks.jsonl.enabled:
        sinks.append(JsonlSink(ctx.cfg.jsonl_path))
    if ctx.cfg.sinks.console.enabled:
        sinks.append(ConsoleSink())
    return Parts(sinks=sinks)
