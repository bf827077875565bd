#!/bin/sh
# Tests openwrt/mkipk.sh: builds the ferry .ipk (with a stand-in binary, plus every cross-built
# dist/<arch>/ferry-agent that exists) and luci-app-ferry, unpacks them and checks the outer
# layout, debian-binary, control fields, conffiles, maintainer scripts, paths, modes, owners,
# that the binary is packed unchanged, and that two builds are byte-identical.
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
MKIPK="$ROOT/openwrt/mkipk.sh"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

ok() {
	pass=$((pass + 1))
	echo "ok   - $*"
}
not_ok() {
	fail=$((fail + 1))
	echo "FAIL - $*"
}
# expect NAME COMMAND...: the command must succeed.
expect() {
	name=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then ok "$name"; else
		not_ok "$name"
		sed 's/^/       /' "$tmp/out"
	fi
}

# field FILE NAME: value of a control field.
field() { sed -n "s/^$2: //p" "$1"; }

# mode_owner LISTING PATH: "permissions owner" of PATH in a `tar -tv --numeric-owner` listing.
mode_owner() { awk -v p="$2" '$6 == p { print $1, $2 }' "$1"; }

# unpack IPK DIR: outer tar into DIR, control and data into DIR/control, DIR/data.
unpack() {
	rm -rf "$2"
	mkdir -p "$2/control" "$2/data"
	tar -tzf "$1" >"$2/outer.list"
	tar -C "$2" -xzf "$1"
	tar -C "$2/control" -xzf "$2/control.tar.gz"
	tar -C "$2/data" -xzf "$2/data.tar.gz"
	tar --numeric-owner -tvzf "$2/data.tar.gz" >"$2/data.list"
	tar --numeric-owner -tvzf "$2/control.tar.gz" >"$2/control.list"
}

check_outer() {
	[ "$(tr '\n' ' ' <"$1/outer.list")" = "./debian-binary ./data.tar.gz ./control.tar.gz " ] &&
		[ "$(cat "$1/debian-binary")" = "2.0" ]
}

check_owners() {
	! awk '$2 != "0/0" { print; bad = 1 } END { exit !bad }' "$1/data.list" "$1/control.list" &&
		! grep -v ' \./' "$1/data.list" "$1/control.list"
}

check_installed_size() {
	want=$(find "$1/data" -type f -exec cat {} + | wc -c | tr -d ' ')
	[ "$(field "$1/control/control" Installed-Size)" = "$want" ]
}

check_ferry_control() {
	c="$1/control/control"
	[ "$(field "$c" Package)" = ferry ] && [ "$(field "$c" Version)" = "$VERSION-r1" ] &&
		[ "$(field "$c" Architecture)" = "$2" ] && [ "$(field "$c" Depends)" = "kmod-tun, ip, nftables" ] &&
		[ -n "$(field "$c" Description)" ] && field "$c" Maintainer | grep -Eq '^[^<]+ <[^@ ]+@[^> ]+>$' &&
		[ "$(cat "$1/control/conffiles")" = /etc/config/ferry ] && [ -f "$1/data/etc/config/ferry" ]
}

check_scripts() {
	for s in postinst prerm; do
		[ "$(mode_owner "$1/control.list" "./$s")" = "-rwxr-xr-x 0/0" ] || return 1
		sh -n "$1/control/$s" || return 1
	done
	grep -q default_postinst "$1/control/postinst" && grep -q default_prerm "$1/control/prerm"
}

check_ferry_data() {
	l="$1/data.list"
	[ "$(mode_owner "$l" ./usr/bin/ferry-agent)" = "-rwxr-xr-x 0/0" ] &&
		[ "$(mode_owner "$l" ./etc/init.d/ferry)" = "-rwxr-xr-x 0/0" ] &&
		[ "$(mode_owner "$l" ./etc/config/ferry)" = "-rw------- 0/0" ] &&
		[ "$(mode_owner "$l" ./etc/uci-defaults/99-ferry)" = "-rwxr-xr-x 0/0" ] &&
		[ "$(mode_owner "$l" ./usr/share/ferry/ferry-render.sh)" = "-rw-r--r-- 0/0" ] &&
		[ "$(mode_owner "$l" ./lib/upgrade/keep.d/ferry)" = "-rw-r--r-- 0/0" ] &&
		[ "$(mode_owner "$l" ./etc/ferry/)" = "drwx------ 0/0" ] &&
		[ "$(cat "$1/data/lib/upgrade/keep.d/ferry")" = /etc/ferry/ ] &&
		head -n1 "$1/data/etc/init.d/ferry" | grep -q '^#!/bin/sh /etc/rc.common' &&
		cmp -s "$1/data/usr/share/ferry/ferry-render.sh" "$ROOT/openwrt/package/ferry/files/ferry-render.sh" &&
		cmp -s "$1/data/usr/bin/ferry-agent" "$2"
}

