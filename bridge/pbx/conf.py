"""Reading Asterisk's .conf files the way Asterisk does: sections, templates, ``#include``.

Used by the installer (bridge/pbx/install.py) to find out, before it writes anything, which
section names the PBX already has, whether a module is switched on, and what novofon-bridge
added earlier. Files are read as bytes and decoded with ``surrogateescape``: an office's configs
may hold cp1251 comments, and every byte must survive untouched.

What novofon-bridge adds to a file it does not own is one marked block::

    ; >>> novofon-bridge: ...
    ...
    ; <<< novofon-bridge

appended after a single newline, so removing the newline and the block gives back the file
exactly as it was. A block whose first line says ``(file created)`` was the whole file.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BEGIN = "; >>> novofon-bridge"
END = "; <<< novofon-bridge"
CREATED = "(file created)"
OURS_PREFIX = "novofon-bridge_"


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Section:
    name: str
    options: tuple[str, ...]  # "!" template, "+" addition to an earlier section, template names
    body: tuple[tuple[str, str], ...]
    file: Path
    line: int
    ours: bool

    @property
    def is_template(self) -> bool:
        return "!" in self.options

    @property
    def adds(self) -> bool:
        return "+" in self.options

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(o for o in self.options if o not in ("!", "+"))

    def get(self, key: str) -> str | None:
        found = None
        for k, v in self.body:
            if k == key:
                found = v
        return found

    def where(self, etc: Path) -> str:
        try:
            name = str(self.file.relative_to(etc))
        except ValueError:
            name = str(self.file)
        return f"{name}:{self.line}"


# -- marked blocks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    start: int  # index of the newline before the block (or 0 for a created file)
    end: int  # index just past the block's last newline
    created: bool


def blocks(text: str) -> list[Block]:
    """Our marked blocks in ``text``, in order."""
    found: list[Block] = []
    pos = 0
    while True:
        at = text.find(BEGIN, pos)
        if at < 0:
            return found
        if at > 0 and text[at - 1] != "\n":  # not at the start of a line: not ours
            pos = at + len(BEGIN)
            continue
        end_at = text.find("\n" + END, at)
        if end_at < 0:
            return found
        stop = text.find("\n", end_at + 1)
        stop = len(text) if stop < 0 else stop + 1
        first_line = text[at : text.find("\n", at)]
        created = CREATED in first_line and at == 0
        found.append(Block(at if at == 0 else at - 1, stop, created))
        pos = stop


def without_blocks(text: str) -> tuple[str, bool]:
    """``text`` with our blocks taken out, and whether it was a file we created."""
    out, last, created = [], 0, False
    for b in blocks(text):
        out.append(text[last : b.start])
        last = b.end
        created = created or b.created
    out.append(text[last:])
    return "".join(out), created


def block_lines(text: str) -> set[int]:
    """1-based numbers of the lines inside our blocks."""
    lines: set[int] = set()
    for b in blocks(text):
        begin = 0 if b.start == 0 and text.startswith(BEGIN) else b.start + 1
        lines.update(range(text.count("\n", 0, begin) + 1, text.count("\n", 0, b.end - 1) + 2))
    return lines


def appended(before: bytes | None, block: str) -> bytes:
    """``before`` with ``block`` (its lines, from BEGIN through END) appended; a new file if None."""
    if before is None:
        return encode(block)
    return before + b"\n" + encode(block)


def make_block(first_line: str, lines: list[str], created: bool) -> str:
    head = f"{BEGIN} {CREATED}: {first_line}" if created else f"{BEGIN}: {first_line}"
    return "\n".join([head, *lines, END]) + "\n"


# -- parsing --------------------------------------------------------------------------------------


def _strip_comment(line: str, in_block: bool) -> tuple[str, bool]:
    """The line without comments (``;`` to the end, ``;-- ... --;`` across lines; ``\\;`` is a ;)."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if in_block:
            j = line.find("--;", i)
            if j < 0:
                return "".join(out), True
            in_block, i = False, j + 3
            continue
        c = line[i]
        if c == "\\" and line.startswith(";", i + 1):
            out.append(";")
            i += 2
        elif c == ";":
            if line.startswith(";--", i):
                in_block, i = True, i + 3
                continue
            break
        else:
            out.append(c)
            i += 1
    return "".join(out), in_block


def _header(line: str) -> tuple[str, tuple[str, ...]] | None:
    if not line.startswith("["):
        return None
    close = line.find("]")
    if close < 0:
        return None
    rest = line[close + 1 :].strip()
    options: tuple[str, ...] = ()
    if rest.startswith("(") and ")" in rest:
        options = tuple(o.strip() for o in rest[1 : rest.index(")")].split(",") if o.strip())
    return line[1:close].strip(), options


def include_target(line: str) -> str | None:
    """The file named by an ``#include``/``#tryinclude`` line (comments already removed)."""
    for directive in ("#include", "#tryinclude"):
        if line.startswith(directive):
            arg = line[len(directive) :].strip()
            return arg.strip('"<>').strip() or None
    return None


