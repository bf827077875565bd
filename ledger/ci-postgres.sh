#!/usr/bin/env bash
# Installs (Debian package), starts and prepares a local PostgreSQL for ferry-ledger tests,
# then prints the connection URL on stdout. Idempotent; run as root.
#   export FERRY_TEST_POSTGRES_URL=$(bash ledger/ci-postgres.sh)
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
fi
ver=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
if [ -z "$ver" ]; then
  ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n | tail -1)
  pg_createcluster "$ver" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$ver" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
for _ in $(seq 1 30); do
  su postgres -c "psql -p $port -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -p $port -qAtc \"select 1 from pg_roles where rolname='ferry'\"" | grep -q 1 ||
  su postgres -c "psql -p $port -qc \"create role ferry login password 'ferry'\"" >&2
su postgres -c "psql -p $port -qAtc \"select 1 from pg_database where datname='ferry_ledger_test'\"" | grep -q 1 ||
  su postgres -c "createdb -p $port -O ferry ferry_ledger_test" >&2
echo "postgres://ferry:ferry@127.0.0.1:$port/ferry_ledger_test"
