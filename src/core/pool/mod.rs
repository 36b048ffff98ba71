//! Allocation: pools split into hashed sub-pools, the in-memory lease table, and reclamation.
//!
//! Every pool (a range of addresses, or a prefix split into delegated prefixes) is cut into up
//! to [`SUBPOOLS_PER_POOL_MAX`](crate::config::SUBPOOLS_PER_POOL_MAX) contiguous sub-pools, each
//! behind its own lock. A client's (subnet, IA type, DUID, IAID) hashes to a *home* sub-pool, so
//! allocation for a new client touches one sub-pool (plus the client index shard), and the same
//! client comes back to the same place.
//!
//! Finding a free resource never scans the pool: a sub-pool hands out never-used resources from a
//! cursor, then resources that became free (expired, released) from a FIFO free list, oldest
//! first, so a returning client has the best chance of finding its old lease still free. Freed
//! leases stay in the table with their last holder, which is what gives lease stability.
//!
//! Lock order, always: client-index shard, then one sub-pool. Nothing ever takes them the other
//! way round, and no code holds two sub-pools at once.
//!
//! Files: `key` (the fixed client hash), `rules` (what the failover state allows),
//! `subpool` (one sub-pool's table, cursor, free list), `expiry` (its expiry index), `alloc`
//! (acquire, extend, end, reclaim, restore), `merge` (RFC 8156: partner acknowledgements,
//! PENDING-FREE, partner updates); this file holds the table and its read-only queries.

use crate::config::{PoolConfig, Reservation, ResourceKind, SubnetConfig};
use crate::lease::{Lease, LeaseState, SharedBytes};
use alloc::finish_restore_pool;
pub use operator::OperatorRefusal;
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use subpool::{PoolState, ResRef, SubnetPools};

mod alloc;
mod expiry;
mod grow;
mod key;
mod merge;
mod operator;
mod rules;
mod share;
mod slots;
mod subpool;
#[cfg(test)]
mod tests;

use key::IndexKeys;
pub use key::{client_key, spread};
pub use rules::{PRIMARY_BIT, Rules};
pub use share::{PdBalance, PdPoolId, subpool_shares};

/// Two servers' times closer than this count as equal when updates are compared (RFC 8156
/// §7.5), unless the relationship allows more skew: the default of `failover.skew_max_secs`.
/// A relationship passes its own `skew_max_secs` to [`Allocator::apply_partner_update`] and
/// [`Allocator::release_pending_in`], since its link accepts a partner whose clock is that far
/// off.
pub const SKEW_EQUAL_SECS: u64 = crate::config::defaults::SKEW_MAX_SECS;
/// Number of shards of the client index (client key → resource).
pub const CLIENT_SHARDS: usize = 64;
/// Most expired leases one sub-pool reclaims per [`Allocator::reclaim`] call, so a reclaim
/// pass never holds a lock for long.
pub const RECLAIM_PER_SUBPOOL_MAX: usize = 4096;
/// Most records of ended leases one [`Allocator::forget_ended`] call forgets in all, so the
/// store's delete transaction that follows stays short (it holds LMDB's one writer).
pub const FORGET_PER_PASS_MAX: usize = 4096;

/// Locks a mutex; a panic elsewhere while holding it does not make the data unusable here
/// (every critical section leaves the sub-pool consistent before anything that can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a caller wants from [`Allocator::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireMode {
    /// Advertise: reserve in memory for `hold_secs`; nothing is stored.
    Offer {
        /// How long the reservation lasts.
        hold_secs: u32,
    },
    /// Reply (Request or Rapid Commit): grant and store.
    Grant,
}

/// An address or prefix handed to a client, with the lifetimes to put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Address, or the prefix's first address.
    pub addr: Ipv6Addr,
    /// 128 for addresses, the delegated length for prefixes.
    pub prefix_len: u8,
    /// Preferred lifetime to send.
    pub preferred_secs: u32,
    /// Valid lifetime to send.
    pub valid_secs: u32,
}

/// Outcome of [`Allocator::extend`] (Renew and Rebind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extended {
    /// The lease is the client's (or was free and is now) and runs for new lifetimes.
    Extended(Granted),
    /// The resource is in this subnet's pools but held by another client or declined.
    NotOwned,
    /// The resource is not one of this subnet's resources (wrong link or outside every pool).
    NotInPool,
}

