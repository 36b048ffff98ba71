# bench/lib.sh: shell functions shared by the benchmark scripts (sourced, not run).
#
# Used by perfdhcp-vs-kea.sh, gen-vs-kea.sh and pair-vs-kea.sh. The functions read these
# globals, which the sourcing script sets:
#   NS_S, NS_C      server / client network namespace; each holds a veth end of the same name
#                   (names start with "tdm", at most 15 characters); the two-namespace
#                   topology functions only (pair-vs-kea.sh has a topology of its own)
#   ADDR_S, ADDR_C  the global address (with /64) of each veth end
#   KEA_TEMPLATE, TANDEM_TEMPLATE   config templates (render_kea_config, render_tandem_config)
#   MIN_RATE, MAX_RATE, BISECT, LOSS_LIMIT, WORK   the rate search (rate_search, search_note)
# Nothing here changes anything outside the namespaces and the files it is given.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ensure_tools CMD:PACKAGE...: installs, with apt-get, the Debian package of every command that
# is missing (idempotent: nothing happens when all are there), so a bench runs on a fresh
# machine. CMD may be an absolute path (a file that must exist, e.g. a Kea hook library).
ensure_tools() {
    local pair cmd pkg need=()
    export PATH="$PATH:/usr/sbin:/sbin"
    for pair in "$@"; do
        cmd="${pair%%:*}"; pkg="${pair#*:}"
        case "$cmd" in
            /*) [ -e "$cmd" ] && continue ;;
            *) command -v "$cmd" >/dev/null 2>&1 && continue ;;
        esac
        case " ${need[*]} " in *" $pkg "*) ;; *) need+=("$pkg") ;; esac
    done
    [ ${#need[@]} -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing ${need[*]}; run as root so this script can install them"
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || die "apt-get install ${need[*]} failed"
}

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
    # VETH_QUEUES (default 1): receive/transmit queues of each end (AF_XDP opens a socket and
    # a worker per receive queue).
    local q="${VETH_QUEUES:-1}"
    ip link add "$NS_S" numtxqueues "$q" numrxqueues "$q" netns "$NS_S" type veth \
        peer name "$NS_C" numtxqueues "$q" numrxqueues "$q" netns "$NS_C" || die "ip link add veth"
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

# steal_ticks: clock ticks the hypervisor gave this (virtual) box's CPUs to other guests, as
# "ALL CPU0 CPU1 ..." (/proc/stat's steal column; 0 on bare metal). Two readings and the wall
# clock between them say how much of a run the host took away (steal_pct): the likeliest cause
# of two runs of one build differing on a shared VM. Per CPU, because a pinned server loses
# only what its own CPU loses.
steal_ticks() {
    awk '$1 ~ /^cpu[0-9]*$/ { printf "%s%d", (n++ ? " " : ""), $9 } END { print "" }' /proc/stat
}

# steal_pct "READING0" "READING1" WALL0 WALL1: steal between two steal_ticks readings, in % of
# one core: the whole box's first, then each CPU's, as "ALL CPU0 CPU1 ...".
steal_pct() {
    awk -v a="$1" -v b="$2" -v w0="$3" -v w1="$4" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); w = w1 - w0
        for (i = 1; i <= n; i++) printf "%s%.1f", (i > 1 ? " " : ""), (w > 0 ? (y[i] - x[i]) / hz / w * 100 : 0)
        print "" }'
}

# napi_threads_on NS DEV CPUS: DEV (in NS) receives in NAPI kernel threads pinned to CPUS. veth
# hands a frame to its peer inside the sender's transmit, and by default the peer's whole
# receive (its XDP program, IPv6, UDP, the socket's wakeup) runs in the sender's softirq and
# is charged to the sender. With GRO on, veth receives through NAPI instead, and a threaded
# NAPI runs in a kernel thread ("napi/DEV-N", one per queue) that can be pinned to the
# receiving side's CPU and counted to it (napi_ticks), as two machines would.
napi_threads_on() {
    local ns="$1" dev="$2" cpus="$3"
    ip netns exec "$ns" ethtool -K "$dev" gro on >/dev/null || die "ethtool -K $dev gro on failed"
    ip netns exec "$ns" sh -c "echo 1 >/sys/class/net/$dev/threaded" || die "threaded NAPI on $dev failed"
    napi_pin "$dev" "$cpus"
    [ -n "$(napi_pids "$dev")" ] || die "no NAPI thread appeared for $dev"
}

# napi_pids DEV: the PIDs of DEV's NAPI kernel threads (none without napi_threads_on).
napi_pids() {
    grep -l "^napi/$1-" /proc/[0-9]*/comm 2>/dev/null | awk -F/ '{print $3}'
}

