"""``novofon-bridge asterisk install | uninstall``: our Asterisk settings on a PBX that has its own.

Plain Asterisk: each snippet of asterisk-conf/ is copied to /etc/asterisk as
``novofon-bridge_<module>.conf`` and the module's own file (pjsip.conf, extensions.conf, ...) gets
one marked block holding an ``#include`` line at its end. FreePBX (``freepbx=True``): the snippets'
sections are written, as marked blocks, only into the ``*_custom.conf`` files FreePBX leaves to
admins. No existing line is ever rewritten or moved; every touched file is backed up first; a
section name we need that the PBX already uses stops the install before anything is written.

This module only plans and writes files; the CLI (bridge/cli/asterisk.py) reads the secrets and
reloads Asterisk. Messages are for the sysadmin, in Russian.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.pbx import snippets as snippets_mod
from bridge.pbx.conf import (
    Change,
    Parsed,
    Section,
    appended,
    blocks,
    by_name,
    decode,
    encode,
    make_block,
    resolve,
    section_type,
    walk,
    without_blocks,
)
from bridge.pbx.conf import (
    apply as conf_apply,
)
from bridge.pbx.snippets import Secrets

BACKUP_DIR = "novofon-bridge-backup"
BLOCK_NOTE = "added by novofon-bridge asterisk install; novofon-bridge asterisk uninstall removes this block"
# With --freepbx inbound calls follow FreePBX's inbound routes, not our DID table.
FREEPBX_SKIP = frozenset({"from-novofon", "novofon-routes"})
FREEPBX_TRUNK_CONTEXT = "from-pstn"
TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})

Reader = Callable[[Path], bytes | None]
Tree = list[tuple[Path, Parsed]]


@dataclass(frozen=True)
class Kind:
    """One Asterisk module we configure."""

    key: str
    root: str  # the module's own file
    reload: str  # the CLI command that applies it
    label: str  # for people
    typed: bool = False  # PJSIP: one name may hold several objects of different types
    on_by_default: bool | None = None  # whether the module runs without "enabled" in [general]
    freepbx: tuple[tuple[str, str], ...] = ()  # (section type or "*", FreePBX custom file)
    freepbx_required: bool = True

    @property
    def snippet(self) -> str:
        return f"novofon-bridge_{self.key}.conf"


KINDS = (
    Kind(
        "pjsip",
        "pjsip.conf",
        "module reload res_pjsip.so",
        "PJSIP",
        typed=True,
        freepbx=(
            ("registration", "pjsip.registration_custom.conf"),
            ("auth", "pjsip.auth_custom.conf"),
            ("aor", "pjsip.aor_custom.conf"),
            ("endpoint", "pjsip.endpoint_custom.conf"),
            ("identify", "pjsip.identify_custom.conf"),
        ),
    ),
    Kind(
        "extensions",
        "extensions.conf",
        "dialplan reload",
        "диалплан",
        freepbx=(("*", "extensions_custom.conf"),),
    ),
    Kind(
        "manager",
        "manager.conf",
        "manager reload",
        "AMI",
        on_by_default=False,
        freepbx=(("*", "manager_custom.conf"),),
    ),
    Kind(
        "ari",
        "ari.conf",
        "module reload res_ari.so",
        "ARI",
        on_by_default=True,
        freepbx=(("*", "ari_additional_custom.conf"),),
        freepbx_required=False,
    ),
    Kind("http", "http.conf", "module reload http", "HTTP-сервер Asterisk", on_by_default=False),
)


class InstallError(Exception):
    """Install or uninstall refused; the message says why and what to do. Nothing was written."""


@dataclass
class Plan:
    etc: Path
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reloads(self) -> list[str]:
        touched = {c.kind for c in self.changes}
        return [k.reload for k in KINDS if k.key in touched]

    def diff(self, hide: Iterable[str] = ()) -> str:
        """Unified diff of every change; each string in ``hide`` (secrets) shown as ********."""
        out: list[str] = []
        for c in self.changes:
            a = _lines(c.before)
            b = _lines(c.after)
            old = str(c.path) if c.before is not None else "/dev/null"
            new = str(c.path) if c.after is not None else "/dev/null"
            out.extend(difflib.unified_diff(a, b, old, new))
        text = "".join(out)
        for secret in hide:
            if secret:
                text = text.replace(secret, "********")
        return text


def _lines(data: bytes | None) -> list[str]:
    if data is None:
        return []
    return [line if line.endswith("\n") else line + "\n" for line in decode(data).splitlines(keepends=True)]


def find_snippets() -> Path:
    found = snippets_mod.find(KINDS[0].snippet)
    if found is None:
        raise InstallError(
            "не найдены файлы asterisk-conf/ (novofon-bridge_*.conf): запустите команду из папки "
            "проекта или переустановите: sudo deploy/install.sh --upgrade"
        )
    return found


def read_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except PermissionError:
        raise InstallError(f"нет прав на чтение {path}: запустите команду от root (sudo)") from None


def _last(theirs: list[Section], section: str, key: str) -> str | None:
    value: str | None = None
    for s in theirs:
        if s.name == section and s.get(key) is not None:
            value = s.get(key)
    return value


def _is_on(kind: Kind, theirs: list[Section]) -> bool:
    value = _last(theirs, "general", "enabled")
    return bool(kind.on_by_default) if value is None else value.lower() in TRUE


# -- install --------------------------------------------------------------------------------------


def installed_modes(etc: Path, read: Reader = read_file) -> set[str]:
    modes: set[str] = set()
    for kind in KINDS:
        data = read(etc / kind.root)
        if data is not None and blocks(decode(data)):
            modes.add("plain")
        for _, custom in kind.freepbx:
            data = read(etc / custom)
            if data is not None and blocks(decode(data)):
                modes.add("freepbx")
    return modes


def plan_install(
    etc: Path, freepbx: bool, secrets: Secrets, snippets: Path, read: Reader = read_file
) -> Plan:
    if not etc.is_dir():
        raise InstallError(f"нет папки {etc}: укажите папку настроек Asterisk (--etc DIR)")
    for value, name in ((secrets.ami_secret, "AMI_SECRET"), (secrets.ari_password, "ARI_PASSWORD")):
        if not value or any(c in value for c in ";\n\r\t []\"'\\"):
            raise InstallError(
                f"{name} пуст или содержит символы, которые Asterisk не прочтёт (; пробел кавычки "
                "скобки \\): задайте другой в /etc/novofon-bridge/env или удалите строку — будет создан новый"
            )
    other = "plain" if freepbx else "freepbx"
    if other in installed_modes(etc, read):
        how = "без --freepbx" if freepbx else "с --freepbx"
        raise InstallError(
            f"novofon-bridge уже подключён к {etc} {how}: "
            f"сначала novofon-bridge asterisk uninstall --etc {etc}"
        )
    plan = Plan(etc)
    conflicts: list[str] = []
    for kind in KINDS:
        if freepbx and not kind.freepbx:
            continue
        text = snippets_mod.render((snippets / kind.snippet).read_text(encoding="utf-8"), secrets)
        tree = list(walk(etc, kind.root, read))
        theirs = [s for _, parsed in tree for s in parsed.sections if not s.ours]
        lines = text.split("\n")
        if kind.key == "pjsip" and (note := snippets_mod.name_transport(lines, theirs)):
            plan.notes.append(note)
        keep, drop, switched = [], [], []
        for chunk in snippets_mod.chunks(text, snippets / kind.snippet):
            name = chunk.section.name
            if name == "general":
                if _is_on(kind, theirs):
                    drop.append(chunk)
                    continue
                if freepbx:
                    plan.notes.append(
                        f"{kind.label} выключен в {kind.root}: включите его в настройках FreePBX"
                    )
                    drop.append(chunk)
                    continue
                switched.append(
                    f"{kind.label} был выключен в {kind.root}: {kind.snippet} включает его (только 127.0.0.1)"
                )
                if not any(s.name == "general" for s in theirs):
                    lines[chunk.section.line - 1] = "[general]"  # nothing to add to: a section of its own
            elif freepbx and name in FREEPBX_SKIP:
                drop.append(chunk)
                continue
            keep.append(chunk)
        conflicts += _conflicts(kind, theirs, [c.section for c in keep if c.section.name != "general"], etc)
        _check_notes(kind, theirs, plan)
        if not keep:
            continue
        if freepbx:
            _plan_freepbx(kind, etc, tree, lines, keep, plan, read)
        else:
            for chunk in reversed(drop):
                del lines[chunk.first : chunk.stop]
            _plan_plain(kind, etc, tree, "\n".join(lines), plan, read, switched)
    if conflicts:
        raise InstallError(
            "novofon-bridge не подключён: нужные ему разделы уже есть в настройках Asterisk:\n"
            + "\n".join(f"  - {c}" for c in conflicts)
            + "\nnovofon-bridge не меняет чужие строки, а два раздела с одним именем Asterisk не примет. "
            "Переименуйте или удалите эти разделы и запустите команду снова. Ничего не изменено."
        )
    plan.changes.sort(key=lambda c: not c.path.name.startswith("novofon-bridge_"))  # included files first
    return plan


def _conflicts(kind: Kind, theirs: list[Section], ours: list[Section], etc: Path) -> list[str]:
    names = by_name(theirs)
    found: list[str] = []
    for mine in ours:
        for other in names.get(mine.name, []):
            if other.is_template or other.adds:
                continue
            label = f"[{mine.name}]"
            if kind.typed:
                their_type = section_type(other, names)
                if their_type is not None and their_type != mine.get("type"):
                    continue
                label += f" (type={mine.get('type')})"
            same = other.body == mine.body
            found.append(
                f"{other.where(etc)}: такой же раздел {label} "
                "(похоже, от прежней установки копированием asterisk-conf/)"
                if same
                else f"{other.where(etc)}: раздел {label} с другим содержимым"
            )
    return found


def _check_notes(kind: Kind, theirs: list[Section], plan: Plan) -> None:
    names = by_name(theirs)
    if kind.key == "pjsip" and not any(
        section_type(s, names) == "transport" for s in theirs if not s.is_template
    ):
        plan.notes.append(
            "в pjsip.conf нет ни одного транспорта (type=transport): Asterisk не слушает SIP. Добавьте, "
            "например: [transport-udp] type=transport protocol=udp bind=0.0.0.0:5060"
        )
    stamps = (_last(theirs, "general", "timestampevents") or "").lower()
    if kind.key == "manager" and _is_on(kind, theirs) and stamps not in TRUE:
        plan.notes.append(
            "в manager.conf не включён timestampevents = yes: время звонков будет по часам novofon-bridge"
        )


def _includes(tree: Tree, etc: Path) -> set[Path]:
    found: set[Path] = set()
    for _, parsed in tree:
        for target in parsed.includes:
            found.update(resolve(etc, target))
    return found


def _plan_plain(
    kind: Kind, etc: Path, tree: Tree, text: str, plan: Plan, read: Reader, switched: list[str]
) -> None:
    snippet = etc / kind.snippet
    exists = read(snippet) is not None
    if not exists:
        plan.changes.append(Change(snippet, kind.key, None, encode(text), "создан"))
        plan.notes.extend(switched)
    if snippet in _includes(tree, etc):
        return
    if exists:
        plan.notes.append(f"{kind.snippet} уже есть — оставлен как есть, подключается")
    root = etc / kind.root
    before = read(root)
    block = make_block(BLOCK_NOTE, [f'#include "{kind.snippet}"'], created=before is None)
    what = "создан" if before is None else f'в конец добавлена строка #include "{kind.snippet}"'
    plan.changes.append(Change(root, kind.key, before, appended(before, block), what))


def _plan_freepbx(
    kind: Kind,
    etc: Path,
    tree: Tree,
    lines: list[str],
    keep: list[snippets_mod.Chunk],
    plan: Plan,
    read: Reader,
) -> None:
    files = dict(kind.freepbx)
    groups: dict[str, list[str]] = {}
    for chunk in keep:
        part = snippets_mod.chunk_text(lines, chunk)
        if (chunk.section.name, chunk.section.get("type")) == ("novofon", "endpoint"):
            part = [f"context={FREEPBX_TRUNK_CONTEXT}" if p.startswith("context=") else p for p in part]
        dest = files.get(chunk.section.get("type") or "", files.get("*", ""))
        groups.setdefault(dest, []).extend([*part, ""])
    included = _includes(tree, etc)
    for dest, part in groups.items():
        path = etc / dest
        if path not in included:
            if not kind.freepbx_required:
                plan.notes.append(f"{kind.root} не подключает {dest}: пользователь {kind.label} не добавлен")
                continue
            raise InstallError(
                f"{kind.root} не подключает {dest} — это не похоже на FreePBX. Для обычного Asterisk "
                "запустите команду без --freepbx. Ничего не изменено."
            )
        before = read(path)
        if before is not None and blocks(decode(before)):
            continue
        block = make_block(BLOCK_NOTE, part[:-1], created=before is None)
        what = "создан" if before is None else "в конец добавлены разделы novofon-bridge"
        plan.changes.append(Change(path, kind.key, before, appended(before, block), what))


# -- uninstall ------------------------------------------------------------------------------------


def plan_uninstall(etc: Path, read: Reader = read_file) -> Plan:
    if not etc.is_dir():
        raise InstallError(f"нет папки {etc}: укажите папку настроек Asterisk (--etc DIR)")
    plan = Plan(etc)
    for kind in KINDS:
        for name in (kind.root, *(custom for _, custom in kind.freepbx)):
            before = read(etc / name)
            if before is None or not blocks(decode(before)):
                continue
            rest, created = without_blocks(decode(before))
            after = None if created and rest == "" else encode(rest)
            what = "удалён (его создал install)" if after is None else "убран блок novofon-bridge"
            plan.changes.append(Change(etc / name, kind.key, before, after, what))
    for kind in KINDS:
        snippet = etc / kind.snippet
        before = read(snippet)
        if before is not None:
            plan.changes.append(Change(snippet, kind.key, before, None, "удалён"))
    return plan


def apply(plan: Plan, stamp: str | None = None) -> Path | None:
    """Write the plan: backups first (in <etc>/novofon-bridge-backup/<time>), then the files."""
    return conf_apply(plan.etc, plan.changes, plan.etc / BACKUP_DIR, stamp or time.strftime("%Y%m%d-%H%M%S"))
