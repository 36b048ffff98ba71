//! Prefix shares between the partners, sans-IO (issue 10 item 6; RFC 8156 §5.2.2): which
//! free delegable prefixes each may hand out, moved by the primary as prefixes are used.
//!
//! Each prefix pool is split by one number, the secondary's *share* (`pool::share`). The
//! primary keeps the secondary's free part near `failover.pd_backup_percent` of the pool's
//! free prefixes: enough for the secondary to delegate on its own while the two cannot talk,
//! and no more, so a pool no longer runs dry at half its size through the primary. Near the
//! end of a pool filling fast it keeps [`RESERVE_SECS`] of its recent use for itself instead,
//! so it is not refused between two checks while the secondary holds prefixes.
//!
//! Safety: the secondary's share as the secondary applies it never exceeds the share the
//! primary applies, so no free prefix is ever the own of both. The primary alone moves it,
//! one move at a time, each acknowledged:
//! - **giving** (a larger share): the primary applies and stores it *before* sending; the
//!   secondary applies and stores it before acknowledging;
//! - **taking back** (a smaller share): the primary sends; the secondary applies and stores
//!   it before acknowledging; only on the acknowledgement does the primary apply and store it.
//!
//! A message lost with its connection, or a crash between the steps, leaves prefixes that
//! neither side may delegate, never one both may. On every new link, before anything else, the
//! primary asks the secondary for each pool's share (a *query*: a share message with
//! [`SHARE_QUERY`]); the secondary stores its shares before it answers, so what it says it
//! holds is what it will hold after a crash. Once caught up (every binding the secondary made
//! before the link has arrived), the primary takes back what the secondary does not hold (a
//! give applied here and never delivered, a take delivered and never acknowledged): those
//! prefixes are not the secondary's, and any the secondary bound while they were are known in
//! use by then, so no acknowledgement is needed. The queries go ahead of the update request,
//! so the answers arrive before the partner's UPDDONE and a returning primary serves its
//! whole part from its first moment in NORMAL (a review found both conditions: an answer from
//! memory ahead of a failed write, and a take-back ahead of the secondary's backlog). A server
//! with no stored share starts safe: the primary as if it had given the whole pool away, the
//! secondary holding nothing.
//!
//! Only free prefixes the partner knows to be free ever change hands: whoever hands prefixes
//! over (the primary for a give, the secondary for a take) moves the split no further than the
//! first one that is in use, offered, or freed without the partner's acknowledgement
//! (`Allocator::pd_movable_share`). Otherwise a prefix could change hands ahead of the binding
//! update that says it is taken (a review found both ways: a grant of the primary's still in its
//! backlog when a give went out, a secondary's grant from COMMUNICATIONS-INTERRUPTED not yet
//! arrived when a take came). The primary also rebalances only once it has caught up with the
//! secondary (`Node::catching_up`).

use super::peer::PeerMsg;
use crate::config::Role;
use crate::pool::{Allocator, PdPoolId, Scope};

/// Shortest time between two balance checks of the primary (each walks every prefix pool's
/// records once).
pub const CHECK_INTERVAL_SECS: u64 = 1;

/// The primary keeps for itself at least this many seconds' worth of the prefixes it used
/// since its last check (see [`PdShares::poll`]).
pub const RESERVE_SECS: u64 = 3;

/// The share value that asks the secondary for its share instead of setting it (the primary
/// never sets a share that large: shares are capped at the pool's size).
pub const SHARE_QUERY: u64 = u64::MAX;

/// What a share move sent and not yet answered was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A larger share, applied here before it went.
    Give,
    /// A smaller share, applied here once acknowledged.
    Take,
}

/// One share move sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    xid: u32,
    pool: usize,
    share: u128,
    kind: Kind,
}

/// One endpoint's side of the share protocol.
#[derive(Debug)]
pub struct PdShares {
    role: Role,
    backup_percent: u8,
    pools: Vec<PdPoolId>,
    /// Per pool (primary): the secondary's share as it last told us on this link (None: not
    /// answered yet on this link).
    theirs: Vec<Option<u128>>,
    /// Per pool (primary): the transaction id of this link's query, until it is answered.
    asked: Vec<Option<u32>>,
    /// Per pool (primary): the secondary refused a share message on this link (it has no
    /// such pool: the configurations differ); left alone until the next link.
    refused: Vec<bool>,
    outstanding: Option<Outstanding>,
    /// When the primary last checked the balance (0: never).
    checked_at: u64,
    /// Per pool (primary): when it was last measured (unix secs), its free prefixes then, and
    /// the rate at which they went (per second) measured then.
    free_at_check: Vec<Option<(u64, u128, u128)>>,
    /// Share moves acknowledged since start (primary) or applied (secondary).
    moves: u64,
}

