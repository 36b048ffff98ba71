//! Simulated clients and the per-thread driver that runs them through one phase.
//!
//! Each thread owns a slice of the clients and one UDP socket. A phase (acquire, renew, rebind,
//! release) starts one exchange per client, paced to the target rate, with at most `window`
//! exchanges outstanding per thread. Lost messages are retransmitted as RFC 8415 §15 describes
//! (timeouts doubling with ±10 % jitter), bounded by `max_retries`, so loss shows up as latency
//! and finally as a timeout, never as silence.
//!
//! The clients are `tandem_client`'s, in driven mode: they build and validate the messages and
//! run each exchange's retransmission; this module owns the socket, the pacing, the clock, the
//! counters and the checks of what they are granted.
//!
//! With several servers every message goes to each of them (as a relay agent configured with
//! two server addresses forwards it to both); the first usable answer moves the exchange on and
//! later copies are counted as duplicates and ignored.
//!
//! Across a failover the clients do what RFC 8415 clients do. Request, Renew and Release carry
//! the Server Identifier of the server whose Advertise or granting Reply the client took last
//! (`tandem_client` keeps it; this module never sets one), so a server that is not the one named
//! ignores them. A Renew that gets no answer goes on as a Rebind, to any server, within the same
//! exchange (§18.2.4, §18.2.5): when the client's T2 comes while the Renew is outstanding, or
//! when the Renew's retransmissions (`max_retries`) are used up before T2, whichever is first,
//! as long as the client's leases have not expired (a Renew sent after T2 has passed gets its
//! first timeout). The server that answers the Rebind is the one the client's next Renew or
//! Release names. Such exchanges are counted ([`PhaseStats::renew_fell_back_to_rebind`]); when
//! the Rebind is answered the exchange completes (timed from the Renew), and the client keeps
//! its lease and takes part in the later phases.

use crate::check::{Pools, Registry};
use crate::net::Net;
use crate::stats::{PhaseStats, Timeline};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tandem_client::{Ask, AtT1, Config, Event, Exchange, Mode, Outbox, Retransmit, Via};
pub use tandem_client::{Client, Phase as ClientPhase};
use tandem_core::wire::{self, Message};

/// Most datagrams read in one recvmmsg before the driver looks at its timers again.
pub const RECV_BURST_MAX: usize = 64;
/// Receive slot size (largest datagram read).
const DATAGRAM_SLOT: usize = 4096;
/// IAID used for the IA_NA of every simulated client.
pub const IAID_NA: u32 = 1;
/// IAID used for the IA_PD of every simulated client.
pub const IAID_PD: u32 = 2;
/// Most servers one run sends to (each message is sent to all of them).
pub const SERVERS_MAX: usize = 8;

/// The phases a run goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Solicit → Advertise → Request → Reply (or Solicit → Reply with Rapid Commit).
    Acquire,
    /// Renew → Reply, to the server that answered last; unanswered by T2 or after its
    /// retransmissions, Rebind → Reply from any server (see the module documentation).
    Renew,
    /// Rebind → Reply, to any server.
    Rebind,
    /// Release → Reply.
    Release,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Acquire => "acquire",
            Phase::Renew => "renew",
            Phase::Rebind => "rebind",
            Phase::Release => "release",
        }
    }
}

/// What the simulated clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// IA_NA only.
    Address,
    /// IA_PD only.
    Prefix,
    /// IA_NA and IA_PD.
    Both,
}

impl Want {
    fn na(self) -> bool {
        matches!(self, Want::Address | Want::Both)
    }
    fn pd(self) -> bool {
        matches!(self, Want::Prefix | Want::Both)
    }
}

/// How messages reach the servers. Every message goes to each address listed.
#[derive(Debug, Clone)]
pub enum Route {
    /// Straight to these addresses (unicast, or ff02::1:2 with a scope id).
    Direct(Vec<SocketAddrV6>),
    /// As a relay agent: Relay-forw with this link-address, Interface-Id and Relay Source Port,
    /// to each of these server addresses.
    Relay {
        /// Server (or upstream relay) addresses.
        servers: Vec<SocketAddrV6>,
        /// link-address put in the Relay-forw.
        link: Ipv6Addr,
    },
}

