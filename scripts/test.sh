#!/usr/bin/env bash
# Runs every check Ferry has: format, lints, unit/property/replay tests, and (as root) the
# network-namespace end-to-end tests. This is what `.ci/run` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# CI builds once from scratch: incremental caches would only cost disk (several GB) and time.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}; fi
echo "== cargo fmt --check"; cargo fmt --all --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
if [ "$(id -u)" -eq 0 ]; then
  # The ledger's store suite also runs against a real PostgreSQL (installed by setup.sh).
  export FERRY_TEST_POSTGRES_URL="${FERRY_TEST_POSTGRES_URL:-$(bash ledger/ci-postgres.sh)}"
fi
echo "== cargo test (workspace)"; cargo test --workspace --locked
echo "== ferry-dns lean backend (router builds)"; cargo test -p ferry-dns --locked --no-default-features --features testserver
cargo clippy -p ferry-dns --locked --no-default-features --features testserver --all-targets -- -D warnings
echo "== ferry-agent small feature set (mips/mipsel router builds)"
cargo clippy -p ferry-agent --locked --no-default-features --all-targets -- -D warnings
cargo test -p ferry-agent --locked --no-default-features
if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null; then
  echo "== root-only tests: real Prometheus scrape, tmpfs ENOSPC"
  cargo test -p ferry-telemetry -p ferry-store --locked -- --ignored
  echo "== end-to-end tests (network namespaces, root)"
  cargo test -p ferry-e2e --locked -- --ignored --test-threads=1
  # OpenWrt: packaging checks, then release cross builds for all five router architectures,
  # each run under qemu, with the mipsel size check (FERRY_CI_ARCHES=mipsel: just that one).
  sh openwrt/ci.sh
else
  if [ "${CI:-}" = true ]; then echo "e2e tests need root in CI" >&2; exit 1; fi
  echo "== end-to-end tests and OpenWrt cross build SKIPPED (need root and iproute2)"
  sh openwrt/tests/run.sh
fi
echo "== all tests passed"
