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
use crate::pool::PdPoolId;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
        /// In PARTNER-DOWN: when the sender entered it, unix secs
        /// (OPTION_F_PARTNER_DOWN_TIME); 0 otherwise, and the option is left out.
        partner_down_since: u64,
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
    UpdReq {
        /// Transaction id (the sender's session's), echoed by the UPDDONE that answers it.
        xid: u32,
    },
    /// Send me everything.
    UpdReqAll {
        /// Transaction id, echoed by its UPDDONE.
        xid: u32,
    },
    /// Everything the oldest unanswered UPDREQ/UPDREQALL asked for was sent and
    /// acknowledged (one UPDDONE per request, in the order of the requests).
    UpdDone {
        /// The request's transaction id, echoed.
        xid: u32,
    },
    /// Secondary asks the primary to rebalance prefixes.
    PoolReq,
    /// The primary sets the secondary's share of a prefix pool: from now on `share` of its
    /// prefixes are the secondary's (see `failover::share`). On the wire a BNDUPD carrying
    /// Tandem's share option instead of a binding.
    PdShare {
        /// Transaction id, echoed in the answer.
        xid: u32,
        /// The pool.
        pool: PdPoolId,
        /// The secondary's share, in prefixes.
        share: u64,
    },
    /// The secondary's answer to a [`PeerMsg::PdShare`]: a BNDREPLY carrying the share option.
    PdShareAck {
        /// The PdShare's transaction id.
        xid: u32,
        /// The pool.
        pool: PdPoolId,
        /// The share now in force there (the one asked for, if accepted).
        share: u64,
        /// Applied and stored (false: no such pool here).
        accepted: bool,
    },
    /// Keepalive.
    Contact,
}

/// Highest transaction id of the lazy-update session (BNDUPD, share moves, update requests);
/// `failover::link` numbers its own messages above it.
pub const SESSION_XID_MAX: u32 = 0x007F_FFFF;

/// The lazy-update side of one relationship.
///
/// Every change in the backlog carries a *stamp*: the position, in one counter, at which it
/// entered the backlog (a newer change to the same lease keeps the older stamp). An update
/// request is answered from the backlog as it was when the request came: its UPDDONE goes once
/// every change stamped before the request has been sent and acknowledged, whatever was
/// enqueued since (RFC 8156 §6: the rest follows as ordinary updates). So a server under
/// sustained load still answers (issue 10 item 2).
#[derive(Debug)]
pub struct Peer {
    /// Lease changes not yet sent, coalesced per resource, oldest first.
    pending_order: VecDeque<[u8; KEY_LEN]>,
    /// The change waiting for each resource, with its stamp.
    pending: HashMap<[u8; KEY_LEN], (Lease, u64)>,
    /// Sent and not yet acknowledged, by transaction id.
    unacked: BTreeMap<u32, Unacked>,
    /// The stamps of every change pending or unacknowledged.
    outstanding: BTreeSet<u64>,
    /// The stamp the next new backlog entry gets.
    next_stamp: u64,
    /// Per binding: our free claims older than this sequence are void (the partner's active
    /// copy, stored since, supersedes them); see [`Peer::drop_free_claims`].
    void_below: HashMap<[u8; KEY_LEN], u64>,
    max_unacked: usize,
    next_xid: u32,
    /// The update requests being answered, oldest first: each one's UPDDONE goes once no
    /// change stamped below its mark is outstanding.
    answering: VecDeque<(u64, u32)>,
    /// Desired valid lifetime; partner lifetimes run this far past a lease's expiry, so the next
    /// renewal can have the full lifetime (RFC 8156 §4.4's example scheme).
    desired_valid_secs: u64,
    /// Changes dropped because no BNDUPD can carry them (a DUID shorter than 3 bytes, put in by
    /// hand or imported): sending them would fail every time and, unacknowledged, they would
    /// hold up every UPDDONE.
    unsendable: u64,
}

/// A BNDUPD sent and not yet answered.
#[derive(Debug)]
struct Unacked {
    lease: Lease,
    partner_lifetime: u64,
    stamp: u64,
}

