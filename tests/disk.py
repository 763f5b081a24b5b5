"""A small real file system that tests fill up and free: a size-limited tmpfs mounted for the test.

Mounting needs root, as the Asterisk lab does (``make test`` runs as root on these machines).
SQLite then fails exactly as on a full disk in production ("database or disk is full").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

FILLER = ".filler"


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Take every free byte (the file system then answers ENOSPC to everybody)."""
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * 65536
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    if len(block) == 1:
                        return
                    block = block[: len(block) // 2]
        finally:
            os.close(fd)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / FILLER).unlink()


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int = 2048) -> Iterator[SmallDisk]:
    """A ``size_kb`` tmpfs at ``path`` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise AssertionError("the disk-full tests mount a small tmpfs: run them as root (as the lab)")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield SmallDisk(path)
    finally:
        # Lazy: a connection a failed test left open must not leave the mount behind.
        subprocess.run(["umount", "-l", str(path)], check=False)
