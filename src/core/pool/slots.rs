//! One sub-pool's slots: the record of every resource that is or was in use, by index.
//!
//! A sub-pool hands out never-used resources from cursors that walk its range in order (one per
//! owner bit: every other index upward, or under a prefix share split one part upward from the
//! bottom and the other downward from the top). So the indices in use fill a few runs from
//! known origins, and most slots are kept in *lanes*: vectors by position along a cursor's walk,
//! with no key and no hashing. A lookup there is one memory access (a hash map's is two:
//! control bytes, then the entry), a new lease on the cursor lands next to the last one, and a
//! growing lane copies what it holds at most (a large block is often remapped instead) and
//! touches new memory as it fills, where a hash map's doubling writes all of a table twice its
//! size at once (`docs/performance.md`, "What degrades a long search").
//!
//! An index far past a lane's end (a restored lease beyond a long run of forgotten records, a
//! partner's update, a reservation, a client's hint) goes to a hash map instead, and moves into
//! the lane, with the run that follows it, when the lane reaches it. A lane grows over empty
//! positions only while they number at most its slots plus [`LANE_GAP_MAX`], so hints cannot
//! spread it thin. Each index is in one place: the first lane that covers it, or else the map.

use super::TableMap;
use super::grow::GrowAt;
use super::subpool::Slot;

/// How far past a lane's end an index may lie and still extend the lane (the positions between
/// are held empty, 128 bytes each); a farther one goes to the sparse map. A lane extends over
/// empty positions only while they stay at most its slots plus this ([`Lane::may_skip`]).
pub(super) const LANE_GAP_MAX: usize = 64;

/// A walk over the sub-pool's range: position `p` is index `origin + (p << shift)` (upward)
/// or `origin - (p << shift)` (downward); `shift` 1 walks every other index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walk {
    origin: u128,
    shift: u32,
    down: bool,
}

/// The slots along one walk, by position.
struct Lane {
    walk: Walk,
    slots: Vec<Option<Slot>>,
    /// Positions that hold a slot.
    filled: usize,
}

impl Lane {
    fn new(walk: Walk) -> Lane {
        Lane {
            walk,
            slots: Vec::new(),
            filled: 0,
        }
    }

    /// Whether the lane may grow over `gap` empty positions: at once next to its end, else
    /// while its empty positions, those included, stay at most its slots plus [`LANE_GAP_MAX`]
    /// (the slack lets a lane start behind reserved resources or forgotten records).
    fn may_skip(&self, gap: usize) -> bool {
        let empty = self.slots.len() - self.filled;
        gap == 0 || (gap <= LANE_GAP_MAX && empty + gap <= self.filled + LANE_GAP_MAX)
    }

    /// Position of `index` along this lane's walk, if the walk passes it.
    fn position(&self, index: u128) -> Option<usize> {
        let w = self.walk;
        let d = if w.down {
            w.origin.checked_sub(index)?
        } else {
            index.checked_sub(w.origin)?
        };
        if d & ((1 << w.shift) - 1) != 0 {
            return None;
        }
        usize::try_from(d >> w.shift).ok()
    }

    /// Index at position `p` (a position the lane holds).
    fn index(&self, p: usize) -> u128 {
        self.index_checked(p)
            .expect("a lane position lies inside u128")
    }

    /// Index at position `p`, if the walk reaches one there.
    fn index_checked(&self, p: usize) -> Option<u128> {
        let d = (p as u128).checked_shl(self.walk.shift)?;
        if self.walk.down {
            self.walk.origin.checked_sub(d)
        } else {
            self.walk.origin.checked_add(d)
        }
    }

    /// Position of `index` if this lane holds its place (with a slot or without).
    fn covers(&self, index: u128) -> Option<usize> {
        self.position(index).filter(|&p| p < self.slots.len())
    }
}

/// A sub-pool's slots (see the module doc). The calls mirror a hash map's.
pub(super) struct SlotTable {
    /// The sub-pool's range `[start, end)`: no index outside it is ever held.
    start: u128,
    end: u128,
    lanes: [Lane; 2],
    sparse: TableMap<Slot>,
    /// When a lane's vector or the sparse map grows ([`GrowAt`]: the sub-pools of a pool fill
    /// alike).
    grow: GrowAt,
}

impl SlotTable {
    /// An empty table for the sub-pool `[start, end)` whose owner bit is `(index + flip) & 1`:
    /// one lane per owner bit, each over every other index upward from its first.
    pub(super) fn by_parity(start: u128, end: u128, flip: u128, grow: GrowAt) -> SlotTable {
        let first = |b: u128| {
            if (start + flip) & 1 == b {
                start
            } else {
                start + 1
            }
        };
        let lane = |b| {
            Lane::new(Walk {
                origin: first(b),
                shift: 1,
                down: false,
            })
        };
        SlotTable {
            start,
            end,
            lanes: [lane(0), lane(1)],
            sparse: TableMap::default(),
            grow,
        }
    }

