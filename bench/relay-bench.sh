#!/usr/bin/env bash
# Relay throughput: ferry-agent side by side with wireguard-go and boringtun-cli AS THE RELAY, one run.
#
# Method: ../shared/bench/wg-baseline.sh (same measure/quiet-gate/CPU accounting), but with a third
# namespace so the relay does what ferry-agent does on a router: decrypt, forward + masquerade, encrypt.
#
#   netns ferbA (client)          netns ferbB (relay under test)          netns ferbC (server)
#   veth ferbvA 10.99.0.1/24 ---- veth ferbvB 10.99.0.2/24
#   tunnel ferbtA 10.100.0.2/32   tunnel/TUN ferbtB 10.100.0.1/24
#   (WG client = $CLIENT, the     veth ferbuB 10.98.0.1/24 ---------------- veth ferbuC 10.98.0.2/24
#    same for every relay)        forwarding + nft masquerade to ferbuB     iperf3 -s
#
# The WireGuard client in A is the same implementation for every relay (default boringtun-cli,
# the most CPU-efficient userspace client here; this kernel has no WireGuard module), so the
# relay is the only variable. daemonB% is the relay's CPU (utime+stime of all its threads, % of
# one core); "relay core-% per Gbit/s" = daemonB% / Gbit/s.
#
# Relays (IMPLS): wggo (wireguard-go), bt (boringtun-cli), ferry-z (ferry-agent, size-optimised
# `router` profile as on OpenWrt, tun egress), ferry-o3 (`release` profile, opt-level 3, tun
# egress), ferry-us (release, userspace/smoltcp egress).
#
# Tests: tcp1 = A->C upload 1 stream, tcpP4 = 4 streams, tcp1R = C->A download (-R, relay encrypts),
#        udp-<rate> = A->C UDP sweep (UDP_IMPLS), payload MTU-28.
#
# Usage:  bench/relay-bench.sh [all|tcp|udp|profile|cleanup]    (default: all)
#         profile: tcp1 (upload) through each of PROFILE_IMPLS (default "ferry-o3 bt") for DUR s
#         under `perf record -e cpu-clock` (software clock; no hardware counters needed), then
#         the top symbols of the relay process (ferry built with symbols: FERRY_O3 unset).
# Env:    REPS=3 DUR=10 UDP_DUR=5 OUTDIR=${TMPDIR:-/tmp}/ferry-relay-bench TUN_MTU=1420
#         IMPLS="wggo bt ferry-z ferry-o3 ferry-us"  UDP_IMPLS="wggo bt ferry-o3"  CLIENT=bt|wggo
#         UDP_RATES="200M 400M 600M 800M 1000M"  BT_THREADS=4
#         FERRY_Z=path FERRY_O3=path (skip building)  BT=path  WGGO=path
#         TOOLS=/tmp/ferry-bench-tools (boringtun-cli is `cargo install`ed there when missing)
#         QUIET_MAX=10 QUIET_WAIT=900 FOREIGN_MAX=10 MAX_TRIES=4 (see wg-baseline.sh)
# Needs:  root, /dev/net/tun, iproute2, nftables, wireguard-tools, wireguard-go, iperf3, jq,
#         python3, netcat-openbsd, cargo.
# Output: $OUTDIR/results.tsv, $OUTDIR/*.json (raw iperf3), $OUTDIR/summary.txt (also on stdout).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NSA=ferbA; NSB=ferbB; NSC=ferbC
VA=ferbvA; VB=ferbvB; UBIF=ferbuB; UCIF=ferbuC
TA=ferbtA; TB=ferbtB          # unique host-wide: wireguard-go UAPI sockets are not namespaced
UA=10.99.0.1; UB=10.99.0.2; SB=10.98.0.1; SC=10.98.0.2
TIPA=10.100.0.2; TIPB=10.100.0.1
PORTA=51821; PORTB=51820
REPS=${REPS:-3}; DUR=${DUR:-10}; UDP_DUR=${UDP_DUR:-5}
TUN_MTU=${TUN_MTU:-1420}
OUTDIR=${OUTDIR:-${TMPDIR:-/tmp}/ferry-relay-bench}
IMPLS=${IMPLS:-"wggo bt ferry-z ferry-o3 ferry-us"}
UDP_IMPLS=${UDP_IMPLS:-"wggo bt ferry-o3"}
CLIENT=${CLIENT:-bt}
TOOLS=${TOOLS:-/tmp/ferry-bench-tools}
WGGO=${WGGO:-$(command -v wireguard-go || echo wireguard-go)}
BT=${BT:-$(command -v boringtun-cli || echo "$TOOLS/bin/boringtun-cli")}
BT_THREADS=${BT_THREADS:-4}
UDP_RATES=${UDP_RATES:-"200M 400M 600M 800M 1000M"}
QUIET_MAX=${QUIET_MAX:-10}; QUIET_WAIT=${QUIET_WAIT:-900}
FOREIGN_MAX=${FOREIGN_MAX:-10}; MAX_TRIES=${MAX_TRIES:-4}
CLK=$(getconf CLK_TCK)
KSOFT=$(for d in /proc/[0-9]*; do [[ $(cat $d/comm 2>/dev/null) == ksoftirqd/* ]] && echo ${d#/proc/} || true; done | tr '\n' ' ')
KEYDIR=$OUTDIR/keys
DPIDS=()                    # (client daemon PID, relay daemon PID)
SRV_PID=""; CHK_PID=""
TSV=$OUTDIR/results.tsv
declare -A FERRY_BIN

log() { echo "[$(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- tools
ensure_tools() {
  if [[ " $IMPLS " == *" bt "* || $CLIENT == bt ]] && [[ ! -x $BT ]]; then
    log "installing boringtun-cli into $TOOLS (cargo install, nice 10)"
    nice -n 10 cargo install --locked --root "$TOOLS" boringtun-cli >&2
    BT=$TOOLS/bin/boringtun-cli
  fi
  local t src
  mkdir -p "$OUTDIR/bin"
  for t in $IMPLS; do
    case $t in
      ferry-z)  src=${FERRY_Z:-$(build_ferry router)} ;;
      ferry-o3|ferry-us) src=${FERRY_O3:-$(build_ferry release)} ;;
      *) continue ;;
    esac
    # Private copy: the shared target dir may be rebuilt by others while the bench runs.
    cp "$src" "$OUTDIR/bin/ferry-agent-$t"; FERRY_BIN[$t]=$OUTDIR/bin/ferry-agent-$t
  done
}

build_ferry() {  # $1 = cargo profile; prints the binary path
  local dir=$1; [[ $1 == dev ]] && dir=debug
  local keep=()    # the profile run wants symbols: a separate, unstripped build
  [[ ${PROFILING:-0} == 1 ]] && keep=(--config "profile.$1.strip=false" --target-dir "${CARGO_TARGET_DIR:-$REPO/target}/bench-symbols")
  log "building ferry-agent --profile $1 (nice 10)"
  (cd "$REPO" && nice -n 10 cargo build --quiet --locked -p ferry-agent --bin ferry-agent --profile "$1" "${keep[@]}" >&2)
  if [[ ${PROFILING:-0} == 1 ]]; then dir=bench-symbols/$dir; fi
  echo "${CARGO_TARGET_DIR:-$REPO/target}/$dir/ferry-agent"
}

# ---------------------------------------------------------------- setup / teardown
setup_net() {
  ip netns add $NSA; ip netns add $NSB; ip netns add $NSC
  ip link add $VA netns $NSA type veth peer name $VB netns $NSB
  ip link add $UBIF netns $NSB type veth peer name $UCIF netns $NSC
  for ns in $NSA $NSB $NSC; do ip -n $ns link set lo up; done
  ip -n $NSA addr add $UA/24 dev $VA;   ip -n $NSB addr add $UB/24 dev $VB
  ip -n $NSB addr add $SB/24 dev $UBIF; ip -n $NSC addr add $SC/24 dev $UCIF
  ip -n $NSA link set $VA up; ip -n $NSB link set $VB up
  ip -n $NSB link set $UBIF up; ip -n $NSC link set $UCIF up
  ip netns exec $NSB sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
  ip netns exec $NSA ping -q -c1 -W2 $UB >/dev/null
  ip netns exec $NSB ping -q -c1 -W2 $SC >/dev/null
  ip netns exec $NSC iperf3 -s -p 5201 >"$OUTDIR/iperf3-server.log" 2>&1 &
  SRV_PID=$!
  ip netns exec $NSC nc -lk $SC 5999 >/dev/null 2>&1 &     # reachability check target
  CHK_PID=$!
  sleep 0.5
}

wait_sock() { local s=/var/run/wireguard/$1.sock; for _ in $(seq 100); do [[ -S $s ]] && return 0; sleep 0.05; done; log "no UAPI socket $s"; return 1; }

start_wg_daemon() {  # $1=impl(wggo|bt) $2=ns $3=ifname $4=logname -> echoes PID
  case $1 in
    wggo) ip netns exec "$2" "$WGGO" -f "$3" >"$OUTDIR/$4.log" 2>&1 & ;;
    bt)   ip netns exec "$2" "$BT" -f --disable-drop-privileges -t "$BT_THREADS" "$3" >"$OUTDIR/$4.log" 2>&1 & ;;
  esac
  echo $!
}

start_client() {
  local pid; pid=$(start_wg_daemon "$CLIENT" $NSA $TA "client-$CLIENT")
  DPIDS+=("$pid")
  wait_sock $TA
  ip netns exec $NSA wg set $TA private-key $KEYDIR/a.key listen-port $PORTA \
      peer "$(cat $KEYDIR/b.pub)" endpoint $UB:$PORTB allowed-ips 10.100.0.0/24,10.98.0.0/24
  ip -n $NSA addr add $TIPA/32 dev $TA; ip -n $NSA link set $TA mtu $TUN_MTU up
  ip -n $NSA route add 10.100.0.0/24 dev $TA; ip -n $NSA route add 10.98.0.0/24 dev $TA
}

ferry_config() {  # $1 = tun|userspace
  cat <<EOF
[wireguard]
private-key-file = "$KEYDIR/b.key"
listen = "0.0.0.0:$PORTB"
mtu = $TUN_MTU
address = ["$TIPB/24"]

[egress]
mode = "$1"
$([[ $1 == tun ]] && printf 'tun-name = "%s"\nmasquerade = true' $TB)
allow = ["$SC/32"]
deny = []

[limits]
max-peers = 1024
client-rate-mbit = 0

[[peer]]
name = "bench-client"
public-key = "$(cat $KEYDIR/a.pub)"
allowed-ips = ["$TIPA/32"]
EOF
}

start_relay() {  # $1 = impl
  local impl=$1 pid mode=tun
  case $impl in
    wggo|bt)
      pid=$(start_wg_daemon "$impl" $NSB $TB "relay-$impl")
      wait_sock $TB
      ip netns exec $NSB wg set $TB private-key $KEYDIR/b.key listen-port $PORTB \
          peer "$(cat $KEYDIR/a.pub)" allowed-ips $TIPA/32
      ip -n $NSB addr add $TIPB/24 dev $TB; ip -n $NSB link set $TB mtu $TUN_MTU up
      ip netns exec $NSB nft add table inet ferbnat
      ip netns exec $NSB nft 'add chain inet ferbnat post { type nat hook postrouting priority srcnat; }'
      ip netns exec $NSB nft add rule inet ferbnat post oifname $UBIF masquerade ;;
    ferry-*)
      [[ $impl == ferry-us ]] && mode=userspace
      ferry_config $mode >"$OUTDIR/$impl.toml"
      ip netns exec $NSB env RUST_LOG=${FERRY_LOG:-info} "${FERRY_BIN[$impl]}" run --config "$OUTDIR/$impl.toml" \
          >"$OUTDIR/relay-$impl.log" 2>&1 &
      pid=$!
      for _ in $(seq 100); do ip netns exec $NSB ss -Huln | grep -q ":$PORTB " && break; sleep 0.1; done ;;
  esac
  DPIDS+=("$pid")
  echo "relay $impl pid $pid" >>"$OUTDIR/info.txt"
}

start_pair() {  # $1 = relay impl
  start_relay "$1"; start_client
  DPIDS=("${DPIDS[1]}" "${DPIDS[0]}")     # (client, relay): daemonA = client, daemonB = relay
  local ok=""
  for _ in $(seq 20); do ip netns exec $NSA nc -z -w1 $SC 5999 2>/dev/null && { ok=1; break; }; sleep 0.3; done
  [[ -n $ok ]] || { log "no path A -> C through $1"; tail -5 "$OUTDIR/relay-$1.log" >&2; return 1; }
  log "path up through $1 (client pid ${DPIDS[0]}, relay pid ${DPIDS[1]})"
}

stop_pair() {
  local p
  for p in "${DPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${DPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  DPIDS=()
  ip netns exec $NSB nft delete table inet ferbnat 2>/dev/null || true
  ip -n $NSA link del $TA 2>/dev/null || true; ip -n $NSB link del $TB 2>/dev/null || true
  rm -f /var/run/wireguard/$TA.sock /var/run/wireguard/$TB.sock
}

cleanup() {
  set +e
  stop_pair
  for p in $SRV_PID $CHK_PID; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  SRV_PID=""; CHK_PID=""
  ip netns del $NSA 2>/dev/null; ip netns del $NSB 2>/dev/null; ip netns del $NSC 2>/dev/null
  rm -f /var/run/wireguard/$TA.sock /var/run/wireguard/$TB.sock
}

# ---------------------------------------------------------------- measurement (as wg-baseline.sh)
proc_ticks() { local f; read -r -a f </proc/"$1"/stat; echo $(( f[13] + f[14] )); }
pids_ticks() { local p s=0; for p in "$@"; do s=$(( s + $(proc_ticks "$p") )); done; echo $s; }
sys_ticks()  { local u n s i w q sq st; read -r _ u n s i w q sq st _ </proc/stat
               echo $((u+n+s+q+sq)) $((u+n+s+i+w+q+sq+st)) $st; }

quiet_gate() {
  local t0=$SECONDS b0 a0 s0 b1 a1 s1 pct
  while :; do
    read -r b0 a0 s0 < <(sys_ticks); sleep 1; read -r b1 a1 s1 < <(sys_ticks)
    pct=$(( 100 * (b1-b0) * $(nproc) / (a1-a0 > 0 ? a1-a0 : 1) ))
    (( pct < QUIET_MAX )) && return 0
    (( SECONDS - t0 > QUIET_WAIT )) && { log "quiet gate timed out (busy ${pct}% of a core)"; return 0; }
    (( (SECONDS - t0) % 30 == 0 )) && log "waiting for quiet box (busy ${pct}% of a core)"
  done
}

# measure IMPL TEST REP -- iperf3 client args...   (columns as wg-baseline.sh; daemonA = client)
measure() {
  local impl=$1 test=$2 rep=$3; shift 4
  local json=$OUTDIR/$impl-$test-$rep.json try b0 t0 st0 b1 t1 st1 s0 s1 c0=() c1=() p o0 o1 line
  local el_s cpuA cpuB sysb foreign steal
  for ((try=1; try<=MAX_TRIES; try++)); do
    quiet_gate
    c0=(); c1=(); cpuA=NA; cpuB=NA
    read -r b0 t0 st0 < <(sys_ticks); for p in "${DPIDS[@]}"; do c0+=("$(proc_ticks "$p")"); done
    o0=$(pids_ticks $SRV_PID $KSOFT)
    s0=$(date +%s%N)
    ip netns exec $NSA iperf3 -J "$@" >"$json" || log "iperf3 failed: $impl $test $rep"
    s1=$(date +%s%N)
    read -r b1 t1 st1 < <(sys_ticks); for p in "${DPIDS[@]}"; do c1+=("$(proc_ticks "$p")"); done
    o1=$(pids_ticks $SRV_PID $KSOFT)
    el_s=$(awk -v a=$s0 -v b=$s1 'BEGIN{print (b-a)/1e9}')
    cpuA=$(awk -v d=$((c1[0]-c0[0])) -v k=$CLK -v e=$el_s 'BEGIN{printf "%.0f", 100*d/k/e}')
    cpuB=$(awk -v d=$((c1[1]-c0[1])) -v k=$CLK -v e=$el_s 'BEGIN{printf "%.0f", 100*d/k/e}')
    local dd=$(( c1[0]-c0[0] + c1[1]-c0[1] ))
    sysb=$(awk -v b=$((b1-b0)) -v t=$((t1-t0)) 'BEGIN{printf "%.0f", 100*b/t}')
    steal=$(awk -v b=$((st1-st0)) -v t=$((t1-t0)) 'BEGIN{printf "%.1f", 100*b/t}')
    local cli; cli=$(jq -r '.end.cpu_utilization_percent.host_total // 0' "$json" 2>/dev/null || echo 0)
    foreign=$(awk -v b=$((b1-b0)) -v d=$dd -v o=$((o1-o0)) -v k=$CLK -v e=$el_s -v c=${cli:-0} \
              'BEGIN{f=100*(b-d-o)/k/e - c; printf "%.0f", (f<0?0:f)}')
    (( foreign <= FOREIGN_MAX )) && break
    log "$impl $test rep$rep try$try contaminated: foreign=${foreign}% of a core -> retry"
    sleep 2
  done
  if [[ $test == udp* ]]; then
    line=$(jq -r '[(.end.sum.bits_per_second/1e9), (.end.sum.bits_per_second*(1-.end.sum.lost_percent/100)/1e9),
                   .end.sum.lost_percent, .end.cpu_utilization_percent.host_total,
                   .end.cpu_utilization_percent.remote_total] | map(.*1000|round/1000) | @tsv' "$json" 2>/dev/null || echo "0	0	100	0	0")
  else
    line=$(jq -r '[(.end.sum_received.bits_per_second/1e9), .end.sum_sent.retransmits,
                   .end.cpu_utilization_percent.host_total, .end.cpu_utilization_percent.remote_total]
                   | map(.*1000|round/1000) | @tsv' "$json" 2>/dev/null || echo "0	0	0	0")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$test" "$rep" "$cpuA" "$cpuB" "$sysb" \
         "$foreign" "$steal" "$((try > MAX_TRIES ? MAX_TRIES : try))" "$line" >>"$TSV"
  log "$impl $test rep$rep: client=$cpuA% relay=$cpuB% sys=$sysb% foreign=$foreign% steal=$steal% | $line"
}

tcp_suite() {  # $1=impl $2=rep
  measure "$1" tcp1 "$2" -- -c $SC -t "$DUR"; sleep 1
  measure "$1" tcpP4 "$2" -- -c $SC -t "$DUR" -P 4; sleep 1
  measure "$1" tcp1R "$2" -- -c $SC -t "$DUR" -R; sleep 1
}

run_tcp() {  # alternate impl order per repetition (ABC CBA ...) to spread drift
  local order r impl seq_; read -r -a order <<<"$IMPLS"
  for r in $(seq "$REPS"); do
    seq_=("${order[@]}")
    if (( r % 2 == 0 )); then seq_=(); for ((i=${#order[@]}-1; i>=0; i--)); do seq_+=("${order[i]}"); done; fi
    for impl in "${seq_[@]}"; do
      if start_pair "$impl"; then sleep 1; tcp_suite "$impl" "$r"; else log "SKIP $impl rep $r"; fi
      stop_pair; sleep 1
    done
  done
}

run_udp() {
  local rate impl
  for impl in $UDP_IMPLS; do
    if start_pair "$impl"; then
      sleep 1
      for rate in $UDP_RATES; do
        measure "$impl" "udp-$rate" 1 -- -c $SC -u -b "$rate" -l $((TUN_MTU-28)) -t "$UDP_DUR"; sleep 1
      done
    fi
    stop_pair; sleep 1
  done
}

summary() {
  python3 - "$TSV" "$IMPLS" <<'EOF'
import sys, statistics as st, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
impls = sys.argv[2].split()
def num(x):
    try: return float(x)
    except ValueError: return float("nan")
g = collections.OrderedDict()
for r in rows: g.setdefault((r[0], r[1]), []).append(r)
med = {}
print(f"{'relay':9} {'test':10} {'n':>2}  {'Gbit/s min/med/max':20} {'relay%':>7} {'client%':>7} {'relay%/Gbps':>11} {'sys%':>5}  extra")
for (impl, test), rs in g.items():
    if test.startswith("udp"):
        v = [num(r[10]) for r in rs]; extra = f"sent={st.median([num(r[9]) for r in rs]):.2f} loss={st.median([num(r[11]) for r in rs]):.2f}%"
    else:
        v = [num(r[9]) for r in rs]; extra = f"retr={st.median([num(r[10]) for r in rs]):.0f}"
    v = sorted(v); gb = st.median(v)
    rb = st.median([num(r[4]) for r in rs]); ca = st.median([num(r[3]) for r in rs])
    per = rb / gb if gb > 0 else float("nan")
    med[(impl, test)] = (gb, per)
    extra += f" foreign(max)={max(num(r[6]) for r in rs):.0f}% tries(max)={max(int(r[8]) for r in rs)}"
    print(f"{impl:9} {test:10} {len(rs):>2}  {v[0]:.2f}/{gb:.2f}/{v[-1]:.2f}{'':5} {rb:>7.0f} {ca:>7.0f} {per:>11.0f} {st.median([num(r[5]) for r in rs]):>5.0f}  {extra}")
print()
print("Ratios (median throughput ferry/other, and relay core-% per Gbit/s):")
for f in [i for i in impls if i.startswith("ferry")]:
    for test in ["tcp1", "tcpP4", "tcp1R"]:
        if (f, test) not in med: continue
        gb, per = med[(f, test)]
        parts = [f"{f:9} {test:6} {gb:.2f} Gbit/s, {per:.0f} core-%/Gbit/s"]
        for o in ["bt", "wggo"]:
            if (o, test) in med and med[(o, test)][0] > 0:
                parts.append(f"x{gb/med[(o, test)][0]:.2f} vs {o} ({med[(o, test)][1]:.0f} core-%/Gbit/s)")
        print("  " + "; ".join(parts))
print()
print("UDP loss point (first rate with >1% loss):")
for impl in impls:
    rates = sorted([(int(t[4:-1]), med[(i, t)]) for (i, t) in med if i == impl and t.startswith("udp")])
    if not rates: continue
    lossy = [r for (r, _) in rates if any(num(x[11]) > 1 for x in g[(impl, f"udp-{r}M")])]
    print(f"  {impl:9} " + (f"{lossy[0]}M" if lossy else f"none up to {rates[-1][0]}M")
          + "   rcvd: " + " ".join(f"{r}M->{v[0]:.2f}" for r, v in rates))
EOF
}

run_profile() {  # perf record of the relay during a tcp1 upload, per impl
  local impl pid
  for impl in ${PROFILE_IMPLS:-ferry-o3 bt}; do
    start_pair "$impl" || { stop_pair; continue; }
    sleep 1
    pid=${DPIDS[1]}
    ip netns exec $NSA iperf3 -c $SC -t "$DUR" -J >"$OUTDIR/profile-$impl.json" &
    local ip=$!
    sleep 1
    perf record -q -e cpu-clock -F 1999 -p "$pid" -o "$OUTDIR/perf-$impl.data" -- sleep $((DUR - 2)) 2>/dev/null
    wait $ip || true
    local gb; gb=$(jq -r '.end.sum_received.bits_per_second/1e9 | .*100|round/100' "$OUTDIR/profile-$impl.json")
    echo "== $impl: tcp1 $gb Gbit/s; relay top symbols (cpu-clock samples, % of the relay's)"
    perf report -q -i "$OUTDIR/perf-$impl.data" --stdio --no-children --sort dso,symbol --percent-limit 1.5 2>/dev/null \
      | grep -v '^$' | head -30
    stop_pair; sleep 1
  done
}

info() {
  {
    echo "date: $(date -Is)"; uname -r; nproc; grep -m1 'model name' /proc/cpuinfo
    "$WGGO" --version | head -1; wg --version; iperf3 --version | head -1
    "$BT" --version 2>/dev/null || true
    echo "client: $CLIENT; impls: $IMPLS; udp impls: $UDP_IMPLS; REPS=$REPS DUR=$DUR"
    for k in "${!FERRY_BIN[@]}"; do echo "$k: ${FERRY_BIN[$k]} $(stat -c %s "${FERRY_BIN[$k]}") bytes"; done
    echo "git: $(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null)"
  } >>"$OUTDIR/info.txt" 2>&1
}

main() {
  local what=${1:-all}
  if [[ $what == cleanup ]]; then cleanup; exit 0; fi
  mkdir -p "$OUTDIR" "$KEYDIR"; : >"$OUTDIR/info.txt"
  [[ -f $TSV ]] && mv "$TSV" "$TSV.$(date +%s).bak"
  [[ -f $KEYDIR/a.key ]] || { umask 077; for s in a b; do wg genkey >$KEYDIR/$s.key; wg pubkey <$KEYDIR/$s.key >$KEYDIR/$s.pub; done; }
  chmod 600 "$KEYDIR"/*.key
  [[ $what == profile ]] && { export PROFILING=1; IMPLS=${PROFILE_IMPLS:-ferry-o3 bt}; }
  ensure_tools
  trap cleanup EXIT
  trap 'cleanup; trap - EXIT; exit 130' INT TERM
  cleanup 2>/dev/null || true
  setup_net
  info
  case $what in
    all) run_tcp; run_udp ;;
    tcp) run_tcp ;;
    udp) run_udp ;;
    profile) run_profile | tee "$OUTDIR/profile.txt"; return ;;
  esac
  cat "$OUTDIR/info.txt"
  [[ -s $TSV ]] && summary | tee "$OUTDIR/summary.txt"
}
main "$@"
