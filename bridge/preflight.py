"""Preflight checks: what ``novofon-bridge check`` runs, and the small types each part answers in.

Each part of the bridge that can go wrong on a real machine (the config, the storage folder, the
HTTP port, AMI, the trunk, Telegram, Bitrix24 …) contributes its own checks: a ``Provider`` is a
function from the check's context to a list of ``Check``. bridge/cli/preflight.py lists the
providers; this module only runs them and knows nothing about any part.

A check answers with ``Result``s: a short name, a severity, what was found (or what is wrong) and,
for warnings and errors, the fix — all in the user's language (bridge/i18n.py). A check that raises
is reported as an error of its own; it never stops the others and never prints a traceback.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Config
from bridge.i18n import tr


class Severity(enum.IntEnum):
    """Ordered: the worst result decides the exit code (0 ok, 1 warnings, 2 errors)."""

    OK = 0
    WARNING = 1
    ERROR = 2

    @property
    def label(self) -> str:
        return {
            Severity.OK: tr("ок", "ok"),
            Severity.WARNING: tr("ВНИМАНИЕ", "WARNING"),
            Severity.ERROR: tr("ОШИБКА", "ERROR"),
        }[self]


@dataclass(frozen=True)
class Result:
    name: str  # what was checked, e.g. "AMI: права"
    severity: Severity
    text: str  # what was found; for a problem: what is wrong
    fix: str = ""  # what to do about it (warnings and errors)

    @classmethod
    def ok(cls, name: str, text: str) -> Result:
        return cls(name, Severity.OK, text)

    @classmethod
    def warning(cls, name: str, text: str, fix: str = "") -> Result:
        return cls(name, Severity.WARNING, text, fix)

    @classmethod
    def error(cls, name: str, text: str, fix: str = "") -> Result:
        return cls(name, Severity.ERROR, text, fix)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], Awaitable[list[Result]]]
    online: bool = True  # talks to Asterisk or an outside service: left out by --no-connect


@dataclass(frozen=True)
class Context:
    """What every provider may look at."""

    cfg: Config
    asterisk_etc: Path  # Asterisk's configuration folder, read when readable (manager.conf)
    asterisk_etc_given: bool = False  # named on the command line (--etc), not the default


Provider = Callable[[Context], list[Check]]


async def run(checks: Sequence[Check], connect: bool) -> list[Result]:
    """Run the checks (all at once: each waits on its own service) and return their results in
    the order of the checks. ``connect=False`` keeps only the offline ones."""
    chosen = [c for c in checks if connect or not c.online]
    outcomes = await asyncio.gather(*(_one(c) for c in chosen))
    return [r for results in outcomes for r in results]


async def _one(check: Check) -> list[Result]:
    try:
        return await check.run()
    except Exception as e:  # a bug in one check must not hide the others' results
        return [
            Result.error(
                check.name,
                tr(
                    f"проверка не выполнена: {type(e).__name__}: {e}",
                    f"check failed: {type(e).__name__}: {e}",
                ),
                tr(
                    "это ошибка novofon-bridge: сообщите о ней разработчикам",
                    "a bug in novofon-bridge: report it",
                ),
            )
        ]


def worst(results: Sequence[Result]) -> Severity:
    return max((r.severity for r in results), default=Severity.OK)


def exit_code(results: Sequence[Result]) -> int:
    """0: all is well, 1: warnings only, 2: at least one error."""
    return int(worst(results))


def render(result: Result) -> str:
    text = f"[{result.severity.label}] {result.name}: {result.text}"
    if result.fix and result.severity is not Severity.OK:
        text += "\n    " + tr("Что сделать: ", "Fix: ") + result.fix
    return text


def summary(results: Sequence[Result]) -> str:
    errors = sum(r.severity is Severity.ERROR for r in results)
    warnings = sum(r.severity is Severity.WARNING for r in results)
    code = exit_code(results)
    if not errors and not warnings:
        return tr(
            f"Итог: всё в порядке (проверок: {len(results)})", f"Summary: all good ({len(results)} checks)"
        )
    return tr(
        f"Итог: ошибок {errors}, предупреждений {warnings} (код выхода {code})",
        f"Summary: {errors} error(s), {warnings} warning(s) (exit code {code})",
    )
