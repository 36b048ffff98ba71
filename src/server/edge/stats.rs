//! Counters: each worker keeps its own values and sends them to the reporter every
//! [`WORKER_REPORT_INTERVAL`]; the reporter merges them, logs the traffic every
//! [`STATS_INTERVAL`]; the metrics thread answers Prometheus scrapes from what it publishes
//! ([`super::metrics`]). Nothing is shared while counting.

use super::metrics::{MetricsHttp, MetricsHub};
use crate::histogram::{Histogram, LatencyUs};
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem_core::lease::{Lease, LeaseState};
use tandem_core::wire::MessageType;
use tracing::{info, warn};

/// How often the reporter logs the traffic and the committer its own counters.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// How often a worker sends its counters to the reporter: the most a scrape lags behind.
pub const WORKER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long the reporter waits for a scrape before it looks at the workers' counters again.
pub const REPORTER_TURN: Duration = Duration::from_millis(200);
/// A worker whose last report is older than this is taken as stuck: the watchdog is not fed.
pub const WORKER_STALE_AFTER: Duration = Duration::from_secs(5);
/// Message-type slots counted: codes 0..=15 by their own slot, anything else in the last.
pub const MSG_TYPE_SLOTS: usize = 17;

/// The slot of a message-type code in the by-type counters.
pub fn msg_type_slot(code: u8) -> usize {
    (code as usize).min(MSG_TYPE_SLOTS - 1)
}

/// What a client's message did to a lease, as counted by the worker that answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Granted by a Request, a Rapid Commit Solicit or a Rebind/Renew of a new binding.
    Granted = 0,
    /// Extended by a Renew or a Rebind.
    Renewed = 1,
    /// Released by the client.
    Released = 2,
    /// Declined by the client.
    Declined = 3,
}

impl LeaseEvent {
    /// Every event, in slot order.
    pub const ALL: [LeaseEvent; 4] = [
        LeaseEvent::Granted,
        LeaseEvent::Renewed,
        LeaseEvent::Released,
        LeaseEvent::Declined,
    ];

    /// The label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            LeaseEvent::Granted => "granted",
            LeaseEvent::Renewed => "renewed",
            LeaseEvent::Released => "released",
            LeaseEvent::Declined => "declined",
        }
    }

    /// The event a lease write answering `answered` stands for (`None`: not a client event;
    /// offers are held in memory and show in the pool gauges instead).
    pub fn of(l: &Lease, answered: MessageType) -> Option<LeaseEvent> {
        Some(match l.state {
            LeaseState::Active if matches!(answered, MessageType::Renew | MessageType::Rebind) => {
                LeaseEvent::Renewed
            }
            LeaseState::Active => LeaseEvent::Granted,
            LeaseState::Released => LeaseEvent::Released,
            LeaseState::Declined => LeaseEvent::Declined,
            LeaseState::Offered | LeaseState::Expired => return None,
        })
    }
}

/// Counters one worker keeps; values merged at the edge, never shared while counting.
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies sent straight away (nothing to store).
    pub replied_now: u64,
    /// Replies handed to the group committer.
    pub replied_after_commit: u64,
    /// Send failures.
    pub send_errors: u64,
    /// Dropped datagrams by reason label.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Datagrams received, by the outer message type's slot ([`msg_type_slot`]).
    pub received_by_type: [u64; MSG_TYPE_SLOTS],
    /// Messages answered, by the client's (innermost) message type's slot.
    pub answered_by_type: [u64; MSG_TYPE_SLOTS],
    /// Lease changes clients caused, by [`LeaseEvent`] slot.
    pub lease_events: [u64; 4],
    /// Receive-to-send time of replies that needed nothing stored, in microseconds.
    pub reply_now_us: Histogram<LatencyUs>,
    /// AF_XDP: messages handed to the worker they belong to, or kept, by
    /// [`super::xdp::spread::HANDOFF_RESULTS`] label (empty on other datapaths).
    pub handoffs: BTreeMap<&'static str, u64>,
    /// AF_XDP: messages whose replies left through the kernel instead of as frames, by
    /// [`super::xdp::next_hop::KERNEL_REASONS`] label (empty on other datapaths).
    pub kernel_routed: BTreeMap<&'static str, u64>,
}

