#!/bin/sh
# Tests LuCI's status helper (luci-app-ferry/root/usr/libexec/ferry-status) under OpenWrt's
# busybox with stand-ins for uci and uclient-fetch: the agent's JSON passes through, and an
# unreachable agent or a bad setting gives {"running":false,"error":...} on stdout (LuCI's
# fs.exec_direct sees stdout only) with exit status 0.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
HELPER="$ROOT/openwrt/luci-app-ferry/root/usr/libexec/ferry-status"
# shellcheck source=openwrt/tests/lib/openwrt-sh.sh
. "$HERE/lib/openwrt-sh.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"
CHECK_SHOW="$tmp/check.out $tmp/out"
mkdir -p "$tmp/bin"
# uclient-fetch stand-in: prints $tmp/reply, or fails like the real one on a refused connection.
cat >"$tmp/bin/uclient-fetch" <<STANDIN
#!/bin/sh
[ -f "$tmp/reply" ] || { echo "Connection refused" >&2; exit 4; }
cat "$tmp/reply"
STANDIN
chmod +x "$tmp/bin/uclient-fetch"
export FAKE_UCI_STATE="$tmp/state"
run() {
	rc=0
	OWRT_PATH_EXTRA=${1:-} owrt_sh "$HELPER" >"$tmp/out" 2>"$tmp/err" || rc=$?
	[ "$rc" = 0 ]
}
not_running() { jq -e '.running == false and (.error | length > 0)' "$tmp/out" >/dev/null; }

: >"$FAKE_UCI_STATE"
echo '{"version":"0.1.0","peers":[]}' >"$tmp/reply"
passes_through() { run "$tmp/bin" && jq -e '.version == "0.1.0"' "$tmp/out" >/dev/null; }
check "a running agent's status JSON passes through" passes_through
rm -f "$tmp/reply"
agent_down() { run "$tmp/bin" && not_running; }
check "agent down: exit 0 and {running:false, error} on stdout" agent_down
no_tool() { run && not_running; }
check "no fetch tool at all (stock busybox has no wget): the same JSON" no_tool
echo "ferry.main.status_url=ftp://x" >"$FAKE_UCI_STATE"
bad_url() { run "$tmp/bin" && not_running && grep -q 'http://' "$tmp/out"; }
check "bad status_url: the same JSON with the reason" bad_url
check_done test-status
