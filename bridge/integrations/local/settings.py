"""Local outputs' settings (config.yaml ``sinks.jsonl`` and ``sinks.console``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JsonlSettings:
    enabled: bool = True
    path: str = ""  # default: <storage.dir>/records.jsonl


@dataclass(frozen=True)
class ConsoleSettings:
    enabled: bool = True
