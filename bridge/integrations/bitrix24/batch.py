"""Bitrix24's ``batch``: up to 50 methods in one HTTP request (one hit of the leaky bucket), run
in order on the portal, a later command able to use an earlier one's result.

Each command is ``"method?query"`` with the parameters as PHP's http_build_query writes them
(``USER_ID[0]=11&USER_ID[1]=12``); a parameter whose value is ``$result[cmd][FIELD]`` takes that
field of command ``cmd``'s result (b24restdocs, settings/how-to-call-rest-api/batch.md). The
answer holds ``result`` and ``result_error`` keyed by command — each an object, or ``[]`` when
empty (PHP's empty array).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

MAX_COMMANDS = 50


@dataclass(frozen=True)
class Ref:
    """``$result[command][field]``: a field of an earlier command's result in the same batch."""

    command: str
    field: str

    def __str__(self) -> str:
        return f"$result[{self.command}][{self.field}]"


def command(method: str, params: Mapping[str, Any]) -> str:
    """One batch command: ``method?A=1&B[0]=x`` (references left readable, as the docs write them)."""
    pairs: list[str] = []
    for key, value in params.items():
        _flatten(quote(str(key), safe=""), value, pairs)
    return f"{method}?{'&'.join(pairs)}" if pairs else method


def _flatten(key: str, value: Any, out: list[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{key}[{quote(str(k), safe='')}]", v, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _flatten(f"{key}[{i}]", v, out)
    elif isinstance(value, Ref):
        out.append(f"{key}={value}")
    else:
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        out.append(f"{key}={quote(text, safe='')}")


@dataclass(frozen=True)
class SubError:
    error: str
    description: str


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, SubError] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Any) -> BatchResult:
        """The ``result`` of a batch call; anything unexpected is an error of every command."""
        out = cls()
        if not isinstance(body, Mapping):
            return out
        results, errors = body.get("result"), body.get("result_error")
        if isinstance(results, Mapping):
            out.results = {str(k): v for k, v in results.items()}
        if isinstance(errors, Mapping):
            for key, err in errors.items():
                e = err if isinstance(err, Mapping) else {}
                out.errors[str(key)] = SubError(str(e.get("error", "")), str(e.get("error_description", "")))
        return out
