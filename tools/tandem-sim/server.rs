//! A simulated server: production's stages with simulated I/O.
//!
//! | stage | production (tandem-server) | here |
//! |---|---|---|
//! | engine | worker: `Engine::handle_with` under the policy read once per receive batch | [`World::deliver_to_server`], under [`Slot::policy`], which lags the published one by up to `buggify.policy_lag_ms_max` |
//! | group commit | committer: one LMDB transaction + fsync for every queued job, replies released after | [`World::group_commit`], after `buggify.fsync_ms_max`; may fail (`commit_fail_permille`) |
//! | durable notification | `PartnerNotifier` → partner thread → `Node::committed` | [`Ev::Committed`] after `buggify.notify_ms_max` |
//! | the node's output | partner thread: store bindings and state, publish the policy, send; acknowledgements to the committer | [`World::apply`] |
//!
//! The disk is a [`LeaseStore`], as the server's LMDB store is, with the same sequence rule
//! ([`lease::supersedes`]): an older change of a lease never replaces a newer.

use crate::SimFailure;
use crate::world::{Ev, World};
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use tandem_core::config::Role;
use tandem_core::engine::{Engine, Outcome, Policy, Received, Scratch};
use tandem_core::failover::link::Link;
use tandem_core::failover::node::{Node, NodeOut};
use tandem_core::failover::state::{EndpointConfig, Persisted, ServerState};
use tandem_core::lease::{self, KEY_LEN, Lease, LeaseStore};
use tandem_core::pool::{Allocator, PdPoolId};

/// The durable part of a server: what survives a crash unless wiped.
#[derive(Default, Clone)]
pub(crate) struct Disk {
    pub(crate) leases: BTreeMap<[u8; KEY_LEN], Lease>,
    pub(crate) persisted: Option<Persisted>,
    /// The prefix shares, as the partner thread stores them under `pd_shares`.
    pub(crate) pd_shares: Vec<(PdPoolId, u128)>,
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
    /// (client, reply bytes, the state whose policy answered, when it answered (ms)).
    pub(crate) reply: Option<(u32, Vec<u8>, ServerState, u64)>,
    /// Whether the partner must hear of the writes (not for its own acknowledgements).
    pub(crate) announce: bool,
}

/// One server's place in the world.
pub(crate) struct Slot {
    pub(crate) role: Role,
    pub(crate) duid: Vec<u8>,
    /// The partner side (None while crashed).
    pub(crate) node: Option<Node>,
    /// The client side, on the same lease table.
    pub(crate) engine: Option<Engine>,
    pub(crate) scratch: Scratch,
    pub(crate) disk: Disk,
    pub(crate) clock_offset_secs: i64,
    /// Counts starts; events of an earlier incarnation are void.
    pub(crate) incarnation: u64,
    /// The policy the workers hold, and the state it was published for.
    pub(crate) policy: Policy,
    pub(crate) policy_state: ServerState,
    /// Jobs waiting for the next group commit (lost in a crash).
    pub(crate) commit_queue: Vec<Job>,
    pub(crate) commit_scheduled: bool,
    /// The link on the current connection: (connection id, link).
    pub(crate) link: Option<(u64, Link)>,
    /// When the link's timer event is due (None: none queued).
    pub(crate) link_timer_at: Option<u64>,
}

impl Slot {
    pub(crate) fn new(role: Role, duid: Vec<u8>, clock_offset_secs: i64) -> Slot {
        Slot {
            role,
            duid,
            node: None,
            engine: None,
            scratch: Scratch::default(),
            disk: Disk::default(),
            clock_offset_secs,
            incarnation: 0,
            policy: Policy::STANDALONE,
            policy_state: ServerState::Startup,
            commit_queue: Vec::new(),
            commit_scheduled: false,
            link: None,
            link_timer_at: None,
        }
    }
}

