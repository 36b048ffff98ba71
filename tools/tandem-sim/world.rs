//! The world: the event queue, the clock, the two servers, the clients, and what the checks
//! remember. `step` hands each event to the part of the simulator it belongs to.

use crate::server::Slot;
use crate::{Rng, SIM_PD_LEN, SimConfig, SimFailure, SimReport};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;
use tandem_client::{Ask, Client};
use tandem_core::config::{Config, Role};
use tandem_core::engine::Policy;
use tandem_core::failover::state::ServerState;
use tandem_core::lease::Lease;

/// Trace lines kept for a failure report.
pub(crate) const TRACE_KEPT: usize = 40;

/// Who answered a client, under the policy of which state, and when (ms).
pub(crate) type Granted = (usize, ServerState, u64);

/// A client told it holds a resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    pub(crate) client: u32,
    pub(crate) expires_ms: u64,
    /// When it was granted (or last extended).
    pub(crate) granted_ms: u64,
}

/// Everything that happens, at a simulated time.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// A client's retransmission or lifetime timer.
    ClientTimer(u32),
    /// A client's datagram reaches a server.
    ToServer {
        node: usize,
        client: u32,
        bytes: Vec<u8>,
    },
    /// A server's reply reaches a client. `granted_under`: the server, the state whose policy
    /// the engine answered under, and when it answered (ms).
    ToClient {
        client: u32,
        bytes: Vec<u8>,
        granted_under: Option<Granted>,
    },
    /// A server's group commit: its queued jobs become durable (or fail) together.
    GroupCommit { node: usize, incarnation: u64 },
    /// The partner thread hears of durable lease changes (the notifier).
    Committed {
        node: usize,
        incarnation: u64,
        leases: Vec<Lease>,
    },
    /// Workers take the policy the partner thread published.
    Publish {
        node: usize,
        incarnation: u64,
        policy: Policy,
        state: ServerState,
    },
    /// The failover timers (and reclamation) of a server.
    NodeTick(usize),
    /// Bytes of the partner connection `conn` reach `to`.
    LinkBytes {
        to: usize,
        conn: u64,
        bytes: Vec<u8>,
    },
    /// The other end of `conn` closed (FIN or reset reaches `to`).
    LinkEof { to: usize, conn: u64 },
    /// A link's timers are due.
    LinkTimer { node: usize, conn: u64 },
    /// The primary's connection attempt (`conn` is its id).
    Connect(u64),
    /// A server crashes; `wipe`: its store is lost too.
    Crash { node: usize, wipe: bool },
    /// A crashed server comes back.
    Restart(usize),
    /// The partner link stops carrying bytes: both ways, or only from one server.
    PartitionStart { one_way_from: Option<usize> },
    /// The partner link carries bytes again.
    PartitionEnd,
    /// The operator declares `node`'s partner down.
    OperatorPartnerDown { node: usize },
    /// The fault phase ends.
    Heal,
    /// Split-brain mode: the long partition begins (regular partition ends do not end it).
    SplitStart,
    /// The operator declares `node`'s partner down although it is only cut off.
    SplitBrainDown { node: usize },
    /// The split-brain partition ends.
    SplitEnd,
}

/// The whole simulated world of one run.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) cfg: SimConfig,
    pub(crate) config: Arc<Config>,
    pub(crate) now_ms: u64,
    pub(crate) rng: Rng,
    pub(crate) queue: BinaryHeap<Reverse<(u64, u64)>>,
    pub(crate) events: HashMap<u64, Ev>,
    pub(crate) next_ev: u64,
    pub(crate) slots: [Slot; 2],
    pub(crate) clients: Vec<Client>,
    /// The partner TCP connection while both ends hold it (its id).
    pub(crate) conn: Option<u64>,
    pub(crate) next_conn: u64,
    /// Bytes a partition holds back, per sending server, in order (TCP delivers them when the
    /// network returns, if the connection is still there).
    pub(crate) held: [Vec<Vec<u8>>; 2],
    /// Whether each node has had a partner link since it last started (a prudent operator
    /// declares partner-down only from such a node: one that knows what the partner did).
    pub(crate) linked_since_start: [bool; 2],
    /// Declared down by the operator: it may only come back where it can reach its partner
    /// (RFC 8156: while one server is in PARTNER-DOWN the other must not be operating).
    pub(crate) declared_down: [bool; 2],
    /// Partitioned: both ways (None) or only bytes from this node are held.
    pub(crate) partition: Option<Option<usize>>,
    pub(crate) healing: bool,
    /// What the clients were told they hold: resource -> its holder.
    pub(crate) holders: HashMap<Ipv6Addr, Holder>,
    /// Per client: whether it is behind the relay agent (second subnet; mixed runs).
    pub(crate) relayed: Vec<bool>,
    /// Split-brain mode: the long partition is on.
    pub(crate) split: bool,
    /// When the split-brain partition ended (ms).
    pub(crate) split_healed_ms: Option<u64>,
    /// Split-brain mode: the spans during which both servers were in PARTNER-DOWN, from the
    /// moment both were until both were NORMAL again (ms; `None`: still open).
    pub(crate) split_epochs: Vec<(u64, Option<u64>)>,
    /// Resources granted to overlapping clients during a split brain, and those clients: the
    /// only overlaps tolerated, until healing has resolved them.
    pub(crate) conflicted: HashMap<Ipv6Addr, Vec<u32>>,
    pub(crate) trace: Vec<String>,
    pub(crate) report: SimReport,
    pub(crate) states_seen: [Vec<ServerState>; 2],
    pub(crate) next_xid: u32,
}

