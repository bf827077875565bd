#!/bin/sh
# The OpenWrt part of CI (scripts/test.sh calls it):
#  1. openwrt/tests/run.sh: shellcheck, JSON, LuCI view, UCI rendering, init script, fw4
#     uci-defaults, .ipk builder, feed Makefile, no std 64-bit atomics (no cross build, ~20 s);
#  2. openwrt/build.sh mipsel: the tier-3 cross build (std from source, cargo-zigbuild) of the
#     small-feature mipsel agent; static and stripped; under qemu-mipsel-static: --version,
#     genkey | pubkey, DoT/DoH refused, check-config of config/agent.example.toml; size budget.
# build.sh installs what it lacks (apt: qemu-user-static, binfmt-support, jq, file, binutils;
# rustup component rust-src; pip ziglang; cargo install cargo-zigbuild) unless FERRY_SKIP_SETUP=1.
# Environment:
#   FERRY_CI_QEMU_TESTS=1   also build ferry-receipts + ferry-relay-core tests for mipsel and run
#                           them under qemu (adds ~3 min cold)
#   FERRY_CI_ARCHES         arches to cross-build (default: mipsel; `all` = the five)
# Cross builds use target/cross (FERRY_CROSS_TARGET_DIR): keep it between CI runs to stay warm.
set -eu
ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"
t0=$(date +%s)
echo "== openwrt: checks without cross build (openwrt/tests/run.sh)"
sh openwrt/tests/run.sh
t1=$(date +%s)
arches=${FERRY_CI_ARCHES:-mipsel}
echo "== openwrt: cross build + qemu ($arches)"
skip_tests=1
[ "${FERRY_CI_QEMU_TESTS:-0}" != 1 ] || skip_tests=0
# shellcheck disable=SC2086 # arch list
FERRY_UPDATE_DOC=0 FERRY_SKIP_TESTS=$skip_tests sh openwrt/build.sh $arches
t2=$(date +%s)
echo "== openwrt/ci.sh passed: checks $((t1 - t0)) s, cross build + qemu $((t2 - t1)) s"
