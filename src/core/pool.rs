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

use crate::config::{Lifetimes, PoolConfig, ResourceKind, SubnetConfig};
use crate::lease::{Lease, LeaseState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Two servers' times closer than this count as equal when updates are compared (RFC 8156
/// §7.5; partners must keep their clocks within about this).
pub const SKEW_EQUAL_SECS: u64 = 5;
/// Number of shards of the client index (client key → resource).
pub const CLIENT_SHARDS: usize = 64;
/// Most expired leases one sub-pool reclaims per [`Allocator::reclaim`] call, so a reclaim
/// pass never holds a lock for long.
pub const RECLAIM_PER_SUBPOOL_MAX: usize = 4096;

/// Locks a mutex; a panic elsewhere while holding it does not make the data unusable here
/// (every critical section leaves the sub-pool consistent before anything that can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stable 128-bit hash of a client's IA: FNV-1a over subnet id, kind, IAID and DUID.
///
/// It is fixed (not randomly keyed) because both failover partners must agree on a client's
/// home sub-pool, and it must not change across restarts or versions.
pub fn client_key(subnet_id: u32, kind: ResourceKind, duid: &[u8], iaid: u32) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    let mut eat = |b: u8| {
        h ^= b as u128;
        h = h.wrapping_mul(PRIME);
    };
    subnet_id.to_be_bytes().into_iter().for_each(&mut eat);
    eat(kind.code());
    iaid.to_be_bytes().into_iter().for_each(&mut eat);
    duid.iter().copied().for_each(&mut eat);
    h
}

/// Spreads a client key over sub-pools and shards: folds the 128-bit key and runs murmur3's
/// 64-bit finalizer, so keys that differ in one DUID byte land far apart (FNV's high bits alone
/// barely move when only the last byte changes). Fixed, like [`client_key`].
pub fn spread(key: u128) -> u64 {
    let mut h = (key >> 64) as u64 ^ key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

/// Failover owner bit of a resource (RFC 8156 §4.2.1, independent allocation): addresses with
/// bit 127 set belong to the primary (1), the others to the secondary (0). Prefixes are split
/// the same way by their index in the pool (a static stand-in for proportional allocation
/// until POOLREQ rebalancing exists).
pub const PRIMARY_BIT: usize = 1;

/// What the failover state allows when allocating and how long leases may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// May hand out new resources whose owner bit is 0 / 1.
    pub owned: [bool; 2],
    /// From this time (unix secs) the other half may be used too, once ours is used up.
    pub partner_from: Option<u64>,
    /// Cap client lifetimes at max(acknowledged partner lifetime, now) + this.
    pub mclt_secs: Option<u64>,
}

impl Rules {
    /// A server on its own: every resource, no cap.
    pub const STANDALONE: Rules = Rules {
        owned: [true, true],
        partner_from: None,
        mclt_secs: None,
    };

    /// Whether a new lease may be made on a resource with owner bit `bit` at `now`.
    pub fn may_take(&self, bit: usize, now: u64) -> bool {
        self.owned[bit] || self.partner_from.is_some_and(|t| now >= t)
    }
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

#[derive(Clone, Copy)]
struct ResRef {
    pool: u16,
    index: u128,
}

struct Slot {
    lease: Lease,
    in_free_list: bool,
    in_pending: bool,
}

struct SubPool {
    /// First index of this sub-pool (inclusive).
    start: u128,
    /// One past the last index.
    end: u128,
    /// Per owner bit: the next never-used candidate (steps by 2, so each cursor walks one
    /// owner's half; indices below it have been looked at).
    cursor: [u128; 2],
    /// Per owner bit: indices that became free, oldest first. Entries may be stale (the slot was
    /// taken back by its old client); they are skipped when popped. Each index is in at most once.
    free: [VecDeque<u128>; 2],
    /// Added to an index before taking its low bit as the owner bit (the pool's first
    /// address's parity for address pools, 0 for prefix pools).
    flip: u128,
    /// Failover: freed leases wait here (PENDING-FREE, RFC 8156 §4.2) until the partner
    /// acknowledges the change, oldest first; only then may another client have them.
    pending: VecDeque<u128>,
    /// Whether this table serves a failover endpoint (PENDING-FREE applies).
    failover: bool,
    /// Every resource that is or was in use, by index.
    slots: HashMap<u128, Slot>,
    /// (expires_at, index) for every slot whose state ends by time: active, offered, declined.
    expiry: BTreeSet<(u64, u128)>,
    usage: PoolUsage,
}

impl SubPool {
    fn new(start: u128, end: u128, flip: u128, failover: bool) -> Self {
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
            usage: PoolUsage::default(),
        }
    }

    fn count(&mut self, state: LeaseState, delta: i64) {
        let c = match state {
            LeaseState::Active => &mut self.usage.active,
            LeaseState::Declined => &mut self.usage.declined,
            LeaseState::Offered => &mut self.usage.offered,
            _ => return,
        };
        *c = c.saturating_add_signed(delta);
    }

    fn owner(&self, index: u128) -> usize {
        ((index + self.flip) & 1) as usize
    }

    /// Picks a never-used index of owner `bit` from its cursor. O(1) amortised.
    fn take_never_used(&mut self, bit: usize) -> Option<u128> {
        while self.cursor[bit] < self.end {
            let i = self.cursor[bit];
            self.cursor[bit] += 2;
            if !self.slots.contains_key(&i) {
                return Some(i);
            }
        }
        None
    }

