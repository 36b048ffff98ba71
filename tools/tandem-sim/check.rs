//! The checks: safety after every event ([`World::check_grant`]), convergence after healing
//! ([`World::converged`]).

use crate::SimFailure;
use crate::world::{Granted, Holder, World};
use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use tandem_core::config::ResourceKind;
use tandem_core::config::Role;
use tandem_core::engine::Answering;
use tandem_core::failover::node::Node;
use tandem_core::failover::state::ServerState;
use tandem_core::lease::LeaseState;
use tandem_core::pool::PdPoolId;

impl World {
    /// No free prefix is ever the own of both servers: for every prefix pool, the largest
    /// share the secondary holds (in memory, or on disk for its next start) is no larger than
    /// the smallest the primary holds. A server with no stored share starts safe (the primary
    /// as if it had given everything, the secondary with nothing).
    pub(crate) fn check_shares(&self) -> Result<(), SimFailure> {
        let views = |n: usize| -> Vec<(PdPoolId, u128)> {
            let s = &self.slots[n];
            let primary = s.role == Role::Primary;
            let mut pools: Vec<PdPoolId> = s.disk.pd_shares.iter().map(|(p, _)| *p).collect();
            if let Some(node) = s.node.as_ref() {
                pools.extend(node.allocator().pd_pools());
            }
            pools
                .into_iter()
                .map(|id| {
                    let disk = s
                        .disk
                        .pd_shares
                        .iter()
                        .find(|(p, _)| *p == id)
                        .map_or(if primary { u128::MAX } else { 0 }, |(_, v)| *v);
                    let mem = s
                        .node
                        .as_ref()
                        .and_then(|node| node.allocator().pd_share(id))
                        .unwrap_or(disk);
                    (
                        id,
                        if primary {
                            mem.min(disk)
                        } else {
                            mem.max(disk)
                        },
                    )
                })
                .collect()
        };
        let Some(p) = (0..2).find(|&n| self.slots[n].role == Role::Primary) else {
            return Ok(());
        };
        let primary = views(p);
        for (id, sec) in views(1 - p) {
            if let Some(&(_, pri)) = primary.iter().find(|(q, _)| *q == id)
                && sec > pri
            {
                return Err(self.fail(format!(
                    "prefix pool {id}: the secondary holds a share of {sec} while the primary holds {pri}: some free prefixes are both servers' own"
                )));
            }
        }
        Ok(())
    }

