//! Deterministic failover simulator, in the manner of TigerBeetle's VOPR and FoundationDB's
//! simulation: two servers, many clients, a simulated network, disks and clocks, crashes with
//! the store kept or wiped, all from one seed. The same seed replays the same run exactly.
//!
//! Only I/O is simulated. Each server runs production's composition of the core's stages
//! (`server.rs`): the engine answers a client under the policy snapshot its workers hold; lease
//! changes wait in a group commit whose disk keeps the store's sequence rule and may fail; once
//! durable, the replies leave and the changes reach the failover node through a notifier; the
//! node's acknowledgements ride with the next commit; its own writes and state are stored
//! before its policy is published and its messages sent. The partners talk through the real
//! [`Link`](tandem_core::failover::link::Link) and codec, as bytes over a simulated TCP
//! connection (`partner_net.rs`): CONNECT, keepalive and CONTACT run on simulated time.
//!
//! A run has a fault phase, in which the checks below must hold after every event, and a heal
//! phase, in which every fault is repaired and the pair must reach NORMAL with identical
//! binding databases within a bounded simulated time, having lost no lease a client holds.
//!
//! Checks (`check.rs`):
//! - no address held by two clients at overlapping times (by what clients were told);
//! - a lease granted outside PARTNER-DOWN ends no later than MCLT past what the partner
//!   durably knows of that client's lease, whenever the partner could serve clients;
//! - after healing: both NORMAL, the same active bindings on both, every lease a client still
//!   holds present on both for that client.
//!
//! Faults it injects (`faults.rs`): client packet loss, duplication and reordering;
//! partner-link partitions, both ways and one-way, short (flapping) and long (TCP holds what
//! it could not deliver until the link's keepalive gives up); crashes keeping the store, or
//! wiping it while the partner is in NORMAL and so holds a complete copy (losing updates no
//! other copy has is a double failure no failover protocol survives); clock offsets; operator
//! PARTNER-DOWN while the partner is really down; automatic PARTNER-DOWN only in runs without
//! partitions (in a partition it is split brain by definition, which RFC 8156 forbids); and
//! the [`Buggify`] switches inside the servers' stages. The [`Modes`] add a mixed client
//! population (two subnets, one behind a relay; both IAs; Rapid Commit; Decline; Confirm),
//! clocks up to a minute apart, and a true split brain, whose double grants the checks
//! tolerate only until healing has resolved them.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod check;
pub mod cli;
mod clients;
mod faults;
mod partner_net;
mod server;
mod world;

use std::cmp::Reverse;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;
use tandem_core::config;
use world::World;

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
    /// The partner link's keepalive, seconds (both servers): how long a dead link goes
    /// unnoticed when nothing tells (a partition, a crash whose reset is lost).
    pub keepalive_secs: u64,
    /// Seeded fault switches in the server's own stages (see [`Buggify`]).
    pub buggify: Buggify,
    /// `server.keep_ended_secs` of both servers: records of ended leases are forgotten this
    /// long after they ended (0: kept, the seeds' default, so that every seed replays as it
    /// was found; `tandem-sim --keep-ended-secs` sets it for a sweep).
    pub keep_ended_secs: u64,
    /// Workloads and faults added after most regression seeds were found (see [`Modes`]).
    pub modes: Modes,
}

/// Modes drawn after every older knob, so that a seed with all of them off replays the run it
/// did before they existed.
#[derive(Debug, Clone)]
pub struct Modes {
    /// Clients of several kinds (see [`Mixed`]); `None`: every client asks for one address or
    /// one prefix, directly on the first subnet.
    pub mixed: Option<Mixed>,
    /// One long partition in the fault phase during which the operator declares PARTNER-DOWN
    /// on one server, then often on the other as well: a true split brain. While both serve in
    /// PARTNER-DOWN an address may go to two clients (RFC 8156 accepts that as the price of the
    /// operator's error); the checks then require that healing resolves every such conflict
    /// (POTENTIAL-CONFLICT, then NORMAL with one binding per resource on both servers, and a
    /// losing client told NoBinding rather than left to believe it holds the resource).
    pub split_brain: bool,
    /// `failover.skew_max_secs` of both servers; the clocks' offsets are drawn up to half of
    /// it, so the partners may disagree by this much and still link.
    pub skew_max_secs: u64,
    /// A third server and a second relationship (see [`MTo1`]); `None`: one pair.
    pub m_to_1: Option<MTo1>,
}

