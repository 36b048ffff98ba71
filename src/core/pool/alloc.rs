//! Allocation: acquire (offers and grants), extend (Renew, Rebind), end (Release, Decline),
//! reclaim what expired, and restore the table from the store.

use super::subpool::{SubPool, end_of_state, timed};
use super::*;
use crate::config::KeyKind;

impl Allocator {
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
        // The partner's claim stays with the client's binding even after it ended here: we
        // acknowledged it, and the partner, which may not have heard of the end, may still
        // extend the client's lease up to it + MCLT (seed 17014179: dropping it at a re-grant
        // after a release let the partner's renewal run past what this server kept).
        let received = current
            .filter(|l| Self::owns(l, c, subnet_id))
            .map_or(0, |l| l.partner_lifetime_received);
        // An offer is never stored nor sent: it keeps what the partner knew of the resource
        // before (a free record's acknowledgement, 0 while PENDING-FREE; a never-used one is
        // known free), so that a lapsed offer is exactly as reusable as the resource was.
        let offered_ack = match current {
            None => now.max(1),
            Some(l) if l.state.is_free() || l.state == LeaseState::Offered => l.partner_ack_until,
            Some(_) => 0,
        };
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
        // A renewal usually names the same client through the same relays: the record's own
        // bytes are shared instead of allocated again; else the message's, which its other
        // IAs share.
        let held = sp.slots.get(&r.index).map(|s| &s.lease);
        let duid = c.duid_bytes(held.map(|l| &l.duid));
        let relay = c.relay_bytes(held.map(|l| &l.relay));
        let lease = Lease {
            kind: c.kind,
            addr: p.resource(r.index),
            prefix_len: p.resource_len,
            subnet_id: sub.id,
            state,
            duid,
            iaid: c.iaid,
            preferred_secs: preferred,
            valid_secs: valid,
            cltt: now,
            expires_at: until,
            seq: self.next_seq(),
            partner_ack_until: if state == LeaseState::Offered {
                offered_ack
            } else {
                ack
            },
            partner_lifetime_received: received,
            relay,
            partner_seq: 0,
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
        let mine = c.reservation.map(|(id, _)| id);
        let mut index = self.lock_shard(key);
        let mut old = None;
        if let Some(r) = index.get(&key).copied() {
            // The client holds a resource of a pool a reload added, which only the newer
            // table has (this worker is still on the older one, for this batch at most):
            // nothing to give it here, and nothing to take from the newer table.
            let pool = self.indexed_pool(c.subnet, r)?;
            let mut sp = lock(pool.subpool_of(r.index));
            // A binding still in use is the client's whatever the rules (lease stability); a
            // freed one is a new allocation and must be ours to hand out now.
            let bit = sp.owner(r.index);
            let reserved_for_other = sp.reserved_for_other(r.index, mine);
            // An offer is not a binding yet: turning it into one is a new allocation, which
            // the rules of now must allow (seed 6046906: offered from the partner's half in
            // PARTNER-DOWN, granted after the change to NORMAL).
            let new_allowed =
                rules.owned[bit] || (c.kind == ResourceKind::Prefix && rules.may_take(bit, now));
            // An active binding the partner never heard of, on its half, at a time we may not
            // take from that half (seed 10837211: made in PARTNER-DOWN, its commit failed, and
            // the client's retransmitted Request found it in memory under
            // COMMUNICATIONS-INTERRUPTED while the partner gave the prefix out from its own
            // half): the client gets a resource we may hand out. The binding itself is left to
            // run out, see [`Allocator::unknown_to_partner_off_limits`].
            let usable = sp.slots.get(&r.index).is_some_and(|s| {
                Self::owns(&s.lease, c, subnet_id)
                    && !reserved_for_other
                    && !Self::unknown_to_partner_off_limits(&s.lease, bit, rules, now)
                    && match s.lease.state {
                        LeaseState::Declined => false,
                        LeaseState::Offered => new_allowed,
                        st if st.is_free() => rules.may_take(bit, now),
                        _ => true,
                    }
            });
            // Reserved for another client since this one got it: a grant moves this client
            // elsewhere and ends that lease, so the reservation's client can have it.
            if reserved_for_other
                && mode == AcquireMode::Grant
                && let Some(s) = sp.slots.get(&r.index)
                && Self::owns(&s.lease, c, subnet_id)
                && s.lease.state == LeaseState::Active
            {
                let l = self.ended(&s.lease, now);
                writes.push(l.clone());
                sp.set(r.index, l);
            }
            // A client with a reservation moves to it (RFC 8415 §18.3: the server may hand
            // out other addresses than those in use); one already on it stays.
            let on_reserved = mine.is_some() && sp.reserved.get(&r.index).copied() == mine;
            if usable && (c.reservation.is_none() || on_reserved) {
                return Some(self.apply(&mut sp, c, r, mode, rules, now, writes));
            }
            drop(sp);
            if usable {
                old = Some(r);
            } else {
                index.remove(&key);
            }
        }
        if let Some((_, res)) = c.reservation
            && let Some(g) = self.acquire_reserved(now, c, res, mode, rules, writes, &mut index)
        {
            match (old, mode) {
                // Granted: the binding it replaces ends.
                (Some(r), AcquireMode::Grant) => {
                    let p = &self.subnets[c.subnet].pools[r.pool as usize].cfg;
                    let addr = p.resource(r.index);
                    drop(index);
                    self.end(now, c, addr, None, writes);
                }
                // Offered: the binding in use stays the client's until its Request moves it.
                (Some(r), AcquireMode::Offer { .. }) => {
                    index.insert(key, r);
                }
                (None, _) => {}
            }
            return Some(g);
        }
        if let Some(r) = old {
            // Nothing reserved could be had: keep what it holds.
            let pool = &self.subnets[c.subnet].pools[r.pool as usize];
            let mut sp = lock(pool.subpool_of(r.index));
            return Some(self.apply(&mut sp, c, r, mode, rules, now, writes));
        }
        for h in hints {
            if let Some(r) = self.locate(c.subnet, c.kind, *h) {
                let pool = &self.subnets[c.subnet].pools[r.pool as usize];
                let mut sp = lock(pool.subpool_of(r.index));
                let bit = sp.owner(r.index);
                let allowed = rules.owned[bit]
                    || (c.kind == ResourceKind::Prefix && rules.may_take(bit, now));
                if sp.is_free(r.index) && allowed && !sp.reserved_for_other(r.index, mine) {
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
        let home = self.home(c);
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

    /// The first of `res`'s resources of the client's kind that is free for it: never used,
    /// its own binding (this IA), free and reusable, or (line reservations) held by the
    /// line's previous device. A reserved resource may be granted by
    /// whichever partner answers (both know the reservation, so both give it to the same
    /// client), but only by a server that may allocate now, and with the MCLT cap.
    #[allow(clippy::too_many_arguments)]
    fn acquire_reserved(
        &self,
        now: u64,
        c: &ClientIa,
        res: &Reservation,
        mode: AcquireMode,
        rules: &Rules,
        writes: &mut Vec<Lease>,
        index: &mut super::ClientIndex,
    ) -> Option<Granted> {
        if !(rules.owned[0] || rules.owned[1]) {
            return None;
        }
        let subnet_id = self.subnets[c.subnet].id;
        // A line's reservation (a relay's Remote-ID, Subscriber-ID or Interface-ID: identifiers
        // the client does not write) belongs to the line: a new device there takes it over
        // from the one it replaced, which learns so on its next Renew. DUID and link-layer
        // address keys come from what the client sends, so theirs wait for the holder.
        let line = matches!(
            res.key.kind,
            KeyKind::RemoteId | KeyKind::SubscriberId | KeyKind::InterfaceId
        );
        // Under failover both partners may answer the line's devices at once (a partition,
        // two CPEs on one line): a line's resource is then granted only by the server whose
        // half it is in, and taken over only when no partner can be renewing the old device
        // (standalone, or PARTNER-DOWN: no MCLT cap). A DUID's or MAC's reservation goes to
        // one client whoever answers it, so either partner may grant it.
        let partner_silent = rules.mclt_secs.is_none();
        // First what is free or already this IA's; only then a takeover, and never from this
        // same client (its other IAs hold the reservation's other resources).
        for takeover in [false, true] {
            if takeover && !(line && partner_silent) {
                break;
            }
            for (addr, _) in res.resources(c.kind) {
                let Some(r) = self.locate(c.subnet, c.kind, addr) else {
                    continue;
                };
                let pool = &self.subnets[c.subnet].pools[r.pool as usize];
                let mut sp = lock(pool.subpool_of(r.index));
                if line && !rules.may_take(sp.owner(r.index), now) {
                    continue;
                }
                // The table's reservations decide (a reload may have moved this one since the
                // configuration the engine answers with was read).
                if sp.reserved_for_other(r.index, c.reservation.map(|(id, _)| id)) {
                    continue;
                }
                let ok = match sp.slots.get(&r.index) {
                    None => true,
                    Some(s) if s.lease.state == LeaseState::Declined => false,
                    Some(s) if Self::owns(&s.lease, c, subnet_id) => true,
                    Some(s) if sp.failover_reusable(&s.lease) => true,
                    Some(s) => takeover && *s.lease.duid != *c.duid,
                };
                if ok {
                    let g = self.apply(&mut sp, c, r, mode, rules, now, writes);
                    index.insert(self.key(c), r);
                    return Some(g);
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
        let mut index = self.lock_shard(key);
        let mut sp = lock(pool.subpool_of(r.index));
        if sp.reserved_for_other(r.index, c.reservation.map(|(id, _)| id)) {
            // Reserved for another client since this one got it: it is told lifetime 0, and
            // its lease ends here so the reservation's client can have the resource.
            if let Some(s) = sp.slots.get(&r.index)
                && Self::owns(&s.lease, c, subnet_id)
                && matches!(s.lease.state, LeaseState::Active | LeaseState::Offered)
            {
                let l = self.ended(&s.lease, now);
                writes.push(l.clone());
                sp.set(r.index, l);
            }
            return Extended::NotOwned;
        }
        let may_create = create_if_free
            && rules.may_take(sp.owner(r.index), now)
            && !sp.reserved_for_other(r.index, c.reservation.map(|(id, _)| id));
        // As in acquire: an active binding on the partner's half that the partner never heard
        // of, when we may not take from that half, is not ours to extend (seed 10837211); it
        // stays active until it runs out.
        if let Some(s) = sp.slots.get(&r.index)
            && Self::owns(&s.lease, c, subnet_id)
            && Self::unknown_to_partner_off_limits(&s.lease, sp.owner(r.index), rules, now)
        {
            return Extended::NotOwned;
        }
        let ok = match sp.slots.get(&r.index) {
            Some(s) if s.lease.state == LeaseState::Declined => false,
            Some(s) if Self::owns(&s.lease, c, subnet_id) => match s.lease.state {
                // Only offered, never granted: a new allocation, as in acquire.
                LeaseState::Offered => {
                    let bit = sp.owner(r.index);
                    rules.owned[bit] || (c.kind == ResourceKind::Prefix && rules.may_take(bit, now))
                }
                st if st.is_free() => rules.may_take(sp.owner(r.index), now),
                _ => true,
            },
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

    /// Whether the client holds the binding of this address or prefix as an active lease,
    /// or the resource is in none of the subnet's pools (nobody can hold it).
    pub fn holds(&self, c: &ClientIa, addr: Ipv6Addr, prefix_len: u8) -> bool {
        let Some(r) = self.locate(c.subnet, c.kind, addr) else {
            return true;
        };
        let pool = &self.subnets[c.subnet].pools[r.pool as usize];
        if c.kind == ResourceKind::Prefix && prefix_len != pool.cfg.resource_len {
            return true;
        }
        let subnet_id = self.subnets[c.subnet].id;
        let sp = lock(pool.subpool_of(r.index));
        sp.slots.get(&r.index).is_some_and(|s| {
            Self::owns(&s.lease, c, subnet_id) && s.lease.state == LeaseState::Active
        })
    }

    /// The client's current lease for this IA, if it holds one (active or offered).
    pub fn current(&self, c: &ClientIa) -> Option<Granted> {
        let key = self.key(c);
        let subnet_id = self.subnets[c.subnet].id;
        let index = self.lock_shard(key);
        let r = index.get(&key).copied()?;
        let pool = self.indexed_pool(c.subnet, r)?;
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

    /// An active lease on the partner's half (owner `bit`) that the partner has neither
    /// acknowledged nor sent, at a time `rules` do not let us take from that half. Our own
    /// half never qualifies: bindings we made there while apart are ours to renew whatever
    /// the state (a secondary back in NORMAL, a store refusing new leases).
    ///
    /// Such a binding is neither extended nor ended: its client is told lifetime 0, but that
    /// Reply may be lost and the client may use the resource until the valid lifetime it last
    /// heard. Ending it would have freed the resource at once (seed 155006978: a recovery cut
    /// off again and again left a PARTNER-DOWN binding unacknowledged, its Renew under
    /// RESOLUTION-INTERRUPTED ended it, the Reply was lost, a new share made the prefix ours,
    /// and it went to another client while the first still held it). Left active, it is held
    /// until it expires, here and at the partner if our update of it got there, and it is
    /// renewable again once the partner acknowledges it or the half opens.
    fn unknown_to_partner_off_limits(lease: &Lease, bit: usize, rules: &Rules, now: u64) -> bool {
        lease.state == LeaseState::Active
            && rules.partner_bit == Some(bit)
            && !rules.may_take(bit, now)
            && lease.partner_ack_until == 0
            && lease.partner_lifetime_received == 0
    }

    /// `lease` released at `now` (not stored, not set).
    fn ended(&self, lease: &Lease, now: u64) -> Lease {
        let mut l = lease.clone();
        l.state = LeaseState::Released;
        l.expires_at = now;
        l.cltt = now;
        l.seq = self.next_seq();
        l.partner_ack_until = 0; // the partner's ack was for the active binding
        l
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
        self.reclaim_in(&Scope::ALL, now, writes)
    }

    /// [`Allocator::reclaim`] in the subnets of `scope` only.
    pub fn reclaim_in(&self, scope: &Scope, now: u64, writes: &mut Vec<Lease>) -> usize {
        let mut n = 0;
        for sub in self.subnets.iter().filter(|s| scope.covers(s.id)) {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let mut sp = lock(m);
                    for _ in 0..RECLAIM_PER_SUBPOOL_MAX {
                        // The earlier of the first binding and the first offer to end.
                        let (t, i, offer) = match (sp.expiry.first(), sp.offers.front()) {
                            (Some((te, _)), Some(&(to, io))) if to < te => (to, io, true),
                            (Some((te, ie)), _) => (te, ie, false),
                            (None, Some(&(to, io))) => (to, io, true),
                            (None, None) => break,
                        };
                        if t > now {
                            break;
                        }
                        // An offer's entry is done with once looked at: set() below does not
                        // touch the queue. A binding's entry set() removes.
                        if offer {
                            sp.offers.pop_front();
                        }
                        let Some(s) = sp.slots.get(&i) else {
                            if !offer {
                                sp.expiry.pop_first();
                            }
                            continue;
                        };
                        let live = if offer {
                            // Stale once the offer became a binding or was made again.
                            s.lease.state == LeaseState::Offered && s.lease.expires_at == t
                        } else {
                            timed(s.lease.state) && end_of_state(&s.lease) == t
                        };
                        if !live {
                            if !offer {
                                sp.expiry.pop_first(); // stale entry; set() keeps the live one
                            }
                            continue;
                        }
                        let mut l = s.lease.clone();
                        let stored = l.state != LeaseState::Offered;
                        l.state = LeaseState::Expired;
                        if stored {
                            // The partner's acknowledgement was of the active binding.
                            l.partner_ack_until = 0;
                        }
                        // A lapsed offer keeps what the partner knew of the resource before
                        // it (see `apply`): the partner never heard of the offer, so there is
                        // no end of it to acknowledge. Making it PENDING-FREE kept it out of
                        // use until a restart.
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

    /// Forgets the records of leases that ended (expired or released) at least `keep_secs`
    /// ago and that another client could have now (free, and under failover acknowledged by
    /// the partner): the resource is then as good as never used, and its client no longer
    /// gets it back by preference. Forgets at most [`FORGET_PER_PASS_MAX`] per call; the
    /// forgotten records go to `out` (for the store to delete). `keep_secs` 0 keeps every
    /// record.
    pub fn forget_ended(&self, now: u64, keep_secs: u64, out: &mut Vec<Lease>) -> usize {
        self.forget_ended_in(&Scope::ALL, now, keep_secs, out)
    }

    /// [`Allocator::forget_ended`] in the subnets of `scope` only.
    pub fn forget_ended_in(
        &self,
        scope: &Scope,
        now: u64,
        keep_secs: u64,
        out: &mut Vec<Lease>,
    ) -> usize {
        if keep_secs == 0 {
            return 0;
        }
        let first = out.len();
        let mut gone: Vec<(u16, u128)> = Vec::new();
        'pools: for sub in self.subnets.iter().filter(|s| scope.covers(s.id)) {
            for (pi, pool) in sub.pools.iter().enumerate() {
                for m in pool.subpools.iter() {
                    if gone.len() >= FORGET_PER_PASS_MAX {
                        break 'pools;
                    }
                    let mut sp = lock(m);
                    while gone.len() < FORGET_PER_PASS_MAX {
                        let Some(&(t, i)) = sp.ended.first() else {
                            break;
                        };
                        if t.saturating_add(keep_secs) > now {
                            break;
                        }
                        sp.ended.pop_first();
                        // One that cannot go yet (PENDING-FREE: the partner has not
                        // acknowledged its end) leaves the index; the change that makes it
                        // reusable goes through `SubPool::set`, which puts it back.
                        if let Some(l) = sp.forget(i) {
                            out.push(l);
                            gone.push((pi as u16, i));
                        }
                    }
                }
            }
        }
        // The client index may still point at a forgotten resource: drop those entries (index
        // before sub-pool, the lock order everywhere).
        for (l, &(pool, index)) in out[first..].iter().zip(&gone) {
            let key = self.key_of(l);
            let mut idx = self.lock_shard(key);
            if idx
                .get(&key)
                .is_some_and(|r| r.pool == pool && r.index == index)
            {
                let Some(sn) = self.subnets.iter().position(|s| s.id == l.subnet_id) else {
                    continue;
                };
                let p = &self.subnets[sn].pools[pool as usize];
                if !lock(p.subpool_of(index)).slots.contains_key(&index) {
                    idx.remove(&key);
                }
            }
        }
        out.len() - first
    }

    /// Puts a lease read from the store back into the table. Leases that no longer fit the
    /// configuration (subnet or pool removed) are returned as an error for the caller to log;
    /// they are left in the store untouched.
    pub fn restore(&self, lease: Lease) -> Result<(), Lease> {
        self.restore_with(lease, None)
    }

    /// [`Allocator::restore`]; with `added` (the pools a reload adds, as (subnet, pool)), the
    /// client index is left alone when it points the client into a pool outside them (a
    /// lease read back for an added pool must not move a client that got another resource
    /// meanwhile); of a client's records read back into the added pools it keeps the best, as
    /// a restart does.
    pub(super) fn restore_with(
        &self,
        lease: Lease,
        added: Option<&[(usize, usize)]>,
    ) -> Result<(), Lease> {
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
        let key = self.key_of(&lease);
        let mut index = self.lock_shard(key);
        // Records come back in address order, not in the order they were made: of a client's
        // records the index keeps the one it should be given back, not the last read.
        let bound_elsewhere = added.is_some_and(|added| {
            index
                .get(&key)
                .is_some_and(|cur| !added.contains(&(sn, cur.pool as usize)))
        });
        let keep = bound_elsewhere || self.index_keeps_entry(&index, key, sn, r, &lease);
        let mut sp = lock(pool.subpool_of(r.index));
        // The cursors stay where they are: [`Allocator::finish_restore`] moves them past the
        // used indices they stand on, never past one without a record.
        sp.set(r.index, lease);
        if !keep {
            index.insert(key, r);
        }
        Ok(())
    }

    /// Whether the client index entry `key` (in `index`, its locked shard) should stay where
    /// it points rather than move to `r` in subnet `sn`, where `candidate`, a record of the same
    /// client, is. A client can hold several records: a binding it was moved off and that runs
    /// out (a reservation, a resource refused under failover), an address it declined, an
    /// old one that expired. The index keeps the one to give back to it ([`IndexRank`]): a
    /// restart, or a partner's update about an older record, must not move a client off the
    /// binding it uses. Locks the sub-pool the entry points into: call with no sub-pool lock
    /// held.
    pub(super) fn index_keeps_entry(
        &self,
        index: &ClientIndex,
        key: u128,
        sn: usize,
        r: ResRef,
        candidate: &Lease,
    ) -> bool {
        let Some(cur) = index.get(&key).copied() else {
            return false;
        };
        if (cur.pool, cur.index) == (r.pool, r.index) {
            return false;
        }
        // A pool only a reload's newer table has: nothing to compare with here.
        let Some(pool) = self.indexed_pool(sn, cur) else {
            return false;
        };
        let sp = lock(pool.subpool_of(cur.index));
        sp.slots.get(&cur.index).is_some_and(|s| {
            let l = &s.lease;
            (l.kind, l.iaid, &l.duid) == (candidate.kind, candidate.iaid, &candidate.duid)
                && IndexRank::of(l) > IndexRank::of(candidate)
        })
    }

    /// Sorts each sub-pool's free list by the time leases became free, oldest first. Call
    /// once after restoring every lease.
    pub fn finish_restore(&self) {
        for sub in &self.subnets {
            for pool in &sub.pools {
                finish_restore_pool(pool);
            }
        }
    }
}

/// [`Allocator::finish_restore`] for one pool.
pub(super) fn finish_restore_pool(pool: &PoolState) {
    for m in pool.subpools.iter() {
        let mut sp = lock(m);
        for b in 0..2 {
            let mut v: Vec<u128> = sp.free[b].drain(..).collect();
            v.sort_by_key(|i| sp.slots.get(i).map_or(0, |s| s.lease.expires_at));
            sp.free[b] = v.into();
        }
        // The store gives leases back in key order, which need not be the lanes' order.
        sp.slots.compact();
        sp.settle_cursors();
    }
}

/// How strongly one of a client's records claims the client's index entry: a binding in use
/// before an offer, an offer before a free record (given back to its last client while it is
/// free), and a declined one last (not usable until its hold ends); within a class the later
/// transaction with the client, then the later change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IndexRank {
    class: u8,
    cltt: u64,
    seq: u64,
}

impl IndexRank {
    /// The rank of `l`.
    fn of(l: &Lease) -> Self {
        let class = match l.state {
            LeaseState::Active => 3,
            LeaseState::Offered => 2,
            LeaseState::Expired | LeaseState::Released => 1,
            LeaseState::Declined => 0,
        };
        IndexRank {
            class,
            cltt: l.cltt,
            seq: l.seq,
        }
    }
}
