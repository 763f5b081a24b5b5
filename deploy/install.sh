#!/usr/bin/env bash
# novofon-bridge as a systemd service, from this checkout (run as root):
#   sudo deploy/install.sh               install; config.yaml and env are kept if they exist
#   sudo deploy/install.sh --upgrade     this checkout's version over the installed one, restart if running
#   sudo deploy/install.sh --uninstall   remove the program and the service (config, secrets, state stay)
# Where things go:
#   /opt/novofon-bridge/venv             the program (a Python >= 3.11 virtualenv)
#   /opt/novofon-bridge/asterisk-conf    the Asterisk snippets "novofon-bridge asterisk install" uses
#   /usr/local/bin/novofon-bridge        the command, on PATH
#   /etc/novofon-bridge/                 config.yaml and env (secrets, 0600)
#   /var/lib/novofon-bridge              state (systemd StateDirectory), records.jsonl (logrotate)
set -euo pipefail

PREFIX=/opt/novofon-bridge
VENV=$PREFIX/venv
LINK=/usr/local/bin/novofon-bridge
ETC=/etc/novofon-bridge
UNIT=/etc/systemd/system/novofon-bridge.service
LOGROTATE=/etc/logrotate.d/novofon-bridge
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*" >&2; exit 1; }

usage() {
    say "Использование: sudo deploy/install.sh [--upgrade | --uninstall [--keep-asterisk]]"
}

# The newest Python >= 3.11 on PATH (python3.13 ... python3.11, then python3).
find_python() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

no_python() {
    cat >&2 <<'EOF'
Нужен Python 3.11 или новее (python3.13 … python3.11), его нет на этой машине.
  Debian 12, FreePBX 17:  sudo apt install python3 python3-venv          (там Python 3.11)
  Ubuntu 24.04:           sudo apt install python3 python3-venv          (там Python 3.12)
  Ubuntu 22.04 (Python 3.10 в системе), один из двух способов:
    sudo apt install python3.11 python3.11-venv      (пакет из раздела universe; если apt его не
                                                      находит: sudo add-apt-repository universe
                                                      && sudo apt update)
    sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt update
    sudo apt install python3.12 python3.12-venv      (новее, из PPA deadsnakes)
Системный python3 не заменяйте: novofon-bridge сам найдёт python3.11/3.12/3.13.
Затем снова: sudo deploy/install.sh
EOF
}

need_root() { [ "$(id -u)" = 0 ] || die "Запустите от root: sudo deploy/install.sh $*"; }

systemd_running() { [ -d /run/systemd/system ]; }

# LAME turns WAV recordings into MP3 for Telegram (sendAudio takes MP3/M4A only; without it the WAV
# goes as a document). From the distribution's packages; never fatal: the bridge works without it.
install_encoder() {
    command -v lame >/dev/null 2>&1 && return 0
    if command -v apt-get >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lame >/dev/null 2>&1; then
        say "Установлен lame: записи разговоров уходят в Telegram как MP3."
    else
        say "Не удалось установить lame (apt-get install lame): записи уйдут в Telegram файлом WAV."
    fi
}

