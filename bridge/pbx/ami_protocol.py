"""AMI wire protocol: framing, parsing and action bookkeeping for one TCP connection.

Why not panoramisk's protocol: it decodes every TCP chunk on its own (a Cyrillic name split
across two reads is corrupted), lets a raising callback drop the connection, guesses when a list
action is complete from the action's name, and mis-frames a message that ends with "\\r\\n\\n".
Here bytes are buffered until a whole message ("\\r\\n\\r\\n") is there and only then decoded;
list actions end on Asterisk's own "EventList: Complete"; handler errors are logged, never fatal.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("bridge.ami")

AmiMessage = dict[str, str]
EventHandler = Callable[[AmiMessage], None]

_SEP = b"\r\n\r\n"
_BANNER = b"Asterisk Call Manager/"


class AmiError(Exception):
    """An AMI action failed or the connection broke while it was pending."""


class UnsafeAction(AmiError):
    """An action we refuse to send: its name, a key or a value holds CR, LF or another control
    character, which would let it end early and smuggle in a second, attacker-built action.

    Raised before a single byte is written; the message names the action and the key, never the
    value (it may be a secret, e.g. the Login's).
    """


_KEY = re.compile(r"[A-Za-z0-9_()-]{1,64}")


def _has_control(text: str) -> bool:
    """C0/C1 controls (CR, LF, NUL, ESC, DEL...) and Unicode line/paragraph separators."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def check_action(action: str, fields: dict[str, str] | None) -> list[tuple[str, str]]:
    """The action's header lines, each checked; UnsafeAction if any is unsafe.

    ``Variable`` may carry several variables separated by "\n" (one ``Variable:`` line each);
    that is the only newline ever accepted, and each part is checked on its own.
    """
    if not _KEY.fullmatch(action):
        raise UnsafeAction(f"AMI action name {action[:40]!r} refused: expected letters and digits only")
    lines: list[tuple[str, str]] = []
    for key, value in (fields or {}).items():
        if not _KEY.fullmatch(key):
            raise UnsafeAction(f"AMI action {action}: key {key[:40]!r} refused (letters and digits only)")
        text = str(value)
        for one in text.split("\n") if key == "Variable" else (text,):
            if _has_control(one):
                raise UnsafeAction(
                    f"AMI action {action}: the value of {key} holds a control character (CR, LF...): "
                    "refused, nothing was sent"
                )
            lines.append((key, one))
    return lines


def parse_message(block: bytes) -> AmiMessage:
    """Parse one complete AMI message (without the blank-line terminator)."""
    lines = block.decode("utf-8", "replace").split("\r\n")
    try:  # fast path: every line is "Key: value" and no key repeats (nearly every event)
        msg = dict(line.split(": ", 1) for line in lines)
        if len(msg) == len(lines):
            return msg
    except ValueError:
        pass
    msg = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                continue
        if key in msg:  # repeated header (ChanVariable, Output): keep them all, one per line
            msg[key] += "\n" + value
        else:
            msg[key] = value
    return msg


class Framer:
    """Split a byte stream into complete AMI messages; tolerant of arbitrary chunking."""

    __slots__ = ("_buf", "banner")

    def __init__(self) -> None:
        self._buf = b""
        self.banner: str | None = None

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if self.banner is None:
            if buf.startswith(_BANNER):
                end = buf.find(b"\r\n")
                if end < 0:
                    self._buf = buf
                    return []
                self.banner = buf[:end].decode("ascii", "replace")
                buf = buf[end + 2 :]
            elif _BANNER.startswith(buf):  # the banner itself arrived split
                self._buf = buf
                return []
            else:
                self.banner = ""  # no banner: a replayed transcript
        blocks = buf.split(_SEP)
        self._buf = blocks.pop()
        return [b for b in blocks if b]


@dataclass
class ActionResult:
    """The response to an action and, for list actions, the events that came with it."""

    response: AmiMessage
    events: list[AmiMessage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.response.get("Response", "").lower() in ("success", "follows", "goodbye")

    @property
    def message(self) -> str:
        return self.response.get("Message", "")


@dataclass
class _Pending:
    future: asyncio.Future[ActionResult]
    result: ActionResult | None = None


class AmiProtocol(asyncio.Protocol):
    """One AMI connection. Events go to ``on_event``; responses complete pending actions."""

    def __init__(self, on_event: EventHandler, events: Iterable[str] | None = None) -> None:
        self._on_event = on_event
        self._events = frozenset(events) if events is not None else None
        self._framer = Framer()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self.transport: asyncio.Transport | None = None
        self.banner_seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.handler_errors = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        blocks = self._framer.feed(data)
        if self._framer.banner is not None and not self.banner_seen.done():
            self.banner_seen.set_result(self._framer.banner)
        for block in blocks:
            self._handle(block)

    def connection_lost(self, exc: Exception | None) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(AmiError("AMI connection lost"))
        self._pending.clear()
        if not self.banner_seen.done():
            self.banner_seen.set_exception(AmiError("AMI connection closed before the banner"))
            self.banner_seen.exception()  # its waiter may be gone (Ctrl-C): no "never retrieved" at exit
        if not self.closed.done():
            self.closed.set_result(exc)

    # -- messages ------------------------------------------------------------------------------
    def _handle(self, block: bytes) -> None:
        if self._events is not None and block.startswith(b"Event: "):
            end = block.find(b"\r\n")
            name = block[7 : end if end >= 0 else len(block)].decode("ascii", "replace")
            # Unwanted events are dropped unparsed, unless they answer one of our list actions.
            if name not in self._events and not (self._pending and b"ActionID:" in block):
                return
        msg = parse_message(block)
        action_id = msg.get("ActionID")
        pending = self._pending.get(action_id) if action_id else None
        if pending is not None:
            self._feed_pending(action_id or "", pending, msg)
            return
        if "Event" in msg:
            try:
                self._on_event(msg)
            except Exception:  # a bug in a handler must never cost us the connection
                self.handler_errors += 1
                log.exception("ami.handler_failed", ami_event=msg.get("Event"))

    def _feed_pending(self, action_id: str, pending: _Pending, msg: AmiMessage) -> None:
        if pending.result is None:
            pending.result = ActionResult(msg)
            if msg.get("EventList", "").lower() != "start" or not pending.result.ok:
                self._finish(action_id, pending)
            return
        if msg.get("EventList", "").lower() == "complete":
            self._finish(action_id, pending)
        else:
            pending.result.events.append(msg)

    def _finish(self, action_id: str, pending: _Pending) -> None:
        del self._pending[action_id]
        if not pending.future.done() and pending.result is not None:
            pending.future.set_result(pending.result)

    # -- actions -------------------------------------------------------------------------------
    def send_action(self, action: str, fields: dict[str, str] | None = None) -> asyncio.Future[ActionResult]:
        checked = check_action(action, fields)  # before anything else: nothing unsafe is ever sent
        if self.transport is None or self.transport.is_closing():
            raise AmiError("AMI connection is not open")
        action_id = f"nb-{next(self._ids)}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines.extend(f"{key}: {value}" for key, value in checked)
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(future)
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        return future

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
