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
        for rel in 0..self.rels.len() {
            self.check_shares_of(rel)?;
        }
        Ok(())
    }

    /// [`World::check_shares`] for relationship `rel` (primary `2 * rel`, secondary
    /// `2 * rel + 1`).
    fn check_shares_of(&self, rel: usize) -> Result<(), SimFailure> {
        let views = |e: usize| -> Vec<(PdPoolId, u128)> {
            let end = &self.ends[e];
            let disk = &self.slots[end.server].disk;
            let stored: &[(PdPoolId, u128)] = disk.pd_shares.get(&rel).map_or(&[], |v| v);
            let primary = end.role == Role::Primary;
            let mut pools: Vec<PdPoolId> = stored.iter().map(|(p, _)| *p).collect();
            if let Some(node) = end.node.as_ref() {
                pools.extend(node.allocator().pd_pools_in(&end.scope));
            }
            pools
                .into_iter()
                .map(|id| {
                    let disk = stored
                        .iter()
                        .find(|(p, _)| *p == id)
                        .map_or(if primary { u128::MAX } else { 0 }, |(_, v)| *v);
                    let mem = end
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
        let primary = views(2 * rel);
        for (id, sec) in views(2 * rel + 1) {
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

    /// A client was just told it holds `addr` until `expires_ms`, by endpoint `e` answering
    /// under the policy of `state` at `made_ms`.
    pub(crate) fn check_grant(
        &mut self,
        (e, state, made_ms): Granted,
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
            && !self.split_brain_conflict(e, made_ms, kind, addr, client, h)
        {
            return Err(self.fail(format!(
                "address {addr} granted to client {client} by {} while client {} holds it until {:.3}s",
                self.end_name(e),
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
        self.report.second_relationship_grants += (World::rel_of(e) == 1) as u64;
        // 2. MCLT: outside PARTNER-DOWN, no further than MCLT past what the partner durably
        // knows, whenever the partner could serve. A grant is judged by the policy it was
        // made under (the reply may arrive after a state change or a crash).
        let granting = Some(state);
        let partner = self.ends[e ^ 1].server;
        let partner_serving = self.ends[e ^ 1]
            .node
            .as_ref()
            .is_some_and(|p| p.endpoint().serving().answering != Answering::Nobody);
        if granting != Some(ServerState::PartnerDown) && partner_serving {
            let duid = self.clients[client as usize].duid();
            let key = tandem_core::lease::key(kind, addr);
            let record = self.slots[partner].disk.leases.get(&key);
            // PENDING-FREE on the partner (freed, change not yet acknowledged by us): the
            // partner cannot give it to anyone else, which is what the bound protects.
            // Declined there (RFC 8415 §18.3.8: kept out of use for server.decline_hold_secs)
            // until after this grant ends: the partner will not give it to anyone either. The
            // client that declined it at one server may be given it again by the other, which
            // has not heard yet (mixed runs).
            let ends_partner_clock = (self.now_ms / 1000 + valid_secs as u64)
                .saturating_add_signed(self.slots[partner].clock_offset_secs);
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
            let partner_now = self.node_now(partner);
            let bound = known.max(partner_now)
                + self.rels[World::rel_of(e)].mclt_secs
                + 2 * self.cfg.clock_offset_secs_max as u64
                + 2;
            let ends = self.now_ms / 1000 + valid_secs as u64;
            if ends > bound && !pending_there {
                let record = self.slots[partner].disk.leases.get(&key).map(|l| {
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
                    "{} ({:?}) granted {addr} to client {client} until {ends}s, beyond MCLT past the partner's knowledge ({known}s): bound {bound}s; partner's record: {record:?}",
                    self.end_name(e),
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
        e: usize,
        made_ms: u64,
        kind: ResourceKind,
        addr: Ipv6Addr,
        client: u32,
        other: Holder,
    ) -> bool {
        if !self.cfg.modes.split_brain {
            return false;
        }
        let epochs = &self.rels[World::rel_of(e)].split_epochs;
        let in_epoch = |t: u64| {
            epochs
                .iter()
                .any(|&(from, to)| t >= from && to.is_none_or(|to| t <= to))
        };
        let parties = self.conflicted.get(&addr);
        let known = parties.is_some_and(|p| p.contains(&client) && p.contains(&other.client));
        let settled = || {
            let duid = self.clients[client as usize].duid();
            let partner = self.ends[e ^ 1].server;
            let partner_now = self.node_now(partner);
            !self.slots[partner]
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

    /// Split-brain mode: opens a span of `rel` when, behind its split-brain partition, a
    /// server is in PARTNER-DOWN while its partner runs; closes it when both are NORMAL.
    pub(crate) fn track_split_epochs(&mut self, rel: usize) {
        let states: Vec<Option<ServerState>> =
            (2 * rel..2 * rel + 2).map(|e| self.state_of(e)).collect();
        let r = &self.rels[rel];
        let open = r.split_epochs.last().is_some_and(|e| e.1.is_none());
        let all = |s: ServerState| states.iter().all(|x| *x == Some(s));
        let one_down_other_running =
            states.iter().all(Option::is_some) && states.contains(&Some(ServerState::PartnerDown));
        if !open && r.split && one_down_other_running {
            self.note("split brain: PARTNER-DOWN while the partner serves".into());
            self.rels[rel].split_epochs.push((self.now_ms, None));
        } else if open && all(ServerState::Normal) {
            self.note("split brain over: both servers NORMAL".into());
            let r = &mut self.rels[rel];
            if let Some(e) = r.split_epochs.last_mut() {
                e.1 = Some(self.now_ms);
            }
            self.report.split_resolved_ms =
                r.split_healed_ms.map(|at| self.now_ms.saturating_sub(at));
        }
    }

    /// Why the healed servers have not converged yet, or None when they have.
    pub(crate) fn converged(&self) -> Option<String> {
        (0..self.rels.len()).find_map(|rel| self.converged_in(rel))
    }

    /// [`World::converged`] for relationship `rel`: both ends NORMAL with nothing to send,
    /// the same active bindings of its subnets on both, and every lease its clients hold.
    fn converged_in(&self, rel: usize) -> Option<String> {
        let (p, s) = (2 * rel, 2 * rel + 1);
        let (Some(a), Some(b)) = (self.ends[p].node.as_ref(), self.ends[s].node.as_ref()) else {
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
        let scope = &self.rels[rel].scope;
        // Each server's expiries are on its own clock (seed 80002772: a clock 23 s behind
        // made a 31 s lease look ended while its client held it for 21 s more).
        let active = |n: &Node, now: u64| {
            let mut m = BTreeMap::new();
            n.allocator().for_each_lease_scoped(scope, |l| {
                if l.state == LeaseState::Active && l.expires_at > now + 5 {
                    m.insert(l.addr, l.duid.clone());
                }
            });
            m
        };
        let (da, db) = (active(a, self.end_now(p)), active(b, self.end_now(s)));
        for (addr, duid) in &da {
            if db.get(addr).is_some_and(|d| d != duid) {
                return Some(format!("{addr} bound to different clients"));
            }
        }
        let missing = |db: &BTreeMap<Ipv6Addr, tandem_core::lease::SharedBytes>| {
            self.clients
                .iter()
                .filter(|c| self.client_rel[c.id() as usize] == rel)
                .find_map(|c| {
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
            return Some(format!("{} lacks {m}", self.end_name(p)));
        }
        if let Some(m) = missing(&db) {
            return Some(format!("{} lacks {m}", self.end_name(s)));
        }
        None
    }
}
