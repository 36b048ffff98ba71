//! Prometheus metrics: the values the threads publish ([`MetricsHub`]), their rendering in the
//! text exposition format (version 0.0.4), and the HTTP listener of `server.metrics_listen`
//! ([`MetricsHttp`], on `tiny_http`).
//!
//! Workers never touch the hub: they send their counters to the reporter as values
//! ([`super::stats`]), and the reporter renders their sum. The group committer and the
//! partner thread, which are not on a worker's path, publish a copy of their counters into the
//! hub at most every [`PUBLISH_INTERVAL`]. Pool use is read from the lease table when a scrape
//! comes.

use super::stats::{LeaseEvent, MSG_TYPE_SLOTS, WorkerStats};
use crate::histogram::{Bounds, Histogram, LatencyUs};
use crate::store::{CommitStats, LEASE_STATES};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tandem_core::config::{ResourceKind, Role};
use tandem_core::failover::state::ServerState;
use tandem_core::pool::Allocator;
use tracing::{debug, warn};

/// How often the group commit and the partner thread copy their counters into the hub (the
/// reply sink publishes after every commit).
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// Scrapes answered per reporter turn at most (the rest wait for the next turn).
pub const SCRAPES_PER_TURN_MAX: usize = 8;

/// Message-type names, by slot; the last slot holds every other code.
const MSG_TYPE_NAMES: [&str; MSG_TYPE_SLOTS] = [
    "unknown",
    "solicit",
    "advertise",
    "request",
    "confirm",
    "renew",
    "rebind",
    "reply",
    "release",
    "decline",
    "reconfigure",
    "information_request",
    "relay_forw",
    "relay_repl",
    "leasequery",
    "leasequery_reply",
    "other",
];

/// Lease states as written by the store, by [`crate::store::lease_state_index`] slot.
const LEASE_STATE_NAMES: [&str; LEASE_STATES] =
    ["offered", "active", "released", "declined", "expired"];

/// Every failover state, for the one-hot state gauges.
const SERVER_STATES: [ServerState; 10] = [
    ServerState::Startup,
    ServerState::Normal,
    ServerState::CommunicationsInterrupted,
    ServerState::PartnerDown,
    ServerState::PotentialConflict,
    ServerState::Recover,
    ServerState::RecoverWait,
    ServerState::RecoverDone,
    ServerState::ResolutionInterrupted,
    ServerState::ConflictDone,
];

/// What the group committer publishes.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitMetrics {
    /// The committer's counters and histograms.
    pub stats: CommitStats,
    /// Receive-to-send time of replies that waited for a commit, in microseconds.
    pub reply_us: Histogram<LatencyUs>,
    /// Replies released after a commit that could not be sent.
    pub send_errors: u64,
    /// Replies released after a commit and sent.
    pub sent: u64,
}

/// What the partner thread publishes about its relationship.
#[derive(Debug, Clone)]
pub struct FailoverGauges {
    /// The relationship's name.
    pub relationship: String,
    /// Our role.
    pub role: Role,
    /// Our failover state.
    pub state: ServerState,
    /// When we entered it (unix seconds).
    pub state_since: u64,
    /// The partner's last announced state.
    pub partner_state: Option<ServerState>,
    /// The link is up (CONNECT done).
    pub link_up: bool,
    /// The link is up and the partner's backlog from before it came up has not all arrived.
    pub catching_up: bool,
    /// When the partner last sent anything.
    pub last_contact: Option<Instant>,
    /// Binding updates sent and not yet acknowledged.
    pub unacked: u64,
    /// Binding updates waiting to be sent.
    pub backlog: u64,
    /// Binding updates sent since start.
    pub updates_sent: u64,
    /// Binding updates received since start.
    pub updates_received: u64,
    /// The store failed while taking the partner's updates.
    pub store_failed: bool,
    /// While the link is up, whether the partner's configuration in force (its pools digest:
    /// pools, lifetimes, options, reservations) differs from ours, after a live reload of one.
    pub config_differs: bool,
}

/// One XDP program's counters (`--datapath xdp`), summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpCounts {
    /// The interface it is attached to.
    pub interface: String,
    /// "native" or "generic".
    pub mode: &'static str,
    /// Frames handed to an AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
}

