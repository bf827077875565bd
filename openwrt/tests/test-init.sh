#!/bin/sh
# Tests /etc/init.d/ferry (openwrt/package/ferry/files/ferry.init) with stand-ins for rc.common's
# procd helpers, logger, /lib/functions.sh (tests/lib/fake-functions.sh) and ferry-agent: the
# procd instance (command, respawn, stdout/stderr, RUST_LOG, watched files), the reload trigger,
# key creation with mode 0600, the rendered config, and refusing to start on a bad config.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
FILES="$ROOT/openwrt/package/ferry/files"
# shellcheck source=openwrt/tests/lib/openwrt-sh.sh
. "$HERE/lib/openwrt-sh.sh"
PYTHON=$(python3 -c "import sys; print(sys.executable)") # the real binary (not a pyenv shim)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"
CHECK_SHOW="$tmp/check.out $tmp/procd $tmp/log"

# A ferry-agent stand-in: genkey prints a key, check-config parses the TOML (or fails on demand).
cat >"$tmp/ferry-agent" <<AGENT
#!/bin/sh
case "\$1" in
genkey) echo "YEC3B2vH3aE3Q9kW2p7ZqT9j0v4mGq1w0o6yJ5XxK2w=" ;;
identity)
	k=\$(sed -n 's/^key-file = "\\(.*\\)"\$/\\1/p' "\$3")
	(umask 077 && echo "c2VlZHNlZWRzZWVkc2VlZHNlZWRzZWVkc2VlZHNlZWQ=" >"\$k") ;;
check-config) [ ! -e "$tmp/reject" ] && $PYTHON "$HERE/lib/toml_check.py" subset "\$3" '{}' ;;
*) exit 2 ;;
esac
AGENT
chmod +x "$tmp/ferry-agent"

# run_init FIXTURE ACTION: sources the init script with stand-ins and calls ACTION under
# OpenWrt's busybox (owrt_sh); the procd calls land in $tmp/procd, log lines in $tmp/log.
run_init() {
	mkdir -p "$tmp/uci"
	printf '%s\n' "$1" >"$tmp/uci/ferry"
	rm -f "$tmp/procd" "$tmp/log"
	# shellcheck disable=SC2016 # expanded by the inner shell
	UCI_CONFIG_DIR="$tmp/uci" T="$tmp" FAKE="$HERE/lib/fake-functions.sh" INIT="$FILES/ferry.init" \
		RENDER_SH="$FILES/ferry-render.sh" ACTION="$2" owrt_sh -c '
		. "$FAKE"
		procd_open_instance() { echo "open $*" >>"$T/procd"; }
		procd_set_param() { echo "param $*" >>"$T/procd"; }
		procd_close_instance() { echo "close" >>"$T/procd"; }
		procd_add_reload_trigger() { echo "reload-trigger $*" >>"$T/procd"; }
		procd_open_data() { echo "data-open" >>"$T/procd"; }
		procd_close_data() { echo "data-close" >>"$T/procd"; }
		json_add_object() { echo "obj{" >>"$T/procd"; }
		json_close_object() { echo "}obj" >>"$T/procd"; }
		json_add_array() { echo "arr $1" >>"$T/procd"; }
		json_close_array() { echo "arr-end" >>"$T/procd"; }
		json_add_string() { echo "str $1=$2" >>"$T/procd"; }
		logger() { echo "logger $*" >>"$T/log"; }
		. "$INIT"
		PROG="$T/ferry-agent" RUN_DIR="$T/run" RUN_CONF="$T/run/agent.toml" RENDER="$RENDER_SH"
		$ACTION'
}

procd_has() { grep -qxF "$1" "$tmp/procd"; }
mode_of() { stat -c %a "$1"; }

KEY="$tmp/keys/wg.key"
CONF="config ferry 'main'
	option enabled '1'
	option private_key_file '$KEY'
	option log_level 'debug'
	list address '10.77.0.1/24'"

run_init "$CONF" service_triggers
check "reload trigger on UCI config ferry" procd_has "reload-trigger ferry"

run_init "$CONF" start_service
check "key created with mode 0600 in a 0700 directory" \
	sh -c "[ \"\$(stat -c %a '$KEY')\" = 600 ] && [ \"\$(stat -c %a '${KEY%/*}')\" = 700 ] && [ -s '$KEY' ]"
