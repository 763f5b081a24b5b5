"""Configuration: YAML with ${ENV} interpolation, validated into frozen dataclasses.

Every mistake is reported with the file, the key path and what was expected; unknown keys are
errors, so a typo never passes silently. Defaults live here, in code; config.yaml explains them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bridge.calls.numbers import InvalidNumber, check_extension, is_ascii_digits
from bridge.errors import SettingsError
from bridge.http import peers
from bridge.i18n import tr
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.local.settings import ConsoleSettings, JsonlSettings
from bridge.integrations.novofon.settings import NovofonSettings, WebhookSettings, validate_webhooks
from bridge.integrations.smsc.settings import SmsSettings
from bridge.integrations.telegram.settings import TelegramSettings
from bridge.redact import Redactor, raw_secret_values

DEFAULT_PATH = Path("/etc/novofon-bridge/config.yaml")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A configuration problem a sysadmin can fix; the message says where and how."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")

    def redacted(self, redact: typing.Callable[[str], str]) -> ConfigError:
        """The same error with every secret value in it masked."""
        return ConfigError(self.file, self.key, redact(self.problem))


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
    local_max_delay: float = 2.0  # the reconnect cap when Asterisk runs on this machine


@dataclass(frozen=True)
class CdrConfig:
    # Calls the bridge did not see live (down, restarting, AMI cut) come from Asterisk's CDR.
    backfill: bool = True
    csv_path: str = "/var/log/asterisk/cdr-csv/Master.csv"
    mysql_dsn: str = field(default="", repr=False)  # FreePBX: mysql://user:pass@host/asteriskcdrdb
    timezone: str = "UTC"  # the CDR's times: UTC with cdr.conf usegmtime=yes
    max_age: float = 86400.0  # calls that ended longer ago than this are not backfilled


@dataclass(frozen=True)
class AriConfig:
    """ARI (ari.conf user, http.conf server): call control (call, callback, click-to-call, «Перезвонить»)."""

    enabled: bool = True
    url: str = "http://127.0.0.1:8088/ari"
    username: str = "novofon-bridge"
    password: str = dataclasses.field(default="", repr=False)
    app: str = "novofon-bridge"

    @property
    def configured(self) -> bool:
        """Calls go over ARI only when it is enabled and has a password; otherwise over AMI."""
        return self.enabled and bool(self.password)


@dataclass(frozen=True)
class AsteriskConfig:
    ami: AmiConfig = field(default_factory=AmiConfig)
    ari: AriConfig = field(default_factory=AriConfig)
    cdr: CdrConfig = field(default_factory=CdrConfig)
    trunk_endpoints: list[str] = field(default_factory=lambda: ["novofon"])
    internal_extensions: str = r"^[1-9][0-9]{1,3}$"
    outgoing_context: str = "novofon-outgoing"
    recordings_dir: str = "/var/spool/asterisk/monitor"
    # the same folder as Asterisk names it (MIXMONITOR_FILENAME), when the daemon sees it elsewhere
    pbx_recordings_dir: str = "/var/spool/asterisk/monitor"


@dataclass(frozen=True)
class PbxConfig:
    timezone: str = "Europe/Moscow"
    country_code: str = "7"
    default_did: str = ""
    lines: dict[str, str] = field(default_factory=dict)
    max_call_age: float = 14400.0
    employee_ring_timeout: float = 30.0  # call-backs: the employee's phone rings this long first


@dataclass(frozen=True)
class StorageConfig:
    dir: str = "/var/lib/novofon-bridge"


@dataclass(frozen=True)
class LoggingConfig:
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class SinksConfig:
    jsonl: JsonlSettings = field(default_factory=JsonlSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    bitrix24: Bitrix24Settings = field(default_factory=Bitrix24Settings)
    webhooks: list[WebhookSettings] = field(default_factory=list)
    sms: SmsSettings = field(default_factory=SmsSettings)


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
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_connections: int = 512
    trusted_proxies: list[str] = field(default_factory=list)
    status_token: str = dataclasses.field(default="", repr=False)


@dataclass(frozen=True)
class OutboxConfig:
    retry_base: float = 5.0
    retry_cap: float = 3600.0
    max_age: float = 86400.0
    send_timeout: float = 60.0
    keep_days: float = 7.0
    synchronous: Literal["normal", "full"] = "normal"
    parallel_calls: int = 8


@dataclass(frozen=True)
class CliConfig:
    test_call_application: str = "Playback"
    test_call_data: str = "hello-world"
    callback_callerid: str = ""
    call_timeout: float = 90.0


@dataclass(frozen=True)
class AgiConfig:
    """FastAGI routing to the responsible manager (bridge/pbx/agi.py, README "AGI")."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 4573
    budget_ms: int = 300  # the longest a call waits for the CRM when the cache is cold
    sticky_days: float = 30.0  # our own history: who last talked to the number, this far back
    route_timeout: int = 15  # seconds the responsible manager's phone rings first


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
    novofon: NovofonSettings = field(default_factory=NovofonSettings)
    cli: CliConfig = field(default_factory=CliConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
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
            tr(
                f"не задана переменная окружения {name} (задайте её, например в /etc/novofon-bridge/env, "
                f"или напишите ${{{name}:-значение_по_умолчанию}})",
                f"environment variable {name} is not set "
                f"(set it, e.g. in /etc/novofon-bridge/env, or write ${{{name}:-default}})",
            ),
        )

    return _ENV.sub(sub, value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return tr("одно из ", "one of ") + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return tr(
            f"список ({_type_name(typing.get_args(tp)[0])})",
            f"a list of {_type_name(typing.get_args(tp)[0])}",
        )
    if origin is dict or dataclasses.is_dataclass(tp):
        return _mapping()
    names = {
        str: tr("строка", "a string"),
        int: tr("целое число", "an integer"),
        float: tr("число", "a number"),
        bool: tr("true или false", "true or false"),
    }
    return names.get(tp, str(tp))


def _mapping() -> str:
    return tr("раздел (ключ: значение)", "a mapping")


def _expected(what: str, value: Any) -> str:
    return tr(f"ожидается {what}, а указано {value!r}", f"expected {what}, got {value!r}")


def _convert(value: Any, tp: Any, file: str, key: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(value, str):
        value = _interpolate(value, file, key, env)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, file, key, env)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(file, key, _expected(_type_name(tp), value))
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(file, key, _expected(_type_name(tp), value))
        return [_convert(v, item, file, f"{key}[{i}]", env) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(file, key, _expected(_mapping(), value))
        item_type = typing.get_args(tp)[1]
        return {str(k): _convert(v, item_type, file, f"{key}.{k}", env) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(file, key, _expected(_type_name(bool), value))
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(file, key, _expected(_type_name(tp), value))
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(file, key, _expected(_type_name(tp), value)) from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(file, key, _expected(_type_name(str), value))
        return str(value)
    raise TypeError(f"unsupported config type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: Any, data: Any, file: str, prefix: str, env: typing.Mapping[str, str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, prefix, _expected(_mapping(), data))
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = _closest(key, fields)
            known = ", ".join(sorted(fields))
            hint = (
                tr(f" (может быть, {close!r}?)", f" (did you mean {close!r}?)")
                if close
                else tr(f" (известные ключи: {known})", f" (known keys: {known})")
            )
            raise ConfigError(file, path, tr("неизвестный ключ", "unknown key") + hint)
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
            tr(
                f"неизвестный часовой пояс {cfg.pbx.timezone!r} (нужно имя IANA, например Europe/Moscow)",
                f"unknown time zone {cfg.pbx.timezone!r} (expected an IANA name such as Europe/Moscow)",
            ),
        ) from None
    try:
        re.compile(cfg.asterisk.internal_extensions)
    except re.error as e:
        raise ConfigError(
            f,
            "asterisk.internal_extensions",
            tr(f"ошибка в регулярном выражении: {e}", f"not a valid regular expression: {e}"),
        ) from None
    if not cfg.asterisk.trunk_endpoints:
        raise ConfigError(
            f,
            "asterisk.trunk_endpoints",
            tr("нужно хотя бы одно имя эндпоинта PJSIP", "expected at least one PJSIP endpoint name"),
        )
    if not 0 < cfg.asterisk.ami.port < 65536:
        raise ConfigError(f, "asterisk.ami.port", _port_expected(cfg.asterisk.ami.port, False))
    ami = cfg.asterisk.ami
    for name in (
        "connect_timeout",
        "ping_interval",
        "ping_timeout",
        "reconnect_min_delay",
        "reconnect_max_delay",
        "local_max_delay",
    ):
        if getattr(ami, name) <= 0:
            raise ConfigError(
                f,
                f"asterisk.ami.{name}",
                tr("ожидается положительное число секунд", "expected a positive number of seconds"),
            )
    for name in ("retry_base", "retry_cap", "max_age", "send_timeout", "keep_days"):
        if getattr(cfg.outbox, name) <= 0:
            raise ConfigError(
                f, f"outbox.{name}", tr("ожидается положительное число", "expected a positive number")
            )
    if not 1 <= cfg.outbox.parallel_calls <= 100:
        raise ConfigError(
            f,
            "outbox.parallel_calls",
            tr(
                "ожидается 1..100 звонков одновременно на получателя",
                "expected 1..100 calls delivered at once per sink",
            ),
        )
    if ami.reconnect_min_delay > ami.reconnect_max_delay:
        raise ConfigError(
            f,
            "asterisk.ami.reconnect_min_delay",
            tr("не может быть больше reconnect_max_delay", "must not exceed reconnect_max_delay"),
        )
    _validate_ari(cfg)
    _validate_cdr(cfg)
    if not 3 <= cfg.pbx.employee_ring_timeout <= 300:
        raise ConfigError(
            f, "pbx.employee_ring_timeout", tr("ожидается 3..300 секунд", "expected 3..300 seconds")
        )
    if not is_ascii_digits(cfg.pbx.country_code):
        raise ConfigError(
            f,
            "pbx.country_code",
            tr(
                f"ожидаются цифры, например 7, а указано {cfg.pbx.country_code!r}",
                f"expected digits such as 7, got {cfg.pbx.country_code!r}",
            ),
        )
    _validate_sinks(cfg)
    _validate_agi(cfg)
    if not 0 <= cfg.http.port < 65536:
        raise ConfigError(f, "http.port", _port_expected(cfg.http.port, True))
    if not 1 <= cfg.http.max_body_kb <= 10240:
        raise ConfigError(f, "http.max_body_kb", tr("ожидается 1..10240 (КиБ)", "expected 1..10240 (KiB)"))
    _validate_http(cfg)
    for ext in cfg.directory.employees:
        try:
            check_extension(ext, cfg.asterisk.internal_extensions)
        except InvalidNumber:
            raise ConfigError(
                f,
                f"directory.employees.{ext!a}",
                tr(
                    "это не внутренний номер по asterisk.internal_extensions (только цифры ASCII, весь ключ)",
                    "not an extension by asterisk.internal_extensions (ASCII digits only, the whole key)",
                ),
            ) from None
    for did in cfg.pbx.lines:
        if not is_ascii_digits(did):
            raise ConfigError(
                f,
                f"pbx.lines.{did}",
                tr(
                    "номер линии (DID) пишется только цифрами, например 74951234567",
                    "expected the DID as digits only, e.g. 74951234567",
                ),
            )


def _port_expected(port: int, zero_ok: bool) -> str:
    zero = tr(" (0: любой свободный)", " (0: any free one)") if zero_ok else ""
    return tr(
        f"ожидается TCP-порт 1-65535{zero}, а указано {port}",
        f"expected a TCP port 1-65535{zero}, got {port}",
    )


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


def bind_address_problem(bind: str) -> str | None:
    """Why ``bind`` cannot be an address to listen on (None: it can). Whether a host name resolves
    and whether the address belongs to this machine is found out when the port is opened."""
    try:
        ipaddress.ip_address(bind)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", bind):
        return tr(
            f"{bind!r} — не IPv4-адрес (четыре числа 0-255 через точку, например 127.0.0.1 или 0.0.0.0)",
            f"{bind!r} is not an IPv4 address (four numbers 0-255 with dots, e.g. 127.0.0.1 or 0.0.0.0)",
        )
    if ":" in bind or not _HOSTNAME.fullmatch(bind):
        return tr(
            f"{bind!r} — не IP-адрес и не имя хоста (например 127.0.0.1, 0.0.0.0 или ::)",
            f"{bind!r} is neither an IP address nor a host name (e.g. 127.0.0.1, 0.0.0.0 or ::)",
        )
    return None


_ARI_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _validate_ari(cfg: Config) -> None:
    ari, f = cfg.asterisk.ari, cfg.source
    url = urlparse(ari.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(
            f,
            "asterisk.ari.url",
            tr(
                f"ожидается http://ХОСТ:ПОРТ/ari, а указано {ari.url!r}",
                f"expected http://HOST:PORT/ari, got {ari.url!r}",
            ),
        )
    if url.username or url.password:
        raise ConfigError(
            f,
            "asterisk.ari.url",
            tr(
                "не пишите пользователя и пароль в адресе: для них asterisk.ari.username/password",
                "put no user or password in the URL: use asterisk.ari.username/password",
            ),
        )
    if not _ARI_APP.fullmatch(ari.app):
        raise ConfigError(
            f,
            "asterisk.ari.app",
            tr(
                f"ожидаются латинские буквы, цифры, '.', '_' или '-' (например novofon-bridge), "
                f"а указано {ari.app!r}",
                f"expected letters, digits, '.', '_' or '-' (e.g. novofon-bridge), got {ari.app!r}",
            ),
        )


def _validate_agi(cfg: Config) -> None:
    a, f = cfg.agi, cfg.source
    if not 0 <= a.port < 65536:
        raise ConfigError(
            f,
            "agi.port",
            tr(
                f"ожидается TCP-порт 1-65535 (0: любой свободный), указано {a.port}",
                f"expected a TCP port 1-65535 (0: any free one), got {a.port}",
            ),
        )
    if not 1 <= a.budget_ms <= 5000:
        raise ConfigError(
            f,
            "agi.budget_ms",
            tr(
                "ожидается 1..5000 миллисекунд (дольше звонок не ждёт)",
                "expected 1..5000 milliseconds (a call waits this long at most)",
            ),
        )
    if a.sticky_days < 0:
        raise ConfigError(
            f,
            "agi.sticky_days",
            tr(
                "ожидается число дней >= 0 (0: без маршрутизации по нашей истории)",
                "expected days >= 0 (0: no routing by our own history)",
            ),
        )
    if not 1 <= a.route_timeout <= 600:
        raise ConfigError(f, "agi.route_timeout", tr("ожидается 1..600 секунд", "expected 1..600 seconds"))


def _validate_cdr(cfg: Config) -> None:
    cdr = cfg.asterisk.cdr
    try:
        ZoneInfo(cdr.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            cfg.source,
            "asterisk.cdr.timezone",
            f"unknown time zone {cdr.timezone!r} (UTC, Europe/Moscow, ...)",
        ) from None
    if cdr.max_age <= 0:
        raise ConfigError(cfg.source, "asterisk.cdr.max_age", "expected a positive number of seconds")
    if cdr.mysql_dsn and urlparse(cdr.mysql_dsn).scheme not in ("mysql", "mariadb"):
        raise ConfigError(
            cfg.source, "asterisk.cdr.mysql_dsn", "expected mysql://USER:PASSWORD@HOST:PORT/asteriskcdrdb"
        )


def _validate_http(cfg: Config) -> None:
    h, f = cfg.http, cfg.source
    problem = bind_address_problem(h.bind)
    if problem:
        raise ConfigError(f, "http.bind", problem)
    for name in ("header_timeout", "body_timeout"):
        if not 0 < getattr(h, name) <= 3600:
            raise ConfigError(
                f,
                f"http.{name}",
                tr("ожидается число секунд, 0 < N <= 3600", "expected a number of seconds, 0 < N <= 3600"),
            )
    if not 1 <= h.max_connections <= 100_000:
        raise ConfigError(f, "http.max_connections", tr("ожидается 1..100000", "expected 1..100000"))
    try:
        peers.networks(h.trusted_proxies)
    except ValueError as e:
        raise ConfigError(
            f, "http.trusted_proxies", tr(f"ожидаются IP-адреса или сети (CIDR): {e}", str(e))
        ) from None


def _validate_sinks(cfg: Config) -> None:
    """Each integration validates its own settings; the key it names is put under its section."""
    s = cfg.sinks
    has_employee_chats = any(e.telegram_chat_id for e in cfg.directory.employees.values())
    checks: list[tuple[str, typing.Callable[[], None]]] = [
        ("sinks.telegram", lambda: s.telegram.validate(has_employee_chats)),
        ("sinks.bitrix24", s.bitrix24.validate),
        ("sinks.sms", s.sms.validate),
        ("sinks.webhooks", lambda: validate_webhooks(s.webhooks)),
        ("novofon", cfg.novofon.validate),
    ]
    for section, check in checks:
        try:
            check()
        except SettingsError as e:
            sep = "" if e.key.startswith("[") else "."
            raise ConfigError(cfg.source, f"{section}{sep}{e.key}", e.problem) from None
    _validate_paths(cfg)


def _validate_paths(cfg: Config) -> None:
    """Each HTTP path has one owner: a configured path may not shadow another route."""
    builtin = tr("встроенный путь", "a built-in route")
    taken = {p: builtin for p in ("/call", "/sms", "/smsc", "/status", "/healthz")}
    b, t = cfg.sinks.bitrix24, cfg.sinks.telegram
    if b.enabled:
        taken[b.events_path] = "sinks.bitrix24.events_path"
    if t.enabled and t.bot_updates == "webhook":
        path = urlparse(t.webhook_url).path or "/telegram"
        if path in taken:
            raise ConfigError(
                cfg.source,
                "sinks.telegram.webhook_url",
                tr(
                    f"путь {path} уже занят ({taken[path]}): дайте боту отдельный путь",
                    f"its path {path} is already served ({taken[path]}): give the bot a path of its own",
                ),
            )


def _not_utf8(path: Path, e: UnicodeDecodeError) -> str:
    """Say which line is not UTF-8 and how to fix it (typically cp1251 from a Windows editor)."""
    data = path.read_bytes()
    line = data.count(b"\n", 0, e.start) + 1
    try:
        data.decode("cp1251")
        guess = tr(", похоже, в кодировке Windows-1251 (cp1251)", ", apparently in Windows-1251 (cp1251)")
    except UnicodeDecodeError:
        guess = ""
    iconv = f"iconv -f cp1251 -t utf-8 {path} -o {path}.utf8 && mv {path}.utf8 {path}"
    return tr(
        f"файл не в кодировке UTF-8 (строка {line}, байт 0x{data[e.start]:02x}){guess}. "
        "Сохраните его в UTF-8 (Блокнот: «Сохранить как» → Кодировка: UTF-8) или перекодируйте: " + iconv,
        f"the file is not UTF-8 (line {line}, byte 0x{data[e.start]:02x}){guess}. "
        "Save it as UTF-8 (Notepad: Save As → Encoding: UTF-8) or convert it: " + iconv,
    )


def load(path: str | Path | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file; ``path=None`` means the built-in defaults."""
    env = os.environ if env is None else env
    if path is None:
        defaults = Config()
        _validate(defaults)
        return defaults
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(file, "", _not_utf8(Path(path), e)) from None
    except FileNotFoundError:
        raise ConfigError(
            file,
            "",
            tr(
                "файл не найден (укажите -c ФАЙЛ или создайте его из config.yaml из поставки)",
                "file not found (pass -c FILE or create it from the shipped config.yaml)",
            ),
        ) from None
    except PermissionError:
        raise ConfigError(
            file,
            "",
            tr(
                "нет прав на чтение (запустите от root: sudo, или от пользователя novofon-bridge)",
                "permission denied (run as root: sudo, or as the novofon-bridge user)",
            ),
        ) from None
    except OSError as e:
        raise ConfigError(
            file, "", tr(f"не удалось прочитать: {e.strerror}", f"cannot read: {e.strerror}")
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = (
            tr(
                f"строка {mark.line + 1}, столбец {mark.column + 1}: ",
                f"line {mark.line + 1}, column {mark.column + 1}: ",
            )
            if mark
            else ""
        )
        raise ConfigError(
            file,
            "",
            tr("ошибка синтаксиса YAML: ", "not valid YAML: ") + f"{where}{getattr(e, 'problem', e)}",
        ) from None
    try:
        cfg: Config = dataclasses.replace(_build(Config, data, file, "", env), source=file)
        _validate(cfg)
    except ConfigError as e:  # the message may quote a value: mask every secret the file holds
        values = raw_secret_values(data, Config, lambda t: _ENV.sub(lambda m: env.get(m[1], m[2] or ""), t))
        raise e.redacted(Redactor.of(values)) from None
    return cfg
