#!/usr/bin/env bash
# failover-resync.sh: how long a Tandem server that lost its store takes to pull every binding
# back from its partner (RFC 8156 RECOVER: UPDREQALL, streamed BNDUPDs, UPDDONE).
#
# A pair (primary A, secondary B, mutual TLS, fsync on) runs in netns tdmrs on loopback.
# tandem-gen, as a relay agent, fills A with N leases (default 1,000,000) with Rapid Commit;
# B receives them all by lazy updates. Then B is killed (-9), its store deleted, and it is
# started again. Measured: from B's start to its partner link up, and from link up to
# RECOVER-WAIT, which B enters when UPDDONE says it holds everything (the MCLT wait that
# follows is a protocol timer, not transfer). B's store is then counted.
#
# Usage: bench/failover-resync.sh [--leases N]
# Writes bench/results/resync-latest.md. Everything it creates is removed on exit.

set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TANDEM_BIN="$REPO/target/release/tandem"
GEN_BIN="$REPO/target/release/tandem-gen"
RESULTS="$REPO/bench/results/resync-latest.md"
NS=tdmrs
LEASES=1000000
MAX_SECS=600          # whole-run bound

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

while [ $# -gt 0 ]; do
    case "$1" in
        --leases) LEASES="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "needs root (network namespace)"
ensure_tools openssl:openssl ip:iproute2

TMP="$(mktemp -d /tmp/tandem-resync.XXXXXX)"
PID_A="" PID_B=""
cleanup() {
    local p
    for p in $PID_A $PID_B; do
        kill -CONT "$p" 2>/dev/null
        kill -TERM "$p" 2>/dev/null
    done
    sleep 0.5
    for p in $PID_A $PID_B; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

log "building (release)"
(cd "$REPO" && cargo build --release --quiet --bin tandem --bin tandem-gen) || die "build failed"

ip netns del "$NS" 2>/dev/null
ip netns add "$NS" || die "ip netns add $NS"
ip -n "$NS" link set lo up

pair_certs "$TMP" || die "certificates"

pair_config "$TMP" a primary 5601 tandem-b resync
pair_config "$TMP" b secondary 5602 tandem-a resync

start() { # name -> PID in PID_<NAME>
    ip netns exec "$NS" "$TANDEM_BIN" serve --config "$TMP/$1.toml" >>"$TMP/$1.log" 2>&1 &
    if [ "$1" = a ]; then PID_A=$!; else PID_B=$!; fi
}
status() { "$TANDEM_BIN" ctl --socket "$TMP/data-$1/control.sock" status 2>/dev/null; }
wait_for() { # name regex secs
    local end=$((SECONDS + $3))
    while [ $SECONDS -lt $end ]; do
        status "$1" | grep -Eq "$2" && return 0
        sleep 0.2
    done
    tail -20 "$TMP/$1.log" >&2
    die "server $1: no '$2' within $3 s"
}

start b; sleep 0.3; start a
wait_for a '^state: NORMAL' 30
wait_for b '^state: NORMAL' 30

log "filling the pair with $LEASES leases"
t0=$SECONDS
timeout -k 2 $((MAX_SECS / 2)) ip netns exec "$NS" "$GEN_BIN" --server "[::1]:5601" --relay-link 2001:db8:1:: \
    --clients "$LEASES" --rate 0 --window 512 --threads 2 --rapid-commit --phase-secs $((MAX_SECS / 2 - 10)) \
    --timeout-ms 2000 --max-retries 6 --seed 5 --max-failed-pct 1 > "$TMP/fill.txt" 2>&1 ||
    { cat "$TMP/fill.txt" >&2; die "fill failed (a lease check, an error, or more than 1 % of the clients without a lease)"; }
fill_secs=$((SECONDS - t0))
grep -E '^acquire ' "$TMP/fill.txt" | tail -1 >&2
wait_for a '^update_backlog: 0$' 120
stored_a=$("$TANDEM_BIN" leases --state active --data-dir "$TMP/data-a" | wc -l)
log "A holds $stored_a active leases (fill took ${fill_secs} s); wiping B"

kill -KILL "$PID_B"; wait "$PID_B" 2>/dev/null; PID_B=""
rm -rf "$TMP/data-b"
: > "$TMP/b.log"
start_ns=$(date +%s%N)
start b
wait_for b '^state: (RECOVER-WAIT|RECOVER-DONE|NORMAL)' 300
end_ns=$(date +%s%N)
up_line=$(grep -m1 'partner link up' "$TMP/b.log" | cut -c1-27)
wait_line=$(grep -m1 -E 'to=(RECOVER-WAIT|RECOVER-DONE|NORMAL)' "$TMP/b.log" | cut -c1-27)
to_ns() { date -d "$1" +%s%N; }
link_ms=$(( ($(to_ns "$up_line") - start_ns) / 1000000 ))
pull_ms=$(( ($(to_ns "$wait_line") - $(to_ns "$up_line")) / 1000000 ))
stored_b=$("$TANDEM_BIN" leases --state active --data-dir "$TMP/data-b" | wc -l)
log "B: link up ${link_ms} ms after start; pulled $stored_b leases in ${pull_ms} ms (poll saw it at $(( (end_ns - start_ns) / 1000000 )) ms)"
[ "$stored_b" -ge "$stored_a" ] || die "B holds $stored_b leases, A $stored_a"

mkdir -p "$(dirname "$RESULTS")"
cat > "$RESULTS" <<EOF
# Resync of a wiped partner ($(date -u +%Y-%m-%dT%H:%MZ))

\`bench/failover-resync.sh --leases $LEASES\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')).
Pair on loopback in one namespace, mutual TLS, fsync on, default window (failover.max_unacked 4096).

| | |
|---|---|
| leases held by the survivor (A) | $stored_a |
| leases in the wiped server (B) after RECOVER | $stored_b |
| B start → partner link up | ${link_ms} ms |
| link up → everything pulled (RECOVER-WAIT) | ${pull_ms} ms |
| fill (tandem-gen, Rapid Commit, through A) | ${fill_secs} s |
EOF
cat "$RESULTS"
