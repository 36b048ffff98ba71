#!/usr/bin/env bash
# perfdhcp-vs-kea.sh: Tandem against ISC Kea (kea-dhcp6), both driven by perfdhcp over the same
# veth pair in the same run. See bench/README.md.
#
# Topology: netns tdmbs (servers, veth tdmbs, 2001:db8:1::1/64) <-> netns tdmbc (perfdhcp, veth
# tdmbc, 2001:db8:1::2/64). Traffic stays inside the two namespaces.
#
# For each server and case the script finds the sustained rate: the highest perfdhcp -r at which
# fewer than 1 % of the 4-way exchanges fail (a SOLICIT without an ADVERTISE, or a REQUEST
# without a REPLY), searching by doubling from --start and then bisecting.
#
# Everything it creates (namespaces, veth, temp dir, server processes) is removed on exit, also on
# failure or Ctrl-C.

set -uo pipefail

# ---------------------------------------------------------------- settings

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
TANDEM_BIN="$REPO/target/release/tandem"
KEA_TEMPLATE="$BENCH/kea/kea-dhcp6.json.in"
TANDEM_TEMPLATE="$BENCH/tandem.toml.in"
RESULTS_DIR="$BENCH/results"
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"   # log, die, stop_pid, setup/delete_topology, udp_drops, pid_ticks, configs

NS_S=tdmbs            # server namespace and its veth end
NS_C=tdmbc            # client namespace and its veth end
ADDR_S=2001:db8:1::1/64
ADDR_C=2001:db8:1::2/64

PERIOD=5              # seconds per trial (perfdhcp -p)
START_RATE=2000       # first rate tried (halved while it fails)
MAX_RATE=32000        # doubling stops here (perfdhcp on this kind of box tops out well below)
MIN_RATE=125          # halving stops here
BISECT=3              # bisection steps after the bracket is found
BUDGET=330            # seconds: past this, searches stop early (noted in the results)
LOSS_LIMIT=1          # percent: a trial passes when fewer exchanges than this fail
SEND_SHORTFALL=95     # percent: below this share of rate*period sent, perfdhcp could not keep up
CLIENTS=100000000     # perfdhcp -R: distinct clients (DUIDs); large so leases are new
SERVERS="tandem kea-st kea-mt"
CASES="na na+pd"
DO_BUILD=1
DO_FSYNC_CHECK=1
KEEP_LOGS=""
WRITE_RESULTS=1
PIN=""                # --pin S,C: server on CPU list S, perfdhcp on CPU list C (taskset)

usage() {
    cat <<EOF
usage: $0 [options]
  --period SECS        seconds per perfdhcp trial (default $PERIOD)
  --start RATE         first rate of each search (default $START_RATE)
  --max-rate RATE      highest rate tried (default $MAX_RATE)
  --bisect N           bisection steps (default $BISECT)
  --budget SECS        stop searching (and say so) once the run has taken SECS (default $BUDGET)
  --servers LIST       space/comma list of: tandem tandem-nosync kea-st kea-mt
                       (default "$SERVERS")
  --cases LIST         na, na+pd (default "$CASES")
  --no-build           do not run cargo build --release
  --no-fsync-check     skip the strace check of which server calls fsync
  --keep-logs DIR      copy server logs, configs and perfdhcp outputs to DIR before cleanup
  --no-results         do not write bench/results/latest.{json,md}
  --pin S,C            pin the server to CPU S and perfdhcp to CPU C with taskset (e.g. 0,1);
                       default: unpinned, both share all CPUs
  -h, --help
EOF
}

CMDLINE="$0${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --period) PERIOD="$2"; shift 2 ;;
        --start) START_RATE="$2"; shift 2 ;;
        --max-rate) MAX_RATE="$2"; shift 2 ;;
        --bisect) BISECT="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --servers) SERVERS="${2//,/ }"; shift 2 ;;
        --cases) CASES="${2//,/ }"; shift 2 ;;
        --no-build) DO_BUILD=0; shift ;;
        --no-fsync-check) DO_FSYNC_CHECK=0; shift ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        --no-results) WRITE_RESULTS=0; shift ;;
        --pin) PIN="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------- cleanup