impl World {
    /// Starts server `n` from its disk, as `tandem serve` does: restore the lease table, start
    /// the node on it, publish its first policy.
    pub(crate) fn start_node(&mut self, n: usize) {
        let now = self.node_now(n);
        let fo = EndpointConfig {
            mclt_secs: self.cfg.mclt_secs,
            auto_partner_down_secs: self.cfg.auto_partner_down_secs,
            startup_secs: 5,
            skew_max_secs: self.cfg.modes.skew_max_secs,
        };
        let alloc = Arc::new(Allocator::with_failover(&self.config.subnets));
        let s = &mut self.slots[n];
        for l in s.disk.leases.values() {
            let _ = alloc.restore(l.clone());
        }
        alloc.finish_restore();
        let node = Node::with_allocator(
            self.config.clone(),
            s.role,
            fo,
            alloc.clone(),
            s.disk.persisted,
            &s.disk.pd_shares,
            now,
        );
        s.engine = Some(Engine::new(
            self.config.clone(),
            s.duid.clone().into(),
            alloc,
        ));
        s.policy = node.policy();
        s.policy_state = node.endpoint().state();
        s.node = Some(node);
        s.incarnation += 1;
        s.commit_queue.clear();
        s.commit_scheduled = false;
        s.link = None;
        s.link_timer_at = None;
        self.linked_since_start[n] = false;
        self.push(self.now_ms + 1000, Ev::NodeTick(n));
        self.note(format!(
            "node {n} started ({} leases on disk)",
            self.slots[n].disk.leases.len()
        ));
        self.try_connect();
    }

