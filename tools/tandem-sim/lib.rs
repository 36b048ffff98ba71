//! Deterministic failover simulator, in the manner of TigerBeetle's VOPR and FoundationDB's
//! simulation: two [`Node`]s, many clients, a simulated network and clocks, crashes with the
//! store kept or wiped, all from one seed. The same seed replays the same run exactly.
//!
//! A run has a fault phase, in which the checks below must hold after every event, and a heal
//! phase, in which every fault is repaired and the pair must reach NORMAL with identical
//! binding databases within a bounded simulated time, having lost no lease a client holds.
//!
//! Checks:
//! - no address held by two clients at overlapping times (by what clients were told);
//! - a lease granted outside PARTNER-DOWN ends no later than MCLT past what the partner
//!   durably knows of that client's lease, whenever the partner could serve clients;
//! - after healing: both NORMAL, the same active bindings on both, every lease a client still
//!   holds present on both for that client.
//!
//! Faults it injects: client packet loss, duplication and reordering; partner-link partitions,
//! both ways and one-way, short (flapping) and long; crashes keeping the store, or wiping it
//! while the partner is in NORMAL and so holds a complete copy (losing updates no other copy
//! has is a double failure no failover protocol survives); clock offsets; operator PARTNER-DOWN while the partner is
//! really down; automatic PARTNER-DOWN only in runs without partitions (in a partition it is
//! split brain by definition, which RFC 8156 forbids).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;
use tandem_client::{Ask, Client, Event, Outbox, Send};
use tandem_core::config::Role;
use tandem_core::config::{self, Config};
use tandem_core::engine::Answering;
use tandem_core::engine::{Outcome, Received};
use tandem_core::failover::node::{Node, NodeOut};
use tandem_core::failover::peer::PeerMsg;
use tandem_core::failover::state::{EndpointConfig, Persisted, ServerState};
use tandem_core::lease::{KEY_LEN, Lease, LeaseState};

/// Most events one run may process (a liveness bound on the simulator itself).
pub const EVENTS_PER_RUN_MAX: u64 = 5_000_000;

/// Knobs of a run. [`SimConfig::from_seed`] draws them from the seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Clients.
    pub clients: u32,
    /// Length of the fault phase, simulated seconds.
    pub fault_secs: u64,
    /// Longest the heal phase may take to converge, simulated seconds.
    pub heal_secs_max: u64,
    /// MCLT, seconds.
    pub mclt_secs: u64,
    /// Client packet loss, per mille.
    pub loss_permille: u32,
    /// Client packet duplication, per mille.
    pub dup_permille: u32,
    /// Client packet delay, milliseconds (uniform 1..=this, so packets reorder).
    pub delay_ms_max: u64,
    /// Crashes per hour of simulated time.
    pub crashes_per_hour: u32,
    /// Share of crashes that wipe the store, per mille.
    pub wipe_permille: u32,
    /// Partner-link partitions per hour.
    pub partitions_per_hour: u32,
    /// Share of partitions that are one-way, per mille.
    pub one_way_permille: u32,
    /// Largest clock offset of a node, seconds (either way).
    pub clock_offset_secs_max: i64,
    /// Automatic PARTNER-DOWN after this long in COMMUNICATIONS-INTERRUPTED (only when the
    /// run has no partitions: PARTNER-DOWN is only safe when the partner is really down).
    pub auto_partner_down_secs: Option<u64>,
    /// Share of T1 timers at which a client releases instead of renewing, per mille.
    pub release_permille: u32,
    /// Print every event as it happens (for replaying a failing seed).
    pub trace_all: bool,
    /// Addresses in the pool: tight pools make freed addresses go to other clients, which is
    /// where PENDING-FREE and lease stability are tested.
    pub pool_size: u32,
}

