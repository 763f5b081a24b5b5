"""Configuration: YAML with ${ENV} interpolation, validated into frozen dataclasses.

Every mistake is reported with the file, the key path and what was expected; unknown keys are
errors, so a typo never passes silently. Defaults live here, in code; config.yaml explains them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bridge.calls.records import Event
from bridge.sinks.bitrix24 import BitrixApp
from bridge.sinks.telegram import TelegramTemplates

DEFAULT_PATH = Path("/etc/novofon-bridge/config.yaml")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem a sysadmin can fix; the message says where and how."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "novofon-bridge"
    secret: str = dataclasses.field(default="", repr=False)
    connect_timeout: float = 5.0
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 30.0


@dataclass(frozen=True)
class AsteriskConfig:
    ami: AmiConfig = field(default_factory=AmiConfig)
    trunk_endpoints: list[str] = field(default_factory=lambda: ["novofon"])
    internal_extensions: str = r"^[1-9][0-9]{1,3}$"
    outgoing_context: str = "outgoing"
    recordings_dir: str = "/var/spool/asterisk/monitor"


@dataclass(frozen=True)
class PbxConfig:
    timezone: str = "Europe/Moscow"
    country_code: str = "7"
    default_did: str = ""
    lines: dict[str, str] = field(default_factory=dict)
    max_call_age: float = 14400.0


@dataclass(frozen=True)
class StorageConfig:
    dir: str = "/var/lib/novofon-bridge"


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class JsonlSinkConfig:
    enabled: bool = True
    path: str = ""  # default: <storage.dir>/records.jsonl


@dataclass(frozen=True)
class ConsoleSinkConfig:
    enabled: bool = True


@dataclass(frozen=True)
class TelegramConfig:
    enabled: bool = False
    token: str = field(default="", repr=False)
    api_url: str = "https://api.telegram.org"
    group_chats: list[str] = field(default_factory=list)
    sms_chats: list[str] = field(default_factory=list)
    bot_updates: Literal["polling", "webhook", "off"] = "polling"
    webhook_url: str = ""  # bot_updates: webhook -> Telegram posts updates here (https, public)
    webhook_secret: str = field(default="", repr=False)
    callback_button: bool = True
    send_recordings: bool = True
    max_upload_mb: float = 50.0
    per_chat_rate: float = 1.0
    group_per_minute: float = 20.0
    global_rate: float = 30.0
    templates: TelegramTemplates = field(default_factory=TelegramTemplates)


@dataclass(frozen=True)
class Bitrix24Config:
    enabled: bool = False
    webhook_url: str = field(default="", repr=False)
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


@dataclass(frozen=True)
class WebhookConfig:
    url: str = ""
    name: str = ""
    secret: str = field(default="", repr=False)
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SmsConfig:
    enabled: bool = False
    api_url: str = "https://smsc.ru/sys/send.php"
    login: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    sender: str = ""
    template: str = "Здравствуйте! Мы пропустили ваш звонок на {line} и перезвоним вам. {company}"
    company: str = ""
    per_number_interval: float = 86400.0
    # /smsc callback (delivery statuses, incoming SMS): checks md5/sha1("id:phone:status:<secret>").
    callback_secret: str = field(default="", repr=False)
    callback_hash: Literal["md5", "sha1"] = "md5"


@dataclass(frozen=True)
class SinksConfig:
    jsonl: JsonlSinkConfig = field(default_factory=JsonlSinkConfig)
    console: ConsoleSinkConfig = field(default_factory=ConsoleSinkConfig)
    telegram: TelegramConfig = field(default_factory=TelegramConfig)
    bitrix24: Bitrix24Config = field(default_factory=Bitrix24Config)
    webhooks: list[WebhookConfig] = field(default_factory=list)
    sms: SmsConfig = field(default_factory=SmsConfig)


@dataclass(frozen=True)
class EmployeeConfig:
    name: str = ""
    telegram_chat_id: str = ""
    bitrix_user_id: str = ""


@dataclass(frozen=True)
class DirectoryConfig:
    # Static entries: extension -> who. Bitrix24 sync adds and updates employees on top.
    employees: dict[str, EmployeeConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 2613
    max_body_kb: int = 64


@dataclass(frozen=True)
class NovofonConfig:
    api_secret: str = field(default="", repr=False)
    sms_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class OutboxConfig:
    retry_base: float = 5.0
    retry_cap: float = 3600.0
    max_age: float = 86400.0
    send_timeout: float = 60.0
    keep_days: float = 7.0
    synchronous: Literal["normal", "full"] = "normal"


@dataclass(frozen=True)
class CliConfig:
    test_call_application: str = "Playback"
    test_call_data: str = "hello-world"
    callback_callerid: str = ""
    call_timeout: float = 90.0


@dataclass(frozen=True)
class Config:
    asterisk: AsteriskConfig = field(default_factory=AsteriskConfig)
    pbx: PbxConfig = field(default_factory=PbxConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    novofon: NovofonConfig = field(default_factory=NovofonConfig)
    cli: CliConfig = field(default_factory=CliConfig)
    source: str = "<defaults>"

    @property
    def outbox_path(self) -> Path:
        return Path(self.storage.dir) / "outbox.sqlite3"

    @property
    def jsonl_path(self) -> Path:
        return Path(self.sinks.jsonl.path or Path(self.storage.dir) / "records.jsonl")


# -- loading ---------------------------------------------------------------------------------------


def _interpolate(value: str, file: str, key: str, env: typing.Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            file,
            key,
            f"environment variable {name} is not set "
            f"(set it, e.g. in /etc/novofon-bridge/env, or write ${{{name}:-default}})",
        )

    return _ENV.sub(sub, value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, file: str, key: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(value, str):
        value = _interpolate(value, file, key, env)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, file, key, env)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        return [_convert(v, item, file, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a mapping, got {value!r}")
        item_type = typing.get_args(tp)[1]
        return {str(k): _convert(v, item_type, file, f"{key}.{k}", env) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(file, key, f"expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(file, key, f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: Any, data: Any, file: str, prefix: str, env: typing.Mapping[str, str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, prefix, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = _closest(key, fields)
            hint = f" (did you mean {close!r}?)" if close else f" (known keys: {', '.join(sorted(fields))})"
            raise ConfigError(file, path, f"unknown key{hint}")
        kwargs[key] = _convert(value, hints[key], file, path, env)
    return cls(**kwargs)


def _closest(key: str, options: typing.Iterable[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return match[0] if match else None


def _validate(cfg: Config) -> None:
    f = cfg.source
    try:
        ZoneInfo(cfg.pbx.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f,
            "pbx.timezone",
            f"unknown time zone {cfg.pbx.timezone!r} (expected an IANA name such as Europe/Moscow)",
        ) from None
    try:
        re.compile(cfg.asterisk.internal_extensions)
    except re.error as e:
        raise ConfigError(f, "asterisk.internal_extensions", f"not a valid regular expression: {e}") from None
    if not cfg.asterisk.trunk_endpoints:
        raise ConfigError(f, "asterisk.trunk_endpoints", "expected at least one PJSIP endpoint name")
    if not 0 < cfg.asterisk.ami.port < 65536:
        raise ConfigError(f, "asterisk.ami.port", f"expected a TCP port 1-65535, got {cfg.asterisk.ami.port}")
    ami = cfg.asterisk.ami
    for name in (
        "connect_timeout",
        "ping_interval",
        "ping_timeout",
        "reconnect_min_delay",
        "reconnect_max_delay",
    ):
        if getattr(ami, name) <= 0:
            raise ConfigError(f, f"asterisk.ami.{name}", "expected a positive number of seconds")
    for name in ("retry_base", "retry_cap", "max_age", "send_timeout", "keep_days"):
        if getattr(cfg.outbox, name) <= 0:
            raise ConfigError(f, f"outbox.{name}", "expected a positive number")
    if ami.reconnect_min_delay > ami.reconnect_max_delay:
        raise ConfigError(f, "asterisk.ami.reconnect_min_delay", "must not exceed reconnect_max_delay")
    if not cfg.pbx.country_code.isdigit():
        raise ConfigError(f, "pbx.country_code", f"expected digits such as 7, got {cfg.pbx.country_code!r}")
    _validate_sinks(cfg)
    if not 0 <= cfg.http.port < 65536:
        raise ConfigError(
            f, "http.port", f"expected a TCP port 1-65535 (0: any free one), got {cfg.http.port}"
        )
    if not 1 <= cfg.http.max_body_kb <= 10240:
        raise ConfigError(f, "http.max_body_kb", "expected 1..10240 (KiB)")
    internal = re.compile(cfg.asterisk.internal_extensions)
    for ext in cfg.directory.employees:
        if not internal.match(ext):
            raise ConfigError(
                f, f"directory.employees.{ext}", "not an extension by asterisk.internal_extensions"
            )
    for did in cfg.pbx.lines:
        if not did.isdigit():
            raise ConfigError(f, f"pbx.lines.{did}", "expected the DID as digits only, e.g. 74951234567")


def _url(f: str, key: str, value: str) -> None:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(f, key, f"expected an http(s):// URL, got {value[:40]!r}")


def _validate_sinks(cfg: Config) -> None:
    f, tg, bx = cfg.source, cfg.sinks.telegram, cfg.sinks.bitrix24
    if tg.enabled:
        if not re.fullmatch(r"\d+:[\w-]{20,}", tg.token):
            raise ConfigError(
                f,
                "sinks.telegram.token",
                "expected the bot token from @BotFather (123456789:AA...), e.g. token: ${TELEGRAM_BOT_TOKEN}",
            )
        _url(f, "sinks.telegram.api_url", tg.api_url)
        if not tg.group_chats and not any(e.telegram_chat_id for e in cfg.directory.employees.values()):
            raise ConfigError(
                f,
                "sinks.telegram.group_chats",
                "expected at least one chat id (group_chats, or directory.employees.*.telegram_chat_id), "
                "or enabled: false",
            )
        if tg.bot_updates == "webhook":
            if not tg.webhook_url.startswith("https://"):
                raise ConfigError(
                    f, "sinks.telegram.webhook_url", "Telegram delivers webhooks to https:// URLs only"
                )
            if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", tg.webhook_secret):
                raise ConfigError(
                    f,
                    "sinks.telegram.webhook_secret",
                    "expected 16-256 characters A-Z a-z 0-9 _ - (Telegram's secret_token)",
                )
        for name in ("per_chat_rate", "group_per_minute", "global_rate", "max_upload_mb"):
            if getattr(tg, name) <= 0:
                raise ConfigError(f, f"sinks.telegram.{name}", "expected a positive number")
    if bx.enabled:
        if bx.webhook_url:
            _url(f, "sinks.bitrix24.webhook_url", bx.webhook_url)
        elif bx.app.portal_url:
            _url(f, "sinks.bitrix24.app.portal_url", bx.app.portal_url)
            for name in ("client_id", "client_secret", "refresh_token"):
                if not getattr(bx.app, name):
                    raise ConfigError(f, f"sinks.bitrix24.app.{name}", "required for the application mode")
        else:
            raise ConfigError(
                f,
                "sinks.bitrix24.webhook_url",
                "expected the incoming webhook URL (https://PORTAL/rest/USER_ID/CODE/) or an app: section",
            )
        if not bx.events_path.startswith("/") or bx.events_path in ("/call", "/sms", "/status", "/healthz"):
            raise ConfigError(
                f, "sinks.bitrix24.events_path", "expected a path of its own, e.g. /api/bitrix/webhook"
            )
        if bx.sync_interval < 0:
            raise ConfigError(
                f, "sinks.bitrix24.sync_interval", "expected seconds >= 0 (0: no periodic sync)"
            )
        if bx.rate <= 0 or bx.burst < 1:
            raise ConfigError(f, "sinks.bitrix24.rate", "expected rate > 0 and burst >= 1")
    sms = cfg.sinks.sms
    if sms.enabled:
        _url(f, "sinks.sms.api_url", sms.api_url)
        if not sms.api_key and not (sms.login and sms.password):
            raise ConfigError(
                f, "sinks.sms.login", "expected login + password, or api_key, for the SMS gateway"
            )
        try:
            sms.template.format(line="", company="")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f, "sinks.sms.template", f"only {{line}} and {{company}} can be used ({e})"
            ) from None
    names = set()
    known = {e.value for e in Event}
    for i, hook in enumerate(cfg.sinks.webhooks):
        key = f"sinks.webhooks[{i}]"
        _url(f, f"{key}.url", hook.url)
        for ev in hook.events:
            if ev not in known:
                raise ConfigError(f, f"{key}.events", f"unknown event {ev!r} (expected NOTIFY_START, ...)")
        name = hook.name or f"webhook{i + 1}"
        if name in names:
            raise ConfigError(f, f"{key}.name", f"duplicate webhook name {name!r}")
        names.add(name)


def load(path: str | Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file; ``path=None`` means the built-in defaults."""
    env = os.environ if env is None else env
    if path is None:
        defaults = Config()
        _validate(defaults)
        return defaults
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            file, "", "file not found (pass -c FILE or create it from the shipped config.yaml)"
        ) from None
    except OSError as e:
        raise ConfigError(file, "", f"cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(file, "", f"not valid YAML: {where}{getattr(e, 'problem', e)}") from None
    cfg: Config = dataclasses.replace(_build(Config, data, file, "", env), source=file)
    _validate(cfg)
    return cfg