impl PdShares {
    /// Sets up the shares of `alloc`'s prefix pools: each pool gets its stored share, else
    /// the safe start for `role` (see the module docs).
    pub fn start(
        role: Role,
        backup_percent: u8,
        alloc: &Allocator,
        scope: &Scope,
        stored: &[(PdPoolId, u128)],
    ) -> PdShares {
        let pools = alloc.pd_pools_in(scope);
        for id in &pools {
            let share = match stored.iter().find(|(p, _)| p == id) {
                Some(&(_, s)) => s,
                None if role == Role::Primary => u128::MAX,
                None => 0,
            };
            alloc.set_pd_share(*id, share);
        }
        PdShares {
            role,
            backup_percent: backup_percent.min(100),
            theirs: vec![None; pools.len()],
            asked: vec![None; pools.len()],
            refused: vec![false; pools.len()],
            free_at_check: vec![None; pools.len()],
            pools,
            outstanding: None,
            checked_at: 0,
            moves: 0,
        }
    }

    /// Every pool's share in force here, for the store.
    pub fn snapshot(&self, alloc: &Allocator) -> Vec<(PdPoolId, u128)> {
        self.pools
            .iter()
            .map(|id| (*id, alloc.pd_share(*id).unwrap_or(0)))
            .collect()
    }

    /// Share moves acknowledged (primary) or applied (secondary) since start.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// A new link: the primary asks for every pool's share (queries put in `out`, to go
    /// before anything else on the link); nothing moves until all are answered.
    pub fn link_up(&mut self, mut take_xid: impl FnMut() -> u32, out: &mut Vec<PeerMsg>) {
        self.theirs.iter_mut().for_each(|s| *s = None);
        self.asked.iter_mut().for_each(|a| *a = None);
        self.refused.iter_mut().for_each(|r| *r = false);
        self.free_at_check.iter_mut().for_each(|f| *f = None);
        self.outstanding = None;
        self.checked_at = 0;
        if self.role != Role::Primary {
            return;
        }
        for (i, id) in self.pools.iter().enumerate() {
            let xid = take_xid();
            self.asked[i] = Some(xid);
            out.push(PeerMsg::PdShare {
                xid,
                pool: *id,
                share: SHARE_QUERY,
            });
        }
    }

    /// The link dropped: a message in flight is forgotten (a give was applied here already, a
    /// take was not; the next link asks again).
    pub fn link_down(&mut self) {
        self.outstanding = None;
        self.asked.iter_mut().for_each(|a| *a = None);
    }