impl SimConfig {
    /// Draws a run's knobs from its seed.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut r = Rng::new(seed ^ 0x5eed_c0f1_9000_0001);
        let partitions = r.below(2) == 0;
        SimConfig {
            clients: 10 + r.below(40) as u32,
            fault_secs: 300 + r.below(600),
            heal_secs_max: 900,
            mclt_secs: 30 + r.below(60),
            loss_permille: r.below(150) as u32,
            dup_permille: r.below(50) as u32,
            delay_ms_max: 1 + r.below(200),
            crashes_per_hour: r.below(30) as u32,
            wipe_permille: r.below(500) as u32,
            partitions_per_hour: if partitions {
                5 + r.below(40) as u32
            } else {
                0
            },
            one_way_permille: r.below(500) as u32,
            clock_offset_secs_max: r.below(3) as i64,
            auto_partner_down_secs: if partitions {
                None
            } else {
                Some(20 + r.below(60))
            },
            release_permille: r.below(200) as u32,
            trace_all: false,
            pool_size: 0,
        }
        .with_pool(&mut r)
    }
}

impl SimConfig {
    fn with_pool(mut self, r: &mut Rng) -> SimConfig {
        // A third of the runs where one server's half cannot hold every client (addresses
        // churn and freed ones go to other clients), a third with barely enough, a third roomy.
        self.pool_size = match r.below(3) {
            0 => self.clients + 4 + r.below(8) as u32,
            1 => self.clients * 2 + 4 + r.below(8) as u32,
            _ => 1024,
        };
        self
    }
}

/// SplitMix64: small, fast, and the same everywhere, which is all a simulator needs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability p/1000.
    pub fn permille(&mut self, p: u32) -> bool {
        self.below(1000) < p as u64
    }
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed (replays the run).
    pub seed: u64,
    /// Simulated time of the failure, ms.
    pub at_ms: u64,
    /// What went wrong.
    pub what: String,
    /// The last events before it.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at {:.3}s: {}",
            self.seed,
            self.at_ms as f64 / 1000.0,
            self.what
        )?;
        writeln!(f, "replay: tandem-sim --seed {}", self.seed)?;
        for t in &self.trace {
            writeln!(f, "  {t}")?;
        }
        Ok(())
    }
}

/// What a passing run saw.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Events processed.
    pub events: u64,
    /// Leases clients were given.
    pub grants: u64,
    /// Crashes (and how many wiped the store).
    pub crashes: u32,
    /// Of which wiped.
    pub wipes: u32,
    /// Partitions.
    pub partitions: u32,
    /// Simulated seconds until the healed pair converged.
    pub converged_after_secs: u64,
    /// Distinct states each node went through.
    pub states_seen: Vec<String>,
}

#[derive(Debug, Clone)]
enum Ev {
    ClientTimer(u32),
    ToServer {
        node: usize,
        client: u32,
        bytes: Vec<u8>,
    },
    ToClient {
        client: u32,
        bytes: Vec<u8>,
    },
    PeerMsg {
        to: usize,
        conn: u64,
        msg: PeerMsg,
    },
    NodeTick(usize),
    Crash {
        node: usize,
        wipe: bool,
    },
    Restart(usize),
    PartitionStart {
        one_way_from: Option<usize>,
    },
    PartitionEnd,
    Connect(u64),
    DetectLinkDown {
        node: usize,
        conn: u64,
    },
    Heal,
}

/// The durable part of a node: what survives a crash unless wiped.
#[derive(Default, Clone)]
struct Disk {
    leases: BTreeMap<[u8; KEY_LEN], Lease>,
    persisted: Option<Persisted>,
    /// Lazy writes not yet on disk (lost in a crash).
    lazy: Vec<Lease>,
}

struct Slot {
    role: Role,
    duid: Vec<u8>,
    node: Option<Node>,
    disk: Disk,
    clock_offset_secs: i64,
}

struct World {
    seed: u64,
    cfg: SimConfig,
    config: Arc<Config>,
    now_ms: u64,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    next_ev: u64,
    slots: [Slot; 2],
    clients: Vec<Client>,
    /// Partner link: connection id when up (messages of an older connection are dropped).
    conn: Option<u64>,
    next_conn: u64,
    /// The connection each node believes it is on.
    node_conn: [Option<u64>; 2],
    /// Whether each node has had a partner link since it last started (a prudent operator
    /// declares partner-down only from such a node: one that knows what the partner did).
    linked_since_start: [bool; 2],
    /// Declared down by the operator: it may only come back where it can reach its partner
    /// (RFC 8156: while one server is in PARTNER-DOWN the other must not be operating).
    declared_down: [bool; 2],
    /// Partitioned: both ways (None) or only messages from this node are lost.
    partition: Option<Option<usize>>,
    healing: bool,
    /// address -> (client, expiry ms) as the clients were told.
    holders: HashMap<Ipv6Addr, (u32, u64)>,
    trace: Vec<String>,
    report: SimReport,
    states_seen: [Vec<ServerState>; 2],
    next_xid: u32,
}

