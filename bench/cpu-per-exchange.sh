#!/usr/bin/env bash
# cpu-per-exchange.sh: server CPU time per 4-way exchange at a fixed offered rate, for one or
# more tandem binaries, alternating them: the way to tell a change's cost from this shared
# box's noise, where a rate search swings by a grid step.
#
# Each round starts `BIN serve` on loopback (a fresh store, fsync on, log level warn unless --log-level), offers
# --clients new clients at --rate with tandem-gen (4-way exchanges, acquire only), and reads the
# server's utime + stime from /proc before and after. Prints one line per run and the mean per
# binary.
#
# Usage: bench/cpu-per-exchange.sh [--rounds N] [--rate R] [--clients N] [--mode na|pd|both]
#                                  [--log-level warn|info] [--relay]
#                                  [--xdp [--gen-xdp] [--one-queue]] [--perf DIR] [--store]
#                                  BIN [BIN...]
#   --log-level info is the server's default: one log line per lease change.
#   --relay: tandem-gen acts as a relay agent (Relay-forw with Interface-Id), as an ISP's
#   clients reach the server; the server then keeps the relay data with every lease.
#   --xdp: the server on the AF_XDP datapath (--datapath xdp --xdp-mode native) at one end of a
#   veth pair with two queues between netns tdmcs and tdmcc, tandem-gen at the
#   other, instead of loopback; implies --relay (as gen-vs-kea.sh's tandem-xdp target). Needs
#   root; the XDP program's softirq work is charged to no process.
#   --gen-xdp: with --xdp, tandem-gen on AF_XDP too (--datapath xdp --xdp-mode native) instead
#   of a UDP socket: its receive is then the XDP program and a copy, not the kernel's IPv6 and
#   UDP stack, which veth runs inside the server's send and this kernel's tick accounting
#   charges to the server.
#   --one-queue: with --xdp, the generator's veth sends every frame on queue 0 (XPS), so the
#   server receives everything on one queue, as it does from one relay agent on a NIC; without
#   it tandem-gen's two flows hash to one queue or to both by chance (their ports), and the
#   server's CPU per exchange differs by several µs between the two cases.
#   --perf DIR: record each run's server with `perf record -g` into DIR/BIN-name.ROUND.data
#   (perf's own cost then counts in the figures: compare profiles, not numbers, of such runs).
#   --store: the server also serves /metrics (on its namespace's loopback), read once when the
#   generator is done, and each run's line adds the store's side: journal folds, their time
#   (per fold, and per exchange), group commits and their mean duration.
#   e.g. bench/cpu-per-exchange.sh /tmp/tandem-old target/release/tandem
# Needs no root without --xdp. Everything it creates is removed on exit.

set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
GEN_BIN="$REPO/target/release/tandem-gen"
ROUNDS=3
RATE=15000
CLIENTS=120000
MODE=both
LOG_LEVEL=warn
RELAY=()
XDP=0
GEN_DP=()
PERF_DIR=""
ONE_QUEUE=0
STORE=0
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --mode) MODE="$2"; shift 2 ;;
        --log-level) LOG_LEVEL="$2"; shift 2 ;;
        --relay) RELAY=(--relay-link 2001:db8:1::); shift ;;
        --xdp) XDP=1; RELAY=(--relay-link 2001:db8:1::); shift ;;
        --gen-xdp) GEN_DP=(--datapath xdp --xdp-mode native); shift ;;
        --perf) PERF_DIR="$2"; shift 2 ;;
        --one-queue) ONE_QUEUE=1; shift ;;
        --store) STORE=1; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || die "give at least one tandem binary"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds must be 1..20"
