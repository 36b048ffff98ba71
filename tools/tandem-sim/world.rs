//! The world: the event queue, the clock, the servers and their relationships, the clients,
//! and what the checks remember. `step` hands each event to the part of the simulator it belongs to.

use crate::server::Slot;
use crate::{Rng, SIM_PD_LEN, SimConfig, SimFailure, SimReport};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;
use tandem_client::{Ask, Client};
use tandem_core::config::{Config, Role};
use tandem_core::engine::Policy;
use tandem_core::failover::link::Link;
use tandem_core::failover::node::Node;
use tandem_core::failover::state::{EndpointConfig, ServerState};
use tandem_core::lease::Lease;
use tandem_core::pool::Scope;

/// Trace lines kept for a failure report.
pub(crate) const TRACE_KEPT: usize = 40;

/// Which endpoint answered a client (its server, in the client's relationship), under the
/// policy of which state, and when (ms).
pub(crate) type Granted = (usize, ServerState, u64);

/// A client told it holds a resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder {
    pub(crate) client: u32,
    pub(crate) expires_ms: u64,
    /// When it was granted (or last extended).
    pub(crate) granted_ms: u64,
}

/// Everything that happens, at a simulated time. A `node` or `to` that names a server is a
/// server index; one that names a side of a relationship is an endpoint (see [`World::ends`]).
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
    /// A server's reply reaches a client. `granted_under`: the endpoint, the state whose
    /// policy the engine answered under, and when it answered (ms).
    ToClient {
        client: u32,
        bytes: Vec<u8>,
        granted_under: Option<Granted>,
    },
    /// A server's group commit: its queued jobs become durable (or fail) together.
    GroupCommit { node: usize, incarnation: u64 },
    /// The partner threads of a server hear of durable lease changes (the notifier), each
    /// those of its relationship's subnets.
    Committed {
        node: usize,
        incarnation: u64,
        leases: Vec<Lease>,
    },
    /// Workers take the policy endpoint `node`'s partner thread published.
    Publish {
        node: usize,
        incarnation: u64,
        policy: Policy,
        state: ServerState,
    },
    /// The failover timers (and reclamation) of a server's endpoints.
    NodeTick(usize),
    /// Bytes of the partner connection `conn` reach endpoint `to`.
    LinkBytes {
        to: usize,
        conn: u64,
        bytes: Vec<u8>,
    },
    /// The other end of `conn` closed (FIN or reset reaches endpoint `to`).
    LinkEof { to: usize, conn: u64 },
    /// The timers of endpoint `node`'s link are due.
    LinkTimer { node: usize, conn: u64 },
    /// The primary's connection attempt in relationship `rel` (`conn` is its id).
    Connect { rel: usize, conn: u64 },
    /// A server crashes; `wipe`: its store is lost too.
    Crash { node: usize, wipe: bool },
    /// A crashed server comes back.
    Restart(usize),
    /// Relationship `rel`'s partner link stops carrying bytes: both ways, or only from one
    /// side (0: its primary, 1: its secondary).
    PartitionStart {
        rel: usize,
        one_way_from: Option<usize>,
    },
    /// Relationship `rel`'s partner link carries bytes again.
    PartitionEnd { rel: usize },
    /// The operator declares endpoint `node`'s partner down.
    OperatorPartnerDown { node: usize },
    /// The fault phase ends.
    Heal,
    /// Split-brain mode: the long partition of `rel` begins (regular partition ends do not
    /// end it).
    SplitStart { rel: usize },
    /// The operator declares endpoint `node`'s partner down although it is only cut off.
    SplitBrainDown { node: usize },
    /// The split-brain partition of `rel` ends.
    SplitEnd { rel: usize },
}

/// A relationship's failover settings as one endpoint takes them: from its own `[[failover]]`
/// section, as the partner thread does (one pair: the run's knobs, the configuration having
/// no section).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) endpoint: EndpointConfig,
    pub(crate) keepalive_secs: u64,
    pub(crate) max_unacked: u32,
}

impl Settings {
    fn of(view: &Config, cfg: &SimConfig) -> Settings {
        match view.relationships.first() {
            Some(f) => Settings {
                endpoint: EndpointConfig {
                    mclt_secs: f.mclt_secs,
                    auto_partner_down_secs: f.auto_partner_down_secs,
                    startup_secs: f.startup_secs,
                    skew_max_secs: f.skew_max_secs,
                },
                keepalive_secs: f.keepalive_secs,
                max_unacked: f.max_unacked,
            },
            None => Settings {
                endpoint: EndpointConfig {
                    mclt_secs: cfg.mclt_secs,
                    auto_partner_down_secs: cfg.auto_partner_down_secs,
                    startup_secs: 5,
                    skew_max_secs: cfg.modes.skew_max_secs,
                },
                keepalive_secs: cfg.keepalive_secs,
                max_unacked: 64,
            },
        }
    }
}

