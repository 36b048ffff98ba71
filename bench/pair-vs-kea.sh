#!/usr/bin/env bash
# pair-vs-kea.sh: a Tandem failover pair against a Kea HA hot-standby pair, both driven by
# tandem-gen acting as a relay agent that forwards every message to both servers. See
# bench/README.md.
#
# Topology (all namespaces and links are named tdmp*, and deleted on exit, also on failure or
# Ctrl-C):
#
#   netns tdmpa: server A (Kea primary / Tandem primary), veth tdmpa 2001:db8:1::a/64
#   netns tdmpb: server B (Kea standby / Tandem secondary), veth tdmpb 2001:db8:1::b/64
#   netns tdmpc: tandem-gen, veth tdmpc 2001:db8:1::c/64, relays to [::a]:547 and [::b]:547
#   netns tdmpx: bridge tdmpbr joining the peer ends tdmpxa, tdmpxb, tdmpxc
#
# Per pair it measures
#   1. the sustained rate of 4-way IA_NA exchanges (as gen-vs-kea.sh: fewer than 1 % of the
#      clients without their lease at the end of a 4 s trial, fewer than 1 % retransmits, no
#      lease-check violation), by a bounded doubling/halving search and bisection;
#   2. the client-visible outage when server A gets kill -9 under a fixed load: tandem-gen's
#      max_reply_gap_ms (the longest time no exchange completed while some were outstanding).
#      Kea twice: with its HA defaults and with tuned timers.

set -uo pipefail

# ---------------------------------------------------------------- settings

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
TANDEM_BIN="$REPO/target/release/tandem"
GEN_BIN="$REPO/target/release/tandem-gen"
KEA_TEMPLATE="$BENCH/kea/kea-dhcp6.json.in"
TANDEM_TEMPLATE="$BENCH/tandem.toml.in"
RESULTS_DIR="$BENCH/results"
KEA_HOOKS=/usr/lib/x86_64-linux-gnu/kea/hooks
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

NS_A=tdmpa; NS_B=tdmpb; NS_C=tdmpc; NS_X=tdmpx; BRIDGE=tdmpbr
IP_A=2001:db8:1::a; IP_B=2001:db8:1::b; IP_C=2001:db8:1::c
HA_PORT=8001          # Kea HA dedicated HTTP listener, on each server's address
FO_PORT=647           # Tandem partner link (RFC 8156), the secondary listens

PERIOD=4              # seconds of sending per search trial (--clients = rate x PERIOD)
START_RATE=1000       # search grid: START_RATE x 2^k
MAX_RATE=32000
MIN_RATE=250
BISECT=3
SEARCH_BUDGET=150     # seconds per search; past this it stops early (noted)
LOSS_LIMIT=1          # percent, as gen-vs-kea.sh
THREADS=2
WINDOW=512
TIMEOUT_MS=1000
MAX_RETRIES=2

# Outage runs. 1000 exchanges/s is well below every sustained rate measured here, so what the
# gap shows is the failover, not overload. --timeout-ms 200: a client that lost its server
# retransmits after 0.2, 0.6, 1.4, 3.0, 6.2 and 12.6 s, so the first answer after the takeover
# reaches clients within a fraction of a second, while new clients keep arriving every
# millisecond (those end the gap at once when a server answers). --max-retries 6: each client
# keeps trying for 25 s and its last retransmission carries an Elapsed Time of ~12.6 s, longer
# than Kea's default max-ack-delay (10 s); Kea's default partner-down detection needs such
# "unacked" clients (RFC 8415 clients keep soliciting with a growing Elapsed Time too). The
# window holds every client that can be outstanding at once (rate x 25 s).
OUT_RATE=1000
OUT_SECS=8            # sending period of an outage run
OUT_KILL_AT=3         # seconds into the run: kill -9 of server A
OUT_TIMEOUT_MS=200
OUT_RETRIES=6
OUT_WINDOW=16384      # per thread
DEFAULTS_SECS=90      # sending period of the Kea-defaults outage run: Kea's default
                      # max-response-delay is 60 s, so a shorter run only gives a lower bound
KEA_MT_QUEUE=64       # Kea packet-queue-size (its default; as in the other benches)
# Kea HA timers of the "tuned" run (Kea 2.2 ARM, ha section: heartbeat-delay,
# max-response-delay, max-ack-delay, max-unacked-clients; 0 unacked clients = go to
# partner-down as soon as max-response-delay has passed without contact).
KEA_TUNED='{"heartbeat-delay": 1000, "max-response-delay": 3000, "max-ack-delay": 1000, "max-unacked-clients": 0}'
TANDEM_MCLT=60

ONLY=""               # kea | tandem | "" (both)
QUICK=0
DO_BUILD=1
KEEP_LOGS=""
WRITE_RESULTS=1
DEFAULTS_SECS_SET=""

usage() {
    cat <<EOF
usage: $0 [--quick] [--only kea|tandem] [options]
  --quick              short run (~1.5 min): 2 s trials, 1 bisection step, 8 s Kea-defaults
                       outage run (a lower bound then)
  --only kea|tandem    run one side only (the other is reported as not run)
  --outage-rate N      exchanges/s of the outage runs (default $OUT_RATE)
  --outage-secs N      sending period of the outage runs (default $OUT_SECS)
  --kill-at SECS       when server A is killed in an outage run (default $OUT_KILL_AT)
  --defaults-secs N    sending period of the Kea-defaults outage run (default $DEFAULTS_SECS,
                       --quick: the --outage-secs value)
  --kea-queue N        Kea packet-queue-size (default $KEA_MT_QUEUE)
  --no-build           do not run cargo build --release
  --keep-logs DIR      copy configs, server logs and every tandem-gen output to DIR
  --no-results         do not write bench/results/pair-latest.{json,md}
  -h, --help
EOF
}

CMDLINE="$0${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        --outage-rate) OUT_RATE="$2"; shift 2 ;;
        --outage-secs) OUT_SECS="$2"; shift 2 ;;
        --kill-at) OUT_KILL_AT="$2"; shift 2 ;;
        --defaults-secs) DEFAULTS_SECS_SET="$2"; shift 2 ;;
        --kea-queue) KEA_MT_QUEUE="$2"; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        --no-results) WRITE_RESULTS=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$ONLY" in ""|kea|tandem) ;; *) echo "--only takes kea or tandem" >&2; exit 2 ;; esac
if [ "$QUICK" = 1 ]; then
    PERIOD=2; BISECT=1; SEARCH_BUDGET=45; DEFAULTS_SECS=$OUT_SECS
fi
[ -n "$DEFAULTS_SECS_SET" ] && DEFAULTS_SECS=$DEFAULTS_SECS_SET
RUN_KEA=1; RUN_TANDEM=1
[ "$ONLY" = kea ] && RUN_TANDEM=0
[ "$ONLY" = tandem ] && RUN_KEA=0

# ---------------------------------------------------------------- cleanup

WORK=""
SRV_A_PID=""; SRV_B_PID=""; GEN_PID=""
ALL_NS="$NS_A $NS_B $NS_C $NS_X"
ALL_LINKS="$NS_A $NS_B $NS_C tdmpxa tdmpxb tdmpxc $BRIDGE"

pair_topology_down() {
    local ns pids l
    for ns in $ALL_NS; do
        if [ -e "/run/netns/$ns" ] || [ -e "/var/run/netns/$ns" ]; then
            pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
            [ -n "$pids" ] && log "warning: processes still in netns $ns (not started by this run, left alone): $pids"
            ip netns del "$ns" 2>/dev/null || log "warning: cannot delete netns $ns"
        fi
    done
    # A link of ours left in the root namespace by an interrupted run.
    for l in $ALL_LINKS; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l" 2>/dev/null
    done
    return 0
}