    /// Picks the oldest freed index of owner `bit`. O(1) amortised (stale entries are
    /// skipped once).
    fn take_freed(&mut self, bit: usize) -> Option<u128> {
        while let Some(i) = self.free[bit].pop_front() {
            let failover = self.failover;
            if let Some(s) = self.slots.get_mut(&i) {
                s.in_free_list = false;
                if reusable(failover, &s.lease) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Whether a free lease may go to another client: at once without failover; under
    /// failover once the partner acknowledged it became free (`partner_ack_until` is then the
    /// time of that acknowledgement; 0 means PENDING-FREE).
    fn failover_reusable(&self, l: &Lease) -> bool {
        reusable(self.failover, l)
    }

    /// Whether the resource at `index` may go to a new client.
    fn is_free(&self, index: u128) -> bool {
        self.slots
            .get(&index)
            .is_none_or(|s| self.failover_reusable(&s.lease))
    }

    /// Moves the slot at `index` to a new lease value, keeping the expiry index, counters and
    /// free list in step. The slot must exist or `lease` is inserted.
    fn set(&mut self, index: u128, lease: Lease) {
        let (old_state, old_exp, in_free, in_pending) = match self.slots.get(&index) {
            Some(s) => (
                Some(s.lease.state),
                end_of_state(&s.lease),
                s.in_free_list,
                s.in_pending,
            ),
            None => (None, 0, false, false),
        };
        if let Some(st) = old_state {
            self.count(st, -1);
            if timed(st) {
                self.expiry.remove(&(old_exp, index));
            }
        }
        self.count(lease.state, 1);
        if timed(lease.state) {
            self.expiry.insert((end_of_state(&lease), index));
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
fn end_of_state(l: &Lease) -> u64 {
    match l.state {
        LeaseState::Active => l.expires_at.max(l.partner_lifetime_received),
        _ => l.expires_at,
    }
}

/// See [`SubPool::failover_reusable`].
fn reusable(failover: bool, l: &Lease) -> bool {
    l.state.is_free() && (!failover || l.partner_ack_until > 0)
}

fn timed(s: LeaseState) -> bool {
    matches!(
        s,
        LeaseState::Active | LeaseState::Offered | LeaseState::Declined
    )
}

struct PoolState {
    cfg: PoolConfig,
    subpool_size: u128,
    subpools: Box<[Mutex<SubPool>]>,
}

impl PoolState {
    fn new(cfg: PoolConfig, failover: bool) -> Self {
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
    fn subpool_of(&self, index: u128) -> &Mutex<SubPool> {
        let k = (index / self.subpool_size) as usize;
        &self.subpools[k.min(self.subpools.len() - 1)]
    }
}

struct SubnetPools {
    id: u32,
    lifetimes: Lifetimes,
    pools: Vec<PoolState>,
}

/// The in-memory lease table of every subnet, shared by all workers.
pub struct Allocator {
    subnets: Vec<SubnetPools>,
    clients: Box<[Mutex<HashMap<u128, ResRef>>]>,
    seq: AtomicU64,
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
        Allocator {
            subnets: subnets
                .iter()
                .map(|s| SubnetPools {
                    id: s.id,
                    lifetimes: s.lifetimes,
                    pools: s
                        .pools
                        .iter()
                        .cloned()
                        .map(|p| PoolState::new(p, failover))
                        .collect(),
                })
                .collect(),
            clients: (0..CLIENT_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            seq: AtomicU64::new(1),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn key(&self, c: &ClientIa) -> u128 {
        client_key(self.subnets[c.subnet].id, c.kind, c.duid, c.iaid)
    }

    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, ResRef>> {
        &self.clients[(spread(key) as usize) % CLIENT_SHARDS]
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

    /// Lifetimes for a lease on a resource whose acknowledged partner lifetime is `ack`:
    /// the configured ones, capped under failover at max(ack, now) + MCLT (RFC 8156 §4.4).
    fn lifetimes_at(&self, c: &ClientIa, ack: u64, now: u64, rules: &Rules) -> (u32, u32) {
        let lt = &self.subnets[c.subnet].lifetimes;
        let mut valid = lt.valid_secs as u64;
        if let Some(m) = rules.mclt_secs {
            valid = valid.min(ack.max(now) + m - now);
        }
        let valid = valid.min(u32::MAX as u64) as u32;
        (lt.preferred_secs.min(valid), valid)
    }

    /// Applies `mode` to resource `r` for client `c` inside its locked sub-pool.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        sp: &mut SubPool,
        c: &ClientIa,
        r: ResRef,
        mode: AcquireMode,
        rules: &Rules,
        now: u64,
        writes: &mut Vec<Lease>,
    ) -> Granted {
        let subnet_id = self.subnets[c.subnet].id;
        let current = sp.slots.get(&r.index).map(|s| &s.lease);
        // The partner's acknowledgement speaks for this client's binding only, and only while
        // it is active: once released or expired, the partner's latest knowledge is that.
        let ack = current
            .filter(|l| Self::owns(l, c, subnet_id) && l.state == LeaseState::Active)
            .map_or(0, |l| l.partner_ack_until);
        let received = current
            .filter(|l| Self::owns(l, c, subnet_id))
            .map_or(0, |l| l.partner_lifetime_received);
        let (preferred, valid) = self.lifetimes_at(c, ack, now, rules);
        let (state, until) = match mode {
            // An offer never downgrades a lease the client already holds.
            AcquireMode::Offer { .. } if current.is_some_and(|l| l.state == LeaseState::Active) => {
                let l = &sp.slots[&r.index].lease;
                return Granted {
                    addr: l.addr,
                    prefix_len: l.prefix_len,
                    preferred_secs: preferred,
                    valid_secs: valid,
                };
            }
            AcquireMode::Offer { hold_secs } => (LeaseState::Offered, now + hold_secs as u64),
            AcquireMode::Grant => (LeaseState::Active, now + valid as u64),
        };
        let sub = &self.subnets[c.subnet];
        let p = &sub.pools[r.pool as usize].cfg;
        let lease = Lease {
            kind: c.kind,
            addr: p.resource(r.index),
            prefix_len: p.resource_len,
            subnet_id: sub.id,
            state,
            duid: c.duid.into(),
            iaid: c.iaid,
            preferred_secs: preferred,
            valid_secs: valid,
            cltt: now,
            expires_at: until,
            seq: self.next_seq(),
            partner_ack_until: ack,
            partner_lifetime_received: received,
        };
        let g = Granted {
            addr: lease.addr,
            prefix_len: lease.prefix_len,
            preferred_secs: preferred,
            valid_secs: valid,
        };
        if lease.state == LeaseState::Active {
            writes.push(lease.clone());
        }
        sp.set(r.index, lease);
        g
    }

    /// Finds the client's existing lease for this IA, or allocates one: a free `hint` first,
    /// then the client's home sub-pool, then the next sub-pools in turn, from the halves
    /// `rules` allow. `None` when nothing allowed is free. Store writes go to `writes`.
    pub fn acquire(
        &self,
        now: u64,
        c: &ClientIa,
        hints: &[Ipv6Addr],
        mode: AcquireMode,
        rules: &Rules,
        writes: &mut Vec<Lease>,
    ) -> Option<Granted> {
        let key = self.key(c);
        let subnet_id = self.subnets[c.subnet].id;
        let mut index = lock(self.shard(key));
        if let Some(r) = index.get(&key).copied() {
            let pool = &self.subnets[c.subnet].pools[r.pool as usize];
            let mut sp = lock(pool.subpool_of(r.index));
            // A binding still in use is the client's whatever the rules (lease stability); a
            // freed one is a new allocation and must be ours to hand out now.
            let bit = sp.owner(r.index);
            let usable = sp.slots.get(&r.index).is_some_and(|s| {
                Self::owns(&s.lease, c, subnet_id)
                    && s.lease.state != LeaseState::Declined
                    && (!s.lease.state.is_free() || rules.may_take(bit, now))
            });
            if usable {
                return Some(self.apply(&mut sp, c, r, mode, rules, now, writes));
            }
            drop(sp);
            index.remove(&key);
        }
        for h in hints {
            if let Some(r) = self.locate(c.subnet, c.kind, *h) {
                let pool = &self.subnets[c.subnet].pools[r.pool as usize];
                let mut sp = lock(pool.subpool_of(r.index));
                let bit = sp.owner(r.index);
                let allowed = rules.owned[bit]
                    || (c.kind == ResourceKind::Prefix && rules.may_take(bit, now));
                if sp.is_free(r.index) && allowed {
                    let g = self.apply(&mut sp, c, r, mode, rules, now, writes);
                    index.insert(key, r);
                    return Some(g);
                }
            }
        }
        // Our own half(s) first, the partner's only when the rules open it. Within each,
        // never-used resources anywhere before freed ones, so a freed lease stays free for its
        // last holder as long as possible. Normally the home sub-pool answers at once; the
        // walk over the others (at most 2 x 64 sub-pools per half) happens as pools fill up.
        let home = spread(key) as usize;
        // RFC 8156 §4.2.1: even in PARTNER-DOWN the partner's *addresses* SHOULD NOT be handed
        // to new clients (addresses are plentiful, and it keeps a mistaken PARTNER-DOWN from
        // duplicating them); its prefixes may be, MCLT after PARTNER-DOWN, once ours are used.
        let partner_open =
            c.kind == ResourceKind::Prefix && rules.partner_from.is_some_and(|t| now >= t);
        for (bit, own) in [(0usize, true), (1, true), (0, false), (1, false)] {
            if own != rules.owned[bit] || (!own && !partner_open) {
                continue;
            }
            for fresh in [true, false] {
                for (pi, pool) in self.subnets[c.subnet].pools.iter().enumerate() {
                    if pool.cfg.kind != c.kind {
                        continue;
                    }
                    let n = pool.subpools.len();
                    for k in 0..n {
                        let mut sp = lock(&pool.subpools[(home + k) % n]);
                        let got = if fresh {
                            sp.take_never_used(bit)
                        } else {
                            sp.take_freed(bit)
                        };
                        if let Some(i) = got {
                            let r = ResRef {
                                pool: pi as u16,
                                index: i,
                            };
                            let g = self.apply(&mut sp, c, r, mode, rules, now, writes);
                            index.insert(key, r);
                            return Some(g);
                        }
                    }
                }
            }
        }
        None
    }

    /// Renew/Rebind one address or prefix the client names. A lease the client holds is
    /// extended; one that is free (expired, released, never used) is given back to it when
    /// `create_if_free` and `rules` allow taking it (so clients keep their leases across a
    /// server that lost them).
    #[allow(clippy::too_many_arguments)]
    pub fn extend(
        &self,
        now: u64,
        c: &ClientIa,
        addr: Ipv6Addr,
        prefix_len: u8,
        create_if_free: bool,
        rules: &Rules,
        writes: &mut Vec<Lease>,
    ) -> Extended {
        let Some(r) = self.locate(c.subnet, c.kind, addr) else {
            return Extended::NotInPool;
        };
        let pool = &self.subnets[c.subnet].pools[r.pool as usize];
        if c.kind == ResourceKind::Prefix && prefix_len != pool.cfg.resource_len {
            return Extended::NotInPool;
        }
        let key = self.key(c);
        let subnet_id = self.subnets[c.subnet].id;
        let mut index = lock(self.shard(key));
        let mut sp = lock(pool.subpool_of(r.index));
        let may_create = create_if_free && rules.may_take(sp.owner(r.index), now);
        let ok = match sp.slots.get(&r.index) {
            Some(s) if s.lease.state == LeaseState::Declined => false,
            Some(s) if Self::owns(&s.lease, c, subnet_id) => {
                !s.lease.state.is_free() || rules.may_take(sp.owner(r.index), now)
            }
            Some(s) => may_create && sp.failover_reusable(&s.lease),
            None => may_create,
        };
        if !ok {
            return Extended::NotOwned;
        }
        let g = self.apply(&mut sp, c, r, AcquireMode::Grant, rules, now, writes);
        index.insert(key, r);
        Extended::Extended(g)
    }

    /// The client's current lease for this IA, if it holds one (active or offered).
    pub fn current(&self, c: &ClientIa) -> Option<Granted> {
        let key = self.key(c);
        let subnet_id = self.subnets[c.subnet].id;
        let index = lock(self.shard(key));
        let r = index.get(&key).copied()?;
        let pool = &self.subnets[c.subnet].pools[r.pool as usize];
        let sp = lock(pool.subpool_of(r.index));
        let s = sp.slots.get(&r.index)?;
        (Self::owns(&s.lease, c, subnet_id)
            && matches!(s.lease.state, LeaseState::Active | LeaseState::Offered))
        .then_some(Granted {
            addr: s.lease.addr,
            prefix_len: s.lease.prefix_len,
            preferred_secs: s.lease.preferred_secs,
            valid_secs: s.lease.valid_secs,
        })
    }

    /// Ends the client's lease on `addr` as Released (or Declined for `decline_hold_secs`
    /// when given). Returns false if the client holds no such lease.
    pub fn end(
        &self,
        now: u64,
        c: &ClientIa,
        addr: Ipv6Addr,
        decline_hold_secs: Option<u32>,
        writes: &mut Vec<Lease>,
    ) -> bool {
        let Some(r) = self.locate(c.subnet, c.kind, addr) else {
            return false;
        };
        let pool = &self.subnets[c.subnet].pools[r.pool as usize];
        let subnet_id = self.subnets[c.subnet].id;
        let mut sp = lock(pool.subpool_of(r.index));
        let Some(s) = sp.slots.get(&r.index) else {
            return false;
        };
        if !Self::owns(&s.lease, c, subnet_id)
            || !matches!(s.lease.state, LeaseState::Active | LeaseState::Offered)
        {
            return false;
        }
        let mut l = s.lease.clone();
        (l.state, l.expires_at) = match decline_hold_secs {
            Some(h) => (LeaseState::Declined, now + h as u64),
            None => (LeaseState::Released, now),
        };
        l.cltt = now;
        l.seq = self.next_seq();
        l.partner_ack_until = 0; // the partner's ack was for the active binding
        writes.push(l.clone());
        sp.set(r.index, l);
        true
    }

    /// Moves every lease whose time is up to its next state: active → expired, declined →
    /// expired (both stored), offered → free (memory only). At most
    /// [`RECLAIM_PER_SUBPOOL_MAX`] per sub-pool per call; returns how many changed.
    pub fn reclaim(&self, now: u64, writes: &mut Vec<Lease>) -> usize {
        let mut n = 0;
        for sub in &self.subnets {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let mut sp = lock(m);
                    for _ in 0..RECLAIM_PER_SUBPOOL_MAX {
                        let Some(&(t, i)) = sp.expiry.first() else {
                            break;
                        };
                        if t > now {
                            break;
                        }
                        let Some(s) = sp.slots.get(&i) else {
                            sp.expiry.pop_first();
                            continue;
                        };
                        if !timed(s.lease.state) || end_of_state(&s.lease) != t {
                            sp.expiry.pop_first(); // stale entry; set() keeps the live one
                            continue;
                        }
                        let mut l = s.lease.clone();
                        let stored = l.state != LeaseState::Offered;
                        l.state = LeaseState::Expired;
                        l.partner_ack_until = 0;
                        l.seq = self.next_seq();
                        if stored {
                            writes.push(l.clone());
                        }
                        sp.set(i, l);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Puts a lease read from the store back into the table. Leases that no longer fit the
    /// configuration (subnet or pool removed) are returned as an error for the caller to log;
    /// they are left in the store untouched.
    pub fn restore(&self, lease: Lease) -> Result<(), Lease> {
        let Some(sn) = self.subnets.iter().position(|s| s.id == lease.subnet_id) else {
            return Err(lease);
        };
        let Some(r) = self.locate(sn, lease.kind, lease.addr) else {
            return Err(lease);
        };
        let pool = &self.subnets[sn].pools[r.pool as usize];
        if pool.cfg.resource_len != lease.prefix_len || lease.state == LeaseState::Offered {
            return Err(lease);
        }
        self.seq.fetch_max(lease.seq + 1, Ordering::Relaxed);
        let key = client_key(lease.subnet_id, lease.kind, &lease.duid, lease.iaid);
        let mut index = lock(self.shard(key));
        let mut sp = lock(pool.subpool_of(r.index));
        let b = sp.owner(r.index);
        if r.index >= sp.cursor[b] {
            sp.cursor[b] = r.index + 2;
        }
        sp.set(r.index, lease);
        index.insert(key, r);
        Ok(())
    }

    /// Sorts each sub-pool's free list by the time leases became free, oldest first. Call
    /// once after restoring every lease.
    pub fn finish_restore(&self) {
        for sub in &self.subnets {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let mut sp = lock(m);
                    for b in 0..2 {
                        let mut v: Vec<u128> = sp.free[b].drain(..).collect();
                        v.sort_by_key(|i| sp.slots.get(i).map_or(0, |s| s.lease.expires_at));
                        sp.free[b] = v.into();
                    }
                }
            }
        }
    }

    /// Failover: the partner acknowledged a binding update for `lease` with partner lifetime
    /// `ack_until`. If the resource is still held by the same client, its acknowledged partner
    /// lifetime grows to that, and the changed lease is returned to be stored.
    pub fn record_ack(&self, lease: &Lease, ack_until: u64) -> Option<Lease> {
        let sn = self.subnets.iter().position(|s| s.id == lease.subnet_id)?;
        let r = self.locate(sn, lease.kind, lease.addr)?;
        let mut sp = lock(self.subnets[sn].pools[r.pool as usize].subpool_of(r.index));
        let cur = &sp.slots.get(&r.index)?.lease;
        // The partner acknowledged that the lease became free: another client may have it now.
        if lease.state.is_free()
            && cur.state == lease.state
            && cur.duid == lease.duid
            && cur.partner_ack_until == 0
        {
            let mut l = cur.clone();
            l.partner_ack_until = ack_until.max(1);
            l.seq = self.next_seq();
            sp.set(r.index, l.clone());
            return Some(l);
        }
        // Only an acknowledged *active* binding bounds renewals; an acknowledgement that comes
        // back after the lease was released or expired speaks of a state that is gone.
        if cur.duid != lease.duid
            || cur.iaid != lease.iaid
            || lease.state != LeaseState::Active
            || cur.state != LeaseState::Active
            || ack_until <= cur.partner_ack_until
        {
            return None;
        }
        let mut l = cur.clone();
        l.partner_ack_until = ack_until;
        l.seq = self.next_seq();
        sp.set(r.index, l.clone()); // keeps the expiry index in step
        Some(l)
    }

    /// Failover, PARTNER-DOWN: leases that became free before `cutoff` (unix secs; PARTNER-DOWN
    /// allows reuse MCLT after they became free) stop waiting for the partner's acknowledgement.
    /// Returns the changed leases to store. Bounded per sub-pool per call.
    pub fn release_pending(&self, cutoff: u64, now: u64) -> Vec<Lease> {
        let mut out = Vec::new();
        for sub in &self.subnets {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let mut sp = lock(m);
                    for _ in 0..RECLAIM_PER_SUBPOOL_MAX {
                        let Some(&i) = sp.pending.front() else { break };
                        let Some(s) = sp.slots.get(&i) else {
                            sp.pending.pop_front();
                            continue;
                        };
                        let still_pending =
                            s.lease.state.is_free() && s.lease.partner_ack_until == 0;
                        let became_free = s.lease.expires_at;
                        let mut l = s.lease.clone();
                        if !still_pending {
                            sp.pending.pop_front();
                            if let Some(s) = sp.slots.get_mut(&i) {
                                s.in_pending = false;
                            }
                            continue; // no longer pending
                        }
                        if became_free > cutoff {
                            break; // FIFO by the time they became free
                        }
                        sp.pending.pop_front();
                        l.partner_ack_until = now.max(1);
                        l.seq = self.next_seq();
                        if let Some(s) = sp.slots.get_mut(&i) {
                            s.in_pending = false;
                        }
                        sp.set(i, l.clone());
                        out.push(l);
                    }
                }
            }
        }
        out
    }

    /// Failover: takes in a binding the partner sent (BNDUPD), by RFC 8156 §7.5's rules with
    /// times within [`SKEW_EQUAL_SECS`] counted as equal and doubt resolved towards keeping an
    /// address held:
    /// - nothing here, or free here: the partner's view is taken;
    /// - active here for the same client: an active update is merged (the longest expiry
    ///   stays, since either side may have granted longer); an expiry wins once our own copy's
    ///   time is up too, a release only if not older than our last transaction with it;
    /// - active here for another client: a free update is refused (it speaks of an older
    ///   binding); an active one wins if clearly later, the primary's view stands when the
    ///   times are within the skew (`receiver_is_secondary` accepts it), and a clearly older
    ///   one is refused.
    ///
    /// Returns the lease to store before acknowledging, or `Err` with ours (send it back).
    pub fn apply_partner_update(
        &self,
        incoming: &Lease,
        receiver_is_secondary: bool,
        now: u64,
    ) -> Result<Lease, Lease> {
        let Some(sn) = self.subnets.iter().position(|s| s.id == incoming.subnet_id) else {
            return Err(incoming.clone());
        };
        let Some(r) = self.locate(sn, incoming.kind, incoming.addr) else {
            return Err(incoming.clone());
        };
        let key = client_key(
            incoming.subnet_id,
            incoming.kind,
            &incoming.duid,
            incoming.iaid,
        );
        let mut index = lock(self.shard(key));
        let mut sp = lock(self.subnets[sn].pools[r.pool as usize].subpool_of(r.index));
        let later = |a: u64, b: u64| a > b + SKEW_EQUAL_SECS;
        let mut l = incoming.clone();
        if let Some(s) = sp.slots.get(&r.index) {
            let local = &s.lease;
            let same_client = local.duid == incoming.duid && local.iaid == incoming.iaid;
            // The same client released it here after the transaction the incoming active
            // update speaks of: the update is stale (e.g. resent after the partner's restart
            // while our release was on its way to it). Not for an expiry: an active binding
            // may outlive the client's lifetime by its partner lifetime, and refusing it
            // both ways made the partners bounce the binding forever (seed 14294). Another
            // client's claim is taken whatever its time: refusing an active claim could hand
            // its resource out twice.
            if same_client
                && local.state == LeaseState::Released
                && incoming.state == LeaseState::Active
                && incoming.cltt < local.cltt
            {
                return Err(local.clone());
            }
            if local.state == LeaseState::Active {
                match (same_client, incoming.state) {
                    (true, LeaseState::Active) => {
                        l.expires_at = l.expires_at.max(local.expires_at);
                        l.cltt = l.cltt.max(local.cltt);
                        l.partner_ack_until = local.partner_ack_until;
                        l.partner_lifetime_received = l
                            .partner_lifetime_received
                            .max(local.partner_lifetime_received);
                        l.valid_secs = l.valid_secs.max(local.valid_secs);
                    }
                    // Expired: once our own copy's time is up too (RFC 8156 time(1)).
                    (true, LeaseState::Expired) if now <= end_of_state(local) + SKEW_EQUAL_SECS => {
                        return Err(local.clone());
                    }
                    (true, LeaseState::Expired) => {}
                    // Released (or other): only if not before our last transaction with it. The
                    // same client's release right after a renewal is the normal case (both
                    // times from the partner's clock, in order); one older than our own
                    // renewal speaks of a binding the client has since renewed here.
                    (true, _) if incoming.cltt < local.cltt => return Err(local.clone()),
                    (true, _) => {}
                    // Another client: the clearly later binding wins; within the skew the
                    // primary's view stands. A clearly older claim is stale whoever sends it
                    // (seed 165632: a restarted primary resent a binding its partner had since
                    // reassigned in PARTNER-DOWN).
                    (false, LeaseState::Active) if later(incoming.cltt, local.cltt) => {}
                    (false, LeaseState::Active)
                        if receiver_is_secondary && !later(local.cltt, incoming.cltt) => {}
                    (false, LeaseState::Active) => return Err(local.clone()),
                    (false, _) => return Err(local.clone()),
                }
            }
        }
        l.seq = self.next_seq();
        let b = sp.owner(r.index);
        if r.index >= sp.cursor[b] && l.state != LeaseState::Offered {
            // The partner used it: it is no longer never-used here either.
            sp.cursor[b] = sp.cursor[b].max(r.index + 2);
        }
        sp.set(r.index, l.clone());
        index.insert(key, r);
        Ok(l)
    }

    /// Every lease in the table (failover UPDREQALL, tests). Visits one sub-pool at a time.
    pub fn for_each_lease(&self, mut f: impl FnMut(&Lease)) {
        for sub in &self.subnets {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let sp = lock(m);
                    sp.slots
                        .values()
                        .filter(|s| s.lease.state != LeaseState::Offered)
                        .for_each(|s| f(&s.lease));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn alloc(text_pools: &str) -> Allocator {
        let t = format!(
            "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n{text_pools}\n"
        );
        let c = config::parse("t", &t).unwrap();
        Allocator::new(&c.subnets)
    }

    fn ia(duid: &[u8], iaid: u32) -> ClientIa<'_> {
        ClientIa {
            subnet: 0,
            kind: ResourceKind::Address,
            duid,
            iaid,
        }
    }

    #[test]
    fn same_client_same_lease_and_no_duplicates_until_exhausted() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..256u32 {
            let d = i.to_be_bytes();
            let g = a
                .acquire(
                    10,
                    &ia(&d, 1),
                    &[],
                    AcquireMode::Grant,
                    &Rules::STANDALONE,
                    &mut w,
                )
                .unwrap();
            assert!(seen.insert(g.addr), "{} handed out twice", g.addr);
            let again = a
                .acquire(
                    11,
                    &ia(&d, 1),
                    &[],
                    AcquireMode::Grant,
                    &Rules::STANDALONE,
                    &mut w,
                )
                .unwrap();
            assert_eq!(again.addr, g.addr);
        }
        assert_eq!(
            a.acquire(
                12,
                &ia(b"late", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            ),
            None
        );
        assert_eq!(w.len(), 512);
        assert_eq!(a.usage()[0].2.active, 256);
    }

    #[test]
    fn hint_is_honoured_when_free_and_not_when_taken() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        let h: Ipv6Addr = "2001:db8::1a0".parse().unwrap();
        let g = a
            .acquire(
                1,
                &ia(b"a", 1),
                &[h],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_eq!(g.addr, h);
        let g2 = a
            .acquire(
                1,
                &ia(b"b", 1),
                &[h],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_ne!(g2.addr, h);
        // Outside the pool: ignored.
        let g3 = a
            .acquire(
                1,
                &ia(b"c", 1),
                &["2001:db8::5".parse().unwrap()],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_ne!(g3.addr, "2001:db8::5".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn expiry_frees_and_the_old_client_gets_it_back() {
        let a = alloc(
            "pools=[{range=\"2001:db8::100-2001:db8::101\"}]\nlease={preferred_lifetime_secs=50, valid_lifetime_secs=100}",
        );
        let mut w = Vec::new();
        let g1 = a
            .acquire(
                0,
                &ia(b"a", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        let g2 = a
            .acquire(
                0,
                &ia(b"b", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_eq!(
            a.acquire(
                0,
                &ia(b"c", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            ),
            None
        );
        w.clear();
        assert_eq!(a.reclaim(99, &mut w), 0);
        assert_eq!(a.reclaim(100, &mut w), 2);
        assert!(w.iter().all(|l| l.state == LeaseState::Expired));
        // a comes back first and gets its own address, not the oldest free one.
        assert_eq!(
            a.acquire(
                200,
                &ia(b"a", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            )
            .unwrap()
            .addr,
            g1.addr
        );
        // c takes the remaining one (b's), since nothing else is free.
        assert_eq!(
            a.acquire(
                200,
                &ia(b"c", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            )
            .unwrap()
            .addr,
            g2.addr
        );
        // b's stale index entry must not give it c's lease.
        assert_eq!(
            a.acquire(
                200,
                &ia(b"b", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            ),
            None
        );
    }

    #[test]
    fn offers_are_memory_only_and_lapse() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::100\"}]");
        let mut w = Vec::new();
        let g = a
            .acquire(
                0,
                &ia(b"a", 1),
                &[],
                AcquireMode::Offer { hold_secs: 5 },
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert!(w.is_empty());
        assert_eq!(
            a.acquire(
                1,
                &ia(b"b", 1),
                &[],
                AcquireMode::Offer { hold_secs: 5 },
                &Rules::STANDALONE,
                &mut w
            ),
            None
        );
        assert_eq!(a.reclaim(5, &mut w), 1);
        assert!(w.is_empty(), "a lapsed offer is not stored");
        assert_eq!(
            a.acquire(
                6,
                &ia(b"b", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w
            )
            .unwrap()
            .addr,
            g.addr
        );
    }

    #[test]
    fn release_decline_and_extend() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        let g = a
            .acquire(
                0,
                &ia(b"a", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert!(
            !a.end(1, &ia(b"b", 1), g.addr, None, &mut w),
            "not b's to release"
        );
        assert_eq!(
            a.extend(
                1,
                &ia(b"b", 1),
                g.addr,
                128,
                true,
                &Rules::STANDALONE,
                &mut w
            ),
            Extended::NotOwned
        );
        assert!(matches!(
            a.extend(
                1,
                &ia(b"a", 1),
                g.addr,
                128,
                false,
                &Rules::STANDALONE,
                &mut w
            ),
            Extended::Extended(_)
        ));
        assert_eq!(
            a.extend(
                1,
                &ia(b"a", 1),
                "2001:db9::1".parse().unwrap(),
                128,
                true,
                &Rules::STANDALONE,
                &mut w
            ),
            Extended::NotInPool
        );
        assert!(a.end(2, &ia(b"a", 1), g.addr, Some(30), &mut w));
        assert_eq!(
            a.lookup(ResourceKind::Address, g.addr).unwrap().state,
            LeaseState::Declined
        );
        assert_eq!(
            a.extend(
                3,
                &ia(b"a", 1),
                g.addr,
                128,
                true,
                &Rules::STANDALONE,
                &mut w
            ),
            Extended::NotOwned
        );
        // The declined address is not handed out again while held.
        let g2 = a
            .acquire(
                3,
                &ia(b"a", 1),
                &[g.addr],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_ne!(g2.addr, g.addr);
        assert!(a.end(4, &ia(b"a", 1), g2.addr, None, &mut w));
        // Renewing a free address not held by anyone recreates the binding (server lost it).
        assert!(matches!(
            a.extend(
                5,
                &ia(b"z", 9),
                "2001:db8::1f0".parse().unwrap(),
                128,
                true,
                &Rules::STANDALONE,
                &mut w
            ),
            Extended::Extended(_)
        ));
    }

    #[test]
    fn prefix_pool_of_millions_allocates_without_scanning() {
        let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npd_pools=[{prefix=\"2001:db8:8000::/33\", delegated_len=56}]\n";
        let c = config::parse("t", t).unwrap();
        let a = Allocator::new(&c.subnets);
        assert_eq!(a.subpool_ranges(0, 0).len(), 64);
        let mut w = Vec::new();
        let c1 = ClientIa {
            subnet: 0,
            kind: ResourceKind::Prefix,
            duid: b"x",
            iaid: 1,
        };
        let g = a
            .acquire(0, &c1, &[], AcquireMode::Grant, &Rules::STANDALONE, &mut w)
            .unwrap();
        assert_eq!(g.prefix_len, 56);
        let p = &c.subnets[0].pools[0];
        let idx = p.index_of(g.addr).unwrap();
        let home = spread(client_key(1, ResourceKind::Prefix, b"x", 1)) % 64;
        assert_eq!(
            idx / (p.count / 64),
            home as u128,
            "allocated in the client's home sub-pool"
        );
    }

    #[test]
    fn sequential_duids_spread_over_subpools() {
        // perfdhcp-style DUIDs that differ only in their last bytes.
        let mut used = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let mut d = vec![0, 1, 0, 1, 0x32, 0x99, 0xd9, 0x01, 0, 0x0c, 1, 2];
            d.extend_from_slice(&(i as u16).to_be_bytes());
            used.insert(spread(client_key(1, ResourceKind::Address, &d, 1)) % 64);
        }
        assert!(used.len() >= 60, "only {} of 64 sub-pools used", used.len());
    }

    #[test]
    fn restore_rebuilds_cursor_index_and_free_list() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        for i in 0..10u32 {
            a.acquire(
                0,
                &ia(&i.to_be_bytes(), 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        }
        let g0 = a.current(&ia(&0u32.to_be_bytes(), 1)).unwrap();
        a.end(1, &ia(&0u32.to_be_bytes(), 1), g0.addr, None, &mut w);
        let b = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut last = std::collections::HashMap::new();
        for l in w.drain(..) {
            last.insert(l.key(), l);
        }
        for l in last.into_values() {
            b.restore(l).unwrap();
        }
        b.finish_restore();
        for i in 1..10u32 {
            let d = i.to_be_bytes();
            assert_eq!(b.current(&ia(&d, 1)), a.current(&ia(&d, 1)));
        }
        // New clients never get an active restored lease.
        let mut held: std::collections::HashSet<_> = (1..10u32)
            .map(|i| a.current(&ia(&i.to_be_bytes(), 1)).unwrap().addr)
            .collect();
        for i in 100..1000u32 {
            match b.acquire(
                2,
                &ia(&i.to_be_bytes(), 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            ) {
                Some(g) => assert!(held.insert(g.addr), "{} given twice after restore", g.addr),
                None => break,
            }
        }
        assert_eq!(held.len(), 256);
    }

    fn rules(own: usize, partner_from: Option<u64>, mclt: Option<u64>) -> Rules {
        let mut owned = [false, false];
        owned[own] = true;
        Rules {
            owned,
            partner_from,
            mclt_secs: mclt,
        }
    }

    #[test]
    fn independent_allocation_splits_addresses_by_bit_127() {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        let primary = rules(PRIMARY_BIT, None, None);
        let secondary = rules(1 - PRIMARY_BIT, None, None);
        for i in 0..128u32 {
            let g = a
                .acquire(
                    0,
                    &ia(&i.to_be_bytes(), 1),
                    &[],
                    AcquireMode::Grant,
                    &primary,
                    &mut w,
                )
                .unwrap();
            assert_eq!(u128::from(g.addr) & 1, 1, "primary handed out {}", g.addr);
        }
        assert_eq!(
            a.acquire(
                0,
                &ia(b"p-late", 1),
                &[],
                AcquireMode::Grant,
                &primary,
                &mut w
            ),
            None,
            "primary's half is used up"
        );
        // A hint in the primary's half is not honoured for the secondary.
        let g = a
            .acquire(
                0,
                &ia(b"s", 1),
                &["2001:db8::101".parse().unwrap()],
                AcquireMode::Grant,
                &secondary,
                &mut w,
            )
            .unwrap();
        assert_eq!(u128::from(g.addr) & 1, 0);
    }

    #[test]
    fn partner_half_opens_only_at_its_time_for_prefixes_never_for_addresses() {
        let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
                 pools=[{range=\"2001:db8::100-2001:db8::103\"}]\n\
                 pd_pools=[{prefix=\"2001:db8:8000::/54\", delegated_len=56}]\n";
        let c = config::parse("t", t).unwrap();
        let a = Allocator::new(&c.subnets);
        let mut w = Vec::new();
        let r = rules(PRIMARY_BIT, Some(1000), None);
        let pd = |d: &'static [u8]| ClientIa {
            subnet: 0,
            kind: ResourceKind::Prefix,
            duid: d,
            iaid: 1,
        };
        // Prefixes: our half (2 of 4) first, then nothing until the partner's half opens.
        let p1 = a
            .acquire(10, &pd(b"p1"), &[], AcquireMode::Grant, &r, &mut w)
            .unwrap();
        let p2 = a
            .acquire(10, &pd(b"p2"), &[], AcquireMode::Grant, &r, &mut w)
            .unwrap();
        let own = |g: &Granted| {
            c.subnets[0].pools[1].index_of(g.addr).unwrap() & 1 == PRIMARY_BIT as u128
        };
        assert!(own(&p1) && own(&p2));
        assert_eq!(
            a.acquire(999, &pd(b"p3"), &[], AcquireMode::Grant, &r, &mut w),
            None
        );
        let p3 = a
            .acquire(1000, &pd(b"p3"), &[], AcquireMode::Grant, &r, &mut w)
            .unwrap();
        assert!(!own(&p3), "partner's prefixes after PARTNER-DOWN + MCLT");
        // Addresses: never the partner's half for a new client (RFC 8156 SHOULD NOT).
        for i in 0..2u32 {
            let g = a
                .acquire(
                    10,
                    &ia(&i.to_be_bytes(), 1),
                    &[],
                    AcquireMode::Grant,
                    &r,
                    &mut w,
                )
                .unwrap();
            assert_eq!(u128::from(g.addr) & 1, 1);
        }
        assert_eq!(
            a.acquire(5000, &ia(b"x", 1), &[], AcquireMode::Grant, &r, &mut w),
            None
        );
        assert_eq!(
            a.acquire(
                5000,
                &ia(b"x", 1),
                &["2001:db8::102".parse().unwrap()],
                AcquireMode::Grant,
                &r,
                &mut w
            ),
            None,
            "not through a hint either"
        );
        // Creating a binding on the partner's half through Renew follows the rules too.
        let strict = rules(PRIMARY_BIT, None, None);
        assert_eq!(
            a.extend(
                5,
                &ia(b"y", 1),
                "2001:db8::102".parse().unwrap(),
                128,
                true,
                &strict,
                &mut w
            ),
            Extended::NotOwned
        );
    }

    #[test]
    fn mclt_caps_lifetimes_until_the_partner_acknowledges() {
        // valid 7200 by default; MCLT 600.
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        let r = rules(PRIMARY_BIT, None, Some(600));
        let c = ia(b"m", 1);
        let g = a
            .acquire(1000, &c, &[], AcquireMode::Grant, &r, &mut w)
            .unwrap();
        assert_eq!(g.valid_secs, 600, "nothing acknowledged: at most MCLT");
        assert!(g.preferred_secs <= g.valid_secs);
        let lease = w.last().unwrap().clone();
        assert_eq!(lease.expires_at, 1600);
        // The partner acknowledges a partner lifetime of 1000 + 600 + 7200.
        let acked = a.record_ack(&lease, 8800).unwrap();
        assert_eq!(acked.partner_ack_until, 8800);
        assert!(
            a.record_ack(&lease, 100).is_none(),
            "an older acknowledgement changes nothing"
        );
        let g2 = a
            .acquire(1300, &c, &[], AcquireMode::Grant, &r, &mut w)
            .unwrap();
        assert_eq!(
            g2.valid_secs, 7200,
            "acknowledged: full lifetime fits under ack + MCLT"
        );
        // Without failover (standalone) no cap at all.
        let g3 = a
            .acquire(
                1300,
                &ia(b"n", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_eq!(g3.valid_secs, 7200);
    }

    /// A small pool with one lease granted at time 100 to client `ours`, IAID 1.
    fn one_grant() -> (Allocator, Lease) {
        let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
        let mut w = Vec::new();
        a.acquire(
            100,
            &ia(b"ours", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
        let l = w.last().unwrap().clone();
        (a, l)
    }

    #[test]
    fn same_client_release_right_after_renewal_is_taken_an_older_one_refused() {
        let (a, active) = one_grant();
        let mut released = active.clone();
        released.state = LeaseState::Released;
        released.cltt = active.cltt - 1;
        assert!(
            a.apply_partner_update(&released, true, 101).is_err(),
            "a release older than our last transaction is refused"
        );
        released.cltt = active.cltt + 1;
        let taken = a.apply_partner_update(&released, true, 101).unwrap();
        assert_eq!(
            taken.state,
            LeaseState::Released,
            "a release 1 s after the renewal (well within clock skew) is taken"
        );
    }

    #[test]
    fn a_stale_active_update_for_a_client_that_released_is_refused() {
        let (a, old_active) = one_grant();
        let mut released = old_active.clone();
        released.state = LeaseState::Released;
        released.cltt = old_active.cltt + 50;
        a.apply_partner_update(&released, true, 160).unwrap();
        assert!(
            a.apply_partner_update(&old_active, true, 161).is_err(),
            "the client released it after that grant: the active update is stale"
        );
        let mut other = old_active.clone();
        other.duid = b"theirs".to_vec().into();
        assert!(
            a.apply_partner_update(&other, true, 161).is_ok(),
            "another client's claim is taken: refusing it could hand the address out twice"
        );
    }

    #[test]
    fn partner_updates_are_taken_unless_we_saw_another_client_later() {
        let (a, g) = one_grant();
        let mut w = Vec::new();
        let mut theirs = g.clone();
        theirs.duid = b"theirs".to_vec().into();
        theirs.cltt = 50;
        assert!(
            a.apply_partner_update(&theirs, false, 100).is_err(),
            "our client is newer: refused"
        );
        theirs.cltt = 200;
        let taken = a.apply_partner_update(&theirs, false, 100).unwrap();
        assert_eq!(&*taken.duid, b"theirs");
        assert_eq!(
            a.lookup(ResourceKind::Address, g.addr).unwrap().duid,
            taken.duid
        );
        // The partner's client now owns it here too: our old client does not get it back.
        let again = a
            .acquire(
                300,
                &ia(b"ours", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_ne!(again.addr, g.addr);
        // A resource the partner used is no longer handed out as never-used.
        let mut fresh = taken.clone();
        fresh.addr = "2001:db8::1fe".parse().unwrap();
        fresh.duid = b"z".to_vec().into();
        a.apply_partner_update(&fresh, false, 100).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..300u32 {
            if let Some(g) = a.acquire(
                400,
                &ia(&i.to_be_bytes(), 9),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            ) {
                assert_ne!(g.addr, fresh.addr);
                assert!(seen.insert(g.addr));
            }
        }
    }
}
