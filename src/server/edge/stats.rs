//! Counters: each worker keeps its own values and sends them to the reporter, which merges them
//! and logs every [`STATS_INTERVAL`]. Nothing is shared while counting.

use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::info;

/// How often workers report their counters and the committer logs its own.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

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
}

impl WorkerStats {
    fn merge(&mut self, o: &WorkerStats) {
        self.received += o.received;
        self.replied_now += o.replied_now;
        self.replied_after_commit += o.replied_after_commit;
        self.send_errors += o.send_errors;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
    }
}

/// The reporter thread: merges what workers send and logs the totals.
pub fn run_reporter(rx: Receiver<(usize, WorkerStats)>, stop: &AtomicBool) {
    let mut latest: HashMap<usize, WorkerStats> = HashMap::new();
    let mut last_total = WorkerStats::default();
    let mut last_log = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Ok((id, s)) = rx.try_recv() {
            latest.insert(id, s);
        }
        if last_log.elapsed() >= STATS_INTERVAL || stopping {
            last_log = Instant::now();
            let mut total = WorkerStats::default();
            latest.values().for_each(|s| total.merge(s));
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
        std::thread::sleep(Duration::from_millis(200));
    }
}
