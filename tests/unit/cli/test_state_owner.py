"""`sudo novofon-bridge outbox|jobs|employees` must not leave root-owned state the service
(User=novofon-bridge) cannot open: files root creates are handed to the state directory's owner."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.main import main
from bridge.cli.state import database_files, hand_over
from bridge.outbox.store import OutboxStore

SERVICE_UID = SERVICE_GID = 65534  # stands in for the novofon-bridge system user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as `sudo novofon-bridge ...` has")

# The daemon opening the database as the service user: WAL mode, a write, a checkpoint.
DAEMON = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS service_probe (x)")
db.execute("INSERT INTO service_probe VALUES (1)")
db.execute("PRAGMA wal_checkpoint(PASSIVE)")
"""


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state directory owned by the service user, where that user can reach it (/tmp)."""
    path = Path(tempfile.mkdtemp(prefix="novofon-state-", dir="/tmp"))
    os.chown(path, SERVICE_UID, SERVICE_GID)
    os.chmod(path, 0o750)
    yield path
    shutil.rmtree(path)


def service_can_open(db: Path) -> subprocess.CompletedProcess[str]:
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python, "a system python3 runs the service-user probe"
    return subprocess.run(
        [python, "-I", "-c", DAEMON, str(db)],
        user=SERVICE_UID,
        group=SERVICE_GID,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=30,
    )


def write_config(tmp_path: Path, state: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage:\n  dir: {state}\ndirectory:\n  employees:\n    '101': {{name: Иван}}\n")
    return cfg


def test_the_probe_sees_the_problem(state_dir: Path) -> None:
    """The control: a database root creates and leaves as it is breaks the service."""
    OutboxStore(state_dir / "outbox.sqlite3").close()
    assert (state_dir / "outbox.sqlite3").stat().st_uid == 0
    assert service_can_open(state_dir / "outbox.sqlite3").returncode != 0


@pytest.mark.parametrize(
    "command", [["employees"], ["employees", "link", "101"], ["outbox"], ["jobs"], ["outbox", "retry"]]
)
def test_cli_run_as_root_leaves_the_database_to_the_service_user(
    tmp_path: Path, state_dir: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, state_dir)
    if command[0] != "employees":  # outbox/jobs open an existing database: the daemon made it
        assert main(["employees", "-c", str(cfg)]) == 0
    assert main([*command, "-c", str(cfg)]) == 0, capsys.readouterr()
    files = sorted(state_dir.iterdir())
    assert files, "the command created the database"
    for f in files:
        st = f.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (SERVICE_UID, SERVICE_GID, 0o600), f
    probe = service_can_open(state_dir / "outbox.sqlite3")
    assert probe.returncode == 0, probe.stderr


def test_while_open_the_wal_files_are_the_service_users_too(state_dir: Path) -> None:
    """-wal/-shm exist while a connection is open: a daemon starting meanwhile opens them."""
    db = state_dir / "outbox.sqlite3"
    store = OutboxStore(db)
    try:
        moved = hand_over(db)
        assert set(moved) == {f for f in database_files(db) if f.exists()} and len(moved) == 3
        assert service_can_open(db).returncode == 0
    finally:
        store.close()


def test_nothing_is_handed_over_in_a_root_owned_directory(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    OutboxStore(db).close()
    assert hand_over(db) == [] and db.stat().st_uid == 0
