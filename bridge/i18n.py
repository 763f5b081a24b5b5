"""Russian for the people who run the bridge; English when their locale is English.

The language is read from the environment once, when the process starts, the way POSIX programs
choose the language of their messages: the first of ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is
set decides; a value starting with "en" (``en_US.UTF-8``, ``en``) means English, anything else
(``ru_RU.UTF-8``, ``C.UTF-8``, unset — what a systemd service gets) Russian.

Every text for people is written in place in both languages, ``tr("по-русски", "in English")``;
the Russian one is the original. Tests pass ``lang`` to see both, or run a command with ``LANG``
set. Nothing here changes after start-up: there is no "set the language" call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Literal

Lang = Literal["ru", "en"]

LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def detect(env: Mapping[str, str]) -> Lang:
    """The language the locale in ``env`` asks for: the first variable set decides."""
    for name in LOCALE_VARIABLES:
        value = env.get(name, "")
        if value:
            return "en" if value.lower().startswith("en") else "ru"
    return "ru"


LANG: Final[Lang] = detect(os.environ)


def tr(ru: str, en: str, lang: Lang | None = None) -> str:
    """The text in the process's language (``lang`` overrides it: tests, one-off renderings)."""
    return en if (lang or LANG) == "en" else ru
