#!/bin/sh
# Tests /etc/uci-defaults/99-ferry (openwrt/package/ferry/files/ferry.uci-defaults) against a
# stand-in `uci` (tests/lib/bin/uci) holding a default OpenWrt firewall: the fw4 zone "ferry" on
# the agent's TUN device, forwarding to wan only, the WireGuard port opened on wan, idempotence,
# and the agent's own masquerade switched on only when no wan zone masquerades (IPv4) or the
# tunnel has IPv6 addresses and the wan zone has no masq6.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
SCRIPT="$ROOT/openwrt/package/ferry/files/ferry.uci-defaults"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"
# shellcheck source=openwrt/tests/lib/openwrt-sh.sh
. "$HERE/lib/openwrt-sh.sh"
PATH="$HERE/lib/bin:$PATH"
export PATH FAKE_UCI_STATE="$tmp/state"
CHECK_SHOW="$tmp/check.out $FAKE_UCI_STATE"

has() { grep -qxF "$1" "$FAKE_UCI_STATE"; }

# state WAN_MASQ [WAN_MASQ6 [ADDRESS...]]: a default OpenWrt firewall (lan, wan zones,
# lan->wan) and a ferry config (tunnel addresses: IPv4 only unless given).
state() {
	cat >"$FAKE_UCI_STATE" <<STATE
firewall.cfg01e63d=defaults
firewall.cfg02dc81=zone
firewall.cfg02dc81.name=lan
firewall.cfg02dc81.network=lan
firewall.cfg03dc81=zone
firewall.cfg03dc81.name=wan
firewall.cfg03dc81.network=wan
firewall.cfg03dc81.network=wan6
firewall.cfg03dc81.masq=$1
firewall.cfg04ad58=forwarding
firewall.cfg04ad58.src=lan
firewall.cfg04ad58.dest=wan
ferry.main=ferry
ferry.main.tun_name=fy7
ferry.main.listen_port=4500
ferry.main.masquerade=0
STATE
	[ -z "${2:-}" ] || echo "firewall.cfg03dc81.masq6=$2" >>"$FAKE_UCI_STATE"
	if [ $# -gt 2 ]; then
		shift 2
		for a in "$@"; do echo "ferry.main.address=$a" >>"$FAKE_UCI_STATE"; done
	else
		echo "ferry.main.address=10.77.0.1/24" >>"$FAKE_UCI_STATE"
	fi
	rm -f "$FAKE_UCI_STATE.log"
}

zone_ok() {
	has firewall.ferry=zone && has firewall.ferry.name=ferry && has firewall.ferry.device=fy7 &&
		has firewall.ferry.input=REJECT && has firewall.ferry.forward=REJECT &&
		has firewall.ferry.output=ACCEPT && has firewall.ferry.mtu_fix=1
}
forwarding_ok() {
	has firewall.ferry_wan=forwarding && has firewall.ferry_wan.src=ferry && has firewall.ferry_wan.dest=wan &&
		[ "$(grep -c '\.src=ferry$' "$FAKE_UCI_STATE")" = 1 ]
}
rule_ok() {
	has firewall.ferry_wg=rule && has firewall.ferry_wg.src=wan && has firewall.ferry_wg.proto=udp &&
		has firewall.ferry_wg.dest_port=4500 && has firewall.ferry_wg.target=ACCEPT
}
committed() { grep -qx 'commit firewall' "$FAKE_UCI_STATE.log"; }

state 1
owrt_sh "$SCRIPT"
check "zone ferry on the configured TUN device, input/forward rejected" zone_ok
check "only forwarding ferry -> wan (no lan)" forwarding_ok
check "WireGuard UDP port from ferry.main.listen_port opened on wan" rule_ok
check "firewall committed" committed
check "wan masquerades: agent masquerade stays off" has ferry.main.masquerade=0
cp "$FAKE_UCI_STATE" "$tmp/first"
rm -f "$FAKE_UCI_STATE.log"
owrt_sh "$SCRIPT"
check "second run changes nothing" cmp -s "$FAKE_UCI_STATE" "$tmp/first"
check "second run writes nothing" test ! -e "$FAKE_UCI_STATE.log"

state 0
owrt_sh "$SCRIPT"
check "wan without masq: agent masquerade switched on" has ferry.main.masquerade=1

state 1 0 10.77.0.1/24 fd77::1/64
owrt_sh "$SCRIPT"
check "IPv6 tunnel, wan without masq6: agent masquerade switched on (NAT66 of the ULA)" has ferry.main.masquerade=1
check "IPv6 tunnel: masq6 not forced onto the household's wan zone" sh -c "! grep -q 'masq6=1' '$FAKE_UCI_STATE'"

state 1 1 10.77.0.1/24 fd77::1/64
owrt_sh "$SCRIPT"
check "IPv6 tunnel, wan with masq and masq6: agent masquerade stays off" has ferry.main.masquerade=0

state 1
sed -i '/^ferry\./d' "$FAKE_UCI_STATE"
owrt_sh "$SCRIPT"
check "defaults without /etc/config/ferry: ferry0 and port 51820" \
	sh -c "grep -qx firewall.ferry.device=ferry0 '$FAKE_UCI_STATE' && grep -qx firewall.ferry_wg.dest_port=51820 '$FAKE_UCI_STATE'"

check_done test-uci-defaults