# The virtualenv with this checkout's version in it; a new one when the Python changed.
install_program() {
    local py=$1
    if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$py" -c 'import ensurepip, venv' 2>/dev/null \
            || die "У $py нет модуля venv: sudo apt install $(basename "$py")-venv, затем снова sudo deploy/install.sh"
        install -d -m 0755 "$PREFIX"
        "$py" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet --upgrade "$SRC"
    install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
    rm -rf "$PREFIX/asterisk-conf"
    install -d -m 0755 "$PREFIX/asterisk-conf"
    install -m 0644 "$SRC"/asterisk-conf/*.conf "$PREFIX/asterisk-conf/"
    ln -sfn "$VENV/bin/novofon-bridge" "$LINK"
    install -m 0644 "$SRC/deploy/novofon-bridge.service" "$UNIT"
    install -m 0644 "$SRC/deploy/logrotate" "$LOGROTATE"
    if systemd_running; then systemctl daemon-reload; fi
}

version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("novofon-bridge"))' 2>/dev/null || echo "?"; }

do_install() {
    need_root
    local py
    py=$(find_python) || { no_python; exit 1; }
    say "Python: $py ($("$py" -c 'import platform; print(platform.python_version())'))"
    id novofon-bridge >/dev/null 2>&1 \
        || useradd --system --home-dir /var/lib/novofon-bridge --shell /usr/sbin/nologin novofon-bridge
    getent group asterisk >/dev/null || groupadd --system asterisk
    install_program "$py"
    install_encoder
    install -d -m 0750 -g novofon-bridge "$ETC"
    [ -e "$ETC/config.yaml" ] || install -m 0640 -g novofon-bridge "$SRC/config.yaml" "$ETC/config.yaml"
    [ -e "$ETC/env" ] || install -m 0600 "$SRC/deploy/env.example" "$ETC/env"
    say "Установлено: novofon-bridge $(version), команда $LINK. Дальше:"
    say "  1. sudo novofon-bridge asterisk install --dry-run     # что изменится в /etc/asterisk (FreePBX: --freepbx)"
    say "     sudo novofon-bridge asterisk install               # подключить; секрет AMI попадёт в $ETC/env"
    say "  2. впишите SIP-логин и пароль Novofon в /etc/asterisk/novofon-bridge_pjsip.conf, номера в novofon-bridge_extensions.conf"
    say "  3. sudo \$EDITOR $ETC/config.yaml"
    say "  4. sudo novofon-bridge check"
    say "  5. sudo systemctl enable --now novofon-bridge && journalctl -u novofon-bridge -f"
}

do_upgrade() {
    need_root --upgrade
    [ -x "$VENV/bin/novofon-bridge" ] || die "novofon-bridge не установлен: sudo deploy/install.sh"
    local py old
    py=$(find_python) || { no_python; exit 1; }
    old=$(version)
    install_program "$py"
    install_encoder
    say "Обновлено: novofon-bridge $old -> $(version). $ETC/config.yaml и env не тронуты."
    if systemd_running && systemctl is-active --quiet novofon-bridge; then
        systemctl restart novofon-bridge
        say "Служба перезапущена: systemctl status novofon-bridge"
    fi
}

asterisk_still_wired() {
    grep -qs '^; >>> novofon-bridge' /etc/asterisk/*.conf || compgen -G '/etc/asterisk/novofon-bridge_*.conf' >/dev/null
}

do_uninstall() {
    need_root --uninstall
    if [ "${1:-}" != "--keep-asterisk" ] && asterisk_still_wired; then
        die "В /etc/asterisk остались настройки novofon-bridge (транк Novofon, пользователь AMI). Сначала:
  sudo novofon-bridge asterisk uninstall
или оставьте их (транк продолжит работать): sudo deploy/install.sh --uninstall --keep-asterisk"
    fi
    if systemd_running && systemctl list-unit-files novofon-bridge.service >/dev/null 2>&1; then
        systemctl disable --now novofon-bridge.service >/dev/null 2>&1 || true
    fi
    rm -f "$UNIT" "$LOGROTATE"
    if [ "$(readlink "$LINK" 2>/dev/null)" = "$VENV/bin/novofon-bridge" ]; then rm -f "$LINK"; fi
    rm -rf "$PREFIX"
    if systemd_running; then systemctl daemon-reload; fi
    say "Удалено: программа ($PREFIX), служба, $LINK, $LOGROTATE."
    say "Остались: $ETC (настройки и секреты), /var/lib/novofon-bridge (очередь доставки, records.jsonl),"
    say "пользователь novofon-bridge. Удалить и их: sudo rm -r $ETC /var/lib/novofon-bridge && sudo userdel novofon-bridge"
}

main() {
    case "${1:-}" in
        "") do_install ;;
        --upgrade) do_upgrade ;;
        --uninstall) do_uninstall "${2:-}" ;;
        -h | --help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
