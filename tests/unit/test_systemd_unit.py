"""The shipped systemd unit (deploy/novofon-bridge.service) is locked down and still lets the daemon
write its state and read the recordings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "novofon-bridge.service"


def directives(section: str = "Service") -> dict[str, list[str]]:
    """Key -> every value given (a unit may repeat a key, e.g. SystemCallFilter=)."""
    out: dict[str, list[str]] = {}
    current = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    assert key in d, f"{key}= is missing from {UNIT.name}"
    return d[key][-1]


def test_the_unit_is_locked_down() -> None:
    d = directives()
    expected = {
        "UMask": "0077",  # outbox.sqlite3 and records.jsonl are 0600
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
        "User": "novofon-bridge",
    }
    assert {k: one(d, k) for k in expected} == expected
    assert d["SystemCallFilter"][0] == "@system-service"
    assert int(one(d, "LimitNOFILE")) >= 16384


def test_the_daemon_can_still_write_its_state_and_read_recordings() -> None:
    d = directives()
    assert one(d, "StateDirectory") == "novofon-bridge"  # /var/lib/novofon-bridge, writable
    assert "-/var/lib/novofon-bridge" in d["ReadWritePaths"]
    assert "-/var/spool/asterisk" in d["ReadOnlyPaths"]
    assert "asterisk" in one(d, "SupplementaryGroups").split()  # group read on recordings
    assert "/var/spool" not in " ".join(d.get("ReadWritePaths", []))
    assert "InaccessiblePaths" not in d


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_scores_at_most_2() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= 2.0, out.stdout