    /// Lays the table out for a share split: one lane upward from `start`, one downward from
    /// the top, where the two cursors walk. Every slot is placed again, nearest its lane's
    /// origin first, so the lanes come out as dense as the slots allow.
    pub(super) fn split_at_ends(&mut self) {
        let up = Walk {
            origin: self.start,
            shift: 0,
            down: false,
        };
        let down = Walk {
            origin: self.end.saturating_sub(1).max(self.start),
            shift: 0,
            down: true,
        };
        if self.lanes[0].walk == up && self.lanes[1].walk == down {
            return;
        }
        self.relay(up, down);
    }

    /// Places every slot again (after a restore, whose order need not follow the lanes).
    pub(super) fn compact(&mut self) {
        let (a, b) = (self.lanes[0].walk, self.lanes[1].walk);
        self.relay(a, b);
    }

    /// Empties the table into lanes along `a` and `b`, then puts every slot back, nearest a
    /// lane's origin first.
    fn relay(&mut self, a: Walk, b: Walk) {
        let mut all: Vec<(u128, Slot)> = Vec::with_capacity(self.len());
        for lane in &mut self.lanes {
            let lane_slots = std::mem::take(&mut lane.slots);
            for (p, s) in lane_slots.into_iter().enumerate() {
                if let Some(s) = s {
                    all.push((lane.index(p), s));
                }
            }
        }
        // Taken, not drained: the map does not keep the capacity of what it held.
        all.extend(std::mem::take(&mut self.sparse));
        self.lanes = [Lane::new(a), Lane::new(b)];
        let nearest = |i: u128| {
            self.lanes
                .iter()
                .filter_map(|l| l.position(i))
                .min()
                .unwrap_or(usize::MAX)
        };
        all.sort_unstable_by_key(|(i, _)| (nearest(*i), *i));
        for (i, s) in all {
            self.insert(i, s);
        }
    }

    /// Where `index` is held: (lane, position) if a lane covers it.
    fn place(&self, index: u128) -> Option<(usize, usize)> {
        if !(self.start..self.end).contains(&index) {
            return None;
        }
        self.lanes
            .iter()
            .enumerate()
            .find_map(|(l, lane)| lane.covers(index).map(|p| (l, p)))
    }

    /// The slot of `index`, if there is one.
    pub(super) fn get(&self, index: &u128) -> Option<&Slot> {
        match self.place(*index) {
            Some((l, p)) => self.lanes[l].slots[p].as_ref(),
            None => self.sparse.get(index),
        }
    }

    /// The slot of `index`, if there is one, to change in place.
    pub(super) fn get_mut(&mut self, index: &u128) -> Option<&mut Slot> {
        match self.place(*index) {
            Some((l, p)) => self.lanes[l].slots[p].as_mut(),
            None => self.sparse.get_mut(index),
        }
    }

    /// Whether `index` has a slot.
    pub(super) fn contains_key(&self, index: &u128) -> bool {
        self.get(index).is_some()
    }

