#!/usr/bin/env bash
# Installs everything Ferry's build, tests and demo need on a fresh Debian machine (root).
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
pkgs=(iproute2 iptables nftables wireguard-tools wireguard-go iperf3 jq curl python3 procps
      netcat-openbsd tcpdump dnsutils postgresql prometheus sqlite3 shellcheck
      bzip2 nodejs make util-linux iputils-ping)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: Rust toolchain (cargo) not found; install it with rustup first" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# A busybox configured like OpenWrt's, for the OpenWrt shell tests (no-op when already built).
sh "$(dirname "$0")/../openwrt/tests/busybox/build.sh"
echo "setup: done"
