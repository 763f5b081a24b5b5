"""The language of messages for people: Russian by default, English when the locale is English."""

from __future__ import annotations

import pytest

from bridge import i18n
from bridge.i18n import detect, tr


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({}, "ru"),  # a systemd service: no locale at all
        ({"LANG": "C.UTF-8"}, "ru"),
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "en"}, "en"),
        ({"LANG": "EN_GB.utf8"}, "en"),
        # POSIX order: LC_ALL over LC_MESSAGES over LANG; an empty one does not count.
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "ru_RU.UTF-8"}, "ru"),
        ({"LANG": "ru_RU.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "en"),
        ({"LC_MESSAGES": "en_US.UTF-8", "LC_ALL": "ru_RU.UTF-8"}, "ru"),
        ({"LC_ALL": "en_US.UTF-8", "LANG": "ru_RU.UTF-8"}, "en"),
        ({"LC_ALL": "", "LANG": "en_US.UTF-8"}, "en"),
    ],
)
def test_the_locale_decides_the_language(env: dict[str, str], lang: str) -> None:
    assert detect(env) == lang


def test_tr_picks_one_text() -> None:
    assert tr("привет", "hello", "ru") == "привет"
    assert tr("привет", "hello", "en") == "hello"
    # The tests run as a service does (tests/__init__.py): Russian.
    assert i18n.LANG == "ru" and tr("привет", "hello") == "привет"
