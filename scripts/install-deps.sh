#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine, once: Debian's
# Prometheus (for promtool). Safe to run again: it skips what is present.
set -euo pipefail

apt_packages=()
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)

if ((${#apt_packages[@]})); then
    echo "installing Debian packages: ${apt_packages[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${apt_packages[@]}" >/dev/null
fi
# The Debian package starts a Prometheus server on :9090; the tests start
# their own, so stop the packaged one if systemd runs it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
promtool --version | head -1
