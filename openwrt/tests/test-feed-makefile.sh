#!/bin/sh
# Tests openwrt/package/ferry/Makefile outside a buildroot: with stand-ins for rules.mk,
# package.mk and feeds/packages/lang/rust/rust-package.mk it is parsed by GNU make, both where
# docs/openwrt.md says to copy it (<buildroot>/package/ferry) and inside a feed
# (<buildroot>/feeds/packages/net/ferry); Build/Compile must call
# Build/Compile/Cargo on the router-agent workspace member, and Package/ferry/install must lay
# out exactly the files, modes and paths that mkipk.sh packs (so both packagings agree).
set -eu
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
ROOT=$(CDPATH='' cd -- "$HERE/../.." && pwd)
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
# shellcheck source=openwrt/tests/lib/check.sh
. "$HERE/lib/check.sh"

mkdir -p "$tmp/top/package" "$tmp/inc" "$tmp/top/feeds/packages/lang/rust" "$tmp/top/feeds/packages/net" "$tmp/pkginst/bin"
# The feed location is $tmp/feed (a link to the packages feed), the buildroot one $tmp/top/package.
ln -s "$tmp/top/feeds/packages" "$tmp/feed"
cp -R "$ROOT/openwrt/package/ferry" "$tmp/feed/net/ferry"
cp -R "$ROOT/openwrt/package/ferry" "$tmp/top/package/ferry"
printf 'stand-in\n' >"$tmp/pkginst/bin/ferry-agent"
cat >"$tmp/top/rules.mk" <<'MK'
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
MK
cat >"$tmp/inc/package.mk" <<'MK'
define BuildPackage
install-test:
	$$(call Package/$(1)/install,$$(DEST))
compile-test:
	$$(file >$$(OUT),$$(call Build/Compile))
conffiles-test:
	$$(file >$$(OUT),$$(Package/$(1)/conffiles))
endef
MK
cat >"$tmp/top/feeds/packages/lang/rust/rust-package.mk" <<'MK'
RUST_ARCH_DEPENDS:=@(rust-arches)
# as lang/rust/rust-values.mk sets it
CARGO_PKG_PROFILE:=$(if $(CONFIG_DEBUG),dev,release)
define Build/Compile/Cargo
cargo-install --profile $(CARGO_PKG_PROFILE) --path $(PKG_BUILD_DIR)/$(1) --locked$(if $(strip $(2)), $(strip $(2)))
endef
define RustBinPackage
endef
MK
mk() { make -s -C "$tmp/feed/net/ferry" TOPDIR="$tmp/top" INCLUDE_DIR="$tmp/inc" \
	PKG_INSTALL_DIR="$tmp/pkginst" PKG_BUILD_DIR=/build DEST="$tmp/root" "$@"; }

check "Makefile parses at <buildroot>/package/ferry (outside the feed)" \
	sh -c "$(printf '%s' "make -s -C '$tmp/top/package/ferry' TOPDIR='$tmp/top' INCLUDE_DIR='$tmp/inc' PKG_BUILD_DIR=/build OUT='$tmp/compile-bp' compile-test") && grep -Eqx '[[:space:]]*cargo-install --profile router --path /build/router-agent --locked' '$tmp/compile-bp'"
check "Makefile parses in the feed; Build/Compile installs the router-agent crate with the router profile, --locked" \
	sh -c "$(printf '%s' "make -s -C '$tmp/feed/net/ferry' TOPDIR='$tmp/top' INCLUDE_DIR='$tmp/inc' PKG_BUILD_DIR=/build OUT='$tmp/compile' compile-test") && grep -Eqx '[[:space:]]*cargo-install --profile router --path /build/router-agent --locked' '$tmp/compile'"