impl Peer {
    /// A session with `max_unacked` outstanding BNDUPDs at most.
    pub fn new(max_unacked: usize, desired_valid_secs: u64) -> Peer {
        Peer {
            pending_order: VecDeque::new(),
            pending: HashMap::new(),
            unacked: BTreeMap::new(),
            outstanding: BTreeSet::new(),
            next_stamp: 0,
            void_below: HashMap::new(),
            max_unacked: max_unacked.max(1),
            next_xid: 1,
            answering: VecDeque::new(),
            desired_valid_secs,
            unsendable: 0,
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
        self.push(lease);
    }

    /// Puts a change in the backlog: coalesced with the one waiting for the same resource
    /// (the newest by sequence wins, the older stamp stays), or behind everything else.
    fn push(&mut self, lease: &Lease) {
        match self.pending.entry(lease.key()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                // Changes reach us from several threads; the newest (by sequence) wins.
                if e.get().0.seq <= lease.seq {
                    e.get_mut().0 = lease.clone();
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let stamp = self.next_stamp;
                self.next_stamp += 1;
                self.outstanding.insert(stamp);
                e.insert((lease.clone(), stamp));
                self.pending_order.push_back(lease.key());
            }
        }
    }

    /// Whether an update of ours saying the binding with this key is active is queued or sent
    /// and not yet answered: one the partner may still take after its own end of it.
    pub fn active_in_flight(&self, key: &[u8; KEY_LEN]) -> bool {
        self.pending
            .get(key)
            .is_some_and(|(l, _)| l.state == LeaseState::Active)
            || self
                .unacked
                .values()
                .any(|u| u.lease.state == LeaseState::Active && u.lease.key() == *key)
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
            .is_some_and(|(l, _)| l.state.is_free() && l.seq < seq)
            && let Some((_, stamp)) = self.pending.remove(key)
        {
            self.outstanding.remove(&stamp);
        }
        let outstanding = &mut self.outstanding;
        self.unacked.retain(|_, u| {
            let void = u.lease.state.is_free() && u.lease.seq < seq && u.lease.key() == *key;
            if void {
                outstanding.remove(&u.stamp);
            }
            !void
        });
    }

    /// A transaction id for a message that is not a lease update (a share move, an update
    /// request), from the same space as the BNDUPDs', so no reply can be taken for another's.
    /// The session's ids are 1 to [`SESSION_XID_MAX`]; the link's own messages (CONNECT,
    /// STATE, CONTACT, DISCONNECT) take theirs above it, so no two messages outstanding on a
    /// connection share an id (RFC 8156 §5.4).
    pub fn take_xid(&mut self) -> u32 {
        let xid = self.next_xid;
        self.next_xid = (self.next_xid % SESSION_XID_MAX) + 1;
        xid
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

    /// Changes dropped since start because no BNDUPD can carry them (see the field).
    pub fn unsendable(&self) -> u64 {
        self.unsendable
    }

    /// The link dropped: what was sent but not acknowledged is sent again later (unless a newer
    /// change to the same lease is already waiting).
    pub fn link_down(&mut self) {
        let back: Vec<Unacked> = std::mem::take(&mut self.unacked).into_values().collect();
        for u in back.into_iter().rev() {
            let k = u.lease.key();
            match self.pending.entry(k) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((u.lease, u.stamp));
                    self.pending_order.push_front(k);
                }
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.outstanding.remove(&u.stamp);
                }
            }
        }
        // Requests die with the connection; the partner asks again on the next one.
        self.answering.clear();
    }

    /// The partner asked for what it has not acknowledged (UPDREQ): everything in the backlog
    /// now is exactly that; its UPDDONE follows once all of that is acknowledged.
    pub fn on_updreq(&mut self, xid: u32) {
        self.answering.push_back((self.next_stamp, xid));
    }

    /// The partner asked for everything (UPDREQALL).
    pub fn on_updreqall<'a>(&mut self, xid: u32, all: impl IntoIterator<Item = &'a Lease>) {
        for l in all {
            if !self.pending.contains_key(&l.key()) {
                self.push(l);
            }
        }
        self.answering.push_back((self.next_stamp, xid));
    }

    /// Update requests received and not yet answered with UPDDONE.
    pub fn requests_answering(&self) -> usize {
        self.answering.len()
    }

    /// A BNDREPLY arrived: returns the lease and the partner lifetime it acknowledged, if it
    /// was accepted and matches an outstanding update.
    pub fn on_reply(&mut self, xid: u32, accepted: bool, sent: u64) -> Option<(Lease, u64)> {
        let u = self.unacked.remove(&xid)?;
        self.outstanding.remove(&u.stamp);
        // An echo that differs from what we sent acknowledges nothing we can rely on.
        (accepted && sent == u.partner_lifetime).then_some((u.lease, u.partner_lifetime))
    }

    /// Messages to send now: BNDUPDs up to the window, then one UPDDONE for each update
    /// request whose changes have all been acknowledged.
    pub fn poll_send(&mut self, now: u64, out: &mut Vec<PeerMsg>) {
        while self.unacked.len() < self.max_unacked {
            let Some(k) = self.pending_order.pop_front() else {
                break;
            };
            let Some((lease, stamp)) = self.pending.remove(&k) else {
                continue;
            };
            if super::codec::check_sendable(&lease).is_err() {
                self.outstanding.remove(&stamp);
                self.unsendable += 1;
                continue;
            }
            let xid = self.take_xid();
            let partner_lifetime = match lease.state {
                LeaseState::Active => lease.expires_at + self.desired_valid_secs,
                _ => lease.expires_at.max(now),
            };
            self.unacked.insert(
                xid,
                Unacked {
                    lease: lease.clone(),
                    partner_lifetime,
                    stamp,
                },
            );
            out.push(PeerMsg::BndUpd {
                xid,
                lease,
                partner_lifetime,
            });
        }
        // The oldest change still outstanding; every request marked at or below it is done.
        let oldest = self.outstanding.first().copied().unwrap_or(u64::MAX);
        while self
            .answering
            .front()
            .is_some_and(|&(mark, _)| mark <= oldest)
        {
            if let Some((_, xid)) = self.answering.pop_front() {
                out.push(PeerMsg::UpdDone { xid });
            }
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
            relay: Default::default(),
            partner_seq: 0,
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
            7,
            [
                lease(1, LeaseState::Active, 1),
                lease(2, LeaseState::Expired, 1),
            ]
            .iter(),
        );
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 2);
        assert!(!out.iter().any(is_done));
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
        assert_eq!(
            out,
            vec![PeerMsg::UpdDone { xid: 7 }],
            "echoing the request"
        );
        out.clear();
        p.on_updreq(8);
        p.poll_send(0, &mut out);
        assert_eq!(
            out,
            vec![PeerMsg::UpdDone { xid: 8 }],
            "nothing outstanding: done at once"
        );
    }

    fn is_done(m: &PeerMsg) -> bool {
        matches!(m, PeerMsg::UpdDone { .. })
    }

    fn ack_all(p: &mut Peer, out: &[PeerMsg]) {
        for m in out {
            if let PeerMsg::BndUpd {
                xid,
                partner_lifetime,
                ..
            } = m
            {
                p.on_reply(*xid, true, *partner_lifetime);
            }
        }
    }

    #[test]
    fn updreq_is_answered_from_the_backlog_at_the_request_under_sustained_load() {
        let mut p = Peer::new(4, 1000);
        for i in 0..6 {
            p.enqueue(&lease(i, LeaseState::Active, 1));
        }
        p.on_updreq(11);
        // Every round: new changes keep arriving (the backlog is never empty) and what was
        // sent is acknowledged. UPDDONE must still come, once the six are acknowledged.
        let mut done_at = None;
        let mut seq = 10;
        for round in 0..10 {
            for _ in 0..3 {
                seq += 1;
                p.enqueue(&lease(100 + (seq % 50) as u8, LeaseState::Active, seq));
            }
            let mut out = Vec::new();
            p.poll_send(0, &mut out);
            if out.iter().any(is_done) {
                done_at = Some(round);
                break;
            }
            ack_all(&mut p, &out);
            assert!(p.backlog() > 0);
        }
        assert_eq!(
            done_at,
            Some(2),
            "round 0 sends 4 of the six, round 1 the last 2 (and 2 new ones), round 2 finds them acknowledged"
        );
        assert_eq!(p.requests_answering(), 0);
    }

    #[test]
    fn each_update_request_gets_its_own_upddone_in_order() {
        let mut p = Peer::new(8, 1000);
        p.enqueue(&lease(1, LeaseState::Active, 1));
        p.on_updreq(12);
        p.enqueue(&lease(2, LeaseState::Active, 2));
        p.on_updreq(13);
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 2, "two BNDUPDs, no UPDDONE yet");
        // The first update's answer ends the first request only.
        let PeerMsg::BndUpd {
            xid,
            partner_lifetime,
            ..
        } = out[0].clone()
        else {
            panic!()
        };
        p.on_reply(xid, true, partner_lifetime);
        let mut more = Vec::new();
        p.poll_send(0, &mut more);
        assert_eq!(more, vec![PeerMsg::UpdDone { xid: 12 }]);
        ack_all(&mut p, &out[1..]);
        more.clear();
        p.poll_send(0, &mut more);
        assert_eq!(
            more,
            vec![PeerMsg::UpdDone { xid: 13 }],
            "the second request's answer"
        );
        // A refused update is answered too: it leaves the backlog.
        p.enqueue(&lease(3, LeaseState::Active, 3));
        p.on_updreq(14);
        more.clear();
        p.poll_send(0, &mut more);
        let PeerMsg::BndUpd { xid, .. } = more[0].clone() else {
            panic!()
        };
        assert!(p.on_reply(xid, false, 0).is_none());
        more.clear();
        p.poll_send(0, &mut more);
        assert_eq!(more, vec![PeerMsg::UpdDone { xid: 14 }]);
        // A lost connection ends every request.
        p.enqueue(&lease(4, LeaseState::Active, 4));
        p.on_updreq(15);
        p.link_down();
        more.clear();
        p.poll_send(0, &mut more);
        assert!(!more.iter().any(is_done));
        assert_eq!(p.requests_answering(), 0);
    }

    #[test]
    fn a_change_no_bndupd_can_carry_is_dropped_not_left_to_block_upddone() {
        let mut p = Peer::new(8, 1000);
        let mut short = lease(1, LeaseState::Active, 1);
        short.duid = vec![0, 1].into();
        p.enqueue(&short);
        p.enqueue(&lease(2, LeaseState::Active, 2));
        p.on_updreq(16);
        let mut out = Vec::new();
        p.poll_send(0, &mut out);
        assert_eq!(out.len(), 1, "only the sendable one: {out:?}");
        assert_eq!(p.unsendable(), 1);
        ack_all(&mut p, &out);
        out.clear();
        p.poll_send(0, &mut out);
        assert_eq!(out, vec![PeerMsg::UpdDone { xid: 16 }]);
        assert_eq!(p.backlog(), 0);
    }
}