const TRACE_KEPT: usize = 40;
const SUBNET: &str = "2001:db8:1::/64";

/// Length of the prefixes simulated IA_PD clients get.
pub const SIM_PD_LEN: u8 = 56;

/// The prefix pool's length: the smallest power of two of /56s holding at least `pool_size`.
fn sim_pd_pool_len(pool_size: u32) -> u8 {
    let bits = 32 - (pool_size.max(2) - 1).leading_zeros();
    SIM_PD_LEN - bits as u8
}

fn sim_config_text(pool_size: u32) -> String {
    let last = Ipv6Addr::from(
        0x2001_0db8_0001_0000_0000_0000_0000_1000u128 + pool_size.max(2) as u128 - 1,
    );
    // Half as many prefixes as addresses: in tight runs a server's own prefixes run out, which
    // is when PARTNER-DOWN may reach into the partner's (after MCLT).
    let pd_len = sim_pd_pool_len(pool_size / 2);
    format!(
        "[server]\nlisten=[\"[::1]:5547\"]\n[lease]\npreferred_lifetime_secs=60\nvalid_lifetime_secs=120\n\
         [[subnet]]\nid=1\nprefix=\"{SUBNET}\"\npools=[{{range=\"2001:db8:1::1000-{last}\"}}]\n\
         pd_pools=[{{prefix=\"2001:db8:8000::/{pd_len}\", delegated_len={SIM_PD_LEN}}}]\n"
    )
}