/// One server's side of one relationship: the failover node and its partner link, as one
/// partner thread of the real server holds them.
pub(crate) struct End {
    /// Index of the server it belongs to.
    pub(crate) server: usize,
    pub(crate) role: Role,
    /// The configuration as this relationship sees it (the server's own when it has one).
    pub(crate) view: Arc<Config>,
    /// The subnets its node covers ([`Scope::ALL`] on a server with one relationship).
    pub(crate) scope: Scope,
    /// Its failover settings.
    pub(crate) settings: Settings,
    /// The partner side (None while its server is down).
    pub(crate) node: Option<Node>,
    /// The policy the workers hold for this relationship, and the state it was published for.
    pub(crate) policy: Policy,
    pub(crate) policy_state: ServerState,
    /// The link on the current connection: (connection id, link).
    pub(crate) link: Option<(u64, Link)>,
    /// When the link's timer event is due (None: none queued).
    pub(crate) link_timer_at: Option<u64>,
}

/// One failover relationship: its two endpoints (`2 * rel` the primary, `2 * rel + 1` the
/// secondary), the network between them, and its split-brain bookkeeping.
pub(crate) struct Rel {
    /// Its name in the servers' configurations.
    pub(crate) name: String,
    /// Its subnets (what the checks compare between its two servers).
    pub(crate) scope: Scope,
    /// Its MCLT.
    pub(crate) mclt_secs: u64,
    /// The partner TCP connection while both ends hold it (its id).
    pub(crate) conn: Option<u64>,
    pub(crate) next_conn: u64,
    /// Bytes a partition holds back, per sending side, in order (TCP delivers them when the
    /// network returns, if the connection is still there).
    pub(crate) held: [Vec<Vec<u8>>; 2],
    /// Partitioned: both ways (None) or only bytes from this side are held.
    pub(crate) partition: Option<Option<usize>>,
    /// Split-brain mode: the long partition is on.
    pub(crate) split: bool,
    /// When the split-brain partition ended (ms).
    pub(crate) split_healed_ms: Option<u64>,
    /// Split-brain mode: the spans during which a server was in PARTNER-DOWN while its
    /// partner ran, from that moment until both were NORMAL again (ms; `None`: still open).
    pub(crate) split_epochs: Vec<(u64, Option<u64>)>,
}

impl Rel {
    fn new(name: &str, scope: Scope, mclt_secs: u64) -> Rel {
        Rel {
            name: name.to_string(),
            scope,
            mclt_secs,
            conn: None,
            next_conn: 0,
            held: [Vec::new(), Vec::new()],
            partition: None,
            split: false,
            split_healed_ms: None,
            split_epochs: Vec::new(),
        }
    }
}

/// The whole simulated world of one run.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) cfg: SimConfig,
    pub(crate) now_ms: u64,
    pub(crate) rng: Rng,
    pub(crate) queue: BinaryHeap<Reverse<(u64, u64)>>,
    pub(crate) events: HashMap<u64, Ev>,
    pub(crate) next_ev: u64,
    /// The servers: two, or three in m-to-1 runs (server 1 in both relationships).
    pub(crate) slots: Vec<Slot>,
    /// The endpoints: relationship `r`'s primary is `2 * r`, its secondary `2 * r + 1`, so an
    /// endpoint's partner is `e ^ 1`. With one relationship, endpoint and server are the same
    /// number.
    pub(crate) ends: Vec<End>,
    pub(crate) rels: Vec<Rel>,
    pub(crate) clients: Vec<Client>,
    /// Per endpoint: whether it has had a partner link since its server last started (a
    /// prudent operator declares partner-down only from such a server: one that knows what
    /// the partner did).
    pub(crate) linked_since_start: Vec<bool>,
    /// Per endpoint, declared down by its partner (the operator, or automatic PARTNER-DOWN):
    /// its server may only come back where it can reach that partner (RFC 8156: while one
    /// server is in PARTNER-DOWN the other must not be operating).
    pub(crate) declared_down: Vec<bool>,
    pub(crate) healing: bool,
    /// What the clients were told they hold: resource -> its holder.
    pub(crate) holders: HashMap<Ipv6Addr, Holder>,
    /// Per client: the relay agent it is behind (its link-address), if any.
    pub(crate) relay_of: Vec<Option<Ipv6Addr>>,
    /// Per client: the relationship whose subnet it is on.
    pub(crate) client_rel: Vec<usize>,
    /// Resources granted to overlapping clients during a split brain, and those clients: the
    /// only overlaps tolerated, until healing has resolved them.
    pub(crate) conflicted: HashMap<Ipv6Addr, Vec<u32>>,
    pub(crate) trace: Vec<String>,
    pub(crate) report: SimReport,
    /// Per endpoint.
    pub(crate) states_seen: Vec<Vec<ServerState>>,
    pub(crate) next_xid: u32,
}