# napi_pin DEV CPUS: pins DEV's NAPI threads to CPUS (a new one appears when a queue's NAPI is
# made again, as an XDP program's attach may do: called before every trial).
napi_pin() {
    local p
    for p in $(napi_pids "$1"); do
        taskset -pc "$2" "$p" >/dev/null 2>&1 || log "warning: cannot pin NAPI thread $p of $1 to CPU $2"
    done
}

# napi_ticks DEV: utime+stime of DEV's NAPI threads, in clock ticks.
napi_ticks() {
    local p t=0
    for p in $(napi_pids "$1"); do t=$((t + $(pid_ticks "$p"))); done
    echo "$t"
}

# rps_on NS DEV CPU: every receive queue of DEV (in NS) hands its frames to CPU's backlog (RPS),
# so the receive stack runs on the receiving side's CPU, not in the sender's transmit.
rps_on() {
    local ns="$1" dev="$2" cpu="$3"
    ip netns exec "$ns" sh -c "for q in /sys/class/net/$dev/queues/rx-*; do printf '%x' $((1 << cpu)) >\$q/rps_cpus || exit 1; done" \
        || die "RPS on $dev failed"
}

# pid_ticks PID: utime+stime of a process (all its threads), in clock ticks (0 if gone).
pid_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# pid_minflt PID: minor page faults of a process (all its threads) so far (0 if gone): pages
# it touched for the first time (its heap growing) or pages of a mapped file (LMDB's map) it
# had not mapped yet. On a virtual machine that hands freed guest pages back to the host
# (virtio-balloon free page reporting, as this project's test box does), a page new to the
# process costs far more than on bare metal: when a server's tables double, zeroing the new
# pages can take a quarter of its CPU for a second (docs/performance.md).
pid_minflt() {
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $8} END {if (NR == 0) print 0}'
}

# pid_rss_anon_mib PID: the process's anonymous resident memory (heap, tables), MiB (0 if gone).
pid_rss_anon_mib() {
    [ -r "/proc/$1/status" ] || { echo 0; return; }
    awk '/^RssAnon:/ {printf "%d", $2 / 1024; f = 1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null
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

# Provisioning (gen-vs-kea.sh --provisioning N): both servers get DNS servers, a domain search
# list and N reservations by DUID. The reserved DUIDs are DUID-EN (00:02:00:00:ab:cd:<i>), which
# tandem-gen never uses, and the addresses 2001:db8:1::fff0:0 on, inside the address pool, so
# the clients measured are dynamic ones served beside a full reservation table.
PROVISION_DNS='"2001:db8::53", "2001:db8::54"'
PROVISION_SEARCH='"example.net", "lab.example.net"'

# provision_reservations N: prints N reservations as "DUID ADDRESS" lines.
provision_reservations() {
    awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++)
        printf "00:02:00:00:ab:cd:%02x:%02x:%02x:%02x 2001:db8:1::%x:%x\n",
            int(i / 16777216) % 256, int(i / 65536) % 256, int(i / 256) % 256, i % 256,
            65520 + int(i / 65536), i % 65536 }'
}

# provision_tandem_config DIR N: adds the options and N reservations (DIR/reservations.txt) to
# DIR/tandem.toml. Nothing when N is 0.
provision_tandem_config() {
    local dir="$1" n="$2"
    [ "$n" -gt 0 ] || return 0
    provision_reservations "$n" | awk '{ print "duid", $1, $2 }' >"$dir/reservations.txt" \
        || die "cannot write $dir/reservations.txt"
    printf 'reservations_file = "reservations.txt"\n\n[options]\ndns_servers = [%s]\ndomain_search = [%s]\n' \
        "$PROVISION_DNS" "$PROVISION_SEARCH" >>"$dir/tandem.toml" || die "cannot edit $dir/tandem.toml"
}