/// m-to-1: server 1 is a hub in two relationships, one with server 0 (the first subnet, and
/// the relayed second one in mixed runs) and one with server 2 (a third subnet, behind its own
/// relay agent), each with its own link, state, shares and stored state, as `[[failover]]`
/// sections configure them (each node and link takes its settings from its own section). A
/// crash of the hub takes both relationships; a partition cuts one relationship's network or
/// the hub's (both); the operator and the split brain act on one relationship.
#[derive(Debug, Clone, Copy)]
pub struct MTo1 {
    /// Clients on the second relationship's subnet, per mille.
    pub second_permille: u32,
    /// The hub's role in each relationship: secondary in both (as a hub backing edge servers
    /// usually is), primary in one (both roles on one server at once), or primary in both.
    pub hub_primary_in_first: bool,
    /// See `hub_primary_in_first`.
    pub hub_primary_in_second: bool,
    /// MCLT of the second relationship (the first has [`SimConfig::mclt_secs`]): a setting
    /// of one relationship must not reach the other's node, link or policy.
    pub second_mclt_secs: u64,
    /// The hub's configuration lists the second relationship's subnet and section first, so
    /// a subnet's index, its relationship's index and the order of the engine's policies all
    /// differ from the first runs'.
    pub second_listed_first: bool,
}

impl Default for Modes {
    fn default() -> Modes {
        Modes {
            mixed: None,
            split_brain: false,
            skew_max_secs: tandem_core::config::defaults::SKEW_MAX_SECS,
            m_to_1: None,
        }
    }
}

/// A mixed client population over two subnets, the second reached through a relay agent.
#[derive(Debug, Clone, Copy)]
pub struct Mixed {
    /// Clients that come through the relay (on the second subnet), per mille.
    pub relayed_permille: u32,
    /// Clients that ask for an address and a prefix in one message, per mille (the rest ask
    /// for one or the other).
    pub both_ias_permille: u32,
    /// Clients that ask for Rapid Commit (the servers allow it), per mille.
    pub rapid_commit_permille: u32,
    /// T1 timers at which a client holding an address declines it, per mille.
    pub decline_permille: u32,
    /// T1 timers at which a client holding an address confirms it before renewing, per mille.
    pub confirm_permille: u32,
}

/// Seeded fault switches inside the server's stages, in the manner of FoundationDB's BUGGIFY:
/// each run draws them from its seed; most runs have them off. They are faults the real server
/// meets (a slow disk, a failing commit, a partner that cannot store an update, a busy partner
/// thread),
/// made frequent. Only during the fault phase.
///
/// A partner that refuses valid updates at random is not among them: Tandem refuses an update
/// only when it holds a conflicting binding, which it then sends back (RFC 8156 §7.5). A
/// refusal without one would leave the refusing side unaware of a binding and free to give
/// it away (seed 4715 showed exactly that when this switch existed), whatever the sender does.
#[derive(Debug, Clone, Default)]
pub struct Buggify {
    /// Longest group commit (fsync), ms: jobs wait this long (uniform 1..=this) for their batch.
    pub fsync_ms_max: u64,
    /// Group commits that fail, per mille: nothing of the batch is stored, no reply leaves,
    /// the partner hears nothing (the lease stays changed in memory, as in the real server).
    pub commit_fail_permille: u32,
    /// Longest delay, ms, between a commit and the partner thread hearing of it (notifier).
    pub notify_ms_max: u64,
    /// Longest delay, ms, before workers see a newly published policy (a receive batch
    /// started under the old one).
    pub policy_lag_ms_max: u64,
    /// BNDUPDs whose storing fails on the receiving server, per mille: it drops the link
    /// without acknowledging, as the real partner thread does, and the sender resends.
    pub partner_store_fail_permille: u32,
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
            keepalive_secs: 0,
            buggify: Buggify::default(),
            keep_ended_secs: 0,
            modes: Modes::default(),
        }
        .with_pool(&mut r)
        .with_link_and_buggify(&mut r)
        .with_modes(&mut r)
    }
}

impl SimConfig {
    /// The run without the m-to-1 mode: one pair, as every seed was before that mode existed.
    /// Seeds found before it (the regression seeds) replay as they were found this way
    /// (`tandem-sim --one-pair`); the mode is drawn last, so nothing else changes.
    pub fn one_pair(mut self) -> SimConfig {
        self.modes.m_to_1 = None;
        self
    }

