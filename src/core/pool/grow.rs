//! Staggered growth of the tables kept per sub-pool and per client-index shard.
//!
//! Clients are spread over a pool's sub-pools, and over the client index's shards, by a hash:
//! all of them fill at the same rate. Left to themselves, their hash maps and queues double at
//! about the same moment, and a server taking new clients pays for every table's doubling at
//! once: in one pinned bench trial the lease table grew from 818 to 1,474 MiB, and a third of
//! the trial's exchanges went unanswered.
//!
//! So each table grows early, at a share of its capacity that depends on its number: the
//! shares are spread evenly (on a log scale) over half of a doubling, so that as the tables
//! fill, their doublings come one after another over that half instead of together. Measured
//! (`docs/performance.md`, 2026-12-02): 1,250,000 new clients at 12,500/s into a server that
//! held 1,250,000, pinned; the most new memory in a quarter second fell from 130 to 67 MiB, and
//! p99 from 632 to 266 ms. A table grows like this only once it holds [`GROW_FROM_LEN`]
//! entries; the cost is memory, a table that grew early holding up to 29 % fewer entries than
//! it could (while entries are only added; deleted ones lower what hashbrown counts as
//! capacity, and it then rehashes in place instead).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Tables smaller than this grow as they would anyway (a small pool's tables stay small).
pub(super) const GROW_FROM_LEN: usize = 4096;

/// [`GrowAt::nth`] of a prefix pool's first sub-pool (an address pool's is 0).
pub(super) const PREFIX_POOLS_FROM: usize = 64;
/// [`GrowAt::nth`] of the client index's first shard.
pub(super) const CLIENT_SHARDS_FROM: usize = 128;

/// What fraction of a doubling the early-growth points are spread over: 0.5, so the fullest
/// a table is let get ranges from 2^-0.5 (71 %) to all of its capacity.
const SPREAD_OCTAVES: f64 = 0.5;

/// When one table grows: the share of its capacity it may fill.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct GrowAt(f64);

impl GrowAt {
    /// The growth point of table number `k` of a set of tables that fill alike. Consecutive
    /// numbers are spread by the golden ratio, so any run of them covers the range evenly.
    pub(super) fn nth(k: usize) -> GrowAt {
        const GOLDEN: f64 = 0.618_033_988_749_894_9;
        let step = (k as f64 * GOLDEN).fract();
        GrowAt((-SPREAD_OCTAVES * step).exp2())
    }

    /// Whether a table of `len` entries and `capacity` (what it holds without growing) should
    /// grow before it takes one more.
    fn due(self, len: usize, capacity: usize) -> bool {
        len >= GROW_FROM_LEN && len < capacity && (len + 1) as f64 > capacity as f64 * self.0
    }

    /// For a table of `len` entries and `capacity`: how many more to reserve now, if it is past
    /// its point (one more than it holds, which makes the table double).
    fn early(self, len: usize, capacity: usize) -> Option<usize> {
        self.due(len, capacity).then(|| capacity - len + 1)
    }

    /// Before an insert that may add a key to `map`: doubles it now if it is past its point
    /// (asking for one more than it holds makes hashbrown double it, or rehash it in place
    /// if deleted entries take much of it).
    pub(super) fn before_insert<K: Eq + Hash, V, S: BuildHasher>(self, map: &mut HashMap<K, V, S>) {
        if let Some(more) = self.early(map.len(), map.capacity()) {
            map.reserve(more);
        }
    }

    /// Before `vec` is lengthened: doubles it now if it is past its point.
    pub(super) fn before_extend<T>(self, vec: &mut Vec<T>) {
        if let Some(more) = self.early(vec.len(), vec.capacity()) {
            vec.reserve(more);
        }
    }

    /// Before a push onto `queue`: doubles it now if it is past its point.
    pub(super) fn before_push<T>(self, queue: &mut VecDeque<T>) {
        if let Some(more) = self.early(queue.len(), queue.capacity()) {
            queue.reserve(more);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_points_cover_half_a_doubling_evenly() {
        let points: Vec<f64> = (0..64).map(|k| GrowAt::nth(k).0).collect();
        assert_eq!(points[0], 1.0, "table 0 grows only when full");
        assert!(points.iter().all(|&p| p > 0.70 && p <= 1.0));
        // Every eighth of the range (in octaves) holds some of the 64.
        let mut seen = [0; 8];
        for p in &points {
            seen[((-p.log2() / SPREAD_OCTAVES) * 8.0) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (4..=12).contains(&n)), "{seen:?}");
    }

    #[test]
    fn maps_of_one_set_double_at_different_sizes() {
        // Fill 64 maps alike and note the length each had when its capacity first went past
        // 16,384 entries' worth: they must not all have doubled together.
        let mut maps: Vec<HashMap<u128, u64>> = (0..64).map(|_| HashMap::new()).collect();
        let mut doubled_at = vec![None; 64];
        for i in 0..40_000u128 {
            for (k, m) in maps.iter_mut().enumerate() {
                GrowAt::nth(k).before_insert(m);
                m.insert(i, 0);
                if doubled_at[k].is_none() && m.capacity() > 16_384 {
                    doubled_at[k] = Some(m.len());
                }
            }
        }
        let lens: Vec<usize> = doubled_at.iter().map(|d| d.unwrap()).collect();
        let (lo, hi) = (*lens.iter().min().unwrap(), *lens.iter().max().unwrap());
        assert!(hi as f64 / lo as f64 > 1.3, "doubled between {lo} and {hi}");
        let distinct: std::collections::BTreeSet<_> = lens.iter().collect();
        assert!(distinct.len() > 32, "{} distinct points", distinct.len());
        // No entry was lost.
        assert!(maps.iter().all(|m| m.len() == 40_000));
    }

    #[test]
    fn queues_of_one_set_double_at_different_lengths() {
        let mut queues: Vec<VecDeque<u64>> = (0..16).map(|_| VecDeque::new()).collect();
        let mut doubled_at = vec![None; 16];
        for i in 0..20_000u64 {
            for (k, q) in queues.iter_mut().enumerate() {
                GrowAt::nth(k).before_push(q);
                q.push_back(i);
                if doubled_at[k].is_none() && q.capacity() > 8192 {
                    doubled_at[k] = Some(q.len());
                }
            }
        }
        let lens: Vec<usize> = doubled_at.iter().map(|d| d.unwrap()).collect();
        assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");
        assert_eq!(
            lens[0], 8193,
            "table 0 doubles when full, as a plain queue does"
        );
        assert!(
            queues
                .iter()
                .all(|q| q.len() == 20_000 && q.iter().copied().eq(0..20_000))
        );
    }

    #[test]
    fn small_tables_grow_as_usual() {
        let mut m: HashMap<u128, u64> = HashMap::new();
        for i in 0..(GROW_FROM_LEN as u128 - 1) {
            let before = m.capacity();
            GrowAt::nth(1).before_insert(&mut m);
            assert_eq!(m.capacity(), before, "grew early at {i} entries");
            m.insert(i, 0);
        }
    }
}
