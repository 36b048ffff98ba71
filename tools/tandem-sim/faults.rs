//! The fault schedule: crashes (keeping or wiping the store) and partner-link partitions,
//! drawn from the seed over the fault phase; then the heal. (Client packet faults are in
//! `clients.rs`, the [`Buggify`](crate::Buggify) switches in the stages that use them.)

use crate::world::{Ev, World};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

impl World {
    /// Crashes and partitions over the fault phase (times from 0), then the heal.
    fn schedule_faults(&mut self) {
        let hours = self.cfg.fault_secs as f64 / 3600.0;
        let crashes = (self.cfg.crashes_per_hour as f64 * hours).round() as u64;
        for _ in 0..crashes {
            let at = 10_000 + self.rng.below(self.cfg.fault_secs * 1000);
            let node = self.rng.below(2) as usize;
            let wipe = self.rng.permille(self.cfg.wipe_permille);
            self.push(at, Ev::Crash { node, wipe });
        }
        let parts = (self.cfg.partitions_per_hour as f64 * hours).round() as u64;
        for _ in 0..parts {
            let at = 10_000 + self.rng.below(self.cfg.fault_secs * 1000);
            let one_way = self.draw_one_way();
            // Mostly short (flapping), sometimes long.
            let len = if self.rng.below(3) == 0 {
                60_000 + self.rng.below(240_000)
            } else {
                500 + self.rng.below(8_000)
            };
            self.schedule_partition(at, len, one_way);
        }
        self.push(self.cfg.fault_secs * 1000, Ev::Heal);
    }

    /// Whether a partition is one-way, and from which server.
    pub(crate) fn draw_one_way(&mut self) -> Option<usize> {
        self.rng
            .permille(self.cfg.one_way_permille)
            .then(|| self.rng.below(2) as usize)
    }

    /// A partition from `at` for `len_ms`.
    pub(crate) fn schedule_partition(&mut self, at: u64, len_ms: u64, one_way_from: Option<usize>) {
        self.push(at, Ev::PartitionStart { one_way_from });
        self.push(at + len_ms, Ev::PartitionEnd);
    }

    /// [`World::schedule_faults`], shifted to start at `start_ms`.
    pub(crate) fn schedule_faults_at(&mut self, start_ms: u64) {
        // Fault times are drawn relative to 0; shift them to the run's start.
        let before = self.next_ev;
        self.schedule_faults();
        let mut shifted = BinaryHeap::new();
        for Reverse((at, id)) in self.queue.drain() {
            let t = if id >= before { at + start_ms } else { at };
            shifted.push(Reverse((t, id)));
        }
        self.queue = shifted;
    }
}
