"""The bridge's AMI user as manager.conf defines it (read=, write=, eventfilter lines), compared
with what asterisk-conf/novofon-bridge_manager.conf ships.

Read the way Asterisk reads it (bridge/pbx/conf.py: ``#include`` followed, so FreePBX's
manager_custom.conf counts too). Every section with the user's name adds to it, in order; a later
``read=`` / ``write=`` replaces an earlier one, eventfilter lines add up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bridge.pbx.conf import Section, decode, parse, walk
from bridge.pbx.snippets import find as find_snippets

MANAGER = "manager.conf"
SHIPPED = "novofon-bridge_manager.conf"
_NAME_FILTER = re.compile(
    r"eventfilter\(action\(include\),name\(([A-Za-z0-9_]+)\)(?:,header\([A-Za-z0-9_-]+\),method\(exact\))?\)=(.*)"
)


class NotReadable(Exception):
    """manager.conf (or a file it includes) cannot be read: ``path`` and the OS's reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass
class ManagerUser:
    name: str
    where: list[str] = field(default_factory=list)  # file:line of each section
    read: list[str] | None = None
    write: list[str] | None = None
    filters: list[str] = field(default_factory=list)  # normalised eventfilter lines


def normalise_filter(key: str, value: str) -> str:
    """One eventfilter line, spaces removed from the key: ``eventfilter(action(include),name(X))=``."""
    return re.sub(r"\s+", "", key) + "=" + value.strip()


def included_event(line: str) -> str | None:
    """The event a ``name(...)`` include filter lets through, ``VarSet(MIXMONITOR_FILENAME)`` for one
    that also matches a header exactly (None for any other kind of filter)."""
    m = _NAME_FILTER.fullmatch(line)
    if m is None:
        return None
    return f"{m.group(1)}({m.group(2)})" if "header(" in line else m.group(1)


def _classes(value: str) -> list[str]:
    return [c.strip().lower() for c in value.split(",") if c.strip()]


def _add(user: ManagerUser, section: Section, etc: Path) -> None:
    user.where.append(section.where(etc))
    for key, value in section.body:
        if key == "read":
            user.read = _classes(value)
        elif key == "write":
            user.write = _classes(value)
        elif key.startswith("eventfilter"):
            user.filters.append(normalise_filter(key, value))


def _reader(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as e:
        raise NotReadable(path, e.strerror or str(e)) from None


def find_user(etc: Path, name: str) -> ManagerUser | None:
    """The user ``name`` as Asterisk would load it from ``etc``/manager.conf; None when no section
    has that name. NotReadable when a file cannot be read; FileNotFoundError without manager.conf."""
    if _reader(etc / MANAGER) is None:
        raise FileNotFoundError(str(etc / MANAGER))
    user: ManagerUser | None = None
    for _, parsed in walk(etc, MANAGER, _reader):
        for section in parsed.sections:
            if section.name == name:
                user = user or ManagerUser(name)
                _add(user, section, etc)
    return user


def shipped_filters() -> list[str] | None:
    """The eventfilter lines novofon-bridge ships (None when asterisk-conf/ is not found)."""
    folder = find_snippets(SHIPPED)
    if folder is None:
        return None
    text = decode((folder / SHIPPED).read_bytes())
    found: list[str] = []
    for section in parse(text, folder / SHIPPED, ours=True).sections:
        for key, value in section.body:
            if key.startswith("eventfilter"):
                found.append(normalise_filter(key, value))
    return found
