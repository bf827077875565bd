#!/bin/sh
# Tests the UCI -> TOML rendering (openwrt/package/ferry/files/ferry-render.sh) in a fake
# /lib/functions.sh environment (tests/lib/fake-functions.sh), under dash (strict POSIX) and
# under OpenWrt's userland: a busybox built with OpenWrt's applet settings, alone in PATH
# (tests/lib/openwrt-sh.sh). Rendered TOML is parsed with python3 tomllib, its keys must all
# occur in config/agent.example.toml (the agent denies unknown fields), and when an agent binary
# with `check-config` is available (FERRY_AGENT, else target/debug/ferry-agent) it must accept it.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
FILES="$ROOT/openwrt/package/ferry/files"
CHECK="python3 $HERE/lib/toml_check.py"
EXAMPLE="$ROOT/config/agent.example.toml"
AGENT=${FERRY_AGENT:-$ROOT/target/debug/ferry-agent}
# shellcheck source=openwrt/tests/lib/openwrt-sh.sh
. "$HERE/lib/openwrt-sh.sh"
SHELLS=${FERRY_TEST_SHELLS:-sh|openwrt}
if [ -x "$AGENT" ] && "$AGENT" --help 2>/dev/null | grep -Eq '^ +check-config'; then
	HAVE_AGENT=1
else
	HAVE_AGENT=0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
KEY="$tmp/wg.key"
echo "YEC3B2vH3aE3Q9kW2p7ZqT9j0v4mGq1w0o6yJ5XxK2w=" >"$KEY"
chmod 600 "$KEY"
# A key file whose path needs TOML escaping: quote, backslash, bracket, equals sign.
ODDKEY="$tmp/k\"e\\y] = 1"
ODDKEY_JSON="$tmp/k\\\"e\\\\y] = 1"
cp "$KEY" "$ODDKEY"
PUB1="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
# A paid relay's identity key (base64 Ed25519 seed), 0600, for check-config.
IDKEY="$tmp/identity.key"
echo "c2VlZHNlZWRzZWVkc2VlZHNlZWRzZWVkc2VlZHNlZWQ=" >"$IDKEY"
chmod 600 "$IDKEY"
NET=00112233445566778899aabbccddeeff
LK=4242424242424242424242424242424242424242424242424242424242424242
PUB2="TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

ok() {
	pass=$((pass + 1))
	echo "ok   - $*"
}
not_ok() {
	fail=$((fail + 1))
	echo "FAIL - $*"
	[ ! -s "$tmp/err" ] || sed 's/^/       /' "$tmp/err"
}

# render SHELL FIXTURE: renders FIXTURE (UCI text) to $tmp/out (stderr in $tmp/err); SHELL is
# "sh" (the machine's /bin/sh) or "openwrt" (owrt_sh).
render() {
	mkdir -p "$tmp/uci"
	printf '%s\n' "$2" >"$tmp/uci/ferry"
	run="sh"
	[ "$1" != openwrt ] || run=owrt_sh
	# shellcheck disable=SC2016 # expanded by the inner shell
	UCI_CONFIG_DIR="$tmp/uci" FAKE="$HERE/lib/fake-functions.sh" RENDER="$FILES/ferry-render.sh" \
		$run -c '. "$FAKE"; . "$RENDER"; config_load ferry; ferry_render_toml' >"$tmp/out" 2>"$tmp/err"
}

# expect_ok NAME SHELL FIXTURE JSON: renders, parses, checks the subset, the key set and the agent.
expect_ok() {
	if ! render "$2" "$3"; then
		not_ok "$1 [$2]: render failed"
		return 0
	fi
	if ! $CHECK subset "$tmp/out" "$4" 2>"$tmp/err"; then
		not_ok "$1 [$2]: TOML content"
		sed 's/^/       /' "$tmp/out"
		return 0
	fi
	if ! $CHECK keys-within "$tmp/out" "$EXAMPLE" 2>"$tmp/err"; then
		not_ok "$1 [$2]: keys unknown to the agent's example config"
		return 0
	fi
	if [ "$HAVE_AGENT" = 1 ] && ! "$AGENT" check-config --config "$tmp/out" >"$tmp/err" 2>&1; then
		not_ok "$1 [$2]: ferry-agent check-config rejected the rendered config"
		sed 's/^/       /' "$tmp/out"
		return 0
	fi
	ok "$1 [$2]"
}

# expect_err NAME SHELL FIXTURE PATTERN: rendering must fail with a message matching PATTERN.
expect_err() {
	if render "$2" "$3"; then
		not_ok "$1 [$2]: render succeeded, expected an error matching '$4'"
	elif grep -q -- "$4" "$tmp/err"; then
		ok "$1 [$2]"
	else
		not_ok "$1 [$2]: error message does not match '$4'"
	fi
}

# The packaged default config, pointed at the test key, plus two peers (one disabled).
DEFAULT=$(sed "s|/etc/ferry/wg.key|$KEY|" "$FILES/ferry.config")
PEERS="
config peer 'laptop'
	option public_key '$PUB1'
	list allowed_ip '10.77.0.2/32'
	list allowed_ip 'fd77::2/128'