install_cleanup pair_topology_down GEN_PID SRV_A_PID SRV_B_PID

# ---------------------------------------------------------------- preflight

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
ensure_tools ip:iproute2 ss:iproute2 jq:jq timeout:coreutils awk:gawk curl:curl openssl:openssl \
    kea-dhcp6:kea-dhcp6-server "$KEA_HOOKS/libdhcp_ha.so:kea-common" \
    "$KEA_HOOKS/libdhcp_lease_cmds.so:kea-common"
for t in ip ss jq timeout awk curl; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
if [ "$RUN_KEA" = 1 ]; then
    command -v kea-dhcp6 >/dev/null || die "missing kea-dhcp6 (Debian kea-dhcp6-server); --only tandem skips Kea"
    for h in libdhcp_ha.so libdhcp_lease_cmds.so; do
        [ -f "$KEA_HOOKS/$h" ] || die "missing Kea hook $KEA_HOOKS/$h"
    done
fi
[ "$RUN_TANDEM" = 1 ] && { command -v openssl >/dev/null || die "missing openssl (Tandem partner certificates)"; }

RUN_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
T_START=$(date +%s)

TANDEM_BUILD_ERR=""
if [ "$DO_BUILD" = 1 ]; then
    log "cargo build --release --bin tandem-gen"
    (cd "$REPO" && cargo build --release --bin tandem-gen) >&2 || die "cargo build of tandem-gen failed"
    if [ "$RUN_TANDEM" = 1 ]; then
        log "cargo build --release --bin tandem"
        (cd "$REPO" && cargo build --release --bin tandem) >&2 || TANDEM_BUILD_ERR="cargo build --release --bin tandem failed"
    fi
fi
[ -x "$GEN_BIN" ] || die "missing $GEN_BIN (build it or drop --no-build)"
"$GEN_BIN" --help | grep -q 'Repeat for a' || die "$GEN_BIN predates repeatable --server; rebuild it"
T_START=$(date +%s)

WORK="$(mktemp -d /tmp/tdm-pairbench.XXXXXX)" || die "mktemp failed"
CLK_TCK=$(getconf CLK_TCK)
TRIALS_FILE="$WORK/trials.jsonl"; : >"$TRIALS_FILE"
QUIET_FILE="$WORK/quiet.jsonl"; : >"$QUIET_FILE"

# The pools every lease must lie in (tandem-gen --config): the Tandem template, whose subnet and
# pools are Kea's too.
mkdir -p "$WORK/pools"
sed -e "s|@DATA_DIR@|$WORK/pools/data|" -e "s|@IFACE@|$NS_A|" "$TANDEM_TEMPLATE" >"$WORK/pools/tandem.toml"
POOLS_CONFIG="$WORK/pools/tandem.toml"

# ---------------------------------------------------------------- topology

pair_topology_up() {
    pair_topology_down
    local ns s i ok
    for ns in $ALL_NS; do
        ip netns add "$ns" || die "ip netns add $ns"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            || die "sysctl in $ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_X" link add "$BRIDGE" type bridge || die "bridge $BRIDGE"
    ip -n "$NS_X" link set "$BRIDGE" up
    for s in a b c; do
        ip link add "tdmp$s" netns "tdmp$s" type veth peer name "tdmpx$s" netns "$NS_X" || die "veth tdmp$s"
        ip -n "$NS_X" link set "tdmpx$s" master "$BRIDGE" up || die "enslave tdmpx$s"
        ip -n "tdmp$s" addr add "2001:db8:1::$s/64" dev "tdmp$s" nodad || die "address on tdmp$s"
        ip -n "tdmp$s" link set "tdmp$s" up
    done
    for i in $(seq 50); do
        ok=1
        for s in a b c; do
            ip -n "tdmp$s" -6 addr show dev "tdmp$s" scope link | grep -q fe80 || ok=0
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.1
    done
    die "link-local addresses did not appear"
}

topology_alive() {
    local ns
    for ns in $ALL_NS; do [ -e "/run/netns/$ns" ] || return 1; done
}

# ---------------------------------------------------------------- Kea pair

# kea_render NAME NS IP DIR TIMERS_JSON: DIR/kea-dhcp6.json for one HA peer, from the template
# (relay mode: listens on IP, subnet picked by the relay's link-address). HA over Kea 2.2's
# dedicated HTTP listener ("http-dedicated-listener" in the hook's "multi-threading" map): each
# kea-dhcp6 serves its peer's HA commands itself on [IP]:HA_PORT, so no kea-ctrl-agent process
# (not installed here) sits in the lease-update path; it requires Kea's multi-threading, which
# is on (thread-pool-size 2, the default on 2 cores, as kea-mt in the other benches).
kea_render() {
    local name="$1" ns="$2" ip="$3" dir="$4" timers="$5"
    KEA_MT_QUEUE=$KEA_MT_QUEUE render_kea_config mt "$dir" "$ns" "$ip"
    jq --arg me "$name" --arg hooks "$KEA_HOOKS" --arg hlog "$dir/ha.log" \
       --arg ua "http://[$IP_A]:$HA_PORT/" --arg ub "http://[$IP_B]:$HA_PORT/" --argjson timers "$timers" '
        .Dhcp6["hooks-libraries"] = [
          {library: ($hooks + "/libdhcp_lease_cmds.so")},
          {library: ($hooks + "/libdhcp_ha.so"), parameters: {"high-availability": [(
            {"this-server-name": $me, mode: "hot-standby",
             "send-lease-updates": true, "sync-leases": true,
             "multi-threading": {"enable-multi-threading": true, "http-dedicated-listener": true,
                                 "http-listener-threads": 0, "http-client-threads": 0},
             peers: [{name: "server1", url: $ua, role: "primary", "auto-failover": true},
                     {name: "server2", url: $ub, role: "standby", "auto-failover": true}]}
            + $timers)]}}]
        | .Dhcp6.loggers += [{name: "kea-dhcp6.ha-hooks", severity: "INFO",
                              output_options: [{output: $hlog}]}]' \
        "$dir/kea-dhcp6.json" >"$dir/kea-dhcp6.json.tmp" && mv "$dir/kea-dhcp6.json.tmp" "$dir/kea-dhcp6.json" \
        || die "cannot write $dir/kea-dhcp6.json"
    ip netns exec "$ns" kea-dhcp6 -t "$dir/kea-dhcp6.json" >"$dir/kea-check.log" 2>&1 || {
        cat "$dir/kea-check.log" >&2; die "kea-dhcp6 -t rejected $dir/kea-dhcp6.json"; }
}

# ha_state IP: the HA state a peer reports (ha-heartbeat over its HA listener, from tdmpc).
ha_state() {
    ip netns exec "$NS_C" curl -s -m 2 -X POST -H 'Content-Type: application/json' \
        -d '{"command": "ha-heartbeat", "service": ["dhcp6"]}' "http://[$1]:$HA_PORT/" 2>/dev/null |
        jq -r '(if type == "array" then .[0] else . end) | .arguments.state // empty' 2>/dev/null
}

