# shellcheck shell=sh
# shellcheck disable=SC2154 # variables are assigned through eval
# A stand-in for the part of OpenWrt's /lib/functions.sh that ferry-render.sh uses, with the
# same semantics: config_load evaluates a UCI file (whose syntax is shell: config/option/list
# lines), options become CONFIG_<section>_<option>, lists also get _ITEM<n> and _LENGTH,
# anonymous sections are named cfgNNNNNN, config_get falls back to the default when the value
# is empty, config_list_foreach ignores plain options (as the real one does).
#
# config_load NAME reads "$UCI_CONFIG_DIR/NAME" (like `uci -c DIR`).

CONFIG_SECTIONS=""
CONFIG_NUM_SECTIONS=0
CONFIG_SECTION=""

config() {
	CONFIG_NUM_SECTIONS=$((CONFIG_NUM_SECTIONS + 1))
	_ff_name=${2:-$(printf 'cfg%06x' "$CONFIG_NUM_SECTIONS")}
	CONFIG_SECTION=$_ff_name
	CONFIG_SECTIONS="$CONFIG_SECTIONS $_ff_name"
	eval "CONFIG_${_ff_name}_TYPE=\$1"
}

option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\$2"
}

list() {
	eval "_ff_len=\${CONFIG_${CONFIG_SECTION}_$1_LENGTH:-0}"
	_ff_len=$((_ff_len + 1))
	eval "CONFIG_${CONFIG_SECTION}_$1_ITEM${_ff_len}=\$2"
	eval "CONFIG_${CONFIG_SECTION}_$1_LENGTH=\$_ff_len"
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}

config_load() {
	# shellcheck disable=SC1090 # fixture chosen at run time
	. "${UCI_CONFIG_DIR:?}/$1"
}

# config_get VAR SECTION OPTION [DEFAULT]
config_get() {
	eval "$1=\${CONFIG_$2_$3:-\${4:-}}"
}

# config_get_bool VAR SECTION OPTION [DEFAULT]
config_get_bool() {
	config_get _ff_bool "$2" "$3" "${4:-}"
	case "$_ff_bool" in
	1 | on | true | yes | enabled) _ff_bool=1 ;;
	0 | off | false | no | disabled) _ff_bool=0 ;;
	*) _ff_bool=${4:-} ;;
	esac
	eval "$1=\$_ff_bool"
}

# config_list_foreach SECTION OPTION FUNCTION [ARGS...] (not reentrant; ours need not be)
config_list_foreach() {
	[ "$#" -ge 3 ] || return 0
	_ff_sec=$1 _ff_opt=$2 _ff_fn=$3
	shift 3
	eval "_ff_n=\${CONFIG_${_ff_sec}_${_ff_opt}_LENGTH:-0}"
	_ff_i=1
	while [ "$_ff_i" -le "$_ff_n" ]; do
		eval "_ff_val=\$CONFIG_${_ff_sec}_${_ff_opt}_ITEM${_ff_i}"
		"$_ff_fn" "$_ff_val" "$@"
		_ff_i=$((_ff_i + 1))
	done
}

# config_foreach FUNCTION [TYPE [ARGS...]]
config_foreach() {
	_ff_each=$1
	shift
	_ff_type=${1:-}
	[ "$#" -ge 1 ] && shift
	for _ff_s in $CONFIG_SECTIONS; do
		eval "_ff_t=\$CONFIG_${_ff_s}_TYPE"
		[ -n "$_ff_type" ] && [ "$_ff_t" != "$_ff_type" ] && continue
		"$_ff_each" "$_ff_s" "$@"
	done
}
