# bench/lib.sh: shell functions shared by the benchmark scripts (sourced, not run).
#
# Used by perfdhcp-vs-kea.sh, gen-vs-kea.sh and pair-vs-kea.sh. The functions read these
# globals, which the sourcing script sets:
#   NS_S, NS_C      server / client network namespace; each holds a veth end of the same name
#                   (names start with "tdm", at most 15 characters); the two-namespace
#                   topology functions only (pair-vs-kea.sh has a topology of its own)
#   ADDR_S, ADDR_C  the global address (with /64) of each veth end
#   KEA_TEMPLATE, TANDEM_TEMPLATE   config templates (render_kea_config, render_tandem_config)
# Nothing here changes anything outside the namespaces and the files it is given.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# stop_pid PID: TERM, wait up to 5 s, then KILL. Only for PIDs the calling script started.
stop_pid() {
    local pid="$1" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# delete_topology: deletes netns NS_S and NS_C (which removes the veth pair) and a veth end of
# either name left in the root namespace. Processes still inside are reported, never killed.
delete_topology() {
    local ns pids l
    for ns in "$NS_S" "$NS_C"; do
        if ip netns list 2>/dev/null | grep -qw "^$ns"; then
            pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
            if [ -n "$pids" ]; then
                log "warning: processes still in netns $ns (not started by this run, left alone): $pids"
            fi
            ip netns del "$ns" 2>/dev/null || log "warning: cannot delete netns $ns"
        fi
    done
    # A veth end left in the root namespace by an interrupted run.
    for l in "$NS_S" "$NS_C"; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l" 2>/dev/null
    done
    return 0
}

# setup_topology: (re)creates NS_S <-> NS_C with a veth pair, DAD off, ADDR_S / ADDR_C, and
# waits for both link-local addresses.
setup_topology() {
    delete_topology
    local ns i
    for ns in "$NS_S" "$NS_C"; do
        ip netns add "$ns" || die "ip netns add $ns"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            || die "sysctl in $ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$NS_S" netns "$NS_S" type veth peer name "$NS_C" netns "$NS_C" || die "ip link add veth"
    ip -n "$NS_S" addr add "$ADDR_S" dev "$NS_S" nodad || die "addr $ADDR_S"
    ip -n "$NS_C" addr add "$ADDR_C" dev "$NS_C" nodad || die "addr $ADDR_C"
    ip -n "$NS_S" link set "$NS_S" up
    ip -n "$NS_C" link set "$NS_C" up
    # Wait for the link-local addresses (perfdhcp -l needs one; Kea needs one to bind).
    for i in $(seq 50); do
        if ip -n "$NS_S" -6 addr show dev "$NS_S" scope link | grep -q fe80 &&
           ip -n "$NS_C" -6 addr show dev "$NS_C" scope link | grep -q fe80; then
            return 0
        fi
        sleep 0.1
    done
    die "link-local addresses did not appear"
}

# check_topology: dies when NS_S or NS_C is gone: something else deleted it during the run
# (tools/test.sh deleted every tdm* netns as leftovers of killed test runs before e7bf008).
check_topology() {
    topology_ok || die "netns $NS_S or $NS_C vanished during the run: something else deleted it; results not written"
}

# topology_ok: whether both namespaces still exist.
topology_ok() {
    local ns
    for ns in "$NS_S" "$NS_C"; do
        [ -e "/run/netns/$ns" ] || [ -e "/var/run/netns/$ns" ] || return 1
    done
    return 0
}

# udp_drops NS: "RcvbufErrors InErrors" of UDPv6 in namespace NS (datagrams the kernel dropped
# because the receiving socket's buffer was full).
udp_drops() {
    ip netns exec "$1" awk '$1 == "Udp6RcvbufErrors" {r = $2} $1 == "Udp6InErrors" {e = $2} END {print r + 0, e + 0}' /proc/net/snmp6 2>/dev/null || echo "0 0"
}

# cpu_sample: "BUSY WALL": CPU time of every process on the box in clock ticks (utime + stime +
# cutime + cstime from /proc/PID/stat, summed over the live processes: a process that exits
# moves its time into its reaper's cutime/cstime, so the difference of two samples is the CPU
# used in between, by everything, other people's processes and kernel threads included) and
# the wall clock in seconds. /proc/stat is not used: with tick-based accounting and NO_HZ idle
# it undercounts processes that run in short bursts, such as these servers.
cpu_sample() {
    local busy
    busy=$(cat /proc/[0-9]*/stat 2>/dev/null |
        awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); t += f[12] + f[13] + f[14] + f[15] } END { print t + 0 }')
    echo "$busy $(date +%s.%N)"
}

