"""The fake portal's ``batch``: commands as PHP's parse_str reads them, ``$result[cmd][FIELD]``
references resolved from earlier results, ``halt``, the 50-command limit, PHP's empty ``[]``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

MAX = 50
_REF = re.compile(r"^\$result\[([^\]]+)\]((?:\[[^\]]*\])*)$")


def run_batch(
    cmd: dict[str, Any],
    halt: bool,
    call: Callable[[str, dict[str, Any]], tuple[Any, int | None]],
    refused: type[Exception],
) -> dict[str, Any]:
    """Run each ``"method?query"`` with ``call`` (-> result, total for list methods); a ``refused``
    exception (with ``error``/``description``) is that command's error."""
    result: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    for i, (key, line) in enumerate(cmd.items()):
        method, _, query = str(line).partition("?")
        if i >= MAX:
            errors[key] = {
                "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                "error_description": "Max batch length exceeded",
            }
            continue
        if method.lower() == "batch":
            errors[key] = {
                "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "error_description": "Method is not allowed for batch usage",
            }
            continue
        try:
            result[key], total = call(method, substitute(php_parse(query), result))
            if total is not None:
                totals[key] = total
        except refused as e:
            errors[key] = {
                "error": getattr(e, "error", ""),
                "error_description": getattr(e, "description", ""),
            }
            if halt:
                break
    # PHP encodes an empty array as [], a filled one as an object: clients must take both
    return {
        "result": result or [],
        "result_error": errors or [],
        "result_total": totals or [],
        "result_next": [],
        "result_time": [],
    }


def php_parse(query: str) -> dict[str, Any]:
    """A query string as PHP's parse_str reads it: ``A[B]=1&L[]=x&L[]=y`` -> {"A": {"B": "1"},
    "L": ["x", "y"]} (an array with keys 0..n-1 is a list)."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        name, bracket, rest = key.partition("[")
        parts = [name, *re.findall(r"\[([^\]]*)\]", bracket + rest)]
        node = out
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _lists(out)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v) for k, v in node.items()}
    if items and list(items) == [str(i) for i in range(len(items))]:
        return list(items.values())
    return items


def substitute(value: Any, results: dict[str, Any]) -> Any:
    """``$result[key][FIELD]`` -> that field of an earlier command's result (batch references)."""
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    if isinstance(value, str):
        m = _REF.match(value)
        if m:
            node: Any = results.get(m.group(1))
            for part in re.findall(r"\[([^\]]*)\]", m.group(2)):
                node = node.get(part) if isinstance(node, dict) else None
            return "" if node is None else node
    return value
