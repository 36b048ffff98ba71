//! The partner session, sans-IO: lazy binding updates (BNDUPD/BNDREPLY) with a bounded window
//! of unacknowledged updates, and the update-request streams (UPDREQ, UPDREQALL, UPDDONE).
//!
//! Workers never wait for the partner: every committed lease change is handed to
//! [`Peer::enqueue`], which coalesces changes to one lease, and [`Peer::poll_send`] turns the
//! backlog into BNDUPDs while the link is up, at most `max_unacked` outstanding
//! (RFC 8156 OPTION_F_MAX_UNACKED_BNDUPD). When the link drops, what was sent but not
//! acknowledged goes back to the front of the backlog, so the partner eventually hears every
//! change whatever happens to the connection.

use super::state::ServerState;
use crate::lease::{KEY_LEN, Lease, LeaseState};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Window of unacknowledged BNDUPDs until the partner's CONNECT / CONNECTREPLY announces its
/// own max-unacked ([`Peer::set_max_unacked`]); nothing is sent before that anyway.
pub const SEND_WINDOW_BEFORE_CONNECT: usize = 128;

/// A failover message in typed form (the wire codec maps these to RFC 8156 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// Our state (RFC 8156 STATE).
    State {
        /// The state announced.
        state: ServerState,
        /// When it began, unix secs.
        since: u64,
        /// STARTUP flag.
        starting: bool,
        /// COMMUNICATED flag.
        communicated: bool,
    },
    /// One binding (BNDUPD).
    BndUpd {
        /// Transaction id, echoed in the reply.
        xid: u32,
        /// The binding.
        lease: Lease,
        /// Until when the partner may consider it in use (OPTION_F_PARTNER_LIFETIME).
        partner_lifetime: u64,
    },
    /// The answer to a BNDUPD (BNDREPLY).
    BndReply {
        /// The BNDUPD's transaction id.
        xid: u32,
        /// Stored (true) or refused as conflicting (false).
        accepted: bool,
        /// The partner lifetime received, echoed exactly (OPTION_F_PARTNER_LIFETIME_SENT).
        partner_lifetime_sent: u64,
    },
    /// Send me what I have not acknowledged.
    UpdReq,
    /// Send me everything.
    UpdReqAll,
    /// Everything asked for was sent and acknowledged.
    UpdDone,
    /// Secondary asks the primary to rebalance prefixes.
    PoolReq,
    /// Keepalive.
    Contact,
}

/// The lazy-update side of one relationship.
#[derive(Debug)]
pub struct Peer {
    /// Lease changes not yet sent, coalesced per resource, oldest first.
    pending_order: VecDeque<[u8; KEY_LEN]>,
    pending: HashMap<[u8; KEY_LEN], Lease>,
    /// Sent and not yet acknowledged, by transaction id.
    unacked: BTreeMap<u32, (Lease, u64)>,
    /// Per binding: our free claims older than this sequence are void (the partner's active
    /// copy, stored since, supersedes them); see [`Peer::drop_free_claims`].
    void_below: HashMap<[u8; KEY_LEN], u64>,
    max_unacked: usize,
    next_xid: u32,
    /// Answering an UPDREQ/UPDREQALL: send UPDDONE once the backlog is empty and acknowledged.
    answering: bool,
    /// Desired valid lifetime; partner lifetimes run this far past a lease's expiry, so the next
    /// renewal can have the full lifetime (RFC 8156 §4.4's example scheme).
    desired_valid_secs: u64,
}

impl Peer {
    /// A session with `max_unacked` outstanding BNDUPDs at most.
    pub fn new(max_unacked: usize, desired_valid_secs: u64) -> Peer {
        Peer {
            pending_order: VecDeque::new(),
            pending: HashMap::new(),
            unacked: BTreeMap::new(),
            void_below: HashMap::new(),
            max_unacked: max_unacked.max(1),
            next_xid: 1,
            answering: false,
            desired_valid_secs,
        }
    }