/// Lease counts for one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolUsage {
    /// Resources in the pool.
    pub total: u128,
    /// Active leases.
    pub active: u64,
    /// Declined resources still held back.
    pub declined: u64,
    /// Offers outstanding.
    pub offered: u64,
}

/// The subnets (by id) one failover relationship covers: what its node walks, reclaims and
/// takes from its partner. [`Scope::ALL`] for a server with one relationship or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Arc<[u32]>>);

impl Scope {
    /// Every subnet.
    pub const ALL: Scope = Scope(None);

    /// Only the subnets with these ids.
    pub fn subnets(ids: &[u32]) -> Scope {
        Scope(Some(ids.into()))
    }

    /// Whether the subnet with id `subnet_id` is in scope.
    pub fn covers(&self, subnet_id: u32) -> bool {
        self.0.as_ref().is_none_or(|ids| ids.contains(&subnet_id))
    }
}

/// The hash maps of the lease table (resource index → entry; the client index is a
/// [`ClientIndex`]). Their keys are indices, which foldhash spreads at a fraction of SipHash's
/// cost (std's default was a tenth of the server's instructions per exchange); seeded per
/// process, as std's is, so no crafted set of keys can aim at one bucket chain. Iteration
/// order is not relied on: walks over the table sort what they visit
/// ([`Allocator::for_each_lease_in`]).
pub(crate) type TableMap<V> = HashMap<u128, V, foldhash::fast::RandomState>;

/// One shard of the client index: a client IA's index key ([`IndexKeys`]) → its resource.
/// The key is a secret-keyed hash already, so the table takes its low bits as they are.
type ClientIndex = HashMap<u128, ResRef, key::IndexKeyHash>;

/// The in-memory lease table of every subnet, shared by all workers.
pub struct Allocator {
    subnets: Vec<SubnetPools>,
    /// Shared, like the pools, with the allocator a reload builds.
    clients: Arc<[Mutex<ClientIndex>]>,
    /// How the client index names clients; shared with the index.
    index_keys: IndexKeys,
    /// The hash that picks a client's home sub-pool: [`client_key`] (tests put a colliding
    /// one in its place).
    placement_key: fn(u32, ResourceKind, &[u8], u32) -> u128,
    /// Each client-index shard's growth point ([`grow`]), worked out once.
    shard_grow: [grow::GrowAt; CLIENT_SHARDS],
    seq: Arc<AtomicU64>,
    /// Built for a failover endpoint (pools added by a reload are built the same way).
    failover: bool,
}

/// Identifies one client IA in one subnet.
#[derive(Debug, Clone, Copy)]
pub struct ClientIa<'a> {
    /// Index of the subnet in the configuration (not its id).
    pub subnet: usize,
    /// IA_NA or IA_PD.
    pub kind: ResourceKind,
    /// Client DUID.
    pub duid: &'a [u8],
    /// IAID.
    pub iaid: u32,
    /// The client's reservation in this subnet, if it has one: its key's
    /// [`crate::config::ReservationKey::stable_id`] and what it holds.
    pub reservation: Option<(u64, &'a Reservation)>,
    /// The relay data of the client's message (`wire::relay_data`; empty if it came
    /// directly), kept with what it is granted or renewed.
    pub relay: &'a [u8],
    /// The message's `duid` and `relay` as shared bytes, made once for all of its IAs (`None`:
    /// each new record copies them).
    pub bytes: Option<&'a MessageBytes>,
}

/// A client message's DUID and relay data as the shared bytes leases keep, made at most once
/// for all of the message's IAs: a client that asks for an address and a prefix in one message
/// (the usual CPE) has one copy of each for both leases, where each lease had its own (about
/// 130 bytes a client in the bench's relayed case). Per message, on one thread.
#[derive(Debug, Default)]
pub struct MessageBytes {
    duid: std::cell::OnceCell<SharedBytes>,
    relay: std::cell::OnceCell<SharedBytes>,
}

