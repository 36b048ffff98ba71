#!/usr/bin/env bash
# bulk-leasequery.sh: how fast a BNG that lost its routes gets them back from Tandem with
# Bulk Leasequery (RFC 5460) over TCP.
#
# tandem-gen, as an access relay adding a Remote-ID per line (--line-remote-ids), gives
# --clients CPEs an address and a /56 each (Rapid Commit). A requestor (Python, in this
# script) then asks, on one connection: every binding of the access link (QUERY_BY_LINK_ADDRESS)
# and one line's bindings (QUERY_BY_REMOTE_ID). Prints, for each, the messages and bindings
# read, the wall time until the LEASEQUERY-DONE, and the server's CPU time for the query.
# Kea 2.2 in Debian has no Bulk Leasequery (ISC's lease_query hook is a paid one), so there is
# no side-by-side here.
#
# Usage: bench/bulk-leasequery.sh [--clients N]   (default 100000; loopback, no root)

set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
CLIENTS=100000
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 1000000 ] || die "--clients must be 1..1000000"
ensure_tools jq:jq python3:python3
(cd "$REPO" && cargo build --release --quiet --bin tandem --bin tandem-gen) || die "cannot build"
TANDEM_BIN="$REPO/target/release/tandem"
GEN_BIN="$REPO/target/release/tandem-gen"

WORK="$(mktemp -d /tmp/tdm-blq.XXXXXX)"
SERVER_PID=""
cleanup() { stop_pid "$SERVER_PID"; rm -rf "$WORK"; }
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
lq_port=$((port + 1))
cat >"$WORK/t.toml" <<T
[server]
data_dir = "$WORK/data"
listen = ["[::1]:$port"]
rapid_commit = true
sync = false
log_level = "warn"
[leasequery]
requestors = ["::1"]
bulk_listen = ["[::1]:$lq_port"]
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ prefix = "2001:db8:1::/64" }]
pd_pools = [{ prefix = "2001:db8:8000::/33", delegated_len = 56 }]
T
"$TANDEM_BIN" serve --config "$WORK/t.toml" 2>"$WORK/server.log" &
SERVER_PID=$!
sleep 1
kill -0 "$SERVER_PID" 2>/dev/null || die "tandem did not start: $(tail -3 "$WORK/server.log")"

log "granting $CLIENTS CPEs an address and a /56 through the relay"
out="$(timeout $((CLIENTS / 2000 + 120)) "$GEN_BIN" --server "[::1]:$port" --relay-link 2001:db8:1:: \
    --line-remote-ids --clients "$CLIENTS" --rate 20000 --mode both --rapid-commit --json 2>/dev/null)"
ok="$(jq '.phases[0].ok' <<<"$out" 2>/dev/null)"
[ -n "$ok" ] && [ "$ok" -gt 0 ] || die "the load failed: $(tail -3 "$WORK/server.log")"
log "$ok clients served"

TCK="$(getconf CLK_TCK)"
ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }

# query NAME TYPE LINK [OPTION_HEX]: one query on a fresh connection; prints one result line.
query() {
    local name="$1" t0 t1
    t0="$(ticks)"
    python3 - "$lq_port" "$2" "$3" "${4:-}" <<'PY' | sed "s/^/$name: /"
import socket, struct, sys, time, ipaddress
port, qtype, link, opt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
q = bytes([qtype]) + ipaddress.IPv6Address(link).packed + opt
msg = bytes([14, 0, 0, 42]) + struct.pack("!HH", 1, 5) + bytes([0, 4, 7, 7, 7]) \
    + struct.pack("!HH", 44, len(q)) + q
s = socket.create_connection(("::1", port))
f = s.makefile("rb", buffering=1 << 20)
start = time.monotonic()
s.sendall(struct.pack("!H", len(msg)) + msg)
messages = clients = bindings = 0
while True:
    n = struct.unpack("!H", f.read(2))[0]
    m = f.read(n)
    messages += 1
    i = 4
    while i + 4 <= len(m):
        code, ln = struct.unpack("!HH", m[i:i + 4])
        if code == 45:  # Client Data: count its IA Address / IA Prefix options
            clients += 1
            j = i + 4
            while j + 4 <= i + 4 + ln:
                c2, l2 = struct.unpack("!HH", m[j:j + 4])
                bindings += c2 in (5, 26)
                j += 4 + l2
        i += 4 + ln
    if m[0] == 16 or (m[0] == 15 and clients == 0):
        break
secs = time.monotonic() - start
print(f"{messages} messages, {clients} clients, {bindings} bindings in {secs * 1000:.0f} ms "
      f"({bindings / secs if secs > 0 else 0:,.0f} bindings/s)")
PY
    t1="$(ticks)"
    awk -v t="$((t1 - t0))" -v hz="$TCK" -v n="$1" 'BEGIN { printf "%s: server CPU %.0f ms\n", n, t * 1000 / hz }'
}

# Remote-ID of line 7: enterprise 9, "line-7".
rid="0025000a00000009$(printf 'line-7' | od -An -tx1 | tr -d ' \n')"
query "by link address" 4 2001:db8:1::
query "by remote-id (one line)" 5 :: "$rid"
