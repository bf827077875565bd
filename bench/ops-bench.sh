#!/usr/bin/env bash
# Per-operation costs (criterion, bench/ops) in both build profiles, one run, as a table with
# ratios: release (opt-level 3: servers, desktop client), router (opt-level "z": openwrt/build.sh,
# the feed), and router with opt-level 3 for the curve crates only (curve25519-dalek,
# x25519-dalek: what the relay's handshake budget under flood depends on).
# With --mipsel-size it also cross-builds the mipsel agent with that override (cold build in
# target/cross-curve-o3, ~5 min) and reports the byte cost against dist/mipsel/ferry-agent.
# Usage: bench/ops-bench.sh [--mipsel-size]     (quiet machine: the numbers are ratios of one run)
set -euo pipefail
cd "$(dirname "$0")/.."
CURVE_O3=(--config 'profile.router.package.curve25519-dalek.opt-level=3'
          --config 'profile.router.package.x25519-dalek.opt-level=3')
ARGS=(-- --noplot --warm-up-time 1 --measurement-time 3)
echo "== release profile"
cargo bench -q --locked -p ferry-bench --bench ops --profile release "${ARGS[@]}" --save-baseline release >/dev/null
echo "== router profile"
cargo bench -q --locked -p ferry-bench --bench ops --profile router "${ARGS[@]}" --save-baseline router >/dev/null
echo "== router profile, curve crates at opt-level 3"
cargo bench -q --locked -p ferry-bench --bench ops --profile router "${CURVE_O3[@]}" "${ARGS[@]}" --save-baseline router-curve-o3 >/dev/null
python3 - "${CARGO_TARGET_DIR:-target}/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
rows = []
for dirpath, dirs, files in os.walk(root):
    if os.path.basename(dirpath) == "release" and "estimates.json" in files:
        bench = os.path.relpath(os.path.dirname(dirpath), root)
        def mean(base):
            p = os.path.join(root, bench, base, "estimates.json")
            return json.load(open(p))["mean"]["point_estimate"] if os.path.exists(p) else None
        rows.append((bench, mean("release"), mean("router"), mean("router-curve-o3")))
def fmt(ns):
    return "-" if ns is None else (f"{ns/1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns")
print("| operation | release (o3) | router (z) | router + curve o3 | router/release | router/(router+curve o3) |")
print("|---|---|---|---|---|---|")
for b, r, z, c in sorted(rows):
    ratio = lambda a, d: "-" if a is None or d is None else f"{a/d:.2f}x"
    print(f"| {b} | {fmt(r)} | {fmt(z)} | {fmt(c)} | {ratio(z, r)} | {ratio(z, c)} |")
PY
if [ "${1:-}" = --mipsel-size ]; then
  base=dist/mipsel/ferry-agent
  [ -f "$base" ] || FERRY_SKIP_TESTS=1 FERRY_UPDATE_DOC=0 sh openwrt/build.sh mipsel >/dev/null
  cp "$base" /tmp/ferry-agent.mipsel.z
  FERRY_CARGO_ARGS="${CURVE_O3[*]}" FERRY_CROSS_TARGET_DIR=target/cross-curve-o3 FERRY_SKIP_TESTS=1 \
    FERRY_UPDATE_DOC=0 sh openwrt/build.sh mipsel >/dev/null
  a=$(stat -c %s /tmp/ferry-agent.mipsel.z); b=$(stat -c %s "$base")
  echo "mipsel agent: router $a B, router + curve crates o3 $b B ($((b - a)) B)"
  cp /tmp/ferry-agent.mipsel.z "$base"
fi
