#!/bin/sh
# Cross-builds static, stripped ferry-agent binaries for OpenWrt routers, runs each under
# qemu-user-static, checks the mipsel size budget and records sizes in docs/openwrt.md.
# Also builds the unit tests of ferry-receipts and ferry-relay-core for aarch64, mipsel and mips and runs
# them under qemu (FERRY_QEMU_TEST_CRATES).
#
# Usage: openwrt/build.sh all | <arch>... | setup | test-qemu [<arch>...] | list
#   <arch> is one of: aarch64 x86_64 armv7 mipsel mips (or the full Rust target triple).
# Environment:
#   FERRY_MIPSEL_MAX_BYTES  size ceiling for the stripped mipsel agent (default 2228224 = 2.125 MiB,
#                           a regression ceiling ~6 % above the agent of 2026-11-24 23:30; the
#                           issue's 1.5 MiB target is not met by the agent with metering, metrics and
#                           DNS: see docs/openwrt.md "Size budget")
#   FERRY_SKIP_SETUP=1      do not install toolchains (fail instead if something is missing)
#   FERRY_SKIP_TESTS=1      skip the unit tests under qemu
#   FERRY_QEMU_TEST_CRATES  crates whose tests run under qemu (default: ferry-receipts ferry-relay-core)
#   FERRY_QEMU_TEST_ARCHES  arches whose tests run under qemu when built (default: aarch64 mipsel mips;
#                           mips is the big-endian one)
#   PROPTEST_CASES          proptest cases for those tests (default 64)
#   FERRY_NICE              niceness for cargo (default 15; the build machine is shared)
#   FERRY_CROSS_TARGET_DIR  cargo target dir (default target/cross, apart from the shared target/)
#   FERRY_UPDATE_DOC=0      do not rewrite the size table in docs/openwrt.md (CI)
# Outputs: dist/<arch>/ferry-agent, dist/sizes.tsv, the size table in docs/openwrt.md.
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${FERRY_CROSS_TARGET_DIR:-$ROOT/target/cross}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
NICENESS=${FERRY_NICE:-15}
MIPSEL_MAX=${FERRY_MIPSEL_MAX_BYTES:-2228224}
MIPSEL_TARGET=1572864
# Under qemu the tests check codegen, not coverage: fewer proptest cases (default 256) keep the
# mipsel run at about a minute instead of ~4 (measured).
export PROPTEST_CASES="${PROPTEST_CASES:-64}"
TEST_ARCHES=${FERRY_QEMU_TEST_ARCHES:-aarch64 mipsel mips}
OVER_BUDGET=""
TEST_CRATES=${FERRY_QEMU_TEST_CRATES:-ferry-receipts ferry-relay-core}
DOC="$ROOT/docs/openwrt.md"

log() { printf '== %s\n' "$*" >&2; }
die() {
	printf 'build.sh: %s\n' "$*" >&2
	exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# shellcheck source-path=SCRIPTDIR source=lib/arches.sh
. "$ROOT/openwrt/lib/arches.sh"

# Runs cargo for a "gnu" arch with the C cross compiler ring needs and qemu as test runner.
cargo_gnu() {
	case "$ARCH" in
	aarch64)
		env "CC_$TC=aarch64-linux-gnu-gcc" "AR_$TC=aarch64-linux-gnu-ar" \
			"CARGO_TARGET_${TE}_LINKER=aarch64-linux-gnu-gcc" "CARGO_TARGET_${TE}_RUNNER=$QEMU" \
			nice -n "$NICENESS" cargo "$@"
		;;
	*) env "CC_$TC=gcc" "CARGO_TARGET_${TE}_RUNNER=$QEMU" nice -n "$NICENESS" cargo "$@" ;;
	esac
}

