//! A simulated server: production's stages with simulated I/O.
//!
//! | stage | production (tandem-server) | here |
//! |---|---|---|
//! | engine | worker: `Engine::handle_with` under the policy read once per receive batch | [`World::deliver_to_server`], under each relationship's [`End::policy`](crate::world::End), which lags the published one by up to `buggify.policy_lag_ms_max` |
//! | group commit | committer: one LMDB transaction + fsync for every queued job, replies released after | [`World::group_commit`], after `buggify.fsync_ms_max`; may fail (`commit_fail_permille`), its jobs then dropped: harsher than the server, whose committer tries them again until stored or stops (`store::CommitRetry`) |
//! | durable notification | `PartnerNotifier` → partner thread → `Node::committed` | [`Ev::Committed`] after `buggify.notify_ms_max` |
//! | the node's output | a partner thread per relationship: store bindings and state, publish the policy, send; acknowledgements to the committer | [`World::apply`], per endpoint |
//!
//! The disk is a [`LeaseStore`], as the server's LMDB store is, with the same sequence rule
//! ([`lease::supersedes`]): an older change of a lease never replaces a newer.

use crate::SimFailure;
use crate::world::{Ev, Granted, World};
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use tandem_core::config::Config;
use tandem_core::engine::{Engine, Outcome, Policy, Received, Scratch};
use tandem_core::failover::node::{Node, NodeOut};
use tandem_core::failover::state::{Persisted, ServerState};
use tandem_core::lease::{self, KEY_LEN, Lease, LeaseStore};
use tandem_core::pool::{Allocator, PdPoolId};

/// The durable part of a server: what survives a crash unless wiped.
#[derive(Default, Clone)]
pub(crate) struct Disk {
    pub(crate) leases: BTreeMap<[u8; KEY_LEN], Lease>,
    /// The failover state of each relationship (by index).
    pub(crate) persisted: BTreeMap<usize, Persisted>,
    /// The prefix shares of each relationship, as its partner thread stores them under
    /// `pd_shares`.
    pub(crate) pd_shares: BTreeMap<usize, Vec<(PdPoolId, u128)>>,
}

impl Disk {
    /// Stores `writes` in order (failures are injected by the caller, before).
    pub(crate) fn commit<'a>(&mut self, writes: impl IntoIterator<Item = &'a Lease>) {
        let Ok(_) = self.commit_leases(&mut writes.into_iter());
    }

    /// Deletes forgotten records (`server.keep_ended_secs`) as the store does: only where the
    /// stored version is no newer than the one forgotten.
    pub(crate) fn forget<'a>(&mut self, forgotten: impl IntoIterator<Item = &'a Lease>) {
        for l in forgotten {
            if self.leases.get(&l.key()).is_some_and(|c| c.seq <= l.seq) {
                self.leases.remove(&l.key());
            }
        }
    }
}

