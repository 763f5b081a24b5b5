"""Replays on /call (issue 11, item 2): Novofon signs three fields, so everything else in a captured
notification can be changed; the dedupe key is the signed content and the event, a notification
must be fresh, the memory outlives the window, and Novofon's addresses can be pinned."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bridge.calls.records import sign
from bridge.config import Config, HttpConfig
from bridge.http import peers
from bridge.integrations.novofon.inbound import MAX_VARIANTS
from bridge.integrations.novofon.settings import NovofonSettings
from tests.helpers import base_url, offline_config, running_app

SECRET = "novofon-api-secret"
MSK = ZoneInfo("Europe/Moscow")


def moscow(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(MSK) + delta).strftime("%Y-%m-%d %H:%M:%S")


def end(call_start: str | None = None) -> dict[str, str]:
    return {
        "event": "NOTIFY_END",
        "call_start": call_start or moscow(),
        "pbx_call_id": "in_cloud-1",
        "caller_id": "79581114585",
        "called_did": "74951234567",
        "internal": "101",
        "duration": "15",
        "disposition": "answered",
        "status_code": "16",
        "is_recorded": "0",
        "call_id_with_rec": "",
    }


def config(tmp: Path, **novofon: object) -> Config:
    return offline_config(tmp, novofon=NovofonSettings(api_secret=SECRET, **novofon))  # type: ignore[arg-type]


def stored(app: object) -> list[str]:
    rows = app.store.db.execute("SELECT event FROM records ORDER BY id")  # type: ignore[attr-defined]
    return [r[0] for r in rows]


async def post(
    s: aiohttp.ClientSession,
    url: str,
    data: dict[str, str],
    signature: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    async with s.post(url, data=data, headers={"Signature": signature, **(headers or {})}) as resp:
        return resp.status, await resp.text()


async def test_a_captured_end_replayed_with_altered_unsigned_fields_is_stored_once(tmp_path: Path) -> None:
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        captured = end()
        signature = sign(captured, SECRET)
        assert await post(s, url, captured, signature) == (200, "ok")
        for i in range(30):
            forged = {
                **captured,
                "pbx_call_id": f"in_forged-{i}",
                "duration": str(100 + i),
                "disposition": "busy" if i % 2 else "no answer",
                "internal": str(200 + i),
                "status_code": "17",
                "is_recorded": "1",
                "call_id_with_rec": f"rec-{i}",
            }
            assert await post(s, url, forged, signature) == (200, "ok")  # answered, not stored
        # Moving the boundary between the signed fields keeps the Signature valid: still the same one.
        shifted = {**captured, "caller_id": "7958111458", "called_did": "574951234567"}
        assert await post(s, url, shifted, signature) == (200, "ok")
        assert stored(app) == ["NOTIFY_END"]


async def test_other_events_from_one_signature_are_bounded(tmp_path: Path) -> None:
    """START, INTERNAL, IVR and END sign the same string: each event at most once, and INTERNAL at
    most MAX_VARIANTS phones (a ring group), however many ``internal`` values a replay invents."""
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        captured = end()
        signature = sign(captured, SECRET)
        for event in ("NOTIFY_START", "NOTIFY_IVR", "NOTIFY_END", "NOTIFY_START"):
            assert (await post(s, url, {**captured, "event": event}, signature))[0] == 200
        for ext in range(100, 100 + MAX_VARIANTS + 15):
            data = {**captured, "event": "NOTIFY_INTERNAL", "internal": str(ext)}
            assert (await post(s, url, data, signature))[0] == 200
        events = stored(app)
    assert events.count("NOTIFY_START") == events.count("NOTIFY_IVR") == events.count("NOTIFY_END") == 1
    assert events.count("NOTIFY_INTERNAL") == MAX_VARIANTS


@pytest.mark.parametrize(
    ("delta", "error"),
    [(timedelta(days=-1, minutes=-5), "stale"), (timedelta(days=1, minutes=5), "clock-skew")],
)
async def test_notifications_outside_the_window_are_refused(
    tmp_path: Path, delta: timedelta, error: str
) -> None:
    async with running_app(config(tmp_path)) as app, aiohttp.ClientSession() as s:
        old = end(moscow(delta))
        status, body = await post(s, f"{base_url(app)}/call", old, sign(old, SECRET))
        assert status == 400 and f'"{error}"' in body
        assert stored(app) == []


async def test_the_window_is_configurable(tmp_path: Path) -> None:
    async with running_app(config(tmp_path, replay_window=3600)) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        two_hours = end(moscow(timedelta(hours=-2)))
        assert (await post(s, url, two_hours, sign(two_hours, SECRET)))[0] == 400
        half_hour = end(moscow(timedelta(minutes=-30)))
        assert (await post(s, url, half_hour, sign(half_hour, SECRET)))[0] == 200
        assert stored(app) == ["NOTIFY_END"]


async def test_what_was_received_is_remembered_longer_than_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """outbox.keep_days of half a day must not let a one-day window's notifications come again."""
    cfg = config(tmp_path)
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, keep_days=0.5))
    # A notification from the far edge of the window: 23 h old when it comes, still fresh...
    at_edge = end(moscow(timedelta(hours=-23)))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        assert (await post(s, url, at_edge, sign(at_edge, SECRET)))[0] == 200
        app.housekeep(now=time.time() + 13 * 3600)  # ...keep_days later the hourly housekeeping runs
        assert (await post(s, url, at_edge, sign(at_edge, SECRET)))[0] == 200
        assert stored(app) == ["NOTIFY_END"]  # the replay was recognised, not stored again
        app.housekeep(now=time.time() + 2 * 86400 + 60)  # two windows on, the key may go
        seen = app.store.db.execute("SELECT COUNT(*) FROM inbound_seen").fetchone()[0]
        assert seen == 0


