#!/bin/sh
# SDK-free .ipk builder (opkg, OpenWrt 24.10 and earlier). An .ipk is a gzip'd tar of
# ./debian-binary ("2.0"), ./data.tar.gz and ./control.tar.gz (control, conffiles, postinst,
# prerm). Files come from openwrt/package/ferry (the same ones the feed Makefile installs) and
# the cross-built agent from openwrt/build.sh. Output is reproducible (SOURCE_DATE_EPOCH).
#
# Usage: openwrt/mkipk.sh [-o OUTDIR] all | <arch>... | luci
#   <arch>: aarch64 x86_64 armv7 mipsel mips; packs dist/<arch>/ferry-agent
#   luci:   luci-app-ferry_<version>_all.ipk (architecture independent)
# Environment: FERRY_AGENT_BIN overrides the binary for every arch (tests use a stand-in).
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
PKG="$ROOT/openwrt/package/ferry"
LUCI="$ROOT/openwrt/luci-app-ferry"
OUT="$ROOT/dist/ipk"
RELEASE=1
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}

die() {
	printf 'mkipk.sh: %s\n' "$*" >&2
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=lib/arches.sh
. "$ROOT/openwrt/lib/arches.sh"

# tgz DIR FILE: deterministic gzip'd tar of DIR's contents as ./..., owned by root.
tgz() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort) >"$1.list"
	tar -C "$1" --numeric-owner --owner=0 --group=0 --mtime="@$EPOCH" --no-recursion \
		-cf - -T "$1.list" | gzip -9n >"$2"
	rm -f "$1.list"
}

# installed_size DIR: total bytes of the regular files (what opkg's ipkg-build records).
installed_size() {
	find "$1" -type f -exec cat {} + | wc -c | tr -d ' '
}

# pack NAME ARCH WORKDIR DESCRIPTION DEPENDS: WORKDIR/data and WORKDIR/control -> OUT/.ipk
pack() {
	name=$1 pkgarch=$2 work=$3
	cat >"$work/control/control" <<EOF
Package: $name
Version: $VERSION-r$RELEASE
Depends: $5
Source: openwrt/package/$name
SourceName: $name
License: Apache-2.0
Section: net
SourceDateEpoch: $EPOCH
Maintainer: Ferry developers <maintainers@ferry.invalid>
Architecture: $pkgarch
Installed-Size: $(installed_size "$work/data")
Description: $4
EOF
	echo "2.0" >"$work/pkg/debian-binary"
	tgz "$work/data" "$work/pkg/data.tar.gz"
	tgz "$work/control" "$work/pkg/control.tar.gz"
	mkdir -p "$OUT"
	ipk="$OUT/${name}_$VERSION-r${RELEASE}_$pkgarch.ipk"
	tar -C "$work/pkg" --numeric-owner --owner=0 --group=0 --mtime="@$EPOCH" \
		-cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -9n >"$ipk"
	echo "$ipk"
}

# ferry_ipk ARCH: the agent package for one architecture.
ferry_ipk() {
	load "$1"
	bin=${FERRY_AGENT_BIN:-$ROOT/dist/$ARCH/ferry-agent}
	[ -f "$bin" ] || die "$bin is missing: run openwrt/build.sh $ARCH first"
	work=$(mktemp -d)
	d="$work/data"
	mkdir -p "$work/control" "$work/pkg" "$d/usr/bin" "$d/etc/init.d" "$d/etc/config" \
		"$d/etc/uci-defaults" "$d/usr/share/ferry" "$d/lib/upgrade/keep.d" "$d/etc/ferry"
	install -m 0755 "$bin" "$d/usr/bin/ferry-agent"
	install -m 0755 "$PKG/files/ferry.init" "$d/etc/init.d/ferry"
	install -m 0600 "$PKG/files/ferry.config" "$d/etc/config/ferry"
	install -m 0755 "$PKG/files/ferry.uci-defaults" "$d/etc/uci-defaults/99-ferry"
	install -m 0644 "$PKG/files/ferry-render.sh" "$d/usr/share/ferry/ferry-render.sh"
	# what package-pack.mk writes for a directory conffile (/etc/ferry/ in the feed Makefile)
	printf '/etc/ferry/\n' >"$d/lib/upgrade/keep.d/ferry"
	chmod 0644 "$d/lib/upgrade/keep.d/ferry"
	chmod 0700 "$d/etc/ferry"
	find "$d" -type d ! -path "$d/etc/ferry" -exec chmod 0755 {} +
	printf '/etc/config/ferry\n' >"$work/control/conffiles"
	install -m 0755 "$PKG/ipk/postinst" "$work/control/postinst"
	install -m 0755 "$PKG/ipk/prerm" "$work/control/prerm"
	pack ferry "$OWRT" "$work" \
		"Ferry bandwidth-sharing WireGuard relay agent (static ferry-agent, procd, UCI, fw4 zone)" \
		"kmod-tun, ip, nftables"
	rm -rf "$work"
}

# luci_ipk: the LuCI page (JavaScript, JSON; no compiled code).
luci_ipk() {
	work=$(mktemp -d)
	mkdir -p "$work/control" "$work/pkg" "$work/data"
	mkdir -p "$work/data/www"
	cp -R "$LUCI/htdocs/." "$work/data/www/"
	cp -R "$LUCI/root/." "$work/data/"
	find "$work/data" -type d -exec chmod 0755 {} +
	find "$work/data" -type f -exec chmod 0644 {} +
	find "$work/data/usr/libexec" -type f -exec chmod 0755 {} +
	cat >"$work/control/postinst" <<'EOF'
#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] && exit 0
rm -f /tmp/luci-indexcache* /tmp/luci-modulecache/* 2>/dev/null
/etc/init.d/rpcd reload 2>/dev/null
exit 0
EOF
	chmod 0755 "$work/control/postinst"
	pack luci-app-ferry all "$work" "LuCI page for Ferry: settings (UCI ferry) and agent status" \
		"luci-base, ferry"
	rm -rf "$work"
}

while getopts o: opt; do
	case "$opt" in
	o) OUT=$OPTARG ;;
	*) die "usage: $0 [-o OUTDIR] all | <arch>... | luci" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || die "usage: $0 [-o OUTDIR] all | <arch>... | luci"
[ -n "$VERSION" ] || die "no version in $ROOT/Cargo.toml"
for a in "$@"; do
	case "$a" in
	all)
		for x in $ALL_ARCHES; do ferry_ipk "$x"; done
		luci_ipk
		;;
	luci) luci_ipk ;;
	*) ferry_ipk "$a" ;;
	esac
done
