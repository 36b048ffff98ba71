//! Failover prefix shares (issue 10 item 6, RFC 8156 §5.2.2's proportional allocation in
//! range form): which free delegable prefixes each partner may hand out, and what the primary
//! needs to rebalance them.
//!
//! Under failover every prefix pool is split in two by one number, its *share*: how many of
//! its prefixes are the secondary's. The share is spread over the pool's sub-pools in a fixed
//! order ([`subpool_shares`]), and each sub-pool's top that-many indices are the secondary's,
//! the rest the primary's. One number per pool is cheap to store and to send; the primary
//! moves it with the failover module's share protocol. Each sub-pool's part only grows as
//! the share grows, so "the secondary's share here is no larger than the primary thinks"
//! holds per sub-pool whenever it holds for the number. The two cursors of a sub-pool walk
//! toward each other from its ends, so a move never strands a never-used prefix. Addresses keep the
//! parity rule (bit 127), and a server without a partner never splits anything.

use super::*;

/// A failover prefix pool as the partners name it: its first delegated prefix, their length
/// and how many there are. The size is part of the name because a share means "this many
/// prefixes, spread over the sub-pools": with another size the same number names other
/// prefixes, so a share stored or sent for one size never applies to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PdPoolId {
    /// The first delegated prefix of the pool.
    pub first: Ipv6Addr,
    /// Length of each delegated prefix.
    pub delegated_len: u8,
    /// Number of delegated prefixes in the pool.
    pub count: u128,
}

impl std::fmt::Display for PdPoolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.first, self.delegated_len)
    }
}

