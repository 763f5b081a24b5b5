"""Bitrix24's settings (config.yaml ``sinks.bitrix24``): the telephony sink, events, directory sync."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.errors import SettingsError
from bridge.integrations import settings_checks

RESERVED_PATHS = ("/call", "/sms", "/smsc", "/status", "/healthz")


@dataclass(frozen=True)
class BitrixApp:
    portal_url: str = ""  # https://example.bitrix24.ru
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)  # from the app's installation
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"


@dataclass(frozen=True)
class Bitrix24Settings:
    enabled: bool = False
    webhook_url: str = field(default="", repr=False)  # https://portal/rest/1/CODE/
    app: BitrixApp = field(default_factory=BitrixApp)
    default_user_id: str = ""
    crm_create: bool = True
    show_card: bool = True
    attach_recordings: bool = True
    rate: float = 2.0
    burst: float = 50.0
    # Bitrix24 -> us: outgoing webhook / application events (employee sync, click-to-call).
    application_token: str = field(default="", repr=False)
    events_path: str = "/api/bitrix/webhook"
    sync_interval: float = 3600.0
    telegram_field: str = ""

    def validate(self) -> None:
        if not self.enabled:
            return
        if self.webhook_url:
            settings_checks.url("webhook_url", self.webhook_url)
        elif self.app.portal_url:
            settings_checks.url("app.portal_url", self.app.portal_url)
            for name in ("client_id", "client_secret", "refresh_token"):
                if not getattr(self.app, name):
                    raise SettingsError(f"app.{name}", "required for the application mode")
        else:
            raise SettingsError(
                "webhook_url",
                "expected the incoming webhook URL (https://PORTAL/rest/USER_ID/CODE/) or an app: section",
            )
        if not self.events_path.startswith("/") or self.events_path in RESERVED_PATHS:
            raise SettingsError("events_path", "expected a path of its own, e.g. /api/bitrix/webhook")
        if self.sync_interval < 0:
            raise SettingsError("sync_interval", "expected seconds >= 0 (0: no periodic sync)")
        if self.rate <= 0 or self.burst < 1:
            raise SettingsError("rate", "expected rate > 0 and burst >= 1")