check "conffiles: /etc/config/ferry and /etc/ferry/" \
	sh -c "$(printf '%s' "make -s -C '$tmp/feed/net/ferry' TOPDIR='$tmp/top' INCLUDE_DIR='$tmp/inc' OUT='$tmp/conffiles' conffiles-test") && [ \"\$(grep . '$tmp/conffiles' | tr '\n' ' ')\" = '/etc/config/ferry /etc/ferry/ ' ]"
check "Package/ferry/install runs" mk install-test
check "DEPENDS: rust arches, kmod-tun, the feed's virtual ip (TUN mode runs ip), nftables (agent masquerade)" \
	grep -Eq '^  DEPENDS:=\$\(RUST_ARCH_DEPENDS\) \+kmod-tun \+ip \+nftables$' "$tmp/feed/net/ferry/Makefile"
check "PKG_MAINTAINER has a name and an address" grep -Eq '^PKG_MAINTAINER:=[^<]+ <[^@ ]+@[^> ]+>$' "$tmp/feed/net/ferry/Makefile"
check "no keep.d file of our own (package-pack.mk lists directory conffiles in keep.d)" \
	sh -c "! grep -Eq 'ferry\.keep|INSTALL.*keep\.d' '$tmp/feed/net/ferry/Makefile'"
for a in mips mipsel; do
	check "ARCH=$a builds the small feature set (--no-default-features --features=small-logs)" \
		sh -c "$(printf '%s' "make -s -C '$tmp/feed/net/ferry' TOPDIR='$tmp/top' INCLUDE_DIR='$tmp/inc' PKG_BUILD_DIR=/build ARCH=$a OUT='$tmp/compile-$a' compile-test") && grep -Eqx '[[:space:]]*cargo-install --profile router --path /build/router-agent --locked --no-default-features --features=small-logs' '$tmp/compile-$a'"
done
for a in aarch64 arm x86_64; do
	check "ARCH=$a builds the default features" \
		sh -c "$(printf '%s' "make -s -C '$tmp/feed/net/ferry' TOPDIR='$tmp/top' INCLUDE_DIR='$tmp/inc' PKG_BUILD_DIR=/build ARCH=$a OUT='$tmp/compile-$a' compile-test") && grep -Eqx '[[:space:]]*cargo-install --profile router --path /build/router-agent --locked' '$tmp/compile-$a'"
done

# What package-pack.mk adds after Package/ferry/install: conffiles that are not files (the
# /etc/ferry/ directory) go to lib/upgrade/keep.d/<pkg> (its KEEP_ step).
while read -r x; do
	if [ -z "$x" ] || [ -f "$tmp/root/$x" ]; then continue; fi
	mkdir -p "$tmp/root/lib/upgrade/keep.d"
	echo "$x" >>"$tmp/root/lib/upgrade/keep.d/ferry"
done <"$tmp/conffiles"
find "$tmp/root/lib" -type d -exec chmod 0755 {} +
chmod 0644 "$tmp/root/lib/upgrade/keep.d/ferry"
# The tree mkipk.sh packs, from its data.tar.gz, compared with what the Makefile installed.
SOURCE_DATE_EPOCH=1700000000 FERRY_AGENT_BIN="$tmp/pkginst/bin/ferry-agent" \
	"$ROOT/openwrt/mkipk.sh" -o "$tmp/ipk" mipsel >/dev/null
mkdir -p "$tmp/ipkx"
tar -C "$tmp/ipkx" -xzf "$tmp/ipk/"*.ipk ./data.tar.gz
tar --numeric-owner -tvzf "$tmp/ipkx/data.tar.gz" | awk '{ p = $6; sub(/^\.\//, "", p); sub(/\/$/, "", p); print $1, p }' |
	LC_ALL=C sort >"$tmp/ipk.tree"
(cd "$tmp/root" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort | while read -r p; do
	echo "$(stat -c %A "$p") $p"
done) | LC_ALL=C sort >"$tmp/make.tree"
check "feed Makefile and mkipk.sh install the same paths with the same modes" diff "$tmp/ipk.tree" "$tmp/make.tree"

check_done test-feed-makefile
