//! A sub-pool's expiry index: (end of state, index) of every lease whose state ends by time
//! (active, declined), in time order, for the reclaimer to take from the front.
//!
//! A pool grants one lifetime from one clock, so nearly every entry comes later than all the
//! others: those are appended to a sorted queue (`ordered`), a push where a B-tree insert cost
//! a walk down the tree and a node split every few entries (5 % of an AF_XDP worker's samples).
//! Nearly: leases granted in one second share their end, and their indices come in the order
//! the clients' Requests do, not the order of the offers that picked them; two workers' clocks
//! differ by a batch. So an entry that belongs among the last [`TAIL_INSERT_MAX`] of the queue
//! is put in its place (a shift of those after it). Entries that come earlier still (a
//! decline's hold, the partner's times, a lifetime the client asked to be shorter) go to a
//! B-tree (`other`). A removed entry of the
//! queue is found by binary search and marked dead in place; dead entries at the front are
//! dropped as the front is read, and the queue is compacted when they outnumber the live ones
//! (checked after each removal and pop), so it holds at most about twice the live entries.

use super::grow::GrowAt;
use std::collections::{BTreeSet, VecDeque};

/// Dead entries the queue may hold before it is compacted, whatever the live count.
const DEAD_MIN_BEFORE_COMPACT: usize = 64;

/// How near the back of the queue (in entries) an entry that comes out of order may land and
/// still be put in its place rather than in the B-tree: the most entries one insert shifts.
/// Sent to the B-tree, the shuffle of one second's grants (see the module's text) made its
/// searches, done by every insert once it holds anything, 41 % of `SubPool::set`'s samples.
pub(super) const TAIL_INSERT_MAX: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Entry {
    end: u64,
    /// Removed: skipped, and dropped from the front or by compaction.
    dead: bool,
    index: u128,
}

impl Entry {
    fn key(&self) -> (u64, u128) {
        (self.end, self.index)
    }
}

/// The expiry index: a set of (end of state, index), ordered.
pub(super) struct ExpiryIndex {
    /// Entries appended in order or put in place near the back, dead ones included, sorted by
    /// key.
    ordered: VecDeque<Entry>,
    /// Dead entries in `ordered`.
    dead: usize,
    /// Entries that came out of order, too far from the back of `ordered`.
    other: BTreeSet<(u64, u128)>,
    /// [`TAIL_INSERT_MAX`] (smaller in tests, so that both paths are taken).
    tail_max: usize,
    /// When `ordered` grows (its sub-pool's).
    grow: GrowAt,
}

impl ExpiryIndex {
    /// An empty index that grows at `grow` (its sub-pool's).
    pub(super) fn growing_at(grow: GrowAt) -> Self {
        ExpiryIndex {
            grow,
            ..ExpiryIndex::with_tail(TAIL_INSERT_MAX)
        }
    }

    fn with_tail(tail_max: usize) -> Self {
        ExpiryIndex {
            ordered: VecDeque::new(),
            dead: 0,
            other: BTreeSet::new(),
            tail_max,
            grow: GrowAt::nth(0),
        }
    }

    /// Adds `key`; false if it is held already.
    pub(super) fn insert(&mut self, key: (u64, u128)) -> bool {
        if !self.other.is_empty() && self.other.contains(&key) {
            return false;
        }
        let entry = Entry {
            end: key.0,
            dead: false,
            index: key.1,
        };
        self.grow.before_push(&mut self.ordered);
        let last = match self.ordered.back() {
            None => {
                self.ordered.push_back(entry);
                return true;
            }
            Some(e) => e.key(),
        };
        if key > last {
            self.ordered.push_back(entry);
            return true;
        }
        // Out of order. Near the back: in its place, found among the last `tail_max` entries
        // (in cache, unlike a search of the whole queue).
        let len = self.ordered.len();
        let lo = len.saturating_sub(self.tail_max);
        if lo == 0 || (lo < len && self.ordered[lo].key() <= key) {
            let pos = self.partition_from(lo, key);
            if pos < len && self.ordered[pos].key() == key {
                return self.revive(pos);
            }
            self.ordered.insert(pos, entry);
            return true;
        }
        match self.find(key) {
            Some(pos) => self.revive(pos),
            None => self.other.insert(key),
        }
    }