/// Where threads off the workers' path publish their metrics, and what a scrape reads.
pub struct MetricsHub {
    /// The workers' summed counters, as the reporter last merged them.
    worker_totals: Mutex<WorkerStats>,
    /// (worker number, datagrams it received), as the reporter last heard from each.
    received_by_worker: Mutex<Vec<(usize, u64)>>,
    commit: Mutex<CommitMetrics>,
    /// One per relationship, by name.
    failover: Mutex<Vec<FailoverGauges>>,
    /// The XDP programs: interface, attach mode, frames redirected, frames passed.
    xdp: Mutex<Vec<XdpCounts>>,
    /// The store's map: bytes the data uses, map size, new leases refused.
    store: Mutex<(u64, u64, bool)>,
    /// The lease table in force (a reload that adds pools replaces it).
    alloc: Mutex<Arc<Allocator>>,
    workers: usize,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MetricsHub {
    /// A hub reading pool use from `alloc`; `workers` is the number of worker threads.
    pub fn new(alloc: Arc<Allocator>, workers: usize) -> MetricsHub {
        MetricsHub {
            worker_totals: Mutex::new(WorkerStats::default()),
            received_by_worker: Mutex::new(Vec::new()),
            commit: Mutex::new(CommitMetrics::default()),
            failover: Mutex::new(Vec::new()),
            xdp: Mutex::new(Vec::new()),
            store: Mutex::new((0, 0, false)),
            alloc: Mutex::new(alloc),
            workers,
            started: Instant::now(),
        }
    }

    /// The workers' summed counters and what each received (the reporter, every turn).
    pub fn publish_workers(&self, w: &WorkerStats, received_by_worker: Vec<(usize, u64)>) {
        lock(&self.worker_totals).clone_from(w);
        *lock(&self.received_by_worker) = received_by_worker;
    }

    /// Everything in the Prometheus text format, with the workers' counters last published.
    pub fn render_published(&self) -> String {
        let w = lock(&self.worker_totals).clone();
        self.render(&w)
    }

    /// The counters as JSON (`tandem ctl statistics`).
    pub fn statistics_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let w = lock(&self.worker_totals).clone();
        let c = *lock(&self.commit);
        let by_type = |a: &[u64; MSG_TYPE_SLOTS]| -> Value {
            let m: Map<String, Value> = MSG_TYPE_NAMES
                .iter()
                .zip(a.iter())
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect();
            Value::Object(m)
        };
        let pools: Vec<Value> = self
            .allocator()
            .usage()
            .into_iter()
            .map(|(subnet, pool, u)| {
                json!({
                    "subnet": subnet,
                    "pool": format!("{}/{}", std::net::Ipv6Addr::from(pool.first), pool.resource_len),
                    "kind": match pool.kind { ResourceKind::Address => "address", ResourceKind::Prefix => "prefix" },
                    // As a string: a pool may hold more than 2^53 resources.
                    "total": u.total.to_string(),
                    "active": u.active,
                    "declined": u.declined,
                    "offered": u.offered,
                })
            })
            .collect();
        json!({
            "uptime_secs": self.started.elapsed().as_secs(),
            "received": by_type(&w.received_by_type),
            "answered": by_type(&w.answered_by_type),
            "dropped": w.dropped,
            "xdp_handoffs": w.handoffs,
            "xdp_kernel_routed": w.kernel_routed,
            "lease_events": LeaseEvent::ALL.iter().map(|e| (e.label().to_string(), json!(w.lease_events[*e as usize]))).collect::<Map<String, Value>>(),
            "replies_sent": {"now": w.replied_now, "after_commit": c.sent},
            "send_errors": w.send_errors + c.send_errors,
            "commits": c.stats.commits,
            "commit_failures": c.stats.failures,
            "journal_folds": c.stats.folds,
            "journal_fold_failures": c.stats.fold_failures,
            "leases_written": LEASE_STATE_NAMES.iter().zip(c.stats.leases_by_state.iter()).skip(1).map(|(k, n)| (k.to_string(), json!(n))).collect::<Map<String, Value>>(),
            "pools": pools,
        })
    }

    /// The group commit's latest counters.
    pub fn publish_commit(&self, stats: CommitStats) {
        lock(&self.commit).stats = stats;
    }

    /// The reply sink's latest counters (published together, so they never go backwards
    /// against each other).
    pub fn publish_replies(&self, reply_us: &Histogram<LatencyUs>, send_errors: u64, sent: u64) {
        let mut c = lock(&self.commit);
        c.reply_us = *reply_us;
        c.send_errors = send_errors;
        c.sent = sent;
    }

    /// How full the store's map is, and whether new leases are refused because of it.
    pub fn publish_store(&self, used: u64, size: u64, refusing: bool) {
        *lock(&self.store) = (used, size, refusing);
    }