# provision_kea_config DIR N: the same options and reservations in DIR/kea-dhcp6.json.
provision_kea_config() {
    local dir="$1" n="$2"
    [ "$n" -gt 0 ] || return 0
    provision_reservations "$n" \
        | awk '{ printf "{\"duid\": \"%s\", \"ip-addresses\": [\"%s\"]}\n", $1, $2 }' \
        | jq -s . >"$dir/reservations.json" || die "cannot write $dir/reservations.json"
    jq --slurpfile r "$dir/reservations.json" \
        --arg dns "${PROVISION_DNS//\"/}" --arg search "${PROVISION_SEARCH//\"/}" '
        .Dhcp6["option-data"] = [{name: "dns-servers", data: $dns}, {name: "domain-search", data: $search}]
        | .Dhcp6.subnet6[0].reservations = $r[0]' "$dir/kea-dhcp6.json" >"$dir/kea-dhcp6.json.tmp" \
        && mv "$dir/kea-dhcp6.json.tmp" "$dir/kea-dhcp6.json" || die "cannot edit $dir/kea-dhcp6.json"
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

# ---------------------------------------------------------------- rate search

# rate_search TRIAL_FN START DEADLINE: the bounded search for the highest passing rate.
#
#   Phase 1, grid: a trial at START; while trials pass, double (at most MAX_RATE) until one
#   fails; while they fail, halve (at least MIN_RATE) until one passes.
#   Phase 2, bisection: at most BISECT trials between the highest pass and the lowest failure,
#   at their midpoint rounded to 100/s (stops when that is no new rate).
#   Time budget: once the clock (date +%s) reaches DEADLINE, no further trial starts (the first
#   trial always runs); SEARCH_CUT says so.
#   Marginal failure: with SEARCH_REPEAT_MARGINAL=1, the first failing trial of the search whose
#   every loss share is below twice LOSS_LIMIT (.parsed, .violations == 0, .unfinished_pct,
#   .retransmit_pct and .failed_pct < 2 x LOSS_LIMIT) is run once more at the same rate with
#   new clients, after SEARCH_FAIL_PAUSE; the repeat decides.
#   After each decided trial it sleeps SEARCH_PASS_PAUSE (pass) or SEARCH_FAIL_PAUSE (failure)
#   so that a backlog drains before the next one.
#
# TRIAL_FN RATE [repeat]: the callback. Runs one trial at RATE, records it as its script does
#   (trials file, progress line on stderr) and prints the trial's JSON object on stdout; its
#   .pass is true when the rate passed. With "repeat" (the marginal-failure repeat) the object
#   carries repeat: true before it is recorded. It runs in this shell, not a subshell (stdout
#   goes to the scratch file WORK/rate-search-trial.json), so it may advance the script's
#   counters and seeds and read the caller's locals. A non-zero status ends the search at once
#   (e.g. the namespaces vanished) and rate_search returns that status; the SEARCH_* results
#   are then meaningless.
#
# Globals read: MIN_RATE, MAX_RATE, BISECT, LOSS_LIMIT, WORK, and these three, set here when
#   lib.sh is sourced (a script changes them after sourcing): SEARCH_REPEAT_MARGINAL (0),
#   SEARCH_PASS_PAUSE (0.3 s), SEARCH_FAIL_PAUSE (1 s).
# Globals set: SEARCH_LO (highest passing rate, 0 if none), SEARCH_HI (lowest failing rate, 0 if
#   none), SEARCH_CUT (1 when the budget stopped the search), SEARCH_BEST (JSON of the trial at
#   SEARCH_LO, "" if none), SEARCH_FAIL (JSON of the trial at SEARCH_HI, "" if none).
SEARCH_REPEAT_MARGINAL=0
SEARCH_PASS_PAUSE=0.3
SEARCH_FAIL_PAUSE=1
# shellcheck disable=SC2034  # SEARCH_BEST, SEARCH_FAIL: results for the caller
rate_search() {
    local _rs_fn="$1" _rs_r="$2" _rs_deadline="$3"
    local _rs_n=0 _rs_i _rs_mid _rs_rc _rs_pass _rs_res _rs_repeated=0
    local _rs_out="$WORK/rate-search-trial.json"
    SEARCH_LO=0; SEARCH_HI=0; SEARCH_CUT=0; SEARCH_BEST=""; SEARCH_FAIL=""
    # _rs_trial RATE: one decided trial; sets _rs_pass, SEARCH_BEST / SEARCH_FAIL.
    _rs_trial() {
        "$_rs_fn" "$1" >"$_rs_out" || return
        _rs_res=$(cat "$_rs_out")
        _rs_pass=$(jq -r .pass <<<"$_rs_res")
        if [ "$_rs_pass" != true ] && [ "$_rs_repeated" = 0 ] && [ "$SEARCH_REPEAT_MARGINAL" = 1 ] &&
           jq -e --argjson l "$LOSS_LIMIT" '.parsed and .violations == 0 and .unfinished_pct < 2 * $l and .retransmit_pct < 2 * $l and .failed_pct < 2 * $l' <<<"$_rs_res" >/dev/null; then
            _rs_repeated=1
            log "  marginal failure at $1/s: repeating once"
            sleep "$SEARCH_FAIL_PAUSE"
            "$_rs_fn" "$1" repeat >"$_rs_out" || return
            _rs_res=$(cat "$_rs_out")
            _rs_pass=$(jq -r .pass <<<"$_rs_res")
        fi
        if [ "$_rs_pass" = true ]; then
            SEARCH_BEST="$_rs_res"; sleep "$SEARCH_PASS_PAUSE"
        else
            SEARCH_FAIL="$_rs_res"; sleep "$SEARCH_FAIL_PAUSE"
        fi
    }
    # Phase 1: double until a trial fails (or the cap); halve first while the start rate fails.
    while :; do
        if [ "$_rs_n" -gt 0 ] && [ "$(date +%s)" -ge "$_rs_deadline" ]; then SEARCH_CUT=1; break; fi
        _rs_trial "$_rs_r" || { _rs_rc=$?; rm -f "$_rs_out"; return "$_rs_rc"; }
        _rs_n=$((_rs_n + 1))
        if [ "$_rs_pass" = true ]; then
            SEARCH_LO=$_rs_r
            [ "$SEARCH_HI" -gt 0 ] && break
            [ $((_rs_r * 2)) -le "$MAX_RATE" ] || break
            _rs_r=$((_rs_r * 2))
        else
            SEARCH_HI=$_rs_r
            [ "$SEARCH_LO" -gt 0 ] && break
            [ $((_rs_r / 2)) -ge "$MIN_RATE" ] || break
            _rs_r=$((_rs_r / 2))
        fi
    done
    # Phase 2: bisect between the highest pass and the lowest failure (rounded to 100/s).
    if [ "$SEARCH_LO" -gt 0 ] && [ "$SEARCH_HI" -gt 0 ]; then
        for _rs_i in $(seq "$BISECT"); do
            if [ "$(date +%s)" -ge "$_rs_deadline" ]; then SEARCH_CUT=1; break; fi
            _rs_mid=$(( (SEARCH_LO + SEARCH_HI) / 2 ))
            _rs_mid=$(( (_rs_mid + 50) / 100 * 100 ))
            { [ "$_rs_mid" -le "$SEARCH_LO" ] || [ "$_rs_mid" -ge "$SEARCH_HI" ]; } && break
            _rs_trial "$_rs_mid" || { _rs_rc=$?; rm -f "$_rs_out"; return "$_rs_rc"; }
            if [ "$_rs_pass" = true ]; then SEARCH_LO=$_rs_mid; else SEARCH_HI=$_rs_mid; fi
        done
    fi
    rm -f "$_rs_out"
    return 0
}

# search_note DIAG_FN [CAP_DETAIL]: sets SEARCH_NOTE, what limited the last rate_search:
#   nothing passed:              "no rate >= MIN_RATE/s passed"
#   budget before any failure:   "time budget hit before a rate failed (lower bound)"
#   nothing failed:              "passed up to the cap MAX_RATE/s" + CAP_DETAIL (e.g.
#                                " (not saturated)")
#   else DIAG_FN, called in this shell with no arguments, sets SEARCH_NOTE from SEARCH_FAIL (the
#   trial at the lowest failing rate) and may set the caller's variables (e.g. a limit label);
#   "; bisection cut short by the time budget" is appended when SEARCH_CUT is 1.
search_note() {
    local diag="$1" cap="${2:-}"
    if [ "$SEARCH_LO" = 0 ]; then
        SEARCH_NOTE="no rate >= $MIN_RATE/s passed"
    elif [ "$SEARCH_HI" = 0 ] && [ "$SEARCH_CUT" = 1 ]; then
        SEARCH_NOTE="time budget hit before a rate failed (lower bound)"
    elif [ "$SEARCH_HI" = 0 ]; then
        SEARCH_NOTE="passed up to the cap $MAX_RATE/s$cap"
    else
        SEARCH_NOTE=""
        "$diag"
        [ "$SEARCH_CUT" = 1 ] && SEARCH_NOTE="$SEARCH_NOTE; bisection cut short by the time budget"
    fi
    return 0
}

# pair_certs DIR: a CA (ca.pem) and, for the two partners of a failover pair, a leaf each
# (a.pem/a.key with SAN tandem-a, b.pem/b.key with SAN tandem-b) in DIR. Needs openssl.
pair_certs() {
    (
        cd "$1" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
            -days 2 -subj "/CN=bench pair CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign" 2>/dev/null || exit 1
        for n in a b; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr \
                -subj "/CN=tandem-$n" 2>/dev/null || exit 1
            printf 'subjectAltName=DNS:tandem-%s\nbasicConstraints=CA:FALSE\n' $n > $n.ext
            openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 \
                -extfile $n.ext 2>/dev/null || exit 1
        done
    )
}

# pair_config DIR NAME ROLE PORT PARTNER_NAME RELATIONSHIP: writes DIR/NAME.toml for one
# partner of a bench pair on loopback (store DIR/data-NAME, one /64 address pool, Rapid Commit,
# link on [::1]:6470, MCLT 60 s, certificates from pair_certs DIR).
pair_config() {
    cat > "$1/$2.toml" <<END
[server]
listen = ["[::1]:$4"]
data_dir = "$1/data-$2"
rapid_commit = true
map_size_mib = 8192
[lease]
preferred_lifetime_secs = 3000
valid_lifetime_secs = 3600
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ prefix = "2001:db8:1::/64" }]
[failover]
role = "$3"
relationship = "$6"
partner = "[::1]:6470"
listen = "[::1]:6470"
partner_name = "$5"
ca = "$1/ca.pem"
cert = "$1/$2.pem"
key = "$1/$2.key"
mclt_secs = 60
END
}

