#!/bin/sh
# The OpenWrt part of CI (scripts/test.sh calls it):
#  1. openwrt/tests/run.sh: shellcheck, JSON, LuCI view, UCI rendering, init script, fw4
#     uci-defaults, .ipk builder, feed Makefile, no std 64-bit atomics (no cross build, ~20 s);
#  2. openwrt/build.sh all: router-profile builds of ferry-agent for the five router arches (aarch64,
#     x86_64: prebuilt musl std; armv7, mipsel, mips: std from source with cargo-zigbuild); each
#     static and stripped, and under qemu-<arch>-static: --version, genkey | pubkey, DoT/DoH
#     refused on the small (mips/mipsel) builds, check-config of config/agent.example.toml;
#     the mipsel size ceiling.
# build.sh installs what it lacks (apt: qemu-user-static, binfmt-support, jq, file, binutils;
# rustup component rust-src; pip ziglang; cargo install cargo-zigbuild) unless FERRY_SKIP_SETUP=1.
# Environment:
#   FERRY_CI_QEMU_TESTS     1 (default): also build the ferry-receipts + ferry-relay-core unit tests
#                           for big-endian mips and run them under qemu-mips-static (~95 s cold);
#                           0 skips them. FERRY_QEMU_TEST_ARCHES picks other arches.
#   FERRY_CI_ARCHES         arches to cross-build (default: all = the five; e.g. `mipsel` for a
#                           quick local run)
# Cross builds use target/cross (FERRY_CROSS_TARGET_DIR): keep it between CI runs to stay warm.
set -eu
ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"
t0=$(date +%s)
echo "== openwrt: checks without cross build (openwrt/tests/run.sh)"
sh openwrt/tests/run.sh
t1=$(date +%s)
arches=${FERRY_CI_ARCHES:-all}
echo "== openwrt: cross build + qemu ($arches)"
skip_tests=0
[ "${FERRY_CI_QEMU_TESTS:-1}" = 1 ] || skip_tests=1
# shellcheck disable=SC2086 # arch list
FERRY_UPDATE_DOC=0 FERRY_SKIP_TESTS=$skip_tests FERRY_QEMU_TEST_ARCHES="${FERRY_QEMU_TEST_ARCHES:-mips}" \
	sh openwrt/build.sh $arches
t2=$(date +%s)
echo "== openwrt/ci.sh passed: checks $((t1 - t0)) s, cross build + qemu $((t2 - t1)) s"
