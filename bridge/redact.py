"""Secrets masked by value, wherever text can be read: logs, errors stored in the database, CLI
output, config errors.

Masking by key name (bridge/logs.py) misses a secret inside another text: the Bitrix24 webhook
code is part of a URL, and aiohttp puts the URL in its errors ("Connection timeout to host
https://portal/rest/1/CODE/..."). A ``Redactor`` knows the secret *values* and replaces each one
in any text with ``***``.

It is an immutable value built from the loaded config (``Redactor.from_settings(cfg)``) and
handed to what writes text people can read (the log setup, the outbox store, the jobs queue, the
CLI): no process-wide registry, so two configs in one process (tests, a CLI next to a daemon)
never mix their secrets. Secrets are the settings fields declared ``field(repr=False)`` (the
project's convention for a secret) and, as a fallback, string fields whose name says so
(``secret``, ``password``, ``token``, ``api_key``). For a secret that is a URL, the URL's secret
parts are registered (user info, path segments and query values of 8+ characters: the webhook
code), not its host, so an error still says which portal failed.

A config that cannot be built still has its error masked: ``raw_secret_values`` finds the
secrets in the raw YAML by the same schema (bridge/config.py).

Tokens obtained at run time (Bitrix24 OAuth access/refresh tokens) are not in the config: they
travel only in request bodies and are never put into an error message (bitrix24/client.py).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

MASK = "***"
MIN_LENGTH = 4  # shorter "secrets" would mask ordinary words and numbers all over the logs
URL_PART_MIN = 8
_SECRET_NAME = re.compile(r"secret|password|passwd|token|api_?key", re.IGNORECASE)


class Redactor:
    """Replaces every known secret value in a text with ``***`` (longest first). Immutable."""

    __slots__ = ("_rx", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = tuple(sorted(set(secrets), key=lambda s: (-len(s), s)))
        pattern = "|".join(re.escape(s) for s in self.secrets)
        self._rx: re.Pattern[str] | None = re.compile(pattern) if pattern else None

    @classmethod
    def of(cls, values: Iterable[str]) -> Redactor:
        """A redactor for these secret values (and their URL-encoded and URL-part forms)."""
        found: set[str] = set()
        for value in values:
            found.update(form for form in _forms(value) if len(form) >= MIN_LENGTH)
        return cls(found)

    @classmethod
    def from_settings(cls, settings: object) -> Redactor:
        """Every secret in a settings tree (the loaded ``Config``, or any settings dataclass)."""
        return cls.of(secret_values(settings))

    def __call__(self, text: str) -> str:
        return text if self._rx is None or not text else self._rx.sub(MASK, text)


def is_secret_field(f: dataclasses.Field[object]) -> bool:
    return not f.repr or bool(_SECRET_NAME.search(f.name))


def secret_values(settings: object) -> Iterator[str]:
    """The values of every secret field in a tree of settings dataclasses, lists and mappings."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if isinstance(value, str):
                if value and is_secret_field(f):
                    yield value
            else:
                yield from secret_values(value)
    elif isinstance(settings, (list, tuple)):
        for item in settings:
            yield from secret_values(item)
    elif isinstance(settings, dict):
        for item in settings.values():
            yield from secret_values(item)


def raw_secret_values(data: Any, schema: Any, resolve: Callable[[str], str]) -> Iterator[str]:
    """The secret values in raw data (a YAML mapping) by a settings dataclass ``schema``: for a
    config that could not be built (its error may quote a value). ``resolve`` interpolates
    ``${ENV}`` references; values of the wrong type (a list, a mapping) give every scalar."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(schema):
        return
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in data.items():
        f = fields.get(str(key))
        if f is None:
            continue
        tp = hints[f.name]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is str and is_secret_field(f):
            yield from (resolve(text) for text in _scalars(value))
        elif dataclasses.is_dataclass(tp):
            yield from raw_secret_values(value, tp, resolve)
        elif origin is list and isinstance(value, list):
            for item in value:
                yield from raw_secret_values(item, args[0], resolve)
        elif origin is dict and isinstance(value, dict):
            for item in value.values():
                yield from raw_secret_values(item, args[1], resolve)


def _scalars(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _scalars(k)
            yield from _scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from _scalars(v)
    elif value is not None:
        yield str(value)


def _forms(value: str) -> set[str]:
    """The ways a secret shows up in text: as is, URL-encoded, and for a URL its secret parts."""
    forms = {value, quote(value, safe=""), quote(value, safe="/:")}
    if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.IGNORECASE):
        parts = urlsplit(value)
        forms.discard(value)  # the host stays readable; the secret parts are masked below
        forms.discard(quote(value, safe="/:"))
        if parts.password:
            forms.add(parts.password)
        forms.update(seg for seg in parts.path.split("/") if len(seg) >= URL_PART_MIN)
        forms.update(v for _, v in parse_qsl(parts.query) if len(v) >= URL_PART_MIN)
    return forms