    /// Sets the slot of `index` (inside the sub-pool's range), returning the one it replaces.
    pub(super) fn insert(&mut self, index: u128, slot: Slot) -> Option<Slot> {
        debug_assert!((self.start..self.end).contains(&index));
        if let Some((l, p)) = self.place(index) {
            let lane = &mut self.lanes[l];
            let old = lane.slots[p].replace(slot);
            lane.filled += usize::from(old.is_none());
            return old;
        }
        if let Some(s) = self.sparse.get_mut(&index) {
            return Some(std::mem::replace(s, slot));
        }
        // A lane whose end is close: the one that needs the fewest empty positions.
        let extend = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(l, lane)| {
                let p = lane.position(index)?;
                let gap = p.checked_sub(lane.slots.len())?;
                lane.may_skip(gap).then_some((gap, l, p))
            })
            .min();
        match extend {
            Some((_, l, p)) => {
                self.extend_lane(l, p);
                let lane = &mut self.lanes[l];
                lane.slots.push(Some(slot));
                lane.filled += 1;
                self.absorb(l);
            }
            None => {
                self.grow.before_insert(&mut self.sparse);
                self.sparse.insert(index, slot);
            }
        }
        None
    }

    /// Lengthens lane `l` to `len` positions, moving in the slots the sparse map held there.
    fn extend_lane(&mut self, l: usize, len: usize) {
        let lane = &mut self.lanes[l];
        self.grow.before_extend(&mut lane.slots);
        while lane.slots.len() < len {
            let p = lane.slots.len();
            let moved = if self.sparse.is_empty() {
                None
            } else {
                self.sparse.remove(&lane.index(p))
            };
            lane.filled += usize::from(moved.is_some());
            lane.slots.push(moved);
        }
    }

    /// Moves into lane `l` the run of slots the sparse map holds right past its end (a run
    /// restored beyond a gap, which the lane has now reached).
    fn absorb(&mut self, l: usize) {
        let lane = &mut self.lanes[l];
        while !self.sparse.is_empty() {
            // Past the sub-pool's range the run ends; and an index the other lane holds (the
            // two meet under a split) is not in the map, so it ends there too.
            let Some(i) = lane.index_checked(lane.slots.len()) else {
                break;
            };
            if !(self.start..self.end).contains(&i) {
                break;
            }
            let Some(s) = self.sparse.remove(&i) else {
                break;
            };
            self.grow.before_extend(&mut lane.slots);
            lane.slots.push(Some(s));
            lane.filled += 1;
        }
    }

    /// Deletes the slot of `index`, returning it. Its place in a lane stays, empty.
    pub(super) fn remove(&mut self, index: &u128) -> Option<Slot> {
        match self.place(*index) {
            Some((l, p)) => {
                let lane = &mut self.lanes[l];
                let old = lane.slots[p].take();
                lane.filled -= usize::from(old.is_some());
                old
            }
            None => self.sparse.remove(index),
        }
    }

    /// Number of slots.
    pub(super) fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.filled).sum::<usize>() + self.sparse.len()
    }

    /// Every (index, slot), in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u128, &Slot)> + '_ {
        self.lanes
            .iter()
            .flat_map(|lane| {
                lane.slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(p, s)| s.as_ref().map(|s| (lane.index(p), s)))
            })
            .chain(self.sparse.iter().map(|(&i, s)| (i, s)))
    }

    /// Every slot, in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.iter().map(|(_, s)| s)
    }

    /// Slots held in the sparse map rather than in lanes (tests).
    #[cfg(test)]
    pub(super) fn sparse_len(&self) -> usize {
        self.sparse.len()
    }
}

