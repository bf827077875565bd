# shellcheck shell=sh
# Runs shell code the way a stock OpenWrt router would: under a busybox built with OpenWrt's
# applet settings (openwrt/tests/busybox/build.sh, run by scripts/setup.sh), with PATH holding
# only that busybox's applets and the test stand-ins in tests/lib/bin. A construct that OpenWrt's
# busybox lacks (tr '[:cntrl:]', stat, timeout, GNU options, ...) then fails here as on a router.
#
#   . "$HERE/lib/openwrt-sh.sh"      sets OWRT_BIN (the applet directory) or exits
#   owrt_sh ARGS...                 like `sh ARGS...` under OpenWrt's ash; OWRT_PATH_EXTRA, if
#                                   set, is appended to PATH (test stand-ins only)
#
# Without the build the tests fail in CI (CI=true) and otherwise say how to build it and exit 0,
# so that a developer without it is not silently given Debian's tools.
OWRT_BIN=${FERRY_OPENWRT_BUSYBOX:-$ROOT/target/openwrt-busybox}/bin
if [ ! -x "$OWRT_BIN/sh" ]; then
	if [ "${CI:-}" = true ] || [ "${FERRY_REQUIRE_OPENWRT_BUSYBOX:-0}" = 1 ]; then
		echo "no OpenWrt-configured busybox at $OWRT_BIN: run openwrt/tests/busybox/build.sh" >&2
		exit 1
	fi
	echo "SKIP - no OpenWrt-configured busybox at $OWRT_BIN (build it: sh openwrt/tests/busybox/build.sh)"
	exit 0
fi

owrt_sh() {
	env PATH="$OWRT_BIN:$ROOT/openwrt/tests/lib/bin${OWRT_PATH_EXTRA:+:$OWRT_PATH_EXTRA}" "$OWRT_BIN/sh" "$@"
}
