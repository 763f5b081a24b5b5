"""structlog setup: JSON lines under systemd (or when asked), readable colours on a terminal.

Secrets never reach a log line, at any level: values of keys that look like secrets are masked,
and every text in the line (the event, every value, a traceback) goes through the config's
``Redactor`` (bridge/redact.py), which masks known secret values wherever they appear.

Nothing from outside can forge a line: JSON escapes control characters, and on the console
renderer every value is made one line (``one_line``: CR, LF, ESC... shown as \\r, \\n, \\x1b).
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("secret", "password", "token", "signature", "authorization", "api_key", "webhook_url")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

Redact = Callable[[str], str]


def one_line(text: str) -> str:
    """``text`` as one printable line: control characters (CR, LF, ESC, NUL, DEL, C1, U+2028...)
    escaped, so text from outside (an SMS, a caller's name) cannot start a line of its own or
    drive the terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or unicodedata.category(ch) not in ("Cc", "Zl", "Zp")
        else _ESCAPES.get(ch, f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def _mask_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "***"
    return event


def _clean(value: Any, redact: Redact, flatten: bool) -> Any:
    if isinstance(value, str):
        text = redact(value)
        return one_line(text) if flatten else text
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {k: _clean(v, redact, flatten) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v, redact, flatten) for v in value]
    return _clean(repr(value), redact, flatten)  # exceptions, paths...: as the renderer would show them


def redactor(redact: Redact, flatten: bool) -> Callable[[Any, str, MutableMapping[str, Any]], Any]:
    """A structlog processor: every text in the event redacted (and one line when ``flatten``;
    a traceback keeps its line breaks, its other control characters escaped)."""

    def process(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if key == "exception" and isinstance(value, str):
                event[key] = "\n".join(one_line(line) for line in redact(value).split("\n"))
            else:
                event[key] = _clean(value, redact, flatten)
        return event

    return process


class _Stderr:
    """Writes to whatever sys.stderr is at the time (structlog's PrintLogger binds the file once)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def setup(fmt: str = "auto", level: str = "info", redact: Redact | None = None) -> None:
    """Configure logging; ``redact`` is the loaded config's Redactor (bridge/redact.py)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            _mask_secrets,
            structlog.processors.format_exc_info,
            redactor(redact or (lambda text: text), flatten=not as_json),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_: _Stderr(),
        cache_logger_on_first_use=False,
    )