check_luci() {
	c="$1/control/control"
	l="$1/data.list"
	[ "$(field "$c" Package)" = luci-app-ferry ] && [ "$(field "$c" Architecture)" = all ] &&
		field "$c" Depends | grep -qw ferry && field "$c" Depends | grep -qw luci-base &&
		[ "$(mode_owner "$l" ./www/luci-static/resources/view/ferry/config.js)" = "-rw-r--r-- 0/0" ] &&
		[ "$(mode_owner "$l" ./usr/share/luci/menu.d/luci-app-ferry.json)" = "-rw-r--r-- 0/0" ] &&
		[ "$(mode_owner "$l" ./usr/share/rpcd/acl.d/luci-app-ferry.json)" = "-rw-r--r-- 0/0" ] &&
		[ "$(mode_owner "$l" ./usr/libexec/ferry-status)" = "-rwxr-xr-x 0/0" ] &&
		[ "$(mode_owner "$l" ./usr/libexec/ferry-pause)" = "-rwxr-xr-x 0/0" ] &&
		jq -e '.["luci-app-ferry"].write.file["/usr/libexec/ferry-pause"] == ["exec"]' \
			"$1/data/usr/share/rpcd/acl.d/luci-app-ferry.json" >/dev/null &&
		jq -e '.["admin/services/ferry"].action.path == "ferry/config"' \
			"$1/data/usr/share/luci/menu.d/luci-app-ferry.json" >/dev/null &&
		jq -e '.["luci-app-ferry"].read.file["/usr/libexec/ferry-status"] == ["exec"]' \
			"$1/data/usr/share/rpcd/acl.d/luci-app-ferry.json" >/dev/null
}

# 1. Stand-in binary for mipsel: structure and fields, independent of a cross build.
printf '\177ELF stand-in for ferry-agent\n' >"$tmp/stand-in"
export SOURCE_DATE_EPOCH=1700000000
FERRY_AGENT_BIN="$tmp/stand-in" "$MKIPK" -o "$tmp/a" mipsel luci >/dev/null
FERRY_AGENT_BIN="$tmp/stand-in" "$MKIPK" -o "$tmp/b" mipsel luci >/dev/null
ipk="$tmp/a/ferry_${VERSION}-r1_mipsel_24kc.ipk"
luci="$tmp/a/luci-app-ferry_${VERSION}-r1_all.ipk"
expect "ipk file names" test -f "$ipk" -a -f "$luci"
expect "ipk is gzip'd tar (not ar)" sh -c "gzip -t '$ipk' && gzip -t '$luci'"
unpack "$ipk" "$tmp/u"
expect "outer members and debian-binary 2.0" check_outer "$tmp/u"
expect "control fields and conffiles" check_ferry_control "$tmp/u" mipsel_24kc
expect "Installed-Size is the sum of file sizes" check_installed_size "$tmp/u"
expect "postinst/prerm executable, valid sh, call default_*" check_scripts "$tmp/u"
expect "data paths, modes, keep.d, binary unchanged" check_ferry_data "$tmp/u" "$tmp/stand-in"
expect "all members owned by 0/0 with ./ paths" check_owners "$tmp/u"
expect "reproducible: two builds are identical" cmp "$ipk" "$tmp/b/${ipk##*/}"
unpack "$luci" "$tmp/l"
expect "luci-app-ferry: outer layout" check_outer "$tmp/l"
expect "luci-app-ferry: fields, files, modes, JSON" check_luci "$tmp/l"
expect "luci-app-ferry: owners" check_owners "$tmp/l"
expect "luci-app-ferry: Installed-Size" check_installed_size "$tmp/l"

# 2. Every cross-built agent that exists: OpenWrt arch and ELF machine match.
# shellcheck source-path=SCRIPTDIR source=../lib/arches.sh
. "$ROOT/openwrt/lib/arches.sh"
die() {
	echo "$*" >&2
	exit 1
}
for a in $ALL_ARCHES; do
	load "$a"
	bin="$ROOT/dist/$ARCH/ferry-agent"
	[ -f "$bin" ] || continue
	case "$ARCH" in
	aarch64) machine="ARM aarch64" ;;
	x86_64) machine="x86-64" ;;
	armv7) machine="ARM, EABI5" ;;
	mipsel) machine="LSB executable, MIPS" ;;
	mips) machine="MSB executable, MIPS" ;;
	esac
	"$MKIPK" -o "$tmp/d" "$ARCH" >/dev/null
	unpack "$tmp/d/ferry_${VERSION}-r1_$OWRT.ipk" "$tmp/d/$ARCH"
	expect "$ARCH: dist binary packed as $OWRT" check_ferry_control "$tmp/d/$ARCH" "$OWRT"
	expect "$ARCH: ELF machine is $machine" sh -c "file -b '$tmp/d/$ARCH/data/usr/bin/ferry-agent' | grep -q '$machine'"
done

echo "test-ipk: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