impl World {
    /// A world with two servers not yet started and no clients.
    pub(crate) fn new(seed: u64, cfg: &SimConfig, config: Arc<Config>) -> World {
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
            Slot::new(Role::Primary, vec![0, 4, 1, 1, 1, 1], offset(&mut rng)),
            Slot::new(Role::Secondary, vec![0, 4, 2, 2, 2, 2], offset(&mut rng)),
        ];
        World {
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
            held: [Vec::new(), Vec::new()],
            linked_since_start: [false, false],
            declared_down: [false, false],
            partition: None,
            healing: false,
            holders: HashMap::new(),
            relayed: Vec::new(),
            split: false,
            split_healed_ms: None,
            split_epochs: Vec::new(),
            conflicted: HashMap::new(),
            trace: Vec::new(),
            report: SimReport::default(),
            states_seen: [Vec::new(), Vec::new()],
            next_xid: 0,
        }
    }

    /// The clients, each starting within the first 20 s.
    pub(crate) fn add_clients(&mut self) {
        for i in 0..self.cfg.clients {
            let at = self.now_ms + self.rng.below(20_000);
            // About half the clients want a delegated prefix instead of an address.
            let pd = (self.rng.below(2) == 0).then_some(SIM_PD_LEN);
            // IAID 7 and DUID tag 0x51 keep the seeds' allocations as they were.
            let mut ask = match pd {
                None => Ask::address(7),
                Some(len) => Ask::prefix(7, Some(len)),
            };
            let mut relayed = false;
            if let Some(m) = self.cfg.modes.mixed {
                relayed = self.rng.permille(m.relayed_permille);
                if self.rng.permille(m.both_ias_permille) {
                    ask.na = Some(7);
                    ask.pd = Some(8);
                    ask.pd_len = Some(SIM_PD_LEN);
                }
                ask.rapid_commit = self.rng.permille(m.rapid_commit_permille);
            }
            let ccfg = tandem_client::Config::autonomous(ask);
            self.clients.push(Client::new(i, 0x51, ccfg, at));
            self.relayed.push(relayed);
            self.push(at, Ev::ClientTimer(i));
        }
    }

    pub(crate) fn push(&mut self, at_ms: u64, ev: Ev) {
        let id = self.next_ev;
        self.next_ev += 1;
        self.events.insert(id, ev);
        self.queue.push(Reverse((at_ms, id)));
    }

    /// Node `n`'s wall clock, unix seconds (with its offset).
    pub(crate) fn node_now(&self, n: usize) -> u64 {
        ((self.now_ms / 1000) as i64 + self.slots[n].clock_offset_secs).max(0) as u64
    }

    pub(crate) fn note(&mut self, s: String) {
        if self.cfg.trace_all {
            eprintln!("{:>9.3}s {s}", self.now_ms as f64 / 1000.0);
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.remove(0);
        }
        self.trace
            .push(format!("{:>9.3}s {s}", self.now_ms as f64 / 1000.0));
    }

    pub(crate) fn fail(&self, what: String) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at_ms: self.now_ms,
            what,
            trace: self.trace.clone(),
        }
    }

    /// Whether BUGGIFY switches may fire now (fault phase only).
    pub(crate) fn buggy(&self) -> bool {
        !self.healing
    }

    pub(crate) fn step(&mut self, ev: Ev) -> Result<(), SimFailure> {
        match ev {
            Ev::ClientTimer(c) => self.client_timer(c),
            Ev::ToClient {
                client,
                bytes,
                granted_under,
            } => self.deliver_to_client(client, &bytes, granted_under)?,
            Ev::ToServer {
                node,
                client,
                bytes,
            } => self.deliver_to_server(node, client, &bytes),
            Ev::GroupCommit { node, incarnation } => self.group_commit(node, incarnation)?,
            Ev::Committed {
                node,
                incarnation,
                leases,
            } => self.committed(node, incarnation, &leases)?,
            Ev::Publish {
                node,
                incarnation,
                policy,
                state,
            } => {
                let s = &mut self.slots[node];
                if s.incarnation == incarnation && s.node.is_some() {
                    s.policy = policy;
                    s.policy_state = state;
                }
            }
            Ev::NodeTick(n) => self.node_tick(n)?,
            Ev::LinkBytes { to, conn, bytes } => self.link_bytes(to, conn, &bytes)?,
            Ev::LinkEof { to, conn } => self.link_eof(to, conn)?,
            Ev::LinkTimer { node, conn } => self.link_timer(node, conn)?,
            Ev::Connect(c) => self.connect(c)?,
            Ev::Crash { node, wipe } => self.crash(node, wipe)?,
            Ev::Restart(n) => self.restart(n),
            Ev::PartitionStart { one_way_from } => self.partition_start(one_way_from),
            // A regular partition's end does not end the split brain's.
            Ev::PartitionEnd if self.split => {}
            Ev::PartitionEnd => self.partition_end(),
            Ev::SplitStart => self.split_start(),
            Ev::SplitBrainDown { node } => self.split_brain_down(node)?,
            Ev::SplitEnd => {
                if std::mem::take(&mut self.split) {
                    self.split_healed_ms = Some(self.now_ms);
                    self.partition_end();
                }
            }
            Ev::OperatorPartnerDown { node } => self.operator_partner_down(node)?,
            Ev::Heal => {
                self.healing = true;
                if std::mem::take(&mut self.split) {
                    self.split_healed_ms = Some(self.now_ms);
                }
                self.note("heal: faults stop".into());
                self.partition_end();
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
}