# kea_pair_start TIMERS_JSON DIR: fresh lease files, both peers started at once; sets SRV_A_PID,
# SRV_B_PID and PAIR_READY_S; dies unless both report hot-standby within 90 s (with Kea's default
# heartbeat-delay of 10 s the peers move WAITING -> SYNCING -> READY -> HOT-STANDBY one heartbeat
# at a time: ~30 s).
kea_pair_start() {
    local timers="$1" dir="$2" i sa sb t0
    rm -rf "$dir"; mkdir -p "$dir/a" "$dir/b"
    kea_render server1 "$NS_A" "$IP_A" "$dir/a" "$timers"
    kea_render server2 "$NS_B" "$IP_B" "$dir/b" "$timers"
    t0=$(date +%s.%N)
    KEA_PIDFILE_DIR="$dir/a" KEA_LOCKFILE_DIR="$dir/a" \
        ip netns exec "$NS_A" kea-dhcp6 -c "$dir/a/kea-dhcp6.json" >"$dir/a/server.log" 2>&1 &
    SRV_A_PID=$!
    KEA_PIDFILE_DIR="$dir/b" KEA_LOCKFILE_DIR="$dir/b" \
        ip netns exec "$NS_B" kea-dhcp6 -c "$dir/b/kea-dhcp6.json" >"$dir/b/server.log" 2>&1 &
    SRV_B_PID=$!
    wait_udp_bound "$NS_A" 547 "$SRV_A_PID" "$dir/a/server.log"
    wait_udp_bound "$NS_B" 547 "$SRV_B_PID" "$dir/b/server.log"
    for i in $(seq 180); do
        sa=$(ha_state "$IP_A"); sb=$(ha_state "$IP_B")
        if [ "$sa" = hot-standby ] && [ "$sb" = hot-standby ]; then
            PAIR_READY_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
            log "Kea pair in hot-standby after ${PAIR_READY_S}s ($(grep -c HA_STATE_TRANSITION "$dir/a/ha.log" "$dir/b/ha.log" 2>/dev/null | tr '\n' ' ')transitions logged)"
            return 0
        fi
        kill -0 "$SRV_A_PID" 2>/dev/null && kill -0 "$SRV_B_PID" 2>/dev/null || break
        sleep 0.5
    done
    tail -5 "$dir/a/ha.log" "$dir/b/ha.log" "$dir/a/server.log" "$dir/b/server.log" >&2 2>/dev/null
    die "the Kea pair did not reach hot-standby within 90 s (A: '${sa:-no answer}', B: '${sb:-no answer}')"
}

pair_stop() {
    [ -n "$SRV_A_PID" ] && stop_pid "$SRV_A_PID"
    [ -n "$SRV_B_PID" ] && stop_pid "$SRV_B_PID"
    SRV_A_PID=""; SRV_B_PID=""
}

# ---------------------------------------------------------------- Tandem pair

# make_certs DIR: a CA and leaf certificates for tandem-a and tandem-b (ECDSA P-256, X.509 v3:
# CA with basicConstraints CA:TRUE + keyCertSign; leaves with a DNS subjectAltName and
# serverAuth + clientAuth, as rustls/webpki want).
make_certs() {
    local d="$1" n
    mkdir -p "$d"
    {
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" &&
        openssl req -x509 -new -key "$d/ca.key" -sha256 -days 2 -subj "/CN=tandem bench CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$d/ca.pem"
    } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; return 1; }
    for n in a b; do
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=DNS:tandem-$n" >"$d/$n.ext"
        {
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$n.key" &&
            openssl req -new -key "$d/$n.key" -subj "/CN=tandem-$n" -out "$d/$n.csr" &&
            openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
                -days 2 -sha256 -extfile "$d/$n.ext" -out "$d/$n.pem"
        } >>"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; return 1; }
    done
    openssl verify -CAfile "$d/ca.pem" "$d/a.pem" "$d/b.pem" >>"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; return 1; }
}

# tandem_render ROLE NS IP DIR CERTS: DIR/tandem.toml, the bench template (same subnet and pools
# as Kea) listening on [IP]:547, plus the [failover] section of this peer.
tandem_render() {
    local role="$1" ns="$2" ip="$3" dir="$4" certs="$5" me other link
    if [ "$role" = primary ]; then me=a; other=b; link="partner = \"[$IP_B]:$FO_PORT\""
    else me=b; other=a; link="listen = \"[$IP_B]:$FO_PORT\""; fi
    sed -e "s|@DATA_DIR@|$dir/data|" -e "s|@IFACE@|$ns|" \
        -e "s|^\[server\]\$|[server]\nlisten = [\"[$ip]:547\"]|" "$TANDEM_TEMPLATE" >"$dir/tandem.toml" || return 1
    cat >>"$dir/tandem.toml" <<EOF

[failover]
role = "$role"
relationship = "bench"
$link
partner_name = "tandem-$other"
ca = "$certs/ca.pem"
cert = "$certs/$me.pem"
key = "$certs/$me.key"
mclt_secs = $TANDEM_MCLT
EOF
}

# tandem_status DATA_DIR: the `tandem ctl status` text of the server using DATA_DIR.
tandem_status() {
    timeout 5 "$TANDEM_BIN" ctl --socket "$1/control.sock" status 2>&1
}

# tandem_pair_start DIR: certificates, configs, both servers started at once; sets SRV_A_PID,
# SRV_B_PID and PAIR_READY_S. Returns 1 with TANDEM_ERR set when the pair cannot be started or
# does not report `state: NORMAL` on both sides within 30 s (the caller records the failure;
# the Kea results stand).
tandem_pair_start() {
    local dir="$1" i sa sb t0 s
    rm -rf "$dir"; mkdir -p "$dir/a/data" "$dir/b/data"
    [ -z "$TANDEM_BUILD_ERR" ] || { TANDEM_ERR="$TANDEM_BUILD_ERR"; return 1; }
    [ -x "$TANDEM_BIN" ] || { TANDEM_ERR="missing $TANDEM_BIN"; return 1; }
    if ! "$TANDEM_BIN" ctl --help >/dev/null 2>&1; then
        TANDEM_ERR="$TANDEM_BIN has no 'ctl' subcommand: this build predates the failover pair"
        return 1
    fi
    make_certs "$dir/certs" || { TANDEM_ERR="openssl could not make the partner certificates"; return 1; }
    tandem_render primary "$NS_A" "$IP_A" "$dir/a" "$dir/certs" &&
        tandem_render secondary "$NS_B" "$IP_B" "$dir/b" "$dir/certs" || { TANDEM_ERR="cannot write the Tandem configs"; return 1; }
    for s in a b; do
        if ! "$TANDEM_BIN" check-config --config "$dir/$s/tandem.toml" >"$dir/$s/check.log" 2>&1; then
            TANDEM_ERR="tandem check-config rejected the [failover] config of server $s: $(tr '\n' ' ' <"$dir/$s/check.log" | cut -c1-400)"
            return 1
        fi
    done
    t0=$(date +%s.%N)
    ip netns exec "$NS_A" "$TANDEM_BIN" serve --config "$dir/a/tandem.toml" --data-dir "$dir/a/data" \
        --log-level warn >"$dir/a/server.log" 2>&1 &
    SRV_A_PID=$!
    ip netns exec "$NS_B" "$TANDEM_BIN" serve --config "$dir/b/tandem.toml" --data-dir "$dir/b/data" \
        --log-level warn >"$dir/b/server.log" 2>&1 &
    SRV_B_PID=$!
    for i in $(seq 60); do
        sa=$(tandem_status "$dir/a/data"); sb=$(tandem_status "$dir/b/data")
        if grep -q 'state: NORMAL' <<<"$sa" && grep -q 'state: NORMAL' <<<"$sb"; then
            PAIR_READY_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
            if ! ip netns exec "$NS_A" ss -Hlun "sport = :547" | grep -q . || ! ip netns exec "$NS_B" ss -Hlun "sport = :547" | grep -q .; then
                TANDEM_ERR="the Tandem pair is NORMAL but UDP 547 is not bound on both"
                return 1
            fi
            log "Tandem pair NORMAL after ${PAIR_READY_S}s"
            return 0
        fi
        if ! kill -0 "$SRV_A_PID" 2>/dev/null || ! kill -0 "$SRV_B_PID" 2>/dev/null; then
            TANDEM_ERR="a Tandem server exited at start: A: $(tail -3 "$dir/a/server.log" | tr '\n' ' ' | cut -c1-300) B: $(tail -3 "$dir/b/server.log" | tr '\n' ' ' | cut -c1-300)"
            return 1
        fi
        sleep 0.5
    done
    TANDEM_ERR="the Tandem pair did not report 'state: NORMAL' within 30 s; A said: $(grep -E '^(state|partner_state|link):' <<<"$sa" | tr '\n' ' ')B said: $(grep -E '^(state|partner_state|link):' <<<"$sb" | tr '\n' ' ')"
    return 1
}

