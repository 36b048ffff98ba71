#!/usr/bin/env bash
# gen-vs-kea.sh: Tandem against ISC Kea (single- and multi-threaded) and against the machine's
# ceiling (tandem-gen's stateless reflector), all driven by tandem-gen with the same settings
# over the same veth pair in one run; plus tandem-gen against perfdhcp as generators. See
# bench/README.md.
#
# Topology: netns tdmgs (server, veth tdmgs, 2001:db8:1::1/64) <-> netns tdmgc (tandem-gen,
# perfdhcp, veth tdmgc, 2001:db8:1::2/64). Traffic stays inside the two namespaces.
#
# For each target and case the script finds the sustained rate: the highest tandem-gen --rate at
# which fewer than 1 % of the clients end the trial without their lease and no lease check fails,
# searching by doubling/halving and then bisecting. Everything it creates (namespaces, veth, temp
# dir, processes) is removed on exit, also on failure or Ctrl-C.

set -uo pipefail

# ---------------------------------------------------------------- settings

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
TANDEM_BIN="$REPO/target/release/tandem"
GEN_BIN="$REPO/target/release/tandem-gen"
KEA_TEMPLATE="$BENCH/kea/kea-dhcp6.json.in"
TANDEM_TEMPLATE="$BENCH/tandem.toml.in"
RESULTS_DIR="$BENCH/results"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

NS_S=tdmgs            # server namespace and its veth end
NS_C=tdmgc            # client namespace and its veth end
SERVER_IP=2001:db8:1::1
ADDR_S=$SERVER_IP/64
ADDR_C=2001:db8:1::2/64

PERIOD=4              # seconds of sending per trial (--clients = rate x PERIOD)
SLACK=0               # --phase-secs = PERIOD + SLACK. 0: whatever is not done when the sending
                      # period ends counts as failed, so a server slower than the rate fails
START_RATE=4000       # search grid: START_RATE x 2^k
MAX_RATE=256000       # doubling stops here
MIN_RATE=500          # halving stops here
BISECT=3              # bisection steps once a pass and a failure bracket the rate
BUDGET=400            # seconds after the build: past this, searches stop early (noted)
LOSS_LIMIT=1          # percent: a trial fails when this share of the clients lack their lease at
                      # the end, or needed a retransmission (a lost or > 1 s late message)
THREADS=2             # tandem-gen --threads
WINDOW=512            # tandem-gen --window (exchanges outstanding per thread) in the search
OPEN_WINDOW=512       # --window of the open-loop run (--rate 0)
TIMEOUT_MS=1000       # tandem-gen --timeout-ms (RFC 8415 SOL_TIMEOUT / REQ_TIMEOUT)
MAX_RETRIES=2         # tandem-gen --max-retries
REFLECTOR_THREADS=2   # reflector --threads
TARGETS="ceiling tandem tandem-xdp kea-st kea-mt"
XDP_RUN=0             # 1 when tandem-xdp is among the targets (set by the target check)
CASES="na pd both"
ROUTE=auto            # auto | multicast | relay
GEN_RATES="20000 30000 40000 60000 80000"   # generator comparison: offered rates tried with each tool
GEN_PERIOD=3          # seconds per generator-comparison run
DO_GENCMP=1
DO_BUILD=1
KEEP_LOGS=""
WRITE_RESULTS=1
PIN=""                # --pin S,C: server on CPU list S, generator on CPU list C (taskset)
NAPI_THREADS=0        # --napi-threads: each veth end receives in NAPI threads on its side's CPU
RPS=0                 # --rps: each veth end's receive stack runs on its side's CPU (RPS)
KEA_MT_QUEUE=64       # Kea MT packet-queue-size (64: as in perfdhcp-vs-kea.sh, Kea's default)
REPEAT_MARGINAL=1     # repeat a marginal failure (all shares < 2x the limit) once per search
STEAL_LIMIT=10        # --steal-limit: a search trial that fails while the hypervisor took at
                      # least this % of a core (box-wide steal) is discarded and redone; 0: never
STEAL_REDO_MAX=2      # redos per trial; the last one counts whatever the steal
STEAL_PAUSE=3         # seconds before a redo
PROVISION=0           # --provisioning N: DNS options and N reservations by DUID on both servers
METRICS_PORT=9469     # every tandem target: where /metrics is served (loopback of the server netns)
SCRAPES_MAX=3600      # tandem-scraped: the scraper loop's bound (one a second)

usage() {
    cat <<EOF
usage: $0 [options]
  --period SECS        seconds of sending per trial (default $PERIOD)
  --slack SECS         --phase-secs = period + SECS (default $SLACK)
  --start RATE         lowest rate of the search grid (default $START_RATE)
  --max-rate RATE      highest rate tried (default $MAX_RATE)
  --bisect N           bisection steps (default $BISECT)
  --budget SECS        stop searching (and say so) once the run has taken SECS (default $BUDGET)
  --targets LIST       space/comma list of: ceiling tandem tandem-nosync tandem-scraped
                       tandem-xdp tandem-xdp-nosync kea-st kea-mt (default "$TARGETS"; ceiling = tandem-gen --reflector;
                       tandem-xdp = tandem --datapath xdp (native XDP on the veth, AF_XDP
                       copy mode; tandem-xdp-nosync adds --no-sync, the durability of
                       Kea's memfile); with either, the client veth's tx checksum offload is off for
                       every target of the run, as the AF_XDP path verifies UDP checksums,
                       and the generator comparison adds tandem-gen --datapath xdp rows;
                       tandem-scraped = tandem with /metrics fetched every second; a run
                       with it writes bench/results/gen-metrics-latest.*. Every tandem
                       target serves /metrics, read before and after each trial: commits,
                       folds, drops and reply latency after commit go into the trial's record
                       and progress line)
  --cases LIST         na, pd, both (default "$CASES")
  --route MODE         auto (default: multicast if Kea answers tandem-gen's multicast, else
                       relay), multicast, relay
  --window N           tandem-gen --window in the search (default $WINDOW)
  --open-window N      tandem-gen --window of the open-loop run (default $OPEN_WINDOW)
  --gen-rates LIST     offered rates of the generator comparison (default "$GEN_RATES")
  --no-gen-compare     skip the perfdhcp vs tandem-gen comparison
  --no-build           do not run cargo build --release
  --keep-logs DIR      copy configs, server logs and every generator output to DIR before cleanup
  --no-results         do not write bench/results/gen-latest.{json,md}
  --tandem-bin PATH    run PATH as every tandem target instead of this checkout's build, for
                       an A/B of builds or settings (a wrapper script may add serve flags:
                       it gets "serve --config FILE ..." as its arguments); implies --no-results
  --pin S,C            pin the server to CPU S and the generator to CPU C with taskset (e.g. 0,1)
  --napi-threads       (needs --pin) each veth end receives in threaded NAPI (GRO on), its
                       kernel threads pinned to that side's CPU and counted in that side's CPU
                       time, as on two machines. Without it, veth runs a frame's whole receive
                       (the XDP program, IPv6, UDP, the receiver's wakeup) inside the sender's
                       transmit: each side is charged the other's receive and not its own
  --rps                (needs --pin with one CPU per side) each veth end's receive stack
                       (IPv6, UDP, the receiver's wakeup; after any XDP program, which
                       still runs in the sender's transmit) runs in softirq on its side's
                       CPU through RPS, so a side's transmit no longer runs the other's
                       receive
  --kea-mt-queue N     Kea MT packet-queue-size (default $KEA_MT_QUEUE, as in perfdhcp-vs-kea.sh)
  --no-repeat          do not repeat a marginal failure (by default: once per search)
  --steal-limit PCT    a search trial that fails while the host's hypervisor took PCT % of a core
                       or more (steal, all CPUs) is discarded and redone after ${STEAL_PAUSE}s, at most
                       $STEAL_REDO_MAX times; for every target alike (default $STEAL_LIMIT, 0: never)
  --provisioning N     configure both servers with DNS servers, a domain search list and N
                       reservations by DUID, and have tandem-gen ask for the two options in
                       every message (results go to bench/results/gen-provisioned-latest.*)
  -h, --help
EOF
}

CMDLINE="$0${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --period) PERIOD="$2"; shift 2 ;;
        --slack) SLACK="$2"; shift 2 ;;
        --start) START_RATE="$2"; shift 2 ;;
        --max-rate) MAX_RATE="$2"; shift 2 ;;
        --bisect) BISECT="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --targets) TARGETS="${2//,/ }"; shift 2 ;;
        --cases) CASES="${2//,/ }"; shift 2 ;;
        --route) ROUTE="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --open-window) OPEN_WINDOW="$2"; shift 2 ;;
        --gen-rates) GEN_RATES="${2//,/ }"; shift 2 ;;
        --no-gen-compare) DO_GENCMP=0; shift ;;
        --no-build) DO_BUILD=0; shift ;;
        --tandem-bin) TANDEM_BIN="$2"; WRITE_RESULTS=0; shift 2 ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        --no-results) WRITE_RESULTS=0; shift ;;
        --pin) PIN="$2"; shift 2 ;;
        --napi-threads) NAPI_THREADS=1; shift ;;
        --rps) RPS=1; shift ;;
        --kea-mt-queue) KEA_MT_QUEUE="$2"; shift 2 ;;
        --no-repeat) REPEAT_MARGINAL=0; shift ;;
        --steal-limit) STEAL_LIMIT="$2"; shift 2 ;;
        --provisioning) PROVISION="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------- cleanup

WORK=""
SERVER_PID=""
SCRAPER_PID=""
install_cleanup delete_topology SERVER_PID SCRAPER_PID

