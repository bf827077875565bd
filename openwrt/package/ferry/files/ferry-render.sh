# shellcheck shell=sh
# shellcheck disable=SC2154 # variables are assigned by config_get/config_get_bool (eval)
# Renders the UCI config "ferry" (/etc/config/ferry) to ferry-agent's TOML config on stdout.
# Sourced by /etc/init.d/ferry (installed as /usr/share/ferry/ferry-render.sh) and by
# openwrt/tests/test-render.sh. Needs OpenWrt's /lib/functions.sh (config_get,
# config_get_bool, config_list_foreach, config_foreach) and a prior `config_load ferry`.
# POSIX sh, no `local`: every variable is prefixed with _fr_.
#
# Usage: ferry_render_toml >agent.toml || handle the error (message on stderr).
# Every string is validated (no control characters) and escaped for TOML; numbers must be
# unsigned decimals; invalid values make ferry_render_toml return 1.

FERRY_SECTION=main

# Prints one line verbatim (dash's echo would interpret backslashes).
ferry_line() {
	printf '%s\n' "$1"
}

ferry_err() {
	printf 'ferry-render: %s\n' "$*" >&2
	_fr_failed=1
}

# The helpers below set a result variable instead of printing, so that they run in the
# current shell (not a command substitution) and validation errors reach _fr_failed.

# ferry_str VALUE: sets _fr_q to VALUE as a TOML basic string.
# Control characters are named as octal ranges: OpenWrt's busybox tr has no [:cntrl:] (it
# would delete the letters c n t r l instead); TOML forbids U+0000-U+001F and U+007F.
ferry_str() {
	if [ "$(printf '%s' "$1" | tr -d '\001-\037\177')" != "$1" ]; then
		ferry_err "control character in value '$1'"
		_fr_q='""'
		return 0
	fi
	_fr_q="\"$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')\""
}

# ferry_uint OPTION VALUE [MIN MAX]: sets _fr_n to VALUE if it is an unsigned decimal in range.
ferry_uint() {
	_fr_n=$2
	case "$2" in
	'' | *[!0-9]*)
		ferry_err "option $1 must be an unsigned number, got '$2'"
		_fr_n=0
		return 0
		;;
	esac
	if [ "${#2}" -gt 9 ] || { [ -n "${3:-}" ] && [ "$2" -lt "$3" ]; } || { [ -n "${4:-}" ] && [ "$2" -gt "$4" ]; }; then
		ferry_err "option $1 out of range${3:+ $3..$4}, got '$2'"
	fi
}

# ferry_gib OPTION VALUE: sets _fr_n to VALUE if it is a decimal number (50, 0.5).
ferry_gib() {
	_fr_n=$2
	case "$2" in
	'' | *[!0-9.]* | .* | *. | *.*.*)
		ferry_err "option $1 must be a number of GiB like 50 or 0.5 (0 = no quota), got '$2'"
		_fr_n=0
		;;
	esac
}

# ferry_bool 0|1: sets _fr_b to false/true (input is a config_get_bool result).
ferry_bool() {
	if [ "$1" = 1 ]; then _fr_b=true; else _fr_b=false; fi
}

# config_list_foreach callback: appends VALUE as a TOML string to _fr_arr.
ferry_arr_add() {
	ferry_str "$1"
	if [ -z "$_fr_arr" ]; then _fr_arr=$_fr_q; else _fr_arr="$_fr_arr, $_fr_q"; fi
}

# ferry_arr SECTION OPTION: sets _fr_arr to the UCI list SECTION.OPTION as a TOML array.
ferry_arr() {
	_fr_arr=""
	config_list_foreach "$1" "$2" ferry_arr_add
	_fr_arr="[$_fr_arr]"
}

# ferry_hex OPTION VALUE LEN: VALUE must be exactly LEN hex digits.
ferry_hex() {
	case "$2" in
	'' | *[!0-9a-fA-F]*) ferry_err "option $1 must be $3 hex digits, got '$2'" ;;
	*) [ "${#2}" -eq "$3" ] || ferry_err "option $1 must be $3 hex digits, got ${#2}" ;;
	esac
}

