#!/usr/bin/env bash
# split-brain.sh: how long a Tandem pair takes to heal a split brain (RFC 8156 §8.3.2).
#
# A pair (primary A, secondary B, mutual TLS, fsync on) runs in netns tdmsb on loopback. The
# partner link is cut with nftables (the clients' traffic is not), both servers go
# COMMUNICATIONS-INTERRUPTED, and the operator declares PARTNER-DOWN on both: the split brain.
# tandem-gen, as a relay agent, then gives N new clients (default 100,000) leases through A only
# and N others through B only (Rapid Commit, addresses). The link is restored. Measured: from
# the heal to both servers in NORMAL (POTENTIAL-CONFLICT, the primary's UPDREQ answered,
# CONFLICT-DONE, the secondary's answered), and each server's active leases after (2N on both).
#
# Usage: bench/split-brain.sh [--leases N]
# Writes bench/results/split-brain-latest.md. Everything it creates is removed on exit.

set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TANDEM_BIN="$REPO/target/release/tandem"
GEN_BIN="$REPO/target/release/tandem-gen"
RESULTS="$REPO/bench/results/split-brain-latest.md"
NS=tdmsb
LEASES=100000
MAX_SECS=600          # whole-run bound

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --leases) LEASES="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$LEASES" -ge 1 ] && [ "$LEASES" -le 1000000 ] || die "--leases must be 1..1000000"

[ "$(id -u)" = 0 ] || die "needs root (network namespace, nftables)"
ensure_tools openssl:openssl ip:iproute2 nft:nftables

TMP="$(mktemp -d /tmp/tandem-splitbrain.XXXXXX)"
PID_A="" PID_B="" BOUND_PID=""
cleanup() {
    local p
    for p in $PID_A $PID_B; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in $PID_A $PID_B; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -n "$BOUND_PID" ] && kill "$BOUND_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
# The whole-run bound: a watcher that ends the run after MAX_SECS, and ends itself within a
# second once the run is over.
(
    for ((i = 0; i < MAX_SECS; i++)); do sleep 1; kill -0 $$ 2>/dev/null || exit 0; done
    echo "split-brain.sh: the $MAX_SECS s bound was reached" >&2
    kill -TERM $$
) &
BOUND_PID=$!

log "building (release)"
(cd "$REPO" && cargo build --release --quiet --bin tandem --bin tandem-gen) || die "build failed"

ip netns del "$NS" 2>/dev/null
ip netns add "$NS" || die "ip netns add $NS"
ip -n "$NS" link set lo up

pair_certs "$TMP" || die "certificates"

pair_config "$TMP" a primary 5601 tandem-b splitbrain
pair_config "$TMP" b secondary 5602 tandem-a splitbrain

start() { # name -> PID in PID_<NAME>
    ip netns exec "$NS" "$TANDEM_BIN" serve --config "$TMP/$1.toml" >>"$TMP/$1.log" 2>&1 &
    if [ "$1" = a ]; then PID_A=$!; else PID_B=$!; fi
}
ctl() { "$TANDEM_BIN" ctl --socket "$TMP/data-$1/control.sock" "$2" 2>/dev/null; }
wait_for() { # name regex secs
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        ctl "$1" status | grep -Eq "$2" && return 0
        sleep 0.05
    done
    tail -20 "$TMP/$1.log" >&2
    die "server $1: no '$2' within $3 s"
}
fill() { # port seed
    timeout -k 2 $((MAX_SECS / 3)) ip netns exec "$NS" "$GEN_BIN" --server "[::1]:$1" --relay-link 2001:db8:1:: \
        --clients "$LEASES" --rate 0 --window 512 --threads 2 --rapid-commit --phase-secs $((MAX_SECS / 3 - 10)) \
        --timeout-ms 2000 --max-retries 6 --seed "$2" --max-failed-pct 1 > "$TMP/fill-$1.txt" 2>&1 ||
        { cat "$TMP/fill-$1.txt" >&2; die "fill through port $1 failed"; }
}
active() { "$TANDEM_BIN" leases --state active --data-dir "$TMP/data-$1" | wc -l; }
nft_ns() { ip netns exec "$NS" nft "$@" || die "nft $*"; }

start b; sleep 0.3; start a
wait_for a '^state: NORMAL' 30
wait_for b '^state: NORMAL' 30

log "cutting the partner link; PARTNER-DOWN on both"
nft_ns add table inet tdmcut
nft_ns add chain inet tdmcut out '{ type filter hook output priority 0 ; }'
nft_ns add rule inet tdmcut out tcp dport 6470 drop
nft_ns add rule inet tdmcut out tcp sport 6470 drop
wait_for a '^state: COMMUNICATIONS-INTERRUPTED' 20
wait_for b '^state: COMMUNICATIONS-INTERRUPTED' 20
ctl a partner-down >/dev/null || die "partner-down refused by A"
ctl b partner-down >/dev/null || die "partner-down refused by B"
wait_for a '^state: PARTNER-DOWN' 5
wait_for b '^state: PARTNER-DOWN' 5

log "$LEASES clients through A, $LEASES others through B"
t0=$SECONDS
fill 5601 5
fill 5602 6
fill_secs=$((SECONDS - t0))
before_a=$(active a); before_b=$(active b)
log "A holds $before_a, B $before_b active leases (fills took ${fill_secs} s); healing"

heal_ns=$(date +%s%N)
nft_ns delete table inet tdmcut
wait_for a '^state: NORMAL' 300
wait_for b '^state: NORMAL' 300
normal_ms=$(( ($(date +%s%N) - heal_ns) / 1000000 ))
wait_for a '^update_backlog: 0$' 120
wait_for b '^update_backlog: 0$' 120
after_a=$(active a); after_b=$(active b)
states_a=$(grep -o 'to=[A-Z-]*' "$TMP/a.log" | sed 's/to=//' | tr '\n' ' ')
states_b=$(grep -o 'to=[A-Z-]*' "$TMP/b.log" | sed 's/to=//' | tr '\n' ' ')
log "both NORMAL ${normal_ms} ms after the heal; A holds $after_a, B $after_b active leases"
[ "$after_a" -ge $((before_a + before_b)) ] && [ "$after_b" -ge $((before_a + before_b)) ] ||
    die "after healing A holds $after_a and B $after_b active leases, expected $((before_a + before_b)) on each"

mkdir -p "$(dirname "$RESULTS")"
cat > "$RESULTS" <<END
# Healing a split brain ($(date -u +%Y-%m-%dT%H:%MZ))

\`bench/split-brain.sh --leases $LEASES\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')).
Pair on loopback in one namespace, mutual TLS, fsync on, default window (failover.max_unacked 4096).
Partner link cut with nftables, operator PARTNER-DOWN on both, clients through each side alone.

| | |
|---|---|
| active leases made by A alone / B alone | $before_a / $before_b |
| heal → both NORMAL | ${normal_ms} ms |
| active leases after, on A / on B | $after_a / $after_b |
| A's states | $states_a |
| B's states | $states_b |
| fills (tandem-gen, Rapid Commit, one side each) | ${fill_secs} s |
END
cat "$RESULTS"