# box_cpu_pct "BUSY0 WALL0" "BUSY1 WALL1": CPU busy between two samples, in % of one core
# (200 = both cores of a 2-core box busy).
box_cpu_pct() {
    awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); w = y[2] - x[2]
        printf "%.0f", (w > 0 ? (y[1] - x[1]) / hz / w * 100 : 0) }'
}

# pid_ticks PID: utime+stime of a process (all its threads), in clock ticks (0 if gone).
pid_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# wait_udp_bound NS PORT PID LOG: waits up to 10 s until something in NS listens on UDP PORT;
# dies (printing LOG) if PID exits first or the port never appears.
wait_udp_bound() {
    local ns="$1" port="$2" pid="$3" logf="$4" i
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2; die "process $pid exited at start"; }
        if ip netns exec "$ns" ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then
            sleep 0.3
            return 0
        fi
        sleep 0.1
    done
    cat "$logf" >&2
    die "nothing bound UDP port $port in $ns"
}

# kea_mt_json st|mt: the "multi-threading" object of the Kea config (queue: KEA_MT_QUEUE, 64 if
# unset, which is also Kea's default).
kea_mt_json() {
    if [ "$1" = mt ]; then
        echo "{ \"enable-multi-threading\": true, \"thread-pool-size\": 2, \"packet-queue-size\": ${KEA_MT_QUEUE:-64} }"
    else
        echo '{ "enable-multi-threading": false }'
    fi
}

# render_kea_config st|mt DIR IFACE [UNICAST]: writes DIR/kea-dhcp6.json from KEA_TEMPLATE (lease
# file DIR/kea-leases6.csv, log DIR/kea.log). With UNICAST (an address of IFACE) Kea also
# listens on that address ("IFACE/UNICAST"), as a server behind a relay does.
render_kea_config() {
    local mt="$1" dir="$2" iface="$3" ucast="${4:-}"
    sed -e "s|@IFACE@|$iface|g" -e "s|@DATA_DIR@|$dir|" -e "s|@LEASE_FILE@|$dir/kea-leases6.csv|" \
        -e "s|@LOG_FILE@|$dir/kea.log|" -e "s|@MULTI_THREADING@|$(kea_mt_json "$mt")|" "$KEA_TEMPLATE" \
        >"$dir/kea-dhcp6.json" || die "cannot write $dir/kea-dhcp6.json"
    if [ -n "$ucast" ]; then
        jq --arg i "$iface/$ucast" '.Dhcp6["interfaces-config"].interfaces = [$i]' "$dir/kea-dhcp6.json" \
            >"$dir/kea-dhcp6.json.tmp" && mv "$dir/kea-dhcp6.json.tmp" "$dir/kea-dhcp6.json" \
            || die "cannot edit $dir/kea-dhcp6.json"
    fi
}

# render_tandem_config DIR IFACE: writes DIR/tandem.toml from TANDEM_TEMPLATE, data dir
# DIR/tandem-data.
render_tandem_config() {
    local dir="$1" iface="$2"
    sed -e "s|@DATA_DIR@|$dir/tandem-data|" -e "s|@IFACE@|$iface|" "$TANDEM_TEMPLATE" >"$dir/tandem.toml" \
        || die "cannot write $dir/tandem.toml"
}

# install_cleanup TEARDOWN PID_VAR...: on exit (also on INT/TERM) stop the processes whose PIDs
# the named variables hold when the script exits (in that order; an empty one is skipped), run
# TEARDOWN (a function that deletes the script's namespaces and links, e.g. delete_topology),
# keep the work dir's logs in KEEP_LOGS if set, remove WORK. Exits with the script's status.
CLEANED=0
CLEANUP_TEARDOWN=""
CLEANUP_PID_VARS=""
cleanup() {
    local rc=$? v
    [ "$CLEANED" = 1 ] && return
    CLEANED=1
    trap '' INT TERM
    for v in $CLEANUP_PID_VARS; do
        [ -n "${!v:-}" ] && stop_pid "${!v}"
    done
    [ -n "$CLEANUP_TEARDOWN" ] && "$CLEANUP_TEARDOWN"
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
        if [ -n "${KEEP_LOGS:-}" ]; then
            mkdir -p "$KEEP_LOGS" && cp -r "$WORK"/. "$KEEP_LOGS"/ && log "logs kept in $KEEP_LOGS"
        fi
        rm -rf "$WORK"
    fi
    exit "$rc"
}
install_cleanup() {
    CLEANUP_TEARDOWN="$1"; shift
    CLEANUP_PID_VARS="$*"
    trap cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
}
