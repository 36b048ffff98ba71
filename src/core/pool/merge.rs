//! RFC 8156 on the lease table: partner acknowledgements, PENDING-FREE release, and the
//! acceptance rules for a partner's binding updates (§7.5).

use super::subpool::{SubPool, end_of_state};
use super::*;

impl Allocator {
    /// Failover: the partner acknowledged a binding update for `lease` with partner lifetime
    /// `ack_until`. If the resource is still held by the same client, its acknowledged partner
    /// lifetime grows to that, and the changed lease is returned to be stored.
    pub fn record_ack(&self, lease: &Lease, ack_until: u64) -> Option<Lease> {
        let sn = self.subnets.iter().position(|s| s.id == lease.subnet_id)?;
        let r = self.locate(sn, lease.kind, lease.addr)?;
        let mut sp = lock(self.subnets[sn].pools[r.pool as usize].subpool_of(r.index));
        let cur = &sp.slots.get(&r.index)?.lease;
        let same_client = cur.duid == lease.duid && cur.iaid == lease.iaid;
        let acked = if lease.state.is_free() {
            // The partner acknowledged that the lease became free: another client may have it
            // now.
            (cur.state == lease.state && cur.duid == lease.duid && cur.partner_ack_until == 0)
                .then(|| ack_until.max(1))
        } else if lease.state == LeaseState::Declined {
            // The partner acknowledged our decline, as long as the hold it holds now: known
            // there, so a restart need not send it again
            // ([`crate::failover::node::acknowledged`]). An acknowledgement of another hold
            // (one since stretched) speaks of a record that is gone.
            (cur.state == LeaseState::Declined
                && same_client
                && cur.expires_at == lease.expires_at
                && ack_until > cur.partner_ack_until)
                .then_some(ack_until)
        } else {
            // Only an acknowledged *active* binding bounds renewals; an acknowledgement that
            // comes back after the lease was released or expired speaks of a state that is
            // gone.
            (lease.state == LeaseState::Active
                && cur.state == LeaseState::Active
                && same_client
                && ack_until > cur.partner_ack_until)
                .then_some(ack_until)
        }?;
        let mut l = cur.clone();
        l.partner_ack_until = acked;
        l.seq = self.next_seq();
        sp.set(r.index, l.clone()); // keeps the expiry index in step
        Some(l)
    }

    /// Failover, PARTNER-DOWN: PENDING-FREE leases stop waiting for the partner's
    /// acknowledgement once `cutoff` (now − MCLT; the caller also keeps PARTNER-DOWN + MCLT)
    /// is past both the time they became free and the partner lifetime the partner sent us
    /// for them (RFC 8156 §4.2.2.1: MCLT after the later of the partner lifetime, the
    /// expiration time and the entry into PARTNER-DOWN). The partner may have renewed the
    /// binding up to MCLT beyond the partner lifetime we acknowledged, and a release or
    /// expiry it never heard of does not undo that. Returns the changed leases to store.
    /// Looks at most [`RECLAIM_PER_SUBPOOL_MAX`] queued leases per sub-pool per call; one not
    /// yet due goes to the back of the queue.
    pub fn release_pending(&self, cutoff: u64, now: u64) -> Vec<Lease> {
        self.release_pending_in(&Scope::ALL, cutoff, now, SKEW_EQUAL_SECS)
    }