# cargo_zig zigbuild|test ...: cargo-zigbuild with std built from rust-src and qemu as runner.
# Without +crt-static the mips binaries segfault; without link-self-contained=no the link misses
# crt1.o. Size flags for 32-bit MIPS release builds (static non-PIE executables, panic=abort),
# measured on the stripped mipsel agent 2026-11-24 (2,224,916 bytes with neither):
#   -C relocation-model=static     no GOT indirection of PIC code          -> 1,963,580
#   -Zlocation-detail=none         no file:line strings in panic messages   -> 1,891,396
#   -C force-unwind-tables=no      no .eh_frame (nothing unwinds: abort)    -> 1,725,924
# and on the agent of 2026-11-24 21:45 (metering, store, metrics, DNS; `small` features):
#   -C panic=immediate-abort       no panic message machinery               2,833,648 -> 2,705,992
#     (a panic kills the process without printing anything; procd respawns it)
# Tests keep unwind tables and locations (the harness catches panics by unwinding).
cargo_zig() {
	flags="-C target-feature=+crt-static -C link-self-contained=no"
	case "$ARCH" in mips | mipsel)
		flags="$flags -C relocation-model=static"
		[ "$1" = test ] || flags="$flags -Zlocation-detail=none -C force-unwind-tables=no -Zunstable-options -C panic=immediate-abort"
		;;
	esac
	env RUSTC_BOOTSTRAP=1 "CARGO_TARGET_${TE}_RUSTFLAGS=$flags" \
		"CARGO_TARGET_${TE}_RUNNER=$QEMU" nice -n "$NICENESS" cargo-zigbuild "$@"
}

apt_install() {
	[ "${FERRY_SKIP_SETUP:-0}" != 1 ] || die "missing Debian packages:$* (FERRY_SKIP_SETUP=1)"
	log "apt-get install$*"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
	# shellcheck disable=SC2086 # word splitting intended
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# setup <arch>...: installs what those arches need; cheap when everything is there already.
setup() {
	need_gnu=0 need_zig=0 gnu_targets=""
	for a in "$@"; do
		load "$a"
		case "$METHOD" in
		gnu) need_gnu=1 gnu_targets="$gnu_targets $TRIPLE" ;;
		zig) need_zig=1 ;;
		esac
	done
	pkgs=""
	have qemu-aarch64-static || pkgs="$pkgs qemu-user-static binfmt-support"
	have jq || pkgs="$pkgs jq"
	have file || pkgs="$pkgs file"
	have readelf || pkgs="$pkgs binutils"
	if [ "$need_gnu" = 1 ]; then
		have aarch64-linux-gnu-gcc || pkgs="$pkgs gcc-aarch64-linux-gnu"
		# ring's C needs the (glibc) cross headers; a plain --no-install-recommends gcc lacks them
		[ -f /usr/aarch64-linux-gnu/include/stdint.h ] || pkgs="$pkgs libc6-dev-arm64-cross"
		have gcc || pkgs="$pkgs gcc"
	fi
	# shellcheck disable=SC2086 # word splitting intended
	[ -z "$pkgs" ] || apt_install $pkgs
	[ "${FERRY_SKIP_SETUP:-0}" != 1 ] || return 0
	installed=$(rustup target list --installed)
	for t in $gnu_targets; do
		echo "$installed" | grep -qx "$t" || {
			log "rustup target add $t"
			rustup target add "$t"
		}
	done
	if [ "$need_zig" = 1 ]; then
		rustup component list --installed | grep -q '^rust-src' || {
			log "rustup component add rust-src"
			rustup component add rust-src
		}
		python3 -m ziglang version >/dev/null 2>&1 || have zig || {
			log "pip install ziglang"
			python3 -m pip install -q ziglang
		}
		cargo-zigbuild --version >/dev/null 2>&1 || {
			log "cargo install --locked cargo-zigbuild"
			nice -n "$NICENESS" cargo install --locked cargo-zigbuild
		}
	fi
}

# strip_bin IN OUT: `--strip-all` with the LLVM objcopy that ships with rustc. The linker's -s
# (profile strip=true) keeps MIPS's non-loaded `.pdr` procedure-descriptor section: 282,496
# bytes of the 2,991,312-byte mipsel agent of 2026-11-24 22:00. Removed here (not loaded at run
# time, no debugger uses it). Other arches: a no-op next to strip=true.
strip_bin() {
	sysroot=$(rustc --print sysroot)
	objcopy="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy"
	if [ -x "$objcopy" ]; then
		LD_LIBRARY_PATH="$sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
			"$objcopy" --strip-all --remove-section=.pdr "$1" "$2"
	elif have llvm-objcopy; then
		llvm-objcopy --strip-all --remove-section=.pdr "$1" "$2"
	else
		die "no rust-objcopy in $sysroot nor llvm-objcopy to strip $1"
	fi
}