    /// Queues a committed lease change for the partner (offers are never sent).
    pub fn enqueue(&mut self, lease: &Lease) {
        if lease.state == LeaseState::Offered {
            return;
        }
        let k = lease.key();
        // A free claim made before we stored the partner's active copy reaches us late from
        // the group commit: it is void like the ones already queued.
        if let Some(&void) = self.void_below.get(&k) {
            if lease.seq < void {
                if lease.state.is_free() {
                    return;
                }
            } else {
                self.void_below.remove(&k);
            }
        }
        match self.pending.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                // Changes reach us from several threads; the newest (by sequence) wins.
                if e.get().seq <= lease.seq {
                    e.insert(lease.clone());
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(lease.clone());
                self.pending_order.push_back(k);
            }
        }
    }

    /// Whether an update of ours saying the binding with this key is active is queued or sent
    /// and not yet answered: one the partner may still take after its own end of it.
    pub fn active_in_flight(&self, key: &[u8; KEY_LEN]) -> bool {
        self.pending
            .get(key)
            .is_some_and(|l| l.state == LeaseState::Active)
            || self
                .unacked
                .values()
                .any(|(l, _)| l.state == LeaseState::Active && l.key() == *key)
    }

    /// We took the partner's update saying the binding with this key is active (our copy
    /// now has sequence `seq`): our own older updates saying it is free are void. Never
    /// (re)send them: the partner would take the resource for free while we hold it active
    /// (seed 8942070: a restarted server's expiry, sent just as the partner's renewal
    /// crossed it, was resent after a reconnect; the partner, whose client had released it
    /// meanwhile, took it as known free on both sides and gave it to another client while
    /// the first server renewed it for its client). A reply to a dropped update acknowledges
    /// nothing.
    pub fn drop_free_claims(&mut self, key: &[u8; KEY_LEN], seq: u64) {
        let void = self.void_below.entry(*key).or_insert(0);
        *void = (*void).max(seq);
        if self
            .pending
            .get(key)
            .is_some_and(|l| l.state.is_free() && l.seq < seq)
        {
            self.pending.remove(key);
        }
        self.unacked
            .retain(|_, (l, _)| !(l.state.is_free() && l.seq < seq && l.key() == *key));
    }

    /// Sets the window: how many BNDUPDs may be outstanding (the partner's max-unacked).
    pub fn set_max_unacked(&mut self, max_unacked: usize) {
        self.max_unacked = max_unacked.max(1);
    }

    /// Changes waiting to be sent or acknowledged.
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.unacked.len()
    }

    /// Sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// The link dropped: what was sent but not acknowledged is sent again later (unless a newer
    /// change to the same lease is already waiting).
    pub fn link_down(&mut self) {
        let back: Vec<(Lease, u64)> = std::mem::take(&mut self.unacked).into_values().collect();
        for (l, _) in back.into_iter().rev() {
            let k = l.key();
            if let std::collections::hash_map::Entry::Vacant(e) = self.pending.entry(k) {
                e.insert(l);
                self.pending_order.push_front(k);
            }
        }
        self.answering = false;
    }

    /// The partner asked for what it has not acknowledged (UPDREQ): everything in the backlog
    /// is exactly that; UPDDONE follows once it is all acknowledged.
    pub fn on_updreq(&mut self) {
        self.answering = true;
    }

    /// The partner asked for everything (UPDREQALL).
    pub fn on_updreqall<'a>(&mut self, all: impl IntoIterator<Item = &'a Lease>) {
        for l in all {
            let k = l.key();
            if let std::collections::hash_map::Entry::Vacant(e) = self.pending.entry(k) {
                e.insert(l.clone());
                self.pending_order.push_back(k);
            }
        }
        self.answering = true;
    }

    /// A BNDREPLY arrived: returns the lease and the partner lifetime it acknowledged, if it
    /// was accepted and matches an outstanding update.
    pub fn on_reply(&mut self, xid: u32, accepted: bool, sent: u64) -> Option<(Lease, u64)> {
        let (lease, lifetime) = self.unacked.remove(&xid)?;
        // An echo that differs from what we sent acknowledges nothing we can rely on.
        (accepted && sent == lifetime).then_some((lease, lifetime))
    }

    /// Messages to send now: BNDUPDs up to the window, then UPDDONE when an update request has
    /// been fully answered.
    pub fn poll_send(&mut self, now: u64, out: &mut Vec<PeerMsg>) {
        while self.unacked.len() < self.max_unacked {
            let Some(k) = self.pending_order.pop_front() else {
                break;
            };
            let Some(lease) = self.pending.remove(&k) else {
                continue;
            };
            let xid = self.next_xid;
            self.next_xid = (self.next_xid % 0x00ff_ffff) + 1;
            let partner_lifetime = match lease.state {
                LeaseState::Active => lease.expires_at + self.desired_valid_secs,
                _ => lease.expires_at.max(now),
            };
            self.unacked.insert(xid, (lease.clone(), partner_lifetime));
            out.push(PeerMsg::BndUpd {
                xid,
                lease,
                partner_lifetime,
            });
        }
        if self.answering && self.pending.is_empty() && self.unacked.is_empty() {
            self.answering = false;
            out.push(PeerMsg::UpdDone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceKind;

    fn lease(last: u8, state: LeaseState, seq: u64) -> Lease {
        Lease {
            kind: ResourceKind::Address,
            addr: std::net::Ipv6Addr::from(0x2001_0db8u128 << 96 | last as u128),
            prefix_len: 128,
            subnet_id: 1,
            state,
            duid: vec![1, 2, 3].into(),
            iaid: 1,
            preferred_secs: 50,
            valid_secs: 100,
            cltt: 0,
            expires_at: 100,
            seq,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
        }
    }

    #[test]
    fn window_coalescing_and_resend_after_link_loss() {
        let mut p = Peer::new(2, 1000);
        for i in 0..5 {
            p.enqueue(&lease(i, LeaseState::Active, 1));
        }
        p.enqueue(&lease(0, LeaseState::Released, 2)); // coalesces with the first
        assert_eq!(p.backlog(), 5);
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 2, "window of 2");
        let PeerMsg::BndUpd {
            xid,
            lease,
            partner_lifetime,
        } = &out[0]
        else {
            panic!()
        };
        assert_eq!(
            lease.state,
            LeaseState::Released,
            "the newest change to lease 0 is sent"
        );
        assert_eq!(*partner_lifetime, 100);
        let (l, t) = p.on_reply(*xid, true, *partner_lifetime).unwrap();
        assert_eq!((l.seq, t), (2, 100));
        let PeerMsg::BndUpd {
            xid: x2,
            lease: l2,
            partner_lifetime: t2,
        } = out[1].clone()
        else {
            panic!()
        };
        assert_eq!(t2, 1100, "active: expiry + desired lifetime");
        assert!(
            p.on_reply(x2, true, t2 + 1).is_none(),
            "a wrong echo acknowledges nothing"
        );
        let _ = l2;
        out.clear();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 2);
        p.link_down();
        assert_eq!(p.backlog(), 3, "unacknowledged ones are queued again");
        out.clear();
        p.poll_send(0, &mut out);
        let first: Vec<u8> = out
            .iter()
            .map(|m| match m {
                PeerMsg::BndUpd { lease, .. } => lease.addr.octets()[15],
                _ => 255,
            })
            .collect();
        assert_eq!(
            first,
            vec![2, 3],
            "resent in their original order, before newer ones"
        );
    }

    #[test]
    fn a_free_claim_superseded_by_the_partners_active_binding_is_never_resent() {
        let mut p = Peer::new(8, 1000);
        p.enqueue(&lease(1, LeaseState::Expired, 5));
        p.enqueue(&lease(2, LeaseState::Expired, 6));
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(p.unacked(), 2);
        // The partner's active binding of lease 1 is taken here (our copy now seq 7).
        let k = lease(1, LeaseState::Active, 7).key();
        p.drop_free_claims(&k, 7);
        assert_eq!(p.unacked(), 1, "the in-flight expiry of lease 1 is void");
        p.link_down();
        out.clear();
        p.poll_send(0, &mut out);
        let resent: Vec<u8> = out
            .iter()
            .filter_map(|m| match m {
                PeerMsg::BndUpd { lease, .. } => Some(lease.addr.octets()[15]),
                _ => None,
            })
            .collect();
        assert_eq!(resent, vec![2], "only lease 2's expiry is sent again");
        // A queued (unsent) claim goes too; a newer one, or an active one, stays.
        p.enqueue(&lease(3, LeaseState::Released, 9));
        p.drop_free_claims(&lease(3, LeaseState::Active, 8).key(), 8);
        assert_eq!(p.backlog(), 2, "a claim newer than our copy stays");
        p.drop_free_claims(&lease(3, LeaseState::Active, 10).key(), 10);
        assert_eq!(p.backlog(), 1);
        p.enqueue(&lease(4, LeaseState::Active, 11));
        p.drop_free_claims(&lease(4, LeaseState::Active, 12).key(), 12);
        assert_eq!(
            p.backlog(),
            2,
            "an active update of ours is not a free claim"
        );
    }

    #[test]
    fn updreq_ends_with_upddone_only_after_every_ack() {
        let mut p = Peer::new(8, 1000);
        p.on_updreqall(
            [
                lease(1, LeaseState::Active, 1),
                lease(2, LeaseState::Expired, 1),
            ]
            .iter(),
        );
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 2);
        assert!(!out.contains(&PeerMsg::UpdDone));
        for m in out.clone() {
            if let PeerMsg::BndUpd {
                xid,
                partner_lifetime,
                ..
            } = m
            {
                p.on_reply(xid, true, partner_lifetime);
            }
        }
        out.clear();
        p.poll_send(0, &mut out);
        assert_eq!(out, vec![PeerMsg::UpdDone]);
        out.clear();
        p.on_updreq();
        p.poll_send(0, &mut out);
        assert_eq!(
            out,
            vec![PeerMsg::UpdDone],
            "nothing outstanding: done at once"
        );
    }
}