# ---------------------------------------------------------------- preflight

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
ensure_tools ip:iproute2 ss:iproute2 jq:jq timeout:coreutils awk:gawk \
    kea-dhcp6:kea-dhcp6-server perfdhcp:kea-admin curl:curl
for t in ip ss jq timeout awk; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
for s in $TARGETS; do
    case "$s" in
        ceiling|tandem|tandem-nosync|tandem-scraped) ;;
        tandem-xdp|tandem-xdp-nosync)
            # The XDP program is built by cargo with clang and libbpf's headers; ethtool turns
            # the client veth's checksum offload off.
            ensure_tools clang:clang ethtool:ethtool
            [ -e /usr/include/bpf/bpf_helpers.h ] || {
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libbpf-dev >/dev/null ||
                    die "apt-get install libbpf-dev failed"; }
            XDP_RUN=1 ;;
        kea-st|kea-mt) command -v kea-dhcp6 >/dev/null || die "missing tool: kea-dhcp6 (for $s)" ;;
        *) die "unknown target $s" ;;
    esac
done
for c in $CASES; do
    case "$c" in na|pd|both) ;; *) die "unknown case $c" ;; esac
done
case "$ROUTE" in auto|multicast|relay) ;; *) die "unknown --route $ROUTE" ;; esac
HAVE_PERFDHCP=0; command -v perfdhcp >/dev/null && HAVE_PERFDHCP=1
if [ "$DO_GENCMP" = 1 ] && [ "$HAVE_PERFDHCP" = 0 ]; then
    log "perfdhcp not installed: generator comparison runs tandem-gen only"
fi
SRV_PIN=(); CLI_PIN=()
if [ -n "$PIN" ]; then
    command -v taskset >/dev/null || die "--pin needs taskset"
    SRV_PIN=(taskset -c "${PIN%%,*}"); CLI_PIN=(taskset -c "${PIN#*,}")
fi
[ "$NAPI_THREADS" = 1 ] && [ -z "$PIN" ] && die "--napi-threads needs --pin (the NAPI threads go to the CPUs of their side)"
if [ "$RPS" = 1 ]; then
    [[ "$PIN" =~ ^[0-9]+,[0-9]+$ ]] || die "--rps needs --pin S,C with one CPU on each side (e.g. 0,1)"
    [ "$NAPI_THREADS" = 1 ] && die "--rps and --napi-threads are two ways of placing the receive: choose one"
fi
[ -f "$KEA_TEMPLATE" ] || die "missing $KEA_TEMPLATE"
[ -f "$TANDEM_TEMPLATE" ] || die "missing $TANDEM_TEMPLATE"

T_START=$(date +%s)
RUN_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$DO_BUILD" = 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed"
fi
[ -x "$TANDEM_BIN" ] || die "missing $TANDEM_BIN (build it or drop --no-build)"
[ -x "$GEN_BIN" ] || die "missing $GEN_BIN (build it or drop --no-build)"
T_START=$(date +%s)   # the budget counts from here: a rebuild does not eat into it

WORK="$(mktemp -d /tmp/tdm-genbench.XXXXXX)" || die "mktemp failed"
CLK_TCK=$(getconf CLK_TCK)
PAGE_BYTES=$(getconf PAGESIZE)
WORK_FS="$(df -T "$WORK" 2>/dev/null | awk 'NR==2{print $2}')"

# The pools every lease must lie in (tandem-gen --config): the Tandem config, whose subnet and
# pools are the same as Kea's.
POOLS_DIR="$WORK/pools"; mkdir -p "$POOLS_DIR"
render_tandem_config "$POOLS_DIR" "$NS_S"
POOLS_CONFIG="$POOLS_DIR/tandem.toml"

# ---------------------------------------------------------------- targets

ROUTE_MODE=""         # multicast | relay, decided before the first trial

# start_target NAME DIR: starts NAME in netns tdmgs with a fresh data dir / lease file, sets
# SERVER_PID, waits until UDP port 547 is bound.
start_target() {
    local name="$1" dir="$2"
    check_topology
    rm -rf "$dir"; mkdir -p "$dir"
    case "$name" in
        ceiling)
            # Bounded by --reflect-secs as well as by stop_target.
            ip netns exec "$NS_S" "${SRV_PIN[@]}" "$GEN_BIN" --reflector --listen '[::]:547' \
                --threads "$REFLECTOR_THREADS" --reflect-secs 900 >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
        tandem|tandem-nosync|tandem-scraped|tandem-xdp|tandem-xdp-nosync)
            render_tandem_config "$dir" "$NS_S"
            provision_tandem_config "$dir" "$PROVISION"
            local extra=()
            case "$name" in *-nosync) extra+=(--no-sync) ;; esac
            # Every tandem target serves /metrics, read before and after each trial
            # (server_counters); tandem-scraped is also scraped once a second.
            extra+=(--metrics-listen "[::1]:$METRICS_PORT")
            case "$name" in tandem-xdp*) extra+=(--datapath xdp --xdp-mode native) ;; esac
            [ "$ROUTE_MODE" = relay ] && extra+=(--listen "[$SERVER_IP]:547")
            ip netns exec "$NS_S" "${SRV_PIN[@]}" "$TANDEM_BIN" serve --config "$dir/tandem.toml" \
                --log-level warn "${extra[@]}" >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            if [ "$name" = tandem-scraped ]; then
                # As Prometheus would: one scrape a second, each line of the log one answered
                # scrape's size in bytes. Bounded by SCRAPES_MAX as well as by stop_target.
                ip netns exec "$NS_S" bash -c "for i in \$(seq $SCRAPES_MAX); do
                        curl -sf --max-time 2 -o /dev/null -w '%{size_download}\n' http://[::1]:$METRICS_PORT/metrics
                        sleep 1
                    done" >>"$WORK/scrapes-$name.log" 2>/dev/null &
                SCRAPER_PID=$!
            fi
            ;;
        kea-st|kea-mt)
            local ucast=""
            [ "$ROUTE_MODE" = relay ] && ucast="$SERVER_IP"
            render_kea_config "${name#kea-}" "$dir" "$NS_S" "$ucast"
            provision_kea_config "$dir" "$PROVISION"
            ip netns exec "$NS_S" kea-dhcp6 -t "$dir/kea-dhcp6.json" >"$dir/kea-check.log" 2>&1 || {
                cat "$dir/kea-check.log" >&2; die "kea-dhcp6 -t rejected $dir/kea-dhcp6.json"; }
            KEA_PIDFILE_DIR="$dir" KEA_LOCKFILE_DIR="$dir" \
                ip netns exec "$NS_S" "${SRV_PIN[@]}" kea-dhcp6 -c "$dir/kea-dhcp6.json" >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
    esac
    wait_udp_bound "$NS_S" 547 "$SERVER_PID" "$dir/server.log"
}

stop_target() {
    stop_pid "$SCRAPER_PID"
    SCRAPER_PID=""
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}

# udp_noports NS: Udp6NoPorts of namespace NS (datagrams that arrived for a port nobody bound).
udp_noports() {
    ip netns exec "$1" awk '$1 == "Udp6NoPorts" {print $2 + 0}' /proc/net/snmp6 2>/dev/null || echo 0
}

# route_args TARGET: sets RARGS, how tandem-gen reaches the target in ROUTE_MODE.
RARGS=()
route_args() {
    if [ "$ROUTE_MODE" = relay ]; then
        RARGS=(--relay-link "$SERVER_IP" --server "[$SERVER_IP]:547")
    elif [ "$1" = ceiling ]; then
        # The reflector binds [::]:547 but joins no multicast group: unicast to it.
        RARGS=(--server "[$SERVER_IP]:547")
    else
        RARGS=(--interface "$NS_C" --port 547)
    fi
}

SEED_SEQ=0
next_seed() { # tandem-gen uses the low 8 bits of --seed in the DUID: cycle through 1..255
    SEED_SEQ=$((SEED_SEQ + 1))
    SEED=$(( (SEED_SEQ - 1) % 255 + 1 ))
}

# srv_ticks / gen_rx_ticks: the server's CPU ticks (its process, and with --napi-threads its
# veth end's NAPI threads) and the generator side's NAPI threads' ticks (0 without).
srv_ticks() {
    local t; t=$(pid_ticks "$SERVER_PID")
    [ "$NAPI_THREADS" = 1 ] && t=$((t + $(napi_ticks "$NS_S")))
    echo "$t"
}
gen_rx_ticks() {
    if [ "$NAPI_THREADS" = 1 ]; then napi_ticks "$NS_C"; else echo 0; fi
}
# napi_repin: with --napi-threads, pins each end's NAPI threads to its side's CPU again (an
# XDP attach may have made new ones).
napi_repin() {
    [ "$NAPI_THREADS" = 1 ] || return 0
    napi_pin "$NS_S" "${PIN%%,*}"; napi_pin "$NS_C" "${PIN#*,}"
}
# gen_cpu_pct TIMEFILE RX0 RX1: the generator's CPU in % of a core from its `time` output,
# plus its side's NAPI threads' ticks RX1 - RX0 over the same wall time.
gen_cpu_pct() {
    awk -v r="$(($3 - $2))" -v hz="$CLK_TCK" 'NF==3 && $1 > 0 {v = ($2+$3+r/hz)/$1*100} END {if (v != "") printf "%.0f", v; else print "null"}' "$1"
}

# ---------------------------------------------------------------- one tandem-gen run