tandem_pair_stop() { pair_stop; }

# ---------------------------------------------------------------- measurements

# wait_quiet WHAT: the box is shared (builds and tests of other people run on it): before a
# measurement, wait until the whole box used less than QUIET_PCT % CPU (of nproc x 100) over a
# 2 s sample, at most QUIET_WAIT_S seconds; then go on regardless. Appends what it saw to
# QUIET_FILE.
QUIET_PCT=40
QUIET_WAIT_S=60
OTHER_MAX=40          # % CPU of other processes during a trial above which it is redone
REDO_MAX=3            # redone trials per search at most
wait_quiet() {
    local what="$1" t0 b0 b1 pct waited=0
    t0=$(date +%s)
    while :; do
        b0=$(cpu_sample); sleep 2; b1=$(cpu_sample)
        pct=$(box_cpu_pct "$b0" "$b1")
        [ "$pct" -lt "$QUIET_PCT" ] && break
        waited=$(( $(date +%s) - t0 ))
        if [ "$waited" -ge "$QUIET_WAIT_S" ]; then
            log "warning: the box is still busy (${pct}% CPU) after ${waited}s; measuring $what anyway"
            break
        fi
        [ "$waited" -lt 3 ] && log "the box is busy (${pct}% CPU, not from this run); waiting up to ${QUIET_WAIT_S}s before $what"
    done
    jq -nc --arg w "$what" --argjson p "$pct" --argjson s "$(( $(date +%s) - t0 ))" \
        '{before: $w, box_cpu_pct: $p, waited_s: $s}' >>"$QUIET_FILE"
}

ROUTE_ARGS=(--relay-link "$IP_C" --server "[$IP_A]:547" --server "[$IP_B]:547")
SEED_SEQ=0
TRIAL_SEQ=0
next_seed() { # tandem-gen uses the low 8 bits of --seed in the DUID: cycle through 1..255
    SEED_SEQ=$((SEED_SEQ + 1))
    SEED=$(( (SEED_SEQ - 1) % 255 + 1 ))
    TRIAL_SEQ=$((TRIAL_SEQ + 1))
}

