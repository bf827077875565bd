#!/usr/bin/env bash
# The relay directory under load: 10,000 relays announced (signed descriptors, probes answered
# by a stand-in prober), then GET /v1/relays timed through the HTTP router with the filters
# clients use, on SQLite and (if FERRY_TEST_POSTGRES_URL is set) PostgreSQL.
#   bash bench/directory-bench.sh [RELAYS] [QUERIES]
set -euo pipefail
cd "$(dirname "$0")/.."
relays=${1:-10000}
queries=${2:-2000}
nice -n 10 cargo build -q -p ferry-ledger --profile bench-fast
bin=target/bench-fast/ferry-ledger
RUST_LOG=warn "$bin" bench-directory --relays "$relays" --queries "$queries"
if [ -n "${FERRY_TEST_POSTGRES_URL:-}" ]; then
  RUST_LOG=warn "$bin" bench-directory --relays "$relays" --queries "$queries" \
    --database-url "$FERRY_TEST_POSTGRES_URL"
fi
