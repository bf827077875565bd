#!/usr/bin/env bash
# The Ferry demo (as root): a client, a home router (with a LAN) and an internet host in network
# namespaces; ferry-agent relays the client's traffic in paid mode, `ferry connect` co-signs the
# byte receipts and ferry-ledger credits the relay. Everything it creates is named fe<pid>x<n>-*
# and removed at the end, also on Ctrl-C. The flow lives in tests/src/demo.rs (ferry-e2e),
# shared with the `demo` end-to-end test.
#   FERRY_DEMO_PROFILE=release  build with the release profile (default: debug, faster to build)
#   FERRY_DEMO_MIB=20           MiB downloaded through the relay
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: needs root (network namespaces); run: sudo bash scripts/demo.sh" >&2; exit 1; }
for tool in ip nft curl cargo; do
  command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found; run scripts/setup.sh first" >&2; exit 1; }
done
profile=${FERRY_DEMO_PROFILE:-debug}
case "$profile" in
  debug) flag=(); dir=debug ;;
  release) flag=(--release); dir=release ;;
  *) flag=(--profile "$profile"); dir=$profile ;;
esac
target=${CARGO_TARGET_DIR:-$PWD/target}/$dir
echo "== cargo build ($profile profile): ferry-agent, ferry-ledger, ferry, ferry-demo"
start=$(date +%s)
cargo build --quiet --locked "${flag[@]}" -p ferry-agent --bin ferry-agent -p ferry-ledger --bin ferry-ledger \
  -p ferry-client --bin ferry -p ferry-e2e --bin ferry-demo
echo "== built in $(( $(date +%s) - start )) s"
export FERRY_AGENT_BIN=$target/ferry-agent FERRY_LEDGER_BIN=$target/ferry-ledger FERRY_BIN=$target/ferry
export FERRY_DEMO_PROFILE=$profile
exec "$target/ferry-demo"
