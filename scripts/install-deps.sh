#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine, once: Debian's
# Prometheus (for promtool) and Alertmanager (for amtool, used by
# alert_rules/check.sh). Safe to run again: it skips what is present.
set -euo pipefail

apt_packages=()
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v amtool >/dev/null 2>&1 || apt_packages+=(prometheus-alertmanager)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
# The email channel's tests send to a real SMTP server (aiosmtpd, for
# Debian's own python3) and make their TLS certificates with openssl.
/usr/bin/python3 -c "import aiosmtpd" >/dev/null 2>&1 || apt_packages+=(python3-aiosmtpd)
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
# deploy/check.sh: Debian's docker-compose 1.29 validates the Compose file
# without a Docker engine (and brings python3-yaml).
command -v docker-compose >/dev/null 2>&1 || apt_packages+=(docker-compose)
# The live page's browser tests (tests/browser): Debian's Chromium, driven by
# playwright-core from npm (never a browser download).
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)

if ((${#apt_packages[@]})); then
    echo "installing Debian packages: ${apt_packages[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${apt_packages[@]}" >/dev/null
fi
# The Debian packages start a Prometheus server on :9090 and an Alertmanager
# on :9093; the tests need neither (they start their own Prometheus), so stop
# the packaged ones if systemd runs them.
for service in prometheus prometheus-alertmanager; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl stop "$service" || true
    fi
done
promtool --version | head -1
amtool --version 2>&1 | head -1
# playwright-core for tests/browser, exactly as package-lock.json says.
(cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
chromium --version 2>/dev/null | head -1