impl Route {
    pub fn dests(&self) -> &[SocketAddrV6] {
        match self {
            Route::Direct(a) => a,
            Route::Relay { servers, .. } => servers,
        }
    }
}

/// Settings shared by every thread.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to send.
    pub route: Route,
    /// IA types asked for.
    pub want: Want,
    /// Ask for Rapid Commit in Solicit.
    pub rapid_commit: bool,
    /// Ask for DNS servers and the domain search list in every message (ORO 23, 24).
    pub ask_dns: bool,
    /// Relaying: add a Remote-ID per client (enterprise [`LINE_ENTERPRISE`], `line-N`).
    pub line_remote_ids: bool,
    /// Initial retransmission timeout.
    pub initial_rt: Duration,
    /// Retransmissions before an exchange counts as a timeout.
    pub max_retries: u32,
    /// Exchanges outstanding per thread at most.
    pub window: usize,
    /// Target exchanges per second for this thread (0 = as fast as the window allows).
    pub rate_per_thread: f64,
    /// A phase ends after this long even if exchanges remain.
    pub phase_time_max: Duration,
    /// Seed that makes DUIDs differ between runs.
    pub seed: u32,
}

/// The enterprise number of the Remote-IDs `--line-remote-ids` adds.
pub const LINE_ENTERPRISE: u32 = 9;

/// Writes the Remote-ID option data of client `id`'s line into `out`: [`LINE_ENTERPRISE`] and
/// the text `line-<id>`; returns its length.
pub fn line_remote_id(id: u32, out: &mut [u8; 24]) -> usize {
    use std::io::Write as _;
    out[..4].copy_from_slice(&LINE_ENTERPRISE.to_be_bytes());
    let mut w = &mut out[4..];
    let room = w.len();
    let _ = write!(w, "line-{id}");
    4 + room - w.len()
}

/// How a run's clients behave: driven by the phases, asking for what `settings` says, with the
/// run's retransmission settings (±10 % jitter, RFC 8415 §15) and DUIDs tagged by its seed.
pub fn new_client(id: u32, settings: &Settings) -> Client {
    let ask = Ask {
        na: settings.want.na().then_some(IAID_NA),
        pd: settings.want.pd().then_some(IAID_PD),
        pd_len: None,
        rapid_commit: settings.rapid_commit,
        dns: settings.ask_dns,
    };
    let retransmit = Retransmit {
        initial_ms: settings.initial_rt.as_millis().max(1) as u64,
        max_rt_ms: u64::MAX,
        max_retries: settings.max_retries,
        jitter_permille: 100,
    };
    let cfg = Config {
        ask,
        retransmit,
        mode: Mode::Driven,
    };
    Client::new(id, (settings.seed & 0xff) as u8, cfg, 0)
}

/// A thread's clients, socket and counters.
pub struct Driver<'r> {
    net: Net,
    /// The clients this thread simulates, sorted by id.
    pub clients: Vec<Client>,
    /// When each client's current exchange began (latency is measured on this clock, finer
    /// than the clients' milliseconds).
    begun: Vec<Instant>,
    settings: Settings,
    registry: &'r Registry,
    pools: &'r Pools,
    progress: &'r AtomicU64,
    /// Clients by the transaction id of their message in flight; at most one entry per client.
    by_xid: HashMap<u32, usize>,
    /// Retransmission timers (client milliseconds, client): one entry per message sent, and
    /// one at a Renew's T2 when that comes before its next retransmission, popped when due
    /// (stale ones, of messages answered or resent, are then skipped), so it holds at most the
    /// messages sent within the longest timeout, each by one of `window` exchanges.
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    next_xid: u32,
    /// Where the clients write their messages (framed for the route).
    outbox: Outbox,
    /// Datagrams of the last recvmmsg, RECV_BURST_MAX slots of DATAGRAM_SLOT bytes.
    batch: Vec<u8>,
    got: Vec<(usize, std::net::SocketAddrV6)>,
    /// Messages waiting for the next sendmmsg: their bytes back to back, and where each is.
    out_arena: Vec<u8>,
    out_ranges: Vec<std::ops::Range<usize>>,
    /// The clients' clock: their milliseconds count from here.
    epoch: Instant,
    /// When the current phase started (the timeline's zero).
    phase_start: Instant,
}

