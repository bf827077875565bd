#!/usr/bin/env bash
# Soak: 50 WireGuard clients (in-process boringtun peers re-handshaking in rounds, UDP echo v4+v6)
# plus a stock wireguard-go client downloading continuously, through ferry-agent in netns.
#   sudo bash bench/soak.sh [SECONDS] [tun|userspace]     (default 600 s, tun)
# Reports agent RSS growth, fd count and lost receipts (n/a until metering runs in the agent).
# The agent is built with FERRY_AGENT_PROFILE (default bench-fast, like the relay bench).
# Implementation: tests/tests/security_soak.rs (its 20 s default run is part of the e2e suite).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
egress=${2:-tun}
export FERRY_SOAK_SECS=$secs FERRY_SOAK_EGRESS=$egress
export FERRY_AGENT_PROFILE=${FERRY_AGENT_PROFILE:-bench-fast}
export FERRY_E2E_AGENT_LOG=${FERRY_E2E_AGENT_LOG:-info}
log=$(mktemp /tmp/ferry-soak.XXXXXX)
echo "soak: ${secs}s, egress $egress, agent profile $FERRY_AGENT_PROFILE (log $log)"
status=0
nice -n 5 cargo test -q -p ferry-e2e --test security_soak -- --ignored --nocapture \
  --test-threads=1 fifty_clients_soak_no_fd_growth >"$log" 2>&1 || status=$?
line=$(grep '^SOAK ' "$log" || true)
if [ -z "$line" ]; then
  echo "soak failed before the summary (exit $status):"; tail -40 "$log"; exit 1
fi
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
printf 'duration            %s s, %s rounds, %s handshakes\n' "$(get secs)" "$(get rounds)" "$(get handshakes)"
printf 'agent RSS           %s -> %s KiB (max %s, growth %s KiB)\n' \
  "$(get rss_start_kib)" "$(get rss_end_kib)" "$(get rss_max_kib)" "$(get rss_growth_kib)"
printf 'agent open fds      %s -> %s (max %s)\n' "$(get fds_start)" "$(get fds_end)" "$(get fds_max)"
printf 'stock client        %s MiB downloaded, %s failed downloads\n' "$(get downloaded_mib)" "$(get download_failures)"
printf 'lost receipts       %s\n' "$(get lost_receipts)"
[ "$status" -eq 0 ] && echo "result              pass" || { echo "result              FAIL (see $log)"; exit 1; }