    /// [`Allocator::release_pending`] in the subnets of `scope` only, for a partner whose clock
    /// may be `skew_secs` off ours.
    pub fn release_pending_in(
        &self,
        scope: &Scope,
        cutoff: u64,
        now: u64,
        skew_secs: u64,
    ) -> Vec<Lease> {
        let mut out = Vec::new();
        for sub in self.subnets.iter().filter(|s| scope.covers(s.id)) {
            for pool in &sub.pools {
                for m in pool.subpools.iter() {
                    let mut sp = lock(m);
                    let n = sp.pending.len().min(RECLAIM_PER_SUBPOOL_MAX);
                    for _ in 0..n {
                        let Some(i) = sp.pending.pop_front() else {
                            break;
                        };
                        let Some(s) = sp.slots.get(&i) else {
                            continue;
                        };
                        let still_pending =
                            s.lease.state.is_free() && s.lease.partner_ack_until == 0;
                        if !still_pending {
                            if let Some(s) = sp.slots.get_mut(&i) {
                                s.in_pending = false;
                            }
                            continue;
                        }
                        // The partner lifetime is on the partner's clock: allow for the skew.
                        let due = s
                            .lease
                            .expires_at
                            .max(s.lease.partner_lifetime_received.saturating_add(skew_secs));
                        if due > cutoff {
                            sp.pending.push_back(i);
                            continue;
                        }
                        let mut l = s.lease.clone();
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

    /// Our record at `index`, to send back to a partner whose update we refuse. If it is the
    /// partner's own version ([`Lease::is_partner_version`]) the partner has since replaced
    /// it, so it is ours to send now: it takes a new sequence, which also keeps a restart from
    /// counting it as known to the partner before the partner acknowledges it.
    fn send_back(&self, sp: &mut SubPool, index: u128) -> Option<Lease> {
        let mut ours = sp.slots.get(&index)?.lease.clone();
        if ours.is_partner_version() {
            ours.partner_seq = 0;
            ours.seq = self.next_seq();
            sp.set(index, ours.clone());
        }
        Some(ours)
    }

    /// Failover: takes in a binding the partner sent (BNDUPD), by RFC 8156 §7.5's rules with
    /// times within `skew_secs` (the relationship's `failover.skew_max_secs`: the partner's
    /// clock may be that far off ours) counted as equal and doubt resolved towards keeping an
    /// address held:
    /// - nothing here, or free here: the partner's view is taken;
    /// - active here for the same client: an active update is merged (the longest expiry
    ///   stays, since either side may have granted longer); an expiry wins once our own copy's
    ///   time is up too, a release only if not older than our last transaction with it;
    /// - active here for another client: a free update is refused (it speaks of an older
    ///   binding); an active one wins if clearly later, the primary's view stands when the
    ///   times are within the skew (`receiver_is_secondary` accepts it), and a clearly older
    ///   one is refused;
    /// - active here for the same client: its decline is taken unless clearly before our last
    ///   transaction, held at least until our binding would have ended;
    /// - declined here: the same client's active update is refused unless clearly later than
    ///   the decline (our hold then stretches over it), a free update while the hold runs
    ///   unless clearly later or ending no earlier than the hold, and a decline whose hold ends
    ///   before ours; another client's active update is taken, held at least until our hold
    ///   ends.
    ///
    /// Returns the lease to store before acknowledging, or `Err` with ours (send it back),
    /// `Err(None)` if the binding fits none of our pools (nothing of ours to send).
    pub fn apply_partner_update(
        &self,
        incoming: &Lease,
        receiver_is_secondary: bool,
        ours_active_in_flight: bool,
        now: u64,
        skew_secs: u64,
    ) -> Result<Lease, Option<Lease>> {
        let Some(sn) = self.subnets.iter().position(|s| s.id == incoming.subnet_id) else {
            return Err(None);
        };
        let Some(r) = self.locate(sn, incoming.kind, incoming.addr) else {
            return Err(None);
        };
        let key = self.key_of(incoming);
        let mut index = self.lock_shard(key);
        let mut sp = lock(self.subnets[sn].pools[r.pool as usize].subpool_of(r.index));
        let later = |a: u64, b: u64| a > b + skew_secs;
        let mut l = incoming.clone();
        // Whether we held the same client's binding active: our own update saying so may be
        // on its way to the partner, crossing this one.
        let mut ends_our_active = false;
        // Whether the update is refused: our record goes back to the partner.
        let mut refuse = false;
        // Our declined record's hold, stretched before it goes back (see below).
        let mut hold_until = None;
        let local_free = sp
            .slots
            .get(&r.index)
            .is_some_and(|s| s.lease.state.is_free());
        if let Some(s) = sp.slots.get(&r.index) {
            let local = &s.lease;
            let same_client = local.duid == incoming.duid && local.iaid == incoming.iaid;
            // What the relays said: from the later transaction with the client (ties by the
            // bytes, so both partners pick the same), and ours when the update has none (a
            // partner of an older version, or a binding it made without relay data). It
            // decides nothing below; it only has to end up the same on both sides.
            if same_client
                && (l.relay.is_empty()
                    || (local.cltt, &local.relay) > (incoming.cltt, &incoming.relay))
            {
                l.relay = local.relay.clone();
            }
            // The same client released it here clearly after the transaction the incoming
            // active update speaks of: the update is stale (e.g. resent after the partner's
            // restart while our release was on its way to it). Within the skew, the active
            // binding wins: doubt keeps the resource held. Not for an expiry: an active binding
            // may outlive the client's lifetime by its partner lifetime, and refusing it
            // both ways made the partners bounce the binding forever (seed 14294). Another
            // client's claim is taken whatever its time: refusing an active claim could hand
            // its resource out twice.
            if same_client
                && local.state == LeaseState::Released
                && incoming.state == LeaseState::Active
                && later(local.cltt, incoming.cltt)
            {
                refuse = true;
            } else if local.state == LeaseState::Declined {
                // Declined here: held out of use until its hold ends (RFC 8415 §18.3.8).
                refuse = match (same_client, incoming.state) {
                    // The same client's binding, not clearly after the decline: the decline
                    // stands, its hold stretched to cover that binding, and goes back to the
                    // partner, which takes it (below, ACTIVE here). Taking the binding instead
                    // let a renewal at the partner crossing the decline swap the two records,
                    // and the side left active freed the address when the binding ended,
                    // within the hold.
                    (true, LeaseState::Active) if !later(incoming.cltt, local.cltt) => {
                        hold_until = Some(end_of_state(local).max(end_of_state(incoming)));
                        true
                    }
                    // A free state no later than the decline, ending before our hold while it
                    // runs: stale, and taking it would free a resource a client found in use on
                    // the link (seed 190014676: a client's release at the partner, sent only
                    // after the link came back, undid the client's later decline here, and the
                    // address went to another client while the partner, which had heard of the
                    // binding the client then declined, renewed it for the client). Once the
                    // hold is over here too, an older end frees it as ours would; the end of
                    // the hold at the partner (an expiry no earlier than ours) is taken at
                    // once, so clocks a little apart do not bounce it.
                    (_, st) if st.is_free() => {
                        !later(incoming.cltt, local.cltt)
                            && incoming.expires_at < end_of_state(local)
                            && now <= end_of_state(local) + skew_secs
                    }
                    // Declined on both sides: the longer hold stands, and goes back to the
                    // partner. Ours may cover a binding we had granted the client before its
                    // decline reached us (below); a resent decline must not cut it short.
                    (_, LeaseState::Declined) => incoming.expires_at < local.expires_at,
                    // Another client's binding: a claim is taken whatever its time, as over a
                    // free record, but held here at least until our hold ends. A stale one (a
                    // restarted partner resending a binding it had made before we gave the
                    // address out in PARTNER-DOWN and the new client declined it) would
                    // otherwise run out long before the hold, and the address went to a third
                    // client while whatever the decline found on the link may still be there.
                    // The stretched record is not the partner's version: the partner learns of
                    // it when its own copy ends (its expiry is refused here and ours goes
                    // back) or after our restart, not at once.
                    (false, LeaseState::Active) => {
                        l.expires_at = l.expires_at.max(end_of_state(local));
                        false
                    }
                    // The same client's binding clearly after the decline (it got it again).
                    _ => false,
                };
            } else if local.state == LeaseState::Active {
                refuse = match (same_client, incoming.state) {
                    (true, LeaseState::Active) => {
                        l.expires_at = l.expires_at.max(local.expires_at);
                        l.cltt = l.cltt.max(local.cltt);
                        l.partner_ack_until = local.partner_ack_until;
                        l.partner_lifetime_received = l
                            .partner_lifetime_received
                            .max(local.partner_lifetime_received);
                        l.valid_secs = l.valid_secs.max(local.valid_secs);
                        false
                    }
                    // The client declined it at the partner (the address is in use on the
                    // link, RFC 8415 §18.3.8), unless clearly before our last transaction with
                    // it: held out of use, at least as long as the binding we knew would have
                    // held it. Refused as a release, our active binding went back and undid
                    // the decline on both sides.
                    (true, LeaseState::Declined) if !later(local.cltt, incoming.cltt) => {
                        l.expires_at = l.expires_at.max(end_of_state(local));
                        false
                    }
                    // Expired: once our own copy's time is up too (RFC 8156 time(1)).
                    (true, LeaseState::Expired) if now <= end_of_state(local) + skew_secs => true,
                    (true, LeaseState::Expired) => {
                        ends_our_active = true;
                        false
                    }
                    // Released (or other): only if not before our last transaction with it. The
                    // same client's release right after a renewal is the normal case (both
                    // times from the partner's clock, in order); one older than our own
                    // renewal speaks of a binding the client has since renewed here.
                    // Only a release clearly later than our last transaction: within the skew
                    // the two times cannot be ordered (seed 7017165: a client released at one
                    // server and was granted at the other a second later, on a clock 2 s
                    // behind; the release won and the granted prefix went to another client).
                    // Keeping it costs a held lease until it expires.
                    (true, _) if !later(incoming.cltt, local.cltt) => true,
                    (true, _) => {
                        ends_our_active = true;
                        false
                    }
                    // Another client: the clearly later binding wins; within the skew the
                    // primary's view stands. A clearly older claim is stale whoever sends it
                    // (seed 165632: a restarted primary resent a binding its partner had since
                    // reassigned in PARTNER-DOWN).
                    (false, LeaseState::Active) if later(incoming.cltt, local.cltt) => false,
                    (false, LeaseState::Active)
                        if receiver_is_secondary && !later(local.cltt, incoming.cltt) =>
                    {
                        false
                    }
                    (false, _) => true,
                };
            }
        }
        if refuse {
            if let Some(t) = hold_until
                && let Some(s) = sp.slots.get(&r.index)
                && s.lease.expires_at < t
            {
                let mut ours = s.lease.clone();
                ours.expires_at = t;
                // An acknowledgement of the shorter hold does not cover this one.
                ours.partner_ack_until = 0;
                ours.seq = self.next_seq();
                ours.partner_seq = 0;
                sp.set(r.index, ours);
            }
            return Err(self.send_back(&mut sp, r.index));
        }
        // Also when our copy is no longer active (seed 12705241: our client released the
        // binding while our active update of it was in flight; the partner's stale expiry,
        // sent before our update reached it, would otherwise count as known free on both
        // sides, and the partner, having taken our active update since, renewed it for the
        // client while we gave it to another).
        if (ends_our_active || local_free) && ours_active_in_flight && l.state.is_free() {
            // Not known free on both sides yet: our own update saying the binding is active is
            // on its way and the partner will take it after this one (seed 5214726: a
            // restarted server resent an active binding just as its partner's expiry of it
            // arrived; each took the other's, and both then handed the prefix out).
            // PENDING-FREE until the partner acknowledges our own copy of the end, which the
            // caller sends. Only then: echoing every end made a same-second re-grant look
            // released (seed 6059273).
            l.partner_ack_until = 0;
        }
        l.seq = self.next_seq();
        // The partner's own version, unless merged with anything of ours (a longer expiry, a
        // later transaction's time or relay data, a longer lifetime) or left PENDING-FREE for
        // our copy of the end: what the partner knows, so a restart need not send it back.
        let as_sent = l.expires_at == incoming.expires_at
            && l.cltt == incoming.cltt
            && l.valid_secs == incoming.valid_secs
            && l.relay == incoming.relay
            && !(l.state.is_free() && l.partner_ack_until == 0);
        l.partner_seq = if as_sent { l.seq } else { 0 };
        sp.set(r.index, l.clone());
        drop(sp);
        // An update about an older record of the client (the expiry of a binding it was moved
        // off) leaves it on the one it uses.
        if !self.index_keeps_entry(&index, key, sn, r, &l) {
            index.insert(key, r);
        }
        Ok(l)
    }
}