impl World {
    /// A world with its servers not yet started and no clients; `configs` holds each
    /// server's configuration.
    pub(crate) fn new(seed: u64, cfg: &SimConfig, configs: Vec<Arc<Config>>) -> World {
        let mut rng = Rng::new(seed);
        let offset = |rng: &mut Rng| {
            let m = cfg.clock_offset_secs_max;
            if m == 0 {
                0
            } else {
                rng.below((2 * m + 1) as u64) as i64 - m
            }
        };
        let duid = |n: u8| vec![0, 4, n, n, n, n];
        let mut slots = vec![
            Slot::new(duid(1), configs[0].clone(), offset(&mut rng)),
            Slot::new(duid(2), configs[1].clone(), offset(&mut rng)),
        ];
        // Relationship 0: server 0 primary, server 1 secondary. m-to-1: relationship 1 joins
        // server 1 (the hub) to server 2; the hub may be either relationship's primary.
        let mut sides = vec![(0, 0), (1, 0)];
        let rels = match cfg.modes.m_to_1 {
            None => vec![Rel::new("sim", Scope::ALL, cfg.mclt_secs)],
            Some(m) => {
                slots.push(Slot::new(duid(3), configs[2].clone(), offset(&mut rng)));
                sides = vec![(0, 0), (1, 0), (2, 1), (1, 1)];
                if m.hub_primary_in_first {
                    sides.swap(0, 1);
                }
                if m.hub_primary_in_second {
                    sides.swap(2, 3);
                }
                let mixed = cfg.modes.mixed.is_some();
                let rel = |i: usize, mclt: u64| {
                    let subnets = crate::m_to_1_subnets(i, mixed);
                    Rel::new(crate::M_TO_1_NAMES[i], Scope::subnets(&subnets), mclt)
                };
                vec![rel(0, cfg.mclt_secs), rel(1, m.second_mclt_secs)]
            }
        };
        let mut ends = Vec::new();
        let mut order: Vec<Vec<(usize, usize)>> = vec![Vec::new(); slots.len()];
        for (e, &(server, rel)) in sides.iter().enumerate() {
            let whole = &slots[server].config;
            let several = whole.relationships.len() > 1;
            let at = whole
                .relationships
                .iter()
                .position(|r| r.relationship == rels[rel].name)
                .unwrap_or(0);
            let view = if several {
                Arc::new(whole.relationship_view(at))
            } else {
                whole.clone()
            };
            ends.push(End {
                server,
                settings: Settings::of(&view, cfg),
                role: if e % 2 == 0 {
                    Role::Primary
                } else {
                    Role::Secondary
                },
                view,
                scope: if several {
                    rels[rel].scope.clone()
                } else {
                    Scope::ALL
                },
                node: None,
                policy: Policy::STANDALONE,
                policy_state: ServerState::Startup,
                link: None,
                link_timer_at: None,
            });
            order[server].push((at, e));
        }
        // A server's endpoints in its configuration's order: the order of its engine's policies.
        for (slot, mut o) in slots.iter_mut().zip(order) {
            o.sort_unstable();
            slot.ends = o.into_iter().map(|(_, e)| e).collect();
        }
        let n_ends = ends.len();
        World {
            seed,
            cfg: cfg.clone(),
            now_ms: 1_000_000,
            rng,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_ev: 0,
            slots,
            ends,
            rels,
            clients: Vec::new(),
            linked_since_start: vec![false; n_ends],
            declared_down: vec![false; n_ends],
            healing: false,
            holders: HashMap::new(),
            relay_of: Vec::new(),
            client_rel: Vec::new(),
            conflicted: HashMap::new(),
            trace: Vec::new(),
            report: SimReport::default(),
            states_seen: vec![Vec::new(); n_ends],
            next_xid: 0,
        }
    }

    /// The relationship of endpoint `e`.
    pub(crate) fn rel_of(e: usize) -> usize {
        e / 2
    }

