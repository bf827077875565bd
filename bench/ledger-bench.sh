#!/usr/bin/env bash
# Receipt ingestion throughput of ferry-ledger on SQLite and PostgreSQL.
#   bash bench/ledger-bench.sh [RECEIPTS] [BATCH]
# Builds the bench-fast profile, runs `ferry-ledger bench` against a fresh SQLite file and,
# if FERRY_TEST_POSTGRES_URL is set (or ledger/ci-postgres.sh can start one as root),
# against PostgreSQL. Each run checks that the relays were credited exactly the final
# cumulative bytes x price.
set -euo pipefail
cd "$(dirname "$0")/.."
receipts=${1:-100000}
batch=${2:-1000}
nice -n 10 cargo build -q -p ferry-ledger --profile bench-fast
bin=target/bench-fast/ferry-ledger
echo "== SQLite"
RUST_LOG=warn "$bin" bench --receipts "$receipts" --batch "$batch"
url=${FERRY_TEST_POSTGRES_URL:-}
if [ -z "$url" ] && [ "$(id -u)" -eq 0 ]; then url=$(bash ledger/ci-postgres.sh); fi
if [ -n "$url" ]; then
  echo "== PostgreSQL"
  RUST_LOG=warn "$bin" bench --receipts "$receipts" --batch "$batch" --database-url "$url"
else
  echo "== PostgreSQL skipped (set FERRY_TEST_POSTGRES_URL)"
fi
