//! One sub-pool: its slots, never-used cursors, free lists, PENDING-FREE queue and expiry
//! index; and the pools and subnets built from them.

use super::PoolUsage;
use super::expiry::ExpiryIndex;
use super::grow::GrowAt;
use super::slots::SlotTable;
use crate::config::{Lifetimes, PoolConfig, ResourceKind};
use crate::lease::{Lease, LeaseState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

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
    /// Per owner bit: where the walk over never-used candidates is. By parity
    /// (`backup_share` None): the next candidate, stepping by 2 so each cursor walks one
    /// owner's half upward. By share: the primary's (bit 1) walks its bottom part upward from
    /// `start` (the next candidate), the secondary's (bit 0) its top part downward from `end`
    /// (one past the next candidate), so the two meet where the share moves.
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
    pub(super) slots: SlotTable,
    /// (end of state, index) for every slot whose state ends by time and is not an offer:
    /// active, declined.
    pub(super) expiry: ExpiryIndex,
    /// (expires_at, index) of every offer made, in the order made: offers are held for one
    /// fixed time, so this is (nearly: workers' clocks are read per batch) in time order, and
    /// an offer costs a push instead of a B-tree insert and remove. Entries go stale when the
    /// offer becomes a binding or is made again; the reclaimer skips those. Bounded by the
    /// offers made within one hold time.
    pub(super) offers: VecDeque<(u64, u128)>,
    /// (expires_at, index) for every slot whose lease ended (expired or released): the record
    /// is forgotten `keep_ended_secs` later ([`SubPool::forget`]).
    pub(super) ended: BTreeSet<(u64, u128)>,
    pub(super) usage: PoolUsage,
    /// Reserved indices and the reservation (id in the subnet) each belongs to: never handed
    /// out dynamically, only to that reservation's client.
    /// Reserved index → the reservation's key ([`crate::config::ReservationKey::stable_id`]).
    pub(super) reserved: HashMap<u128, u64, foldhash::fast::RandomState>,
    /// A failover prefix sub-pool's split (issue 10 item 6): its top this-many indices are the
    /// secondary's (owner bit 0), the rest the primary's; the primary moves it, and with it
    /// which free prefixes each may delegate ([`SubPool::set_backup_share`]). `None`: owner by
    /// parity (addresses, and prefixes of a server without a partner).
    pub(super) backup_share: Option<u128>,
    /// When `offers` grows ([`GrowAt`]: the sub-pools of a pool fill alike, so
    /// they would otherwise all double at once).
    grow: GrowAt,
}