TRIAL_SEQ=0
GEN_DP_ARGS=()        # extra tandem-gen arguments: (--datapath xdp) for the AF_XDP generator rows
# run_gen TARGET CASE KIND RATE DIR: one tandem-gen run against the running target; prints a
# JSON object. KIND: search (paced at RATE, clients = RATE x PERIOD), open (--rate 0, phase of
# PERIOD s), gencmp (paced at RATE or open when 0, GEN_PERIOD s, direct unicast, no lease check).
# Uses SEED and TRIAL_SEQ, which the caller sets.
# server_counters TARGET: the running Tandem's counters (tandem_counters) from its /metrics;
# {} for other targets or when unreadable. The server publishes them every quarter second, so a
# trial's last quarter may be missing.
server_counters() {
    case "$1" in tandem*) ;; *) echo '{}'; return ;; esac
    ip netns exec "$NS_S" curl -sf --max-time 2 "http://[::1]:$METRICS_PORT/metrics" 2>/dev/null | tandem_counters
}

run_gen() {
    local target="$1" case="$2" kind="$3" rate="$4" dir="$5"
    local clients phase window cfg=()
    case "$kind" in
        search) clients=$((rate * PERIOD)); phase=$((PERIOD + SLACK)); window=$WINDOW ;;
        open)   clients=$((MAX_RATE * PERIOD)); phase=$PERIOD; window=$OPEN_WINDOW ;;
        gencmp)
            if [ "$rate" -gt 0 ]; then clients=$((rate * GEN_PERIOD)); phase=$((GEN_PERIOD + SLACK)); window=$WINDOW
            else clients=$((MAX_RATE * GEN_PERIOD)); phase=$GEN_PERIOD; window=$OPEN_WINDOW; fi ;;
    esac
    [ "$clients" -gt 10000000 ] && clients=10000000
    if [ "$kind" = gencmp ]; then
        RARGS=(--server "[$SERVER_IP]:547")
    else
        route_args "$target"
    fi
    # Leases must lie in the configured pools, except the reflector's (hashed from the DUID
    # from a hash of the DUID and IAID, so two clients can get the same one by accident).
    [ "$target" != ceiling ] && cfg=(--config "$POOLS_CONFIG")
    local out="$dir/gen-$TRIAL_SEQ-$kind-r$rate.json" err="$dir/gen-$TRIAL_SEQ.err" tfile="$dir/gen-$TRIAL_SEQ.time"
    local cmd=("$GEN_BIN" "${RARGS[@]}" --mode "$case" --threads "$THREADS" --window "$window" --rate "$rate"
               --clients "$clients" --phase-secs "$phase" --timeout-ms "$TIMEOUT_MS"
               --max-retries "$MAX_RETRIES" --seed "$SEED" "${cfg[@]}" "${GEN_DP_ARGS[@]}" --json --max-failed-pct 100)
    [ "$PROVISION" -gt 0 ] && cmd+=(--ask-dns)
    local rc us0 uc0 us1 uc1 t0 t1 w0 w1 b0 b1 s0 s1 TIMEFORMAT='%R %U %S'
    us0=$(udp_drops "$NS_S"); uc0=$(udp_drops "$NS_C")
    local m0 m1
    m0=$(server_counters "$target")
    napi_repin
    local g0 g1
    t0=$(srv_ticks); g0=$(gen_rx_ticks); w0=$(date +%s.%N); b0=$(cpu_sample); s0=$(steal_ticks)
    local f0 f1; f0=$(pid_minflt "$SERVER_PID")
    { time ip netns exec "$NS_C" "${CLI_PIN[@]}" timeout -k 2 $((phase + 20)) "${cmd[@]}" >"$out" 2>"$err" ; } 2>"$tfile"
    rc=$?
    t1=$(srv_ticks); g1=$(gen_rx_ticks); w1=$(date +%s.%N); b1=$(cpu_sample); s1=$(steal_ticks)
    f1=$(pid_minflt "$SERVER_PID")
    us1=$(udp_drops "$NS_S"); uc1=$(udp_drops "$NS_C")
    m1=$(server_counters "$target")
    local srv_cpu gen_cpu
    srv_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" 'BEGIN{printf "%.0f", (b-a)/hz/(w1-w0)*100}')
    gen_cpu=$(gen_cpu_pct "$tfile" "$g0" "$g1")
    local json; json=$(jq -c . "$out" 2>/dev/null | tail -1)
    [ -n "$json" ] || json='{}'
    jq -c -n --argjson g "$json" --arg target "$target" --arg case "$case" --arg kind "$kind" \
        --argjson rate "$rate" --argjson clients "$clients" --argjson seed "$SEED" --argjson phase "$phase" \
        --argjson window "$window" --argjson rc "$rc" --argjson srv_cpu "$srv_cpu" --argjson gen_cpu "$gen_cpu" \
        --argjson box_cpu "$(box_cpu_pct "$b0" "$b1")" --argjson steal "[$(steal_pct "$s0" "$s1" "$w0" "$w1" | tr ' ' ,)]" \
        --argjson sd "$(( ${us1%% *} - ${us0%% *} ))" --argjson gd "$(( ${uc1%% *} - ${uc0%% *} ))" \
        --argjson limit "$LOSS_LIMIT" --arg cmd "${cmd[*]}" --argjson seq "$TRIAL_SEQ" \
        --argjson m0 "${m0:-"{}"}" --argjson m1 "${m1:-"{}"}" \
        --argjson fault_mib "$(( f1 >= f0 ? (f1 - f0) * PAGE_BYTES / 1048576 : 0 ))" --argjson rss_mib "$(pid_rss_anon_mib "$SERVER_PID")" '
        ($g.phases[0] // null) as $p
        | ($p != null) as $parsed
        | (if $parsed then (($clients - $p.ok) * 100 / $clients) else 100 end) as $unfinished
        | (if $parsed then ($p.retransmits * 100 / $clients) else 100 end) as $retrans
        | ($g.violations // 0) as $viol
        | {seq: $seq, target: $target, case: $case, kind: $kind, rate: $rate, clients: $clients,
           seed: $seed, phase_secs: $phase, window: $window, gen_rc: $rc, parsed: $parsed,
           started: ($p.started // 0), ok: ($p.ok // 0), timeouts: ($p.timeouts // 0),
           retransmits: ($p.retransmits // 0), naks: (($p.naks_by_status // {}) | add // 0),
           bad_replies: ($p.bad_replies // 0), elapsed_s: (($p.elapsed_secs // 0) * 1000 | round / 1000),
           achieved_per_s: (($p.exchanges_per_sec // 0) | round),
           failed_pct: (($p.failed_pct // 100) * 1000 | round / 1000),
           unfinished_pct: ($unfinished * 1000 | round / 1000),
           retransmit_pct: ($retrans * 1000 | round / 1000),
           latency_ms: ($p.latency_ms // null),
           violations: $viol, violation_examples: (($g.violation_examples // [])[:3]),
           server_cpu_pct: $srv_cpu, gen_cpu_pct: $gen_cpu, box_cpu_pct: $box_cpu,
           other_cpu_pct: ($box_cpu - $srv_cpu - ($gen_cpu // 0)),
           steal_pct: $steal[0], steal_pct_by_cpu: $steal[1:],
           server_socket_drops: $sd, gen_socket_drops: $gd,
           server_fault_mib: $fault_mib, server_rss_anon_mib: $rss_mib,
           server_counters: (if ($m0 | has("commits")) and ($m1 | has("commits")) then
               ($m1.commits - $m0.commits) as $c | ($m1.folds - $m0.folds) as $f
               | ($m1.after_commit - $m0.after_commit) as $a
               | {commits: $c,
                  commit_ms_mean: (if $c > 0 then (($m1.commit_s - $m0.commit_s) * 1000 / $c * 100 | round / 100) else null end),
                  # The smallest bucket bound that holds every commit of the trial (null:
                  # above the largest, 1 s).
                  commit_ms_longest_le: (if $c > 0 and ($m0.commit_buckets // null) != null then
                      [range(0; ($m1.commit_buckets | length))
                       | select($m1.commit_buckets[.][1] - ($m0.commit_buckets[.][1] // 0) >= $c)
                       | $m1.commit_buckets[.][0] * 1000][0]
                    else null end),
                  folds: $f, fold_ms: (($m1.fold_s - $m0.fold_s) * 1000 | round),
                  dropped: ($m1.dropped - $m0.dropped), send_errors: ($m1.send_errors - $m0.send_errors),
                  after_commit_ms_mean: (if $a > 0 then (($m1.after_commit_s - $m0.after_commit_s) * 1000 / $a * 100 | round / 100) else null end)}
             else null end),
           pass: ($kind != "open" and $parsed and ($rc == 0 or $rc == 1) and $unfinished < $limit
                  and $retrans < $limit and ($p.failed_pct < $limit) and ($viol == 0 or $target == "ceiling")),
           command: $cmd}'
}

# ---------------------------------------------------------------- route probe

ROUTE_REASON=""
PROBE_JSON=null
# probe_route: can tandem-gen reach Kea by multicast on the client veth? Sets ROUTE_MODE.
probe_route() {
    if [ "$ROUTE" != auto ]; then
        ROUTE_MODE=$ROUTE
        ROUTE_REASON="forced with --route $ROUTE"
        return
    fi
    if ! command -v kea-dhcp6 >/dev/null; then
        ROUTE_MODE=multicast
        ROUTE_REASON="kea-dhcp6 not installed, nothing to probe: multicast"
        return
    fi
    local dir="$WORK/probe" n0 n1 res ok started
    ROUTE_MODE=multicast
    start_target kea-st "$dir"
    n0=$(udp_noports "$NS_C")
    next_seed; TRIAL_SEQ=$((TRIAL_SEQ + 1))
    local save_period=$PERIOD save_retries=$MAX_RETRIES save_timeout=$TIMEOUT_MS
    PERIOD=1 MAX_RETRIES=1 TIMEOUT_MS=300
    res=$(run_gen kea-st na search 50 "$dir")
    PERIOD=$save_period MAX_RETRIES=$save_retries TIMEOUT_MS=$save_timeout
    n1=$(udp_noports "$NS_C")
    stop_target
    ok=$(jq -r .ok <<<"$res"); started=$(jq -r .started <<<"$res")
    PROBE_JSON=$(jq -c --argjson np "$((n1 - n0))" '{multicast_to_kea_st: {ok, started, gen_rc, client_udp6_noports: $np}}' <<<"$res")
    if [ "$ok" -gt 0 ] && [ "$ok" -ge $((started * 9 / 10)) ]; then
        ROUTE_MODE=multicast
        ROUTE_REASON="Kea answered $ok of $started multicast Solicits at tandem-gen's source port: every server is reached by multicast to ff02::1:2 on $NS_C"
    else
        ROUTE_MODE=relay
        ROUTE_REASON="Kea answered $ok of $started multicast exchanges at tandem-gen's source port ($((n1 - n0)) datagrams reached a closed port in $NS_C: Kea 2.2 sends direct replies to UDP 546, and tandem-gen sends from an ephemeral port). So tandem-gen acts as a relay agent for every target: Relay-forw (link-address $SERVER_IP, Interface-Id, RFC 8357 Relay Source Port) by unicast to [$SERVER_IP]:547; servers answer with Relay-reply to the relay source port"
    fi
    log "route: $ROUTE_MODE ($ROUTE_REASON)"
}

# ---------------------------------------------------------------- search

TRIALS_FILE=""
SUMMARY_FILE=""
SEARCH_REPEAT_MARGINAL=$REPEAT_MARGINAL   # rate_search (lib.sh): repeat a marginal failure once

trial_line() { # one progress line for a trial
    jq -r '"  \(.target) \(.case) \(.kind) r=\(.rate): ok \(.ok)/\(.clients) (started \(.started)), \(.achieved_per_s)/s, unfinished \(.unfinished_pct)%, retrans \(.retransmit_pct)%, p50 \(.latency_ms.p50 // "-") p99 \(.latency_ms.p99 // "-") ms, naks \(.naks), viol \(.violations), cpu srv \(.server_cpu_pct)% gen \(.gen_cpu_pct)% box \(.box_cpu_pct)% steal \(.steal_pct // "-")% (\((.steal_pct_by_cpu // []) | map(tostring) | join("/"))), drops srv \(.server_socket_drops) gen \(.gen_socket_drops), srv pages new \(.server_fault_mib // "-") MiB (anon \(.server_rss_anon_mib // "-") MiB)\(if .server_counters then ", server: \(.server_counters.commits) commits of \(.server_counters.commit_ms_mean) ms (longest <= \(.server_counters.commit_ms_longest_le // "> 1000") ms), reply after commit \(.server_counters.after_commit_ms_mean) ms, \(.server_counters.folds) folds (\(.server_counters.fold_ms) ms), dropped \(.server_counters.dropped), send errors \(.server_counters.send_errors)" else "" end)\(if .kind == "open" then "" elif .pass then " -> pass" else " -> FAIL" end)"' <<<"$1"
}

# ceiling_rate CASE: the ceiling's sustained rate for CASE measured so far (0 if none).
ceiling_rate() {
    jq -rs --arg c "$1" '[.[] | select(.target == "ceiling" and .case == $c) | .sustained_rate][0] // 0' "$SUMMARY_FILE"
}

# The namespaces can vanish under a running bench when something else deletes tdm* namespaces
# (tools/test.sh did so at its start before e7bf008). Then the interrupted (target, case) is
# redone on a new topology, at most MAX_RECOVERIES times per run; its trials so far are kept
# apart as discarded.
MAX_RECOVERIES=3
RECOVERIES=0
RECOVERED_JSON="[]"
topo_lost() { # true when a namespace is gone
    ! topology_ok
}

# search_trial RATE [repeat]: the rate_search callback of search_once (uses its target, case
# and dir): one search trial, appended to ATTEMPT_TRIALS and logged; prints its JSON. Returns 2
# when the namespaces vanished.
# A failing trial while the host stole STEAL_LIMIT % of a core or more says more about the other
# guests than about the target: it goes to STEAL_FILE and is redone (a pass under steal stands).
search_trial() {
    local res redo=0
    while :; do
        next_seed; TRIAL_SEQ=$((TRIAL_SEQ + 1))
        res=$(run_gen "$target" "$case" search "$1" "$dir")
        topo_lost && return 2
        [ "${2:-}" = repeat ] && res=$(jq -c '. + {repeat: true}' <<<"$res")
        if [ "$STEAL_LIMIT" != 0 ] && [ "$redo" -lt "$STEAL_REDO_MAX" ] &&
            jq -e --argjson lim "$STEAL_LIMIT" '(.pass | not) and (.steal_pct // 0) >= $lim' <<<"$res" >/dev/null; then
            redo=$((redo + 1))
            jq -c '. + {discarded: "steal"}' <<<"$res" >>"$STEAL_FILE"
            log "$(trial_line "$res") [host steal >= $STEAL_LIMIT %: discarded, redone in ${STEAL_PAUSE}s, $redo of at most $STEAL_REDO_MAX]"
            sleep "$STEAL_PAUSE"
            continue
        fi
        break
    done
    echo "$res" >>"$ATTEMPT_TRIALS"
    log "$(trial_line "$res")"
    echo "$res"
}

# limit_note: the search_note diagnosis of search_once (uses its target, lo, hi, ceil): what
# limited the search, judged from the lowest failing trial; sets limit_by and SEARCH_NOTE.
limit_note() {
    local sd gd re nk vi sc gc un st cl bc oc
    read -r sd gd re nk vi sc gc un st cl bc oc < <(jq -r '[.server_socket_drops, .gen_socket_drops, .retransmits, .naks, .violations, .server_cpu_pct, .gen_cpu_pct, .unfinished_pct, .started, .clients, .box_cpu_pct, .other_cpu_pct] | @tsv' <<<"$SEARCH_FAIL")
    if [ "$target" != ceiling ] && [ "$vi" -gt 0 ]; then
        limit_by=violations
    elif [ "$target" != ceiling ] && [ "$ceil" -gt 0 ] && [ $((lo * 10)) -ge $((ceil * 9)) ]; then
        limit_by=ceiling
    elif [ "$nk" -gt 0 ] && [ $((nk * 2)) -ge "$re" ]; then
        limit_by=server-naks
    elif [ "$sd" -gt 0 ] && [ $((sd * 2)) -ge "$re" ]; then
        limit_by=server-socket
    elif [ "$gd" -gt 0 ] && [ $((gd * 2)) -ge "$re" ]; then
        limit_by=generator-socket
    elif [ "$re" -gt 0 ]; then
        limit_by=server-late
    else
        limit_by=server-pace
    fi
    [ "$target" = ceiling ] && limit_by="machine/$limit_by"
    SEARCH_NOTE="$limit_by: at $hi/s $un% unfinished, $st of $cl started, $re retransmits, $nk naks, $vi violations, socket drops server $sd / generator $gd, CPU server $sc% / generator $gc% / box $bc% of $(($(nproc) * 100))% (other processes and softirq $oc%)"
    [ "$bc" -ge $(($(nproc) * 90)) ] && SEARCH_NOTE="$SEARCH_NOTE; box CPU saturated"
    return 0
}

# search_once TARGET CASE: open-loop run, then the bounded search (rate_search in lib.sh, grid
# START_RATE x 2^k, budget BUDGET s from T_START); appends trials to ATTEMPT_TRIALS and prints
# a summary JSON object. Returns 2 if the namespaces vanished.
search_once() {
    local target="$1" case="$2" dir="$WORK/$1-$2"
    log "$target / $case"
    topo_lost && return 2
    start_target "$target" "$dir"
    local open_res r hint
    # Open-loop: as fast as the window allows, for PERIOD seconds.
    next_seed; TRIAL_SEQ=$((TRIAL_SEQ + 1))
    open_res=$(run_gen "$target" "$case" open 0 "$dir")
    if topo_lost; then stop_target; return 2; fi
    echo "$open_res" >>"$ATTEMPT_TRIALS"
    log "$(trial_line "$open_res")"
    sleep 1
    # The search starts on the grid START_RATE x 2^k at the highest point <= what the open-loop
    # run achieved (lower grid points would pass anyway; if this one fails, the search halves).
    hint=$(jq -r '.achieved_per_s' <<<"$open_res")
    r=$START_RATE
    while [ $((r * 2)) -le "$MAX_RATE" ] && [ $((r * 2)) -le "$hint" ]; do r=$((r * 2)); done
    if ! rate_search search_trial "$r" $((T_START + BUDGET)) || topo_lost; then stop_target; return 2; fi
    stop_target
    local lo=$SEARCH_LO hi=$SEARCH_HI cut=$SEARCH_CUT best=$SEARCH_BEST hi_res=$SEARCH_FAIL
    # What limited the search, judged from the lowest failing trial.
    local ceil; ceil=$(ceiling_rate "$case")
    local note limit_by=none
    search_note limit_note " (not saturated)"
    note=$SEARCH_NOTE
    jq -nc --arg t "$target" --arg c "$case" --argjson lo "$lo" --argjson hi "$hi" --arg note "$note" \
        --arg lb "$limit_by" --argjson best "${best:-null}" --argjson first_fail "${hi_res:-null}" \
        --argjson open "$open_res" --argjson cut "$cut" \
        '{target:$t, case:$c, sustained_rate:$lo, first_failing_rate:(if $hi>0 then $hi else null end),
          achieved_per_s:($best.achieved_per_s // null),
          p50_ms:($best.latency_ms.p50 // null), p99_ms:($best.latency_ms.p99 // null),
          max_ms:($best.latency_ms.max // null),
          server_cpu_pct:($best.server_cpu_pct // null), gen_cpu_pct:($best.gen_cpu_pct // null),
          box_cpu_pct:($best.box_cpu_pct // null), steal_pct:($best.steal_pct // null),
          steal_pct_by_cpu:($best.steal_pct_by_cpu // null),
          server_socket_drops:($best.server_socket_drops // null), gen_socket_drops:($best.gen_socket_drops // null),
          open_loop:{achieved_per_s:$open.achieved_per_s, failed_pct:$open.failed_pct,
                     p50_ms:($open.latency_ms.p50 // null), p99_ms:($open.latency_ms.p99 // null),
                     server_cpu_pct:$open.server_cpu_pct, gen_cpu_pct:$open.gen_cpu_pct,
                     server_socket_drops:$open.server_socket_drops, gen_socket_drops:$open.gen_socket_drops},
          limited_by:$lb, budget_cut:($cut == 1), at_first_failure:$first_fail, note:$note}'
}

# ---------------------------------------------------------------- generator comparison

# perfdhcp_run RATE DIR: one perfdhcp run (4-way, IA_NA, direct unicast) against the reflector;
# RATE 0 = no -r (as fast as perfdhcp goes). Prints a JSON object.
perfdhcp_run() {
    local rate="$1" dir="$2" tag; tag=$(printf '%02x' $((TRIAL_SEQ % 256)))
    local out="$dir/perfdhcp-$TRIAL_SEQ-r$rate.txt" tfile="$dir/perfdhcp-$TRIAL_SEQ.time"
    local cmd=(perfdhcp -6 -l "$NS_C" -e address-only -R 100000000 -p "$GEN_PERIOD" -b "mac=02:$tag:00:00:00:00")
    [ "$rate" -gt 0 ] && cmd+=(-r "$rate")
    cmd+=("$SERVER_IP")
    local rc t0 t1 b0 b1 g0 g1 TIMEFORMAT='%R %U %S'
    napi_repin
    t0=$(srv_ticks); g0=$(gen_rx_ticks); b0=$(cpu_sample)
    { time ip netns exec "$NS_C" "${CLI_PIN[@]}" timeout -k 2 $((GEN_PERIOD + 15)) "${cmd[@]}" >"$out" 2>&1 ; } 2>"$tfile"
    rc=$?
    t1=$(srv_ticks); g1=$(gen_rx_ticks); b1=$(cpu_sample)
    local gen_cpu; gen_cpu=$(gen_cpu_pct "$tfile" "$g0" "$g1")
    local wall; wall=$(awk 'NF==3 {print $1}' "$tfile")
    awk -v rate="$rate" -v period="$GEN_PERIOD" -v rc="$rc" -v cpu="$gen_cpu" -v cmd="${cmd[*]}" -v box="$(box_cpu_pct "$b0" "$b1")" \
        -v sticks="$((t1 - t0))" -v hz="$CLK_TCK" -v wall="${wall:-0}" '
        /Statistics for: SOLICIT-ADVERTISE/ { s = "sa" }
        /Statistics for: REQUEST-REPLY/ { s = "rr" }
        s != "" && /^sent packets:/ { sent[s] = $3 }
        s != "" && /^received packets:/ { recv[s] = $3 }
        s != "" && /^avg delay:/ { avg[s] = $3 }
        END {
            sa = sent["sa"] + 0; rr = recv["rr"] + 0
            fail = (sa > 0) ? (sa - rr) * 100.0 / sa : 100
            printf "{\"tool\":\"perfdhcp\",\"rate\":%d,\"rc\":%d,\"started\":%d,\"ok\":%d,", rate, rc, sa, rr
            printf "\"ok_per_s\":%.0f,\"failed_pct\":%.3f,\"avg_latency_ms\":%.3f,", rr / period, fail, avg["sa"] + avg["rr"]
            printf "\"gen_cpu_pct\":%s,\"reflector_cpu_pct\":%.0f,\"box_cpu_pct\":%d,\"command\":\"%s\"}\n", cpu, (wall > 0 ? sticks / hz / wall * 100 : 0), box, cmd
        }' "$out"
}

GENCMP_JSON=null
gen_compare() { # returns 2 if the namespaces vanished
    local dir="$WORK/gencmp" r res rows=()
    topo_lost && return 2
    log "generator comparison: perfdhcp and tandem-gen against the reflector (IA_NA, 4-way, direct unicast to [$SERVER_IP]:547, ${GEN_PERIOD}s runs)"
    start_target ceiling "$dir"
    if [ "$HAVE_PERFDHCP" = 1 ]; then
        for r in $GEN_RATES 0; do
            TRIAL_SEQ=$((TRIAL_SEQ + 1))
            res=$(perfdhcp_run "$r" "$dir")
            if topo_lost; then stop_target; return 2; fi
            [ -n "$res" ] || res=$(jq -nc --argjson r "$r" '{tool:"perfdhcp",rate:$r,ok:0,ok_per_s:0,failed_pct:100}')
            rows+=("$res")
            log "  $(jq -r '"perfdhcp r=\(.rate): \(.ok) of \(.started) exchanges, \(.ok_per_s)/s, failed \(.failed_pct)%, avg \(.avg_latency_ms) ms, cpu perfdhcp \(.gen_cpu_pct)% reflector \(.reflector_cpu_pct)% box \(.box_cpu_pct)%"' <<<"$res")"
            sleep 0.5
        done
    fi
    for r in $GEN_RATES 0; do
        next_seed; TRIAL_SEQ=$((TRIAL_SEQ + 1))
        res=$(run_gen ceiling na gencmp "$r" "$dir")
        if topo_lost; then stop_target; return 2; fi
        res=$(jq -c '{tool:"tandem-gen", rate, rc:.gen_rc, started, ok, ok_per_s:.achieved_per_s,
                      failed_pct, unfinished_pct, retransmit_pct, p50_ms:.latency_ms.p50, p99_ms:.latency_ms.p99,
                      gen_cpu_pct, reflector_cpu_pct:.server_cpu_pct, box_cpu_pct, command}' <<<"$res")
        rows+=("$res")
        log "  $(jq -r '"tandem-gen r=\(.rate): \(.ok) of \(.started) exchanges, \(.ok_per_s)/s, failed \(.failed_pct)%, p50 \(.p50_ms) p99 \(.p99_ms) ms, cpu tandem-gen \(.gen_cpu_pct)% reflector \(.reflector_cpu_pct)% box \(.box_cpu_pct)%"' <<<"$res")"
        sleep 0.5
    done
    if [ "$XDP_RUN" = 1 ]; then
        # tandem-gen on AF_XDP (a socket per queue of the client veth, which has one per core in
        # an XDP run). The reflector answers through the kernel, whose checksums veth leaves to
        # an offload: off on the server end for these rows (the last of the run).
        ip netns exec "$NS_S" ethtool -K "$NS_S" tx off >/dev/null || die "ethtool -K $NS_S tx off failed"
        GEN_DP_ARGS=(--datapath xdp)
        for r in $GEN_RATES 0; do
            next_seed; TRIAL_SEQ=$((TRIAL_SEQ + 1))
            res=$(run_gen ceiling na gencmp "$r" "$dir")
            if topo_lost; then GEN_DP_ARGS=(); stop_target; return 2; fi
            res=$(jq -c '{tool:"tandem-gen-xdp", rate, rc:.gen_rc, started, ok, ok_per_s:.achieved_per_s,
                          failed_pct, unfinished_pct, retransmit_pct, p50_ms:.latency_ms.p50, p99_ms:.latency_ms.p99,
                          gen_cpu_pct, reflector_cpu_pct:.server_cpu_pct, box_cpu_pct, command}' <<<"$res")
            rows+=("$res")
            log "  $(jq -r '"tandem-gen-xdp r=\(.rate): \(.ok) of \(.started) exchanges, \(.ok_per_s)/s, failed \(.failed_pct)%, p50 \(.p50_ms) p99 \(.p99_ms) ms, cpu tandem-gen \(.gen_cpu_pct)% reflector \(.reflector_cpu_pct)% box \(.box_cpu_pct)%"' <<<"$res")"
            sleep 0.5
        done
        GEN_DP_ARGS=()
    fi
    stop_target
    GENCMP_JSON=$(printf '%s\n' "${rows[@]}" | jq -sc --argjson limit "$LOSS_LIMIT" '
        map(. + {per_cpu_s: (if (.gen_cpu_pct // 0) > 0 then (.ok_per_s * 100 / .gen_cpu_pct | round) else null end)})
        | def best(t): ([.[] | select(.tool == t) | .ok_per_s] | max // 0);
          def eff(t): ([.[] | select(.tool == t) | .per_cpu_s // 0] | max // 0);
        def clean(t): ([.[] | select(.tool == t and .rate > 0 and (.failed_pct < $limit) and ((.unfinished_pct // .failed_pct) < $limit) and ((.retransmit_pct // 0) < $limit)) | .rate] | max // 0);
        {runs: ., perfdhcp_max_per_s: best("perfdhcp"), tandem_gen_max_per_s: best("tandem-gen"),
         perfdhcp_clean_rate: clean("perfdhcp"), tandem_gen_clean_rate: clean("tandem-gen"),
         ratio_max: (if best("perfdhcp") > 0 then (best("tandem-gen") / best("perfdhcp") * 100 | round / 100) else null end),
         perfdhcp_per_cpu_s: eff("perfdhcp"), tandem_gen_per_cpu_s: eff("tandem-gen"),
         ratio_per_cpu_s: (if eff("perfdhcp") > 0 then (eff("tandem-gen") / eff("perfdhcp") * 100 | round / 100) else null end),
         tandem_gen_xdp_max_per_s: best("tandem-gen-xdp"), tandem_gen_xdp_clean_rate: clean("tandem-gen-xdp"),
         tandem_gen_xdp_per_cpu_s: eff("tandem-gen-xdp"),
         ratio_xdp_max: (if best("perfdhcp") > 0 and best("tandem-gen-xdp") > 0 then (best("tandem-gen-xdp") / best("perfdhcp") * 100 | round / 100) else null end),
         goal_ratio: 5, goal_ratio_xdp: 3}')
}

# ---------------------------------------------------------------- run

# setup_bench_topology: the veth pair, and with a tandem-xdp target the client end's tx
# checksum offload off: veth hands XDP a local sender's frames with the UDP checksum not yet
# filled in, which the AF_XDP path (like a real NIC's receiver) refuses. Off for every target
# of the run, so they all see the same topology (the generator then computes checksums).
setup_bench_topology() {
    # With tandem-xdp: a receive queue per core, so the AF_XDP path gets a worker per core as
    # the UDP path does (the same topology for every target of the run).
    [ "$XDP_RUN" = 1 ] && VETH_QUEUES=$(nproc)
    setup_topology
    if [ "$NAPI_THREADS" = 1 ]; then
        napi_threads_on "$NS_S" "$NS_S" "${PIN%%,*}"
        napi_threads_on "$NS_C" "$NS_C" "${PIN#*,}"
    fi
    if [ "$RPS" = 1 ]; then
        rps_on "$NS_S" "$NS_S" "${PIN%%,*}"
        rps_on "$NS_C" "$NS_C" "${PIN#*,}"
    fi
    if [ "$XDP_RUN" = 1 ]; then
        ip netns exec "$NS_C" ethtool -K "$NS_C" tx off >/dev/null || die "ethtool -K $NS_C tx off failed"
    fi
}

setup_bench_topology
TRIALS_FILE="$WORK/trials.jsonl"; : >"$TRIALS_FILE"
SUMMARY_FILE="$WORK/summary.jsonl"; : >"$SUMMARY_FILE"
log "work dir $WORK ($WORK_FS); trials of ${PERIOD}s (+${SLACK}s), grid $START_RATE x 2^k up to $MAX_RATE/s, $BISECT bisection steps; tandem-gen --threads $THREADS --window $WINDOW --timeout-ms $TIMEOUT_MS --max-retries $MAX_RETRIES"

probe_route

# The ceiling goes first in every case: the other targets' notes compare against it.
ORDERED_TARGETS=""
for s in $TARGETS; do [ "$s" = ceiling ] && ORDERED_TARGETS="ceiling"; done
for s in $TARGETS; do [ "$s" != ceiling ] && ORDERED_TARGETS="$ORDERED_TARGETS $s"; done
ATTEMPT_TRIALS="$WORK/attempt-trials.jsonl"
DISCARDED_FILE="$WORK/discarded-trials.jsonl"; : >"$DISCARDED_FILE"
STEAL_FILE="$WORK/steal-redone-trials.jsonl"; : >"$STEAL_FILE"
ATTEMPT_SUMMARY="$WORK/attempt-summary.json"

# recover WHAT: the namespaces vanished during WHAT; rebuild them (at most MAX_RECOVERIES times).
recover() {
    RECOVERIES=$((RECOVERIES + 1))
    [ "$RECOVERIES" -le "$MAX_RECOVERIES" ] ||
        die "netns $NS_S/$NS_C vanished $RECOVERIES times (something deletes tdm* namespaces); giving up, results not written"
    log "netns $NS_S/$NS_C vanished during $1 (deleted by something else); rebuilding the topology and redoing it ($RECOVERIES of at most $MAX_RECOVERIES)"
    RECOVERED_JSON=$(jq -c --arg w "$1" --arg t "$(date -u +%H:%M:%SZ)" '. + [{redone: $w, at: $t}]' <<<"$RECOVERED_JSON")
    sleep 2
    setup_bench_topology
}

for c in $CASES; do
    for s in $ORDERED_TARGETS; do
        while :; do
            : >"$ATTEMPT_TRIALS"
            search_once "$s" "$c" >"$ATTEMPT_SUMMARY"; rc=$?
            if [ "$rc" = 2 ]; then
                cat "$ATTEMPT_TRIALS" >>"$DISCARDED_FILE"
                recover "$s/$c"
                continue
            fi
            [ "$rc" = 0 ] || die "search $s $c failed"
            cat "$ATTEMPT_TRIALS" >>"$TRIALS_FILE"
            cat "$ATTEMPT_SUMMARY" >>"$SUMMARY_FILE"
            break
        done
    done
done

if [ "$DO_GENCMP" = 1 ]; then
    while :; do
        gen_compare; rc=$?
        [ "$rc" = 2 ] || break
        recover "the generator comparison"
    done
fi

T_END=$(date +%s)
ELAPSED=$((T_END - T_START))
SCRAPE_NOTE=""
if [ -f "$WORK/scrapes-tandem-scraped.log" ]; then
    SCRAPE_NOTE="tandem-scraped ran with --metrics-listen and curl fetched /metrics once a second throughout its searches: $(awk '$1 > 0 {n++; b += $1} END {printf "%d scrapes answered, %.0f bytes each on average", n, (n ? b / n : 0)}' "$WORK/scrapes-tandem-scraped.log"); the other tandem targets serve /metrics too, read only before and after each trial."
fi

# ---------------------------------------------------------------- report

KEA_VERSION="$(kea-dhcp6 -v 2>/dev/null | head -1)"
PERFDHCP_VERSION="$(perfdhcp -v 2>&1 | awk '/VERSION/{print $2; exit}')"
GIT_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ "$TANDEM_BIN" = "$REPO/target/release/tandem" ] || GIT_REV="$TANDEM_BIN (--tandem-bin; checkout $GIT_REV)"
GIT_DIRTY="$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)"
CPU_MODEL="$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"

RESULT_JSON=$(jq -s -c \
    --arg date "$RUN_DATE" --arg cmd "$CMDLINE" --argjson elapsed "$ELAPSED" \
    --arg kea "$KEA_VERSION" --arg perfdhcp "$PERFDHCP_VERSION" --arg rev "$GIT_REV" --argjson dirty "$GIT_DIRTY" \
    --arg cpu "$CPU_MODEL" --argjson ncpu "$(nproc)" --arg kernel "$(uname -r)" --arg fs "$WORK_FS" \
    --arg load "$LOADAVG_START" --arg pin "$PIN" --arg xdp "$XDP_RUN" --arg napi "$NAPI_THREADS" --arg rps "$RPS" \
    --arg route "$ROUTE_MODE" --arg reason "$ROUTE_REASON" --argjson probe "$PROBE_JSON" \
    --argjson period "$PERIOD" --argjson slack "$SLACK" --argjson start "$START_RATE" --argjson max "$MAX_RATE" \
    --argjson bisect "$BISECT" --argjson threads "$THREADS" --argjson window "$WINDOW" --argjson owin "$OPEN_WINDOW" \
    --argjson tmo "$TIMEOUT_MS" --argjson retries "$MAX_RETRIES" --argjson rthreads "$REFLECTOR_THREADS" \
    --argjson recovered "$RECOVERED_JSON" --argjson ndiscarded "$(wc -l <"$DISCARDED_FILE")" \
    --argjson steal_limit "$STEAL_LIMIT" --argjson steal_redo_max "$STEAL_REDO_MAX" --slurpfile steal_redone "$STEAL_FILE" \
    --argjson gencmp "$GENCMP_JSON" --argjson repeat "$REPEAT_MARGINAL" --arg kq "$KEA_MT_QUEUE" --slurpfile trials "$TRIALS_FILE" '
    . as $rows
    | def rate(s; c): ([$rows[] | select(.target == s and .case == c) | .sustained_rate][0]);
      def ratio(a; b): (if (a // 0) > 0 and (b // 0) > 0 then ((a / b * 100 | round) / 100) else null end);
    {
      date: $date, command: $cmd, elapsed_s: $elapsed,
      environment: {cpu: $cpu, cpus: $ncpu, kernel: $kernel, work_dir_fs: $fs, loadavg_at_start: $load,
                    kea: $kea, perfdhcp: $perfdhcp, tandem_git: $rev, tandem_tree_dirty: $dirty,
                    tandem_workers: "default (one per core)", tandem_sync: "on (fdatasync per group commit) except for the *-nosync targets",
                    kea_mt: "thread-pool-size 2, packet-queue-size \($kq)", kea_lease_db: "memfile (no fsync)",
                    reflector_threads: $rthreads,
                    client_veth_tx_checksum_offload: (if $xdp == "1" then "off (tandem-xdp in the run)" else "on" end),
                    pinning: (if $pin == "" then "none" else "server CPU \($pin | split(",")[0]), generator CPU \($pin | split(",")[1])" end),
                    receive_accounting: (if $rps == "1" then "rps: each veth end'"'"'s receive stack runs in softirq on its side'"'"'s CPU (--rps); an XDP program still runs in the sender'"'"'s transmit" elif $napi == "1" then "own: each veth end receives in threaded NAPI pinned to its side'"'"'s CPU and counted to that side (--napi-threads)" else "peer: veth runs each frame'"'"'s receive in the sender'"'"'s transmit, charged to the sender" end)},
      route: {mode: $route, reason: $reason, probe: $probe},
      topology_recoveries: {redone: $recovered, discarded_trials: $ndiscarded,
                            why: "the namespaces were deleted by something else during the run; the interrupted (target, case) was redone on a new topology"},
      method: {trial_send_s: $period, phase_limit_s: ($period + $slack), grid_start: $start, max_rate: $max,
               bisect_steps: $bisect, repeat_marginal_failure_once: ($repeat == 1),
               steal_redo: {limit_pct_of_a_core: $steal_limit, redos_per_trial_max: $steal_redo_max,
                            rule: "a failing search trial while the hypervisor took limit_pct_of_a_core or more (all CPUs) is discarded and redone, for every target alike; a pass stands",
                            redone: ($steal_redone | length), discarded_trials: $steal_redone},
               threads: $threads, window: $window, open_loop_window: $owin,
               timeout_ms: $tmo, max_retries: $retries, clients: "rate x trial_send_s, fresh --seed per trial",
               pass: "fewer than 1% of the clients lack their lease when the phase ends (never started, in flight, timed out or NAKed), retransmitted messages < 1% of the clients, tandem-gen failed_pct < 1, and no lease-check violation (the reflector is exempt: its leases are hashes of the DUID and may collide)",
               exchange: "4-way SOLICIT/ADVERTISE/REQUEST/REPLY (no rapid commit), latency = first Solicit to Reply"},
      results: $rows,
      ratios: ([$rows[].case] | unique | map(. as $c | {
          case: $c,
          tandem_over_kea_mt: ratio(rate("tandem"; $c); rate("kea-mt"; $c)),
          tandem_over_kea_st: ratio(rate("tandem"; $c); rate("kea-st"; $c)),
          tandem_over_ceiling: ratio(rate("tandem"; $c); rate("ceiling"; $c)),
          kea_mt_over_ceiling: ratio(rate("kea-mt"; $c); rate("ceiling"; $c)),
          kea_st_over_ceiling: ratio(rate("kea-st"; $c); rate("ceiling"; $c)),
          tandem_nosync_over_kea_mt: ratio(rate("tandem-nosync"; $c); rate("kea-mt"; $c)),
          tandem_xdp_over_ceiling: ratio(rate("tandem-xdp"; $c); rate("ceiling"; $c)),
          tandem_xdp_nosync_over_ceiling: ratio(rate("tandem-xdp-nosync"; $c); rate("ceiling"; $c)),
          tandem_scraped_over_tandem: ratio(rate("tandem-scraped"; $c); rate("tandem"; $c))
        } | with_entries(select(.value != null)))),
      cpu_per_exchange_us: ([$rows[].case] | unique | map(. as $c
        | ([$rows[] | select(.case == $c and (.achieved_per_s // 0) > 0 and .server_cpu_pct != null)
            | {key: .target, value: (.server_cpu_pct * 10000 / .achieved_per_s * 10 | round / 10)}] | from_entries) as $us
        | {case: $c, by_target: $us,
           kea_st_over_tandem_xdp: ratio($us["kea-st"]; $us["tandem-xdp"]),
           kea_mt_over_tandem_xdp: ratio($us["kea-mt"]; $us["tandem-xdp"]),
           kea_st_over_tandem: ratio($us["kea-st"]; $us["tandem"]),
           kea_mt_over_tandem: ratio($us["kea-mt"]; $us["tandem"])}
        | with_entries(select(.value != null)))),
      generator_comparison: $gencmp,
      trials: $trials
    }' "$SUMMARY_FILE") || die "cannot assemble results"

# One line per case: each server's CPU per exchange at its sustained rate, and Kea's over
# Tandem's (issue 12's aim: Kea-ST / Tandem AF_XDP >= 10).
CPU_LINE_JQ='.cpu_per_exchange_us[] | select(.case == $c)
    | "Server CPU per exchange at the sustained rate, us: " + ([.by_target | to_entries[] | "\(.key) \(.value)"] | join(", "))
      + ([to_entries[] | select(.key | test("_over_")) | "; \(.key | gsub("_over_"; "/") | gsub("_"; "-")) = \(.value)"] | join(""))
      + (if .kea_st_over_tandem_xdp then " (aim: kea-st/tandem-xdp >= 10)" else "" end)'

CASE_TITLE_JQ='{"na": "IA_NA (--mode na)", "pd": "IA_PD (--mode pd)", "both": "IA_NA + IA_PD (--mode both)"}'

print_text() {
    local c
    for c in $CASES; do
        echo "Case $c: $(jq -r --arg c "$c" "$CASE_TITLE_JQ"'[$c]' <<<'{}'), 4-way, route $ROUTE_MODE"
        printf '%-13s %9s %6s %9s %7s %7s %6s %6s %6s %13s %22s  %s\n' target sustained ceil% achieved p50_ms p99_ms srvCPU genCPU boxCPU drops_srv/gen "open-loop/s (p50/p99)" "limited by"
        jq -r --arg c "$c" '
            ([.results[] | select(.target == "ceiling" and .case == $c) | .sustained_rate][0] // 0) as $ceil
            | .results[] | select(.case == $c)
            | [.target, .sustained_rate,
               (if $ceil > 0 then (.sustained_rate * 100 / $ceil | round | tostring) else "-" end),
               (.achieved_per_s // "-"), (.p50_ms // "-"), (.p99_ms // "-"),
               ((.server_cpu_pct // "-") | tostring) + "%", ((.gen_cpu_pct // "-") | tostring) + "%",
               ((.box_cpu_pct // "-") | tostring) + "%",
               "\(.server_socket_drops // "-")/\(.gen_socket_drops // "-")",
               "\(.open_loop.achieved_per_s) (\(.open_loop.p50_ms // "-")/\(.open_loop.p99_ms // "-"))",
               .note] | @tsv' <<<"$RESULT_JSON" |
            awk -F'\t' '{printf "%-13s %9s %6s %9s %7s %7s %6s %6s %6s %13s %22s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12}'
        jq -r --arg c "$c" '.ratios[] | select(.case == $c) | "ratios: " + ([to_entries[] | select(.key != "case") | "\(.key | gsub("_over_"; "/") | gsub("_"; "-")) = \(.value)"] | join(", "))' <<<"$RESULT_JSON"
        jq -r --arg c "$c" "$CPU_LINE_JQ" <<<"$RESULT_JSON"
        echo
    done
    if [ "$GENCMP_JSON" != null ]; then
        echo "Generators against the reflector (IA_NA, 4-way, direct unicast, ${GEN_PERIOD}s runs; rate 0 = as fast as it goes):"
        printf '%-11s %8s %9s %9s %9s %9s %7s %8s %12s\n' tool offered started ok ok/s failed% genCPU reflCPU ok/gen-CPU-s
        jq -r '.generator_comparison.runs[] | [.tool, (if .rate == 0 then "max" else .rate end), .started, .ok, .ok_per_s, .failed_pct, ((.gen_cpu_pct // "-") | tostring) + "%", ((.reflector_cpu_pct // "-") | tostring) + "%", (.per_cpu_s // "-")] | @tsv' <<<"$RESULT_JSON" |
            awk -F'\t' '{printf "%-11s %8s %9s %9s %9s %9s %7s %8s %12s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
        jq -r '.generator_comparison | "most completed exchanges/s: tandem-gen \(.tandem_gen_max_per_s), perfdhcp \(.perfdhcp_max_per_s): ratio \(.ratio_max // "n/a") (goal >= \(.goal_ratio)); per generator CPU-second: ratio \(.ratio_per_cpu_s // "n/a"); highest offered rate with < 1 % failed: tandem-gen \(.tandem_gen_clean_rate), perfdhcp \(.perfdhcp_clean_rate)"' <<<"$RESULT_JSON"
        jq -r '.generator_comparison | select(.tandem_gen_xdp_max_per_s > 0) | "tandem-gen on AF_XDP: \(.tandem_gen_xdp_max_per_s) exchanges/s at most, ratio to perfdhcp \(.ratio_xdp_max // "n/a") (goal >= \(.goal_ratio_xdp)); highest offered rate with < 1 % failed: \(.tandem_gen_xdp_clean_rate)"' <<<"$RESULT_JSON"
    fi
}

fmt_md() {
    local c
    echo "# Tandem vs Kea vs the machine's ceiling (tandem-gen)"
    echo
    echo "- date: $RUN_DATE (run took ${ELAPSED}s)"
    echo "- command: \`$CMDLINE\`"
    echo "- box: $(nproc) x $CPU_MODEL, kernel $(uname -r), load average at start $LOADAVG_START, data on $WORK_FS; Tandem $GIT_REV$([ "$GIT_DIRTY" = true ] && echo ' (dirty tree)'), default workers, fsync on; kea-dhcp6 $KEA_VERSION (memfile; MT: thread-pool-size 2, packet-queue-size $KEA_MT_QUEUE); perfdhcp $PERFDHCP_VERSION; $([ -n "$PIN" ] && echo "pinned server/generator CPUs $PIN" || echo "unpinned (server and generator share all CPUs)")"
    echo "- route: **$ROUTE_MODE**. $ROUTE_REASON."
    [ -n "$SCRAPE_NOTE" ] && echo "- metrics: $SCRAPE_NOTE"
    [ "$XDP_RUN" = 1 ] && echo "- AF_XDP: tandem-xdp = tandem --datapath xdp --xdp-mode native (an AF_XDP socket in copy mode and a worker per receive queue; the veth had $(nproc) queues for every target of this run); the client veth's tx checksum offload was off for every target of this run.$([ "$NAPI_THREADS" = 1 ] || echo " The XDP program runs in the receiving veth's softirq, which no process is charged for: compare box CPU, not server CPU, across datapaths.")"
    if [ "$RPS" = 1 ]; then
        echo "- receive accounting: **rps** (--rps). Each veth end's receive stack (IPv6, UDP, the receiver's wakeup) ran in softirq on its side's CPU through RPS, so neither side's transmit ran the other's receive; an XDP program (tandem-xdp's) still ran in the sender's transmit, on the generator's CPU."
    elif [ "$NAPI_THREADS" = 1 ]; then
        echo "- receive accounting: **own** (--napi-threads). Each veth end received in threaded NAPI (GRO on), its kernel threads pinned to its side's CPU; server and generator CPU include their side's NAPI threads, so each side pays its own receive (XDP program, IPv6, UDP, wakeup) and not the other's, as on two machines."
    else
        echo "- receive accounting: **peer** (the default). veth runs a frame's whole receive inside the sender's transmit, so each side's CPU holds the other side's receive (IPv6, UDP, the wakeup of the receiver) and not its own."
    fi
    [ "$PROVISION" -gt 0 ] && echo "- provisioning: both servers carry DNS servers and a domain search list, which tandem-gen asks for in every message, and $PROVISION reservations by DUID (addresses inside the pool, DUIDs the generator never uses)."
    [ "$RECOVERIES" -gt 0 ] && echo "- topology: the namespaces were deleted by something else during the run $RECOVERIES time(s); the interrupted $(jq -r 'map(.redone) | join(", ")' <<<"$RECOVERED_JSON") was redone on a new topology ($(wc -l <"$DISCARDED_FILE") trials discarded)."
    echo "- method: tandem-gen --threads $THREADS --window $WINDOW --timeout-ms $TIMEOUT_MS --max-retries $MAX_RETRIES, 4-way exchanges, --clients = rate x ${PERIOD}s with a fresh --seed per trial, --phase-secs $((PERIOD + SLACK)); a rate passes when fewer than $LOSS_LIMIT % of the clients lack their lease when the phase ends (never started because the server fell behind, still in flight, timed out or refused), retransmitted messages are fewer than $LOSS_LIMIT % of the clients (a lost or > 1 s late message counts, as a drop does in perfdhcp), tandem-gen's failed_pct < $LOSS_LIMIT and no lease check fails (--config: leases in the pools). Search: from $START_RATE x 2^k (the highest point <= the open-loop rate) doubling to at most $MAX_RATE/s or halving, then $BISECT bisection steps$([ "$REPEAT_MARGINAL" = 1 ] && echo '; a marginal failure (every share < 2 %) is repeated once per search and the repeat decides')$([ "$STEAL_LIMIT" != 0 ] && echo "; a failing trial while the host's hypervisor took $STEAL_LIMIT % of a core or more (steal, all CPUs) is discarded and redone after ${STEAL_PAUSE}s, at most $STEAL_REDO_MAX times, for every target alike ($(wc -l <"$STEAL_FILE") redone in this run)"). ceiling = tandem-gen --reflector (stateless, $REFLECTOR_THREADS threads) in the server namespace."
    echo "- columns: sustained = highest passing --rate; ceil% = sustained / the ceiling's; achieved = completed exchanges/s at the sustained rate; p50/p99 = exchange latency (first Solicit to Reply) there; CPU = CPU time / wall time at the sustained rate (100 % = one core; box = every process on the box, so box - server - gen is what else ran, softirq included); drops = datagrams dropped at full receive sockets (server / generator namespace); open-loop = --rate 0 --window $OPEN_WINDOW for ${PERIOD}s, completed exchanges/s (p50/p99 ms)."
    echo
    for c in $CASES; do
        echo "## $(jq -r --arg c "$c" "$CASE_TITLE_JQ"'[$c]' <<<'{}')"
        echo
        echo "| target | sustained exch/s | % of ceiling | achieved exch/s | p50 ms | p99 ms | server CPU % | gen CPU % | box CPU % | socket drops srv/gen | open-loop exch/s (p50/p99 ms) | limited by (lowest failing rate) |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        jq -r --arg c "$c" '
            ([.results[] | select(.target == "ceiling" and .case == $c) | .sustained_rate][0] // 0) as $ceil
            | .results[] | select(.case == $c)
            | "| \(.target) | \(.sustained_rate) | \(if $ceil > 0 then (.sustained_rate * 100 / $ceil | round | tostring) else "-" end) | \(.achieved_per_s // "-") | \(.p50_ms // "-") | \(.p99_ms // "-") | \(.server_cpu_pct // "-") | \(.gen_cpu_pct // "-") | \(.box_cpu_pct // "-") | \(.server_socket_drops // "-")/\(.gen_socket_drops // "-") | \(.open_loop.achieved_per_s) (\(.open_loop.p50_ms // "-")/\(.open_loop.p99_ms // "-")) | \(.note) |"' <<<"$RESULT_JSON"
        echo
        jq -r --arg c "$c" '.ratios[] | select(.case == $c) | "Ratios of sustained rates: " + ([to_entries[] | select(.key != "case") | "\(.key | gsub("_over_"; "/") | gsub("_"; "-")) = \(.value)"] | join(", "))' <<<"$RESULT_JSON"
        echo
        jq -r --arg c "$c" "$CPU_LINE_JQ" <<<"$RESULT_JSON"
        echo
    done
    if [ "$GENCMP_JSON" != null ]; then
        echo "## Generators against the reflector"
        echo
        echo "IA_NA, 4-way, both tools by direct unicast to the reflector at [$SERVER_IP]:547 (perfdhcp sends from port 546, tandem-gen from ephemeral ports; --threads $THREADS), ${GEN_PERIOD}s runs at the same offered rates, plus each tool's as-fast-as-possible mode (perfdhcp without -r, tandem-gen --rate 0 --window $OPEN_WINDOW). ok/s = completed exchanges per second."
        echo
        echo "| tool | offered /s | started | completed | completed /s | failed % | generator CPU % | reflector CPU % | completed per generator CPU-second |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        jq -r '.generator_comparison.runs[] | "| \(.tool) | \(if .rate == 0 then "max" else .rate end) | \(.started) | \(.ok) | \(.ok_per_s) | \(.failed_pct) | \(.gen_cpu_pct // "-") | \(.reflector_cpu_pct // "-") | \(.per_cpu_s // "-") |"' <<<"$RESULT_JSON"
        echo
        jq -r '.generator_comparison | "Most completed exchanges/s: tandem-gen \(.tandem_gen_max_per_s), perfdhcp \(.perfdhcp_max_per_s): **ratio \(.ratio_max // "n/a")** (goal: >= \(.goal_ratio)). Per generator CPU-second (best run of each): tandem-gen \(.tandem_gen_per_cpu_s), perfdhcp \(.perfdhcp_per_cpu_s): ratio \(.ratio_per_cpu_s // "n/a"). Highest offered rate with < 1 % failed: tandem-gen \(.tandem_gen_clean_rate), perfdhcp \(.perfdhcp_clean_rate)."' <<<"$RESULT_JSON"
        jq -r '.generator_comparison | select(.tandem_gen_xdp_max_per_s > 0) | "\ntandem-gen-xdp = tandem-gen --datapath xdp (an AF_XDP socket per queue of the client veth, copy mode, native XDP; the server end'"'"'s tx checksum offload off for these rows, as the reflector answers through the kernel): most completed exchanges/s \(.tandem_gen_xdp_max_per_s), **ratio to perfdhcp \(.ratio_xdp_max // "n/a")** (goal: >= \(.goal_ratio_xdp)); per generator CPU-second \(.tandem_gen_xdp_per_cpu_s); highest offered rate with < 1 % failed \(.tandem_gen_xdp_clean_rate)."' <<<"$RESULT_JSON"
        echo
    fi
    echo "Limit labels: ceiling = within 10 % of the reflector's rate (the generator and the shared CPUs limit, not the server); server-socket / generator-socket = most lost messages were dropped at that side's full receive socket; server-late = messages answered after the 1 s retransmission timeout or dropped inside the server (no socket overflow); server-pace = nothing lost, the server answered too slowly and the window held the generator back; server-naks = refused; machine/... = the reflector's own search (everything shares the CPUs)."
    echo
    echo "Durability: Kea's memfile writes each lease change with write(2) and never fsyncs (see bench/results/latest.md); Tandem replies only after the group commit holding the lease is fdatasync'ed."
}

echo
echo "Tandem vs Kea vs ceiling, tandem-gen 4-way exchanges, ${PERIOD}s trials, $(nproc) CPUs, route $ROUTE_MODE, run took ${ELAPSED}s; Tandem $GIT_REV"
[ "$RECOVERIES" -gt 0 ] && echo "(namespaces deleted by something else $RECOVERIES time(s); redone: $(jq -r 'map(.redone) | join(", ")' <<<"$RECOVERED_JSON"))"
[ -n "$SCRAPE_NOTE" ] && echo "$SCRAPE_NOTE"
echo
print_text

if [ "$WRITE_RESULTS" = 1 ]; then
    mkdir -p "$RESULTS_DIR"
    RESULT_NAME=gen-latest
    [ "$PROVISION" -gt 0 ] && RESULT_NAME=gen-provisioned-latest
    case " $TARGETS " in *" tandem-scraped "*) RESULT_NAME=gen-metrics-latest ;; esac
    jq --argjson p "$PROVISION" '. + {provisioning: {reservations_by_duid: $p, options: "dns-servers (2), domain-search (2), asked for in every message"}}' \
        <<<"$RESULT_JSON" >"$RESULTS_DIR/$RESULT_NAME.json"
    fmt_md >"$RESULTS_DIR/$RESULT_NAME.md"
    log "wrote $RESULTS_DIR/$RESULT_NAME.json and $RESULTS_DIR/$RESULT_NAME.md"
fi
