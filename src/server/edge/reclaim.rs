//! The reclaim timer of a server without a partner: leases whose time is up are freed through
//! the committer. (With a partner, the partner thread reclaims: the partner must hear.)

use super::{PendingReply, hex, now_secs};
use crate::store::{CommitJob, Store};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The reclaim thread's loop, until `stop`.
pub fn run_reclaimer(
    reloader: &super::reload::Reloader,
    tx: &Sender<CommitJob<PendingReply>>,
    store: &Store,
    stop: &AtomicBool,
    every: Duration,
    keep_ended_secs: u64,
) {
    let mut forgotten = Vec::new();
    let tick = every.min(Duration::from_millis(200));
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        // The table in force (a reload that adds pools replaces it).
        let alloc = reloader.allocator();
        let mut writes = Vec::new();
        let n = alloc.reclaim(now_secs(), &mut writes);
        if n > 0 {
            for l in &writes {
                debug!(lease = %format_args!("{}/{}", l.addr, l.prefix_len), duid = %hex(&l.duid), state = %l.state, "reclaimed");
            }
            info!(
                changed = n,
                stored = writes.len(),
                "reclaimed leases whose time was up"
            );
        }
        // Records of leases that ended longer ago than keep_ended_secs: out of the table, then
        // out of the store (a record left on disk by a failure is forgotten after a restart).
        forgotten.clear();
        if alloc.forget_ended(now_secs(), keep_ended_secs, &mut forgotten) > 0 {
            match store.forget(forgotten.iter()) {
                Ok(_) => debug!(
                    forgotten = forgotten.len(),
                    "records of leases ended longer than keep_ended_secs deleted (in the store's journal; a record changed since stays)"
                ),
                Err(e) => {
                    warn!(error = %e, records = forgotten.len(), "cannot delete the records of long-ended leases; they stay in the store")
                }
            }
        }
        if !writes.is_empty()
            && tx
                .send(CommitJob {
                    writes,
                    then: None,
                    announce: true,
                })
                .is_err()
        {
            break;
        }
    }
}
