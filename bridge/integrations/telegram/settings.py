"""Telegram's settings (config.yaml ``sinks.telegram``): the sink, the bot and their limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from bridge.errors import SettingsError
from bridge.i18n import tr
from bridge.integrations import settings_checks


@dataclass(frozen=True)
class TelegramTemplates:
    """Lines of the call message (HTML; values are escaped before they are put in)."""

    incoming: str = "📞 <b>Входящий звонок</b>"
    outgoing: str = "📤 <b>Исходящий звонок</b>"
    missed: str = "❌ <b>Пропущенный звонок</b>"
    answered: str = "✅ <b>Разговор состоялся</b>"
    not_reached: str = "⚠️ <b>Не дозвонились</b>"
    caller: str = "Кто звонит: {caller}"
    line: str = "На номер: {did}"
    destination: str = "Куда: {destination}"
    employee: str = "Сотрудник: {internal}"
    ringing: str = "Звонит у: {extensions}"
    answered_by: str = "Ответил: {internal}"
    responsible: str = "Ответственный: {employee}"  # the call was routed to them first (AGI)
    result: str = "Итог: {disposition}, разговор {duration}"
    recorded: str = "🎙 Запись разговора ниже"
    recording_too_big: str = (
        "🎙 Запись слишком большая для Telegram ({size_mb} МБ): она на сервере АТС, {file}"
    )
    recording_missing: str = "🎙 Файл записи не найден на сервере АТС: {file}"
    recording_link: str = "🎙 Запись разговора: {link}"  # a recording only a link leads to
    reconstructed: str = "<i>(восстановлено после потери связи с Asterisk)</i>"
    sms: str = "✉️ <b>SMS</b> от {sender} на {did}\n{message}"


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = False
    token: str = field(default="", repr=False)
    api_url: str = "https://api.telegram.org"
    group_chats: list[str] = field(default_factory=list)
    sms_chats: list[str] = field(default_factory=list)  # where SMS go (default: group_chats)
    bot_updates: Literal["polling", "webhook", "off"] = "polling"
    webhook_url: str = ""  # bot_updates: webhook -> Telegram posts updates here (https, public)
    webhook_secret: str = field(default="", repr=False)
    callback_button: bool = True  # «Перезвонить» under missed calls (the bot handles the press)
    send_recordings: bool = True
    max_upload_mb: float = 50.0
    per_chat_rate: float = 1.0
    group_per_minute: float = 20.0
    global_rate: float = 30.0
    templates: TelegramTemplates = field(default_factory=TelegramTemplates)

    @property
    def base_url(self) -> str:
        return self.api_url.rstrip("/")

    @property
    def buttons(self) -> bool:
        """«Перезвонить» is shown only when the bot is there to handle the press."""
        return self.callback_button and self.bot_updates != "off"

    def validate(self, has_employee_chats: bool) -> None:
        if not self.enabled:
            return
        if not re.fullmatch(r"\d+:[\w-]{20,}", self.token):
            raise SettingsError(
                "token",
                tr(
                    "нужен токен бота от @BotFather (123456789:AA...), например token: ${TELEGRAM_BOT_TOKEN}",
                    "expected the bot token from @BotFather (123456789:AA...), "
                    "e.g. token: ${TELEGRAM_BOT_TOKEN}",
                ),
            )
        settings_checks.url("api_url", self.api_url)
        if not self.group_chats and not has_employee_chats:
            raise SettingsError(
                "group_chats",
                tr(
                    "нужен хотя бы один id чата (group_chats или directory.employees.*.telegram_chat_id), "
                    "или enabled: false",
                    "expected at least one chat id (group_chats, or directory.employees.*.telegram_chat_id), "
                    "or enabled: false",
                ),
            )
        if self.bot_updates == "webhook":
            if not self.webhook_url.startswith("https://"):
                raise SettingsError(
                    "webhook_url",
                    tr(
                        "Telegram присылает вебхуки только на адреса https://",
                        "Telegram delivers webhooks to https:// URLs only",
                    ),
                )
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", self.webhook_secret):
                raise SettingsError(
                    "webhook_secret",
                    tr(
                        "нужно 16-256 символов A-Z a-z 0-9 _ - (secret_token Telegram)",
                        "expected 16-256 characters A-Z a-z 0-9 _ - (Telegram's secret_token)",
                    ),
                )
        settings_checks.positive(self, "per_chat_rate", "group_per_minute", "global_rate", "max_upload_mb")