impl SubPool {
    /// The sub-pool `[start, end)`, number `k` of its pool (which sets its [`GrowAt`]).
    pub(super) fn new(start: u128, end: u128, flip: u128, failover: bool, k: usize) -> Self {
        let grow = GrowAt::nth(k);
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
            slots: SlotTable::by_parity(start, end, flip, grow),
            expiry: ExpiryIndex::growing_at(grow),
            offers: VecDeque::new(),
            ended: BTreeSet::new(),
            usage: PoolUsage::default(),
            reserved: HashMap::default(),
            backup_share: None,
            grow,
        }
    }

    /// First index of the secondary's part under a share split (`end` if it holds none).
    pub(super) fn share_start(&self, share: u128) -> u128 {
        self.end - share.min(self.end - self.start)
    }

    /// Splits this sub-pool by share: its top `share` indices become the secondary's, the
    /// rest the primary's. Free resources that change owner move to their new owner's free
    /// list; never-used ones are reached by the new owner's cursor (the two cursors walk
    /// toward each other, so each one's part always lies on its side of where it stands, or
    /// was looked at already and is in use or in a free list).
    pub(super) fn set_backup_share(&mut self, share: u128) {
        let first = self.backup_share.is_none();
        self.backup_share = Some(share);
        if first {
            self.cursor = [self.end, self.start];
            self.slots.split_at_ends();
            self.settle_cursors();
        }
        let mut moved: [Vec<u128>; 2] = [Vec::new(), Vec::new()];
        for b in 0..2 {
            let mut keep = VecDeque::with_capacity(self.free[b].len());
            for i in self.free[b].drain(..) {
                let owner = owner_by_share(i, self.end - share.min(self.end - self.start));
                if owner == b {
                    keep.push_back(i);
                } else {
                    moved[owner].push(i);
                }
            }
            self.free[b] = keep;
        }
        for (b, v) in moved.into_iter().enumerate() {
            self.free[b].extend(v);
        }
    }

    /// Whether `index` is reserved for a client other than the one holding reservation
    /// `mine` (none: any reserved index is someone else's).
    pub(super) fn reserved_for_other(&self, index: u128, mine: Option<u64>) -> bool {
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
        match self.backup_share {
            Some(share) => owner_by_share(index, self.share_start(share)),
            None => ((index + self.flip) & 1) as usize,
        }
    }

    /// Picks a never-used index of owner `bit` from its cursor. O(1) amortised.
    pub(super) fn take_never_used(&mut self, bit: usize) -> Option<u128> {
        let unused =
            |sp: &Self, i: u128| !sp.slots.contains_key(&i) && !sp.reserved.contains_key(&i);
        match self.backup_share {
            None => {
                while self.cursor[bit] < self.end {
                    let i = self.cursor[bit];
                    self.cursor[bit] += 2;
                    if unused(self, i) {
                        return Some(i);
                    }
                }
            }
            Some(share) => {
                let split = self.share_start(share);
                if bit == super::PRIMARY_BIT {
                    while self.cursor[bit] < split {
                        let i = self.cursor[bit];
                        self.cursor[bit] += 1;
                        if unused(self, i) {
                            return Some(i);
                        }
                    }
                } else {
                    while self.cursor[bit] > split {
                        self.cursor[bit] -= 1;
                        let i = self.cursor[bit];
                        if unused(self, i) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        None
    }

    /// After a restart: moves each cursor past the run of used indices it stands on (its
    /// walk skips them anyway; this does it once, at start, rather than on the first
    /// allocations). A cursor never jumps over an index without a record: that may be a
    /// resource never handed out (an offer that lapsed, a record forgotten), and jumping
    /// would lose it for good.
    pub(super) fn settle_cursors(&mut self) {
        let used = |sp: &Self, i: u128| sp.slots.contains_key(&i) || sp.reserved.contains_key(&i);
        match self.backup_share {
            None => {
                for b in 0..2 {
                    while self.cursor[b] < self.end && used(self, self.cursor[b]) {
                        self.cursor[b] += 2;
                    }
                }
            }
            Some(share) => {
                let split = self.share_start(share);
                let p = super::PRIMARY_BIT;
                while self.cursor[p] < split && used(self, self.cursor[p]) {
                    self.cursor[p] += 1;
                }
                let s = 1 - p;
                while self.cursor[s] > split && used(self, self.cursor[s] - 1) {
                    self.cursor[s] -= 1;
                }
            }
        }
    }

    /// Offsets from `end` (0 = the top index) of the resources that are not free (not reserved,
    /// and no record or a free one the partner acknowledged), ascending: what the primary needs to choose a share.
    pub(super) fn busy_offsets_from_top(&self) -> Vec<u128> {
        let mut v: Vec<u128> = self
            .slots
            .iter()
            .filter(|(i, s)| self.reserved.contains_key(i) || !self.failover_reusable(&s.lease))
            .map(|(i, _)| self.end - 1 - i)
            .chain(
                self.reserved
                    .keys()
                    .filter(|i| !self.slots.contains_key(i))
                    .map(|i| self.end - 1 - i),
            )
            .collect();
        v.sort_unstable();
        v
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
            if indexed(st) {
                let was_indexed = self.expiry.remove((old_exp, index));
                assert!(
                    was_indexed,
                    "expiry index lost ({old_exp}, {index}) of a {st} lease"
                );
            }
        }
        self.count(lease.state, 1);
        if indexed(lease.state) {
            let fresh = self.expiry.insert((end_of_state(&lease), index));
            assert!(
                fresh,
                "expiry index already held ({index}) for a new {} lease",
                lease.state
            );
        } else if lease.state == LeaseState::Offered {
            self.grow.before_push(&mut self.offers);
            self.offers.push_back((lease.expires_at, index));
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

/// Owner bit of `index` when the secondary's part starts at `split`.
fn owner_by_share(index: u128, split: u128) -> usize {
    if index >= split {
        1 - super::PRIMARY_BIT
    } else {
        super::PRIMARY_BIT
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

/// Whether a lease in state `s` is kept in [`SubPool::expiry`] (the timed states but offers,
/// which [`SubPool::offers`] holds).
fn indexed(s: LeaseState) -> bool {
    timed(s) && s != LeaseState::Offered
}

/// Where a pool's sub-pools start in the sequence of [`GrowAt::nth`].
fn grow_offset(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Address => 0,
        ResourceKind::Prefix => super::grow::PREFIX_POOLS_FROM,
    }
}

pub(super) struct PoolState {
    pub(super) cfg: PoolConfig,
    pub(super) subpool_size: u128,
    pub(super) subpools: Box<[Mutex<SubPool>]>,
    /// Failover prefix pools: the share in force ([`super::share`]); taken before any
    /// sub-pool lock when it changes. `None`: not split (yet).
    pub(super) share: Mutex<Option<u128>>,
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
                // A subnet's address and prefix pools fill alike too: their sub-pools take
                // different growth points.
                let nth = k as usize + grow_offset(cfg.kind);
                Mutex::new(SubPool::new(start, end, flip, failover, nth))
            })
            .collect();
        PoolState {
            cfg,
            subpool_size: size,
            subpools,
            share: Mutex::new(None),
        }
    }
    pub(super) fn subpool_of(&self, index: u128) -> &Mutex<SubPool> {
        &self.subpools[self.subpool_number(index)]
    }

    /// Which of [`PoolState::subpools`] holds `index`.
    pub(super) fn subpool_number(&self, index: u128) -> usize {
        let k = (index / self.subpool_size) as usize;
        k.min(self.subpools.len() - 1)
    }
}

pub(super) struct SubnetPools {
    pub(super) id: u32,
    pub(super) lifetimes: Lifetimes,
    /// Shared with the allocator a reload builds ([`super::Allocator::reconfigured`]): the
    /// old and the new allocator work on the same pools while workers move to the new one.
    pub(super) pools: Vec<Arc<PoolState>>,
}