impl ClientIa<'_> {
    /// The client's DUID as a new record keeps it: `held`'s (the record it replaces) when the
    /// same, else the message's shared copy.
    fn duid_bytes(&self, held: Option<&SharedBytes>) -> SharedBytes {
        shared_bytes(held, self.duid, self.bytes.map(|b| &b.duid))
    }

    /// The relay data as a new record keeps it, as [`ClientIa::duid_bytes`].
    fn relay_bytes(&self, held: Option<&SharedBytes>) -> SharedBytes {
        shared_bytes(held, self.relay, self.bytes.map(|b| &b.relay))
    }
}

/// `bytes` as shared bytes: `held` when it holds them, else what `cell` made for the message
/// (made now if no IA did yet, and only then), else a copy.
fn shared_bytes(
    held: Option<&SharedBytes>,
    bytes: &[u8],
    cell: Option<&std::cell::OnceCell<SharedBytes>>,
) -> SharedBytes {
    let made = cell
        .into_iter()
        .map(|c| c.get_or_init(|| SharedBytes::new(bytes)));
    SharedBytes::reusing(held.into_iter().chain(made), bytes)
}

impl Allocator {
    /// Builds empty pools for the configured subnets.
    pub fn new(subnets: &[SubnetConfig]) -> Self {
        Self::build(subnets, false)
    }

    /// Builds empty pools for a failover endpoint: freed leases stay PENDING-FREE until the
    /// partner acknowledges them (see [`Allocator::record_ack`], [`Allocator::release_pending`]).
    pub fn with_failover(subnets: &[SubnetConfig]) -> Self {
        Self::build(subnets, true)
    }

    fn build(subnets: &[SubnetConfig], failover: bool) -> Self {
        let a = Allocator {
            subnets: subnets
                .iter()
                .map(|s| SubnetPools {
                    id: s.id,
                    lifetimes: s.lifetimes,
                    pools: s
                        .pools
                        .iter()
                        .cloned()
                        .map(|p| Arc::new(PoolState::new(p, failover)))
                        .collect(),
                })
                .collect(),
            shard_grow: std::array::from_fn(|k| grow::GrowAt::nth(grow::CLIENT_SHARDS_FROM + k)),
            clients: (0..CLIENT_SHARDS)
                .map(|_| Mutex::new(ClientIndex::default()))
                .collect(),
            index_keys: IndexKeys::new(),
            placement_key: client_key,
            seq: Arc::new(AtomicU64::new(1)),
            failover,
        };
        for (sn, s) in subnets.iter().enumerate() {
            a.reserve(sn, s, 0);
        }
        a
    }

    /// Keeps the reserved resources of subnet index `sn` (configured as `s`) that lie in its
    /// pools from index `first_pool` on out of dynamic allocation (config validation put each
    /// inside a pool of this subnet, reserved once).
    fn reserve(&self, sn: usize, s: &SubnetConfig, first_pool: usize) {
        self.for_each_reserved(sn, s, |rr, id| {
            if rr.pool as usize >= first_pool {
                let pool = &self.subnets[sn].pools[rr.pool as usize];
                lock(pool.subpool_of(rr.index))
                    .reserved
                    .insert(rr.index, id);
            }
        });
    }

    /// Every resource subnet index `sn`'s reservations (configured as `s`) hold in its pools,
    /// with the reservation's [`crate::config::ReservationKey::stable_id`].
    fn for_each_reserved(&self, sn: usize, s: &SubnetConfig, mut f: impl FnMut(ResRef, u64)) {
        for r in s.reservations.list() {
            let id = r.key.stable_id();
            for kind in [ResourceKind::Address, ResourceKind::Prefix] {
                for (addr, _) in r.resources(kind) {
                    if let Some(rr) = self.locate(sn, kind, addr) {
                        f(rr, id);
                    }
                }
            }
        }
    }

