"""The service's EnvironmentFile (/etc/novofon-bridge/env): read as systemd reads it, never printed.

The CLI loads it so that ``novofon-bridge check`` sees the same ${AMI_SECRET} as the daemon;
variables already set in the environment win. The parser follows systemd's (env-file.c):
``#``/``;`` comments, ``KEY=VALUE``, whitespace around keys and unquoted values dropped,
'single' quotes literal, "double" quotes with \\" \\\\ \\` \\$ escapes, backslash-newline joins lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

DEFAULT_PATH = Path("/etc/novofon-bridge/env")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_SHELL_NEED_ESCAPE = '"\\`$'


def path() -> Path:
    return Path(os.environ.get("NOVOFON_BRIDGE_ENV") or DEFAULT_PATH)


def parse(text: str) -> dict[str, str]:
    """KEY=VALUE assignments in ``text``, later ones winning, invalid names dropped (as systemd does)."""
    out: dict[str, str] = {}
    state = "pre_key"
    key: list[str] = []
    value: list[str] = []
    key_ws: int | None = None  # where trailing whitespace of the key/value starts
    value_ws: int | None = None

    def push() -> None:
        name = "".join(key[:key_ws] if key_ws is not None else key)
        if _NAME.match(name):
            out[name] = "".join(value)

    for c in text:
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif c not in _WHITESPACE:
                state, key, key_ws = "key", [c], None
        elif state == "key":
            if c in _NEWLINE:
                state = "pre_key"
            elif c == "=":
                state, value, value_ws = "pre_value", [], None
            else:
                if c not in _WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state == "pre_value":
            if c in _NEWLINE:
                push()
                state = "pre_key"
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in _WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c in _NEWLINE:
                if value_ws is not None:
                    del value[value_ws:]
                push()
                state = "pre_key"
            elif c == "\\":
                state, value_ws = "value_escape", None
            else:
                if c not in _WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in _NEWLINE:
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value.extend(("\\", c))
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in _NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            state = "pre_key" if c in _NEWLINE else "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        if state == "value" and value_ws is not None:
            del value[value_ws:]
        push()
    return out


def read(file: Path) -> dict[str, str] | None:
    """The file's assignments; None if there is no such file. OSError/UnicodeDecodeError pass."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    return parse(data.decode("utf-8"))


def load_into(environ: MutableMapping[str, str], file: Path) -> str | None:
    """Set the file's variables that ``environ`` lacks. Returns a warning for people, or None."""
    try:
        values = read(file)
    except PermissionError:
        if os.environ.get("INVOCATION_ID"):  # a systemd service: EnvironmentFile= already set them
            return None
        return f"{file}: нет прав на чтение — переменные из него не загружены (запустите через sudo)"
    except UnicodeDecodeError:
        return f"{file}: файл не в кодировке UTF-8 — переменные из него не загружены; сохраните его в UTF-8"
    except OSError as e:
        return f"{file}: не прочитан ({e.strerror}) — переменные из него не загружены"
    for name, value in (values or {}).items():
        environ.setdefault(name, value)
    return None


def store(file: Path, updates: dict[str, str]) -> None:
    """Set ``updates`` in the file: replace each key's line, or append it. The file stays 0600."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
        file.parent.mkdir(parents=True, mode=0o750, exist_ok=True)
    for name, value in updates.items():
        line = f"{name}={value}\n"
        for i, old in enumerate(lines):
            if old.split("=", 1)[0].strip() == name:
                lines[i] = line
                break
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(line)
    tmp = file.with_name(f".{file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, file)