WORK=""
SERVER_PID=""
STRACE_PID=""
install_cleanup delete_topology STRACE_PID SERVER_PID

# ---------------------------------------------------------------- preflight

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
ensure_tools ip:iproute2 perfdhcp:kea-admin kea-dhcp6:kea-dhcp6-server jq:jq timeout:coreutils \
    awk:gawk /usr/bin/time:time strace:strace
for t in ip perfdhcp kea-dhcp6 jq timeout awk; do
    command -v "$t" >/dev/null || die "missing tool: $t"
done
HAVE_TIME=0; [ -x /usr/bin/time ] && HAVE_TIME=1
HAVE_STRACE=0; command -v strace >/dev/null && HAVE_STRACE=1
SRV_PIN=(); CLI_PIN=()
if [ -n "$PIN" ]; then
    command -v taskset >/dev/null || die "--pin needs taskset"
    SRV_PIN=(taskset -c "${PIN%%,*}"); CLI_PIN=(taskset -c "${PIN#*,}")
fi
[ -f "$KEA_TEMPLATE" ] || die "missing $KEA_TEMPLATE"
[ -f "$TANDEM_TEMPLATE" ] || die "missing $TANDEM_TEMPLATE"
for s in $SERVERS; do
    case "$s" in tandem|tandem-nosync|kea-st|kea-mt) ;; *) die "unknown server $s" ;; esac
done
for c in $CASES; do
    case "$c" in na|na+pd) ;; *) die "unknown case $c" ;; esac
done

T_START=$(date +%s)
RUN_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

if [ "$DO_BUILD" = 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release) >&2 || die "cargo build --release failed"
fi
[ -x "$TANDEM_BIN" ] || die "missing $TANDEM_BIN (build it or drop --no-build)"

WORK="$(mktemp -d /tmp/tdm-bench.XXXXXX)" || die "mktemp failed"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- servers

# start_server NAME DIR: starts the server in netns tdmbs with a fresh data dir / lease file,
# sets SERVER_PID, waits until UDP port 547 is bound.
start_server() {
    local name="$1" dir="$2"
    rm -rf "$dir"; mkdir -p "$dir"
    case "$name" in
        tandem|tandem-nosync)
            render_tandem_config "$dir" "$NS_S"
            local extra=()
            [ "$name" = tandem-nosync ] && extra=(--no-sync)
            ip netns exec "$NS_S" "${SRV_PIN[@]}" "$TANDEM_BIN" serve --config "$dir/tandem.toml" --log-level warn "${extra[@]}" \
                >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
        kea-st|kea-mt)
            render_kea_config "${name#kea-}" "$dir" "$NS_S"
            ip netns exec "$NS_S" kea-dhcp6 -t "$dir/kea-dhcp6.json" >"$dir/kea-check.log" 2>&1 || {
                cat "$dir/kea-check.log" >&2; die "kea-dhcp6 -t rejected $dir/kea-dhcp6.json"; }
            KEA_PIDFILE_DIR="$dir" KEA_LOCKFILE_DIR="$dir" \
                ip netns exec "$NS_S" "${SRV_PIN[@]}" kea-dhcp6 -c "$dir/kea-dhcp6.json" >"$dir/server.log" 2>&1 &
            SERVER_PID=$!
            ;;
    esac
    wait_udp_bound "$NS_S" 547 "$SERVER_PID" "$dir/server.log"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}

server_ticks() { # utime+stime of the server process (all threads), in clock ticks
    pid_ticks "$SERVER_PID"
}

# ---------------------------------------------------------------- perfdhcp

lease_type() { [ "$1" = na ] && echo address-only || echo address-and-prefix; }

