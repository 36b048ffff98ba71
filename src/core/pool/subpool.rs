//! One sub-pool: its slots, never-used cursors, free lists, PENDING-FREE queue and expiry
//! index; and the pools and subnets built from them.

use super::PoolUsage;
use crate::config::{Lifetimes, PoolConfig, ResourceKind};
use crate::lease::{Lease, LeaseState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Clone, Copy)]
pub(super) struct ResRef {
    pub(super) pool: u16,
    pub(super) index: u128,
}

pub(super) struct Slot {
    pub(super) lease: Lease,
    pub(super) in_free_list: bool,
    pub(super) in_pending: bool,
}

pub(super) struct SubPool {
    /// First index of this sub-pool (inclusive).
    pub(super) start: u128,
    /// One past the last index.
    pub(super) end: u128,
    /// Per owner bit: the next never-used candidate (steps by 2, so each cursor walks one
    /// owner's half; indices below it have been looked at).
    pub(super) cursor: [u128; 2],
    /// Per owner bit: indices that became free, oldest first. Entries may be stale (the slot was
    /// taken back by its old client); they are skipped when popped. Each index is in at most once.
    pub(super) free: [VecDeque<u128>; 2],
    /// Added to an index before taking its low bit as the owner bit (the pool's first
    /// address's parity for address pools, 0 for prefix pools).
    pub(super) flip: u128,
    /// Failover: freed leases wait here (PENDING-FREE, RFC 8156 §4.2) until the partner
    /// acknowledges the change, oldest first; only then may another client have them.
    pub(super) pending: VecDeque<u128>,
    /// Whether this table serves a failover endpoint (PENDING-FREE applies).
    pub(super) failover: bool,
    /// Every resource that is or was in use, by index.
    pub(super) slots: HashMap<u128, Slot>,
    /// (expires_at, index) for every slot whose state ends by time: active, offered, declined.
    pub(super) expiry: BTreeSet<(u64, u128)>,
    /// (expires_at, index) for every slot whose lease ended (expired or released): the record
    /// is forgotten `keep_ended_secs` later ([`SubPool::forget`]).
    pub(super) ended: BTreeSet<(u64, u128)>,
    pub(super) usage: PoolUsage,
    /// Reserved indices and the reservation (id in the subnet) each belongs to: never handed
    /// out dynamically, only to that reservation's client.
    pub(super) reserved: HashMap<u128, u32, foldhash::fast::RandomState>,
}

impl SubPool {
    pub(super) fn new(start: u128, end: u128, flip: u128, failover: bool) -> Self {
        let first = |b: u128| {
            if (start + flip) & 1 == b {
                start
            } else {
                start + 1
            }
        };
        SubPool {
            start,
            end,
            cursor: [first(0), first(1)],
            free: [VecDeque::new(), VecDeque::new()],
            flip,
            pending: VecDeque::new(),
            failover,
            slots: HashMap::new(),
            expiry: BTreeSet::new(),
            ended: BTreeSet::new(),
            usage: PoolUsage::default(),
            reserved: HashMap::default(),
        }
    }

    /// Whether `index` is reserved for a client other than the one holding reservation
    /// `mine` (none: any reserved index is someone else's).
    pub(super) fn reserved_for_other(&self, index: u128, mine: Option<u32>) -> bool {
        self.reserved
            .get(&index)
            .is_some_and(|owner| Some(*owner) != mine)
    }

    pub(super) fn count(&mut self, state: LeaseState, delta: i64) {
        let c = match state {
            LeaseState::Active => &mut self.usage.active,
            LeaseState::Declined => &mut self.usage.declined,
            LeaseState::Offered => &mut self.usage.offered,
            _ => return,
        };
        // A counter never goes below zero: a decrement without its increment means the
        // table and its counters disagree.
        assert!(
            delta >= 0 || *c >= delta.unsigned_abs(),
            "pool usage counter for {state} went below zero"
        );
        *c = c.saturating_add_signed(delta);
    }

    pub(super) fn owner(&self, index: u128) -> usize {
        ((index + self.flip) & 1) as usize
    }

    /// Picks a never-used index of owner `bit` from its cursor. O(1) amortised.
    pub(super) fn take_never_used(&mut self, bit: usize) -> Option<u128> {
        while self.cursor[bit] < self.end {
            let i = self.cursor[bit];
            self.cursor[bit] += 2;
            if !self.slots.contains_key(&i) && !self.reserved.contains_key(&i) {
                return Some(i);
            }
        }
        None
    }

    /// Picks the oldest freed index of owner `bit`. O(1) amortised (stale entries are
    /// skipped once).
    pub(super) fn take_freed(&mut self, bit: usize) -> Option<u128> {
        while let Some(i) = self.free[bit].pop_front() {
            let failover = self.failover;
            let reserved = self.reserved.contains_key(&i);
            match self.slots.get_mut(&i) {
                Some(s) => {
                    s.in_free_list = false;
                    if reusable(failover, &s.lease) && !reserved {
                        return Some(i);
                    }
                }
                // Its record was forgotten while it waited here: as good as never used (the
                // cursor has passed it, so this entry is its only way back).
                None if !reserved => return Some(i),
                None => {}
            }
        }
        None
    }