# ferry_render_paid: the [identity], [network], [metering] and [paid] sections of a relay that
# earns from paying clients (UCI option paid=1).
ferry_render_paid() {
	config_get _fr_id "$_fr_s" identity_key_file /etc/ferry/identity.key
	config_get _fr_net "$_fr_s" network_id ""
	config_get _fr_lk "$_fr_s" ledger_key ""
	config_get _fr_url "$_fr_s" ledger_url ""
	config_get _fr_state "$_fr_s" state_dir /etc/ferry/state
	config_get _fr_every "$_fr_s" receipt_every_mib 4
	config_get _fr_window "$_fr_s" credit_window_mib 16
	config_get _fr_pv "$_fr_s" max_sessions_per_voucher 2
	config_get _fr_pc "$_fr_s" max_sessions_per_client 2
	config_get _fr_price "$_fr_s" price_micros_per_gib ""
	ferry_hex network_id "$_fr_net" 32
	if [ -n "$_fr_price" ]; then
		ferry_uint price_micros_per_gib "$_fr_price" 1 999999999
	elif [ -z "$_fr_url" ]; then
		ferry_err "set price_micros_per_gib (this relay's price) or ledger_url (to sell at the network price)"
	fi
	ferry_hex ledger_key "$_fr_lk" 64
	case "$_fr_url" in
	'' | http://*) ;;
	*) ferry_err "ledger_url must be an http:// URL, got '$_fr_url'" ;;
	esac
	# /tmp is tmpfs (and /var links to it): receipts owed would be lost at every reboot.
	case "$_fr_state" in
	/*) ;;
	*) ferry_err "state_dir must be an absolute path, got '$_fr_state'" ;;
	esac
	case "$_fr_state" in
	/tmp | /tmp/* | /var | /var/*)
		ferry_err "state_dir '$_fr_state' is on tmpfs, lost at reboot; use a directory on flash such as /etc/ferry/state"
		;;
	esac
	ferry_line ""
	ferry_line "[identity]"
	ferry_str "$_fr_id"
	ferry_line "key-file = $_fr_q"
	ferry_line ""
	ferry_line "[network]"
	ferry_str "$_fr_net"
	ferry_line "id = $_fr_q"
	ferry_str "$_fr_lk"
	ferry_line "ledger-key = $_fr_q"
	if [ -n "$_fr_url" ]; then
		ferry_str "$_fr_url"
		ferry_line "ledger-url = $_fr_q"
	fi
	ferry_line ""
	ferry_line "[metering]"
	ferry_str "$_fr_state"
	ferry_line "state-dir = $_fr_q"
	ferry_uint receipt_every_mib "$_fr_every" 1 1024
	ferry_line "receipt-every-mib = $_fr_n"
	ferry_uint credit_window_mib "$_fr_window" 1 4096
	ferry_line "credit-window-mib = $_fr_n"
	[ "$_fr_every" -le "$_fr_window" ] 2>/dev/null ||
		ferry_err "receipt_every_mib ($_fr_every) must not exceed credit_window_mib ($_fr_window)"
	ferry_line ""
	ferry_line "[paid]"
	ferry_line "enabled = true"
	ferry_uint max_sessions_per_voucher "$_fr_pv" 1 1024
	ferry_line "max-sessions-per-voucher = $_fr_n"
	ferry_uint max_sessions_per_client "$_fr_pc" 1 1024
	ferry_line "max-sessions-per-client = $_fr_n"
	if [ -n "$_fr_price" ]; then
		ferry_line "price-micros-per-gib = $_fr_price"
	fi
}

# config_foreach callback for `config peer` sections.
ferry_render_peer() {
	config_get_bool _fr_enabled "$1" enabled 1
	[ "$_fr_enabled" = 1 ] || return 0
	config_get _fr_name "$1" name "$1"
	# the agent's rule for peer names: 1..=64 characters of [A-Za-z0-9-_.@]
	case "$_fr_name" in
	*[!A-Za-z0-9._@-]*) ferry_err "peer name '$_fr_name' may only contain A-Z a-z 0-9 - _ . @" ;;
	*) [ "${#_fr_name}" -le 64 ] || ferry_err "peer name '$_fr_name' is longer than 64 characters" ;;
	esac
	config_get _fr_pub "$1" public_key ""
	case "$_fr_pub" in
	'' | *[!A-Za-z0-9+/=]*) ferry_err "peer $_fr_name: public_key must be a base64 WireGuard key" ;;
	*) [ "${#_fr_pub}" -eq 44 ] || ferry_err "peer $_fr_name: public_key must be 44 base64 characters" ;;
	esac
	config_get _fr_ips "$1" allowed_ip ""
	[ -n "$_fr_ips" ] || ferry_err "peer $_fr_name: at least one allowed_ip is required"
	ferry_line ""
	ferry_line "[[peer]]"
	ferry_str "$_fr_name"
	ferry_line "name = $_fr_q"
	ferry_str "$_fr_pub"
	ferry_line "public-key = $_fr_q"
	ferry_arr "$1" allowed_ip
	ferry_line "allowed-ips = $_fr_arr"
}

# ferry_render_toml: prints the agent TOML for the loaded "ferry" config; returns 1 on errors.
# The owner's sharing limits (docs/agent.md "Sharing limits"), inside [limits].
ferry_render_sharing() {
	config_get _fr_v "$_fr_s" share_up_mbit 0
	ferry_uint share_up_mbit "$_fr_v"
	ferry_line "share-up-mbit = $_fr_n"
	config_get _fr_v "$_fr_s" share_down_mbit 0
	ferry_uint share_down_mbit "$_fr_v"
	ferry_line "share-down-mbit = $_fr_n"
	config_get _fr_v "$_fr_s" daily_quota_gib 0
	ferry_gib daily_quota_gib "$_fr_v"
	ferry_line "daily-quota-gib = $_fr_n"
	config_get _fr_v "$_fr_s" monthly_quota_gib 0
	ferry_gib monthly_quota_gib "$_fr_v"
	ferry_line "monthly-quota-gib = $_fr_n"
	config_get _fr_v "$_fr_s" quota_reset_day 1
	ferry_uint quota_reset_day "$_fr_v" 1 31
	ferry_line "quota-reset-day = $_fr_n"
	ferry_arr "$_fr_s" schedule
	[ "$_fr_arr" = "[]" ] || ferry_line "schedule = $_fr_arr"
	# Unset: the agent reads the router's zone itself (/etc/TZ, set from System > Time zone).
	config_get _fr_v "$_fr_s" timezone ""
	if [ -n "$_fr_v" ]; then
		ferry_str "$_fr_v"
		ferry_line "timezone = $_fr_q"
	fi
}

ferry_render_toml() {
	_fr_failed=0
	_fr_s=$FERRY_SECTION
	config_get _fr_key "$_fr_s" private_key_file /etc/ferry/wg.key
	config_get _fr_addr "$_fr_s" listen_addr 0.0.0.0
	config_get _fr_port "$_fr_s" listen_port 51820
	config_get _fr_mtu "$_fr_s" mtu 1420
	config_get _fr_mode "$_fr_s" egress_mode tun
	config_get _fr_tun "$_fr_s" tun_name ferry0
	config_get_bool _fr_masq "$_fr_s" masquerade 0
	config_get_bool _fr_ping "$_fr_s" tunnel_ping 1
	config_get _fr_maxp "$_fr_s" max_peers 1024
	config_get _fr_rate "$_fr_s" client_rate_mbit 0
	config_get _fr_extra "$_fr_s" extra_toml ""

	case "$_fr_mode" in
	tun | userspace) ;;
	*) ferry_err "egress_mode must be 'tun' or 'userspace', got '$_fr_mode'" ;;
	esac
	case "$_fr_addr" in
	*:*) _fr_listen="[$_fr_addr]:$_fr_port" ;;
	*) _fr_listen="$_fr_addr:$_fr_port" ;;
	esac
	ferry_uint listen_port "$_fr_port" 1 65535

	ferry_line "# Generated from /etc/config/ferry by /etc/init.d/ferry; edit the UCI config instead."
	ferry_line "[wireguard]"
	ferry_str "$_fr_key"
	ferry_line "private-key-file = $_fr_q"
	ferry_str "$_fr_listen"
	ferry_line "listen = $_fr_q"
	ferry_uint mtu "$_fr_mtu" 576 9000
	ferry_line "mtu = $_fr_n"
	ferry_arr "$_fr_s" address
	ferry_line "address = $_fr_arr"
	ferry_line ""
	ferry_line "[egress]"
	ferry_str "$_fr_mode"
	ferry_line "mode = $_fr_q"
	ferry_str "$_fr_tun"
	ferry_line "tun-name = $_fr_q"
	ferry_bool "$_fr_masq"
	ferry_line "masquerade = $_fr_b"
	ferry_arr "$_fr_s" allow
	ferry_line "allow = $_fr_arr"
	ferry_arr "$_fr_s" deny
	ferry_line "deny = $_fr_arr"
	ferry_arr "$_fr_s" tunnel_service
	ferry_line "tunnel-services = $_fr_arr"
	# Exit ports: no block_port list = the agent's default (tcp/25 closed); 'none' opens all.
	config_get _fr_bp "$_fr_s" block_port ""
	config_get _fr_ap "$_fr_s" allow_port ""
	if [ -n "$_fr_ap" ]; then
		[ -z "$_fr_bp" ] || ferry_err "set block_port or allow_port, not both (allow_port lists the only ports clients may use)"
		ferry_arr "$_fr_s" allow_port
		ferry_line "allow-ports = $_fr_arr"
	elif [ "$_fr_bp" = none ]; then
		ferry_line "block-ports = []"
	elif [ -n "$_fr_bp" ]; then
		case " $_fr_bp " in
		*" none "*) ferry_err "block_port 'none' (every port open) must be the only entry" ;;
		esac
		ferry_arr "$_fr_s" block_port
		ferry_line "block-ports = $_fr_arr"
	fi
	ferry_bool "$_fr_ping"
	ferry_line "tunnel-ping = $_fr_b"
	ferry_line ""
	ferry_line "[limits]"
	ferry_uint max_peers "$_fr_maxp"
	ferry_line "max-peers = $_fr_n"
	ferry_uint client_rate_mbit "$_fr_rate"
	ferry_line "client-rate-mbit = $_fr_n"
	ferry_render_sharing
	config_get_bool _fr_paid "$_fr_s" paid 0
	[ "$_fr_paid" = 0 ] || ferry_render_paid
	config_foreach ferry_render_peer peer
	if [ -n "$_fr_extra" ]; then
		if [ -r "$_fr_extra" ]; then
			printf '\n# Appended from %s\n' "$_fr_extra"
			cat "$_fr_extra"
		else
			ferry_err "extra_toml '$_fr_extra' is not readable"
		fi
	fi
	[ "$_fr_failed" = 0 ]
}