TRIAL_SEQ=0
# run_trial SERVER CASE RATE DIR: one perfdhcp run; prints a JSON object for the trial.
# (Runs in a command substitution: the caller advances TRIAL_SEQ.)
run_trial() {
    local server="$1" case="$2" rate="$3" dir="$4"
    # A different MAC base per trial (byte 2) keeps the client DUIDs of different trials apart;
    # perfdhcp randomises the low bytes within -R.
    local tag; tag=$(printf '%02x' $((TRIAL_SEQ % 256)))
    local out="$dir/perfdhcp-$TRIAL_SEQ-r$rate.txt" tfile="$dir/perfdhcp-$TRIAL_SEQ.time"
    local cmd=(perfdhcp -6 -l "$NS_C" -e "$(lease_type "$case")" -r "$rate" -R "$CLIENTS" -p "$PERIOD"
               -b "mac=02:$tag:00:00:00:00")
    local t0 t1 rc us0 uc0 us1 uc1
    us0=$(udp_drops "$NS_S"); uc0=$(udp_drops "$NS_C")
    t0=$(server_ticks)
    if [ "$HAVE_TIME" = 1 ]; then
        /usr/bin/time -o "$tfile" -f '%U %S %e' \
            ip netns exec "$NS_C" "${CLI_PIN[@]}" timeout -k 2 $((PERIOD + 15)) "${cmd[@]}" >"$out" 2>&1
        rc=$?
    else
        ip netns exec "$NS_C" "${CLI_PIN[@]}" timeout -k 2 $((PERIOD + 15)) "${cmd[@]}" >"$out" 2>&1
        rc=$?
    fi
    t1=$(server_ticks)
    us1=$(udp_drops "$NS_S"); uc1=$(udp_drops "$NS_C")
    local srv_drops cli_drops
    srv_drops=$(( ${us1%% *} - ${us0%% *} )); cli_drops=$(( ${uc1%% *} - ${uc0%% *} ))
    local srv_cpu; srv_cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v p="$PERIOD" 'BEGIN{printf "%.0f", (b-a)/hz/p*100}')
    local pd_cpu=null
    if [ -s "$tfile" ]; then
        # GNU time prints "Command exited with non-zero status N" first when perfdhcp returns
        # non-zero (it returns 3 when packets were dropped); the numbers are on the last line.
        pd_cpu=$(awk -v p="$PERIOD" 'NF==3 && $1 ~ /^[0-9.]+$/ {v = ($1+$2)/p*100} END {if (v != "") printf "%.0f", v}' "$tfile")
        [ -n "$pd_cpu" ] || pd_cpu=null
    fi
    # Parse the two statistics sections.
    awk -v rate="$rate" -v period="$PERIOD" -v rc="$rc" -v server="$server" -v case_="$case" \
        -v srv_cpu="$srv_cpu" -v pd_cpu="$pd_cpu" -v loss_limit="$LOSS_LIMIT" -v short="$SEND_SHORTFALL" \
        -v cmd="${cmd[*]}" -v srv_drops="$srv_drops" -v cli_drops="$cli_drops" '
        /Statistics for: SOLICIT-ADVERTISE/ { s = "sa" }
        /Statistics for: REQUEST-REPLY/ { s = "rr" }
        s != "" && /^sent packets:/ { sent[s] = $3 }
        s != "" && /^received packets:/ { recv[s] = $3 }
        s != "" && /^avg delay:/ { avg[s] = $3 }
        s != "" && /^max delay:/ { mx[s] = $3 }
        END {
            ok = ("sa" in sent) && ("rr" in recv)
            sa_sent = sent["sa"] + 0; rr_recv = recv["rr"] + 0
            fail = (sa_sent > 0) ? (sa_sent - rr_recv) * 100.0 / sa_sent : 100
            limited = (sa_sent < rate * period * short / 100.0) ? "true" : "false"
            pass = (ok && sa_sent > 0 && fail < loss_limit && limited == "false") ? "true" : "false"
            printf "{\"server\":\"%s\",\"case\":\"%s\",\"rate\":%d,\"period_s\":%d,\"perfdhcp_rc\":%d,", server, case_, rate, period, rc
            printf "\"parsed\":%s,\"solicit_sent\":%d,\"advertise_recv\":%d,\"request_sent\":%d,\"reply_recv\":%d,", ok ? "true" : "false", sa_sent, recv["sa"] + 0, sent["rr"] + 0, rr_recv
            printf "\"sent_share_pct\":%.1f,\"failed_pct\":%.3f,\"achieved_per_s\":%.1f,", (rate > 0 ? sa_sent * 100.0 / (rate * period) : 0), fail, rr_recv / period
            printf "\"avg_latency_ms\":%.3f,\"sa_avg_ms\":%.3f,\"rr_avg_ms\":%.3f,\"max_latency_ms\":%.3f,", avg["sa"] + avg["rr"], avg["sa"] + 0, avg["rr"] + 0, (mx["sa"] > mx["rr"] ? mx["sa"] : mx["rr"]) + 0
            printf "\"server_socket_drops\":%d,\"perfdhcp_socket_drops\":%d,", srv_drops, cli_drops
            printf "\"server_cpu_pct\":%s,\"perfdhcp_cpu_pct\":%s,\"perfdhcp_limited\":%s,\"pass\":%s,\"command\":\"%s\"}\n", srv_cpu, pd_cpu, limited, pass, cmd
        }' "$out"
}

