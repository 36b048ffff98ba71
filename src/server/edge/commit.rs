//! The group committer: takes every queued commit job, writes them in one LMDB transaction
//! with one fsync, then releases the replies waiting for those leases ([`ReplySink`]).

use super::metrics::{MetricsHub, PUBLISH_INTERVAL};
use super::stats::STATS_INTERVAL;
use super::{PendingReply, hex, partner, udp};
use crate::histogram::{Histogram, LatencyUs};
use crate::store::{self, AfterCommit, CommitJob, CommitStats, Store, StoreError};
use crossbeam_channel::Receiver;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem_core::lease::{Lease, LeaseState};
use tandem_core::wire::MessageType;
use tracing::{debug, error, info};

/// Where a committed reply leaves, by the index of the worker path it came in on.
pub enum ReplyOut {
    /// A clone of the worker's UDP socket: the committer sends itself.
    Udp(UdpSocket),
    /// An AF_XDP worker: only it may touch its rings, so the reply goes back to it.
    Xdp(super::xdp::ReturnPath),
}

/// Sends replies once the group committer made their leases durable.
pub struct ReplySink {
    pub(super) outs: Vec<ReplyOut>,
    pub(super) send_errors: u64,
    /// Replies sent after their commit.
    pub(super) sent: u64,
    /// The failover partner thread, told of every durable change.
    pub(super) partner: Option<partner::PartnerNotifier>,
    /// Receive-to-send time of the replies sent here, in microseconds.
    pub(super) reply_us: Histogram<LatencyUs>,
    /// Where the counters are published after every commit.
    pub(super) hub: Arc<MetricsHub>,
    /// The audit log, if on: written once the leases are durable.
    pub(super) audit: Option<Arc<super::audit::AuditLog>>,
}