    /// Knobs added later, drawn after the older ones so those stay as they were per seed.
    fn with_link_and_buggify(mut self, r: &mut Rng) -> SimConfig {
        self.keepalive_secs = 2 + r.below(4);
        // Every run has a disk and a notifier that take some time; a third has them slow, and
        // the other switches on.
        let on = r.below(3) == 0;
        self.buggify = Buggify {
            fsync_ms_max: if on { 1 + r.below(50) } else { 1 + r.below(4) },
            commit_fail_permille: if on { r.below(30) as u32 } else { 0 },
            notify_ms_max: if on { r.below(50) } else { r.below(2) },
            policy_lag_ms_max: if on { r.below(5) } else { 0 },
            partner_store_fail_permille: if on { r.below(20) as u32 } else { 0 },
        };
        self
    }

    /// The [`Modes`], drawn last.
    fn with_modes(mut self, r: &mut Rng) -> SimConfig {
        let on = r.below(2) == 0;
        let mixed = Mixed {
            relayed_permille: r.below(1000) as u32,
            both_ias_permille: r.below(600) as u32,
            rapid_commit_permille: r.below(600) as u32,
            decline_permille: r.below(100) as u32,
            confirm_permille: r.below(200) as u32,
        };
        self.modes.mixed = on.then_some(mixed);
        self.modes.split_brain = self.partitions_per_hour > 0 && r.below(3) == 0;
        if r.below(4) == 0 {
            // Wider skew: up to a minute between the partners, allowed by configuration.
            self.modes.skew_max_secs = 10 + r.below(51);
            self.clock_offset_secs_max = (self.modes.skew_max_secs / 2) as i64;
        }
        if r.below(4) == 0 {
            let role = r.below(4);
            self.modes.m_to_1 = Some(MTo1 {
                second_permille: 200 + r.below(600) as u32,
                hub_primary_in_first: role == 3,
                hub_primary_in_second: role >= 2,
                second_mclt_secs: 30 + r.below(60),
                second_listed_first: r.below(2) == 0,
            });
        }
        self
    }

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
    /// What `tandem-sim --seed` needs besides the seed to replay the run (` --one-pair`,
    /// ` --keep-ended-secs N`).
    pub replay_flags: String,
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
        writeln!(
            f,
            "replay: tandem-sim --seed {}{}",
            self.seed, self.replay_flags
        )?;
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
    /// Records of ended leases the servers forgot (`keep_ended_secs`).
    pub forgotten: u64,
    /// Simulated seconds until the healed pair converged.
    pub converged_after_secs: u64,
    /// Distinct states each node went through.
    pub states_seen: Vec<String>,
    /// Mixed runs: Declines and Confirms the servers answered.
    pub declines: u64,
    /// See `declines`.
    pub confirms: u64,
    /// Mixed runs: grants through the relay agent, and grants of an address and a prefix in
    /// one Reply.
    pub relayed_grants: u64,
    /// See `relayed_grants`.
    pub both_ia_grants: u64,
    /// Split-brain runs: resources granted to a second client while the first held them
    /// (tolerated, then resolved by healing).
    pub split_conflicts: u64,
    /// Split-brain runs: simulated ms from the end of the split-brain partition until both
    /// servers were NORMAL again (the last such span; `None`: none closed).
    pub split_resolved_ms: Option<u64>,
    /// m-to-1 runs: leases granted in the second relationship.
    pub second_relationship_grants: u64,
    /// m-to-1 runs: state changes after which the hub's two relationships were in different
    /// states (each relationship has its own).
    pub hub_states_apart: u64,
}

/// Length of the prefixes simulated IA_PD clients get.
pub const SIM_PD_LEN: u8 = 56;

/// The prefix pool's length: the smallest power of two of /56s holding at least `pool_size`.
fn sim_pd_pool_len(pool_size: u32) -> u8 {
    let bits = 32 - (pool_size.max(2) - 1).leading_zeros();
    SIM_PD_LEN - bits as u8
}

/// link-address of the relay agent in front of the second subnet (mixed runs).
pub(crate) const RELAY_LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

/// link-address of the relay agent in front of the third subnet (m-to-1 runs).
pub(crate) const RELAY_LINK_M_TO_1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);

/// The interface the clients of the first subnet reach the servers on directly, named in
/// m-to-1 runs (where the hub may list the third subnet first).
pub(crate) const SIM_LINK: &str = "sim1";

/// The relationships' names in m-to-1 runs.
pub(crate) const M_TO_1_NAMES: [&str; 2] = ["edge-1", "edge-2"];

/// The subnet ids of m-to-1 relationship `rel`.
pub(crate) fn m_to_1_subnets(rel: usize, mixed: bool) -> Vec<u32> {
    match (rel, mixed) {
        (0, false) => vec![1],
        (0, true) => vec![1, 2],
        _ => vec![3],
    }
}

