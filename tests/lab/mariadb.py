"""A private MariaDB server for tests: FreePBX's CDR database (asteriskcdrdb.cdr) on loopback.

Debian's mariadb-server is installed when missing (as debootstrap is for the Asterisk lab); the
server itself runs from a temporary folder on a free port, is never the system's service, and is
stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

USER, PASSWORD, DATABASE = "freepbxuser", "lab-cdr-password", "asteriskcdrdb"

# FreePBX 17's asteriskcdrdb.cdr (the columns cdr_adaptive_odbc fills).
CDR_TABLE = """
CREATE TABLE cdr (
  calldate datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  clid varchar(80) NOT NULL DEFAULT '',
  src varchar(80) NOT NULL DEFAULT '',
  dst varchar(80) NOT NULL DEFAULT '',
  dcontext varchar(80) NOT NULL DEFAULT '',
  channel varchar(80) NOT NULL DEFAULT '',
  dstchannel varchar(80) NOT NULL DEFAULT '',
  lastapp varchar(80) NOT NULL DEFAULT '',
  lastdata varchar(80) NOT NULL DEFAULT '',
  duration int(11) NOT NULL DEFAULT '0',
  billsec int(11) NOT NULL DEFAULT '0',
  disposition varchar(45) NOT NULL DEFAULT '',
  amaflags int(11) NOT NULL DEFAULT '0',
  accountcode varchar(20) NOT NULL DEFAULT '',
  uniqueid varchar(32) NOT NULL DEFAULT '',
  userfield varchar(255) NOT NULL DEFAULT '',
  did varchar(50) NOT NULL DEFAULT '',
  recordingfile varchar(255) NOT NULL DEFAULT '',
  cnum varchar(80) NOT NULL DEFAULT '',
  cnam varchar(80) NOT NULL DEFAULT '',
  outbound_cnum varchar(80) NOT NULL DEFAULT '',
  outbound_cnam varchar(80) NOT NULL DEFAULT '',
  dst_cnam varchar(80) NOT NULL DEFAULT '',
  linkedid varchar(32) NOT NULL DEFAULT '',
  peeraccount varchar(80) NOT NULL DEFAULT '',
  sequence int(11) NOT NULL DEFAULT '0',
  KEY calldate (calldate)
) DEFAULT CHARSET=utf8mb4;
"""


def _binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def ensure_installed() -> tuple[str, str]:
    """mariadbd and mariadb-install-db, installed from Debian when missing (needs root)."""
    if not (_binary("mariadbd") and _binary("mariadb-install-db")):
        print("[mariadb] installing mariadb-server (apt-get)", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mariadb-server"],
            check=True,
            env=env,
        )
    server, install = _binary("mariadbd"), _binary("mariadb-install-db")
    if not server or not install:
        raise RuntimeError("mariadbd is still missing after apt-get install mariadb-server")
    return server, install


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mariadb(folder: Path) -> Iterator[str]:
    """Run a MariaDB with an empty FreePBX CDR table; yields the DSN for asterisk.cdr.mysql_dsn."""
    server, install = ensure_installed()
    data, sock, port = folder / "data", folder / "mysqld.sock", _free_port()
    data.mkdir(parents=True)
    common = ["--no-defaults", f"--datadir={data}", "--user=root"]
    subprocess.run(
        [install, *common, "--auth-root-authentication-method=socket", "--skip-test-db"],
        check=True,
        capture_output=True,
    )
    log = (folder / "mariadb.log").open("wb")
    proc = subprocess.Popen(
        [server, *common, f"--socket={sock}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--pid-file={folder / 'mariadb.pid'}", "--skip-log-bin", "--innodb-buffer-pool-size=16M"],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        client = [_binary("mariadb") or "mariadb", "--no-defaults", f"--socket={sock}", "-uroot"]
        deadline = time.monotonic() + 60
        while subprocess.run([*client, "-e", "SELECT 1"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not start; see {folder / 'mariadb.log'}")
            time.sleep(0.2)
        sql = (
            f"CREATE DATABASE {DATABASE}; USE {DATABASE}; {CDR_TABLE}"
            f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
            f"GRANT SELECT, INSERT ON {DATABASE}.* TO '{USER}'@'127.0.0.1';"
        )
        subprocess.run([*client, "-e", sql], check=True, capture_output=True)
        yield f"mysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
