"""Novofon's settings: the cloud's notifications to us (``novofon``) and the CRM webhooks we sign
the way Novofon does (``sinks.webhooks``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.calls.records import Event
from bridge.errors import SettingsError
from bridge.http import peers
from bridge.integrations import settings_checks


@dataclass(frozen=True)
class NovofonSettings:
    api_secret: str = field(default="", repr=False)
    sms_token: str = field(default="", repr=False)
    # Novofon 2.0 notifications (no Signature): /call?token=<this>&type=... — see README.
    notifications_token: str = field(default="", repr=False)
    # /call refuses a notification whose call_start is further than this from now (seconds): a
    # captured one cannot be replayed later (what was received is remembered at least 2x as long).
    replay_window: float = 86400.0
    # Only these addresses may post to /call and /sms (IPs or CIDRs); empty: any address.
    allowed_ips: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.notifications_token and len(self.notifications_token) < 16:
            raise SettingsError("notifications_token", "expected at least 16 random characters")
        if not 60 <= self.replay_window <= 30 * 86400:
            raise SettingsError("replay_window", "expected seconds, 60..2592000 (default 86400, one day)")
        try:
            peers.networks(self.allowed_ips)
        except ValueError as e:
            raise SettingsError("allowed_ips", str(e)) from None


@dataclass(frozen=True)
class WebhookSettings:
    url: str = ""
    name: str = ""
    secret: str = field(default="", repr=False)
    events: list[str] = field(default_factory=list)

    def validate(self) -> None:
        settings_checks.url("url", self.url)
        known = {e.value for e in Event}
        for ev in self.events:
            if ev not in known:
                raise SettingsError("events", f"unknown event {ev!r} (expected NOTIFY_START, ...)")


def validate_webhooks(hooks: list[WebhookSettings]) -> None:
    """Each hook valid, names unique (a name is the sink's name in the outbox)."""
    names: set[str] = set()
    for i, hook in enumerate(hooks):
        try:
            hook.validate()
        except SettingsError as e:
            raise SettingsError(f"[{i}].{e.key}", e.problem) from None
        name = hook.name or f"webhook{i + 1}"
        if name in names:
            raise SettingsError(f"[{i}].name", f"duplicate webhook name {name!r}")
        names.add(name)