    /// Deletes the record of the ended lease at `index` (the resource is then as good as
    /// never used). Only a lease another client could have now (free, and under failover
    /// acknowledged by the partner) is forgotten; it is in the free list already, which
    /// [`SubPool::take_freed`] serves. Returns the record.
    pub(super) fn forget(&mut self, index: u128) -> Option<Lease> {
        let s = self.slots.get(&index)?;
        if !(s.lease.state.is_free() && self.failover_reusable(&s.lease) && s.in_free_list) {
            return None;
        }
        let s = self.slots.remove(&index)?;
        self.ended.remove(&(s.lease.expires_at, index));
        Some(s.lease)
    }

    /// Whether a free lease may go to another client: at once without failover; under
    /// failover once the partner acknowledged it became free (`partner_ack_until` is then the
    /// time of that acknowledgement; 0 means PENDING-FREE).
    pub(super) fn failover_reusable(&self, l: &Lease) -> bool {
        reusable(self.failover, l)
    }

    /// Whether the resource at `index` may go to a new client.
    pub(super) fn is_free(&self, index: u128) -> bool {
        self.slots
            .get(&index)
            .is_none_or(|s| self.failover_reusable(&s.lease))
    }

    /// Moves the slot at `index` to a new lease value, keeping the expiry index, counters and
    /// free list in step. The slot must exist or `lease` is inserted.
    ///
    /// Invariants checked here, in release builds too (each is a compare or the return value
    /// of an operation already made): the index belongs to this sub-pool; a timed slot's
    /// `(end_of_state, index)` is in the expiry index exactly while the slot is timed; a slot
    /// is queued at most once in the free list and once in PENDING-FREE.
    pub(super) fn set(&mut self, index: u128, lease: Lease) {
        assert!(
            (self.start..self.end).contains(&index),
            "index {index} set in the sub-pool [{}, {})",
            self.start,
            self.end
        );
        let (old_state, old_exp, old_expires_at, in_free, in_pending) = match self.slots.get(&index)
        {
            Some(s) => (
                Some(s.lease.state),
                end_of_state(&s.lease),
                s.lease.expires_at,
                s.in_free_list,
                s.in_pending,
            ),
            None => (None, 0, 0, false, false),
        };
        if let Some(st) = old_state
            && st.is_free()
        {
            self.ended.remove(&(old_expires_at, index));
        }
        if lease.state.is_free() {
            self.ended.insert((lease.expires_at, index));
        }
        if let Some(st) = old_state {
            self.count(st, -1);
            if timed(st) {
                let was_indexed = self.expiry.remove(&(old_exp, index));
                assert!(
                    was_indexed,
                    "expiry index lost ({old_exp}, {index}) of a {st} lease"
                );
            }
        }
        self.count(lease.state, 1);
        if timed(lease.state) {
            let fresh = self.expiry.insert((end_of_state(&lease), index));
            assert!(
                fresh,
                "expiry index already held ({index}) for a new {} lease",
                lease.state
            );
        }
        let reusable = self.failover_reusable(&lease);
        let push = reusable && !in_free;
        if push {
            let b = self.owner(index);
            self.free[b].push_back(index);
        }
        let pend = lease.state.is_free() && !reusable && !in_pending;
        if pend {
            self.pending.push_back(index);
        }
        self.slots.insert(
            index,
            Slot {
                lease,
                in_free_list: in_free || push,
                in_pending: in_pending || pend,
            },
        );
    }
}

/// When a lease's current state ends. An active lease the partner told us about stays in use
/// until the partner lifetime it sent: RFC 8156 lets the partner count on it until then.
pub(super) fn end_of_state(l: &Lease) -> u64 {
    match l.state {
        LeaseState::Active => l.expires_at.max(l.partner_lifetime_received),
        _ => l.expires_at,
    }
}

/// See [`SubPool::failover_reusable`].
pub(super) fn reusable(failover: bool, l: &Lease) -> bool {
    l.state.is_free() && (!failover || l.partner_ack_until > 0)
}

pub(super) fn timed(s: LeaseState) -> bool {
    matches!(
        s,
        LeaseState::Active | LeaseState::Offered | LeaseState::Declined
    )
}

pub(super) struct PoolState {
    pub(super) cfg: PoolConfig,
    pub(super) subpool_size: u128,
    pub(super) subpools: Box<[Mutex<SubPool>]>,
}

impl PoolState {
    pub(super) fn new(cfg: PoolConfig, failover: bool) -> Self {
        let n = cfg.subpools.max(1) as u128;
        let size = cfg.count.div_ceil(n);
        let subpools = (0..n)
            .map(|k| {
                let start = (k * size).min(cfg.count);
                let end = ((k + 1) * size).min(cfg.count);
                let flip = match cfg.kind {
                    ResourceKind::Address => cfg.first & 1,
                    ResourceKind::Prefix => 0,
                };
                Mutex::new(SubPool::new(start, end, flip, failover))
            })
            .collect();
        PoolState {
            cfg,
            subpool_size: size,
            subpools,
        }
    }
    pub(super) fn subpool_of(&self, index: u128) -> &Mutex<SubPool> {
        let k = (index / self.subpool_size) as usize;
        &self.subpools[k.min(self.subpools.len() - 1)]
    }
}

pub(super) struct SubnetPools {
    pub(super) id: u32,
    pub(super) lifetimes: Lifetimes,
    pub(super) pools: Vec<PoolState>,
}
