#!/bin/sh
# Runs every OpenWrt check that needs no cross build (well under a minute): sh -n and shellcheck
# on all shell scripts, jq on the JSON files, node --check and a behaviour test of the LuCI view,
# the UCI->TOML rendering, the init script, the uci-defaults firewall script, the .ipk builder
# and the feed Makefile; no std 64-bit atomics in the agent's crates (32-bit MIPS lacks them).
# Needs: shellcheck, jq, node, python3 >= 3.11 (tomllib), GNU make/tar/gzip, file, and the
# OpenWrt-configured busybox from tests/busybox/build.sh (scripts/setup.sh builds it): the
# renderer, init script and uci-defaults run under it with only its applets in PATH.
# Usage: openwrt/tests/run.sh     (exit status 0 when everything passed)
set -u
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
cd "$ROOT" || exit 1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"

for tool in shellcheck jq node python3 make; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "openwrt/tests/run.sh: $tool is required" >&2
		exit 1
	}
done

# Shell scripts: files under openwrt/ with a sh shebang or a `# shellcheck shell=sh` header.
scripts=$(find openwrt -type f ! -name '*.js' ! -name '*.json' ! -name '*.py' ! -name Makefile | LC_ALL=C sort |
	while read -r f; do
		if head -n1 "$f" | grep -q '^#!/bin/sh' || head -n1 "$f" | grep -q '^# shellcheck shell=sh'; then echo "$f"; fi
	done)
for f in $scripts; do
	check "sh -n $f" sh -n "$f"
done
# shellcheck disable=SC2086 # one argument per script
check "shellcheck ($(echo $scripts | wc -w) scripts)" shellcheck -x -s sh $scripts

for f in $(find openwrt -name '*.json' | LC_ALL=C sort); do
	check "jq $f" jq -e . "$f"
done

js=openwrt/luci-app-ferry/htdocs/luci-static/resources/view/ferry/config.js
# LuCI loads a view as a function body (it ends in a top-level `return`): check it wrapped.
{
	echo '(function() {'
	cat "$js"
	echo '});'
} >"$tmp/view.js"
check "node --check $js (wrapped as LuCI does)" node --check "$tmp/view.js"
check "node --check openwrt/tests/test-luci.js" node --check openwrt/tests/test-luci.js

check "LuCI view behaviour (tests/test-luci.js)" node openwrt/tests/test-luci.js
check "UCI -> TOML rendering (tests/test-render.sh)" sh openwrt/tests/test-render.sh
check "init script under fake procd (tests/test-init.sh)" sh openwrt/tests/test-init.sh
check "uci-defaults fw4 zone (tests/test-uci-defaults.sh)" sh openwrt/tests/test-uci-defaults.sh
check "LuCI status helper under OpenWrt's busybox (tests/test-status.sh)" sh openwrt/tests/test-status.sh
check "LuCI pause helper under OpenWrt's busybox (tests/test-pause.sh)" sh openwrt/tests/test-pause.sh
check ".ipk builder (tests/test-ipk.sh)" sh openwrt/tests/test-ipk.sh
check "feed Makefile vs mkipk.sh (tests/test-feed-makefile.sh)" sh openwrt/tests/test-feed-makefile.sh
check "no std 64-bit atomics in the agent (tests/test-atomics.sh)" sh openwrt/tests/test-atomics.sh

check_done openwrt
