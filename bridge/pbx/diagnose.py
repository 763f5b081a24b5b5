"""What went wrong between the bridge and Asterisk, said for the sysadmin: the cause and the fix.

Used by every command that talks to AMI (check, status, call, callback) so that "nothing listens
on the port", "something listens but is not AMI", "the password is wrong" and "a permission is
missing" never read alike.
"""

from __future__ import annotations

from bridge.i18n import tr
from bridge.pbx.ami import AmiLoginError, AmiNoBanner, AmiSettings, AmiUnreachable
from bridge.pbx.ami_protocol import AmiError, UnsafeAction


def ami_failure(e: AmiError, s: AmiSettings) -> tuple[str, str]:
    """(what is wrong, the fix) for a connection or login that failed."""
    where, user = s.address, s.username
    if isinstance(e, AmiUnreachable):
        cause = e.__cause__
        reason = (
            tr("соединение отклонено", "connection refused")
            if isinstance(cause, ConnectionRefusedError)
            else tr(f"нет ответа за {s.connect_timeout:g} с", f"no answer within {s.connect_timeout:g} s")
            if isinstance(cause, TimeoutError)
            else str(cause or e)
        )
        return (
            tr(f"нет подключения к AMI {where}: {reason}", f"cannot connect to AMI at {where}: {reason}"),
            tr(
                "Asterisk запущен (systemctl status asterisk)? В manager.conf [general]: enabled = yes, "
                "port и bindaddr те же, что asterisk.ami.port / asterisk.ami.host в config.yaml; после "
                "правки "
                "asterisk -rx 'manager reload'",
                "is Asterisk running (systemctl status asterisk)? In manager.conf [general]: enabled = yes, "
                "port and bindaddr as asterisk.ami.port / asterisk.ami.host in config.yaml; after editing "
                "asterisk -rx 'manager reload'",
            ),
        )
    if isinstance(e, AmiNoBanner):
        return (
            tr(
                f"{where} принял соединение, но не прислал приветствие AMI за {s.connect_timeout:g} с",
                f"{where} accepted the connection but sent no AMI banner within {s.connect_timeout:g} s",
            ),
            tr(
                "на этом порту не AMI (проверьте asterisk.ami.port: AMI обычно 5038) или Asterisk завис "
                "(asterisk -rx 'core show uptime'; перезапустите его)",
                "this port is not AMI (check asterisk.ami.port: AMI is usually 5038) or Asterisk hangs "
                "(asterisk -rx 'core show uptime'; restart it)",
            ),
        )
    if isinstance(e, AmiLoginError):
        return (
            tr(
                f"Asterisk отказал во входе пользователю AMI {user!r} на {where} (Authentication failed)",
                f"Asterisk refused AMI user {user!r} at {where} (Authentication failed)",
            ),
            tr(
                f"пароль: secret в секции [{user}] manager.conf должен совпадать с AMI_SECRET в "
                "/etc/novofon-bridge/env (asterisk.ami.secret); имя — с asterisk.ami.username; адрес моста "
                f"должен проходить permit/deny секции [{user}]; после правки asterisk -rx 'manager reload'",
                f"the password: secret in manager.conf's [{user}] must equal AMI_SECRET in "
                "/etc/novofon-bridge/env (asterisk.ami.secret); the name asterisk.ami.username; the bridge's "
                f"address must pass permit/deny of [{user}]; after editing asterisk -rx 'manager reload'",
            ),
        )
    if isinstance(e, UnsafeAction):
        return (
            tr(f"действие AMI не отправлено: {e}", f"AMI action not sent: {e}"),
            tr(
                "в значении из config.yaml или аргументах есть управляющий символ (перевод строки) — "
                "уберите его",
                "a value from config.yaml or the arguments holds a control character (a newline): remove it",
            ),
        )
    return (
        tr(f"связь с AMI {where} прервалась: {e}", f"the AMI connection to {where} failed: {e}"),
        tr(
            "проверьте, что Asterisk работает (asterisk -rx 'core show uptime'), и повторите",
            "check that Asterisk runs (asterisk -rx 'core show uptime') and try again",
        ),
    )
