#!/bin/sh
# Tests LuCI's pause helper (luci-app-ferry/root/usr/libexec/ferry-pause) under OpenWrt's
# busybox with a stand-in ferry-agent: pause/resume are passed on with the rendered config and
# its answer printed; other words are refused without running anything; errors (no rendered
# config yet, the agent's own) are one line on stdout with exit status 0.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
HELPER="$ROOT/openwrt/luci-app-ferry/root/usr/libexec/ferry-pause"
# shellcheck source=openwrt/tests/lib/openwrt-sh.sh
. "$HERE/lib/openwrt-sh.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"
CHECK_SHOW="$tmp/out $tmp/calls"
mkdir -p "$tmp/bin"
cat >"$tmp/bin/ferry-agent" <<STANDIN
#!/bin/sh
echo "\$*" >>"$tmp/calls"
[ "\$1" = pause ] && { echo "sharing paused: stand-in"; exit 0; }
[ "\$1" = resume ] && { echo "error: stand-in refuses" >&2; exit 1; }
exit 2
STANDIN
chmod +x "$tmp/bin/ferry-agent"
: >"$tmp/agent.toml"
run() {
	rc=0
	FERRY_AGENT_CONFIG=${CFG:-$tmp/agent.toml} OWRT_PATH_EXTRA="$tmp/bin" owrt_sh "$HELPER" "$@" >"$tmp/out" 2>&1 || rc=$?
	[ "$rc" = 0 ]
}
pauses() { run pause && grep -q 'sharing paused' "$tmp/out" && grep -qx "pause --config $tmp/agent.toml" "$tmp/calls"; }
check "pause runs ferry-agent pause on the rendered config and prints its answer" pauses
agent_error() { run resume && grep -q '^error: .*stand-in refuses' "$tmp/out"; }
check "the agent's error: one line on stdout, exit 0" agent_error
: >"$tmp/calls"
refused() { run 'pause; reboot' && grep -q usage "$tmp/out" && [ ! -s "$tmp/calls" ]; }
check "anything but pause/resume runs nothing" refused
no_config() { CFG="$tmp/missing.toml" run pause && grep -q 'does not exist yet' "$tmp/out"; }
check "no rendered config yet: says to start the agent" no_config
check_done test-pause