impl<'r> Driver<'r> {
    /// A driver for `clients` that sends through `net`.
    pub fn new(
        net: Net,
        clients: Vec<Client>,
        settings: Settings,
        registry: &'r Registry,
        pools: &'r Pools,
        progress: &'r AtomicU64,
        thread: u32,
    ) -> Self {
        let via = match &settings.route {
            Route::Direct(_) => Via::Direct,
            Route::Relay { link, .. } => {
                let port = net.local_port();
                Via::Relay {
                    link: *link,
                    interface_id: b"tandem-gen",
                    source_port: (port != 547).then_some(port),
                }
            }
        };
        let now = Instant::now();
        Driver {
            net,
            begun: vec![now; clients.len()],
            clients,
            settings,
            registry,
            pools,
            progress,
            by_xid: HashMap::new(),
            timers: BinaryHeap::new(),
            next_xid: thread << 20,
            outbox: Outbox::new(via),
            batch: vec![0u8; RECV_BURST_MAX * DATAGRAM_SLOT],
            got: Vec::with_capacity(RECV_BURST_MAX),
            out_arena: Vec::with_capacity(RECV_BURST_MAX * 256),
            out_ranges: Vec::with_capacity(RECV_BURST_MAX),
            epoch: now,
            phase_start: now,
        }
    }

    /// `t` on the clients' clock.
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The transaction id the next message would use (taken by [`Driver::sent`]).
    fn peek_xid(&self) -> u32 {
        self.next_xid.wrapping_add(1) & 0x00ff_ffff
    }

