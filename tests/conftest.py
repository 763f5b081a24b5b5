"""Fixtures: the real Asterisk lab (session), AMI handles on its instances, an in-process daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge import config as config_mod
from bridge.app import App
from bridge.config import Config
from bridge.pbx.ami import AmiConnection
from tests.helpers import MemorySink
from tests.lab import lab as lab_mod
from tests.lab.calls import open_instance

REPO = Path(__file__).resolve().parents[1]
# The CLI reads /etc/novofon-bridge/env; tests never take a machine's real secrets from there.
os.environ.setdefault("NOVOFON_BRIDGE_ENV", os.devnull)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "profiles(*names): run the test on each of these lab profiles (plain, freepbx); "
        "without it a test runs on the plain profile",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("profiles")
    if marker is not None and "lab_profile" in metafunc.fixturenames:
        unknown = set(marker.args) - set(lab_mod.PROFILES)
        if unknown or not marker.args:
            raise pytest.UsageError(f"profiles{marker.args}: known profiles are {lab_mod.PROFILES}")
        metafunc.parametrize("lab_profile", marker.args, ids=[f"@{p}" for p in marker.args])


def _profile_of(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("lab_profile", "plain")) if callspec else "plain"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests grouped by lab profile (plain first, in collection order): the lab restarts once per
    profile, not once per test."""
    items.sort(key=lambda item: lab_mod.PROFILES.index(_profile_of(item)))


@pytest.fixture(scope="session")
def lab_session() -> Iterator[lab_mod.Lab]:
    """The three Asterisk instances, started once per profile the session uses. No skipping: a lab
    that cannot start fails the run (CI must exercise real Asterisk)."""
    the_lab = lab_mod.Lab()
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def lab_profile() -> str:
    """The lab profile a test runs on; ``@pytest.mark.profiles(...)`` parametrizes it."""
    return "plain"


@pytest.fixture
def lab(lab_session: lab_mod.Lab, lab_profile: str) -> lab_mod.Lab:
    """The running lab, on this test's profile (switching restarts it: tests are grouped by profile)."""
    lab_session.use_profile(lab_profile)
    return lab_session


def lab_env(lab: lab_mod.Lab, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AMI_HOST": lab_mod.PBX_IP,
        "AMI_PORT": str(lab_mod.AMI_PORT),
        "AMI_SECRET": lab_mod.AMI_SECRET,
        "ARI_URL": f"http://{lab_mod.PBX_IP}:{lab_mod.ARI_PORT}/ari",
        "ARI_PASSWORD": lab_mod.ARI_PASSWORD,
        "NOVOFON_BRIDGE_STATE": str(state),
        "ASTERISK_RECORDINGS": str(lab.recordings_dir),
        "ASTERISK_PBX_RECORDINGS": lab.pbx_recordings_dir,
        "ASTERISK_CDR_CSV": str(lab.cdr_csv),
        "NOVOFON_BRIDGE_HTTP_PORT": "0",  # any free port: daemons in tests never collide
        "NOVOFON_BRIDGE_AGI_PORT": str(lab_mod.AGI_PORT),  # where this lab's dialplan asks (FastAGI)
    }


def lab_config(lab: lab_mod.Lab, state: Path) -> Config:
    """The shipped config.yaml, pointed at the lab through its ${ENV} hooks."""
    return config_mod.load(REPO / "config.yaml", env=lab_env(lab, state))


async def arx(lab: lab_mod.Lab, inst: lab_mod.Instance, command: str) -> str:
    """``asterisk -rx`` without blocking the event loop (the daemon under test shares it)."""
    return await asyncio.to_thread(lab.rx, inst, command)


@pytest.fixture
async def provider(lab: lab_mod.Lab) -> AsyncIterator[AmiConnection]:
    conn = await open_instance(lab_mod.PROVIDER_IP)
    yield conn
    await conn.close()


@pytest.fixture
async def phones(lab: lab_mod.Lab) -> AsyncIterator[AmiConnection]:
    conn = await open_instance(lab_mod.PHONES_IP)
    yield conn
    await conn.close()


@pytest.fixture
async def daemon(lab: lab_mod.Lab, tmp_path: Path) -> AsyncIterator[tuple[App, MemorySink]]:
    """The real daemon (App) on the lab PBX, with a memory sink beside its JSONL and console sinks."""
    sink = MemorySink()
    app = App(lab_config(lab, tmp_path), extra_sinks=[sink])
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop))
    await asyncio.wait_for(app.ami.connected.wait(), 20)
    try:
        yield app, sink
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await hangup_all(lab)


async def hangup_all(lab: lab_mod.Lab) -> None:
    """Tests clean up their calls: hang up whatever is left on every instance, and check."""
    for inst in lab_mod.INSTANCES:
        if inst.name in lab.procs:
            with contextlib.suppress(Exception):
                await arx(lab, inst, "channel request hangup all")
    for inst in lab_mod.INSTANCES:
        if inst.name not in lab.procs:
            continue
        for _ in range(150):
            if "0 active channels" in await arx(lab, inst, "core show channels count"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{inst.name}: calls left over after the test")
