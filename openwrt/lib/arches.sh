# shellcheck shell=sh
# shellcheck disable=SC2034 # the variables set here are used by the sourcing scripts
# The router architectures Ferry ships, shared by build.sh and mkipk.sh.
# arch_info ARCH|TRIPLE prints "arch triple qemu-binary openwrt-arch method features"; method is
# gnu (Debian gcc cross linker, prebuilt rust-std) or zig (cargo-zigbuild + -Zbuild-std: no usable
# prebuilt std here). The OpenWrt arch is the package architecture of a typical target. features
# is the ferry-agent feature set: "default" (everything, incl. `dns-encrypted`: DoT/DoH upstreams)
# or "small" (`--no-default-features`: no DoT/DoH, ~0.9 MB less on MIPS; for 8-16 MB-flash routers).
ALL_ARCHES="aarch64 x86_64 armv7 mipsel mips"

arch_info() {
	case "$1" in
	aarch64 | aarch64-unknown-linux-musl) echo "aarch64 aarch64-unknown-linux-musl qemu-aarch64-static aarch64_cortex-a53 gnu default" ;;
	x86_64 | x86_64-unknown-linux-musl) echo "x86_64 x86_64-unknown-linux-musl qemu-x86_64-static x86_64 gnu default" ;;
	armv7 | armv7-unknown-linux-musleabihf) echo "armv7 armv7-unknown-linux-musleabihf qemu-arm-static arm_cortex-a7_neon-vfpv4 zig default" ;;
	mipsel | mipsel-unknown-linux-musl) echo "mipsel mipsel-unknown-linux-musl qemu-mipsel-static mipsel_24kc zig small" ;;
	mips | mips-unknown-linux-musl) echo "mips mips-unknown-linux-musl qemu-mips-static mips_24kc zig small" ;;
	*) return 1 ;;
	esac
}

# load ARCH: sets ARCH TRIPLE QEMU OWRT METHOD FEATURES FEATURE_ARGS (exits via die() if unknown).
load() {
	info=$(arch_info "$1") || die "unknown arch '$1' (one of: $ALL_ARCHES)"
	read -r ARCH TRIPLE QEMU OWRT METHOD FEATURES <<EOF2
$info
EOF2
	FEATURE_ARGS=""
	# small: no DoT/DoH upstreams, and debug/trace log statements compiled out (~60 KB).
	[ "$FEATURES" != small ] || FEATURE_ARGS="--no-default-features --features=small-logs"
	TC=$(echo "$TRIPLE" | tr '-' '_')
	TE=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
}