# build_one <arch>: router-profile build (opt-level z) of ferry-agent, stripped into
# dist/<arch>/ferry-agent. FERRY_CARGO_ARGS: extra cargo arguments (e.g. `--config
# profile.router.package.curve25519-dalek.opt-level=3`, used by bench/ops-bench.sh).
build_one() {
	load "$1"
	start=$(date +%s)
	log "build $ARCH ($TRIPLE, $METHOD, $FEATURES features)"
	# shellcheck disable=SC2086 # FEATURE_ARGS and FERRY_CARGO_ARGS are split into words on purpose
	case "$METHOD" in
	gnu) cargo_gnu build --locked --profile router -p ferry-agent --target "$TRIPLE" $FEATURE_ARGS ${FERRY_CARGO_ARGS:-} ;;
	zig)
		cargo_zig zigbuild --locked --profile router -p ferry-agent --target "$TRIPLE" $FEATURE_ARGS \
			-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size ${FERRY_CARGO_ARGS:-}
		;;
	esac
	secs=$(($(date +%s) - start))
	mkdir -p "dist/$ARCH"
	strip_bin "$CARGO_TARGET_DIR/$TRIPLE/router/ferry-agent" "dist/$ARCH/ferry-agent"
	echo "$secs" >"dist/$ARCH/build-seconds"
	log "built dist/$ARCH/ferry-agent in ${secs}s"
}

# verify_one <arch>: static and stripped, runs under qemu, within the size budget.
verify_one() {
	load "$1"
	bin="dist/$ARCH/ferry-agent"
	desc=$(file -b "$bin")
	case "$desc" in *"dynamically linked"* | *"not stripped"*) die "$bin: $desc" ;; esac
	! readelf -lW "$bin" | grep -q INTERP || die "$bin has a program interpreter (not static)"
	! readelf -SW "$bin" | grep -q '\.symtab' || die "$bin still has a symbol table (not stripped)"
	ver=$("$QEMU" "$bin" --version) || die "$bin --version failed under $QEMU"
	case "$ver" in ferry-agent*) ;; *) die "$bin --version printed '$ver'" ;; esac
	help=$("$QEMU" "$bin" --help) || die "$bin --help failed under $QEMU"
	if echo "$help" | grep -Eq '^ +self-test'; then
		"$QEMU" "$bin" self-test >/dev/null || die "$bin self-test failed under $QEMU"
		log "$ARCH: self-test ok"
	fi
	if echo "$help" | grep -Eq '^ +check-config'; then
		check_config "$bin"
		log "$ARCH: check-config of config/agent.example.toml ok"
	fi
	size=$(wc -c <"$bin" | tr -d ' ')
	if [ "$ARCH" = mipsel ] && [ "$size" -gt "$MIPSEL_MAX" ]; then
		# reported (and failed) at the end, after the other checks and the size table
		OVER_BUDGET="stripped mipsel agent is $size bytes, over the ceiling of $MIPSEL_MAX"
		log "$OVER_BUDGET"
	elif [ "$ARCH" = mipsel ] && [ "$size" -gt "$MIPSEL_TARGET" ]; then
		log "note: stripped mipsel agent is $size bytes: within the ceiling ($MIPSEL_MAX), above the 1.5 MiB target ($MIPSEL_TARGET)"
	fi
	log "$ARCH: '$ver', $size bytes"
	printf '%s\t%s\t%s\n' "$ARCH" "$size" "$(cat "dist/$ARCH/build-seconds")" >"dist/$ARCH/size.tsv"
}

# check_config <bin>: `check-config` on the example config with a key from the binary's own
# `genkey` (0600), whose `pubkey` must be a 44-character base64 key. `small` builds have no
# DoT/DoH: the example's tls/https upstreams must be refused with a message naming the missing
# feature, and the example with those upstreams turned into plain ones must pass.
check_config() {
	tmp=$(mktemp -d)
	key="$tmp/wg.key"
	# A wg-genkey style key (base64 of 32 bytes) in case the agent has no genkey yet.
	"$QEMU" "$1" genkey >"$key" 2>/dev/null || echo "YEC3B2vH3aE3Q9kW2p7ZqT9j0v4mGq1w0o6yJ5XxK2w=" >"$key"
	chmod 600 "$key"
	if pub=$("$QEMU" "$1" pubkey <"$key" 2>"$tmp/out"); then
		echo "$pub" | grep -Eqx '[A-Za-z0-9+/]{43}=' || { rm -rf "$tmp"; die "$1 pubkey printed '$pub'"; }
		log "$ARCH: genkey | pubkey ok"
	fi
	sed "s|^private-key-file *=.*|private-key-file = \"$key\"|" config/agent.example.toml >"$tmp/agent.toml"
	if [ "$FEATURES" = small ] && grep -Eq '^protocol *= *"(tls|https)"' "$tmp/agent.toml"; then
		if "$QEMU" "$1" check-config --config "$tmp/agent.toml" >"$tmp/out" 2>&1 ||
			! grep -q 'needs ferry-dns built with the dot feature' "$tmp/out"; then
			cat "$tmp/out" >&2
			rm -rf "$tmp"
			die "$1 ($FEATURES features) did not refuse a DoT/DoH upstream with a clear message"
		fi
		log "$ARCH: DoT/DoH upstreams refused (no dns-encrypted feature), as expected"
		sed -E -e 's/^protocol *= *"(tls|https)"/protocol = "plain"/' -e '/^tls-name *=/d' \
			"$tmp/agent.toml" >"$tmp/agent-plain.toml"
		mv "$tmp/agent-plain.toml" "$tmp/agent.toml"
	fi
	if ! "$QEMU" "$1" check-config --config "$tmp/agent.toml" >"$tmp/out" 2>&1; then
		cat "$tmp/out" >&2
		rm -rf "$tmp"
		die "$1 check-config failed under $QEMU"
	fi
	rm -rf "$tmp"
}

