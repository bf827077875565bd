#!/bin/sh
# Builds a busybox configured like OpenWrt's (openwrt-applets.txt: the options OpenWrt's
# Config-defaults.in turns on, everything else off) from Debian's busybox source package, and
# installs its applets as symlinks in OUT/bin. The OpenWrt shell tests put OUT/bin first in
# PATH, or alone, so a construct OpenWrt's busybox lacks (tr '[:cntrl:]', stat, timeout, ...)
# fails here as it would on a router. scripts/setup.sh runs this; it is a no-op when OUT holds a
# build of the same option list.
# Needs: apt-get source (adds a deb-src entry for Debian's own mirrors when none exists), gcc,
# make, bzip2. Usage: openwrt/tests/busybox/build.sh [OUT]   (default target/openwrt-busybox)
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../../.." && pwd)
OUT=${1:-${FERRY_OPENWRT_BUSYBOX:-$ROOT/target/openwrt-busybox}}
LIST=$HERE/openwrt-applets.txt
stamp=$(cat "$LIST" "$0" | sha256sum | cut -d' ' -f1)
if [ -x "$OUT/bin/busybox" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "openwrt busybox: up to date in $OUT"
	exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source --download-only busybox >apt.log 2>&1; then
	# No deb-src entry: add one for the mirrors and suites the machine already uses.
	src=/etc/apt/sources.list.d/debian.sources
	[ -r "$src" ] || { cat apt.log >&2; echo "openwrt busybox: no $src to derive a deb-src entry from" >&2; exit 1; }
	sed 's/^Types: deb$/Types: deb-src/' "$src" >/etc/apt/sources.list.d/ferry-deb-src.sources
	apt-get update -qq
	apt-get source --download-only busybox >apt.log 2>&1 || { cat apt.log >&2; exit 1; }
fi
# The upstream tarball of Debian's source package, without Debian's patches: OpenWrt builds
# upstream busybox with patches of its own, none of which touch the applets our scripts use.
tar xjf busybox_*.orig.tar.bz2
cd busybox-*/
make allnoconfig >config.log 2>&1
grep -v '^#' "$LIST" | while read -r opt; do
	case "$opt" in
	'!'*) sed -i "s/^CONFIG_${opt#!}=y\$/# CONFIG_${opt#!} is not set/" .config ;;
	*) sed -i "s/^# CONFIG_$opt is not set\$/CONFIG_$opt=y/" .config ;;
	esac
done
yes '' | make oldconfig >>config.log 2>&1
# Every listed option this busybox knows must have stayed on (kconfig drops unmet dependencies).
bad=$(grep -v '^[#!]' "$LIST" | while read -r opt; do
	if grep -q "CONFIG_${opt}[= ]" .config && ! grep -q "^CONFIG_$opt=y\$" .config; then echo "$opt"; fi
done)
[ -z "$bad" ] || { echo "openwrt busybox: options not enabled: $bad" >&2; exit 1; }
make -j"$(nproc)" busybox busybox.links >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT/bin"
cp busybox "$OUT/bin/busybox"
cp .config "$OUT/busybox.config"
sed 's|.*/||' busybox.links | while read -r applet; do ln -s busybox "$OUT/bin/$applet"; done
echo "$stamp" >"$OUT/stamp"
echo "openwrt busybox: $(basename "$PWD") with $(wc -l <busybox.links) applets in $OUT/bin"
