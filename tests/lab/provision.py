"""Provision Asterisk 22 from Debian sid into a cache folder with debootstrap.

The root file system is built once (about a minute) and reused by every later lab start. Two traps
from SPECS.md are handled here: the chroot needs /proc and /dev, and Asterisk must run as root
inside it (it is started without -U/-G by lab.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
PACKAGES = "asterisk,asterisk-modules"


def default_cache() -> Path:
    return Path(os.environ.get("NOVOFON_LAB_CACHE", "/var/cache/novofon-bridge/lab"))


def rootfs(cache: Path | None = None) -> Path:
    return (cache or default_cache()) / "rootfs"


def _log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def _debootstrap() -> str | None:
    return shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")


def _ensure_debootstrap() -> str:
    found = _debootstrap()
    if found:
        return found
    _log("installing debootstrap (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env)
    found = _debootstrap()
    if not found:
        raise SystemExit("debootstrap is still missing after apt-get install")
    return found


def provision(cache: Path | None = None) -> Path:
    """Return the root file system with Asterisk, building it first if needed."""
    cache = cache or default_cache()
    root = rootfs(cache)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "usr/sbin/asterisk").exists():
            return root
        if os.geteuid() != 0:
            raise SystemExit("the Asterisk lab needs root (debootstrap, chroot, mount)")
        debootstrap = _ensure_debootstrap()
        tmp = cache / "rootfs.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _log(f"debootstrap Debian sid with Asterisk into {tmp} (about a minute)")
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={PACKAGES}", "sid", str(tmp), MIRROR],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sounds = tmp / "usr/share/asterisk/sounds"
        if not (sounds / "en").exists() or (sounds / "en").is_symlink():
            # Debian ships the English prompts as en_US_f_Allison; "en" is what Asterisk looks up.
            (sounds / "en").unlink(missing_ok=True)
            (sounds / "en").symlink_to("en_US_f_Allison")
        tmp.rename(root)
        _log(f"Asterisk lab root ready: {root}")
        return root


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def mount(root: Path) -> None:
    """Bind /proc and /dev into the chroot (idempotent)."""
    for name in ("proc", "dev"):
        point = root / name
        point.mkdir(exist_ok=True)
        if not _mounted(point):
            subprocess.run(["mount", "--bind", f"/{name}", str(point)], check=True)


def _in_use(root: Path) -> bool:
    """Does any process still run inside this chroot (another lab slot, say)?"""
    target = str(root.resolve())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root") == target:
                    return True
            except OSError:
                continue
    return False


def umount(root: Path) -> None:
    """Unbind /proc and /dev, unless another lab still runs in the same root file system."""
    if _in_use(root):
        return
    for name in ("dev", "proc"):
        point = root / name
        if _mounted(point):
            subprocess.run(["umount", "-l", str(point)], check=False)


if __name__ == "__main__":
    print(provision())