    /// The table for a reloaded configuration `subnets` that only adds to this one: new
    /// subnets anywhere, new pools after a subnet's existing ones, lifetimes changed. The two
    /// tables share every existing pool and the client index, so workers still on this one
    /// and workers on the new one see the same leases. Returns it with the added pools
    /// (subnet index, pool index) for [`Allocator::restore_added`]. Refused, saying why,
    /// when a subnet or pool went away or changed, or a pool was added before existing ones.
    pub fn reconfigured(
        &self,
        subnets: &[SubnetConfig],
    ) -> Result<(Allocator, Vec<(usize, usize)>), String> {
        if let Some(gone) = self
            .subnets
            .iter()
            .find(|o| !subnets.iter().any(|s| s.id == o.id))
        {
            return Err(format!("subnet {} removed", gone.id));
        }
        let mut added = Vec::new();
        let mut out = Vec::with_capacity(subnets.len());
        // Per subnet, how many of its pools the running table already has.
        let mut kept_counts = Vec::with_capacity(subnets.len());
        for (sn, s) in subnets.iter().enumerate() {
            let old = self.subnets.iter().find(|o| o.id == s.id);
            let kept = old.map_or(&[][..], |o| &o.pools[..]);
            kept_counts.push(kept.len());
            for (pi, op) in kept.iter().enumerate() {
                let same = s.pools.get(pi).is_some_and(|np| {
                    np.kind == op.cfg.kind
                        && np.first == op.cfg.first
                        && np.count == op.cfg.count
                        && np.resource_len == op.cfg.resource_len
                        && np.subpools == op.cfg.subpools
                        && np.excluded == op.cfg.excluded
                });
                if !same {
                    return Err(format!(
                        "subnet {} pool {} removed, changed or moved (pools can be added after a subnet's existing ones; others need a restart)",
                        s.id,
                        pi + 1
                    ));
                }
            }
            let mut pools: Vec<Arc<PoolState>> = kept.to_vec();
            for (pi, p) in s.pools.iter().enumerate().skip(kept.len()) {
                pools.push(Arc::new(PoolState::new(p.clone(), self.failover)));
                added.push((sn, pi));
            }
            out.push(SubnetPools {
                id: s.id,
                lifetimes: s.lifetimes,
                pools,
            });
        }
        let a = Allocator {
            subnets: out,
            clients: self.clients.clone(),
            index_keys: self.index_keys,
            placement_key: self.placement_key,
            shard_grow: self.shard_grow,
            seq: self.seq.clone(),
            failover: self.failover,
        };
        for ((sn, s), first_new) in subnets.iter().enumerate().zip(kept_counts) {
            a.reserve(sn, s, first_new);
        }
        Ok((a, added))
    }

    /// Makes the reserved resources of every pool those of `subnets` (this table's
    /// configuration): a reload changed reservations. Each sub-pool's set is replaced at once,
    /// under its lock, so no allocation sees half of it; reservations are told apart by their
    /// key ([`crate::config::ReservationKey::stable_id`]), so a worker still on the engine from
    /// before agrees on every reservation both configurations have. A client holding a
    /// resource now reserved for another is told lifetime 0 at its next Renew or Rebind (see
    /// [`Allocator::extend`]). A resource whose reservation is removed is handed out again at
    /// once if it was used before and is in the free list; one never used so far, or freed
    /// while it was reserved, only after a restart (the walks over free resources skipped it).
    pub fn set_reservations(&self, subnets: &[SubnetConfig]) {
        type Fresh = HashMap<u128, u64, foldhash::fast::RandomState>;
        let mut fresh: HashMap<(usize, usize, usize), Fresh> = HashMap::new();
        for (sn, s) in subnets.iter().enumerate().take(self.subnets.len()) {
            self.for_each_reserved(sn, s, |rr, id| {
                let pool = &self.subnets[sn].pools[rr.pool as usize];
                fresh
                    .entry((sn, rr.pool as usize, pool.subpool_number(rr.index)))
                    .or_default()
                    .insert(rr.index, id);
            });
        }
        for (sn, sub) in self.subnets.iter().enumerate() {
            for (pi, pool) in sub.pools.iter().enumerate() {
                for (k, m) in pool.subpools.iter().enumerate() {
                    let set = fresh.remove(&(sn, pi, k)).unwrap_or_default();
                    let mut sp = lock(m);
                    if sp.reserved != set {
                        sp.reserved = set;
                    }
                }
            }
        }
    }

