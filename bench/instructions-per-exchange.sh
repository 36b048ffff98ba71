#!/usr/bin/env bash
# instructions-per-exchange.sh: user-space instructions the server executes per 4-way exchange,
# counted by callgrind, for one or more tandem binaries. Unlike CPU time this count does not
# move with the box's load, so it tells a hot-path change's effect apart from noise on a busy
# machine (kernel work, the UDP datagrams and the fsync, is not counted: that is what
# bench/cpu-per-exchange.sh adds).
#
# Each binary runs `BIN serve` under `valgrind --tool=callgrind` on loopback (a fresh store,
# log level --log-level), twice: with --small and with --large new clients (tandem-gen, 4-way
# exchanges, acquire only, --rate per second). The difference of the two totals over the
# difference of the exchanges is the cost per exchange with start-up and shut-down taken out.
# Prints that, and the functions with the most instructions of their own in the large run.
#
# Usage: bench/instructions-per-exchange.sh [--small N] [--large N] [--rate R]
#                                           [--mode na|pd|both] [--log-level warn|info]
#                                           [--relayed-links N] [--top N] [--keep DIR] BIN [BIN...]
#   --relayed-links N: N more subnets (relayed links, a small pool each) listed before the one
#   served, and tandem-gen acting as a relay agent on the served link: what link selection
#   costs a server with many relayed links (0, the default: no relay, one subnet).
#   --keep DIR: keep each large run's profile as DIR/<binary name>.callgrind (for
#   callgrind_annotate --tree=caller, to see who calls malloc or memcpy).
#   e.g. bench/instructions-per-exchange.sh /tmp/tandem-before target/release/tandem
# Needs no root (it installs valgrind when run as root and it is missing). Everything it
# creates is removed on exit.

set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
GEN_BIN="$REPO/target/release/tandem-gen"
SMALL=1000
LARGE=4000
RATE=400
MODE=both
LOG_LEVEL=warn
TOP=12
KEEP=""
RELAYED_LINKS=0
RELAYED_LINKS_MAX=20000   # each is a subnet the server builds at start
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --small) SMALL="$2"; shift 2 ;;
        --large) LARGE="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --mode) MODE="$2"; shift 2 ;;
        --log-level) LOG_LEVEL="$2"; shift 2 ;;
        --top) TOP="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        --relayed-links) RELAYED_LINKS="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[ ${#BINS[@]} -gt 0 ] || die "give at least one tandem binary"
[ "$SMALL" -ge 1 ] && [ "$LARGE" -gt "$SMALL" ] && [ "$LARGE" -le 100000 ] \
    || die "need 1 <= --small < --large <= 100000"
[ "$RELAYED_LINKS" -ge 0 ] && [ "$RELAYED_LINKS" -le "$RELAYED_LINKS_MAX" ] \
    || die "--relayed-links must be 0..$RELAYED_LINKS_MAX"
[ "$RATE" -ge 1 ] && [ "$RATE" -le 5000 ] || die "--rate must be 1..5000 (callgrind runs the server some 50x slower)"
ensure_tools valgrind:valgrind callgrind_annotate:valgrind jq:jq awk:gawk
[ -x "$GEN_BIN" ] || (cd "$REPO" && cargo build --release --quiet --bin tandem-gen) || die "cannot build tandem-gen"

WORK="$(mktemp -d /tmp/tdm-ir.XXXXXX)"
SERVER_PID=""
cleanup() { stop_pid "$SERVER_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

# one_run BIN CLIENTS OUT: runs the server under callgrind for CLIENTS exchanges; prints
# "<instructions> <exchanges>" and leaves the profile in OUT.
one_run() {
    local bin="$1" clients="$2" prof="$3" port data out ok i
    port=$((20000 + RANDOM % 20000))
    data="$WORK/data.$RANDOM"
    loopback_config "$WORK/t.toml" "$data" "$port" "$LOG_LEVEL" "workers = 1"
    local relay=()
    if [ "$RELAYED_LINKS" -gt 0 ]; then
        # The relayed links go before the served subnet, so finding it means passing them all.
        awk -v n="$RELAYED_LINKS" '/^\[\[subnet\]\]/ && !done {
                for (i = 0; i < n; i++)
                    printf "[[subnet]]\nid = %d\nprefix = \"2001:db8:%x:%x::/64\"\npools = [{ range = \"2001:db8:%x:%x::10-2001:db8:%x:%x::1f\" }]\n", 1000 + i, 0x100 + int(i / 65536), i % 65536, 0x100 + int(i / 65536), i % 65536, 0x100 + int(i / 65536), i % 65536
                done = 1
            } {print}' "$WORK/t.toml" >"$WORK/t2.toml" && mv "$WORK/t2.toml" "$WORK/t.toml"
        relay=(--relay-link 2001:db8:1::1)
    fi
    valgrind --tool=callgrind --callgrind-out-file="$prof" -q \
        "$bin" serve --config "$WORK/t.toml" 2>"$WORK/server.log" &
    SERVER_PID=$!
    # Under callgrind the server takes a few seconds to come up: wait for its socket.
    for i in $(seq 120); do
        ss -Hlun "sport = :$port" 2>/dev/null | grep -q . && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$bin did not start: $(tail -3 "$WORK/server.log")"
        sleep 0.5
    done
    out="$(timeout $((clients / RATE + 120)) "$GEN_BIN" --server "[::1]:$port" --clients "$clients" \
        --rate "$RATE" --mode "$MODE" "${relay[@]}" --phases acquire --json 2>/dev/null)"
    stop_pid "$SERVER_PID"; SERVER_PID=""
    rm -rf "$data"
    ok="$(jq '.phases[0].ok' <<<"$out" 2>/dev/null)"
    [ -n "$ok" ] && [ "$ok" -gt 0 ] || die "no exchange completed against $bin"
    [ -s "$prof" ] || die "callgrind wrote no profile for $bin: $(tail -3 "$WORK/server.log")"
    awk '/^summary:|^totals:/ { print $2; exit }' "$prof" | tr -d '\n'
    echo " $ok"
}

for b in "${BINS[@]}"; do
    [ -x "$b" ] || die "$b is not an executable"
    # Not in a subshell: a die in one_run ends the script, and SERVER_PID stays visible to cleanup.
    one_run "$b" "$SMALL" "$WORK/small.out" >"$WORK/run.out"
    read -r ir1 ok1 <"$WORK/run.out"
    one_run "$b" "$LARGE" "$WORK/large.out" >"$WORK/run.out"
    read -r ir2 ok2 <"$WORK/run.out"
    [ "$ok2" -gt "$ok1" ] || die "$b: the large run completed no more exchanges ($ok2) than the small ($ok1)"
    awk -v a="$ir1" -v b="$ir2" -v x="$ok1" -v y="$ok2" -v bin="$b" -v m="$MODE" -v l="$LOG_LEVEL" -v r="$RELAYED_LINKS" \
        'BEGIN { printf "%-40s %s log=%s relayed-links=%d: %.0f instructions/exchange (%d and %d exchanges; %.0f and %.0f in all)\n", bin, m, l, r, (b - a) / (y - x), x, y, a, b }'
    echo "  most instructions of their own, large run:"
    callgrind_annotate --threshold=100 "$WORK/large.out" 2>/dev/null \
        | awk '/^-+$/ { sep++; next } sep >= 3 && NF { print "   " $0 }' | head -n "$TOP"
    if [ -n "$KEEP" ]; then
        mkdir -p "$KEEP" && cp "$WORK/large.out" "$KEEP/$(basename "$b").callgrind"
    fi
done