config peer
	option name 'phone'
	option public_key '$PUB2'
	list allowed_ip '10.77.0.3/32'

config peer
	option name 'old'
	option enabled '0'
	option public_key '$PUB2'
	list allowed_ip '10.77.0.9/32'
"

IFS='|'
for sh in $SHELLS; do
	IFS=' '
	expect_ok "packaged defaults" "$sh" "$DEFAULT" "{
		\"wireguard\": {\"private-key-file\": \"$KEY\", \"listen\": \"0.0.0.0:51820\", \"mtu\": 1420,
		                \"address\": [\"10.77.0.1/24\", \"fd77::1/64\"]},
		\"egress\": {\"mode\": \"tun\", \"tun-name\": \"ferry0\", \"masquerade\": false, \"allow\": [],
		             \"deny\": [], \"tunnel-services\": [], \"tunnel-ping\": true,
		             \"block-ports\": [\"tcp/25\"]},
		\"limits\": {\"max-peers\": 1024, \"client-rate-mbit\": 0}}"
	if grep -q '^\[\[peer\]\]' "$tmp/out"; then not_ok "packaged defaults [$sh]: has peers"; else ok "packaged defaults have no peers [$sh]"; fi

	expect_ok "peers, anonymous sections, disabled peer skipped" "$sh" "$DEFAULT$PEERS" "{
		\"peer\": [{\"name\": \"laptop\", \"public-key\": \"$PUB1\", \"allowed-ips\": [\"10.77.0.2/32\", \"fd77::2/128\"]},
		           {\"name\": \"phone\", \"public-key\": \"$PUB2\", \"allowed-ips\": [\"10.77.0.3/32\"]}]}"

	expect_ok "dual-stack listen, userspace egress, lists, bools" "$sh" "config ferry 'main'
	option private_key_file '$KEY'
	option listen_addr '::'
	option listen_port '4500'
	option mtu '1280'
	list address '10.78.0.1/24'
	option egress_mode 'userspace'
	option masquerade 'yes'
	option tunnel_ping 'off'
	list allow '192.168.1.53/32'
	list allow '192.168.1.54/32'
	list deny '203.0.113.0/24'
	list tunnel_service 'udp/53'
	option max_peers '16'
	option client_rate_mbit '20'" "{
		\"wireguard\": {\"listen\": \"[::]:4500\", \"mtu\": 1280, \"address\": [\"10.78.0.1/24\"]},
		\"egress\": {\"mode\": \"userspace\", \"masquerade\": true, \"tunnel-ping\": false,
		             \"allow\": [\"192.168.1.53/32\", \"192.168.1.54/32\"], \"deny\": [\"203.0.113.0/24\"],
		             \"tunnel-services\": [\"udp/53\"]},
		\"limits\": {\"max-peers\": 16, \"client-rate-mbit\": 20}}"

	expect_ok "exit ports: 'none' opens all" "$sh" "config ferry 'main'
	option private_key_file '$KEY'
	list address '10.77.0.1/24'
	list block_port 'none'" "{\"egress\": {\"block-ports\": []}}"
	# (allow-ports is not in the example config, which blocks instead: content check only.)
	if render "$sh" "config ferry 'main'
	option private_key_file '$KEY'
	list address '10.77.0.1/24'
	list allow_port 'tcp/443'
	list allow_port 'udp/53'" &&
		$CHECK subset "$tmp/out" "{\"egress\": {\"allow-ports\": [\"tcp/443\", \"udp/53\"]}}" 2>"$tmp/err"; then
		ok "exit ports: a reduced exit policy [$sh]"
	else
		not_ok "exit ports: a reduced exit policy [$sh]"
	fi
	expect_err "exit ports: block and allow lists together" "$sh" "config ferry 'main'
	option private_key_file '$KEY'
	list block_port 'tcp/25'
	list allow_port 'tcp/443'" "block_port or allow_port"
	expect_err "exit ports: 'none' with other ports" "$sh" "config ferry 'main'
	option private_key_file '$KEY'
	list block_port 'tcp/25'
	list block_port 'none'" "must be the only entry"

	# A path with TOML metacharacters must round-trip exactly (no injection).
	expect_ok "quotes and backslashes are escaped" "$sh" "$DEFAULT
	option private_key_file '$ODDKEY'" "{\"wireguard\": {\"private-key-file\": \"$ODDKEY_JSON\"}}"

	expect_err "peer name outside the agent's alphabet" "$sh" "$DEFAULT
config peer
	option name 'a\"b] = 1'
	option public_key '$PUB1'
	list allowed_ip '10.77.0.2/32'" "peer name 'a\"b\] = 1' may only contain"
	expect_err "non-numeric mtu" "$sh" "$DEFAULT
	option mtu 'big'" "option mtu must be an unsigned number"
	expect_err "mtu out of range" "$sh" "$DEFAULT
	option mtu '100'" "option mtu out of range"
	expect_err "port out of range" "$sh" "$DEFAULT
	option listen_port '70000'" "option listen_port out of range"
	expect_err "unknown egress mode" "$sh" "$DEFAULT
	option egress_mode 'kernel'" "egress_mode must be"
	expect_err "bad peer key" "$sh" "$DEFAULT
config peer 'bad'
	option public_key 'not a key'
	list allowed_ip '10.77.0.5/32'" "peer bad: public_key"
	expect_err "peer without allowed_ip" "$sh" "$DEFAULT
config peer 'lonely'
	option public_key '$PUB1'" "peer lonely: at least one allowed_ip"
	expect_err "control character in a value" "$sh" "$DEFAULT
config peer
	option name 'a
[limits]'
	option public_key '$PUB1'
	list allowed_ip '10.77.0.2/32'" "control character"
	PAID="$DEFAULT
	option paid '1'
	option identity_key_file '$IDKEY'
	option network_id '$NET'
	option ledger_key '$LK'
	option ledger_url 'http://192.168.1.10:7878'"
	expect_ok "paid sharing: identity, network, metering, paid sections" "$sh" "$PAID" "{
		\"identity\": {\"key-file\": \"$IDKEY\"},
		\"network\": {\"id\": \"$NET\", \"ledger-key\": \"$LK\", \"ledger-url\": \"http://192.168.1.10:7878\"},
		\"metering\": {\"state-dir\": \"/etc/ferry/state\", \"receipt-every-mib\": 4, \"credit-window-mib\": 16},
		\"paid\": {\"enabled\": true, \"max-sessions-per-voucher\": 2, \"max-sessions-per-client\": 2}}"
	expect_ok "sharing limits: rates, quotas, reset day, schedule, zone" "$sh" "$PAID
	option share_up_mbit '5'
	option share_down_mbit '20'
	option daily_quota_gib '0.5'
	option monthly_quota_gib '100'
	option quota_reset_day '15'
	list schedule 'mon-fri 18:00-23:30'
	list schedule 'sat,sun 00:00-24:00'
	option timezone 'CET-1CEST,M3.5.0,M10.5.0/3'" "{\"limits\": {\"share-up-mbit\": 5,
		\"share-down-mbit\": 20, \"daily-quota-gib\": 0.5, \"monthly-quota-gib\": 100,
		\"quota-reset-day\": 15, \"schedule\": [\"mon-fri 18:00-23:30\", \"sat,sun 00:00-24:00\"],
		\"timezone\": \"CET-1CEST,M3.5.0,M10.5.0/3\"}}"
	expect_err "sharing limits: a quota that is no number" "$sh" "$DEFAULT
	option daily_quota_gib '1,5'" "daily_quota_gib must be a number of GiB"
	expect_err "sharing limits: reset day beyond a month" "$sh" "$DEFAULT
	option quota_reset_day '32'" "option quota_reset_day out of range 1..31"

	expect_err "paid: network_id of the wrong length" "$sh" "$PAID
	option network_id '0011'" "option network_id must be 32 hex digits"
	expect_err "paid: ledger_key not hex" "$sh" "$PAID
	option ledger_key 'zz$LK'" "option ledger_key must be 64 hex digits"
	expect_err "paid: ledger_url not http" "$sh" "$PAID
	option ledger_url 'ftp://x'" "ledger_url must be an http:// URL"
	expect_ok "paid: the relay's own price" "$sh" "$PAID
	option price_micros_per_gib '750000'" "{
		\"paid\": {\"enabled\": true, \"max-sessions-per-voucher\": 2, \"max-sessions-per-client\": 2, \"price-micros-per-gib\": 750000}}"
	expect_err "paid: no price and no ledger to learn it from" "$sh" "$PAID
	option ledger_url ''" "set price_micros_per_gib"
	expect_err "paid: price not a number" "$sh" "$PAID
	option price_micros_per_gib '1.5'" "option price_micros_per_gib must be an unsigned number"
	expect_err "paid: receipts on tmpfs" "$sh" "$PAID
	option state_dir '/tmp/ferry'" "is on tmpfs, lost at reboot"
	expect_err "paid: receipt cadence above the credit window" "$sh" "$PAID
	option receipt_every_mib '32'" "must not exceed credit_window_mib"
	expect_err "tab in a value" "$sh" "$DEFAULT
	option tun_name 'fer$(printf '\t')ry0'" "control character"
	expect_err "DEL in a value" "$sh" "$DEFAULT
	option tun_name 'ferry$(printf '\177')'" "control character"
	expect_ok "value made of the letters of [:cntrl:]" "$sh" "$DEFAULT
	option tun_name 'cntrl'" "{\"egress\": {\"tun-name\": \"cntrl\"}}"
	expect_err "missing extra_toml" "$sh" "$DEFAULT
	option extra_toml '$tmp/nope.toml'" "extra_toml"
	IFS='|'
done
IFS=' '

if [ "$HAVE_AGENT" = 1 ]; then
	echo "# rendered configs were also validated by $AGENT check-config"
else
	echo "# no agent with check-config at $AGENT: validated with python3 tomllib and the example's keys only"
fi
echo "test-render: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
