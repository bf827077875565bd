#!/bin/sh
# 32-bit MIPS (mips/mipsel routers) has no 64-bit atomics: std's AtomicU64/AtomicI64 do not exist
# there and `openwrt/build.sh mipsel` fails to compile. This cheap check (no cross build) finds
# them in the non-test sources of every workspace crate ferry-agent is built from; use
# `portable_atomic::{AtomicU64, Ordering}` (workspace dependency, `fallback` feature) instead.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
cd "$ROOT"
crates="relay router-agent metering store telemetry dns keys receipts"
# shellcheck disable=SC2086 # one directory per crate
hits=$(find $crates -path '*/src/*' -name '*.rs' ! -name '*test*' 2>/dev/null | LC_ALL=C sort |
	xargs grep -nE '(std|core)::sync::atomic::(\{[^}]*)?\bAtomic[IU]64\b' || true)
if [ -n "$hits" ]; then
	echo "std 64-bit atomics (missing on 32-bit MIPS; use portable_atomic::AtomicU64):"
	echo "$hits"
	exit 1
fi
echo "test-atomics: no std AtomicU64/AtomicI64 in the agent's crates"