/// How a pool's share spreads over sub-pools of sizes `sizes`: level by level (one more of
/// each sub-pool that still has room, in sub-pool order), so each part grows with the share
/// and the parts add up to the share (capped at the pool's size).
pub fn subpool_shares(sizes: &[u128], share: u128) -> Vec<u128> {
    let filled = |level: u128| sizes.iter().map(|&s| s.min(level)).sum::<u128>();
    // The highest level every sub-pool with room reaches in full.
    let (mut lo, mut hi) = (0u128, sizes.iter().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if filled(mid) <= share {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut rest = share.saturating_sub(filled(lo));
    sizes
        .iter()
        .map(|&s| {
            let mut k = s.min(lo);
            if s > lo && rest > 0 {
                k += 1;
                rest -= 1;
            }
            k
        })
        .collect()
}

/// A prefix pool's free prefixes as this server sees them, per sub-pool, for choosing a
/// share ([`Allocator::pd_balance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdBalance {
    /// The share in force (0 if the pool is not split yet).
    pub share: u128,
    /// Sub-pool sizes.
    sizes: Vec<u128>,
    /// Per sub-pool: the offsets from its top (0 = its last index) of the resources that are
    /// not free, ascending.
    busy: Vec<Vec<u128>>,
}

impl PdBalance {
    /// Free prefixes of the whole pool, whoever's they are.
    pub fn free_total(&self) -> u128 {
        self.sizes
            .iter()
            .zip(&self.busy)
            .map(|(size, busy)| size - busy.len() as u128)
            .sum()
    }

    /// Free prefixes the secondary would hold with share `share`.
    pub fn backup_free(&self, share: u128) -> u128 {
        subpool_shares(&self.sizes, share)
            .iter()
            .zip(&self.busy)
            .map(|(&top, busy)| top - busy.partition_point(|&o| o < top) as u128)
            .sum()
    }

    /// The largest share: the whole pool.
    pub fn share_max(&self) -> u128 {
        self.sizes.iter().sum()
    }

    /// The smallest share with which the secondary holds at least `backup_free` free
    /// prefixes (or every free one, if there are fewer).
    pub fn share_for(&self, backup_free: u128) -> u128 {
        let (mut lo, mut hi) = (0, self.share_max());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.backup_free(mid) >= backup_free {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

/// The sizes of `pool`'s sub-pools, in order.
fn subpool_sizes(pool: &PoolState) -> Vec<u128> {
    pool.subpools
        .iter()
        .map(|m| {
            let sp = lock(m);
            sp.end - sp.start
        })
        .collect()
}

impl Allocator {
    /// The prefix pools that are split between partners (none without failover), in
    /// configuration order.
    pub fn pd_pools(&self) -> Vec<PdPoolId> {
        self.pd_pools_in(&Scope::ALL)
    }

    /// [`Allocator::pd_pools`] of the subnets in `scope`.
    pub fn pd_pools_in(&self, scope: &Scope) -> Vec<PdPoolId> {
        let mut out = Vec::new();
        for sub in self.subnets.iter().filter(|s| scope.covers(s.id)) {
            for pool in &sub.pools {
                if pool.cfg.kind == ResourceKind::Prefix
                    && pool.subpools.first().is_some_and(|m| lock(m).failover)
                {
                    out.push(PdPoolId {
                        first: pool.cfg.resource(0),
                        delegated_len: pool.cfg.resource_len,
                        count: pool.cfg.count,
                    });
                }
            }
        }
        out
    }

    fn pd_pool(&self, id: PdPoolId) -> Option<&PoolState> {
        self.subnets
            .iter()
            .flat_map(|s| &s.pools)
            .find(|p| {
                p.cfg.kind == ResourceKind::Prefix
                    && p.cfg.resource(0) == id.first
                    && p.cfg.resource_len == id.delegated_len
                    && p.cfg.count == id.count
                    && p.subpools.first().is_some_and(|m| lock(m).failover)
            })
            .map(|p| &**p)
    }

    /// The share in force for pool `id` (None: no such split pool, or not split yet).
    pub fn pd_share(&self, id: PdPoolId) -> Option<u128> {
        *lock(&self.pd_pool(id)?.share)
    }

    /// Sets pool `id`'s share: `share` of its prefixes become the secondary's (bit 0), spread
    /// over its sub-pools by [`subpool_shares`], the rest the primary's. Each sub-pool changes
    /// under its own lock, so a worker allocating there sees its old split or its new one.
    /// Returns false if there is no such split pool.
    pub fn set_pd_share(&self, id: PdPoolId, share: u128) -> bool {
        let Some(pool) = self.pd_pool(id) else {
            return false;
        };
        let mut current = lock(&pool.share);
        let sizes = subpool_sizes(pool);
        let share = share.min(sizes.iter().sum());
        for (m, k) in pool.subpools.iter().zip(subpool_shares(&sizes, share)) {
            lock(m).set_backup_share(k);
        }
        *current = Some(share);
        true
    }

    /// How far pool `id`'s share can move from `from` toward `to` while every prefix that
    /// changes hands is *movable*: no record here (never used), or a free record the partner
    /// acknowledged (it knows the prefix is free). The share closest to `to` that qualifies;
    /// `from` if none does. A prefix in use, offered, or freed without the partner's
    /// acknowledgement must not change hands: the partner might not know it is taken.
    pub fn pd_movable_share(&self, id: PdPoolId, from: u128, to: u128) -> u128 {
        let Some(pool) = self.pd_pool(id) else {
            return from;
        };
        let sizes = subpool_sizes(pool);
        let total: u128 = sizes.iter().sum();
        let (from, to) = (from.min(total), to.min(total));
        let k_from = subpool_shares(&sizes, from);
        // Whether moving the share from `from` to `c` hands over only movable prefixes.
        let moves_ok = |c: u128| {
            let k_c = subpool_shares(&sizes, c);
            pool.subpools
                .iter()
                .zip(k_from.iter().zip(&k_c))
                .all(|(m, (&a, &b))| {
                    let sp = lock(m);
                    let (lo, hi) = (a.min(b), a.max(b));
                    // Free as a new client could have it: no record, or free and
                    // acknowledged (the pool is a failover one).
                    ((sp.end - hi)..(sp.end - lo)).all(|i| sp.is_free(i))
                })
        };
        // The prefixes moved grow with the distance from `from`, so the ones that qualify
        // are those up to some point: a binary search finds it.
        if to >= from {
            let (mut lo, mut hi) = (from, to);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if moves_ok(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        } else {
            let (mut lo, mut hi) = (to, from);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if moves_ok(mid) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            lo
        }
    }

    /// Pool `id`'s free prefixes, for choosing a share (walks its records once, one sub-pool
    /// at a time).
    pub fn pd_balance(&self, id: PdPoolId) -> Option<PdBalance> {
        let pool = self.pd_pool(id)?;
        let share = lock(&pool.share).unwrap_or(0);
        let (sizes, busy) = pool
            .subpools
            .iter()
            .map(|m| {
                let sp = lock(m);
                (sp.end - sp.start, sp.busy_offsets_from_top())
            })
            .unzip();
        Some(PdBalance { share, sizes, busy })
    }
}