# ---------------------------------------------------------------- fsync check

# fsync_check NAME: run NAME briefly under strace and count fsync-family syscalls per lease.
FSYNC_JSON="[]"
fsync_check() {
    local name="$1" dir="$WORK/fsync-$1"
    start_server "$name" "$dir"
    ip netns exec "$NS_S" strace -f -qq -p "$SERVER_PID" -o "$dir/strace.txt" \
        -e trace=fsync,fdatasync,sync_file_range,msync,sync,syncfs >/dev/null 2>&1 &
    STRACE_PID=$!
    sleep 1
    ip netns exec "$NS_C" timeout -k 2 10 perfdhcp -6 -l "$NS_C" -e address-only -r 200 -R "$CLIENTS" -p 2 \
        -b mac=02:ff:00:00:00:00 >"$dir/perfdhcp.txt" 2>&1
    sleep 0.5
    stop_pid "$STRACE_PID"; STRACE_PID=""
    stop_server
    local replies syncs
    replies=$(awk '/Statistics for: REQUEST-REPLY/{s=1} s && /^received packets:/{print $3; exit}' "$dir/perfdhcp.txt")
    syncs=$(grep -cE '(fsync|fdatasync|sync_file_range|msync|syncfs|sync)\(' "$dir/strace.txt" 2>/dev/null)
    FSYNC_JSON=$(jq -c --arg s "$name" --argjson r "${replies:-0}" --argjson n "${syncs:-0}" \
        '. + [{server: $s, exchanges: $r, fsync_family_syscalls: $n}]' <<<"$FSYNC_JSON")
    log "fsync check: $name made ${syncs:-0} fsync/fdatasync/msync calls for ${replies:-0} leases"
}

# ---------------------------------------------------------------- search

TRIALS_FILE=""
SEARCH_FAIL_PAUSE=1.5   # rate_search (lib.sh): seconds to let a backlog drain after a failure