    /// Runs `phase` for every client that can take part; returns what it measured.
    pub fn run(&mut self, phase: Phase) -> PhaseStats {
        let mut st = PhaseStats::default();
        let eligible: Vec<usize> = (0..self.clients.len())
            .filter(|&i| match phase {
                Phase::Acquire => matches!(
                    self.clients[i].phase(),
                    ClientPhase::Idle | ClientPhase::Failed
                ),
                _ => self.clients[i].bound(),
            })
            .collect();
        let start = Instant::now();
        self.phase_start = start;
        let deadline = start + self.settings.phase_time_max;
        st.timeline =
            Timeline::with_capacity_ms(self.settings.phase_time_max.as_millis() as u64 + 1000);
        // Reply-gap timeline: the millisecond of the previous pass and whether exchanges were
        // outstanding when it ended (they stayed so until this pass looked again).
        let (mut last_ms, mut last_busy) = (0u64, false);
        let interval = (self.settings.rate_per_thread > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.settings.rate_per_thread));
        let mut next = 0usize;
        let mut outstanding = 0usize;
        self.by_xid.clear();
        self.timers.clear();
        loop {
            let now = Instant::now();
            let now_ms = now.duration_since(start).as_millis() as u64;
            if last_busy {
                st.timeline.busy(last_ms, now_ms);
            }
            if now >= deadline {
                // What is still outstanding ran out of time.
                st.timeouts += outstanding as u64;
                for &i in self.by_xid.values() {
                    self.clients[i].abandon();
                }
                self.by_xid.clear();
                break;
            }
            // Start exchanges that are due.
            while next < eligible.len() && outstanding < self.settings.window {
                if let Some(iv) = interval
                    && start + iv.mul_f64(next as f64) > now
                {
                    break;
                }
                let i = eligible[next];
                next += 1;
                outstanding += 1;
                st.started += 1;
                self.begin(i, phase, now);
            }
            if next == eligible.len() && outstanding == 0 {
                break;
            }
            // Retransmit or give up what timed out.
            let clock = self.ms(now);
            while let Some(Reverse((t, i))) = self.timers.peek().copied() {
                if t > clock {
                    break;
                }
                self.timers.pop();
                // RFC 8415 §18.2.4: a Renew is retransmitted until T2 at most; then the client
                // rebinds (this entry may be the one sent() queued at T2, before the next
                // retransmission is due).
                let rebind_at_t2 = self.clients[i].phase() == ClientPhase::Renewing
                    && clock >= self.clients[i].t2_ms()
                    && self.may_rebind(i, clock);
                if !rebind_at_t2 && self.clients[i].timer_ms() > clock {
                    continue; // answered or resent meanwhile
                }
                let old = self.clients[i].xid();
                if rebind_at_t2 {
                    self.rebind_after_renew(i, clock, old, &mut st);
                    continue;
                }
                let xid = self.peek_xid();
                let step = self.clients[i].on_timer(clock, xid, AtT1::Renew, &mut self.outbox);
                match step.event {
                    Event::Retransmitted => st.retransmits += 1,
                    // RFC 8415 §18.2.2: a Request nobody answers sends the client back to
                    // Solicit (its server may be gone; the other one will not take a Request
                    // naming it). Once per exchange, within the same time budget.
                    Event::Restarted => st.restarts += 1,
                    // §18.2.5: a Renew nobody answers goes on as a Rebind to any server (its
                    // server may be gone; another will not take a Renew naming it). Within the
                    // same exchange and time budget.
                    Event::TimedOut(Exchange::Renew) if self.may_rebind(i, clock) => {
                        self.rebind_after_renew(i, clock, old, &mut st);
                    }
                    Event::TimedOut(_) => {
                        self.by_xid.remove(&old);
                        st.timeouts += 1;
                        outstanding -= 1;
                    }
                    _ => {}
                }
                if step.send.is_some() {
                    self.sent(i, old, clock);
                }
            }
            // Send what is queued (one sendmmsg), then read what arrived (one recvmmsg).
            self.flush();
            let n = self.net.recv(&mut self.batch, DATAGRAM_SLOT, &mut self.got);
            for k in 0..n {
                if let Some(done) = self.on_reply(k, &mut st)
                    && done
                {
                    outstanding -= 1;
                }
            }
            last_ms = now_ms;
            last_busy = outstanding > 0;
        }
        st.elapsed = start.elapsed();
        st
    }

    /// Between phases, until `all_done` (at most the phase time plus `grace`): on AF_XDP,
    /// keeps receiving on this thread's queue so replies that landed there reach the threads
    /// still running their phase (this thread's own are late by now and dropped). Returns at
    /// once on UDP, where each thread has its socket.
    pub fn pass_on_replies_until(&mut self, all_done: impl Fn() -> bool, grace: Duration) {
        if !self.net.is_xdp() {
            return;
        }
        let end = Instant::now() + self.settings.phase_time_max + grace;
        while !all_done() && Instant::now() < end {
            let _ = self.net.recv(&mut self.batch, DATAGRAM_SLOT, &mut self.got);
        }
    }

    /// Sends every queued message to every destination (on UDP one sendmmsg; what it does not
    /// take is tried one by one; a failed send is a lost packet, which the retransmission timer
    /// covers).
    fn flush(&mut self) {
        if self.out_ranges.is_empty() {
            return;
        }
        let dests = self.settings.route.dests();
        let arena = &self.out_arena;
        let all = || {
            self.out_ranges
                .iter()
                .flat_map(move |r| dests.iter().map(move |d| (&arena[r.clone()], *d)))
        };
        self.net.send(all());
        self.out_arena.clear();
        self.out_ranges.clear();
    }

    fn begin(&mut self, i: usize, phase: Phase, now: Instant) {
        self.begun[i] = now;
        let ex = match phase {
            Phase::Acquire => Exchange::Solicit,
            Phase::Renew => Exchange::Renew,
            Phase::Rebind => Exchange::Rebind,
            Phase::Release => Exchange::Release,
        };
        let old = self.clients[i].xid();
        let (clock, xid) = (self.ms(now), self.peek_xid());
        let _ = self.clients[i].start(ex, clock, xid, &mut self.outbox);
        self.sent(i, old, clock);
    }

    /// Whether client `i` can go on with a Rebind at `clock`: it holds leases that have not
    /// expired (else a real client would start over with Solicit; here the exchange fails).
    fn may_rebind(&self, i: usize, clock: u64) -> bool {
        let c = &self.clients[i];
        [c.address(), c.prefix()]
            .into_iter()
            .flatten()
            .map(|l| l.expires_ms)
            .min()
            .is_some_and(|e| clock < e)
    }

    /// Client `i`'s Renew (transaction `old`) went unanswered until T2 or through its
    /// retransmissions: the exchange goes on as a Rebind to any server, timed from the Renew.
    fn rebind_after_renew(&mut self, i: usize, clock: u64, old: u32, st: &mut PhaseStats) {
        st.renew_fell_back_to_rebind += 1;
        let xid = self.peek_xid();
        let _ = self.clients[i].start(Exchange::Rebind, clock, xid, &mut self.outbox);
        self.sent(i, old, clock);
    }

    /// Queues the message client `i` just wrote (every message goes to every destination, so
    /// where it is for does not matter here), takes its transaction id in place of `old`, and
    /// sets its timer; for a Renew whose T2 comes after `clock` (now) and before that timer, a
    /// second one at T2 (so at most two entries per exchange are ahead of the clock). A Renew
    /// sent once T2 has passed (its phase began late) gets its first timeout before it rebinds.
    fn sent(&mut self, i: usize, old: u32, clock: u64) {
        self.next_xid = self.peek_xid();
        self.by_xid.remove(&old);
        let start = self.out_arena.len();
        self.out_arena.extend_from_slice(self.outbox.datagram());
        if self.settings.line_remote_ids && matches!(self.settings.route, Route::Relay { .. }) {
            // The Relay-forw's last option: the client's line, as an access node adds it.
            let mut id = [0u8; 24];
            let n = line_remote_id(self.clients[i].id(), &mut id);
            self.out_arena
                .extend_from_slice(&tandem_core::wire::opt::REMOTE_ID.to_be_bytes());
            self.out_arena.extend_from_slice(&(n as u16).to_be_bytes());
            self.out_arena.extend_from_slice(&id[..n]);
        }
        self.out_ranges.push(start..self.out_arena.len());
        let c = &self.clients[i];
        self.by_xid.insert(c.xid(), i);
        self.timers.push(Reverse((c.timer_ms(), i)));
        if c.phase() == ClientPhase::Renewing && (clock + 1..c.timer_ms()).contains(&c.t2_ms()) {
            self.timers.push(Reverse((c.t2_ms(), i)));
        }
    }

    /// Handles datagram `k` of the last batch. Returns Some(true) when an exchange finished,
    /// Some(false) when it moved on (Advertise → Request), None when it matched nothing.
    fn on_reply(&mut self, k: usize, st: &mut PhaseStats) -> Option<bool> {
        // The batch leaves self for the call so that the parsed message (which borrows it) and
        // &mut self can live side by side.
        let batch = std::mem::take(&mut self.batch);
        let len = self.got[k].0;
        let r = self.on_datagram(&batch[k * DATAGRAM_SLOT..k * DATAGRAM_SLOT + len], st);
        self.batch = batch;
        r
    }

    fn on_datagram(&mut self, bytes: &[u8], st: &mut PhaseStats) -> Option<bool> {
        let relayed = match wire::unwrap_relay_replies(bytes) {
            Ok(r) => r,
            Err(_) => {
                st.bad_replies += 1;
                return None;
            }
        };
        let Ok(m) = Message::parse(relayed.inner()) else {
            st.bad_replies += 1;
            return None;
        };
        let xid = m.transaction_id();
        let Some(&i) = self.by_xid.get(&xid) else {
            // Not the message a client waits on: an answer to one already answered (another
            // server's copy), or to one retransmitted since or given up.
            match self.client_of(m.client_id()) {
                Some(i) if self.clients[i].answered(xid) => st.duplicate_replies += 1,
                _ => st.late_replies += 1,
            }
            return None;
        };
        self.on_answer(i, &m, st)
    }

    /// The index of the client with this DUID, if it is one of this thread's.
    fn client_of(&self, duid: Option<&[u8]>) -> Option<usize> {
        let d = duid?;
        let first = self.clients.first()?.duid();
        if d.len() != first.len() || d[..6] != first[..6] {
            return None;
        }
        let id = u32::from_be_bytes([d[6], d[7], d[8], d[9]]);
        self.clients.binary_search_by_key(&id, |c| c.id()).ok()
    }

    /// Handles the answer `m` to client `i`'s current message; as on_reply. The client
    /// validates it; this checks what it grants against the pools and the other clients.
    fn on_answer(&mut self, i: usize, m: &Message, st: &mut PhaseStats) -> Option<bool> {
        let now = Instant::now();
        let (clock, xid) = (self.ms(now), self.peek_xid());
        let c = &mut self.clients[i];
        let ex = c.phase().exchange();
        let old = c.xid();
        let (had_na, had_pd) = (
            c.address().map(|l| l.addr),
            c.prefix().map(|l| (l.addr, l.len)),
        );
        let step = c.on_reply(clock, m, xid, &mut self.outbox);
        let (na, pd) = (
            c.address().map(|l| l.addr),
            c.prefix().map(|l| (l.addr, l.len)),
        );
        let id = c.id();
        match step.event {
            Event::Advertised => {
                self.sent(i, old, clock);
                Some(false)
            }
            Event::Refused(code) => {
                self.by_xid.remove(&old);
                *st.naks.entry(code).or_default() += 1;
                Some(true)
            }
            Event::Bound => {
                match ex {
                    Some(Exchange::Renew | Exchange::Rebind) => {
                        let want = self.settings.want;
                        if (want.na() && na != had_na) || (want.pd() && pd != had_pd) {
                            let name = ex.map_or("", Exchange::name);
                            self.registry.violation(format!(
                                "{name} of client {id} changed its lease: had {had_na:?} {had_pd:?}, got {na:?} {pd:?}"
                            ));
                        }
                    }
                    _ => {
                        if let Some(a) = na {
                            if !self.pools.address_ok(a) {
                                self.registry.violation(format!(
                                    "address {a} for client {id} is outside every configured pool"
                                ));
                            }
                            self.registry.claim(0, a, id);
                        }
                        if let Some((p, l)) = pd {
                            if !self.pools.prefix_ok(p, l) {
                                self.registry.violation(format!("prefix {p}/{l} for client {id} is not one of the configured pools' prefixes"));
                            }
                            self.registry.claim(1, p, id);
                        }
                    }
                }
                self.finish_ok(i, old, now, st);
                Some(true)
            }
            Event::Released => {
                if let Some(a) = had_na {
                    self.registry.release(0, a, id);
                }
                if let Some((p, _)) = had_pd {
                    self.registry.release(1, p, id);
                }
                self.finish_ok(i, old, now, st);
                Some(true)
            }
            _ => {
                st.bad_replies += 1;
                None
            }
        }
    }

    fn finish_ok(&mut self, i: usize, xid: u32, now: Instant, st: &mut PhaseStats) {
        self.by_xid.remove(&xid);
        st.ok += 1;
        self.progress.fetch_add(1, Ordering::Relaxed);
        st.record(now.duration_since(self.begun[i]));
        st.timeline
            .done(now.duration_since(self.phase_start).as_millis() as u64);
    }
}
