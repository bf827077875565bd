# shellcheck shell=sh disable=SC2154 # tmp is set by the sourcing test
# The OpenWrt tests' one result helper. Source it after setting `tmp` (a scratch directory).
#
#   check NAME CMD...   runs CMD; prints "ok   - NAME" or "FAIL - NAME" and, on failure, the
#                       files named in $CHECK_SHOW (default: CMD's own output) indented
#   check_done TEST     prints "TEST: N passed, N failed" and returns 1 if any failed
pass=0 fail=0

check() {
	_ck_name=$1
	shift
	if "$@" >"$tmp/check.out" 2>&1; then
		pass=$((pass + 1))
		echo "ok   - $_ck_name"
	else
		fail=$((fail + 1))
		echo "FAIL - $_ck_name"
		for _ck_f in ${CHECK_SHOW:-$tmp/check.out}; do
			[ ! -s "$_ck_f" ] || sed 's/^/       /' "$_ck_f"
		done
	fi
}

check_done() {
	echo "$1: $pass passed, $fail failed"
	[ "$fail" -eq 0 ]
}