# test_one <arch>: builds the unit tests of $TEST_CRATES for the target and runs them under qemu.
test_one() {
	load "$1"
	start=$(date +%s)
	pkgs=""
	for c in $TEST_CRATES; do pkgs="$pkgs -p $c"; done
	log "test$pkgs on $ARCH under $QEMU (PROPTEST_CASES=$PROPTEST_CASES)"
	# shellcheck disable=SC2086 # one -p per crate
	case "$METHOD" in
	gnu) cargo_gnu test --locked $pkgs --target "$TRIPLE" ;;
	zig) cargo_zig test --locked $pkgs --target "$TRIPLE" -Zbuild-std ;;
	esac
	log "tests of $TEST_CRATES on $ARCH passed under qemu in $(($(date +%s) - start))s"
}

# update_doc <arch>...: rewrites those rows of the size table in docs/openwrt.md.
update_doc() {
	[ "${FERRY_UPDATE_DOC:-1}" != 0 ] || {
		cat dist/*/size.tsv >dist/sizes.tsv
		return 0
	}
	for a in "$@"; do
		load "$a"
		tsv="dist/$ARCH/size.tsv"
		if [ ! -f "$tsv" ] || [ ! -f "$DOC" ]; then continue; fi
		size=$(cut -f2 "$tsv")
		secs=$(cut -f3 "$tsv")
		row="| $ARCH | \`$TRIPLE\` | \`$OWRT\` | $size | $(((size + 1023) / 1024)) | $secs |"
		awk -v arch="$ARCH" -v row="$row" '
			/<!-- sizes:begin -->/ { inblock = 1 }
			/<!-- sizes:end -->/ { inblock = 0 }
			inblock && index($0, "| " arch " |") == 1 { print row; next }
			{ print }
		' "$DOC" >"$DOC.tmp" && mv "$DOC.tmp" "$DOC"
	done
	cat dist/*/size.tsv >dist/sizes.tsv
}

# canon <arch>...: prints the canonical short names.
canon() {
	for a in "$@"; do
		load "$a"
		echo "$ARCH"
	done
}

build_arches() {
	total_start=$(date +%s)
	setup "$@"
	for a in "$@"; do build_one "$a"; done
	for a in "$@"; do verify_one "$a"; done
	update_doc "$@"
	if [ "${FERRY_SKIP_TESTS:-0}" != 1 ]; then
		for a in "$@"; do
			case " $TEST_ARCHES " in *" $a "*) test_one "$a" ;; esac
		done
	fi
	log "build.sh: $* done in $(($(date +%s) - total_start))s (arch, bytes, build seconds):"
	cat dist/sizes.tsv >&2
	[ -z "$OVER_BUDGET" ] || die "$OVER_BUDGET"
}

[ $# -gt 0 ] || die "usage: $0 all | <arch>... | setup | test-qemu [<arch>...] | list"
# shellcheck disable=SC2086,SC2046 # arch lists are split on purpose
case "$1" in
all) build_arches $ALL_ARCHES ;;
list) echo "$ALL_ARCHES" ;;
setup) setup $ALL_ARCHES ;;
test-qemu | test-receipts)
	shift
	[ $# -gt 0 ] || set -- $TEST_ARCHES
	arches=$(canon "$@")
	setup $arches
	for a in $arches; do test_one "$a"; done
	;;
*) build_arches $(canon "$@") ;;
esac