impl World {
    fn push(&mut self, at_ms: u64, ev: Ev) {
        let id = self.next_ev;
        self.next_ev += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at_ms, id)));
    }

    fn node_now(&self, n: usize) -> u64 {
        ((self.now_ms / 1000) as i64 + self.slots[n].clock_offset_secs).max(0) as u64
    }

    fn note(&mut self, s: String) {
        if self.cfg.trace_all {
            eprintln!("{:>9.3}s {s}", self.now_ms as f64 / 1000.0);
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.remove(0);
        }
        self.trace
            .push(format!("{:>9.3}s {s}", self.now_ms as f64 / 1000.0));
    }

    fn fail(&self, what: String) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at_ms: self.now_ms,
            what,
            trace: self.trace.clone(),
        }
    }

    fn start_node(&mut self, n: usize) {
        let now = self.node_now(n);
        let fo = EndpointConfig {
            mclt_secs: self.cfg.mclt_secs,
            auto_partner_down_secs: self.cfg.auto_partner_down_secs,
            startup_secs: 5,
        };
        let s = &self.slots[n];
        let node = Node::start(
            self.config.clone(),
            s.duid.clone().into(),
            s.role,
            fo,
            s.disk.leases.values().cloned(),
            s.disk.persisted,
            now,
        );
        self.slots[n].node = Some(node);
        self.node_conn[n] = None;
        self.linked_since_start[n] = false;
        self.push(self.now_ms + 1000, Ev::NodeTick(n));
        self.note(format!(
            "node {n} started ({} leases on disk)",
            self.slots[n].disk.leases.len()
        ));
        self.try_connect();
    }

    fn try_connect(&mut self) {
        if self.conn.is_none()
            && self.partition.is_none()
            && self.slots.iter().all(|s| s.node.is_some())
        {
            let c = self.next_conn;
            self.next_conn += 1;
            // The primary connects with a little delay (backoff).
            let at = self.now_ms + 500 + self.rng.below(2000);
            self.push(at, Ev::Connect(c));
        }
    }

    /// Applies a node's output: durable writes first, then messages to the partner.
    fn apply(&mut self, n: usize, out: &mut NodeOut) -> Result<(), SimFailure> {
        // Lazy writes of the previous call reach the disk now, with the store's rule that an
        // older change never replaces a newer one; a crash before then loses them.
        let disk = &mut self.slots[n].disk;
        for l in std::mem::take(&mut disk.lazy) {
            match disk.leases.get(&l.key()) {
                Some(cur) if cur.seq > l.seq => {}
                _ => {
                    disk.leases.insert(l.key(), l);
                }
            }
        }
        disk.lazy.append(&mut out.store_lazy);
        for l in out.store.drain(..) {
            self.slots[n].disk.leases.insert(l.key(), l);
        }
        if let Some(p) = out.persist.take() {
            self.slots[n].disk.persisted = Some(p);
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
        let conn = self.conn;
        for m in out.to_peer.drain(..) {
            let Some(c) = conn else { continue };
            let lost = match self.partition {
                Some(None) => true,
                Some(Some(from)) => from == n,
                None => false,
            };
            if self.cfg.trace_all {
                self.note(format!("node {n} -> {}: {}", 1 - n, brief(&m)));
            }
            if !lost {
                // TCP: in order, a little latency.
                let at = self.now_ms + 2;
                self.push(
                    at,
                    Ev::PeerMsg {
                        to: 1 - n,
                        conn: c,
                        msg: m,
                    },
                );
            }
        }
        Ok(())
    }

    fn link_down_everywhere(&mut self) {
        if let Some(c) = self.conn.take() {
            for n in 0..2 {
                if self.slots[n].node.is_some() {
                    // Keepalive detection takes a few seconds.
                    let at = self.now_ms + 1000 + self.rng.below(4000);
                    self.push(at, Ev::DetectLinkDown { node: n, conn: c });
                }
            }
        }
    }

    fn check_grant(
        &mut self,
        n: usize,
        client: u32,
        addr: Ipv6Addr,
        expires_ms: u64,
        valid_secs: u32,
    ) -> Result<(), SimFailure> {
        let slack_ms = (2 * self.cfg.clock_offset_secs_max as u64 + 2) * 1000;
        // 1. Nobody else holds it.
        if let Some((other, exp)) = self.holders.get(&addr).copied()
            && other != client
            && exp > self.now_ms + slack_ms
        {
            return Err(self.fail(format!(
                "address {addr} granted to client {client} by node {n} while client {other} holds it until {:.3}s",
                exp as f64 / 1000.0
            )));
        }
        self.holders.retain(|_, (c, _)| *c != client);
        self.holders.insert(addr, (client, expires_ms));
        self.report.grants += 1;
        // 2. MCLT: outside PARTNER-DOWN, no further than MCLT past what the partner durably
        // knows, whenever the partner could serve.
        let granting = self.slots[n].node.as_ref().map(|x| x.endpoint().state());
        let partner_serving = self.slots[1 - n]
            .node
            .as_ref()
            .is_some_and(|p| p.endpoint().serving().answering != Answering::Nobody);
        if granting != Some(ServerState::PartnerDown) && partner_serving {
            let duid = self.clients[client as usize].duid();
            let kind = match self.clients[client as usize].config().ask.pd {
                Some(_) => crate::config::ResourceKind::Prefix,
                None => crate::config::ResourceKind::Address,
            };
            let key = tandem_core::lease::key(kind, addr);
            let record = self.slots[1 - n].disk.leases.get(&key);
            // PENDING-FREE on the partner (freed, change not yet acknowledged by us): the
            // partner cannot give it to anyone else, which is what the bound protects.
            let pending_there =
                record.is_some_and(|l| l.state.is_free() && l.partner_ack_until == 0);
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

    fn deliver_to_server(
        &mut self,
        n: usize,
        client: u32,
        bytes: Vec<u8>,
    ) -> Result<(), SimFailure> {
        let now = self.node_now(n);
        let Some(node) = self.slots[n].node.as_mut() else {
            return Ok(());
        };
        let src = SocketAddrV6::new(
            Ipv6Addr::from(0xfe80u128 << 112 | client as u128),
            546,
            0,
            1,
        );
        let rx = Received {
            now_secs: now,
            src,
            multicast: true,
            interface: None,
            bytes: &bytes,
        };
        let mut reply = Vec::new();
        let mut out = NodeOut::default();
        let o = node.on_client(&rx, &mut reply, &mut out);
        if self.cfg.trace_all {
            let what = |b: &[u8]| {
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
            };
            let state = self.slots[n].node.as_ref().map(|x| x.endpoint().state());
            self.note(format!(
                "client {client} -> node {n} ({state:?}): {} => {:?} {}",
                what(&bytes),
                o,
                what(&reply)
            ));
        }
        self.apply(n, &mut out)?;
        if let Outcome::Reply { .. } = o {
            self.client_net(client, reply);
        }
        Ok(())
    }

    fn client_net(&mut self, client: u32, bytes: Vec<u8>) {
        if self.rng.permille(self.cfg.loss_permille) {
            return;
        }
        let copies = if self.rng.permille(self.cfg.dup_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_ms + 1 + self.rng.below(self.cfg.delay_ms_max);
            self.push(
                at,
                Ev::ToClient {
                    client,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn send_from_client(&mut self, client: u32, s: Send) {
        for n in 0..2 {
            if let Some(to) = &s.to
                && to != &self.slots[n].duid
            {
                continue;
            }
            if self.rng.permille(self.cfg.loss_permille) {
                continue;
            }
            let copies = if self.rng.permille(self.cfg.dup_permille) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let at = self.now_ms + 1 + self.rng.below(self.cfg.delay_ms_max);
                self.push(
                    at,
                    Ev::ToServer {
                        node: n,
                        client,
                        bytes: s.bytes.clone(),
                    },
                );
            }
        }
    }

    fn schedule_faults(&mut self) {
        let hours = self.cfg.fault_secs as f64 / 3600.0;
        let crashes = (self.cfg.crashes_per_hour as f64 * hours).round() as u64;
        for _ in 0..crashes {
            let at = 10_000 + self.rng.below(self.cfg.fault_secs * 1000);
            let node = self.rng.below(2) as usize;
            let wipe = self.rng.permille(self.cfg.wipe_permille);
            self.push(at, Ev::Crash { node, wipe });
        }
        let parts = (self.cfg.partitions_per_hour as f64 * hours).round() as u64;
        for _ in 0..parts {
            let at = 10_000 + self.rng.below(self.cfg.fault_secs * 1000);
            let one_way = self
                .rng
                .permille(self.cfg.one_way_permille)
                .then(|| self.rng.below(2) as usize);
            self.push(
                at,
                Ev::PartitionStart {
                    one_way_from: one_way,
                },
            );
            // Mostly short (flapping), sometimes long.
            let len = if self.rng.below(3) == 0 {
                60_000 + self.rng.below(240_000)
            } else {
                500 + self.rng.below(8_000)
            };
            self.push(at + len, Ev::PartitionEnd);
        }
        self.push(self.cfg.fault_secs * 1000, Ev::Heal);
    }

    fn step(&mut self, ev: Ev) -> Result<(), SimFailure> {
        match ev {
            Ev::ClientTimer(c) => {
                let release = self.rng.permille(self.cfg.release_permille);
                let cl = &mut self.clients[c as usize];
                if cl.timer_ms() > self.now_ms {
                    return Ok(()); // superseded
                }
                self.next_xid = self.next_xid.wrapping_add(1);
                let mut out = Outbox::direct();
                let step = cl.on_timer(self.now_ms, self.next_xid, release, &mut out);
                let send = step.send.map(|to| Send::new(cl, to, &out));
                let expired = step.event == Event::Expired;
                let next = cl.timer_ms();
                // RFC 8415 §18.2.7: a client stops using what it releases as soon as it starts
                // the Release exchange.
                if expired || cl.phase() == tandem_client::Phase::Releasing {
                    self.holders.retain(|_, (h, _)| *h != c);
                }
                if let Some(s) = send {
                    self.send_from_client(c, s);
                }
                self.push(next, Ev::ClientTimer(c));
            }
            Ev::ToClient { client, bytes } => {
                self.next_xid = self.next_xid.wrapping_add(1);
                let cl = &mut self.clients[client as usize];
                let before = cl.timer_ms();
                let held = cl.lease().map(|l| l.addr);
                let mut out = Outbox::direct();
                let step = cl.on_datagram(self.now_ms, &bytes, self.next_xid, &mut out);
                let send = step.send.map(|to| Send::new(cl, to, &out));
                match (step.event, cl.lease().copied()) {
                    (Event::Bound, Some(l)) => {
                        let (addr, expires_ms, valid_secs) = (l.addr, l.expires_ms, l.valid_secs);
                        let from = tandem_core::wire::Message::parse(&bytes)
                            .ok()
                            .and_then(|m| m.server_id().map(|s| s.to_vec()));
                        let n = self
                            .slots
                            .iter()
                            .position(|s| Some(&s.duid) == from.as_ref())
                            .unwrap_or(0);
                        self.note(format!(
                            "client {client} holds {addr} for {valid_secs}s from node {n}"
                        ));
                        self.check_grant(n, client, addr, expires_ms, valid_secs)?;
                    }
                    (_, None) => {
                        if let Some(a) = held
                            && self.holders.get(&a).is_some_and(|h| h.0 == client)
                        {
                            self.holders.remove(&a);
                        }
                    }
                    _ => {}
                }
                if let Some(s) = send {
                    self.send_from_client(client, s);
                }
                let after = self.clients[client as usize].timer_ms();
                if after != before {
                    self.push(after, Ev::ClientTimer(client));
                }
            }
            Ev::ToServer {
                node,
                client,
                bytes,
            } => self.deliver_to_server(node, client, bytes)?,
            Ev::PeerMsg { to, conn, msg } => {
                if self.conn != Some(conn) {
                    return Ok(()); // sent on a connection that is gone
                }
                let now = self.node_now(to);
                let mut out = NodeOut::default();
                if let Some(node) = self.slots[to].node.as_mut() {
                    node.on_peer(now, msg, &mut out);
                }
                self.apply(to, &mut out)?;
            }
            Ev::NodeTick(n) => {
                let now = self.node_now(n);
                let mut out = NodeOut::default();
                let Some(node) = self.slots[n].node.as_mut() else {
                    return Ok(());
                };
                node.tick(now, &mut out);
                self.apply(n, &mut out)?;
                self.push(self.now_ms + 1000, Ev::NodeTick(n));
            }
            Ev::Crash { node, wipe } => {
                // Nor may the server that declared it down vanish before they talked: the
                // returning one would serve blind to what was granted in PARTNER-DOWN.
                let partner_returning =
                    self.declared_down[1 - node] && self.slots[1 - node].node.is_some();
                if self.healing || self.slots[node].node.is_none() || partner_returning {
                    return Ok(());
                }
                // Losing a store is survivable only while the partner holds a complete copy, that
                // is, while it is in NORMAL (it has every update but MCLT-bounded ones in
                // flight). Losing a store that holds updates the partner never got (served
                // through a partition, or the only copy) loses leases whatever the protocol: a
                // double failure the simulator does not inject. Such a crash keeps the store.
                // Complete means NORMAL and nothing of ours unacknowledged: an update still in
                // our backlog (one the partner never got, e.g. sent into a one-way partition
                // just after the link came back) would be lost with our store (seed 137128).
                let partner_complete = self.slots[1 - node]
                    .node
                    .as_ref()
                    .is_some_and(|p| p.endpoint().state() == ServerState::Normal)
                    && self.slots[node]
                        .node
                        .as_ref()
                        .is_some_and(|n| n.backlog() == 0);
                let wipe = wipe && partner_complete;
                self.slots[node].node = None;
                self.slots[node].disk.lazy.clear();
                if wipe {
                    self.slots[node].disk = Disk::default();
                    self.report.wipes += 1;
                }
                self.report.crashes += 1;
                self.note(format!(
                    "node {node} crashed{}",
                    if wipe { " and lost its store" } else { "" }
                ));
                // The partner sees the connection reset at once.
                if let Some(c) = self.conn.take() {
                    let other = 1 - node;
                    self.push(
                        self.now_ms + 1,
                        Ev::DetectLinkDown {
                            node: other,
                            conn: c,
                        },
                    );
                }
                let down = 2_000 + self.rng.below(120_000);
                self.push(self.now_ms + down, Ev::Restart(node));
                // The operator may declare it down while it is away (only safe because it is).
                if self.cfg.auto_partner_down_secs.is_none() && self.rng.below(2) == 0 {
                    let at = self.now_ms + down / 2;
                    self.push(
                        at,
                        Ev::DetectLinkDown {
                            node: 1 - node,
                            conn: u64::MAX,
                        },
                    );
                }
            }
            Ev::Restart(n) => {
                if self.slots[n].node.is_none() {
                    if self.declared_down[n]
                        && (self.partition.is_some() || self.slots[1 - n].node.is_none())
                    {
                        // Repaired, but not back on a network that reaches its partner yet.
                        self.push(self.now_ms + 5_000, Ev::Restart(n));
                        return Ok(());
                    }
                    self.start_node(n);
                }
            }
            Ev::PartitionStart { one_way_from } => {
                // A server declared down must reach its partner before anything else happens
                // to it (RFC 8156: it must not operate while its partner is in PARTNER-DOWN).
                // The restart already waits for a reachable partner; a partition in the
                // moments after it would undo that (seed 119697).
                let declared_down_running =
                    (0..2).any(|n| self.declared_down[n] && self.slots[n].node.is_some());
                if self.healing || self.partition.is_some() || declared_down_running {
                    return Ok(());
                }
                self.partition = Some(one_way_from);
                self.report.partitions += 1;
                self.note(format!(
                    "partition {}",
                    one_way_from.map_or("both ways".into(), |f| format!("from node {f}"))
                ));
                self.link_down_everywhere();
            }
            Ev::PartitionEnd => {
                if self.partition.take().is_some() {
                    self.note("partition healed".into());
                }
                self.try_connect();
            }
            Ev::Connect(c) => {
                if self.conn.is_some()
                    || self.partition.is_some()
                    || self.slots.iter().any(|s| s.node.is_none())
                    || c + 1 != self.next_conn
                {
                    return Ok(());
                }
                self.conn = Some(c);
                self.note(format!("link up (connection {c})"));
                // A link that just came back often flaps again at once: sometimes within
                // milliseconds, right inside the STATE exchange, recovery or conflict resolution.
                // Short enough (with detection) to stay below any automatic PARTNER-DOWN delay,
                // so it is safe in runs without partitions too.
                if !self.healing && self.rng.permille(300) {
                    // STATE crosses at +2 ms, update requests and their answers follow.
                    let at = self.now_ms + 3 + self.rng.below(6);
                    let len = 200 + self.rng.below(4_000);
                    let one_way = self
                        .rng
                        .permille(self.cfg.one_way_permille)
                        .then(|| self.rng.below(2) as usize);
                    self.push(
                        at,
                        Ev::PartitionStart {
                            one_way_from: one_way,
                        },
                    );
                    self.push(at + len, Ev::PartitionEnd);
                }
                for n in 0..2 {
                    let now = self.node_now(n);
                    let mut out = NodeOut::default();
                    if let Some(node) = self.slots[n].node.as_mut() {
                        if self.node_conn[n].is_some() {
                            // It had not noticed the old connection die: the new one replaces it.
                            node.link_down(now, &mut out);
                        }
                        node.link_up(now, &mut out);
                    }
                    self.node_conn[n] = Some(c);
                    self.linked_since_start[n] = true;
                    self.declared_down[n] = false;
                    self.apply(n, &mut out)?;
                }
            }
            Ev::DetectLinkDown { node, conn } => {
                if conn == u64::MAX {
                    // Operator: the partner is down (it is crashed at this point, or restarted).
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
                    return Ok(());
                }
                let now = self.node_now(node);
                let mut out = NodeOut::default();
                if let Some(x) = self.slots[node].node.as_mut()
                    && self.node_conn[node] == Some(conn)
                    && self.conn != Some(conn)
                {
                    x.link_down(now, &mut out);
                    self.node_conn[node] = None;
                }
                self.apply(node, &mut out)?;
                self.try_connect();
            }
            Ev::Heal => {
                self.healing = true;
                self.partition = None;
                self.note("heal: faults stop".into());
                for n in 0..2 {
                    if self.slots[n].node.is_none() {
                        self.start_node(n);
                    }
                }
                self.try_connect();
            }
        }
        Ok(())
    }

    fn converged(&self) -> Option<String> {
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
                let (addr, exp) = c.lease().map(|l| (l.addr, l.expires_ms))?;
                (c.phase() != tandem_client::Phase::Releasing
                    && exp > self.now_ms + 10_000
                    && db.get(&addr).is_none_or(|d| **d != *c.duid()))
                .then(|| format!("client {} lease {addr}", c.id()))
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

fn brief(m: &PeerMsg) -> String {
    match m {
        PeerMsg::BndUpd {
            xid,
            lease,
            partner_lifetime,
        } => format!(
            "BNDUPD {xid} {} {} client {:02x?} expires {} partner-lifetime {partner_lifetime} ack {}",
            lease.addr,
            lease.state,
            &lease.duid[lease.duid.len().saturating_sub(2)..],
            lease.expires_at,
            lease.partner_ack_until
        ),
        PeerMsg::BndReply {
            xid,
            accepted,
            partner_lifetime_sent,
        } => format!("BNDREPLY {xid} accepted={accepted} sent={partner_lifetime_sent}"),
        other => format!("{other:?}"),
    }
}

/// Runs one seed to the end.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let config = Arc::new(
        config::parse("<sim>", &sim_config_text(cfg.pool_size))
            .expect("the simulator's config is valid"),
    );
    let mut rng = Rng::new(seed);
    let offset = |rng: &mut Rng| {
        let m = cfg.clock_offset_secs_max;
        if m == 0 {
            0
        } else {
            rng.below((2 * m + 1) as u64) as i64 - m
        }
    };
    let slots = [
        Slot {
            role: Role::Primary,
            duid: vec![0, 4, 1, 1, 1, 1],
            node: None,
            disk: Disk::default(),
            clock_offset_secs: offset(&mut rng),
        },
        Slot {
            role: Role::Secondary,
            duid: vec![0, 4, 2, 2, 2, 2],
            node: None,
            disk: Disk::default(),
            clock_offset_secs: offset(&mut rng),
        },
    ];
    let mut w = World {
        seed,
        cfg: cfg.clone(),
        config,
        now_ms: 1_000_000,
        rng,
        queue: BinaryHeap::new(),
        events: HashMap::new(),
        next_ev: 0,
        slots,
        clients: Vec::new(),
        conn: None,
        next_conn: 0,
        node_conn: [None, None],
        linked_since_start: [false, false],
        declared_down: [false, false],
        partition: None,
        healing: false,
        holders: HashMap::new(),
        trace: Vec::new(),
        report: SimReport::default(),
        states_seen: [Vec::new(), Vec::new()],
        next_xid: 0,
    };
    w.start_node(0);
    w.start_node(1);
    for i in 0..cfg.clients {
        let at = w.now_ms + w.rng.below(20_000);
        // About half the clients want a delegated prefix instead of an address.
        let pd = (w.rng.below(2) == 0).then_some(SIM_PD_LEN);
        // IAID 7 and DUID tag 0x51 keep the seeds' allocations as they were.
        let ask = match pd {
            None => Ask::address(7),
            Some(len) => Ask::prefix(7, Some(len)),
        };
        let ccfg = tandem_client::Config::autonomous(ask);
        w.clients.push(Client::new(i, 0x51, ccfg, at));
        w.push(at, Ev::ClientTimer(i));
    }
    let start_ms = w.now_ms;
    w.schedule_faults_at(start_ms);
    let heal_at = start_ms + cfg.fault_secs * 1000;
    let deadline = heal_at + cfg.heal_secs_max * 1000;
    let mut last_check = 0;
    while let Some(Reverse((at, id))) = w.queue.pop() {
        w.report.events += 1;
        if w.report.events > EVENTS_PER_RUN_MAX {
            return Err(w.fail("event budget exhausted".into()));
        }
        w.now_ms = at;
        let ev = w.events.remove(&id).expect("every queued event is stored");
        w.step(ev)?;
        if w.healing && w.now_ms >= last_check + 1000 {
            last_check = w.now_ms;
            match w.converged() {
                None => {
                    w.report.converged_after_secs = (w.now_ms - heal_at) / 1000;
                    w.report.states_seen = w
                        .states_seen
                        .iter()
                        .map(|s| {
                            s.iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect();
                    return Ok(w.report);
                }
                Some(why) if w.now_ms >= deadline => {
                    return Err(w.fail(format!(
                        "not converged {}s after healing: {why}",
                        cfg.heal_secs_max
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Err(w.fail("ran out of events".into()))
}

impl World {
    fn schedule_faults_at(&mut self, start_ms: u64) {
        // Fault times are drawn relative to 0; shift them to the run's start.
        let before = self.next_ev;
        self.schedule_faults();
        let mut shifted = BinaryHeap::new();
        for Reverse((at, id)) in self.queue.drain() {
            let t = if id >= before { at + start_ms } else { at };
            shifted.push(Reverse((t, id)));
        }
        self.queue = shifted;
    }
}
