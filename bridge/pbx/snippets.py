"""Our shipped Asterisk snippets (asterisk-conf/novofon-bridge_*.conf): where they are, the secrets
put in, the trunk bound to the office's UDP transport, and the split into sections (chunks) that
the installer keeps, leaves out or files into FreePBX's custom files."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bridge.pbx.conf import Section, by_name, inherited, parse, section_type

AMI_PLACEHOLDER = "CHANGE_ME_AMI_SECRET"
ARI_PLACEHOLDER = "CHANGE_ME_ARI_PASSWORD"
TRANSPORT_PLACEHOLDER = "CHANGE_ME_UDP_TRANSPORT"


@dataclass(frozen=True)
class Secrets:
    ami_secret: str = field(repr=False)
    ari_password: str = field(repr=False)


def find(first: str) -> Path | None:
    """asterisk-conf/ of this checkout, or the copy deploy/install.sh puts beside the venv."""
    for candidate in (Path(__file__).resolve().parents[2], Path(sys.prefix).resolve().parent):
        if (candidate / "asterisk-conf" / first).is_file():
            return candidate / "asterisk-conf"
    return None


def render(text: str, secrets: Secrets) -> str:
    """The secrets in place of the placeholders, on setting lines only (comments keep the name)."""
    return "\n".join(
        line
        if line.lstrip().startswith(";")
        else line.replace(AMI_PLACEHOLDER, secrets.ami_secret).replace(ARI_PLACEHOLDER, secrets.ari_password)
        for line in text.split("\n")
    )


def name_transport(lines: list[str], theirs: list[Section]) -> str | None:
    """Bind the trunk to the office's first UDP transport by name (Asterisk then takes the media
    address from it instead of looking up the host's own address, by DNS, on every call); with
    none, the line is commented out. Returns a note for the sysadmin, or None."""
    names = by_name(theirs)
    udp = [
        s.name
        for s in theirs
        if not s.is_template
        and section_type(s, names) == "transport"
        and (inherited(s, "protocol", names) or "udp").lower() == "udp"
    ]
    for i, line in enumerate(lines):
        if line.startswith("transport=") and TRANSPORT_PLACEHOLDER in line:
            lines[i] = f"transport={udp[0]}" if udp else f";{line}"
    if not udp and any(section_type(s, names) == "transport" for s in theirs):
        return "в pjsip.conf нет UDP-транспорта: Novofon принимает SIP по UDP, добавьте его"
    return None


@dataclass(frozen=True)
class Chunk:
    section: Section
    first: int  # 0-based line range in the snippet: leading comments, header, body, blank lines
    stop: int


def chunks(text: str, file: Path) -> list[Chunk]:
    lines = text.split("\n")
    sections = parse(text, file, ours=True).sections
    starts: list[int] = []
    for s in sections:
        i = s.line - 1
        floor = starts[-1] + 1 if starts else 0
        while i - 1 >= floor and lines[i - 1].strip().startswith(";"):
            i -= 1
        starts.append(i)
    stops = [*starts[1:], len(lines)]
    return [Chunk(s, a, b) for s, a, b in zip(sections, starts, stops, strict=True)]


def chunk_text(lines: list[str], chunk: Chunk) -> list[str]:
    part = lines[chunk.first : chunk.stop]
    while part and not part[-1].strip():
        part.pop()
    return part
