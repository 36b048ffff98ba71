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
//! neither side may delegate, never one both may. On every new link the primary first stores
//! and sends each pool's share as it stands (a *sync*, which the secondary takes whatever it
//! held), then rebalances. A server with no stored share starts safe: the primary as if it had given the
//! whole pool away, the secondary holding nothing; the first sync and rebalance set both.

use super::peer::PeerMsg;
use crate::config::Role;
use crate::pool::{Allocator, PdPoolId};

/// Shortest time between two balance checks of the primary (each walks every prefix pool's
/// records once).
pub const CHECK_INTERVAL_SECS: u64 = 1;

/// The primary keeps for itself at least this many seconds' worth of the prefixes it used
/// since its last check (see [`PdShares::poll`]).
pub const RESERVE_SECS: u64 = 3;

/// One move sent and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outstanding {
    xid: u32,
    pool: usize,
    share: u128,
    /// A smaller share than the primary's: applied here only once acknowledged.
    take: bool,
}

/// One endpoint's side of the share protocol.
#[derive(Debug)]
pub struct PdShares {
    role: Role,
    backup_percent: u8,
    pools: Vec<PdPoolId>,
    /// Per pool (primary): the secondary acknowledged a share of ours on this link.
    synced: Vec<bool>,
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
        stored: &[(PdPoolId, u128)],
    ) -> PdShares {
        let pools = alloc.pd_pools();
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
            synced: vec![false; pools.len()],
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

    /// A new link: every pool is synced again before anything moves.
    pub fn link_up(&mut self) {
        self.synced.iter_mut().for_each(|s| *s = false);
        self.free_at_check.iter_mut().for_each(|f| *f = None);
        self.outstanding = None;
        self.checked_at = 0;
    }

    /// The link dropped: a move in flight is forgotten (a give was applied here already, a
    /// take was not; either way the next link syncs).
    pub fn link_down(&mut self) {
        self.outstanding = None;
    }

    /// Primary: the next move, if one is due. `serving_normally` is whether both sides are in
    /// NORMAL with the link up. A give is applied to `alloc` here, before the message goes;
    /// the caller must store [`PdShares::snapshot`] before sending it (`stored_change` is set).
    pub fn poll(
        &mut self,
        now: u64,
        serving_normally: bool,
        alloc: &Allocator,
        mut take_xid: impl FnMut() -> u32,
        out: &mut Vec<PeerMsg>,
        stored_change: &mut bool,
    ) {
        if self.role != Role::Primary || !serving_normally || self.outstanding.is_some() {
            return;
        }
        if let Some(i) = self.synced.iter().position(|s| !s) {
            // What we hold in memory may be ahead of the store: a give whose write failed
            // (the link was dropped, the give never sent). The sync is stored with it, before
            // it goes, or a crash after the secondary took it would bring back the smaller
            // share from the store (seed 5432).
            let share = alloc.pd_share(self.pools[i]).unwrap_or(0);
            *stored_change = true;
            self.send(i, share, false, take_xid(), out);
            return;
        }
        if self.checked_at != 0 && now < self.checked_at + CHECK_INTERVAL_SECS {
            return;
        }
        self.checked_at = now.max(1);
        for (i, id) in self.pools.iter().enumerate() {
            let Some(bal) = alloc.pd_balance(*id) else {
                continue;
            };
            let free = bal.free_total();
            // What the primary used since the last look, per second: it keeps at least
            // RESERVE_SECS of that for itself, so a pool filling fast is not refused between
            // two checks while the secondary sits on prefixes.
            // (A second look within the same second, after a move, keeps the rate measured.)
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
            let share = bal.share_for(target);
            if share == bal.share {
                continue;
            }
            let give = share > bal.share;
            if give {
                alloc.set_pd_share(*id, share);
                *stored_change = true;
            }
            self.send(i, share, !give, take_xid(), out);
            return;
        }
    }

    fn send(&mut self, pool: usize, share: u128, take: bool, xid: u32, out: &mut Vec<PeerMsg>) {
        self.outstanding = Some(Outstanding {
            xid,
            pool,
            share,
            take,
        });
        out.push(PeerMsg::PdShare {
            xid,
            pool: self.pools[pool],
            share: share.min(u64::MAX as u128) as u64,
        });
    }

    /// Primary: the secondary answered a move. Returns whether the share here changed (the
    /// caller stores the snapshot).
    pub fn on_ack(
        &mut self,
        xid: u32,
        pool: PdPoolId,
        share: u64,
        accepted: bool,
        alloc: &Allocator,
    ) -> bool {
        let Some(o) = self.outstanding else {
            return false;
        };
        if o.xid != xid || self.pools[o.pool] != pool {
            return false;
        }
        self.outstanding = None;
        // The check that follows a move comes at once, not a second later.
        self.checked_at = 0;
        if !accepted || share as u128 != o.share.min(u64::MAX as u128) {
            // The partner does not know the pool (configurations differ): leave it alone on
            // this link; what we hold stays as it is.
            self.synced[o.pool] = true;
            return false;
        }
        self.synced[o.pool] = true;
        self.moves += 1;
        if o.take {
            alloc.set_pd_share(pool, o.share);
            return true;
        }
        false
    }

    /// Secondary: the primary set a share. Applies it (the caller stores the snapshot before
    /// sending the answer, which is returned).
    pub fn on_share(
        &mut self,
        xid: u32,
        pool: PdPoolId,
        share: u64,
        alloc: &Allocator,
    ) -> (PeerMsg, bool) {
        let known = self.role == Role::Secondary && self.pools.contains(&pool);
        if known {
            alloc.set_pd_share(pool, share as u128);
            self.moves += 1;
        }
        let applied = alloc.pd_share(pool).unwrap_or(0).min(u64::MAX as u128) as u64;
        (
            PeerMsg::PdShareAck {
                xid,
                pool,
                share: if known { share } else { applied },
                accepted: known,
            },
            known,
        )
    }
}