    /// Puts a stored lease that lies in one of the `added` pools (from
    /// [`Allocator::reconfigured`]) into this table: a lease kept on disk while its pool was
    /// not configured. Returns whether it did. Call before the table is used, then
    /// [`Allocator::finish_restore_added`].
    pub fn restore_added(&self, added: &[(usize, usize)], lease: Lease) -> bool {
        let Some(sn) = self.subnets.iter().position(|s| s.id == lease.subnet_id) else {
            return false;
        };
        match self.locate(sn, lease.kind, lease.addr) {
            Some(r) if added.contains(&(sn, r.pool as usize)) => {
                self.restore_with(lease, Some(added)).is_ok()
            }
            _ => false,
        }
    }

    /// [`Allocator::finish_restore`] for the `added` pools only (the others are in use).
    pub fn finish_restore_added(&self, added: &[(usize, usize)]) {
        for &(sn, pi) in added {
            finish_restore_pool(&self.subnets[sn].pools[pi]);
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The client IA's key in the client index.
    fn key(&self, c: &ClientIa) -> u128 {
        self.index_keys
            .key(self.subnets[c.subnet].id, c.kind, c.duid, c.iaid)
    }

    /// The client index key of the IA `l` is a record of.
    fn key_of(&self, l: &Lease) -> u128 {
        self.index_keys.key(l.subnet_id, l.kind, &l.duid, l.iaid)
    }

    /// Where the client IA's walk over a pool's sub-pools starts (modulo their number) when
    /// it needs a new resource: its home sub-pool.
    fn home(&self, c: &ClientIa) -> usize {
        let k = (self.placement_key)(self.subnets[c.subnet].id, c.kind, c.duid, c.iaid);
        spread(k) as usize
    }

    /// This allocator with `f` picking home sub-pools instead of [`client_key`]: a test's way
    /// to give clients colliding placement hashes.
    #[cfg(test)]
    pub(crate) fn with_placement_key(
        mut self,
        f: fn(u32, ResourceKind, &[u8], u32) -> u128,
    ) -> Self {
        self.placement_key = f;
        self
    }

    /// The pool a client index entry points into, if this table has it: the index is shared
    /// with the table a reload builds ([`Allocator::reconfigured`]), whose added pools come
    /// after this table's, so an entry it wrote may point past them.
    fn indexed_pool(&self, sn: usize, r: ResRef) -> Option<&PoolState> {
        self.subnets[sn].pools.get(r.pool as usize).map(|p| &**p)
    }

    /// Locks the client index shard of `key`, grown first if it is past its growth point
    /// ([`grow`]: the shards fill alike, so they would otherwise all double at once).
    fn lock_shard(&self, key: u128) -> MutexGuard<'_, ClientIndex> {
        // The high bits: the shard's table hashes by the low ones.
        let k = ((key >> 64) as usize) % CLIENT_SHARDS;
        let mut shard = lock(&self.clients[k]);
        self.shard_grow[k].before_insert(&mut shard);
        shard
    }

    /// Finds which pool of subnet `sn` holds `addr` as one of its `kind` resources.
    fn locate(&self, sn: usize, kind: ResourceKind, addr: Ipv6Addr) -> Option<ResRef> {
        self.subnets[sn]
            .pools
            .iter()
            .enumerate()
            .find_map(|(pi, p)| {
                (p.cfg.kind == kind)
                    .then(|| p.cfg.index_of(addr))
                    .flatten()
                    .map(|index| ResRef {
                        pool: pi as u16,
                        index,
                    })
            })
    }

    fn owns(lease: &Lease, c: &ClientIa, subnet_id: u32) -> bool {
        lease.iaid == c.iaid
            && lease.subnet_id == subnet_id
            && lease.kind == c.kind
            && *lease.duid == *c.duid
    }
    /// Every lease in the table (failover UPDREQALL, tests). Visits one sub-pool at a time.
    pub fn for_each_lease(&self, f: impl FnMut(&Lease)) {
        self.for_each_lease_in(None, f);
    }

    /// Every lease of the subnets in `scope`, one sub-pool at a time.
    pub fn for_each_lease_scoped(&self, scope: &Scope, mut f: impl FnMut(&Lease)) {
        for (i, sub) in self.subnets.iter().enumerate() {
            if scope.covers(sub.id) {
                self.for_each_lease_in(Some(i), &mut f);
            }
        }
    }

    /// Every lease of subnet index `sn` (None: of every subnet), one sub-pool at a time, in
    /// the order of the resources: the same order in every process (what the partner is sent
    /// first after a start or for UPDREQALL does not depend on a hash seed, so a simulated
    /// run replays exactly).
    pub fn for_each_lease_in(&self, sn: Option<usize>, mut f: impl FnMut(&Lease)) {
        let mut order: Vec<u128> = Vec::new();
        for (i, sub) in self.subnets.iter().enumerate() {
            if sn.is_some_and(|s| s != i) {
                continue;
            }
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let sp = lock(m);
                    order.clear();
                    order.extend(
                        sp.slots
                            .iter()
                            .filter(|(_, s)| s.lease.state != LeaseState::Offered)
                            .map(|(i, _)| i),
                    );
                    order.sort_unstable();
                    for i in &order {
                        f(&sp.slots[i].lease);
                    }
                }
            }
        }
    }

    /// The lease on a resource, if the table has one (tests and operator tools).
    pub fn lookup(&self, kind: ResourceKind, addr: Ipv6Addr) -> Option<Lease> {
        for (sn, sub) in self.subnets.iter().enumerate() {
            if let Some(r) = self.locate(sn, kind, addr) {
                let sp = lock(sub.pools[r.pool as usize].subpool_of(r.index));
                return sp.slots.get(&r.index).map(|s| s.lease.clone());
            }
        }
        None
    }

    /// The active lease in subnet index `sn` on `addr`: the address's own lease, or the
    /// delegated prefix that contains it (Leasequery by address, RFC 5007).
    pub fn lease_covering(&self, sn: usize, addr: Ipv6Addr) -> Option<Lease> {
        let a = u128::from(addr);
        for pool in &self.subnets.get(sn)?.pools {
            let index = match pool.cfg.kind {
                ResourceKind::Address => pool.cfg.index_of(addr),
                ResourceKind::Prefix => (a >= pool.cfg.first && a <= pool.cfg.last_addr())
                    .then(|| (a - pool.cfg.first) >> pool.cfg.shift),
            };
            let Some(index) = index else { continue };
            let sp = lock(pool.subpool_of(index));
            return sp
                .slots
                .get(&index)
                .filter(|s| s.lease.state == LeaseState::Active)
                .map(|s| s.lease.clone());
        }
        None
    }

    /// Every active lease of client `duid`, with its subnet index, in subnet `sn` or in all
    /// subnets (Leasequery by client identifier). This walks the whole table, one sub-pool at
    /// a time: for occasional queries from allowed requestors, not for the client path.
    pub fn leases_of(&self, duid: &[u8], sn: Option<usize>) -> Vec<(usize, Lease)> {
        let mut out = Vec::new();
        for (i, sub) in self.subnets.iter().enumerate() {
            if sn.is_some_and(|s| s != i) {
                continue;
            }
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let sp = lock(m);
                    out.extend(
                        sp.slots
                            .values()
                            .filter(|s| {
                                s.lease.state == LeaseState::Active && *s.lease.duid == *duid
                            })
                            .map(|s| (i, s.lease.clone())),
                    );
                }
            }
        }
        out
    }

    /// Usage of every pool: (subnet id, pool config, counts).
    pub fn usage(&self) -> Vec<(u32, PoolConfig, PoolUsage)> {
        let mut out = Vec::new();
        for sub in &self.subnets {
            for pool in &sub.pools {
                let mut u = PoolUsage {
                    total: pool.cfg.count,
                    ..Default::default()
                };
                for m in pool.subpools.iter() {
                    let sp = lock(m);
                    u.active += sp.usage.active;
                    u.declined += sp.usage.declined;
                    u.offered += sp.usage.offered;
                }
                out.push((sub.id, pool.cfg.clone(), u));
            }
        }
        out
    }

    /// Range of indices of each sub-pool of pool `pool` in subnet index `sn` (tests).
    pub fn subpool_ranges(&self, sn: usize, pool: usize) -> Vec<(u128, u128)> {
        self.subnets[sn].pools[pool]
            .subpools
            .iter()
            .map(|m| {
                let sp = lock(m);
                (sp.start, sp.end)
            })
            .collect()
    }
}