# search_trial RATE: the rate_search callback of search (uses its server, case and dir): one
# perfdhcp trial, appended to TRIALS_FILE and logged; prints its JSON.
search_trial() {
    local res pass limited
    TRIAL_SEQ=$((TRIAL_SEQ + 1))
    res=$(run_trial "$server" "$case" "$1" "$dir")
    [ -n "$res" ] || res=$(jq -nc --arg s "$server" --arg c "$case" --argjson r "$1" \
        '{server:$s,case:$c,rate:$r,parsed:false,pass:false,perfdhcp_limited:false,failed_pct:100}')
    echo "$res" >>"$TRIALS_FILE"
    pass=$(jq -r .pass <<<"$res"); limited=$(jq -r .perfdhcp_limited <<<"$res")
    log "  $server $case r=$1: $(jq -r '"sent \(.solicit_sent) (\(.sent_share_pct)% of r*p), replies \(.reply_recv), failed \(.failed_pct)%, avg \(.avg_latency_ms) ms, server cpu \(.server_cpu_pct)%, perfdhcp cpu \(.perfdhcp_cpu_pct)%, socket drops server \(.server_socket_drops) / perfdhcp \(.perfdhcp_socket_drops)"' <<<"$res")$([ "$limited" = true ] && echo ' [perfdhcp-limited]') -> $([ "$pass" = true ] && echo pass || echo FAIL)"
    echo "$res"
}

# limit_note: the search_note diagnosis of search (uses its hi): which tool limited the search,
# judged from the lowest failing trial; sets limit_by and SEARCH_NOTE.
#   perfdhcp-send     perfdhcp could not send the requested rate, and the server lost < 1 %
#   perfdhcp-receive  most lost exchanges were datagrams dropped at perfdhcp's full socket
#   server-socket     most were dropped at the server's full socket (it did not read in time)
#   server            no socket overflow: the server answered late (after perfdhcp's 1 s
#                     drop time) or dropped the request itself (e.g. Kea MT's packet queue)
limit_note() {
    local hl hf hs lost sd cd
    hl=$(jq -r .perfdhcp_limited <<<"$SEARCH_FAIL"); hf=$(jq -r .failed_pct <<<"$SEARCH_FAIL"); hs=$(jq -r .sent_share_pct <<<"$SEARCH_FAIL")
    lost=$(jq -r '(.solicit_sent // 0) - (.reply_recv // 0)' <<<"$SEARCH_FAIL")
    sd=$(jq -r '.server_socket_drops // 0' <<<"$SEARCH_FAIL"); cd=$(jq -r '.perfdhcp_socket_drops // 0' <<<"$SEARCH_FAIL")
    if [ "$hl" = true ] && awk -v f="$hf" -v l="$LOSS_LIMIT" 'BEGIN{exit !(f < l)}'; then
        limit_by=perfdhcp-send
        SEARCH_NOTE="perfdhcp-limited: at $hi/s perfdhcp sent only $hs% of the rate, server lost $hf%"
    else
        if [ $((cd * 2)) -ge "$lost" ]; then limit_by=perfdhcp-receive
        elif [ $((sd * 2)) -ge "$lost" ]; then limit_by=server-socket
        else limit_by=server; fi
        SEARCH_NOTE="$limit_by: $hf% failed at $hi/s (socket drops: server $sd, perfdhcp $cd)"
        [ "$hl" = true ] && SEARCH_NOTE="$SEARCH_NOTE; perfdhcp also sent only $hs% of the rate"
    fi
    return 0
}

