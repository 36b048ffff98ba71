//! The fault schedule: crashes (keeping or wiping the store) and partner-link partitions,
//! drawn from the seed over the fault phase; then the heal. (Client packet faults are in
//! `clients.rs`, the [`Buggify`](crate::Buggify) switches in the stages that use them.)

use crate::SimFailure;
use crate::world::{Ev, World};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tandem_core::failover::node::NodeOut;

impl World {
    /// Crashes and partitions over the fault phase (times from 0), then the heal.
    fn schedule_faults(&mut self) {
        let hours = self.cfg.fault_secs as f64 / 3600.0;
        let crashes = (self.cfg.crashes_per_hour as f64 * hours).round() as u64;
        let m_to_1 = self.cfg.modes.m_to_1.is_some();
        for _ in 0..crashes {
            let at = 10_000 + self.rng.below(self.cfg.fault_secs * 1000);
            let mut node = self.rng.below(2) as usize;
            let wipe = self.rng.permille(self.cfg.wipe_permille);
            if m_to_1 {
                node = self.rng.below(3) as usize;
            }
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
            // m-to-1: one relationship's network, or the hub's, which cuts both (one way: from
            // the hub, or to it).
            let cut = if m_to_1 { self.rng.below(3) } else { 0 };
            if cut < 2 {
                self.schedule_partition(cut as usize, at, len, one_way);
            } else {
                for rel in 0..2 {
                    let hub_side = (self.ends[2 * rel].server != 1) as usize;
                    let side = one_way.map(|s| if s == 0 { hub_side } else { 1 - hub_side });
                    self.schedule_partition(rel, at, len, side);
                }
            }
        }
        if self.cfg.modes.split_brain {
            self.schedule_split_brain();
        }
        self.push(self.cfg.fault_secs * 1000, Ev::Heal);
    }

    /// Split-brain mode: a partition longer than MCLT in the first half of the fault phase;
    /// once each side has noticed, the operator declares PARTNER-DOWN on one of them, and in
    /// two runs of three on the other too (m-to-1: in one of the relationships).
    fn schedule_split_brain(&mut self) {
        let start = 10_000 + self.rng.below(self.cfg.fault_secs * 1000 / 2);
        let longest_mclt = self.rels.iter().map(|r| r.mclt_secs).max().unwrap_or(0);
        let len = (longest_mclt + 60 + self.rng.below(180)) * 1000;
        let first = self.rng.below(2) as usize;
        let noticed = (self.cfg.keepalive_secs + 2) * 1000;
        let d1 = noticed + self.rng.below(20_000);
        let second = (self.rng.below(3) != 0).then(|| d1 + self.rng.below(40_000));
        let rel = if self.cfg.modes.m_to_1.is_some() {
            self.rng.below(2) as usize
        } else {
            0
        };
        self.push(start, Ev::SplitStart { rel });
        self.push(
            start + d1,
            Ev::SplitBrainDown {
                node: 2 * rel + first,
            },
        );
        if let Some(d2) = second {
            self.push(
                start + d2,
                Ev::SplitBrainDown {
                    node: 2 * rel + (1 - first),
                },
            );
        }
        self.push(start + len, Ev::SplitEnd { rel });
    }

    /// The split brain's partition of `rel` begins (both ways; it takes over a regular one in
    /// progress).
    pub(crate) fn split_start(&mut self, rel: usize) {
        if self.healing || self.declared_down_running(rel) {
            self.note("split brain skipped (a server declared down is back)".into());
            return;
        }
        if self.rels[rel].partition.is_none() {
            self.report.partitions += 1;
        }
        self.rels[rel].partition = Some(None);
        self.rels[rel].split = true;
        self.note("split-brain partition: both ways, until its own end".into());
    }

    /// The operator declares the partner of endpoint `e` down while it is only cut off: what
    /// an operator who cannot reach it and believes it dead does, against RFC 8156's rule
    /// that PARTNER-DOWN is for a partner known not to be serving.
    pub(crate) fn split_brain_down(&mut self, e: usize) -> Result<(), SimFailure> {
        if !self.rels[World::rel_of(e)].split || !self.end_up(e) || !self.linked_since_start[e] {
            return Ok(());
        }
        let now = self.end_now(e);
        let mut out = NodeOut::default();
        if let Some(x) = self.ends[e].node.as_mut() {
            x.operator_partner_down(now, &mut out);
        }
        self.note(format!(
            "operator: partner of {} is down (it is only cut off)",
            self.end_name(e)
        ));
        self.declared_down[e ^ 1] = true;
        self.apply(e, &mut out)
    }

    /// Whether a partition is one-way, and from which side.
    pub(crate) fn draw_one_way(&mut self) -> Option<usize> {
        self.rng
            .permille(self.cfg.one_way_permille)
            .then(|| self.rng.below(2) as usize)
    }

    /// A partition of `rel` from `at` for `len_ms`.
    pub(crate) fn schedule_partition(
        &mut self,
        rel: usize,
        at: u64,
        len_ms: u64,
        one_way_from: Option<usize>,
    ) {
        self.push(at, Ev::PartitionStart { rel, one_way_from });
        self.push(at + len_ms, Ev::PartitionEnd { rel });
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
