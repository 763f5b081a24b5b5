"""``check`` for ARI (asterisk.ari.*): the login, and whether the daemon's Stasis application is
registered.

``check`` is the pre-flight, also run before the service is first started: an application not
registered yet is said, not failed (as the AGI and HTTP ports may be free or held by our running
daemon). ``status`` is about the running daemon and fails without it (bridge/cli/pbx.py).
"""

from __future__ import annotations

from bridge.config import Config
from bridge.i18n import tr
from bridge.pbx.ari import AriAuthError, AriClient, AriError, AriNotFound
from bridge.pbx.originate import ari_settings
from bridge.preflight import Check, Context, Result

NAME = "ARI"


def checks(ctx: Context) -> list[Check]:
    """The preflight's ARI part."""
    cfg = ctx.cfg
    return [Check(NAME, lambda: ari(cfg))]


async def ari(cfg: Config) -> list[Result]:
    a = cfg.asterisk.ari
    if not a.configured:
        why = (
            "asterisk.ari.enabled: false"
            if not a.enabled
            else tr("пароль не задан (ARI_PASSWORD)", "no password (ARI_PASSWORD)")
        )
        return [
            Result.ok(
                NAME,
                tr(
                    f"не используется — {why}; звонки идут через AMI",
                    f"not used — {why}; calls go over AMI",
                ),
            )
        ]
    client = AriClient(ari_settings(cfg))
    try:
        try:
            info = await client.info()
        except AriAuthError as e:
            return [
                Result.error(
                    NAME,
                    tr(f"вход не принят: {e}", f"login refused: {e}"),
                    tr(
                        "ARI_PASSWORD в /etc/novofon-bridge/env должен совпадать с паролем в "
                        "novofon-bridge_ari.conf (FreePBX: ari_additional_custom.conf); "
                        "«novofon-bridge asterisk install» укажет на расхождение",
                        "ARI_PASSWORD in /etc/novofon-bridge/env must match the password in "
                        "novofon-bridge_ari.conf (FreePBX: ari_additional_custom.conf); "
                        "'novofon-bridge asterisk install' points out a mismatch",
                    ),
                )
            ]
        except AriError as e:
            return [
                Result.error(
                    NAME,
                    tr(f"нет подключения — {e}", f"cannot connect — {e}"),
                    tr(
                        'включите HTTP-сервер Asterisk (http.conf, «asterisk -rx "http show status"») '
                        "и res_ari (modules.conf), или укажите его адрес в asterisk.ari.url (ARI_URL)",
                        'switch Asterisk\'s HTTP server on (http.conf, asterisk -rx "http show status") '
                        "and load res_ari (modules.conf), or set its address in asterisk.ari.url (ARI_URL)",
                    ),
                )
            ]
        version = (info.get("system") or {}).get("version", "?")
        login = Result.ok(
            NAME,
            tr(
                f"вход выполнен ({client.settings.base}, Asterisk {version})",
                f"logged in ({client.settings.base}, Asterisk {version})",
            ),
        )
        try:
            await client.application(a.app)
        except AriNotFound:
            registered = tr(
                f"приложение {a.app} пока не зарегистрировано — его регистрирует запущенный демон "
                "(если служба уже работает: journalctl -u novofon-bridge, ari.unavailable)",
                f"application {a.app} not registered yet — the running daemon registers it "
                "(if the service already runs: journalctl -u novofon-bridge, ari.unavailable)",
            )
        else:
            registered = tr(
                f"приложение {a.app} зарегистрировано (демон подключён), звонки идут через ARI",
                f"application {a.app} registered (the daemon is connected), calls go over ARI",
            )
        return [login, Result.ok(NAME, registered)]
    finally:
        await client.close()