impl AfterCommit<PendingReply> for ReplySink {
    fn written(&mut self, leases: &mut dyn Iterator<Item = &Lease>) {
        if self.partner.is_none() && self.audit.is_none() {
            return;
        }
        let leases: Vec<Lease> = leases
            .filter(|l| l.state != LeaseState::Offered)
            .cloned()
            .collect();
        // Reclaimed leases: the server's own change, no client message behind it.
        if let Some(a) = &self.audit {
            let now = super::now_secs();
            let lines: Vec<String> = leases
                .iter()
                .filter(|l| l.state == LeaseState::Expired)
                .map(|l| super::audit::line(l, None, None, now))
                .collect();
            a.write(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let Some(p) = &self.partner {
            p.committed(leases);
        }
    }
    fn job_written(&mut self, writes: &[Lease], then: Option<&PendingReply>) {
        if let Some(r) = then
            && tracing::enabled!(tracing::Level::INFO)
        {
            writes.iter().for_each(|l| log_lease(l, r.answered));
        }
    }
    fn durable(&mut self, released: &mut Vec<PendingReply>) {
        if let Some(a) = &self.audit {
            let lines: Vec<&str> = released
                .iter()
                .filter(|r| !r.audit.is_empty())
                .map(|r| r.audit.as_str())
                .collect();
            a.write(&lines);
        }
        // One sendmmsg per socket for the whole batch instead of a sendto per reply; under
        // load a group commit releases about a hundred replies at once.
        released.sort_by_key(|r| r.socket);
        let now = Instant::now();
        for r in released.iter() {
            self.reply_us
                .record(now.saturating_duration_since(r.received_at).as_micros() as u64);
        }
        let mut start = 0;
        while start < released.len() {
            let sock = released[start].socket;
            let end = start
                + released[start..]
                    .iter()
                    .take_while(|r| r.socket == sock)
                    .count();
            match &self.outs[sock] {
                ReplyOut::Udp(s) => {
                    let sent = udp::send_batch(s, &released[start..end]);
                    self.sent += sent as u64;
                    for r in &released[start + sent..end] {
                        match udp::send_to(s, r.to, r.from, &r.bytes) {
                            Ok(()) => self.sent += 1,
                            Err(e) => {
                                self.send_errors += 1;
                                debug!(to = %r.to, error = %e, "reply send failed");
                            }
                        }
                    }
                }
                ReplyOut::Xdp(back) => {
                    for r in released.drain(start..end) {
                        if back.send(r) {
                            self.sent += 1;
                        } else {
                            self.send_errors += 1;
                        }
                    }
                    back.wake();
                    continue;
                }
            }
            start = end;
        }
        self.hub
            .publish_replies(&self.reply_us, self.send_errors, self.sent);
        released.clear();
    }
    fn failed(&mut self, dropped: &mut Vec<PendingReply>, e: &StoreError) {
        error!(error = %e, replies = dropped.len(), "commit failed; replies withheld (clients will retransmit)");
        dropped.clear();
    }
}

/// Logs one lease change at info (`via`: the client message it answered), once it is durable.
pub fn log_lease(l: &Lease, via: MessageType) {
    let what = match l.state {
        LeaseState::Active if matches!(via, MessageType::Renew | MessageType::Rebind) => {
            "lease renewed"
        }
        LeaseState::Active => "lease granted",
        LeaseState::Released => "lease released",
        LeaseState::Declined => "lease declined",
        LeaseState::Expired => "lease expired",
        LeaseState::Offered => "lease offered",
    };
    info!(
        lease = %format_args!("{}/{}", l.addr, l.prefix_len),
        duid = %hex(&l.duid),
        iaid = l.iaid,
        valid_secs = l.valid_secs,
        subnet = l.subnet_id,
        via = ?via,
        "{what}"
    );
}

/// Share of the LMDB map past which no new lease is given (renewals go on): the rest is kept
/// for the bindings in use, so new clients can never make a renewal's commit fail.
pub const STORE_REFUSE_NEW_FRACTION: f64 = 0.90;
/// Share below which new leases are given again (hysteresis).
pub const STORE_RESUME_NEW_FRACTION: f64 = 0.85;

/// How the store's use moved between checks: the basis of [`watch_map`]'s look ahead.
struct MapWatch {
    /// Bytes used at the last check (as [`watch_map`] counts them).
    last_used: u64,
    /// The most one commit has added so far.
    step_max: u64,
    /// The most the journals have held so far.
    journal_max: u64,
}

/// Watches how full the store's map is (the pages the data uses), after every commit, and
/// sets `refusing` (read by the workers per batch) when past [`STORE_REFUSE_NEW_FRACTION`],
/// clearing it below [`STORE_RESUME_NEW_FRACTION`]. It looks two of the largest commits
/// ahead: what is already queued when the flag goes up still lands (a flood of 40,000
/// clients a second added 8 % of a 16 MiB map between two checks a quarter of a second apart,
/// and the commit past the end failed with MDB_MAP_FULL), and a commit copies the pages it
/// changes. The journals count at the most they have held: they fill and a fold empties
/// them, every 32,768 changes under load, and counted as they stand they made the flag go up
/// at a journal's peak and down a second later, when a fold had emptied it.
fn watch_map(store: &Store, refusing: &AtomicBool, hub: &MetricsHub, w: &mut MapWatch) {
    let u = store.map_use();
    w.journal_max = w.journal_max.max(u.journal_bytes);
    let (used, size) = (u.data_bytes + w.journal_max, u.map_bytes);
    w.step_max = w.step_max.max(used.saturating_sub(w.last_used));
    w.last_used = used;
    let ahead = used.saturating_add(w.step_max.saturating_mul(2));
    let share = ahead as f64 / size.max(1) as f64;
    let was = refusing.load(Ordering::Relaxed);
    let now = if was {
        share >= STORE_RESUME_NEW_FRACTION
    } else {
        share >= STORE_REFUSE_NEW_FRACTION
    };
    if now != was {
        refusing.store(now, Ordering::Relaxed);
        if now {
            error!(
                used_mib = used >> 20,
                map_mib = size >> 20,
                largest_commit_kib = w.step_max >> 10,
                "store {:.0} % full (two of the largest commits ahead: {:.0} %): no new leases until it is below {:.0} % (renewals go on); raise server.map_size_mib",
                used as f64 / size.max(1) as f64 * 100.0,
                share * 100.0,
                STORE_RESUME_NEW_FRACTION * 100.0
            );
        } else {
            info!(
                used_mib = used >> 20,
                map_mib = size >> 20,
                "store below {:.0} %: new leases again",
                STORE_RESUME_NEW_FRACTION * 100.0
            );
        }
    }
    hub.publish_store(u.data_bytes + u.journal_bytes, size, now);
}

/// The committer thread's loop, until every sender is gone; a commit starts at most every
/// `interval` (`server.commit_interval_us`).
pub fn run_committer(
    store: Arc<Store>,
    rx: Receiver<CommitJob<PendingReply>>,
    mut sink: ReplySink,
    interval: Duration,
    refusing: Arc<AtomicBool>,
) -> CommitStats {
    let mut last = CommitStats::default();
    let mut last_at = Instant::now();
    let hub = sink.hub.clone();
    let start = store.map_use();
    let mut w = MapWatch {
        last_used: start.data_bytes + start.journal_bytes,
        step_max: 0,
        journal_max: start.journal_bytes,
    };
    watch_map(&store, &refusing, &hub, &mut w);
    let w = std::cell::RefCell::new(w);
    store::run_group_commit(
        &store,
        rx,
        &mut sink,
        interval,
        PUBLISH_INTERVAL,
        store::CommitRetry::default(),
        || watch_map(&store, &refusing, &hub, &mut w.borrow_mut()),
        |st| {
            hub.publish_commit(*st);
            watch_map(&store, &refusing, &hub, &mut w.borrow_mut());
            if last_at.elapsed() >= STATS_INTERVAL {
                if st.commits != last.commits {
                    let per_commit = (st.leases - last.leases) as f64
                        / (st.commits - last.commits).max(1) as f64;
                    info!(
                        commits = st.commits - last.commits,
                        leases = st.leases - last.leases,
                        leases_per_commit = format_args!("{per_commit:.1}"),
                        failures = st.failures,
                        "group commit"
                    );
                }
                last = *st;
                last_at = Instant::now();
            }
        },
    )
}