    /// A client was just told it holds `addr` until `expires_ms`, by server `n` answering
    /// under the policy of `state` at `made_ms`.
    pub(crate) fn check_grant(
        &mut self,
        (n, state, made_ms): Granted,
        client: u32,
        kind: ResourceKind,
        addr: Ipv6Addr,
        expires_ms: u64,
        valid_secs: u32,
    ) -> Result<(), SimFailure> {
        let slack_ms = (2 * self.cfg.clock_offset_secs_max as u64 + 2) * 1000;
        // 1. Nobody else holds it (but for the conflicts of a split brain, see below).
        if let Some(h) = self.holders.get(&addr).copied()
            && h.client != client
            && h.expires_ms > self.now_ms + slack_ms
            && !self.split_brain_conflict(n, made_ms, kind, addr, client, h)
        {
            return Err(self.fail(format!(
                "address {addr} granted to client {client} by node {n} while client {} holds it until {:.3}s",
                h.client,
                h.expires_ms as f64 / 1000.0
            )));
        }
        self.check_shares()?;
        self.holders.insert(
            addr,
            Holder {
                client,
                expires_ms,
                granted_ms: made_ms,
            },
        );
        self.report.grants += 1;
        // 2. MCLT: outside PARTNER-DOWN, no further than MCLT past what the partner durably
        // knows, whenever the partner could serve. A grant is judged by the policy it was
        // made under (the reply may arrive after a state change or a crash).
        let granting = Some(state);
        let partner_serving = self.slots[1 - n]
            .node
            .as_ref()
            .is_some_and(|p| p.endpoint().serving().answering != Answering::Nobody);
        if granting != Some(ServerState::PartnerDown) && partner_serving {
            let duid = self.clients[client as usize].duid();
            let key = tandem_core::lease::key(kind, addr);
            let record = self.slots[1 - n].disk.leases.get(&key);
            // PENDING-FREE on the partner (freed, change not yet acknowledged by us): the
            // partner cannot give it to anyone else, which is what the bound protects.
            // Declined there (RFC 8415 §18.3.8: kept out of use for server.decline_hold_secs)
            // until after this grant ends: the partner will not give it to anyone either. The
            // client that declined it at one server may be given it again by the other, which
            // has not heard yet (mixed runs).
            let ends_partner_clock = (self.now_ms / 1000 + valid_secs as u64)
                .saturating_add_signed(self.slots[1 - n].clock_offset_secs);
            let pending_there = record.is_some_and(|l| {
                (l.state.is_free() && l.partner_ack_until == 0)
                    || (l.state == LeaseState::Declined && l.expires_at >= ends_partner_clock)
            });
            let known = record
                .filter(|l| &*l.duid == duid && l.state == LeaseState::Active)
                .map_or(0, |l| {
                    l.expires_at
                        .max(l.partner_ack_until)
                        .max(l.partner_lifetime_received)
                });
            let partner_now = self.node_now(1 - n);
            let bound = known.max(partner_now)
                + self.cfg.mclt_secs
                + 2 * self.cfg.clock_offset_secs_max as u64
                + 2;
            let ends = self.now_ms / 1000 + valid_secs as u64;
            if ends > bound && !pending_there {
                let record = self.slots[1 - n].disk.leases.get(&key).map(|l| {
                    format!(
                        "{} client {:02x?} expires {} ack {} received {}",
                        l.state,
                        &l.duid[l.duid.len().saturating_sub(2)..],
                        l.expires_at,
                        l.partner_ack_until,
                        l.partner_lifetime_received
                    )
                });
                return Err(self.fail(format!(
                    "node {n} ({:?}) granted {addr} to client {client} until {ends}s, beyond MCLT past the partner's knowledge ({known}s): bound {bound}s; partner's record: {record:?}",
                    granting
                )));
            }
        }
        Ok(())
    }

    /// Split-brain mode: whether giving `addr` to `client` while `other` holds it is one of
    /// the double grants a split brain may make. PARTNER-DOWN is the operator's word that the
    /// partner no longer serves; once MCLT has passed it reuses what the partner may have
    /// granted, while the partner, only cut off, goes on renewing its clients in
    /// COMMUNICATIONS-INTERRUPTED (or in PARTNER-DOWN too). So from the moment one server is
    /// in PARTNER-DOWN while its partner runs behind the split-brain partition, until both are
    /// NORMAL again, a resource may go to two clients: that is tolerated for a grant made then
    /// (the server's answer, which may reach the client later).
    /// Afterwards, while a client granted it then still believes it holds it, a grant to one
    /// of the clients of that conflict is tolerated only if the partner's store does not bind
    /// the resource to another client: healing must have settled one winner on both servers
    /// (the loser is told at its next Renew or Rebind). Everywhere else the check stays whole.
    pub(crate) fn split_brain_conflict(
        &mut self,
        n: usize,
        made_ms: u64,
        kind: ResourceKind,
        addr: Ipv6Addr,
        client: u32,
        other: Holder,
    ) -> bool {
        if !self.cfg.modes.split_brain {
            return false;
        }
        let in_epoch = |t: u64| {
            self.split_epochs
                .iter()
                .any(|&(from, to)| t >= from && to.is_none_or(|to| t <= to))
        };
        let parties = self.conflicted.get(&addr);
        let known = parties.is_some_and(|p| p.contains(&client) && p.contains(&other.client));
        let settled = || {
            let duid = self.clients[client as usize].duid();
            let partner_now = self.node_now(1 - n);
            !self.slots[1 - n]
                .disk
                .leases
                .get(&tandem_core::lease::key(kind, addr))
                .is_some_and(|l| {
                    l.state == LeaseState::Active && *l.duid != *duid && l.expires_at > partner_now
                })
        };
        let tolerated = in_epoch(made_ms) || ((in_epoch(other.granted_ms) || known) && settled());
        if tolerated {
            let p = self.conflicted.entry(addr).or_default();
            for c in [client, other.client] {
                if !p.contains(&c) {
                    p.push(c);
                }
            }
            self.report.split_conflicts += 1;
            self.note(format!(
                "split brain: {addr} granted to client {client} while client {} holds it (tolerated)",
                other.client
            ));
            return true;
        }
        false
    }