# search SERVER CASE TAG: bounded search (rate_search in lib.sh, from START_RATE, budget BUDGET s
# from T_START); appends trials to TRIALS_FILE, prints a summary JSON object.
search() {
    local server="$1" case="$2" dir="$WORK/$1-$3"
    start_server "$server" "$dir"
    log "$server / $case"
    rate_search search_trial "$START_RATE" $((T_START + BUDGET))
    stop_server
    local lo=$SEARCH_LO hi=$SEARCH_HI best=$SEARCH_BEST hi_res=$SEARCH_FAIL
    # Which tool limited the search (limit_note).
    local note limit_by=none
    search_note limit_note " (server not saturated)"
    note=$SEARCH_NOTE
    jq -nc --arg s "$server" --arg c "$case" --argjson lo "$lo" --argjson hi "$hi" --arg note "$note" --arg lb "$limit_by" \
        --argjson best "${best:-null}" --argjson first_fail "${hi_res:-null}" \
        '{server:$s, case:$c, sustained_rate:$lo, first_failing_rate:(if $hi>0 then $hi else null end),
          achieved_per_s:($best.achieved_per_s // null), avg_latency_ms:($best.avg_latency_ms // null),
          max_latency_ms:($best.max_latency_ms // null), server_cpu_pct:($best.server_cpu_pct // null),
          perfdhcp_cpu_pct:($best.perfdhcp_cpu_pct // null),
          limited_by:$lb,
          at_first_failure:$first_fail, note:$note}'
}

# ---------------------------------------------------------------- run

setup_topology
TRIALS_FILE="$WORK/trials.jsonl"; : >"$TRIALS_FILE"
SUMMARY_FILE="$WORK/summary.jsonl"; : >"$SUMMARY_FILE"

log "work dir $WORK; trials of ${PERIOD}s, start $START_RATE/s, cap $MAX_RATE/s, $BISECT bisection steps"

if [ "$DO_FSYNC_CHECK" = 1 ] && [ "$HAVE_STRACE" = 1 ]; then
    for s in $SERVERS; do
        case "$s" in tandem|kea-st) fsync_check "$s" ;; esac
    done
elif [ "$DO_FSYNC_CHECK" = 1 ]; then
    log "strace not installed: fsync check skipped"
fi

for c in $CASES; do
    tag="${c//+/-}"
    for s in $SERVERS; do
        search "$s" "$c" "$tag" >>"$SUMMARY_FILE" || die "search $s $c failed"
    done
done

T_END=$(date +%s)
ELAPSED=$((T_END - T_START))

# ---------------------------------------------------------------- report

KEA_VERSION="$(kea-dhcp6 -v 2>/dev/null | head -1)"
PERFDHCP_VERSION="$(perfdhcp -v 2>&1 | awk '/VERSION/{print $2; exit}')"
GIT_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)"
CPU_MODEL="$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
TANDEM_WORKERS_NOTE="default (one per core: $(nproc))"

KEA_FSYNC_NOTE="Kea 2.2 memfile appends each lease change to the CSV lease file with an ofstream write followed by std::endl (a flush to the kernel, one write(2) per lease) and never calls fsync/fdatasync (src/lib/util/csv_file.cc, CSVFile::append): leases survive a process crash but not a power loss or kernel crash."
RMEM_DEFAULT=$(cat /proc/sys/net/core/rmem_default 2>/dev/null || echo ?)
RMEM_MAX=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo ?)
SOCKET_NOTE="Receive buffers: Tandem asks for SO_RCVBUF 4 MiB (src/edge/udp.rs; the kernel caps it at net.core.rmem_max = $RMEM_MAX); Kea 2.2 and perfdhcp use the default net.core.rmem_default = $RMEM_DEFAULT. The script changes no sysctl besides accept_dad in its namespaces."
TANDEM_FSYNC_NOTE="Tandem (fsync on): one LMDB commit with fdatasync per group commit, and replies leave only after the commit holding their lease (src/store.rs, src/edge/mod.rs); 'tandem-nosync' (--no-sync) skips the fdatasync."