    /// Whether server `n` runs.
    pub(crate) fn up(&self, n: usize) -> bool {
        self.slots[n].engine.is_some()
    }

    /// Whether the server of endpoint `e` runs.
    pub(crate) fn end_up(&self, e: usize) -> bool {
        self.up(self.ends[e].server)
    }

    /// Server `n`'s endpoint in relationship `rel`.
    pub(crate) fn end_in(&self, n: usize, rel: usize) -> usize {
        if self.ends[2 * rel].server == n {
            2 * rel
        } else {
            2 * rel + 1
        }
    }

    /// The state of endpoint `e`'s node (None while its server is down).
    pub(crate) fn state_of(&self, e: usize) -> Option<ServerState> {
        self.ends[e].node.as_ref().map(|x| x.endpoint().state())
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
            let mut relay = None;
            if let Some(m) = self.cfg.modes.mixed {
                relay = self
                    .rng
                    .permille(m.relayed_permille)
                    .then_some(crate::RELAY_LINK);
                if self.rng.permille(m.both_ias_permille) {
                    ask.na = Some(7);
                    ask.pd = Some(8);
                    ask.pd_len = Some(SIM_PD_LEN);
                }
                ask.rapid_commit = self.rng.permille(m.rapid_commit_permille);
            }
            // m-to-1: some clients are on the second relationship's subnet, behind its relay.
            let mut rel = 0;
            if let Some(m) = self.cfg.modes.m_to_1
                && self.rng.permille(m.second_permille)
            {
                rel = 1;
                relay = Some(crate::RELAY_LINK_M_TO_1);
            }
            let ccfg = tandem_client::Config::autonomous(ask);
            self.clients.push(Client::new(i, 0x51, ccfg, at));
            self.relay_of.push(relay);
            self.client_rel.push(rel);
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

    /// The wall clock of endpoint `e`'s server.
    pub(crate) fn end_now(&self, e: usize) -> u64 {
        self.node_now(self.ends[e].server)
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
        let mut replay_flags = String::new();
        if self.cfg.modes.m_to_1.is_none() && SimConfig::from_seed(self.seed).modes.m_to_1.is_some()
        {
            replay_flags.push_str(" --one-pair");
        }
        if self.cfg.keep_ended_secs != 0 {
            replay_flags.push_str(&format!(" --keep-ended-secs {}", self.cfg.keep_ended_secs));
        }
        SimFailure {
            seed: self.seed,
            at_ms: self.now_ms,
            what,
            trace: self.trace.clone(),
            replay_flags,
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
                let server = self.ends[node].server;
                let live = self.slots[server].incarnation == incarnation;
                let e = &mut self.ends[node];
                if live && e.node.is_some() {
                    e.policy = policy;
                    e.policy_state = state;
                }
            }
            Ev::NodeTick(n) => self.node_tick(n)?,
            Ev::LinkBytes { to, conn, bytes } => self.link_bytes(to, conn, &bytes)?,
            Ev::LinkEof { to, conn } => self.link_eof(to, conn)?,
            Ev::LinkTimer { node, conn } => self.link_timer(node, conn)?,
            Ev::Connect { rel, conn } => self.connect(rel, conn)?,
            Ev::Crash { node, wipe } => self.crash(node, wipe)?,
            Ev::Restart(n) => self.restart(n),
            Ev::PartitionStart { rel, one_way_from } => self.partition_start(rel, one_way_from),
            // A regular partition's end does not end the split brain's.
            Ev::PartitionEnd { rel } if self.rels[rel].split => {}
            Ev::PartitionEnd { rel } => self.partition_end(rel),
            Ev::SplitStart { rel } => self.split_start(rel),
            Ev::SplitBrainDown { node } => self.split_brain_down(node)?,
            Ev::SplitEnd { rel } => {
                if std::mem::take(&mut self.rels[rel].split) {
                    self.rels[rel].split_healed_ms = Some(self.now_ms);
                    self.partition_end(rel);
                }
            }
            Ev::OperatorPartnerDown { node } => self.operator_partner_down(node)?,
            Ev::Heal => {
                self.healing = true;
                for r in 0..self.rels.len() {
                    if std::mem::take(&mut self.rels[r].split) {
                        self.rels[r].split_healed_ms = Some(self.now_ms);
                    }
                }
                self.note("heal: faults stop".into());
                for r in 0..self.rels.len() {
                    self.partition_end(r);
                }
                for n in 0..self.slots.len() {
                    if !self.up(n) {
                        self.start_node(n);
                    }
                }
                for r in 0..self.rels.len() {
                    self.try_connect(r);
                }
            }
        }
        Ok(())
    }
}