check "instance runs ferry-agent run --config <rendered>" procd_has "param command $tmp/ferry-agent run --config $tmp/run/agent.toml"
check "respawn with threshold/timeout/retry" procd_has "param respawn 3600 5 5"
check "stdout and stderr to the log" sh -c "grep -qx 'param stdout 1' '$tmp/procd' && grep -qx 'param stderr 1' '$tmp/procd'"
check "RUST_LOG from log_level" procd_has "param env RUST_LOG=debug"
check "procd watches the rendered config and key (restart on change)" procd_has "param file $tmp/run/agent.toml $KEY"
check "instance opened and closed" sh -c "grep -qx 'open ferry' '$tmp/procd' && grep -qx close '$tmp/procd'"
check "rendered config is the UCI config, mode 0600" sh -c "
	python3 '$HERE/lib/toml_check.py' subset '$tmp/run/agent.toml' '{\"wireguard\": {\"private-key-file\": \"$KEY\", \"address\": [\"10.77.0.1/24\"]}}' &&
	[ \"\$(stat -c %a '$tmp/run/agent.toml')\" = 600 ]"
cp "$KEY" "$tmp/keep"
run_init "$CONF" start_service
check "an existing key is not replaced" cmp -s "$KEY" "$tmp/keep"

# fw4 rules published as procd firewall data (TUN mode): ping and each tunnel_service, on the
# tunnel addresses only. fw_is WANT: the rules, one per line "name src proto dest_ip [port]
# [echo] target", in order, equal WANT.
fw_is() {
	got=$(awk '
		/^obj\{/ { r = ""; next }
		/^str (name|src|proto|dest_ip|dest_port|target)=/ { v = $0; sub(/^str [a-z_]*=/, "", v); r = (r == "" ? v : r " " v); next }
		/^str =echo-request$/ { r = r " echo"; next }
		/^\}obj/ { print r }' "$tmp/procd")
	[ "$got" = "$1" ] || { printf 'rules:\n%s\nwanted:\n%s\n' "$got" "$1" >&2; return 1; }
}
run_init "$CONF" start_service
check "TUN mode: a ping rule for the tunnel address, nothing else" \
	fw_is "Ferry-Ping ferry icmp 10.77.0.1 echo ACCEPT"
check "firewall data published with the instance" sh -c "grep -qx 'arr firewall' '$tmp/procd' && grep -qx data-close '$tmp/procd'"
run_init "$CONF
	list address 'fd77::1/64'
	list tunnel_service 'udp/53'
	list tunnel_service 'tcp/53'" start_service
check "ping and each tunnel_service, for every tunnel address (v4 and v6)" fw_is "Ferry-Ping ferry icmp 10.77.0.1 echo ACCEPT
Ferry-Ping ferry icmp fd77::1 echo ACCEPT
Ferry-udp-53 ferry udp 10.77.0.1 53 ACCEPT
Ferry-udp-53 ferry udp fd77::1 53 ACCEPT
Ferry-tcp-53 ferry tcp 10.77.0.1 53 ACCEPT
Ferry-tcp-53 ferry tcp fd77::1 53 ACCEPT"
run_init "$CONF
	option tunnel_ping '0'
	list tunnel_service 'udp/53'" start_service
check "tunnel_ping off: no ping rule" fw_is "Ferry-udp-53 ferry udp 10.77.0.1 53 ACCEPT"
run_init "$CONF
	option egress_mode 'userspace'
	list tunnel_service 'udp/53'" start_service
check "userspace mode: no firewall rules (the agent answers inside its own stack)" \
	sh -c "grep -q '^open ferry' '$tmp/procd' && ! grep -q 'arr firewall' '$tmp/procd'"

# Paid sharing: the identity key is created 0600 on first start, watched, never replaced.
PAID="$CONF
	option paid '1'
	option network_id '00112233445566778899aabbccddeeff'
	option ledger_key '0000000000000000000000000000000000000000000000000000000000000000'
	option identity_key_file '$tmp/idkeys/identity.key'
	option price_micros_per_gib '500000'
	option state_dir '/etc/ferry/state'"
run_init "$PAID" start_service
check "paid: identity key created 0600 in a 0700 directory" \
	sh -c "[ \"\$(stat -c %a '$tmp/idkeys/identity.key')\" = 600 ] && [ \"\$(stat -c %a '$tmp/idkeys')\" = 700 ]"
check "paid: creation logged with how to register it" grep -q 'created identity key .*ferry-agent identity' "$tmp/log"
check "paid: procd also watches the identity key" procd_has "param file $tmp/run/agent.toml $KEY $tmp/idkeys/identity.key"
echo "a-different-key" >>"$tmp/idkeys/identity.key"
cp "$tmp/idkeys/identity.key" "$tmp/idkeep"
run_init "$PAID" start_service
check "paid: an existing identity key is kept" cmp -s "$tmp/idkeys/identity.key" "$tmp/idkeep"

# A key in an existing directory (private_key_file=/etc/wg.key): the directory keeps its mode.
mkdir -p "$tmp/etc"
chmod 0755 "$tmp/etc"
run_init "config ferry 'main'
	option enabled '1'
	option private_key_file '$tmp/etc/wg.key'" start_service
check "key in an existing directory: created 0600, directory stays 0755" \
	sh -c "[ \"\$(stat -c %a '$tmp/etc/wg.key')\" = 600 ] && [ \"\$(stat -c %a '$tmp/etc')\" = 755 ]"

run_init "config ferry 'main'
	option enabled '0'" start_service
check "disabled: no instance" test ! -e "$tmp/procd"

run_init "$CONF
	option mtu 'huge'" start_service || true
check "invalid UCI value: no instance, error logged" sh -c "[ ! -e '$tmp/procd' ] && grep -q 'option mtu' '$tmp/log'"

touch "$tmp/reject"
run_init "$CONF" start_service || true
rm -f "$tmp/reject"
check "check-config rejects: no instance" test ! -e "$tmp/procd"

check_done test-init
