"""Novofon's settings: the cloud's notifications to us (``novofon``) and the CRM webhooks we sign
the way Novofon does (``sinks.webhooks``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.calls.records import Event
from bridge.errors import SettingsError
from bridge.http import peers
from bridge.i18n import tr
from bridge.integrations import settings_checks


@dataclass(frozen=True)
class NovofonSettings:
    api_secret: str = field(default="", repr=False)
    sms_token: str = field(default="", repr=False)
    # Novofon 2.0 notifications (no Signature): /call?token=<this>&type=... — see README.
    notifications_token: str = field(default="", repr=False)
    # Recordings served with expiring signed links (README "Recordings for CRMs"): on when both
    # the public base URL (what nginx exposes) and the signing key are set.
    recordings_url: str = ""
    recordings_key: str = field(default="", repr=False)
    recordings_link_ttl: float = 7 * 86400.0
    # /call refuses a notification whose call_start is further than this from now (seconds): a
    # captured one cannot be replayed later (what was received is remembered at least 2x as long).
    replay_window: float = 86400.0
    # Only these addresses may post to /call and /sms (IPs or CIDRs); empty: any address.
    allowed_ips: list[str] = field(default_factory=list)

    @property
    def recording_links(self) -> bool:
        return bool(self.recordings_url and self.recordings_key)

    def validate(self) -> None:
        if self.recordings_url:
            settings_checks.url("recordings_url", self.recordings_url)
        if self.recordings_url and len(self.recordings_key) < 16:
            raise SettingsError(
                "recordings_key", "expected at least 16 random characters (links are signed with it)"
            )
        if not 60 <= self.recordings_link_ttl <= 365 * 86400:
            raise SettingsError("recordings_link_ttl", "expected seconds, 60..31536000")
        if self.notifications_token and len(self.notifications_token) < 16:
            raise SettingsError(
                "notifications_token",
                tr("нужно не меньше 16 случайных символов", "expected at least 16 random characters"),
            )
        if not 60 <= self.replay_window <= 30 * 86400:
            raise SettingsError(
                "replay_window",
                tr(
                    "ожидается число секунд 60..2592000 (по умолчанию 86400, сутки)",
                    "expected seconds, 60..2592000 (default 86400, one day)",
                ),
            )
        try:
            peers.networks(self.allowed_ips)
        except ValueError as e:
            raise SettingsError(
                "allowed_ips", tr(f"ожидаются IP-адреса или сети (CIDR): {e}", str(e))
            ) from None


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
                raise SettingsError(
                    "events",
                    tr(
                        f"неизвестное событие {ev!r} (ожидается NOTIFY_START, ...)",
                        f"unknown event {ev!r} (expected NOTIFY_START, ...)",
                    ),
                )


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
            raise SettingsError(
                f"[{i}].name",
                tr(f"имя вебхука {name!r} уже занято", f"duplicate webhook name {name!r}"),
            )
        names.add(name)