/// The simulated disk keeps the store's rule ([`lease::supersedes`]).
impl LeaseStore for Disk {
    type Error = std::convert::Infallible;
    fn commit_leases(
        &mut self,
        writes: &mut dyn Iterator<Item = &Lease>,
    ) -> Result<usize, Self::Error> {
        let mut n = 0;
        for l in writes {
            if lease::supersedes(self.leases.get(&l.key()).map(|c| c.seq), l) {
                self.leases.insert(l.key(), l.clone());
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A group-commit job: lease writes, and the reply that waits for them.
pub(crate) struct Job {
    pub(crate) writes: Vec<Lease>,
    /// (client, reply bytes, who answered under which state's policy and when).
    pub(crate) reply: Option<(u32, Vec<u8>, Granted)>,
    /// Whether the partner must hear of the writes (not for its own acknowledgements).
    pub(crate) announce: bool,
}

/// One server's place in the world: its client side, its disk and its group commit. Its
/// partner side is one [`End`](crate::world::End) per relationship.
pub(crate) struct Slot {
    pub(crate) duid: Vec<u8>,
    /// Its whole configuration.
    pub(crate) config: Arc<Config>,
    /// Its endpoints, in its configuration's order of relationships (the order of the
    /// policies its engine takes).
    pub(crate) ends: Vec<usize>,
    /// The client side (None while crashed).
    pub(crate) engine: Option<Engine>,
    pub(crate) scratch: Scratch,
    pub(crate) disk: Disk,
    pub(crate) clock_offset_secs: i64,
    /// Counts starts; events of an earlier incarnation are void.
    pub(crate) incarnation: u64,
    /// Jobs waiting for the next group commit (lost in a crash).
    pub(crate) commit_queue: Vec<Job>,
    pub(crate) commit_scheduled: bool,
}

impl Slot {
    pub(crate) fn new(duid: Vec<u8>, config: Arc<Config>, clock_offset_secs: i64) -> Slot {
        Slot {
            duid,
            config,
            ends: Vec::new(),
            engine: None,
            scratch: Scratch::default(),
            disk: Disk::default(),
            clock_offset_secs,
            incarnation: 0,
            commit_queue: Vec::new(),
            commit_scheduled: false,
        }
    }
}

impl World {
    /// Starts server `n` from its disk, as `tandem serve` does: restore the lease table, start
    /// a node per relationship on it, publish their first policies.
    pub(crate) fn start_node(&mut self, n: usize) {
        let now = self.node_now(n);
        let s = &mut self.slots[n];
        let alloc = Arc::new(Allocator::with_failover(&s.config.subnets));
        for l in s.disk.leases.values() {
            let _ = alloc.restore(l.clone());
        }
        alloc.finish_restore();
        for &e in &s.ends {
            let rel = World::rel_of(e);
            let end = &mut self.ends[e];
            let node = Node::in_scope(
                end.view.clone(),
                end.role,
                end.settings.endpoint,
                alloc.clone(),
                end.scope.clone(),
                s.disk.persisted.get(&rel).copied(),
                s.disk.pd_shares.get(&rel).map_or(&[], |v| v.as_slice()),
                now,
            );
            end.policy = node.policy();
            end.policy_state = node.endpoint().state();
            end.node = Some(node);
            end.link = None;
            end.link_timer_at = None;
            self.linked_since_start[e] = false;
        }
        s.engine = Some(Engine::new(s.config.clone(), s.duid.clone().into(), alloc));
        s.incarnation += 1;
        s.commit_queue.clear();
        s.commit_scheduled = false;
        self.push(self.now_ms + 1000, Ev::NodeTick(n));
        self.note(format!(
            "node {n} started ({} leases on disk)",
            self.slots[n].disk.leases.len()
        ));
        for e in self.slots[n].ends.clone() {
            self.try_connect(World::rel_of(e));
        }
    }

    /// A client's datagram at server `n`: the engine under the workers' policies; what needs
    /// no storing leaves now, the rest waits for the group commit.
    pub(crate) fn deliver_to_server(&mut self, n: usize, client: u32, bytes: &[u8]) {
        let now = self.node_now(n);
        let now_ms = self.now_ms;
        let e = self.end_in(n, self.client_rel[client as usize]);
        let policies: Vec<Policy> = self.slots[n]
            .ends
            .iter()
            .map(|&x| self.ends[x].policy)
            .collect();
        let state = self.ends[e].policy_state;
        let s = &mut self.slots[n];
        let Some(engine) = s.engine.as_ref() else {
            return;
        };
        // A relay agent sends from its global address to the server's, unicast; a client on
        // the link from its link-local one to the multicast group.
        let relay = self.relay_of[client as usize];
        let src = match relay {
            Some(link) => SocketAddrV6::new(link, 547, 0, 0),
            None => SocketAddrV6::new(
                Ipv6Addr::from(0xfe80u128 << 112 | client as u128),
                546,
                0,
                1,
            ),
        };
        let rx = Received {
            now_secs: now,
            now_ms,
            src,
            multicast: relay.is_none(),
            // Named only in m-to-1 runs, whose configurations name it (one pair: as found).
            interface: (relay.is_none() && self.cfg.modes.m_to_1.is_some())
                .then_some(crate::SIM_LINK),
            bytes,
        };
        let mut reply = Vec::new();
        let mut writes = Vec::new();
        let o = engine.handle_with(&policies, &rx, &mut reply, &mut s.scratch, &mut writes);
        if self.cfg.trace_all {
            self.note(format!(
                "client {client} -> node {n} (policy of {state}): {} => {o:?} {}",
                brief_dhcp(bytes),
                brief_dhcp(&reply)
            ));
        }
        let Outcome::Reply { .. } = o else {
            return;
        };
        if writes.is_empty() {
            self.client_net(client, reply, Some((e, state, now_ms)));
        } else {
            self.queue_commit(
                n,
                Job {
                    writes,
                    reply: Some((client, reply, (e, state, now_ms))),
                    announce: true,
                },
            );
        }
    }

    fn queue_commit(&mut self, n: usize, job: Job) {
        let s = &mut self.slots[n];
        s.commit_queue.push(job);
        if !s.commit_scheduled {
            s.commit_scheduled = true;
            let inc = s.incarnation;
            let at = self.now_ms + 1 + self.rng.below(self.cfg.buggify.fsync_ms_max.max(1));
            self.push(
                at,
                Ev::GroupCommit {
                    node: n,
                    incarnation: inc,
                },
            );
        }
    }

    /// The group commit of server `n`: every queued job in one transaction.
    pub(crate) fn group_commit(&mut self, n: usize, incarnation: u64) -> Result<(), SimFailure> {
        if self.slots[n].incarnation != incarnation || !self.up(n) {
            return Ok(());
        }
        self.slots[n].commit_scheduled = false;
        let jobs = std::mem::take(&mut self.slots[n].commit_queue);
        if self.buggy() && self.rng.permille(self.cfg.buggify.commit_fail_permille) {
            self.note(format!(
                "node {n}: group commit of {} jobs failed (buggify)",
                jobs.len()
            ));
            return Ok(());
        }
        let mut announce = Vec::new();
        for j in &jobs {
            self.slots[n].disk.commit(&j.writes);
        }
        for j in jobs {
            if j.announce {
                announce.extend(j.writes);
            }
            if let Some((client, reply, granted)) = j.reply {
                self.client_net(client, reply, Some(granted));
            }
        }
        if !announce.is_empty() {
            let at = self.now_ms + self.rng.below(self.cfg.buggify.notify_ms_max + 1);
            self.push(
                at,
                Ev::Committed {
                    node: n,
                    incarnation,
                    leases: announce,
                },
            );
        }
        Ok(())
    }

    /// The partner threads of `n` hear of durable changes, each of those in its scope (as the
    /// server's notifier routes them by subnet).
    pub(crate) fn committed(
        &mut self,
        n: usize,
        incarnation: u64,
        leases: &[Lease],
    ) -> Result<(), SimFailure> {
        if self.slots[n].incarnation != incarnation {
            return Ok(());
        }
        let now = self.node_now(n);
        for e in self.slots[n].ends.clone() {
            let scope = &self.rels[World::rel_of(e)].scope;
            let mine: Vec<&Lease> = leases
                .iter()
                .filter(|l| scope.covers(l.subnet_id))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut out = NodeOut::default();
            let Some(node) = self.ends[e].node.as_mut() else {
                return Ok(());
            };
            node.committed(now, mine, &mut out);
            self.apply(e, &mut out)?;
        }
        Ok(())
    }

    /// Carries out endpoint `e`'s output as its partner thread does: its writes and state are
    /// stored, then the policy is published to the workers, then its messages are sent; the
    /// acknowledgements go to the committer with the next batch.
    pub(crate) fn apply(&mut self, e: usize, out: &mut NodeOut) -> Result<(), SimFailure> {
        let n = self.ends[e].server;
        let rel = World::rel_of(e);
        if !out.store_lazy.is_empty() {
            let writes = std::mem::take(&mut out.store_lazy);
            self.queue_commit(
                n,
                Job {
                    writes,
                    reply: None,
                    announce: false,
                },
            );
        }
        let s = &mut self.slots[n];
        s.disk.commit(&out.store);
        out.store.clear();
        s.disk.forget(&out.forget);
        self.report.forgotten += out.forget.len() as u64;
        out.forget.clear();
        if let Some(p) = out.persist.take() {
            s.disk.persisted.insert(rel, p);
        }
        if let Some(sh) = out.pd_shares.take() {
            s.disk.pd_shares.insert(rel, sh);
        }
        // m-to-1: the hub changes state in one relationship and not in the other.
        if n == 1 && self.rels.len() > 1 && !out.changes.is_empty() {
            let other = self.slots[1].ends.iter().find(|&&x| x != e).copied();
            if other.is_some_and(|o| self.state_of(o) != self.state_of(e)) {
                self.report.hub_states_apart += 1;
            }
        }
        for (from, to) in out.changes.drain(..) {
            if !self.states_seen[e].contains(&to) {
                self.states_seen[e].push(to);
            }
            self.note(format!("{}: {from} -> {to}", self.end_name(e)));
            // Automatic PARTNER-DOWN declares a crashed partner down just as the operator does:
            // it must not serve again before it has talked to us (seed 157888).
            if to == ServerState::PartnerDown && !self.end_up(e ^ 1) {
                self.declared_down[e ^ 1] = true;
            }
        }
        if self.cfg.modes.split_brain {
            self.track_split_epochs(rel);
        }
        if let Some(node) = self.ends[e].node.as_ref() {
            let (policy, state) = (node.policy(), node.endpoint().state());
            let end = &self.ends[e];
            if policy != end.policy || state != end.policy_state {
                let lag = if self.buggy() {
                    self.rng.below(self.cfg.buggify.policy_lag_ms_max + 1)
                } else {
                    0
                };
                let incarnation = self.slots[n].incarnation;
                if lag == 0 {
                    let end = &mut self.ends[e];
                    end.policy = policy;
                    end.policy_state = state;
                } else {
                    self.push(
                        self.now_ms + lag,
                        Ev::Publish {
                            node: e,
                            incarnation,
                            policy,
                            state,
                        },
                    );
                }
            }
        }
        let msgs = std::mem::take(&mut out.to_peer);
        self.send_to_partner(e, &msgs);
        Ok(())
    }

    /// How traces name endpoint `e`: by its server alone with one relationship.
    pub(crate) fn end_name(&self, e: usize) -> String {
        let n = self.ends[e].server;
        if self.rels.len() == 1 {
            format!("node {n}")
        } else {
            format!("node {n} ({})", self.rels[World::rel_of(e)].name)
        }
    }

    /// The failover timers and lease reclamation of `n`'s endpoints, every simulated second.
    pub(crate) fn node_tick(&mut self, n: usize) -> Result<(), SimFailure> {
        if !self.up(n) {
            return Ok(());
        }
        let now = self.node_now(n);
        for e in self.slots[n].ends.clone() {
            let mut out = NodeOut::default();
            let Some(node) = self.ends[e].node.as_mut() else {
                return Ok(());
            };
            node.tick(now, &mut out);
            self.apply(e, &mut out)?;
        }
        self.push(self.now_ms + 1000, Ev::NodeTick(n));
        Ok(())
    }

    /// Server `n` crashes: memory, the commit queue and the links are gone; the disk stays
    /// (or is wiped).
    pub(crate) fn crash(&mut self, node: usize, wipe: bool) -> Result<(), SimFailure> {
        let ends = self.slots[node].ends.clone();
        // Nor may the server that declared it down vanish before they talked: the returning
        // one would serve blind to what was granted in PARTNER-DOWN.
        let partner_returning = ends
            .iter()
            .any(|&e| self.declared_down[e ^ 1] && self.end_up(e ^ 1));
        if self.healing || !self.up(node) || partner_returning {
            return Ok(());
        }
        // Losing a store is survivable only while each partner holds a complete copy of what
        // it shares, that is, while it is in NORMAL (it has every update but MCLT-bounded ones
        // in flight). Losing a store that holds updates a partner never got (served through a
        // partition, or the only copy) loses leases whatever the protocol: a double failure
        // the simulator does not inject. Such a crash keeps the store. Complete means NORMAL
        // and nothing of ours unacknowledged, nothing committed but not yet handed to the
        // node, nothing waiting in the commit queue (seed 137128).
        let partners_complete = ends.iter().all(|&e| {
            self.state_of(e ^ 1) == Some(ServerState::Normal)
                && self.ends[e].node.as_ref().is_some_and(|x| x.backlog() == 0)
        }) && self.slots[node].commit_queue.is_empty()
            && !self
                .events
                .values()
                .any(|e| matches!(e, Ev::Committed { node: m, .. } if *m == node));
        let wipe = wipe && partners_complete;
        for &e in &ends {
            self.ends[e].node = None;
        }
        let s = &mut self.slots[node];
        s.engine = None;
        s.commit_queue.clear();
        s.commit_scheduled = false;
        s.incarnation += 1;
        if wipe {
            s.disk = Disk::default();
            self.report.wipes += 1;
        }
        self.report.crashes += 1;
        self.note(format!(
            "node {node} crashed{}",
            if wipe { " and lost its store" } else { "" }
        ));
        // Its kernel resets the connections: each partner hears it unless the network is cut.
        for &e in &ends {
            self.drop_link(e, true);
        }
        let down = 2_000 + self.rng.below(120_000);
        self.push(self.now_ms + down, Ev::Restart(node));
        // The operator may declare it down while it is away (only safe because it is).
        for &e in &ends {
            if self.cfg.auto_partner_down_secs.is_none() && self.rng.below(2) == 0 {
                let at = self.now_ms + down / 2;
                self.push(at, Ev::OperatorPartnerDown { node: e ^ 1 });
            }
        }
        Ok(())
    }

    pub(crate) fn restart(&mut self, n: usize) {
        if !self.up(n) {
            let waits = self.slots[n].ends.iter().any(|&e| {
                self.declared_down[e]
                    && (self.rels[World::rel_of(e)].partition.is_some() || !self.end_up(e ^ 1))
            });
            if waits {
                // Repaired, but not back on a network that reaches its partner yet.
                self.push(self.now_ms + 5_000, Ev::Restart(n));
                return;
            }
            self.start_node(n);
        }
    }

    /// Operator: the partner of endpoint `e` is down (it is crashed at this point, or
    /// restarted).
    pub(crate) fn operator_partner_down(&mut self, e: usize) -> Result<(), SimFailure> {
        if !self.end_up(e ^ 1) && self.linked_since_start[e] {
            let now = self.end_now(e);
            let mut out = NodeOut::default();
            if let Some(x) = self.ends[e].node.as_mut() {
                x.operator_partner_down(now, &mut out);
            }
            self.note(format!("operator: partner of {} is down", self.end_name(e)));
            self.declared_down[e ^ 1] = true;
            self.apply(e, &mut out)?;
        }
        Ok(())
    }
}

/// One line about a DHCPv6 message, for traces.
pub(crate) fn brief_dhcp(b: &[u8]) -> String {
    tandem_core::wire::Message::parse(b).map_or("?".to_string(), |m| {
        let a: Vec<String> = m
            .ia_nas()
            .flat_map(|ia| {
                ia.addresses()
                    .map(|a| format!("{}/{}", a.addr, a.valid_secs))
            })
            .collect();
        format!("{:?} {}", m.msg_type(), a.join(","))
    })
}