RESULT_JSON=$(jq -s -c \
    --arg date "$RUN_DATE" --arg cmd "$CMDLINE" --argjson elapsed "$ELAPSED" \
    --arg kea "$KEA_VERSION" --arg perfdhcp "$PERFDHCP_VERSION" --arg rev "$GIT_REV" --argjson dirty "$GIT_DIRTY" \
    --arg cpu "$CPU_MODEL" --argjson ncpu "$(nproc)" --arg kernel "$(uname -r)" \
    --argjson period "$PERIOD" --argjson start "$START_RATE" --argjson max "$MAX_RATE" --argjson bisect "$BISECT" \
    --argjson clients "$CLIENTS" --argjson fsync "$FSYNC_JSON" --arg keafs "$KEA_FSYNC_NOTE" --arg tdmfs "$TANDEM_FSYNC_NOTE" --arg socknote "$SOCKET_NOTE" \
    --arg workers "$TANDEM_WORKERS_NOTE" --arg pin "$PIN" --slurpfile trials "$TRIALS_FILE" '
    . as $rows
    | def rate(s; c): ([$rows[] | select(.server == s and .case == c) | .sustained_rate][0]);
      def ratio(a; b): (if (a // 0) > 0 and (b // 0) > 0 then ((a / b * 100 | round) / 100) else null end);
    {
      date: $date, command: $cmd, elapsed_s: $elapsed,
      environment: {cpu: $cpu, cpus: $ncpu, kernel: $kernel, kea: $kea, perfdhcp: $perfdhcp,
                    tandem_git: $rev, tandem_tree_dirty: $dirty, tandem_workers: $workers,
                    pinning: (if $pin == "" then "none" else "server CPU \($pin | split(",")[0]), perfdhcp CPU \($pin | split(",")[1])" end),
                    kea_mt: "thread-pool-size 2, packet-queue-size 64"},
      method: {trial_period_s: $period, start_rate: $start, max_rate: $max, bisect_steps: $bisect,
               clients: $clients, pass: "fewer than 1% of SOLICITs end without a REPLY, and perfdhcp sent >= 95% of rate*period",
               exchange: "4-way SOLICIT/ADVERTISE/REQUEST/REPLY (no rapid commit)",
               avg_latency: "perfdhcp avg SOLICIT-ADVERTISE delay + avg REQUEST-REPLY delay"},
      durability: {kea_memfile: $keafs, tandem: $tdmfs, strace_check: $fsync},
      sockets: $socknote,
      results: $rows,
      ratios: ([$rows[].case] | unique | map(. as $c | {
          case: $c,
          tandem_over_kea_st: ratio(rate("tandem"; $c); rate("kea-st"; $c)),
          tandem_over_kea_mt: ratio(rate("tandem"; $c); rate("kea-mt"; $c)),
          tandem_nosync_over_kea_st: ratio(rate("tandem-nosync"; $c); rate("kea-st"; $c)),
          tandem_nosync_over_kea_mt: ratio(rate("tandem-nosync"; $c); rate("kea-mt"; $c))
        } | with_entries(select(.value != null)))),
      trials: $trials
    }' "$SUMMARY_FILE") || die "cannot assemble results"

fmt_table() { # markdown table of the summary rows
    echo "| server | case | sustained exch/s | achieved exch/s | avg latency ms | max latency ms | server CPU % | perfdhcp CPU % | note |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    jq -r '.results[] | "| \(.server) | \(.case) | \(.sustained_rate) | \(.achieved_per_s // "-") | \(.avg_latency_ms // "-") | \(.max_latency_ms // "-") | \(.server_cpu_pct // "-") | \(.perfdhcp_cpu_pct // "-") | \(.note) |"' <<<"$RESULT_JSON"
}
fmt_ratios() {
    jq -r '.ratios[] | "- \(.case): " + ([to_entries[] | select(.key != "case") | "\(.key | gsub("_over_"; "/") | gsub("_"; "-")) = \(.value)"] | join(", ") | if . == "" then "n/a (needs a tandem and a kea row)" else . end)' <<<"$RESULT_JSON"
}

echo
echo "Tandem vs Kea, perfdhcp 4-way exchanges, ${PERIOD}s trials, $(nproc) CPUs$([ -n "$PIN" ] && echo ", pinned server/perfdhcp CPUs $PIN" || echo ", unpinned"), run took ${ELAPSED}s"
echo
{
    printf '%-14s %-6s %10s %10s %8s %8s %6s %6s  %s\n' server case sustained achieved avg_ms max_ms srvCPU pdCPU note
    jq -r '.results[] | [.server, .case, .sustained_rate, (.achieved_per_s // "-"), (.avg_latency_ms // "-"), (.max_latency_ms // "-"), (.server_cpu_pct // "-"), (.perfdhcp_cpu_pct // "-"), .note] | @tsv' <<<"$RESULT_JSON" |
        awk -F'\t' '{printf "%-14s %-6s %10s %10s %8s %8s %5s%% %5s%%  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
}
echo
echo "Ratios of sustained rates:"
fmt_ratios
echo
echo "Limits (lowest failing rate):"
jq -r '.results[] | "- \(.server) \(.case): " + ({
    "perfdhcp-send": "perfdhcp: it could not send faster while the server kept up",
    "perfdhcp-receive": "perfdhcp: replies were dropped at its full receive socket",
    "server-socket": "the server: requests were dropped at its full receive socket",
    "server": "the server: replies late or missing, no socket overflow on either side",
    "none": "not reached"}[.limited_by])' <<<"$RESULT_JSON"
echo
echo "Durability:"
echo "- $KEA_FSYNC_NOTE"
echo "- $TANDEM_FSYNC_NOTE"
jq -r '.durability.strace_check[] | "- strace: \(.server) made \(.fsync_family_syscalls) fsync/fdatasync/msync calls while granting \(.exchanges) leases"' <<<"$RESULT_JSON"
echo
echo "Sockets: $SOCKET_NOTE"

if [ "$WRITE_RESULTS" = 1 ]; then
    mkdir -p "$RESULTS_DIR"
    jq . <<<"$RESULT_JSON" >"$RESULTS_DIR/latest.json"
    {
        echo "# Tandem vs Kea (perfdhcp)"
        echo
        echo "- date: $RUN_DATE (run took ${ELAPSED}s)"
        echo "- command: \`$CMDLINE\`"
        echo "- box: $(nproc) x $CPU_MODEL, kernel $(uname -r); Tandem $GIT_REV$([ "$GIT_DIRTY" = true ] && echo ' (dirty tree)'), workers $TANDEM_WORKERS_NOTE; kea-dhcp6 $KEA_VERSION; perfdhcp $PERFDHCP_VERSION; $([ -n "$PIN" ] && echo "pinned server/perfdhcp CPUs $PIN" || echo "unpinned (server and perfdhcp share all CPUs)")"
        echo "- method: 4-way exchanges, perfdhcp -R $CLIENTS, ${PERIOD}s trials from $START_RATE/s doubling to at most $MAX_RATE/s, then $BISECT bisection steps; a rate passes when < 1 % of SOLICITs end without a REPLY and perfdhcp sent >= 95 % of rate x period."
        echo "- avg latency = perfdhcp avg SOLICIT-ADVERTISE + avg REQUEST-REPLY delay at the sustained rate; CPU % = CPU time / trial time (100 % = one core) at the sustained rate."
        echo
        fmt_table
        echo
        echo "Ratios of sustained rates:"
        echo
        fmt_ratios
        echo
        echo "Limits (lowest failing rate): see the note column; perfdhcp-send = perfdhcp could not send the rate, perfdhcp-receive = replies dropped at perfdhcp's full socket, server-socket = requests dropped at the server's full socket, server = replies late or missing without socket overflow."
        echo
        echo "Durability:"
        echo
        echo "- $KEA_FSYNC_NOTE"
        echo "- $TANDEM_FSYNC_NOTE"
        jq -r '.durability.strace_check[] | "- strace: \(.server) made \(.fsync_family_syscalls) fsync/fdatasync/msync calls while granting \(.exchanges) leases"' <<<"$RESULT_JSON"
        echo
        echo "Sockets: $SOCKET_NOTE"
    } >"$RESULTS_DIR/latest.md"
    log "wrote $RESULTS_DIR/latest.json and $RESULTS_DIR/latest.md"
fi
