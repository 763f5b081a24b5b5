"""Bitrix24's settings (config.yaml ``sinks.bitrix24``): the telephony sink, events, directory sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from bridge.errors import SettingsError
from bridge.integrations import settings_checks

RESERVED_PATHS = ("/call", "/sms", "/smsc", "/status", "/healthz")


@dataclass(frozen=True)
class BitrixApp:
    portal_url: str = ""  # https://example.bitrix24.ru
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    # Optional: ONAPPINSTALL brings the tokens (kept in the state database); a refresh token pasted
    # here is used only until then.
    refresh_token: str = field(default="", repr=False)
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    member_id: str = ""  # the portal's member_id: ONAPPINSTALL from any other is refused

    @property
    def domain(self) -> str:
        """The portal's host as Bitrix24 names it in ``auth[domain]`` (example.bitrix24.ru)."""
        return urlparse(self.portal_url).netloc.lower()


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
    # Application mode: the https URL nginx exposes for this daemon; event.bind registers
    # public_url + events_path as the handler of ONEXTERNALCALLSTART, ONUSERADD, ONUSERUPDATE.
    public_url: str = ""
    sync_interval: float = 3600.0
    telegram_field: str = ""

    @property
    def app_mode(self) -> bool:
        return not self.webhook_url and bool(self.app.portal_url)

    @property
    def handler_url(self) -> str:
        """Where Bitrix24 posts events to us (event.bind's handler); empty without public_url."""
        return self.public_url.rstrip("/") + self.events_path if self.public_url else ""

    def validate(self) -> None:
        if not self.enabled:
            return
        if self.webhook_url and self.app.portal_url:
            raise SettingsError(
                "webhook_url", "set either app.portal_url (an application) or webhook_url, not both"
            )
        if self.webhook_url:
            settings_checks.url("webhook_url", self.webhook_url)
        elif self.app.portal_url:
            # client_id / client_secret may come later: Bitrix24 shows them only after saving the
            # application, which is when it posts ONAPPINSTALL; they are needed to renew tokens.
            settings_checks.url("app.portal_url", self.app.portal_url)
        else:
            raise SettingsError(
                "app.portal_url",
                "expected a local application (app: portal_url, client_id, client_secret) "
                "or an incoming webhook URL (webhook_url: https://PORTAL/rest/USER_ID/CODE/)",
            )
        if self.public_url:
            settings_checks.url("public_url", self.public_url)
        if not self.events_path.startswith("/") or self.events_path in RESERVED_PATHS:
            raise SettingsError("events_path", "expected a path of its own, e.g. /api/bitrix/webhook")
        if self.sync_interval < 0:
            raise SettingsError("sync_interval", "expected seconds >= 0 (0: no periodic sync)")
        if self.rate <= 0 or self.burst < 1:
            raise SettingsError("rate", "expected rate > 0 and burst >= 1")