/// One `[[subnet]]`: `2001:db8:{id}::/64`, its addresses from `::1000`, its prefixes from
/// `pd_base`.
fn subnet_text(id: u32, pool_size: u32, pd_base: &str, pd_len: u8) -> String {
    let last = Ipv6Addr::from(
        0x2001_0db8_0000_0000_0000_0000_0000_1000u128
            + ((id as u128) << 80)
            + pool_size.max(2) as u128
            - 1,
    );
    format!(
        "[[subnet]]\nid={id}\nprefix=\"2001:db8:{id}::/64\"\npools=[{{range=\"2001:db8:{id}::1000-{last}\"}}]\n\
         pd_pools=[{{prefix=\"{pd_base}/{pd_len}\", delegated_len={SIM_PD_LEN}}}]\n"
    )
}

/// The configuration of each server: both the same for one pair, with no `[[failover]]`
/// section (the simulator drives the nodes itself); in m-to-1 runs, each server's own
/// subnets and a section per relationship it is in.
fn sim_config_texts(cfg: &SimConfig) -> Vec<String> {
    let mixed = cfg.modes.mixed.is_some();
    // Half as many prefixes as addresses: in tight runs a server's own prefixes run out, which
    // is when PARTNER-DOWN may reach into the partner's (after MCLT).
    let pd_len = sim_pd_pool_len(cfg.pool_size / 2);
    let head = format!(
        "[server]\nlisten=[\"[::1]:5547\"]\nkeep_ended_secs={}\n{}[lease]\npreferred_lifetime_secs=60\nvalid_lifetime_secs=120\n",
        cfg.keep_ended_secs,
        if mixed { "rapid_commit=true\n" } else { "" },
    );
    let first = {
        let mut t = subnet_text(1, cfg.pool_size, "2001:db8:8000::", pd_len);
        if mixed {
            t.push_str(&subnet_text(2, cfg.pool_size, "2001:db8:9000::", pd_len));
        }
        t
    };
    let Some(m) = cfg.modes.m_to_1 else {
        let text = format!("{head}{first}");
        return vec![text.clone(), text];
    };
    // The first subnet is the one on the servers' link (clients reach it directly, through
    // interface `SIM_LINK`), wherever the configuration lists it.
    let first = first.replacen(
        "[[subnet]]\nid=1\n",
        &format!("[[subnet]]\nid=1\ninterface=\"{SIM_LINK}\"\n"),
        1,
    );
    let third = subnet_text(3, cfg.pool_size, "2001:db8:a000::", pd_len);
    let section = |rel: usize, primary: bool, port: u16| {
        let subnets = m_to_1_subnets(rel, mixed);
        let role = if primary {
            format!("role=\"primary\"\npartner=\"[::1]:{port}\"\n")
        } else {
            format!("role=\"secondary\"\nlisten=\"[::1]:{port}\"\n")
        };
        let mclt = [cfg.mclt_secs, m.second_mclt_secs][rel];
        let auto = cfg
            .auto_partner_down_secs
            .map_or(String::new(), |s| format!("auto_partner_down_secs={s}\n"));
        format!(
            "[[failover]]\n{role}relationship=\"{}\"\nsubnets={subnets:?}\nmclt_secs={mclt}\n\
             skew_max_secs={}\nkeepalive_secs={}\nstartup_secs=5\nmax_unacked=64\n{auto}\
             partner_name=\"partner.sim\"\nca=\"ca.pem\"\ncert=\"me.pem\"\nkey=\"me.key\"\n",
            M_TO_1_NAMES[rel], cfg.modes.skew_max_secs, cfg.keepalive_secs
        )
    };
    let (hub_first, hub_second) = (m.hub_primary_in_first, m.hub_primary_in_second);
    let hub = if m.second_listed_first {
        format!(
            "{head}{third}{first}{}{}",
            section(1, hub_second, 648),
            section(0, hub_first, 647)
        )
    } else {
        format!(
            "{head}{first}{third}{}{}",
            section(0, hub_first, 647),
            section(1, hub_second, 648)
        )
    };
    vec![
        format!("{head}{first}{}", section(0, !hub_first, 647)),
        hub,
        format!("{head}{third}{}", section(1, !hub_second, 648)),
    ]
}

/// Runs one seed to the end.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let configs = sim_config_texts(cfg)
        .iter()
        .map(|t| Arc::new(config::parse("<sim>", t).expect("the simulator's config is valid")))
        .collect();
    let mut w = World::new(seed, cfg, configs);
    for n in 0..w.slots.len() {
        w.start_node(n);
    }
    w.add_clients();
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
