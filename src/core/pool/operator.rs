//! What an operator may do to the lease table directly (`tandem ctl lease-add` and
//! `lease-delete`): add a lease on a free resource, end a client's lease. Both return the
//! lease record to store, as the client paths do.

use super::*;

/// Why an operator's change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorRefusal {
    /// No configured pool holds the resource.
    NotInPool(String),
    /// Someone holds it.
    Held {
        /// The resource.
        what: String,
        /// Its lease's state.
        state: LeaseState,
        /// The holder's DUID, hex.
        duid: String,
        /// The holder's IAID.
        iaid: u32,
    },
    /// It is reserved (host reservation) for someone.
    Reserved(String),
    /// The client already holds a resource for this IA.
    ClientHolds(String),
    /// Nothing active there.
    NoLease(String),
    /// Under failover: this server may not hand the resource out in its current state (it is
    /// in the partner's share of the pool, or this is a hot-standby secondary in NORMAL, which
    /// makes no new lease).
    PartnersShare(String),
}

impl std::fmt::Display for OperatorRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorRefusal::NotInPool(w) => {
                write!(f, "{w} is in no configured pool of that kind and length")
            }
            OperatorRefusal::Held {
                what,
                state,
                duid,
                iaid,
            } => write!(f, "{what} is held ({state}) by DUID {duid} IAID {iaid}"),
            OperatorRefusal::Reserved(w) => write!(f, "{w} is reserved for a host reservation"),
            OperatorRefusal::ClientHolds(w) => {
                write!(f, "the client already holds {w} for this IAID")
            }
            OperatorRefusal::NoLease(w) => write!(f, "no active lease on {w}"),
            OperatorRefusal::PartnersShare(w) => write!(
                f,
                "{w} may not be handed out by this server in its failover state (the partner's share of the pool, or a secondary in NORMAL, which makes no new lease): add it on the server that serves it"
            ),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Allocator {
    /// Subnet index and resource of `kind` at `addr`/`prefix_len`, if a pool holds it.
    fn find(&self, kind: ResourceKind, addr: Ipv6Addr, prefix_len: u8) -> Option<(usize, ResRef)> {
        (0..self.subnets.len()).find_map(|sn| {
            let r = self.locate(sn, kind, addr)?;
            let pool = &self.subnets[sn].pools[r.pool as usize];
            (pool.cfg.resource_len == prefix_len && pool.cfg.resource(r.index) == addr)
                .then_some((sn, r))
        })
    }

    /// Adds an active lease for `duid`/`iaid` on a resource no one holds (never used, expired
    /// or released and, under failover, acknowledged by the partner; not reserved), from `now`
    /// for the given lifetimes, under the same `rules` as a client's new lease: under failover
    /// only on a resource this server may hand out now, with the valid lifetime capped at MCLT
    /// (the partner has acknowledged nothing of it yet).
    #[allow(clippy::too_many_arguments)]
    pub fn operator_add(
        &self,
        rules: &Rules,
        now: u64,
        kind: ResourceKind,
        addr: Ipv6Addr,
        prefix_len: u8,
        duid: &[u8],
        iaid: u32,
        preferred_secs: u32,
        valid_secs: u32,
    ) -> Result<Lease, OperatorRefusal> {
        let what = format!("{addr}/{prefix_len}");
        let (sn, r) = self
            .find(kind, addr, prefix_len)
            .ok_or_else(|| OperatorRefusal::NotInPool(what.clone()))?;
        let subnet_id = self.subnets[sn].id;
        let key = self.index_keys.key(subnet_id, kind, duid, iaid);
        let mut index = self.lock_shard(key);
        if let Some(held) = index.get(&key).copied() {
            let Some(p) = self.indexed_pool(sn, held) else {
                return Err(OperatorRefusal::ClientHolds(
                    "a resource of a pool added by a reload since this request began".into(),
                ));
            };
            let sp = lock(p.subpool_of(held.index));
            if let Some(s) = sp.slots.get(&held.index)
                && *s.lease.duid == *duid
                && s.lease.iaid == iaid
                && s.lease.subnet_id == subnet_id
                && matches!(s.lease.state, LeaseState::Active | LeaseState::Offered)
            {
                return Err(OperatorRefusal::ClientHolds(format!(
                    "{}/{}",
                    s.lease.addr, s.lease.prefix_len
                )));
            }
        }
        let pool = &self.subnets[sn].pools[r.pool as usize];
        let mut sp = lock(pool.subpool_of(r.index));
        if sp.reserved.contains_key(&r.index) {
            return Err(OperatorRefusal::Reserved(what));
        }
        // As for a client's new lease: the partner's prefixes from PARTNER-DOWN + MCLT, never
        // its addresses (RFC 8156 §4.2.1).
        let bit = sp.owner(r.index);
        if !(rules.owned[bit] || (kind == ResourceKind::Prefix && rules.may_take(bit, now))) {
            return Err(OperatorRefusal::PartnersShare(what));
        }
        let valid_secs = match rules.mclt_secs {
            Some(m) => valid_secs.min(m.min(u32::MAX as u64) as u32),
            None => valid_secs,
        };
        if let Some(s) = sp.slots.get(&r.index)
            && !sp.is_free(r.index)
        {
            return Err(OperatorRefusal::Held {
                what,
                state: s.lease.state,
                duid: hex(&s.lease.duid),
                iaid: s.lease.iaid,
            });
        }
        let lease = Lease {
            kind,
            addr,
            prefix_len,
            subnet_id,
            state: LeaseState::Active,
            duid: duid.into(),
            iaid,
            preferred_secs: preferred_secs.min(valid_secs),
            valid_secs,
            cltt: now,
            expires_at: now + valid_secs as u64,
            seq: self.next_seq(),
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        };
        sp.set(r.index, lease.clone());
        index.insert(key, r);
        Ok(lease)
    }

    /// Ends the active lease on `addr`/`prefix_len` as released, whoever holds it; returns
    /// the record to store.
    pub fn operator_delete(
        &self,
        now: u64,
        kind: ResourceKind,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<Lease, OperatorRefusal> {
        let what = format!("{addr}/{prefix_len}");
        let (sn, _) = self
            .find(kind, addr, prefix_len)
            .ok_or_else(|| OperatorRefusal::NotInPool(what.clone()))?;
        let held = self
            .lookup(kind, addr)
            .filter(|l| l.state == LeaseState::Active)
            .ok_or_else(|| OperatorRefusal::NoLease(what.clone()))?;
        let c = ClientIa {
            subnet: sn,
            kind,
            duid: &held.duid,
            iaid: held.iaid,
            reservation: None,
            relay: &[],
            bytes: None,
        };
        let mut writes = Vec::with_capacity(1);
        // `end` checks again under the sub-pool's lock: a client may have released it meanwhile.
        if !self.end(now, &c, addr, None, &mut writes) {
            return Err(OperatorRefusal::NoLease(what));
        }
        writes.pop().ok_or(OperatorRefusal::NoLease(what))
    }
}