async def test_allowed_ips_through_a_trusted_proxy(tmp_path: Path) -> None:
    cfg = config(tmp_path, allowed_ips=["203.0.113.0/24"], sms_token="t")
    cfg = dataclasses.replace(cfg, http=HttpConfig(port=0, trusted_proxies=["127.0.0.1"]))
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        url = f"{base_url(app)}/call"
        e = end()
        sig = sign(e, SECRET)
        status, body = await post(s, url, e, sig)  # from 127.0.0.1 itself: not Novofon
        assert status == 403 and '"address-not-allowed"' in body
        for xff in ("203.0.113.9, 198.51.100.1", "198.51.100.1"):  # the client's own claim is not believed
            assert (await post(s, url, e, sig, {"X-Forwarded-For": xff}))[0] == 403
        async with s.get(
            f"{base_url(app)}/sms", params={"token": "t"}, headers={"X-Forwarded-For": "1.2.3.4"}
        ) as r:
            assert r.status == 403  # /sms is Novofon's too
        assert stored(app) == []
        assert await post(s, url, e, sig, {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}) == (200, "ok")
        assert stored(app) == ["NOTIFY_END"]


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path: Path) -> None:
    cfg = config(tmp_path, allowed_ips=["203.0.113.0/24"])  # no trusted proxy configured
    async with running_app(cfg) as app, aiohttp.ClientSession() as s:
        e = end()
        status, _ = await post(
            s, f"{base_url(app)}/call", e, sign(e, SECRET), {"X-Forwarded-For": "203.0.113.9"}
        )
        assert status == 403 and stored(app) == []


def test_resolve_takes_the_nearest_untrusted_hop() -> None:
    trusted = peers.networks(["127.0.0.1", "10.0.0.0/8"])
    assert str(peers.resolve("127.0.0.1", "203.0.113.9", trusted)) == "203.0.113.9"
    assert str(peers.resolve("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.1.2.3", trusted)) == "203.0.113.9"
    assert str(peers.resolve("198.51.100.7", "203.0.113.9", trusted)) == "198.51.100.7"
    assert peers.resolve("127.0.0.1", "203.0.113.9, not-an-ip", trusted) is None
    assert str(peers.resolve("::ffff:127.0.0.1", "203.0.113.9", trusted)) == "203.0.113.9"
    with pytest.raises(ValueError, match="not an IP address"):
        peers.networks(["novofon.ru"])