    /// Split-brain mode: opens a span when, behind the split-brain partition, a server is in
    /// PARTNER-DOWN while its partner runs; closes it when both are NORMAL.
    pub(crate) fn track_split_epochs(&mut self) {
        let states: Vec<Option<ServerState>> = (0..2)
            .map(|m| self.slots[m].node.as_ref().map(|x| x.endpoint().state()))
            .collect();
        let open = self.split_epochs.last().is_some_and(|e| e.1.is_none());
        let all = |s: ServerState| states.iter().all(|x| *x == Some(s));
        let one_down_other_running =
            states.iter().all(Option::is_some) && states.contains(&Some(ServerState::PartnerDown));
        if !open && self.split && one_down_other_running {
            self.note("split brain: PARTNER-DOWN while the partner serves".into());
            self.split_epochs.push((self.now_ms, None));
        } else if open && all(ServerState::Normal) {
            self.note("split brain over: both servers NORMAL".into());
            if let Some(e) = self.split_epochs.last_mut() {
                e.1 = Some(self.now_ms);
            }
            self.report.split_resolved_ms = self
                .split_healed_ms
                .map(|at| self.now_ms.saturating_sub(at));
        }
    }

    /// Why the healed pair has not converged yet, or None when it has.
    pub(crate) fn converged(&self) -> Option<String> {
        let (Some(a), Some(b)) = (self.slots[0].node.as_ref(), self.slots[1].node.as_ref()) else {
            return Some("a node is down".into());
        };
        if a.endpoint().state() != ServerState::Normal
            || b.endpoint().state() != ServerState::Normal
        {
            return Some(format!(
                "states {} / {}",
                a.endpoint().state(),
                b.endpoint().state()
            ));
        }
        if a.backlog() > 0 || b.backlog() > 0 {
            return Some(format!("backlogs {} / {}", a.backlog(), b.backlog()));
        }
        let now = self.now_ms / 1000;
        let active = |n: &Node| {
            let mut m = BTreeMap::new();
            n.allocator().for_each_lease(|l| {
                if l.state == LeaseState::Active && l.expires_at > now + 5 {
                    m.insert(l.addr, l.duid.clone());
                }
            });
            m
        };
        let (da, db) = (active(a), active(b));
        for (addr, duid) in &da {
            if db.get(addr).is_some_and(|d| d != duid) {
                return Some(format!("{addr} bound to different clients"));
            }
        }
        let missing = |db: &BTreeMap<Ipv6Addr, Box<[u8]>>| {
            self.clients.iter().find_map(|c| {
                [c.address(), c.prefix()]
                    .into_iter()
                    .flatten()
                    .find_map(|l| {
                        let (addr, exp) = (l.addr, l.expires_ms);
                        (!matches!(
                            c.phase(),
                            tandem_client::Phase::Releasing | tandem_client::Phase::Declining
                        ) && exp > self.now_ms + 10_000
                            && db.get(&addr).is_none_or(|d| **d != *c.duid()))
                        .then(|| format!("client {} lease {addr}", c.id()))
                    })
            })
        };
        if let Some(m) = missing(&da) {
            return Some(format!("node 0 lacks {m}"));
        }
        if let Some(m) = missing(&db) {
            return Some(format!("node 1 lacks {m}"));
        }
        None
    }
}