    /// The first position at or after `lo` whose entry's key is not below `key` (the queue is
    /// sorted).
    fn partition_from(&self, lo: usize, key: (u64, u128)) -> usize {
        let (mut lo, mut hi) = (lo, self.ordered.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ordered[mid].key() < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Removes `key`; false if it was not held.
    pub(super) fn remove(&mut self, key: (u64, u128)) -> bool {
        if let Some(pos) = self.find(key)
            && !self.ordered[pos].dead
        {
            self.ordered[pos].dead = true;
            self.dead += 1;
            self.compact_if_due();
            return true;
        }
        self.other.remove(&key)
    }

    /// The earliest entry.
    pub(super) fn first(&mut self) -> Option<(u64, u128)> {
        self.drop_dead_front();
        match (self.ordered.front().map(Entry::key), self.other.first()) {
            (Some(a), Some(&b)) => Some(a.min(b)),
            (a, b) => a.or(b.copied()),
        }
    }

    /// Removes and returns the earliest entry.
    pub(super) fn pop_first(&mut self) -> Option<(u64, u128)> {
        let first = self.first()?;
        if self.ordered.front().is_some_and(|e| e.key() == first) {
            self.ordered.pop_front();
            // Fewer live entries: the dead ones may outnumber them now.
            self.compact_if_due();
        } else {
            self.other.pop_first();
        }
        Some(first)
    }

    /// Removes every entry.
    #[cfg(test)]
    pub(super) fn clear(&mut self) {
        self.ordered.clear();
        self.dead = 0;
        self.other.clear();
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ordered.len() - self.dead + self.other.len()
    }

    /// Where `key` is in `ordered`, dead or alive.
    fn find(&self, key: (u64, u128)) -> Option<usize> {
        self.ordered.binary_search_by(|e| e.key().cmp(&key)).ok()
    }

    /// Makes the entry at `pos` live again; false if it was live.
    fn revive(&mut self, pos: usize) -> bool {
        let e = &mut self.ordered[pos];
        if !e.dead {
            return false;
        }
        e.dead = false;
        self.dead -= 1;
        true
    }

    fn drop_dead_front(&mut self) {
        while self.ordered.front().is_some_and(|e| e.dead) {
            self.ordered.pop_front();
            self.dead -= 1;
        }
    }

    fn compact_if_due(&mut self) {
        if self.dead > DEAD_MIN_BEFORE_COMPACT && self.dead > self.ordered.len() - self.dead {
            self.ordered.retain(|e| !e.dead);
            self.dead = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u128),
        Remove(u64, u128),
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys, mostly rising times: in-order appends, duplicates, removals of
        // held and unheld keys, and out-of-order inserts all happen.
        prop_oneof![
            4 => (0u64..40, 0u128..8).prop_map(|(t, i)| Op::Insert(t, i)),
            2 => (0u64..40, 0u128..8).prop_map(|(t, i)| Op::Remove(t, i)),
            1 => Just(Op::Pop),
        ]
    }

    proptest! {
        /// The index answers as a B-tree set of the same keys would, whatever the order.
        #[test]
        fn behaves_as_an_ordered_set(ops in proptest::collection::vec(op(), 0..400), rising in any::<bool>(), tail_max in 0usize..6) {
            // A small tail: out-of-order entries take both ways (in place, and the B-tree).
            let mut idx = ExpiryIndex::with_tail(tail_max);
            let mut model = BTreeSet::new();
            for (n, o) in ops.into_iter().enumerate() {
                // Half the runs shift times upward as they go, as a clock does.
                let shift = if rising { n as u64 / 4 } else { 0 };
                match o {
                    Op::Insert(t, i) => prop_assert_eq!(idx.insert((t + shift, i)), model.insert((t + shift, i))),
                    Op::Remove(t, i) => prop_assert_eq!(idx.remove((t + shift, i)), model.remove(&(t + shift, i))),
                    Op::Pop => prop_assert_eq!(idx.pop_first(), model.pop_first()),
                }
                prop_assert_eq!(idx.first(), model.first().copied());
                prop_assert_eq!(idx.len(), model.len());
                prop_assert!(idx.dead <= DEAD_MIN_BEFORE_COMPACT.max(idx.ordered.len() - idx.dead));
            }
        }
    }

    /// Entries in time order go to the queue, those a little out of order into their place in
    /// it, the others to the B-tree; a removed queue entry is dead in place until the front
    /// reaches it.
    #[test]
    fn in_order_entries_are_queued_and_removal_marks_them_dead() {
        let mut idx = ExpiryIndex::with_tail(4);
        for i in 0..10u128 {
            assert!(idx.insert((100 + i as u64, i)));
        }
        assert!(idx.insert((107, 50)), "among the last 4: in place");
        assert_eq!((idx.ordered.len(), idx.other.len()), (11, 0));
        assert_eq!(idx.ordered[8].key(), (107, 50));
        assert!(idx.insert((50, 99)), "earlier than the last 4: the B-tree");
        assert_eq!((idx.ordered.len(), idx.other.len()), (11, 1));
        assert!(!idx.insert((105, 5)), "held");
        assert!(!idx.insert((107, 50)), "held");
        assert!(idx.remove((100, 0)));
        assert!(!idx.remove((100, 0)), "removed already");
        assert_eq!((idx.ordered.len(), idx.dead), (11, 1));
        assert_eq!(idx.pop_first(), Some((50, 99)));
        assert_eq!(
            idx.first(),
            Some((101, 1)),
            "the dead front entry is skipped"
        );
        assert_eq!((idx.ordered.len(), idx.dead), (10, 0));
        assert!(idx.insert((100, 0)), "back, out of order now");
        assert_eq!(idx.other.len(), 1);
        assert_eq!(idx.first(), Some((100, 0)));
        assert!(idx.remove((107, 50)));
        assert!(
            idx.insert((107, 50)),
            "a dead entry in the tail comes back to life"
        );
        assert_eq!((idx.ordered.len(), idx.dead), (10, 0));
    }

    /// Pops that leave the dead entries outnumbering the live ones compact the queue too.
    #[test]
    fn pops_compact_as_removals_do() {
        let mut idx = ExpiryIndex::growing_at(GrowAt::nth(0));
        for i in 0..400u128 {
            idx.insert((1000 + i as u64, i));
        }
        // The last 150 removed: dead, and fewer than the 250 live.
        for i in 250..400u128 {
            assert!(idx.remove((1000 + i as u64, i)));
        }
        assert_eq!((idx.dead, idx.ordered.len()), (150, 400));
        // Popping 101 leaves 149 live: the dead outnumber them, and the queue is compacted.
        for _ in 0..100 {
            idx.pop_first();
        }
        assert_eq!(idx.dead, 150, "150 dead against 150 live: kept");
        idx.pop_first();
        assert_eq!((idx.dead, idx.ordered.len()), (0, 149));
        assert_eq!(idx.first(), Some((1101, 101)));
    }

    /// A lease renewed over and over leaves no trail: dead entries are compacted away.
    #[test]
    fn renewals_do_not_grow_the_queue() {
        let mut idx = ExpiryIndex::growing_at(GrowAt::nth(0));
        for i in 0..100u128 {
            idx.insert((1000, i));
        }
        let mut end = 1000;
        for n in 0..100_000u64 {
            let i = (n % 100) as u128;
            let old = if n < 100 { 1000 } else { end - 99 };
            assert!(idx.remove((old, i)));
            end += 1;
            assert!(idx.insert((end, i)));
        }
        assert_eq!(idx.len(), 100);
        assert!(idx.ordered.len() <= 2 * 100 + DEAD_MIN_BEFORE_COMPACT + 1);
    }
}
