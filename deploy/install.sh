#!/usr/bin/env bash
# Install novofon-bridge as a systemd service from this checkout (run as root):
#   /opt/novofon-bridge/venv      the program
#   /etc/novofon-bridge/          config.yaml and env (secrets), kept if they already exist
#   /var/lib/novofon-bridge       state (systemd StateDirectory)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
src=$(cd "$(dirname "$0")/.." && pwd)

id novofon-bridge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/novofon-bridge --shell /usr/sbin/nologin novofon-bridge
getent group asterisk >/dev/null || groupadd --system asterisk

install -d -m 0755 /opt/novofon-bridge
python3 -m venv /opt/novofon-bridge/venv
/opt/novofon-bridge/venv/bin/pip install --quiet --upgrade pip
/opt/novofon-bridge/venv/bin/pip install --quiet "$src"
install -m 0644 "$src/README.md" /opt/novofon-bridge/README.md

install -d -m 0750 -g novofon-bridge /etc/novofon-bridge
[ -e /etc/novofon-bridge/config.yaml ] || install -m 0640 -g novofon-bridge "$src/config.yaml" /etc/novofon-bridge/config.yaml
[ -e /etc/novofon-bridge/env ] || install -m 0600 "$src/deploy/env.example" /etc/novofon-bridge/env

install -m 0644 "$src/deploy/novofon-bridge.service" /etc/systemd/system/novofon-bridge.service
systemctl daemon-reload
echo "Installed. Next: edit /etc/novofon-bridge/env (AMI_SECRET) and /etc/novofon-bridge/config.yaml, then"
echo "  novofon-bridge check -c /etc/novofon-bridge/config.yaml   # /opt/novofon-bridge/venv/bin/novofon-bridge"
echo "  systemctl enable --now novofon-bridge && journalctl -u novofon-bridge -f"
