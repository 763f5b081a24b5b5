"""``check`` for Bitrix24: the portal's own checks (bridge/integrations/bitrix24/checks.py:
credentials, the application's installation, the scopes) as preflight results."""

from __future__ import annotations

from bridge.i18n import tr
from bridge.integrations.bitrix24.checks import REQUIRED_SCOPES, check_portal
from bridge.preflight import Check, Context, Result


def checks(ctx: Context) -> list[Check]:
    if not ctx.cfg.sinks.bitrix24.enabled:
        return []
    cfg = ctx.cfg

    async def portal() -> list[Result]:
        problems = await check_portal(cfg.sinks.bitrix24, cfg.outbox_path)
        if not problems:
            scopes = ", ".join(REQUIRED_SCOPES)
            return [
                Result.ok(
                    "Bitrix24",
                    tr(f"портал отвечает, права есть: {scopes}", f"the portal answers, scopes: {scopes}"),
                )
            ]
        return [Result.error("Bitrix24", problem) for problem in problems]

    return [Check("Bitrix24", portal)]