    /// A client's datagram at server `n`: the engine under the workers' policy; what needs no
    /// storing leaves now, the rest waits for the group commit.
    pub(crate) fn deliver_to_server(&mut self, n: usize, client: u32, bytes: &[u8]) {
        let now = self.node_now(n);
        let now_ms = self.now_ms;
        let s = &mut self.slots[n];
        let Some(engine) = s.engine.as_ref() else {
            return;
        };
        // A relay agent sends from its global address to the server's, unicast; a client on
        // the link from its link-local one to the multicast group.
        let relayed = self.relayed[client as usize];
        let src = if relayed {
            SocketAddrV6::new(crate::RELAY_LINK, 547, 0, 0)
        } else {
            SocketAddrV6::new(
                Ipv6Addr::from(0xfe80u128 << 112 | client as u128),
                546,
                0,
                1,
            )
        };
        let rx = Received {
            now_secs: now,
            now_ms,
            src,
            multicast: !relayed,
            interface: None,
            bytes,
        };
        let mut reply = Vec::new();
        let mut writes = Vec::new();
        let o = engine.handle_with(
            std::slice::from_ref(&s.policy),
            &rx,
            &mut reply,
            &mut s.scratch,
            &mut writes,
        );
        let state = s.policy_state;
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
            self.client_net(client, reply, Some((n, state, now_ms)));
        } else {
            self.queue_commit(
                n,
                Job {
                    writes,
                    reply: Some((client, reply, state, now_ms)),
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
        if self.slots[n].incarnation != incarnation || self.slots[n].node.is_none() {
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
            if let Some((client, reply, state, made_ms)) = j.reply {
                self.client_net(client, reply, Some((n, state, made_ms)));
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

    /// The partner thread of `n` hears of durable changes.
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
        let mut out = NodeOut::default();
        let Some(node) = self.slots[n].node.as_mut() else {
            return Ok(());
        };
        node.committed(now, leases.iter(), &mut out);
        self.apply(n, &mut out)
    }

    /// Carries out a node's output as the partner thread does: its writes and state are
    /// stored, then the policy is published to the workers, then its messages are sent; the
    /// acknowledgements go to the committer with the next batch.
    pub(crate) fn apply(&mut self, n: usize, out: &mut NodeOut) -> Result<(), SimFailure> {
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
            s.disk.persisted = Some(p);
        }
        if let Some(sh) = out.pd_shares.take() {
            s.disk.pd_shares = sh;
        }
        for (from, to) in out.changes.drain(..) {
            if !self.states_seen[n].contains(&to) {
                self.states_seen[n].push(to);
            }
            self.note(format!("node {n}: {from} -> {to}"));
            // Automatic PARTNER-DOWN declares a crashed partner down just as the operator does:
            // it must not serve again before it has talked to us (seed 157888).
            if to == ServerState::PartnerDown && self.slots[1 - n].node.is_none() {
                self.declared_down[1 - n] = true;
            }
        }
        if self.cfg.modes.split_brain {
            self.track_split_epochs();
        }
        if let Some(node) = self.slots[n].node.as_ref() {
            let (policy, state) = (node.policy(), node.endpoint().state());
            let s = &self.slots[n];
            if policy != s.policy || state != s.policy_state {
                let lag = if self.buggy() {
                    self.rng.below(self.cfg.buggify.policy_lag_ms_max + 1)
                } else {
                    0
                };
                let incarnation = s.incarnation;
                if lag == 0 {
                    let s = &mut self.slots[n];
                    s.policy = policy;
                    s.policy_state = state;
                } else {
                    self.push(
                        self.now_ms + lag,
                        Ev::Publish {
                            node: n,
                            incarnation,
                            policy,
                            state,
                        },
                    );
                }
            }
        }
        let msgs = std::mem::take(&mut out.to_peer);
        self.send_to_partner(n, &msgs);
        Ok(())
    }

    /// The failover timers and lease reclamation of `n`, every simulated second.
    pub(crate) fn node_tick(&mut self, n: usize) -> Result<(), SimFailure> {
        let now = self.node_now(n);
        let mut out = NodeOut::default();
        let Some(node) = self.slots[n].node.as_mut() else {
            return Ok(());
        };
        node.tick(now, &mut out);
        self.apply(n, &mut out)?;
        self.push(self.now_ms + 1000, Ev::NodeTick(n));
        Ok(())
    }

    /// Server `n` crashes: memory, the commit queue and the link are gone; the disk stays
    /// (or is wiped).
    pub(crate) fn crash(&mut self, node: usize, wipe: bool) -> Result<(), SimFailure> {
        // Nor may the server that declared it down vanish before they talked: the returning
        // one would serve blind to what was granted in PARTNER-DOWN.
        let partner_returning = self.declared_down[1 - node] && self.slots[1 - node].node.is_some();
        if self.healing || self.slots[node].node.is_none() || partner_returning {
            return Ok(());
        }
        // Losing a store is survivable only while the partner holds a complete copy, that is,
        // while it is in NORMAL (it has every update but MCLT-bounded ones in flight). Losing
        // a store that holds updates the partner never got (served through a partition, or the
        // only copy) loses leases whatever the protocol: a double failure the simulator does
        // not inject. Such a crash keeps the store. Complete means NORMAL and nothing of ours
        // unacknowledged, nothing committed but not yet handed to the node, nothing waiting in
        // the commit queue (seed 137128).
        let partner_complete = self.slots[1 - node]
            .node
            .as_ref()
            .is_some_and(|p| p.endpoint().state() == ServerState::Normal)
            && self.slots[node]
                .node
                .as_ref()
                .is_some_and(|n| n.backlog() == 0)
            && self.slots[node].commit_queue.is_empty()
            && !self
                .events
                .values()
                .any(|e| matches!(e, Ev::Committed { node: m, .. } if *m == node));
        let wipe = wipe && partner_complete;
        let s = &mut self.slots[node];
        s.node = None;
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
        // Its kernel resets the connection: the partner hears it unless the network is cut.
        self.drop_link(node, true);
        let down = 2_000 + self.rng.below(120_000);
        self.push(self.now_ms + down, Ev::Restart(node));
        // The operator may declare it down while it is away (only safe because it is).
        if self.cfg.auto_partner_down_secs.is_none() && self.rng.below(2) == 0 {
            let at = self.now_ms + down / 2;
            self.push(at, Ev::OperatorPartnerDown { node: 1 - node });
        }
        Ok(())
    }

    pub(crate) fn restart(&mut self, n: usize) {
        if self.slots[n].node.is_none() {
            if self.declared_down[n]
                && (self.partition.is_some() || self.slots[1 - n].node.is_none())
            {
                // Repaired, but not back on a network that reaches its partner yet.
                self.push(self.now_ms + 5_000, Ev::Restart(n));
                return;
            }
            self.start_node(n);
        }
    }

    /// Operator: the partner of `node` is down (it is crashed at this point, or restarted).
    pub(crate) fn operator_partner_down(&mut self, node: usize) -> Result<(), SimFailure> {
        if self.slots[1 - node].node.is_none() && self.linked_since_start[node] {
            let now = self.node_now(node);
            let mut out = NodeOut::default();
            if let Some(x) = self.slots[node].node.as_mut() {
                x.operator_partner_down(now, &mut out);
            }
            self.note(format!("operator: partner of node {node} is down"));
            self.declared_down[1 - node] = true;
            self.apply(node, &mut out)?;
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