[ ${#GEN_DP[@]} -eq 0 ] || [ "$XDP" = 1 ] || die "--gen-xdp needs --xdp (the veth pair)"
[ "$ONE_QUEUE" = 0 ] || [ "$XDP" = 1 ] || die "--one-queue needs --xdp (the veth pair)"
if [ -n "$PERF_DIR" ]; then
    ensure_tools perf:linux-perf
    mkdir -p "$PERF_DIR" || die "cannot create $PERF_DIR"
fi
ensure_tools jq:jq awk:gawk
[ "$STORE" = 0 ] || ensure_tools curl:curl
# The XDP program is built into BIN by cargo with clang and libbpf's headers (src/server/build.rs):
# a BIN built before they were installed refuses --datapath xdp and says so.
[ "$XDP" = 1 ] && ensure_tools clang:clang ethtool:ethtool /usr/include/bpf/bpf_helpers.h:libbpf-dev
[ -x "$GEN_BIN" ] || (cd "$REPO" && cargo build --release --quiet --bin tandem-gen) || die "cannot build tandem-gen"

WORK="$(mktemp -d /tmp/tdm-cpu.XXXXXX)"
SERVER_PID=""
PERF_PID=""
NS_S=tdmcs NS_C=tdmcc ADDR_S=2001:db8:1::1/64 ADDR_C=2001:db8:1::2/64 VETH_QUEUES=2
cleanup() {
    stop_pid "$PERF_PID"
    stop_pid "$SERVER_PID"
    [ "$XDP" = 1 ] && delete_topology
    rm -rf "$WORK"
}
trap cleanup EXIT
# Command prefixes that run the server and the generator in their namespaces with --xdp
# (`ip netns exec` execs the command, so $! is the server's own PID).
IN_S=() IN_C=()
if [ "$XDP" = 1 ]; then
    IN_S=(ip netns exec "$NS_S") IN_C=(ip netns exec "$NS_C")
    [ "$(id -u)" = 0 ] || die "--xdp needs root (network namespaces, XDP)"
    setup_topology
    # The server's frames carry the UDP checksum it computes; the generator's must too.
    ip netns exec "$NS_C" ethtool -K "$NS_C" tx off >/dev/null || die "ethtool -K $NS_C tx off failed"
    if [ "$ONE_QUEUE" = 1 ]; then
        # Every CPU sends on tx-0 (the server's rx-0), none on the others.
        all_cpus="$(printf '%x' $(( (1 << $(nproc)) - 1 )))"
        ip netns exec "$NS_C" sh -c "echo $all_cpus >/sys/class/net/$NS_C/queues/tx-0/xps_cpus &&
            for q in /sys/class/net/$NS_C/queues/tx-*; do [ \$q = /sys/class/net/$NS_C/queues/tx-0 ] || echo 0 >\$q/xps_cpus; done" \
            || die "cannot set XPS on $NS_C"
    fi
fi

TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# thread_ticks PID: one line per thread of PID, "name ticks", threads of one name summed.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
    done 2>/dev/null | awk '{ s[$1] += $2 } END { for (n in s) print n, s[n] }' | sort
}

# one_run BIN: prints microseconds of server CPU per completed exchange.
one_run() {
    local bin="$1" port data t0 t1 out ok
    port=$((20000 + RANDOM % 20000))
    data="$WORK/data.$RANDOM"
    local server="[::1]:$port" dp=()
    if [ "$XDP" = 1 ]; then
        port=547 server="[2001:db8:1::1]:547" dp=(--datapath xdp --xdp-mode native)
        cat >"$WORK/t.toml" <<T
[server]
data_dir = "$data"
listen = ["$server"]
interfaces = ["$NS_S"]
log_level = "$LOG_LEVEL"
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ prefix = "2001:db8:1::/64" }]
pd_pools = [{ prefix = "2001:db8:8000::/33", delegated_len = 56 }]
T
    else
        loopback_config "$WORK/t.toml" "$data" "$port" "$LOG_LEVEL"
    fi
    local mport=$((40000 + RANDOM % 20000))
    [ "$STORE" = 1 ] && dp+=(--metrics-listen "[::1]:$mport")
    "${IN_S[@]}" "$bin" serve --config "$WORK/t.toml" "${dp[@]}" 2>"$WORK/server.log" &
    SERVER_PID=$!
    sleep 1
    kill -0 "$SERVER_PID" 2>/dev/null || die "$bin did not start: $(tail -3 "$WORK/server.log")"
    t0="$(cpu_ticks "$SERVER_PID")"
    local steal0 wall0 steal1 wall1
    steal0="$(steal_ticks)" wall0="$(date +%s.%N)"
    thread_ticks "$SERVER_PID" >"$WORK/threads.0"
    if [ -n "$PERF_DIR" ]; then
        perf record -q -g -p "$SERVER_PID" -o "$PERF_DIR/$(basename "$bin").$ROUND.data" 2>/dev/null &
        PERF_PID=$!
    fi
    out="$("${IN_C[@]}" timeout $((CLIENTS / RATE + 60)) "$GEN_BIN" "${GEN_DP[@]}" --server "$server" --clients "$CLIENTS" \
        --rate "$RATE" --mode "$MODE" --phases acquire "${RELAY[@]}" --json 2>/dev/null)"
    t1="$(cpu_ticks "$SERVER_PID")"
    steal1="$(steal_ticks)" wall1="$(date +%s.%N)"
    thread_ticks "$SERVER_PID" >"$WORK/threads.1"
    local store=""
    if [ "$STORE" = 1 ]; then
        "${IN_S[@]}" curl -sf --max-time 5 "http://[::1]:$mport/metrics" >"$WORK/metrics" ||
            die "cannot read $bin's /metrics"
        local ok_now
        ok_now="$(jq '.phases[0].ok // 0' <<<"$out" 2>/dev/null)"
        store="$(tandem_counters <"$WORK/metrics" | jq -r --argjson ok "${ok_now:-0}" '
            {folds: 0, fold_s: 0, commits: 0, commit_s: 0} + .
            | "; store: \(.folds) folds, \(if .folds > 0 then (.fold_s * 1000 / .folds * 10 | round / 10) else 0 end) ms a fold (\(if $ok > 0 then (.fold_s * 1e6 / $ok * 100 | round / 100) else 0 end) us/exchange), \(.commits) commits of \(if .commits > 0 then (.commit_s * 1000 / .commits * 100 | round / 100) else 0 end) ms"')"
    fi
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; PERF_PID=""
    fi
    stop_pid "$SERVER_PID"; SERVER_PID=""
    rm -rf "$data"
    ok="$(jq '.phases[0].ok' <<<"$out" 2>/dev/null)"
    [ -n "$ok" ] && [ "$ok" -gt 0 ] || die "no exchange completed against $bin"
    local per_thread
    per_thread="$(awk -v hz="$TCK" -v ok="$ok" 'NR == FNR { t0[$1] = $2; next }
        { d = ($2 - t0[$1]) * 1e6 / hz / ok; if (d >= 0.05) printf "%s%s %.1f", sep, $1, d; sep = ", " }' \
        "$WORK/threads.0" "$WORK/threads.1")"
    local steal
    steal="$(steal_pct "$steal0" "$steal1" "$wall0" "$wall1")"
    store+="; host steal ${steal%% *} % of a core (by CPU: $(tr ' ' / <<<"${steal#* }"))"
    awk -v t="$((t1 - t0))" -v hz="$TCK" -v ok="$ok" -v th="$per_thread$store" \
        'BEGIN { printf "%.1f %d %s\n", t * 1e6 / hz / ok, ok, th }'
}

declare -A SUM
for r in $(seq "$ROUNDS"); do
    ROUND=$r
    for b in "${BINS[@]}"; do
        # Not in a subshell: a die in one_run ends the script, and SERVER_PID stays visible to cleanup.
        one_run "$b" >"$WORK/run.out"
        read -r us ok threads <"$WORK/run.out"
        printf 'round %d  %-40s %s %s%s%s: %s us/exchange (%s exchanges at %s/s; by thread: %s)\n' "$r" "$b" "$MODE" "log=$LOG_LEVEL" "${RELAY:+ relayed}" "$([ "$XDP" = 1 ] && echo ' AF_XDP')$([ "$ONE_QUEUE" = 1 ] && echo ', one queue')$([ ${#GEN_DP[@]} -gt 0 ] && echo ', generator on AF_XDP')" "$us" "$ok" "$RATE" "$threads"
        SUM[$b]="$(awk -v a="${SUM[$b]:-0}" -v b="$us" 'BEGIN { print a + b }')"
    done
done
for b in "${BINS[@]}"; do
    awk -v s="${SUM[$b]}" -v n="$ROUNDS" -v b="$b" 'BEGIN { printf "mean %-40s %.1f us/exchange\n", b, s / n }'
done