    /// Primary: the next share move, if one is due. `serving_normally`: both sides are in
    /// NORMAL with the link up; `catching_up`: the partner's bindings from before the link
    /// may still be on their way (no rebalancing then). A give is applied to `alloc` here,
    /// before its message goes; `stored_change` is set whenever the caller must store
    /// [`PdShares::snapshot`] before sending what was put in `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn poll(
        &mut self,
        now: u64,
        serving_normally: bool,
        catching_up: bool,
        alloc: &Allocator,
        mut take_xid: impl FnMut() -> u32,
        out: &mut Vec<PeerMsg>,
        stored_change: &mut bool,
    ) {
        // Nothing moves until the secondary has said what it holds of every pool.
        if self.role != Role::Primary
            || self.outstanding.is_some()
            || self.asked.iter().any(Option::is_some)
        {
            return;
        }
        // What we gave and the secondary does not hold is ours again, once every binding it
        // made before this link has reached us (a prefix it granted from a share it held then
        // and has not announced yet must not look free here), in any state.
        if !catching_up {
            for (i, id) in self.pools.iter().enumerate() {
                if let (Some(theirs), Some(ours)) = (self.theirs[i], alloc.pd_share(*id))
                    && !self.refused[i]
                    && theirs < ours
                {
                    alloc.set_pd_share(*id, theirs);
                    *stored_change = true;
                }
            }
        }
        if !serving_normally {
            return;
        }
        // Rebalancing, once caught up, at most once a second.
        if catching_up || (self.checked_at != 0 && now < self.checked_at + CHECK_INTERVAL_SECS) {
            return;
        }
        self.checked_at = now.max(1);
        for (i, id) in self.pools.iter().enumerate() {
            if self.refused[i] || self.theirs[i] != alloc.pd_share(*id) {
                continue;
            }
            let Some(bal) = alloc.pd_balance(*id) else {
                continue;
            };
            let free = bal.free_total();
            // What the primary used since the last look, per second: it keeps at least
            // RESERVE_SECS of that for itself, so a pool filling fast is not refused between
            // two checks while the secondary sits on prefixes. (A second look within the
            // same second, after a move, keeps the rate measured.)
            let used_per_sec = match self.free_at_check[i] {
                Some((at, before, _)) if now > at => {
                    before.saturating_sub(free) / u128::from(now - at)
                }
                Some((_, _, rate)) => rate,
                None => 0,
            };
            match &mut self.free_at_check[i] {
                Some((at, _, _)) if now <= *at => {}
                slot => *slot = Some((now, free, used_per_sec)),
            }
            let target = (free * self.backup_percent as u128 / 100)
                .min(free.saturating_sub(used_per_sec * RESERVE_SECS as u128));
            let held = bal.backup_free(bal.share);
            // Hysteresis: a quarter of the target either way (at least one prefix), so a
            // pool in steady use is not moved back and forth on every check.
            let slack = (target / 4).max(1);
            if held + slack > target && held <= target + slack {
                continue;
            }
            let wanted = bal.share_for(target);
            if wanted > bal.share {
                // Give: this side lets go of the prefixes first (its workers stop taking
                // them at once), then keeps back any that turn out not to be movable (one a
                // worker took meanwhile included), and stores the result before it is sent.
                alloc.set_pd_share(*id, wanted);
                let share = alloc.pd_movable_share(*id, bal.share, wanted);
                alloc.set_pd_share(*id, share);
                *stored_change = true;
                if share > bal.share {
                    self.send(i, share, Kind::Give, take_xid(), out);
                    return;
                }
            } else if wanted < bal.share {
                self.send(i, wanted, Kind::Take, take_xid(), out);
                return;
            }
        }
    }

    fn send(&mut self, pool: usize, share: u128, kind: Kind, xid: u32, out: &mut Vec<PeerMsg>) {
        self.outstanding = Some(Outstanding {
            xid,
            pool,
            share,
            kind,
        });
        out.push(PeerMsg::PdShare {
            xid,
            pool: self.pools[pool],
            share: share.min(u128::from(SHARE_QUERY)) as u64,
        });
    }

    /// Primary: the secondary answered. Returns whether the share here changed (the caller
    /// stores the snapshot).
    pub fn on_ack(
        &mut self,
        xid: u32,
        pool: PdPoolId,
        share: u64,
        accepted: bool,
        alloc: &Allocator,
    ) -> bool {
        if let Some(i) = self.pools.iter().position(|p| *p == pool)
            && self.asked[i] == Some(xid)
        {
            self.on_query_answer(i, share, accepted, alloc);
            return false;
        }
        let Some(o) = self.outstanding else {
            return false;
        };
        if o.xid != xid || self.pools[o.pool] != pool {
            return false;
        }
        self.outstanding = None;
        // The check that follows an answer comes at once, not a second later.
        self.checked_at = 0;
        let share = u128::from(share);
        let ours = alloc.pd_share(pool).unwrap_or(0);
        // What the secondary may hold: never more than we do (it answers a take with a share
        // between the one asked and the one it had).
        let valid = match o.kind {
            Kind::Give => share == o.share,
            Kind::Take => share >= o.share && share <= ours,
        };
        if !accepted || !valid {
            // It does not know the pool (the configurations differ) or answered nonsense:
            // left alone on this link; what we hold stays as it is.
            self.refused[o.pool] = true;
            return false;
        }
        self.theirs[o.pool] = Some(share);
        match o.kind {
            Kind::Give => {
                self.moves += 1;
                false
            }
            Kind::Take if share < ours => {
                self.moves += 1;
                alloc.set_pd_share(pool, share);
                true
            }
            Kind::Take => false,
        }
    }

    /// Primary: the secondary says what it holds of pool `i` on this link (what we gave and it
    /// does not hold is taken back in [`PdShares::poll`]).
    fn on_query_answer(&mut self, i: usize, share: u64, accepted: bool, alloc: &Allocator) {
        self.asked[i] = None;
        let share = u128::from(share);
        let ours = alloc.pd_share(self.pools[i]).unwrap_or(0);
        if !accepted || share > ours {
            // It does not know the pool (the configurations differ) or holds more than we
            // gave (it cannot: a store restored from elsewhere): left alone on this link;
            // what we hold stays as it is.
            self.refused[i] = true;
            return;
        }
        // Taken back in `poll`, once caught up.
        self.theirs[i] = Some(share);
    }

    /// Secondary: the primary asked for or set a share. A larger share is taken as given; a
    /// smaller one is taken only as far as its prefixes are movable (see the module docs).
    /// Returns the answer; the caller stores the snapshot before sending it (changed or not:
    /// see the module docs).
    pub fn on_share(&mut self, xid: u32, pool: PdPoolId, share: u64, alloc: &Allocator) -> PeerMsg {
        let known = self.role == Role::Secondary && self.pools.contains(&pool);
        let current = alloc.pd_share(pool).unwrap_or(0);
        if known && share != SHARE_QUERY {
            let wanted = u128::from(share);
            let applied = if wanted < current {
                alloc.pd_movable_share(pool, current, wanted)
            } else {
                wanted
            };
            if applied != current {
                alloc.set_pd_share(pool, applied);
                self.moves += 1;
            }
        }
        let now_held = alloc
            .pd_share(pool)
            .unwrap_or(0)
            .min(u128::from(SHARE_QUERY - 1)) as u64;
        PeerMsg::PdShareAck {
            xid,
            pool,
            share: now_held,
            accepted: known,
        }
    }
}
