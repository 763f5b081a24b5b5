"""``check`` for Telegram: the token works (getMe) and every configured chat can be written to
(getChat; in groups also getChatMember of the bot itself). Through the one Bot API client."""

from __future__ import annotations

from typing import Any

from bridge.config import Config
from bridge.errors import DeliveryError
from bridge.http.client import Http
from bridge.i18n import tr
from bridge.integrations.telegram.api import TelegramApi, TelegramError, is_group
from bridge.preflight import Check, Context, Result

TIMEOUT = 10.0
CANNOT_POST = ("left", "kicked")


def checks(ctx: Context) -> list[Check]:
    if not ctx.cfg.sinks.telegram.enabled:
        return []
    return [Check("Telegram", lambda: telegram(ctx.cfg))]


def configured_chats(cfg: Config) -> dict[str, str]:
    """chat id -> where config.yaml names it."""
    t = cfg.sinks.telegram
    chats: dict[str, str] = {}
    for chat in t.group_chats:
        chats.setdefault(chat, "sinks.telegram.group_chats")
    for chat in t.sms_chats:
        chats.setdefault(chat, "sinks.telegram.sms_chats")
    for ext, employee in cfg.directory.employees.items():
        if employee.telegram_chat_id:
            chats.setdefault(employee.telegram_chat_id, f"directory.employees.{ext}.telegram_chat_id")
    return chats


async def telegram(cfg: Config) -> list[Result]:
    http = Http(timeout=TIMEOUT)
    api = TelegramApi(cfg.sinks.telegram, http)
    try:
        try:
            me = await api.call("getMe", {}, timeout=TIMEOUT)
        except TelegramError as e:
            return [_token_failed(e)]
        except DeliveryError as e:  # transport: the API is not reachable
            return [_unreachable(cfg, str(e))]
        bot = f"@{me.get('username', '?')}" if isinstance(me, dict) else "?"
        results = [
            Result.ok(
                tr("Telegram: бот", "Telegram: bot"),
                tr(f"токен верный, бот {bot}", f"the token works, bot {bot}"),
            )
        ]
        bot_id = me.get("id") if isinstance(me, dict) else None
        for chat, where in configured_chats(cfg).items():
            results.append(await _chat(api, chat, where, bot, bot_id))
        return results
    finally:
        await http.close()


def _token_failed(e: TelegramError) -> Result:
    name = tr("Telegram: бот", "Telegram: bot")
    if e.code in (401, 404):
        return Result.error(
            name,
            tr(
                f"Telegram не принял токен ({e.code} {e.description})",
                f"Telegram refused the token ({e.code} {e.description})",
            ),
            tr(
                "возьмите токен у @BotFather (/token) и положите в /etc/novofon-bridge/env: "
                "TELEGRAM_BOT_TOKEN=...",
                "get the token from @BotFather (/token) and put it into /etc/novofon-bridge/env: "
                "TELEGRAM_BOT_TOKEN=...",
            ),
        )
    return Result.error(name, str(e), tr("повторите проверку позже", "run the check again later"))


def _unreachable(cfg: Config, error: str) -> Result:
    url = cfg.sinks.telegram.api_url
    return Result.error(
        tr("Telegram: бот", "Telegram: bot"),
        tr(f"{url} недоступен: {error}", f"{url} is unreachable: {error}"),
        tr(
            "проверьте с этой машины доступ в интернет, DNS и межсетевой экран (HTTPS наружу); при "
            "блокировке укажите доступный адрес Bot API в sinks.telegram.api_url",
            "check this machine's internet access, DNS and firewall (outgoing HTTPS); when it is blocked, "
            "set a reachable Bot API address in sinks.telegram.api_url",
        ),
    )


async def _chat(api: TelegramApi, chat: str, where: str, bot: str, bot_id: Any) -> Result:
    name = tr(f"Telegram: чат {chat}", f"Telegram: chat {chat}")
    try:
        info = await api.call("getChat", {"chat_id": chat}, timeout=TIMEOUT)
        if is_group(chat) and bot_id is not None:
            member = await api.call("getChatMember", {"chat_id": chat, "user_id": bot_id}, timeout=TIMEOUT)
            status = member.get("status") if isinstance(member, dict) else None
            if status in CANNOT_POST or (
                status == "restricted" and not member.get("can_send_messages", True)
            ):
                return Result.error(
                    name,
                    tr(
                        f"бот {bot} не может писать в этот чат ({status})",
                        f"bot {bot} cannot post to this chat ({status})",
                    ),
                    tr(
                        f"добавьте {bot} в группу снова и разрешите ему отправлять сообщения",
                        f"add {bot} to the group again and let it send messages",
                    ),
                )
    except TelegramError as e:
        return _chat_failed(name, chat, where, bot, e)
    except DeliveryError as e:
        return Result.error(name, str(e), tr("повторите проверку позже", "run the check again later"))
    title = (
        (info.get("title") or info.get("username") or info.get("first_name") or "")
        if isinstance(info, dict)
        else ""
    )
    return Result.ok(name, tr(f"доступен ({title}, {where})", f"reachable ({title}, {where})"))


def _chat_failed(name: str, chat: str, where: str, bot: str, e: TelegramError) -> Result:
    if e.migrate_to:
        return Result.error(
            name,
            tr(
                f"группа стала супергруппой, у неё новый id {e.migrate_to}",
                f"the group became a supergroup with the new id {e.migrate_to}",
            ),
            tr(
                f"замените {chat} на {e.migrate_to} в {where}",
                f"replace {chat} with {e.migrate_to} in {where}",
            ),
        )
    if is_group(chat):
        fix = tr(
            f"добавьте бота {bot} в группу; id группы — число с минусом (-100...), его видно в getUpdates "
            "после "
            f"сообщения в группе; проверьте {where}",
            f"add the bot {bot} to the group; a group's id is a negative number (-100...), seen in "
            "getUpdates "
            f"after a message in the group; check {where}",
        )
    else:
        fix = tr(
            f"сотрудник должен открыть бота {bot} и нажать «Старт» (/start): бот не может написать первым; "
            f"проверьте id в {where}",
            f"the employee must open the bot {bot} and press Start (/start): a bot cannot write first; "
            f"check the id in {where}",
        )
    return Result.error(
        name,
        tr(f"Telegram ответил {e.code}: {e.description}", f"Telegram answered {e.code}: {e.description}"),
        fix,
    )