    /// The XDP programs' counters (the xdp-addrs thread, every refresh).
    pub fn publish_xdp(&self, counts: Vec<XdpCounts>) {
        *lock(&self.xdp) = counts;
    }

    /// The lease table in force.
    pub fn allocator(&self) -> Arc<Allocator> {
        lock(&self.alloc).clone()
    }

    /// A reload replaced the lease table (pools added).
    pub fn set_allocator(&self, alloc: Arc<Allocator>) {
        *lock(&self.alloc) = alloc;
    }

    /// A partner thread's latest gauges (one relationship's; the others' stay).
    pub fn publish_failover(&self, g: FailoverGauges) {
        let mut all = lock(&self.failover);
        match all.iter_mut().find(|f| f.relationship == g.relationship) {
            Some(f) => *f = g,
            None => all.push(g),
        }
    }

    /// Everything, in the Prometheus text format, with the workers' summed counters.
    pub fn render(&self, w: &WorkerStats) -> String {
        let mut t = Text::default();
        t.family(
            "tandem_build_info",
            "gauge",
            "Always 1; the version label says which Tandem.",
        );
        t.sample(
            "tandem_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        t.family(
            "tandem_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        );
        t.sample(
            "tandem_uptime_seconds",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        t.family(
            "tandem_workers",
            "gauge",
            "Worker threads receiving DHCPv6.",
        );
        t.sample("tandem_workers", &[], self.workers as f64);

        for (name, help, counts) in [
            (
                "tandem_packets_received_total",
                "DHCPv6 datagrams received, by message type (the outer one for relayed messages).",
                &w.received_by_type,
            ),
            (
                "tandem_packets_answered_total",
                "Client messages answered, by the client's message type (the innermost one for relayed messages).",
                &w.answered_by_type,
            ),
        ] {
            t.family(name, "counter", help);
            for (ty, n) in MSG_TYPE_NAMES.iter().zip(counts.iter()) {
                t.sample(name, &[("type", ty)], *n as f64);
            }
        }
        t.family(
            "tandem_packets_dropped_total",
            "counter",
            "Datagrams dropped without an answer, by reason.",
        );
        for (reason, n) in &w.dropped {
            t.sample(
                "tandem_packets_dropped_total",
                &[("reason", reason)],
                *n as f64,
            );
        }
        t.family(
            "tandem_worker_packets_received_total",
            "counter",
            "DHCPv6 datagrams each worker took, by worker number: how evenly the cores share the work. On the AF_XDP path a worker counts the messages it answers, those other workers handed to it included.",
        );
        for (id, n) in lock(&self.received_by_worker).iter() {
            t.sample(
                "tandem_worker_packets_received_total",
                &[("worker", &id.to_string())],
                *n as f64,
            );
        }
        // The AF_XDP path's counters by label (absent on other datapaths).
        for (name, help, label, counts) in [
            (
                "tandem_xdp_handoffs_total",
                "AF_XDP on an interface of several receive queues: messages the receiving worker handed to the worker they belong to (`handed_off`), or answered itself because that worker's inbox was full (`kept_inbox_full`) or the message was too large to hand over (`kept_large`).",
                "result",
                &w.handoffs,
            ),
            (
                "tandem_xdp_kernel_routed_total",
                "AF_XDP: messages whose replies leave through the kernel's UDP socket instead of as frames, by reason: the sender is routed and its next hop is not looked up yet (`next_hop_not_looked_up`), not resolved by the kernel yet (`next_hop_unresolved`), on another interface (`next_hop_on_other_interface`), or has no unicast route (`no_route`); or the request was sent to ff05::1:3 (`site_scope_multicast`).",
                "reason",
                &w.kernel_routed,
            ),
        ] {
            if counts.is_empty() {
                continue;
            }
            t.family(name, "counter", help);
            for (value, n) in counts {
                t.sample(name, &[(label, value)], *n as f64);
            }
        }
        let c = *lock(&self.commit);
        t.family("tandem_replies_sent_total", "counter", "Replies sent, by path: `now` needed nothing stored, `after_commit` waited for its leases to be durable.");
        t.sample(
            "tandem_replies_sent_total",
            &[("path", "now")],
            w.replied_now as f64,
        );
        t.sample(
            "tandem_replies_sent_total",
            &[("path", "after_commit")],
            c.sent as f64,
        );
        t.family(
            "tandem_reply_send_errors_total",
            "counter",
            "Replies the socket refused.",
        );
        t.sample(
            "tandem_reply_send_errors_total",
            &[],
            (w.send_errors + c.send_errors) as f64,
        );
        t.family(
            "tandem_lease_events_total",
            "counter",
            "Lease changes clients asked for, counted when answered: granted, renewed (Renew or Rebind), released, declined.",
        );
        for e in LeaseEvent::ALL {
            t.sample(
                "tandem_lease_events_total",
                &[("event", e.label())],
                w.lease_events[e as usize] as f64,
            );
        }
        t.family(
            "tandem_leases_written_total",
            "counter",
            "Lease records committed by the group committer, by state: client changes, and without a partner the reclaimer's expiries (expired); not the partner thread's own writes nor tandem ctl changes.",
        );
        for (i, name) in LEASE_STATE_NAMES.iter().enumerate().skip(1) {
            t.sample(
                "tandem_leases_written_total",
                &[("state", name)],
                c.stats.leases_by_state[i] as f64,
            );
        }
        t.family(
            "tandem_reply_latency_seconds",
            "histogram",
            "Time from receiving a message to sending its reply, by path (`after_commit` includes the group commit and its fsync).",
        );
        t.histogram(
            "tandem_reply_latency_seconds",
            ("path", "now"),
            &w.reply_now_us,
        );
        t.histogram(
            "tandem_reply_latency_seconds",
            ("path", "after_commit"),
            &c.reply_us,
        );
        t.family(
            "tandem_commits_total",
            "counter",
            "Group commits (one LMDB transaction and fsync each).",
        );
        t.sample("tandem_commits_total", &[], c.stats.commits as f64);
        t.family(
            "tandem_commit_failures_total",
            "counter",
            "Tries of a group commit that failed: the batch is tried again, its replies held, and after 10 s of failures the server stops (exit code 3).",
        );
        t.sample("tandem_commit_failures_total", &[], c.stats.failures as f64);
        t.family(
            "tandem_commit_batch_leases",
            "histogram",
            "Lease records written per group commit.",
        );
        t.histogram(
            "tandem_commit_batch_leases",
            ("", ""),
            &c.stats.batch_leases,
        );
        t.family(
            "tandem_commit_duration_seconds",
            "histogram",
            "Time of one group commit, its fsync included.",
        );
        t.histogram(
            "tandem_commit_duration_seconds",
            ("", ""),
            &c.stats.commit_us,
        );
        t.family(
            "tandem_store_journal_folds_total",
            "counter",
            "Folds of the store's journal into its lease database.",
        );
        t.sample(
            "tandem_store_journal_folds_total",
            &[],
            c.stats.folds as f64,
        );
        t.family(
            "tandem_store_journal_fold_failures_total",
            "counter",
            "Folds of the store's journal that failed (the journal stays and is folded later).",
        );
        t.sample(
            "tandem_store_journal_fold_failures_total",
            &[],
            c.stats.fold_failures as f64,
        );
        t.family(
            "tandem_store_journal_fold_duration_seconds",
            "histogram",
            "Time of one journal fold: under load, what copying its entries out and its slices added to the commits they rode in; when idle, the whole fold with its fsync.",
        );
        t.histogram(
            "tandem_store_journal_fold_duration_seconds",
            ("", ""),
            &c.stats.fold_us,
        );

        let (used, size, refusing) = *lock(&self.store);
        t.family(
            "tandem_store_used_bytes",
            "gauge",
            "Bytes in the LMDB pages the data uses (freed pages, which are reused, not counted).",
        );
        t.sample("tandem_store_used_bytes", &[], used as f64);
        t.family(
            "tandem_store_map_bytes",
            "gauge",
            "The LMDB map size (server.map_size_mib): the most the file may grow to.",
        );
        t.sample("tandem_store_map_bytes", &[], size as f64);
        t.family(
            "tandem_store_refusing_new_leases",
            "gauge",
            "1 while the store is over 90 % full: no new leases, renewals go on.",
        );
        t.sample(
            "tandem_store_refusing_new_leases",
            &[],
            f64::from(u8::from(refusing)),
        );
        self.render_pools(&mut t);
        let failover = lock(&self.failover).clone();
        if !failover.is_empty() {
            render_failover(&mut t, &failover);
        }
        let xdp = lock(&self.xdp).clone();
        if !xdp.is_empty() {
            t.family(
                "tandem_xdp_frames_total",
                "counter",
                "Frames the XDP program saw on an interface (--datapath xdp), by verdict: `redirected` to the server's AF_XDP sockets, `passed` to the kernel (everything not DHCPv6 for this host).",
            );
            for x in &xdp {
                for (verdict, n) in [("redirected", x.redirected), ("passed", x.passed)] {
                    t.sample(
                        "tandem_xdp_frames_total",
                        &[
                            ("interface", &x.interface),
                            ("mode", x.mode),
                            ("verdict", verdict),
                        ],
                        n as f64,
                    );
                }
            }
        }
        t.out
    }

    fn render_pools(&self, t: &mut Text) {
        let usage = self.allocator().usage();
        let names = [
            (
                "tandem_pool_resources",
                "Addresses or prefixes in the pool.",
            ),
            ("tandem_pool_active", "Active leases in the pool."),
            (
                "tandem_pool_declined",
                "Declined resources held back in the pool.",
            ),
            ("tandem_pool_offered", "Offers outstanding in the pool."),
        ];
        for (i, (name, help)) in names.iter().enumerate() {
            t.family(name, "gauge", help);
            for (subnet, pool, u) in &usage {
                let range = format!(
                    "{}/{}",
                    std::net::Ipv6Addr::from(pool.first),
                    pool.resource_len
                );
                let kind = match pool.kind {
                    ResourceKind::Address => "address",
                    ResourceKind::Prefix => "prefix",
                };
                let subnet = subnet.to_string();
                let v = match i {
                    0 => u.total as f64,
                    1 => u.active as f64,
                    2 => u.declined as f64,
                    _ => u.offered as f64,
                };
                t.sample(
                    name,
                    &[("subnet", &subnet), ("pool", &range), ("kind", kind)],
                    v,
                );
            }
        }
        // Prefix pools split between failover partners: the secondary's share and the free
        // prefixes it holds (an alert on the latter at 0 for long means the secondary cannot
        // delegate alone if the primary fails).
        let alloc = self.allocator();
        let balances: Vec<_> = alloc
            .pd_pools()
            .into_iter()
            .filter_map(|id| Some((id.to_string(), alloc.pd_balance(id)?)))
            .collect();
        if balances.is_empty() {
            return;
        }
        t.family(
            "tandem_pd_pool_secondary_share",
            "gauge",
            "Prefixes of the pool that are the failover secondary's part (free or not).",
        );
        for (pool, b) in &balances {
            t.sample(
                "tandem_pd_pool_secondary_share",
                &[("pool", pool)],
                b.share as f64,
            );
        }
        t.family(
            "tandem_pd_pool_secondary_free",
            "gauge",
            "Free prefixes of the pool that the failover secondary may delegate on its own.",
        );
        for (pool, b) in &balances {
            t.sample(
                "tandem_pd_pool_secondary_free",
                &[("pool", pool)],
                b.backup_free(b.share) as f64,
            );
        }
    }
}

/// The failover families, each with one series per relationship.
fn render_failover(t: &mut Text, all: &[FailoverGauges]) {
    let role = |f: &FailoverGauges| match f.role {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    };
    t.family(
        "tandem_failover_state",
        "gauge",
        "1 for this server's current failover state, 0 for the others.",
    );
    for f in all {
        for s in SERVER_STATES {
            let name = s.to_string();
            t.sample(
                "tandem_failover_state",
                &[
                    ("relationship", &f.relationship),
                    ("role", role(f)),
                    ("state", &name),
                ],
                f64::from(u8::from(s == f.state)),
            );
        }
    }
    t.family(
        "tandem_failover_partner_state",
        "gauge",
        "1 for the partner's last announced state, 0 for the others (all 0 while unknown).",
    );
    for f in all {
        for s in SERVER_STATES {
            let name = s.to_string();
            t.sample(
                "tandem_failover_partner_state",
                &[("relationship", &f.relationship), ("state", &name)],
                f64::from(u8::from(Some(s) == f.partner_state)),
            );
        }
    }
    let now = super::now_secs();
    type Gauge = (
        &'static str,
        &'static str,
        &'static str,
        fn(&FailoverGauges, u64) -> f64,
    );
    let gauges: [Gauge; 9] = [
        (
            "tandem_failover_state_seconds",
            "gauge",
            "Seconds in the current failover state.",
            |f, now| now.saturating_sub(f.state_since) as f64,
        ),
        (
            "tandem_failover_link_up",
            "gauge",
            "1 while the link to the partner is up (CONNECT done).",
            |f, _| f64::from(u8::from(f.link_up)),
        ),
        (
            "tandem_failover_catching_up",
            "gauge",
            "1 while the link is up and the partner's updates from before it came up have not all arrived (Renews and Rebinds of bindings this server does not hold get no answer).",
            |f, _| f64::from(u8::from(f.catching_up)),
        ),
        (
            "tandem_failover_unacked_updates",
            "gauge",
            "Binding updates sent and not yet acknowledged.",
            |f, _| f.unacked as f64,
        ),
        (
            "tandem_failover_update_backlog",
            "gauge",
            "Binding updates waiting to be sent.",
            |f, _| f.backlog as f64,
        ),
        (
            "tandem_failover_updates_sent_total",
            "counter",
            "Binding updates sent to the partner.",
            |f, _| f.updates_sent as f64,
        ),
        (
            "tandem_failover_updates_received_total",
            "counter",
            "Binding updates received from the partner.",
            |f, _| f.updates_received as f64,
        ),
        (
            "tandem_failover_store_failed",
            "gauge",
            "1 if the store failed while taking the partner's updates (the link was dropped).",
            |f, _| f64::from(u8::from(f.store_failed)),
        ),
        (
            "tandem_failover_config_differs",
            "gauge",
            "1 while the link is up and the partner's configuration in force differs from ours (pools, lifetimes, options or reservations): a rolling reload is half done. The pair keeps serving; a new link would be refused until both match.",
            |f, _| f64::from(u8::from(f.config_differs)),
        ),
    ];
    for (name, kind, help, value) in gauges {
        t.family(name, kind, help);
        for f in all {
            t.sample(name, &[("relationship", &f.relationship)], value(f, now));
        }
    }
    t.family(
        "tandem_failover_last_contact_seconds",
        "gauge",
        "Seconds since the partner last sent anything (absent: never since start).",
    );
    for f in all {
        if let Some(c) = f.last_contact {
            t.sample(
                "tandem_failover_last_contact_seconds",
                &[("relationship", &f.relationship)],
                c.elapsed().as_secs_f64(),
            );
        }
    }
}

/// Text exposition format writer.
#[derive(Default)]
struct Text {
    out: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {}", number(v));
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        let labels = labels.iter().filter(|(k, _)| !k.is_empty());
        let mut first = true;
        for (k, v) in labels {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        if !first {
            self.out.push('}');
        }
    }

    fn histogram<B: Bounds>(&mut self, name: &str, label: (&str, &str), h: &Histogram<B>) {
        for (le, n) in h.cumulative() {
            let le = number(le);
            self.out.push_str(name);
            self.out.push_str("_bucket");
            self.labels(&[label, ("le", &le)]);
            let _ = writeln!(self.out, " {n}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(&[label]);
        let _ = writeln!(self.out, " {}", number(h.sum_base()));
        let _ = write!(self.out, "{name}_count");
        self.labels(&[label]);
        let _ = writeln!(self.out, " {}", h.count());
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` HTTP listener (`server.metrics_listen`).
pub struct MetricsHttp {
    server: tiny_http::Server,
}

impl MetricsHttp {
    /// Binds the listener; fails before the server answers anything.
    pub fn bind(addr: SocketAddr) -> std::io::Result<MetricsHttp> {
        let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
        Ok(MetricsHttp { server })
    }

    /// The address it listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Answers scrapes for up to `wait` (at most [`SCRAPES_PER_TURN_MAX`]); `body` renders.
    pub fn serve_for(&self, wait: Duration, body: impl Fn() -> String) {
        let until = Instant::now() + wait;
        for _ in 0..SCRAPES_PER_TURN_MAX {
            let left = until.saturating_duration_since(Instant::now());
            let req = match self.server.recv_timeout(left) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    warn!(error = %e, "metrics listener failed");
                    std::thread::sleep(left);
                    return;
                }
            };
            let path = req.url().split('?').next().unwrap_or("");
            let get = matches!(
                req.method(),
                tiny_http::Method::Get | tiny_http::Method::Head
            );
            let resp = if get && path == "/metrics" {
                tiny_http::Response::from_string(body()).with_header(header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                ))
            } else if get && path == "/" {
                tiny_http::Response::from_string("Tandem: metrics are at /metrics\n")
            } else {
                tiny_http::Response::from_string("not found: metrics are at /metrics\n")
                    .with_status_code(404)
            };
            if let Err(e) = req.respond(resp) {
                debug!(error = %e, "metrics response not sent");
            }
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut t = Text::default();
        t.sample("m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(t.out, "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.00005), "0.00005");
        assert_eq!(number(2e20), "200000000000000000000");
    }
}