@dataclass
class Parsed:
    sections: list[Section]
    includes: list[str]


def parse(text: str, file: Path, ours: bool = False) -> Parsed:
    inside = block_lines(text) if not ours else set()
    sections: list[Section] = []
    includes: list[str] = []
    current: tuple[str, tuple[str, ...], int, bool] | None = None
    body: list[tuple[str, str]] = []
    in_comment = False

    def close() -> None:
        if current is not None:
            name, options, line_no, mine = current
            sections.append(Section(name, options, tuple(body), file, line_no, mine))

    for n, raw in enumerate(text.split("\n"), start=1):
        line, in_comment = _strip_comment(raw, in_comment)
        line = line.strip()
        if not line:
            continue
        target = include_target(line)
        if target is not None:
            includes.append(target)
            continue
        if line.startswith("#"):
            continue
        head = _header(line)
        if head is not None:
            close()
            current, body = (head[0], head[1], n, ours or n in inside), []
            continue
        if "=" in line:
            key, _, value = line.partition("=")
            body.append((key.strip(), value.lstrip(">").strip()))
    close()
    return Parsed(sections, includes)


def resolve(etc: Path, target: str) -> list[Path]:
    """Files an include names: relative to Asterisk's config folder, wildcards expanded."""
    path = Path(target) if target.startswith("/") else etc / target
    if any(c in target for c in "*?["):
        return [Path(p) for p in sorted(glob.glob(str(path)))]
    return [path]


def is_ours(path: Path) -> bool:
    return path.name.startswith(OURS_PREFIX)


def walk(etc: Path, root: str, read: Callable[[Path], bytes | None]) -> Iterator[tuple[Path, Parsed]]:
    """Every file Asterisk reads for ``root`` (the file itself, then its includes, in order)."""
    seen: set[Path] = set()

    def visit(path: Path) -> Iterator[tuple[Path, Parsed]]:
        if path in seen:
            return
        seen.add(path)
        data = read(path)
        if data is None:
            return
        parsed = parse(decode(data), path, ours=is_ours(path))
        yield path, parsed
        for target in parsed.includes:
            for child in resolve(etc, target):
                yield from visit(child)

    yield from visit(etc / root)


def inherited(section: Section, key: str, by_name: dict[str, list[Section]]) -> str | None:
    """A setting of the section or, when it has none, of its templates."""
    own = section.get(key)
    if own is not None:
        return own
    for parent in section.parents:
        for candidate in by_name.get(parent, []):
            if candidate.is_template and candidate is not section:
                found = inherited(candidate, key, by_name)
                if found is not None:
                    return found
    return None


def by_name(sections: list[Section]) -> dict[str, list[Section]]:
    found: dict[str, list[Section]] = {}
    for s in sections:
        found.setdefault(s.name, []).append(s)
    return found


def section_type(section: Section, by_name: dict[str, list[Section]]) -> str | None:
    """A PJSIP section's type, following its templates."""
    return inherited(section, "type", by_name)


# -- writing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    path: Path
    kind: str  # the Asterisk module it configures (pjsip, extensions, ...)
    before: bytes | None  # None: the file does not exist yet
    after: bytes | None  # None: the file is removed
    what: str  # for people


def apply(etc: Path, changes: list[Change], backup_root: Path, stamp: str) -> Path | None:
    """Back up every file ``changes`` touch into backup_root/stamp, then write them in order.

    Returns the backup folder (None when only new files were written)."""
    backup: Path | None = None
    if any(c.before is not None for c in changes):
        backup_root.mkdir(mode=0o700, exist_ok=True)
        backup, n = backup_root / stamp, 1
        while backup.exists():
            n += 1
            backup = backup_root / f"{stamp}-{n}"
        backup.mkdir(mode=0o700)
        for c in changes:
            if c.before is not None:
                shutil.copy2(c.path, backup / c.path.name)
    folder = etc.stat()
    for c in changes:
        if c.after is None:
            c.path.unlink()
        else:
            _write(c.path, c.after, (folder.st_uid, folder.st_gid))
    return backup


def _write(path: Path, data: bytes, default_owner: tuple[int, int]) -> None:
    """Replace ``path`` atomically, keeping its mode and owner (new files: 0640, the folder's owner)."""
    try:
        st = path.stat()
        mode, owner = stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o640, default_owner
    tmp = path.with_name(f".{path.name}.novofon-bridge-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    if os.geteuid() == 0:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def control_socket(etc: Path) -> Path:
    """Asterisk's control socket, from asterisk.conf (astrundir, astctl) or Debian's defaults."""
    rundir, name = "/var/run/asterisk", "asterisk.ctl"
    try:
        text = decode((etc / "asterisk.conf").read_bytes())
    except OSError:
        text = ""
    for s in parse(text, etc / "asterisk.conf").sections:
        if s.name == "directories":
            rundir = s.get("astrundir") or rundir
        if s.name == "files":
            name = s.get("astctl") or name
    return Path(rundir) / name