impl WorkerStats {
    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &WorkerStats) {
        self.received += o.received;
        self.replied_now += o.replied_now;
        self.replied_after_commit += o.replied_after_commit;
        self.send_errors += o.send_errors;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
        for (k, v) in &o.handoffs {
            *self.handoffs.entry(k).or_default() += v;
        }
        for (k, v) in &o.kernel_routed {
            *self.kernel_routed.entry(k).or_default() += v;
        }
        for (a, b) in self.received_by_type.iter_mut().zip(o.received_by_type) {
            *a += b;
        }
        for (a, b) in self.answered_by_type.iter_mut().zip(o.answered_by_type) {
            *a += b;
        }
        for (a, b) in self.lease_events.iter_mut().zip(o.lease_events) {
            *a += b;
        }
        self.reply_now_us.merge(&o.reply_now_us);
    }
}

/// The metrics thread: answers `/metrics` scrapes from the hub until `stop`. Apart from the
/// reporter, so that a scraper that stalls cannot hold up the counters or the watchdog.
pub fn run_metrics_http(http: MetricsHttp, hub: Arc<MetricsHub>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        http.serve_for(REPORTER_TURN, || hub.render_published());
    }
}

/// The reporter thread: merges what workers send, publishes the sum into the hub (for
/// `/metrics` and `tandem ctl statistics`) and logs it.
///
/// With systemd's watchdog (`watchdog`: where and how often), it sends WATCHDOG=1 only while
/// each of the `workers` workers reported within [`WORKER_STALE_AFTER`].
pub fn run_reporter(
    rx: Receiver<(usize, WorkerStats)>,
    stop: &AtomicBool,
    hub: Arc<MetricsHub>,
    workers: usize,
    watchdog: Option<(crate::sd_notify::Notifier, Duration)>,
) {
    let mut latest: HashMap<usize, WorkerStats> = HashMap::new();
    let mut seen: HashMap<usize, Instant> = HashMap::new();
    let mut last_ping: Option<Instant> = None;
    let mut last_total = WorkerStats::default();
    let mut last_log = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut fresh = false;
        while let Ok((id, s)) = rx.try_recv() {
            latest.insert(id, s);
            seen.insert(id, Instant::now());
            fresh = true;
        }
        if let Some((n, every)) = &watchdog
            && last_ping.is_none_or(|t| t.elapsed() >= *every)
        {
            let alive = seen
                .values()
                .filter(|t| t.elapsed() < WORKER_STALE_AFTER)
                .count();
            if alive >= workers {
                last_ping = Some(Instant::now());
                let _ = n.send("WATCHDOG=1");
            } else if last_ping.is_some_and(|t| t.elapsed() >= *every * 2) {
                warn!(
                    workers,
                    reporting = alive,
                    "a worker stopped reporting: not feeding the systemd watchdog"
                );
                last_ping = Some(Instant::now());
            }
        }
        let total = || {
            let mut t = WorkerStats::default();
            latest.values().for_each(|s| t.merge(s));
            t
        };
        if fresh {
            let mut by_worker: Vec<(usize, u64)> =
                latest.iter().map(|(id, s)| (*id, s.received)).collect();
            by_worker.sort_unstable();
            hub.publish_workers(&total(), by_worker);
        }
        if last_log.elapsed() >= STATS_INTERVAL || stopping {
            last_log = Instant::now();
            let total = total();
            if total.received != last_total.received {
                let dropped: u64 = total.dropped.values().sum();
                info!(
                    received = total.received - last_total.received,
                    replied = (total.replied_now + total.replied_after_commit) - (last_total.replied_now + last_total.replied_after_commit),
                    dropped_total = dropped,
                    drops = ?total.dropped,
                    "traffic"
                );
            }
            last_total = total;
        }
        if stopping {
            break;
        }
        std::thread::sleep(REPORTER_TURN);
    }
}