# run_trial PAIR RATE DIR: one search trial (SEED and TRIAL_SEQ set by the caller); prints a
# JSON object with the pass verdict of gen-vs-kea.sh.
run_trial() {
    local pair="$1" rate="$2" dir="$3"
    local clients=$((rate * PERIOD))
    local out="$dir/trial-$TRIAL_SEQ-r$rate.json" err="$dir/trial-$TRIAL_SEQ.err" tfile="$dir/trial-$TRIAL_SEQ.time"
    local cmd=("$GEN_BIN" "${ROUTE_ARGS[@]}" --mode na --threads "$THREADS" --window "$WINDOW" --rate "$rate"
               --clients "$clients" --phase-secs "$PERIOD" --timeout-ms "$TIMEOUT_MS"
               --max-retries "$MAX_RETRIES" --seed "$SEED" --config "$POOLS_CONFIG" --json --max-failed-pct 100)
    local rc a0 b0 a1 b1 w0 w1 c0 c1 d0 d1 TIMEFORMAT='%R %U %S'
    a0=$(pid_ticks "$SRV_A_PID"); b0=$(pid_ticks "$SRV_B_PID"); w0=$(date +%s.%N); c0=$(cpu_sample)
    d0=$(udp_drops "$NS_A")
    { time ip netns exec "$NS_C" timeout -k 2 $((PERIOD + 20)) "${cmd[@]}" >"$out" 2>"$err" ; } 2>"$tfile"
    rc=$?
    a1=$(pid_ticks "$SRV_A_PID"); b1=$(pid_ticks "$SRV_B_PID"); w1=$(date +%s.%N); c1=$(cpu_sample)
    d1=$(udp_drops "$NS_A")
    local pct='BEGIN{printf "%.0f", (b-a)/hz/(w1-w0)*100}'
    local ca cb gen_cpu json
    ca=$(awk -v a="$a0" -v b="$a1" -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" "$pct")
    cb=$(awk -v a="$b0" -v b="$b1" -v hz="$CLK_TCK" -v w0="$w0" -v w1="$w1" "$pct")
    gen_cpu=$(awk 'NF==3 && $1 > 0 {v = ($2+$3)/$1*100} END {if (v != "") printf "%.0f", v; else print "null"}' "$tfile")
    json=$(jq -c . "$out" 2>/dev/null | tail -1)
    [ -n "$json" ] || json='{}'
    jq -c -n --argjson g "$json" --arg pair "$pair" --argjson rate "$rate" --argjson clients "$clients" \
        --argjson seed "$SEED" --argjson rc "$rc" --argjson ca "$ca" --argjson cb "$cb" --argjson gc "$gen_cpu" \
        --argjson box "$(box_cpu_pct "$c0" "$c1")" --argjson sd "$(( ${d1%% *} - ${d0%% *} ))" \
        --argjson limit "$LOSS_LIMIT" --arg cmd "${cmd[*]}" --argjson seq "$TRIAL_SEQ" '
        ($g.phases[0] // null) as $p
        | ($p != null) as $parsed
        | (if $parsed then (($clients - $p.ok) * 100 / $clients) else 100 end) as $unfinished
        | (if $parsed then ($p.retransmits * 100 / $clients) else 100 end) as $retrans
        | ($g.violations // 0) as $viol
        | {seq: $seq, pair: $pair, kind: "search", rate: $rate, clients: $clients, seed: $seed, gen_rc: $rc,
           parsed: $parsed, started: ($p.started // 0), ok: ($p.ok // 0), timeouts: ($p.timeouts // 0),
           retransmits: ($p.retransmits // 0), naks: (($p.naks_by_status // {}) | add // 0),
           duplicate_replies: ($p.duplicate_replies // 0),
           achieved_per_s: (($p.exchanges_per_sec // 0) | round),
           failed_pct: (($p.failed_pct // 100) * 1000 | round / 1000),
           unfinished_pct: ($unfinished * 1000 | round / 1000),
           retransmit_pct: ($retrans * 1000 | round / 1000),
           latency_ms: ($p.latency_ms // null), max_reply_gap_ms: ($p.max_reply_gap_ms // null),
           violations: $viol, violation_examples: (($g.violation_examples // [])[:3]),
           server_a_cpu_pct: $ca, server_b_cpu_pct: $cb, gen_cpu_pct: $gc, box_cpu_pct: $box,
           other_cpu_pct: ($box - $ca - $cb - ($gc // 0)),
           server_a_socket_drops: $sd,
           pass: ($parsed and ($rc == 0 or $rc == 1) and $unfinished < $limit and $retrans < $limit
                  and ($p.failed_pct < $limit) and $viol == 0),
           command: $cmd}'
}

trial_line() {
    jq -r '"  \(.pair) r=\(.rate): ok \(.ok)/\(.clients) (started \(.started)), \(.achieved_per_s)/s, unfinished \(.unfinished_pct)%, retrans \(.retransmit_pct)%, dup \(.duplicate_replies), p50 \(.latency_ms.p50 // "-") p99 \(.latency_ms.p99 // "-") ms, naks \(.naks), viol \(.violations), cpu A \(.server_a_cpu_pct)% B \(.server_b_cpu_pct)% gen \(.gen_cpu_pct)% box \(.box_cpu_pct)% (other \(.other_cpu_pct)%)\(if .pass then " -> pass" else " -> FAIL" end)"' <<<"$1"
}

SEARCH_REPEAT_MARGINAL=1   # rate_search (lib.sh): repeat a marginal failure once per search

# search_trial RATE [repeat]: the rate_search callback of search (uses its pair, dir and redone):
# one search trial, appended to TRIALS_FILE and logged; prints its JSON. Dies when a tdmp*
# namespace is gone.
# shellcheck disable=SC2317  # called by rate_search
search_trial() {
    local res
    topology_alive || die "a tdmp* namespace vanished during the run (deleted by something else)"
    next_seed
    if [ "${2:-}" = repeat ]; then
        res=$(run_trial "$pair" "$1" "$dir" | jq -c '. + {repeat: true}')
    else
        res=$(run_trial "$pair" "$1" "$dir")
        # A trial during which other processes (not this run's) used more than OTHER_MAX % CPU
        # was measured on a busy box: kept as "disturbed", redone once the box is quiet (at
        # most REDO_MAX times per search).
        while [ "$redone" -lt "$REDO_MAX" ] && jq -e --argjson m "$OTHER_MAX" '.other_cpu_pct > $m' <<<"$res" >/dev/null; do
            redone=$((redone + 1))
            echo "$res" | jq -c '. + {disturbed: true}' >>"$TRIALS_FILE"
            log "$(trial_line "$res") [disturbed: other processes used $(jq -r .other_cpu_pct <<<"$res")% CPU; redoing]"
            wait_quiet "$pair trial at $1/s (redo)"
            next_seed
            res=$(run_trial "$pair" "$1" "$dir")
        done
    fi
    echo "$res" >>"$TRIALS_FILE"
    log "$(trial_line "$res")"
    echo "$res"
}

# failure_note: the search_note diagnosis of search: the lowest failing trial's numbers.
# shellcheck disable=SC2317  # called by search_note
failure_note() {
    SEARCH_NOTE=$(jq -r '"at \(.rate)/s: \(.unfinished_pct)% unfinished, \(.started) of \(.clients) started, \(.retransmits) retransmits, \(.naks) naks, \(.violations) violations, server A socket drops \(.server_a_socket_drops), CPU A \(.server_a_cpu_pct)% / B \(.server_b_cpu_pct)% / gen \(.gen_cpu_pct)% / box \(.box_cpu_pct)%"' <<<"$SEARCH_FAIL")
}

# search PAIR DIR: the bounded search (rate_search in lib.sh, grid START_RATE x 2^k, budget
# SEARCH_BUDGET s from its start) against the running pair; writes DIR/search.json.
search() {
    local pair="$1" dir="$2"
    local t0 redone=0
    wait_quiet "$pair search"
    t0=$(date +%s)
    log "$pair: sustained-rate search (${PERIOD}s trials from $START_RATE/s)"
    rate_search search_trial "$START_RATE" $((t0 + SEARCH_BUDGET))
    local lo=$SEARCH_LO hi=$SEARCH_HI cut=$SEARCH_CUT best=$SEARCH_BEST
    local note
    search_note failure_note
    note=$SEARCH_NOTE
    jq -nc --arg pair "$pair" --argjson lo "$lo" --argjson hi "$hi" --arg note "$note" \
        --argjson best "${best:-null}" --argjson cut "$cut" '
        {pair: $pair, sustained_rate: $lo, first_failing_rate: (if $hi > 0 then $hi else null end),
         achieved_per_s: ($best.achieved_per_s // null), p50_ms: ($best.latency_ms.p50 // null),
         p99_ms: ($best.latency_ms.p99 // null), server_a_cpu_pct: ($best.server_a_cpu_pct // null),
         server_b_cpu_pct: ($best.server_b_cpu_pct // null), gen_cpu_pct: ($best.gen_cpu_pct // null),
         box_cpu_pct: ($best.box_cpu_pct // null), other_cpu_pct: ($best.other_cpu_pct // null),
         duplicate_replies: ($best.duplicate_replies // null),
         budget_cut: ($cut == 1), note: $note}' >"$dir/search.json"
    log "$pair: sustained $lo/s ($note)"
}

# outage PAIR LABEL DIR SECS: tandem-gen at OUT_RATE for SECS seconds against the running pair,
# kill -9 of server A OUT_KILL_AT seconds in; writes DIR/outage-LABEL.json. Server A is gone
# afterwards (SRV_A_PID cleared), server B still runs.
outage() {
    local pair="$1" label="$2" dir="$3" secs="$4"
    next_seed
    local clients=$((OUT_RATE * secs)) phase=$((secs + 2))
    local out="$dir/outage-$label-gen.json" err="$dir/outage-$label-gen.err"
    local cmd=("$GEN_BIN" "${ROUTE_ARGS[@]}" --mode na --threads "$THREADS" --window "$OUT_WINDOW"
               --rate "$OUT_RATE" --clients "$clients" --phase-secs "$phase" --timeout-ms "$OUT_TIMEOUT_MS"
               --max-retries "$OUT_RETRIES" --seed "$SEED" --config "$POOLS_CONFIG" --json --max-failed-pct 100)
    wait_quiet "$pair/$label outage run"
    log "$pair/$label: outage run, $OUT_RATE exchanges/s for ${secs}s, kill -9 of server A at ${OUT_KILL_AT}s"
    local t0 tk rc alive=true
    t0=$(date +%s%N)
    ip netns exec "$NS_C" timeout -k 2 $((phase + 30)) "${cmd[@]}" >"$out" 2>"$err" &
    GEN_PID=$!
    sleep "$OUT_KILL_AT"
    kill -0 "$SRV_A_PID" 2>/dev/null || alive=false
    kill -KILL "$SRV_A_PID" 2>/dev/null
    tk=$(date +%s%N)
    wait "$SRV_A_PID" 2>/dev/null
    SRV_A_PID=""
    wait "$GEN_PID"; rc=$?
    GEN_PID=""
    # What server B did: Kea logs its HA transitions (the takeover is the one to PARTNER-DOWN,
    # timed here from the kill); Tandem reports its state over the control socket.
    local after="" takeover_ms=null line
    case "$pair" in
        kea*)
            line=$(grep -h 'HA_STATE_TRANSITION.* to PARTNER-DOWN state' "$dir/b/ha.log" 2>/dev/null | head -1)
            if [ -n "$line" ]; then
                after=$(cut -d' ' -f2,7- <<<"$line" | cut -c1-160)
                takeover_ms=$(awk -v t="$(cut -d' ' -f1,2 <<<"$line")" -v k="$tk" 'BEGIN {
                    split(t, a, " "); split(a[1], d, "-"); split(a[2], h, ":")
                    s = mktime(d[1] " " d[2] " " d[3] " " h[1] " " h[2] " 0") + h[3]
                    printf "%.0f", (s - k / 1e9) * 1000 }')
            else
                after="no transition to PARTNER-DOWN logged by server B; last: $(grep -h HA_STATE_TRANSITION "$dir/b/ha.log" 2>/dev/null | tail -1 | cut -d' ' -f2,7- | cut -c1-160)"
            fi
            ;;
        tandem*) after=$(tandem_status "$dir/b/data" | grep -E '^(state|partner_state|link|last_contact):') ;;
    esac
    local json; json=$(jq -c . "$out" 2>/dev/null | tail -1)
    [ -n "$json" ] || json='{}'
    jq -c -n --argjson g "$json" --arg pair "$pair" --arg lab "$label" --argjson rate "$OUT_RATE" \
        --argjson secs "$secs" --argjson clients "$clients" --argjson rc "$rc" \
        --argjson kill_ms "$(( (tk - t0) / 1000000 ))" --argjson alive "$alive" --arg after "$after" \
        --arg cmd "${cmd[*]}" --argjson tmo "$OUT_TIMEOUT_MS" --argjson retries "$OUT_RETRIES" \
        --argjson takeover "$takeover_ms" '
        ($g.phases[0] // {}) as $p
        | {pair: $pair, label: $lab, rate: $rate, send_secs: $secs, clients: $clients,
           timeout_ms: $tmo, max_retries: $retries, gen_rc: $rc,
           server_a_alive_at_kill: $alive, kill_at_ms: $kill_ms,
           started: ($p.started // 0), ok: ($p.ok // 0), timeouts: ($p.timeouts // 0),
           retransmits: ($p.retransmits // 0), naks: (($p.naks_by_status // {}) | add // 0),
           duplicate_replies: ($p.duplicate_replies // 0), failed_pct: ($p.failed_pct // null),
           violations: ($g.violations // null), violation_examples: (($g.violation_examples // [])[:3]),
           max_reply_gap_ms: ($p.max_reply_gap_ms // null),
           max_reply_gap_start_ms: ($p.max_reply_gap_start_ms // null),
           max_reply_gap_open: $p.max_reply_gap_open,
           reply_gaps: ($p.reply_gaps // []),
           # The outage: the longest gap that began within 1 s of the kill (kill_at_ms counts from
           # the launch of tandem-gen, a few ms before its phase starts). If none of the listed
           # (longest) gaps did, it was shorter than all of them: outage_gap_max_ms bounds it.
           outage_gap: ((($p.reply_gaps // []) | map(select(.start_ms >= $kill_ms - 1000 and .start_ms <= $kill_ms + 1000)) | first) // null),
           outage_gap_max_ms: (if (($p.reply_gaps // []) | map(select(.start_ms >= $kill_ms - 1000 and .start_ms <= $kill_ms + 1000)) | length) == 0
                               then (($p.reply_gaps // []) | last | .ms) else null end),
           latency_ms: ($p.latency_ms // null), server_b_after: $after,
           server_b_takeover_after_kill_ms: $takeover, command: $cmd}' >"$dir/outage-$label.json"
    log "  $(jq -r '"\(.pair)/\(.label): reply gap after the kill \(if .outage_gap != null then "\(.outage_gap.ms) ms from \(.outage_gap.start_ms) ms\(if .outage_gap.open then ", NOT ended by a reply: no takeover within the run" else "" end)" else "<= \(.outage_gap_max_ms) ms (not among the longest gaps)" end) (kill at \(.kill_at_ms) ms); longest gap of the run \(.max_reply_gap_ms) ms from \(.max_reply_gap_start_ms) ms; ok \(.ok)/\(.started), timeouts \(.timeouts), violations \(.violations)"' "$dir/outage-$label.json")"
}

# ---------------------------------------------------------------- run

pair_topology_up
log "work dir $WORK; topology $NS_A/$NS_B/$NS_C on bridge $BRIDGE in $NS_X"

KEA_JSON='{"status": "not run"}'
if [ "$RUN_KEA" = 1 ]; then
    d="$WORK/kea-defaults"
    kea_pair_start '{}' "$d"
    ready_defaults=$PAIR_READY_S
    search kea "$d"
    sleep 1
    outage kea defaults "$d" "$DEFAULTS_SECS"
    pair_stop
    d2="$WORK/kea-tuned"
    kea_pair_start "$KEA_TUNED" "$d2"
    ready_tuned=$PAIR_READY_S
    outage kea tuned "$d2" "$OUT_SECS"
    pair_stop
    KEA_JSON=$(jq -n -c --slurpfile s "$d/search.json" --slurpfile od "$d/outage-defaults.json" \
        --slurpfile ot "$d2/outage-tuned.json" --argjson tuned "$KEA_TUNED" \
        --argjson rd "$ready_defaults" --argjson rt "$ready_tuned" --argjson q "$KEA_MT_QUEUE" '
        {status: "ok", setup: {mode: "hot-standby (server1 primary in tdmpa, server2 standby in tdmpb)",
           lease_updates: "send-lease-updates true, sync-leases true", lease_db: "memfile, persist true, no fsync",
           transport: "HA over the hook'"'"'s dedicated HTTP listener (http-dedicated-listener, Kea multi-threading on: thread-pool-size 2, packet-queue-size \($q)); no kea-ctrl-agent",
           ha_defaults: "heartbeat-delay 10000, max-response-delay 60000, max-ack-delay 10000, max-unacked-clients 10 (Kea 2.2 defaults)",
           ha_tuned: $tuned, ready_s: {defaults: $rd, tuned: $rt}},
         throughput: $s[0], outage: {defaults: $od[0], tuned: $ot[0]}}')
fi

TANDEM_JSON='{"status": "not run"}'
TANDEM_ERR=""
if [ "$RUN_TANDEM" = 1 ]; then
    d="$WORK/tandem"
    if tandem_pair_start "$d"; then
        search tandem "$d"
        sleep 1
        outage tandem kill-primary "$d" "$OUT_SECS"
        tandem_pair_stop
        TANDEM_JSON=$(jq -n -c --slurpfile s "$d/search.json" --slurpfile o "$d/outage-kill-primary.json" \
            --argjson r "$PAIR_READY_S" --argjson m "$TANDEM_MCLT" --arg rev "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)" '
            {status: "ok", setup: {mode: "RFC 8156 failover pair (primary in tdmpa, secondary in tdmpb), partner link over TLS",
               mclt_secs: $m, fsync: "on (default)", ready_s: $r, git: $rev},
             throughput: $s[0], outage: {kill_primary: $o[0]}}')
    else
        tandem_pair_stop
        log "error: Tandem pair: $TANDEM_ERR"
        TANDEM_JSON=$(jq -n -c --arg e "$TANDEM_ERR" '{status: "failed", error: $e}')
    fi
fi

T_END=$(date +%s)
ELAPSED=$((T_END - T_START))

# ---------------------------------------------------------------- report

KEA_VERSION="$(kea-dhcp6 -v 2>/dev/null | head -1)"
GIT_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)"
CPU_MODEL="$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"

RESULT_JSON=$(jq -n -c --arg date "$RUN_DATE" --arg cmd "$CMDLINE" --argjson elapsed "$ELAPSED" \
    --arg cpu "$CPU_MODEL" --argjson ncpu "$(nproc)" --arg kernel "$(uname -r)" --arg load "$LOADAVG_START" \
    --arg kea "$KEA_VERSION" --arg rev "$GIT_REV" --argjson dirty "$GIT_DIRTY" \
    --argjson kea_r "$KEA_JSON" --argjson tandem_r "$TANDEM_JSON" --slurpfile trials "$TRIALS_FILE" \
    --slurpfile quiet "$QUIET_FILE" \
    --argjson period "$PERIOD" --argjson start "$START_RATE" --argjson max "$MAX_RATE" --argjson bisect "$BISECT" \
    --argjson threads "$THREADS" --argjson window "$WINDOW" --argjson tmo "$TIMEOUT_MS" --argjson retries "$MAX_RETRIES" \
    --argjson orate "$OUT_RATE" --argjson osecs "$OUT_SECS" --argjson okill "$OUT_KILL_AT" --argjson otmo "$OUT_TIMEOUT_MS" \
    --argjson oret "$OUT_RETRIES" --argjson owin "$OUT_WINDOW" --argjson dsecs "$DEFAULTS_SECS" --argjson quick "$QUICK" '
    def ratio(a; b): (if (a // 0) > 0 and (b // 0) > 0 then ((a / b * 100 | round) / 100) else null end);
    def ratio4(a; b): (if (a // 0) > 0 and (b // 0) > 0 then ((a / b * 10000 | round) / 10000) else null end);
    def gap(o): (o.outage_gap.ms // o.outage_gap_max_ms // null);
    def gap_bounded(o): ((o.outage_gap.open // false) or (o.outage_gap == null and o.outage_gap_max_ms != null));
    {date: $date, command: $cmd, elapsed_s: $elapsed, quick: ($quick == 1),
     environment: {cpu: $cpu, cpus: $ncpu, kernel: $kernel, loadavg_at_start: $load, kea: $kea,
                   tandem_git: $rev, tandem_tree_dirty: $dirty},
     topology: "netns tdmpa (A, 2001:db8:1::a), tdmpb (B, ::b), tdmpc (tandem-gen, ::c) on a bridge in tdmpx; tandem-gen relays (Relay-forw, link-address 2001:db8:1::c) every message to both [A]:547 and [B]:547",
     method: {throughput: {trial_send_s: $period, grid_start: $start, max_rate: $max, bisect_steps: $bisect,
                           threads: $threads, window: $window, timeout_ms: $tmo, max_retries: $retries,
                           exchange: "4-way SOLICIT/ADVERTISE/REQUEST/REPLY, IA_NA, fresh clients per trial",
                           pass: "fewer than 1% of the clients lack their lease when the trial ends, retransmitted messages < 1% of the clients, failed_pct < 1, no lease-check violation"},
              outage: {rate: $orate, send_secs: $osecs, kea_defaults_send_secs: $dsecs, kill_at_s: $okill,
                       timeout_ms: $otmo, max_retries: $oret, window_per_thread: $owin,
                       measure: "reply gap: an interval with exchanges outstanding and none completing, over all clients (1 ms resolution); outage_gap = the longest gap that began within 1 s of the kill (tandem-gen lists the 10 longest of the run); open = no completion ended it (no takeover within the run), then it is a lower bound; max_reply_gap_ms = the longest gap of the whole run, wherever it was"}},
     kea: $kea_r, tandem: $tandem_r,
     ratios: {throughput_tandem_over_kea: ratio($tandem_r.throughput.sustained_rate; $kea_r.throughput.sustained_rate),
              outage_tandem_over_kea_defaults: ratio4(gap($tandem_r.outage.kill_primary); gap($kea_r.outage.defaults)),
              outage_kea_defaults_over_tandem: ratio(gap($kea_r.outage.defaults); gap($tandem_r.outage.kill_primary)),
              outage_tandem_over_kea_defaults_is_upper_bound: (gap_bounded($kea_r.outage.defaults // {}) or gap_bounded($tandem_r.outage.kill_primary // {})),
              outage_tandem_over_kea_tuned: ratio4(gap($tandem_r.outage.kill_primary); gap($kea_r.outage.tuned)),
              outage_kea_tuned_over_tandem: ratio(gap($kea_r.outage.tuned); gap($tandem_r.outage.kill_primary)),
              outage_tandem_over_kea_tuned_is_upper_bound: (gap_bounded($kea_r.outage.tuned // {}) or gap_bounded($tandem_r.outage.kill_primary // {}))},
     box_before_measurements: $quiet,
     trials: $trials}') || die "cannot assemble results"

# gap_text JSON_PATH: the outage gap of an outage run: "1234 ms", ">= 5000 ms (...)" when no
# reply ended it, "<= 12 ms (...)" when it was shorter than every listed gap, or "-".
gap_text() {
    jq -r "$1"' as $o | if $o == null then "-"
        elif $o.outage_gap != null then
            (if $o.outage_gap.open then ">= \($o.outage_gap.ms) ms (no reply again within the run)"
             else "\($o.outage_gap.ms) ms" end)
        elif $o.outage_gap_max_ms != null then "<= \($o.outage_gap_max_ms) ms (shorter than the \($o.reply_gaps | length) longest gaps of the run)"
        else "-" end' <<<"$RESULT_JSON"
}

fmt_text() {
    echo "Tandem pair vs Kea HA pair, tandem-gen relaying to both servers, $(nproc) CPUs, run took ${ELAPSED}s"
    echo
    printf '%-8s %-10s %12s %10s %8s %8s %7s %7s %7s  %s\n' pair status sustained/s achieved p50_ms p99_ms cpuA cpuB gen note
    jq -r '[["kea", .kea], ["tandem", .tandem]][] | . as [$n, $r]
        | [$n, ($r.status | split(":")[0]), ($r.throughput.sustained_rate // "-"), ($r.throughput.achieved_per_s // "-"),
           ($r.throughput.p50_ms // "-"), ($r.throughput.p99_ms // "-"), (($r.throughput.server_a_cpu_pct // "-") | tostring) + "%",
           (($r.throughput.server_b_cpu_pct // "-") | tostring) + "%", (($r.throughput.gen_cpu_pct // "-") | tostring) + "%",
           ($r.throughput.note // $r.error // "")] | @tsv' <<<"$RESULT_JSON" |
        awk -F'\t' '{printf "%-8s %-10s %12s %10s %8s %8s %7s %7s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
    echo
    echo "Outage after kill -9 of server A at ${OUT_KILL_AT}s, $OUT_RATE exchanges/s (reply gap that began at the kill):"
    echo "  kea, HA defaults:  $(gap_text .kea.outage.defaults)"
    echo "  kea, HA tuned:     $(gap_text .kea.outage.tuned)"
    echo "  tandem:            $(gap_text .tandem.outage.kill_primary)"
    echo
    jq -r '.ratios | "ratios: throughput tandem/kea = \(.throughput_tandem_over_kea // "n/a"); outage tandem/kea-defaults = \(.outage_tandem_over_kea_defaults // "n/a")\(if .outage_tandem_over_kea_defaults_is_upper_bound then " (bound)" else "" end) (kea-defaults/tandem = \(.outage_kea_defaults_over_tandem // "n/a")), tandem/kea-tuned = \(.outage_tandem_over_kea_tuned // "n/a")\(if .outage_tandem_over_kea_tuned_is_upper_bound then " (bound)" else "" end) (kea-tuned/tandem = \(.outage_kea_tuned_over_tandem // "n/a"))"' <<<"$RESULT_JSON"
}

fmt_md() {
    echo "# Tandem failover pair vs Kea HA pair (tandem-gen)"
    echo
    echo "- date: $RUN_DATE (run took ${ELAPSED}s)"
    echo "- command: \`$CMDLINE\`"
    echo "- box: $(nproc) x $CPU_MODEL, kernel $(uname -r), load average at start $LOADAVG_START; kea-dhcp6 $KEA_VERSION; Tandem $GIT_REV$([ "$GIT_DIRTY" = true ] && echo ' (dirty tree)')"
    echo "- topology: netns tdmpa (server A, 2001:db8:1::a), tdmpb (server B, ::b) and tdmpc (tandem-gen, ::c) on a bridge in tdmpx. tandem-gen acts as a relay agent configured with both servers: every message goes as Relay-forw (link-address 2001:db8:1::c) to [A]:547 and to [B]:547; the first usable answer counts, the other copy is counted as a duplicate."
    echo "- Kea: $(jq -r '.kea.setup | if . == null then "not run" else "\(.mode); \(.lease_updates); \(.lease_db); \(.transport); defaults: \(.ha_defaults); tuned: \(.ha_tuned | to_entries | map("\(.key) \(.value)") | join(", "))" end' <<<"$RESULT_JSON")"
    echo "- Tandem: $(jq -r '.tandem | if .setup == null then .status + (if .error then ": " + .error else "" end) else "\(.setup.mode); mclt \(.setup.mclt_secs) s; fsync \(.setup.fsync)" end' <<<"$RESULT_JSON")"
    echo "- box CPU (of $(( $(nproc) * 100 ))%) in the 2 s before each measurement, waited for below $QUIET_PCT % (at most ${QUIET_WAIT_S}s; the box is shared): $(jq -r '[.box_before_measurements[] | "\(.before) \(.box_cpu_pct)%\(if .waited_s > 2 then " (waited \(.waited_s)s)" else "" end)"] | join(", ")' <<<"$RESULT_JSON")"
    echo "- sustained rate: tandem-gen --mode na --threads $THREADS --window $WINDOW --timeout-ms $TIMEOUT_MS --max-retries $MAX_RETRIES, ${PERIOD}s trials with fresh clients, grid $START_RATE x 2^k up to $MAX_RATE/s, $BISECT bisection steps; a rate passes when fewer than 1 % of the clients lack their lease at the end of the trial, retransmissions < 1 % of the clients, and no lease-check violation (the rule of gen-vs-kea.sh)."
    echo "- outage: tandem-gen at $OUT_RATE exchanges/s (--timeout-ms $OUT_TIMEOUT_MS --max-retries $OUT_RETRIES --window $OUT_WINDOW) for ${OUT_SECS}s (Kea defaults: ${DEFAULTS_SECS}s) plus 2 s to drain, kill -9 of server A ${OUT_KILL_AT}s in. A reply gap is an interval in which exchanges were outstanding and none completed, over all clients (1 ms resolution); the outage is the longest gap that began within 1 s of the kill ('>=': no reply ended it, the surviving server had not taken over when the run ended; '<=': shorter than the 10 longest gaps tandem-gen lists). The longest gap of the whole run is shown too."
    echo
    echo "## Sustained 4-way IA_NA exchanges/s"
    echo
    echo "| pair | sustained exch/s | achieved exch/s | p50 ms | p99 ms | CPU A % | CPU B % | gen CPU % | box CPU % | limited by (lowest failing rate) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    jq -r '[["Kea HA hot-standby", .kea], ["Tandem failover", .tandem]][] | . as [$n, $r]
        | if $r.throughput == null then "| \($n) | \($r.status) | | | | | | | | \($r.error // "") |"
          else "| \($n) | \($r.throughput.sustained_rate) | \($r.throughput.achieved_per_s // "-") | \($r.throughput.p50_ms // "-") | \($r.throughput.p99_ms // "-") | \($r.throughput.server_a_cpu_pct // "-") | \($r.throughput.server_b_cpu_pct // "-") | \($r.throughput.gen_cpu_pct // "-") | \($r.throughput.box_cpu_pct // "-") | \($r.throughput.note) |" end' <<<"$RESULT_JSON"
    echo
    echo "## Client-visible outage after kill -9 of server A"
    echo
    echo "| pair | outage (reply gap after the kill) | gap began at (ms) | kill at (ms) | longest gap of the run (at ms) | ok / started | timeouts | retransmits | duplicates | violations | server B afterwards |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local row
    for row in "Kea, HA defaults|.kea.outage.defaults" "Kea, HA tuned|.kea.outage.tuned" "Tandem|.tandem.outage.kill_primary"; do
        jq -r --arg n "${row%%|*}" --arg g "$(gap_text "${row#*|}")" "${row#*|}"' as $o
            | if $o == null then "| \($n) | not run | | | | | | | | | |"
              else "| \($n) | \($g) | \($o.outage_gap.start_ms // "-") | \($o.kill_at_ms) | \($o.max_reply_gap_ms) (\($o.max_reply_gap_start_ms)\(if $o.max_reply_gap_open then ", open" else "" end)) | \($o.ok) / \($o.started) | \($o.timeouts) | \($o.retransmits) | \($o.duplicate_replies) | \($o.violations) | \(if $o.server_b_takeover_after_kill_ms != null then "PARTNER-DOWN \($o.server_b_takeover_after_kill_ms) ms after the kill: " else "" end)\($o.server_b_after | gsub("\n"; "<br>") | gsub("\\|"; "/")) |" end' <<<"$RESULT_JSON"
    done
    echo
    jq -r '.ratios | "Ratios (Tandem/Kea): throughput **\(.throughput_tandem_over_kea // "n/a")**; outage vs Kea defaults **\(.outage_tandem_over_kea_defaults // "n/a")**\(if .outage_tandem_over_kea_defaults_is_upper_bound then " (a bound: one of the gaps was a lower or upper bound)" else "" end) (Kea/Tandem \(.outage_kea_defaults_over_tandem // "n/a")), vs Kea tuned **\(.outage_tandem_over_kea_tuned // "n/a")**\(if .outage_tandem_over_kea_tuned_is_upper_bound then " (a bound)" else "" end) (Kea/Tandem \(.outage_kea_tuned_over_tandem // "n/a")). Lower outage ratios are better for Tandem."' <<<"$RESULT_JSON"
    echo
    echo "Why Kea's defaults take so long: the standby declares its partner down only when max-response-delay (60 s) has passed since its last answered heartbeat (sent every heartbeat-delay, 10 s, so the takeover comes 50-60 s after the kill), and then only once more than max-unacked-clients (10) clients have retried with an Elapsed Time above max-ack-delay (10 s). The tuned run sets max-unacked-clients 0, which skips that check: partner-down follows max-response-delay (3 s, heartbeats every 1 s) directly."
}

echo
fmt_text

if [ "$WRITE_RESULTS" = 1 ]; then
    mkdir -p "$RESULTS_DIR"
    jq . <<<"$RESULT_JSON" >"$RESULTS_DIR/pair-latest.json"
    fmt_md >"$RESULTS_DIR/pair-latest.md"
    log "wrote $RESULTS_DIR/pair-latest.json and $RESULTS_DIR/pair-latest.md"
fi

if [ "$RUN_TANDEM" = 1 ] && [ -n "$TANDEM_ERR" ]; then
    log "the Tandem part failed: $TANDEM_ERR"
    exit 1
fi
exit 0