# loopback_config FILE DATA_DIR PORT LOG_LEVEL [SERVER_LINES]: a one-subnet server on [::1]:PORT
# (addresses 2001:db8:1::/64, /56 prefixes from 2001:db8:8000::/33), for the benches that weigh
# one server binary; SERVER_LINES are added to its [server] section.
loopback_config() {
    cat >"$1" <<T
[server]
data_dir = "$2"
listen = ["[::1]:$3"]
unicast_address = "::1"
log_level = "$4"
${5:-}
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ prefix = "2001:db8:1::/64" }]
pd_pools = [{ prefix = "2001:db8:8000::/33", delegated_len = 56 }]
T
}

# tandem_counters: reads a Tandem's /metrics text on stdin and prints the counters that tell
# what its store and datapath did as one JSON object (group commits and their seconds, journal
# folds and their seconds, messages dropped for any reason, reply send errors, replies sent
# after a commit and their latency in seconds, and the commit duration histogram's cumulative
# buckets as [[upper bound in seconds, commits], ...]); {} when the text has none.
tandem_counters() {
    awk '
        $1 == "tandem_commits_total" { c = $2 }
        $1 == "tandem_commit_duration_seconds_sum" { cs = $2 }
        $1 == "tandem_store_journal_folds_total" { f = $2 }
        $1 == "tandem_store_journal_fold_duration_seconds_sum" { fs = $2 }
        $1 ~ /^tandem_packets_dropped_total/ { d += $2 }
        $1 ~ /^tandem_reply_send_errors_total/ { e += $2 }
        $1 == "tandem_reply_latency_seconds_sum{path=\"after_commit\"}" { ls = $2 }
        $1 == "tandem_reply_latency_seconds_count{path=\"after_commit\"}" { lc = $2 }
        $1 ~ /^tandem_commit_duration_seconds_bucket\{le="/ {
            le = $1; sub(/^[^"]*"/, "", le); sub(/".*$/, "", le)
            if (le != "+Inf") { nb++; ble[nb] = le; bn[nb] = $2 }
        }
        END {
            if (c == "") { print "{}"; exit }
            printf "{\"commits\":%d,\"commit_s\":%f,\"folds\":%d,\"fold_s\":%f,\"dropped\":%d,", c, cs, f, fs, d
            printf "\"send_errors\":%d,\"after_commit\":%d,\"after_commit_s\":%f,", e, lc, ls
            printf "\"commit_buckets\":["
            for (i = 1; i <= nb; i++) printf "%s[%s,%d]", (i > 1 ? "," : ""), ble[i], bn[i]
            printf "]}\n"
        }'
}