impl std::ops::Index<&u128> for SlotTable {
    type Output = Slot;
    fn index(&self, index: &u128) -> &Slot {
        self.get(index).expect("no slot at this index")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceKind;
    use crate::lease::{Lease, LeaseState};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn slot(tag: u64) -> Slot {
        Slot {
            lease: Lease {
                kind: ResourceKind::Address,
                addr: std::net::Ipv6Addr::UNSPECIFIED,
                prefix_len: 128,
                subnet_id: 1,
                state: LeaseState::Active,
                duid: Default::default(),
                iaid: 0,
                preferred_secs: 0,
                valid_secs: 0,
                cltt: 0,
                expires_at: 0,
                seq: tag,
                partner_ack_until: 0,
                partner_lifetime_received: 0,
                relay: Default::default(),
                partner_seq: 0,
            },
            in_free_list: false,
            in_pending: false,
        }
    }

    /// Checks `t` against the model: every index's slot, the count and the iteration.
    fn agrees(t: &SlotTable, model: &HashMap<u128, u64>, range: std::ops::Range<u128>) {
        for i in range {
            assert_eq!(
                t.get(&i).map(|s| s.lease.seq),
                model.get(&i).copied(),
                "index {i}"
            );
        }
        assert_eq!(t.len(), model.len());
        let mut seen: Vec<(u128, u64)> = t.iter().map(|(i, s)| (i, s.lease.seq)).collect();
        seen.sort_unstable();
        let mut want: Vec<(u128, u64)> = model.iter().map(|(&i, &v)| (i, v)).collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }

    /// What a cursor hands out lands in the lanes; nothing goes to the sparse map.
    #[test]
    fn cursor_order_fills_the_lanes() {
        let mut t = SlotTable::by_parity(100, 1100, 1, GrowAt::nth(0));
        for i in (100..1100).step_by(2).chain((101..1100).step_by(2)) {
            assert!(t.insert(i, slot(i as u64)).is_none());
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.sparse_len(), 0);
        let mut t = SlotTable::by_parity(0, 1000, 0, GrowAt::nth(0));
        t.split_at_ends();
        for k in 0..500u128 {
            t.insert(k, slot(1));
            t.insert(999 - k, slot(2));
        }
        assert_eq!((t.len(), t.sparse_len()), (1000, 0));
        assert_eq!(t[&0].lease.seq, 1);
        assert_eq!(t[&999].lease.seq, 2);
    }

    /// An index far past a lane's end waits in the sparse map and moves into the lane when
    /// the lane reaches it; a relay after a restore in any order makes the lanes dense.
    #[test]
    fn far_indices_wait_in_the_map_until_their_lane_comes() {
        let mut t = SlotTable::by_parity(0, 10_000, 0, GrowAt::nth(0));
        t.insert(5000, slot(5000));
        assert_eq!(t.sparse_len(), 1);
        for i in (0..5000).step_by(2) {
            t.insert(i, slot(i as u64));
        }
        assert_eq!(t.sparse_len(), 0, "the lane took it in when it reached it");
        assert_eq!(t[&5000].lease.seq, 5000);
        let mut t = SlotTable::by_parity(0, 10_000, 0, GrowAt::nth(0));
        for i in (0..2000).rev() {
            t.insert(i, slot(i as u64));
        }
        assert_eq!(
            (t.len(), t.sparse_len()),
            (2000, 0),
            "each lane took in the whole run when it reached it"
        );
        t.compact();
        assert_eq!((t.len(), t.sparse_len()), (2000, 0));
        t.split_at_ends();
        assert_eq!((t.len(), t.sparse_len()), (2000, 0));
        assert_eq!(t[&1999].lease.seq, 1999);
    }

    /// Indices far apart (a client's hints walking up the range) do not spread a lane thin:
    /// it grows over empty positions only while they are at most its slots plus the slack.
    #[test]
    fn scattered_indices_do_not_spread_a_lane() {
        let mut t = SlotTable::by_parity(0, 1 << 40, 0, GrowAt::nth(0));
        for k in 0..10u128 {
            t.insert(2 * k, slot(1));
        }
        for k in 0..1000u128 {
            t.insert(20 + k * 2 * LANE_GAP_MAX as u128, slot(2));
        }
        let lane = &t.lanes[0];
        assert!(
            lane.slots.len() - lane.filled <= lane.filled + LANE_GAP_MAX,
            "{} positions for {} slots",
            lane.slots.len(),
            lane.filled
        );
        assert_eq!(t.len(), 1010);
    }

    /// A cursor that starts behind a few reserved (skipped) resources still fills a lane.
    #[test]
    fn a_lane_starts_behind_skipped_positions() {
        let mut t = SlotTable::by_parity(0, 10_000, 0, GrowAt::nth(0));
        for i in (20..2000).step_by(2) {
            t.insert(i, slot(i as u64));
        }
        assert_eq!((t.len(), t.sparse_len()), (990, 0));
    }

    /// After a restart whose leases lie beyond a gap longer than a lane may skip, the run past
    /// the gap waits in the map until the cursor's new leases fill the gap, then moves in.
    #[test]
    fn a_run_restored_beyond_a_gap_joins_the_lane_once_the_gap_fills() {
        let mut t = SlotTable::by_parity(0, 10_000, 0, GrowAt::nth(0));
        let run = |from: u128, n: u128| (0..n).map(move |k| from + 2 * k);
        for i in run(0, 100).chain(run(400, 100)) {
            t.insert(i, slot(i as u64));
        }
        t.compact();
        assert_eq!(t.sparse_len(), 100, "past a gap of 100 positions");
        for i in run(200, 100) {
            t.insert(i, slot(i as u64));
        }
        assert_eq!((t.len(), t.sparse_len()), (300, 0));
        assert_eq!(t.lanes[0].slots.len(), 300);
        t.insert(600, slot(600));
        assert_eq!(
            t.lanes[0].slots.len(),
            301,
            "new leases land in the lane again"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u128, u64),
        Remove(u128),
        Split,
        Compact,
    }

    fn op(size: u128) -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..size, any::<u64>()).prop_map(|(i, v)| Op::Insert(i, v)),
            3 => (0..size).prop_map(Op::Remove),
            1 => Just(Op::Split),
            1 => Just(Op::Compact),
        ]
    }

    proptest! {
        /// Any sequence of inserts, removes and layouts keeps the table equal to a hash map.
        #[test]
        fn behaves_as_a_map(
            size in 1u128..400,
            start in 0u128..3,
            flip in 0u128..2,
            ops in proptest::collection::vec(op(400), 0..300),
        ) {
            let mut t = SlotTable::by_parity(start, start + size, flip, GrowAt::nth(3));
            let mut model = HashMap::new();
            for o in ops {
                match o {
                    Op::Insert(i, v) if i < size => {
                        let old = t.insert(start + i, slot(v)).map(|s| s.lease.seq);
                        prop_assert_eq!(old, model.insert(start + i, v));
                    }
                    Op::Remove(i) => {
                        let old = t.remove(&(start + i)).map(|s| s.lease.seq);
                        prop_assert_eq!(old, model.remove(&(start + i)));
                    }
                    Op::Split => t.split_at_ends(),
                    Op::Compact => t.compact(),
                    Op::Insert(..) => {}
                }
            }
            agrees(&t, &model, 0..start + size + 2);
        }
    }
}
