"""The SMS gateway's settings (config.yaml ``sinks.sms``): SMS after missed calls, and /smsc."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.errors import SettingsError
from bridge.integrations import settings_checks


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = False
    api_url: str = "https://smsc.ru/sys/send.php"
    login: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    sender: str = ""
    template: str = "Здравствуйте! Мы пропустили ваш звонок на {line} и перезвоним вам. {company}"
    company: str = ""
    per_number_interval: float = 86400.0
    min_digits: int = 11  # only full phone numbers (not short codes or hidden callers)
    # /smsc callback (delivery statuses, incoming SMS): closed until callback_token is set; the
    # gateway calls /smsc?token=<callback_token>&charset=utf-8. When callback_secret is set too, the
    # md5/sha1("id:phone:status:<secret>") control hash is checked as well.
    callback_token: str = field(default="", repr=False)
    callback_secret: str = field(default="", repr=False)
    callback_hash: Literal["md5", "sha1"] = "md5"

    def validate(self) -> None:
        if not self.enabled:
            return
        settings_checks.url("api_url", self.api_url)
        if not self.api_key and not (self.login and self.password):
            raise SettingsError("login", "expected login + password, or api_key, for the SMS gateway")
        try:
            self.template.format(line="", company="")
        except (KeyError, IndexError, ValueError) as e:
            raise SettingsError("template", f"only {{line}} and {{company}} can be used ({e})") from None
