//! The group committer: takes every queued commit job, writes them in one LMDB transaction
//! with one fsync, then releases the replies waiting for those leases ([`ReplySink`]).

use super::stats::STATS_INTERVAL;
use super::{PendingReply, hex, partner, udp};
use crate::store::{self, AfterCommit, CommitJob, CommitStats, Store, StoreError};
use crossbeam_channel::Receiver;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::lease::{Lease, LeaseState};
use tracing::{debug, error, info};

/// Sends replies once the group committer made their leases durable.
pub struct ReplySink {
    pub(super) sockets: Vec<UdpSocket>,
    pub(super) send_errors: u64,
    /// The failover partner thread, told of every durable change.
    pub(super) partner: Option<partner::PartnerNotifier>,
}

impl AfterCommit<PendingReply> for ReplySink {
    fn written(&mut self, leases: &mut dyn Iterator<Item = &Lease>) {
        if let Some(p) = &self.partner {
            p.committed(
                leases
                    .filter(|l| l.state != LeaseState::Offered)
                    .cloned()
                    .collect(),
            );
        }
    }
    fn durable(&mut self, released: &mut Vec<PendingReply>) {
        // One sendmmsg per socket for the whole batch instead of a sendto per reply; under
        // load a group commit releases about a hundred replies at once.
        released.sort_by_key(|r| r.socket);
        let mut start = 0;
        while start < released.len() {
            let sock = released[start].socket;
            let end = start
                + released[start..]
                    .iter()
                    .take_while(|r| r.socket == sock)
                    .count();
            let sent = udp::send_batch(&self.sockets[sock], &released[start..end]);
            for r in &released[start + sent..end] {
                if let Err(e) = udp::send_to(&self.sockets[sock], r.to, &r.bytes) {
                    self.send_errors += 1;
                    debug!(to = %r.to, error = %e, "reply send failed");
                }
            }
            start = end;
        }
        released.clear();
    }
    fn failed(&mut self, dropped: &mut Vec<PendingReply>, e: &StoreError) {
        error!(error = %e, replies = dropped.len(), "commit failed; replies withheld (clients will retransmit)");
        dropped.clear();
    }
}

/// Logs one lease change at info (`via`: the message or event that made it).
pub fn log_lease(l: &Lease, via: &str) {
    let what = match l.state {
        LeaseState::Active if via == "Renew" || via == "Rebind" => "lease renewed",
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
        via,
        "{what}"
    );
}

/// The committer thread's loop, until every sender is gone.
pub fn run_committer(
    store: Arc<Store>,
    rx: Receiver<CommitJob<PendingReply>>,
    mut sink: ReplySink,
) -> CommitStats {
    let mut last = CommitStats::default();
    let mut last_at = Instant::now();
    store::run_group_commit(&store, rx, &mut sink, Duration::from_millis(500), |st| {
        if last_at.elapsed() >= STATS_INTERVAL {
            if st.commits != last.commits {
                let per_commit =
                    (st.leases - last.leases) as f64 / (st.commits - last.commits).max(1) as f64;
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
    })
}
