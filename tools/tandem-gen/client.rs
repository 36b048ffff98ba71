//! Simulated clients and the per-thread driver that runs them through one phase.
//!
//! Each thread owns a slice of the clients and one UDP socket. A phase (acquire, renew, rebind,
//! release) starts one exchange per client, paced to the target rate, with at most `window`
//! exchanges outstanding per thread. Lost messages are retransmitted as RFC 8415 §15 describes
//! (timeouts doubling with ±10 % jitter), bounded by `max_retries`, so loss shows up as latency
//! and finally as a timeout, never as silence.
//!
//! With several servers every message goes to each of them (as a relay agent configured with
//! two server addresses forwards it to both); the first usable answer moves the exchange on and
//! later copies are counted as duplicates and ignored.

use crate::check::{Pools, Registry};
use crate::stats::{PhaseStats, Timeline};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tandem_core::wire::{self, Message, MessageType, MessageWriter, StatusCode};

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
/// Transaction ids are 24 bits, so this never names a real one.
const NO_XID: u32 = u32::MAX;

/// The phases a run goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Solicit → Advertise → Request → Reply (or Solicit → Reply with Rapid Commit).
    Acquire,
    /// Renew → Reply, to the server that granted the lease.
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
    fn dests(&self) -> &[SocketAddrV6] {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Soliciting,
    Requesting,
    Bound,
    Waiting(Phase),
    Released,
    Failed,
}

/// One simulated client.
pub struct Client {
    /// Client number (unique across threads).
    pub id: u32,
    /// Its DUID (DUID-LL, type 3, from the seed and number).
    pub duid: [u8; 10],
    state: State,
    xid: u32,
    attempt: u32,
    rt: Duration,
    started: Instant,
    /// This exchange already went back from Request to Solicit once.
    restarted: bool,
    server_id: Vec<u8>,
    /// The last two transaction ids that got an answer, newest first: a later answer to one of
    /// them is a duplicate (another server's copy), not a late answer.
    answered: [u32; 2],
    /// Address held, if any.
    pub na: Option<Ipv6Addr>,
    /// Prefix held, if any.
    pub pd: Option<(Ipv6Addr, u8)>,
}

impl Client {
    /// A fresh client.
    pub fn new(id: u32, seed: u32) -> Client {
        let mut duid = [0u8; 10];
        duid[..4].copy_from_slice(&[0, 3, 0, 1]); // DUID-LL, hardware type Ethernet
        duid[4] = 0x02; // locally administered MAC
        duid[5] = (seed & 0xff) as u8;
        duid[6..].copy_from_slice(&id.to_be_bytes());
        Client {
            id,
            duid,
            state: State::Idle,
            xid: 0,
            attempt: 0,
            rt: Duration::ZERO,
            started: Instant::now(),
            restarted: false,
            server_id: Vec::new(),
            answered: [NO_XID; 2],
            na: None,
            pd: None,
        }
    }

    /// Whether it holds a lease.
    pub fn bound(&self) -> bool {
        self.state == State::Bound
    }
}

/// A thread's clients, socket and counters.
pub struct Driver<'r> {
    sock: UdpSocket,
    /// The clients this thread simulates.
    pub clients: Vec<Client>,
    settings: Settings,
    registry: &'r Registry,
    pools: &'r Pools,
    progress: &'r AtomicU64,
    by_xid: HashMap<u32, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    next_xid: u32,
    buf: Vec<u8>,
    msg: Vec<u8>,
    /// Datagrams of the last recvmmsg, RECV_BURST_MAX slots of DATAGRAM_SLOT bytes.
    batch: Vec<u8>,
    got: Vec<(usize, std::net::SocketAddrV6)>,
    /// Messages waiting for the next sendmmsg: their bytes back to back, and where each is.
    out_arena: Vec<u8>,
    out_ranges: Vec<std::ops::Range<usize>>,
    relay_scratch: Vec<u8>,
    rng: u64,
    /// When the current phase started (the timeline's zero).
    phase_start: Instant,
}

impl<'r> Driver<'r> {
    /// A driver for `clients` that sends from `sock`.
    pub fn new(
        sock: UdpSocket,
        clients: Vec<Client>,
        settings: Settings,
        registry: &'r Registry,
        pools: &'r Pools,
        progress: &'r AtomicU64,
        thread: u32,
    ) -> Self {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(1)));
        Driver {
            sock,
            clients,
            settings,
            registry,
            pools,
            progress,
            by_xid: HashMap::new(),
            timers: BinaryHeap::new(),
            next_xid: thread << 20,
            buf: vec![0u8; DATAGRAM_SLOT],
            msg: Vec::with_capacity(512),
            batch: vec![0u8; RECV_BURST_MAX * DATAGRAM_SLOT],
            got: Vec::with_capacity(RECV_BURST_MAX),
            out_arena: Vec::with_capacity(RECV_BURST_MAX * 256),
            out_ranges: Vec::with_capacity(RECV_BURST_MAX),
            relay_scratch: Vec::with_capacity(512),
            rng: 0x9e37_79b9_7f4a_7c15 ^ ((thread as u64) << 32 | 1),
            phase_start: Instant::now(),
        }
    }

    fn rand_unit(&mut self) -> f64 {
        // xorshift64*: jitter only, needs no quality beyond "not synchronised".
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs `phase` for every client that can take part; returns what it measured.
    pub fn run(&mut self, phase: Phase) -> PhaseStats {
        let mut st = PhaseStats::default();
        let eligible: Vec<usize> = (0..self.clients.len())
            .filter(|&i| match phase {
                Phase::Acquire => matches!(
                    self.clients[i].state,
                    State::Idle | State::Released | State::Failed
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
                    self.clients[i].state = State::Failed;
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
            while let Some(Reverse((t, i, attempt))) = self.timers.peek().copied() {
                if t > now {
                    break;
                }
                self.timers.pop();
                let c = &self.clients[i];
                if c.attempt != attempt
                    || !matches!(
                        c.state,
                        State::Soliciting | State::Requesting | State::Waiting(_)
                    )
                {
                    continue; // answered meanwhile
                }
                if attempt >= self.settings.max_retries
                    && c.state == State::Requesting
                    && !c.restarted
                {
                    // RFC 8415 §18.2.2: a Request nobody answers sends the client back to
                    // Solicit (its server may be gone; the other one will not take a Request
                    // naming it). Once per exchange, within the same time budget.
                    st.restarts += 1;
                    let c = &mut self.clients[i];
                    c.restarted = true;
                    c.state = State::Soliciting;
                    c.attempt = 0;
                    c.rt = self.settings.initial_rt;
                    self.send(i, now);
                    continue;
                }
                if attempt >= self.settings.max_retries {
                    self.by_xid.remove(&c.xid);
                    self.clients[i].state = State::Failed;
                    st.timeouts += 1;
                    outstanding -= 1;
                    continue;
                }
                st.retransmits += 1;
                let jitter = 1.0 + (self.rand_unit() * 0.2 - 0.1);
                let c = &mut self.clients[i];
                c.attempt += 1;
                c.rt = c.rt.mul_f64(2.0 * jitter);
                self.send(i, now);
            }
            // Send what is queued (one sendmmsg), then read what arrived (one recvmmsg).
            self.flush();
            let n = tandem_server::edge::udp::recv_many(
                &self.sock,
                &mut self.batch,
                DATAGRAM_SLOT,
                &mut self.got,
            )
            .unwrap_or(0);
            for k in 0..n {
                let len = self.got[k].0;
                self.buf[..len]
                    .copy_from_slice(&self.batch[k * DATAGRAM_SLOT..k * DATAGRAM_SLOT + len]);
                if let Some(done) = self.on_reply(len, &mut st)
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

    /// Sends every queued message: one sendmmsg; what it does not take is tried one by one (a
    /// failed send is a lost packet, which the retransmission timer covers).
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
        let sent = tandem_server::edge::udp::send_many(&self.sock, all());
        for (b, d) in all().skip(sent) {
            let _ = self.sock.send_to(b, d);
        }
        self.out_arena.clear();
        self.out_ranges.clear();
    }

    fn begin(&mut self, i: usize, phase: Phase, now: Instant) {
        let c = &mut self.clients[i];
        c.started = now;
        c.restarted = false;
        c.attempt = 0;
        c.rt = self.settings.initial_rt;
        c.state = match phase {
            Phase::Acquire => State::Soliciting,
            p => State::Waiting(p),
        };
        self.send(i, now);
    }

    /// Sends (or resends, with a new transaction id) the client's current message.
    fn send(&mut self, i: usize, now: Instant) {
        let old = self.clients[i].xid;
        self.by_xid.remove(&old);
        self.next_xid = self.next_xid.wrapping_add(1) & 0x00ff_ffff;
        let xid = self.next_xid;
        let want = self.settings.want;
        let rapid = self.settings.rapid_commit;
        let c = &mut self.clients[i];
        c.xid = xid;
        let elapsed_cs = (now.duration_since(c.started).as_millis() / 10).min(0xffff) as u16;
        let ty = match c.state {
            State::Soliciting => MessageType::Solicit,
            State::Requesting => MessageType::Request,
            State::Waiting(Phase::Renew) => MessageType::Renew,
            State::Waiting(Phase::Rebind) => MessageType::Rebind,
            State::Waiting(Phase::Release) => MessageType::Release,
            _ => return,
        };
        let mut inner = std::mem::take(&mut self.msg);
        {
            let mut w = MessageWriter::new(&mut inner, ty, xid);
            w.client_id(&c.duid);
            if matches!(
                ty,
                MessageType::Request | MessageType::Renew | MessageType::Release
            ) {
                w.server_id(&c.server_id);
            }
            w.elapsed_time(elapsed_cs);
            if ty == MessageType::Solicit && rapid {
                w.rapid_commit();
            }
            if want.na() {
                let na = c.na;
                w.ia_na(IAID_NA, 0, 0, |o| {
                    if let Some(a) = na {
                        o.ia_addr(a, 0, 0, |_| {});
                    }
                });
            }
            if want.pd() {
                let pd = c.pd;
                w.ia_pd(IAID_PD, 0, 0, |o| {
                    if let Some((p, l)) = pd {
                        o.ia_prefix(p, l, 0, 0, |_| {});
                    }
                });
            }
        }
        let start = self.out_arena.len();
        match &self.settings.route {
            Route::Direct(_) => self.out_arena.extend_from_slice(&inner),
            Route::Relay { link, .. } => {
                let peer = Ipv6Addr::from(
                    0xfe80_0000_0000_0000_0000_0000_0000_0000u128
                        | c.id as u128
                        | 0x0200_0000_0000u128,
                );
                let port = self.sock.local_addr().map(|a| a.port()).unwrap_or(0);
                wire::wrap_relay_forw(
                    0,
                    *link,
                    peer,
                    Some(b"tandem-gen"),
                    (port != 547).then_some(port),
                    &inner,
                    &mut self.relay_scratch,
                );
                self.out_arena.extend_from_slice(&self.relay_scratch);
            }
        }
        self.out_ranges.push(start..self.out_arena.len());
        self.msg = inner;
        self.by_xid.insert(xid, i);
        let c = &self.clients[i];
        self.timers.push(Reverse((now + c.rt, i, c.attempt)));
    }

    /// Handles a datagram of `n` bytes in `buf`. Returns Some(true) when an exchange finished,
    /// Some(false) when it moved on (Advertise → Request), None when it matched nothing.
    fn on_reply(&mut self, n: usize, st: &mut PhaseStats) -> Option<bool> {
        // The datagram leaves self.buf for the call so that the parsed message (which borrows
        // it) and &mut self can live side by side.
        let buf = std::mem::take(&mut self.buf);
        let r = self.on_datagram(&buf[..n], st);
        self.buf = buf;
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
                Some(i) if self.clients[i].answered.contains(&xid) => st.duplicate_replies += 1,
                _ => st.late_replies += 1,
            }
            return None;
        };
        if m.client_id() != Some(&self.clients[i].duid[..]) {
            st.bad_replies += 1;
            return None;
        }
        let r = self.on_answer(i, &m, st);
        if r.is_some() {
            let c = &mut self.clients[i];
            c.answered = [xid, c.answered[0]];
        }
        r
    }

    /// The index of the client with this DUID, if it is one of this thread's.
    fn client_of(&self, duid: Option<&[u8]>) -> Option<usize> {
        let d = duid?;
        let first = self.clients.first()?;
        if d.len() != first.duid.len() || d[..6] != first.duid[..6] {
            return None;
        }
        let id = u32::from_be_bytes([d[6], d[7], d[8], d[9]]);
        self.clients.binary_search_by_key(&id, |c| c.id).ok()
    }

    /// Handles the answer `m` to client `i`'s current message; as on_reply.
    fn on_answer(&mut self, i: usize, m: &Message, st: &mut PhaseStats) -> Option<bool> {
        let now = Instant::now();
        let state = self.clients[i].state;
        let ty = m.msg_type();
        // Top-level failure status (UseMulticast, NoAddrsAvail in Advertise, ...).
        if let Some(s) = m.status()
            && s.code != StatusCode::Success as u16
        {
            self.finish_failed(i, s.code, st);
            return Some(true);
        }
        match (state, ty) {
            (State::Soliciting, MessageType::Advertise) => {
                let (na, pd, nak) = self.leases_in(m);
                if let Some(code) = nak {
                    self.finish_failed(i, code, st);
                    return Some(true);
                }
                let c = &mut self.clients[i];
                c.server_id = m.server_id().map(|s| s.to_vec()).unwrap_or_default();
                c.na = na.or(c.na);
                c.pd = pd.or(c.pd);
                c.state = State::Requesting;
                c.attempt = 0;
                c.rt = self.settings.initial_rt;
                self.send(i, now);
                Some(false)
            }
            (State::Soliciting, MessageType::Reply) | (State::Requesting, MessageType::Reply) => {
                if state == State::Soliciting && !m.rapid_commit() {
                    st.bad_replies += 1;
                    return None;
                }
                let (na, pd, nak) = self.leases_in(m);
                if let Some(code) = nak {
                    self.finish_failed(i, code, st);
                    return Some(true);
                }
                let id = self.clients[i].id;
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
                let c = &mut self.clients[i];
                if c.server_id.is_empty() {
                    c.server_id = m.server_id().map(|s| s.to_vec()).unwrap_or_default();
                }
                c.na = na;
                c.pd = pd;
                self.finish_ok(i, now, st);
                Some(true)
            }
            (State::Waiting(p @ (Phase::Renew | Phase::Rebind)), MessageType::Reply) => {
                let (na, pd, nak) = self.leases_in(m);
                if let Some(code) = nak {
                    self.finish_failed(i, code, st);
                    return Some(true);
                }
                let c = &self.clients[i];
                let changed = (self.settings.want.na() && na != c.na)
                    || (self.settings.want.pd() && pd != c.pd);
                if changed {
                    self.registry.violation(format!(
                        "{} of client {} changed its lease: had {:?} {:?}, got {:?} {:?}",
                        p.name(),
                        c.id,
                        c.na,
                        c.pd,
                        na,
                        pd
                    ));
                }
                self.finish_ok(i, now, st);
                Some(true)
            }
            (State::Waiting(Phase::Release), MessageType::Reply) => {
                let c = &mut self.clients[i];
                let id = c.id;
                if let Some(a) = c.na.take() {
                    self.registry.release(0, a, id);
                }
                if let Some((p, _)) = c.pd.take() {
                    self.registry.release(1, p, id);
                }
                self.finish_ok(i, now, st);
                self.clients[i].state = State::Released;
                Some(true)
            }
            _ => {
                st.bad_replies += 1;
                None
            }
        }
    }

    /// The address and prefix granted in a reply (non-zero valid lifetime), or the first failure
    /// status found in an IA.
    fn leases_in(&self, m: &Message) -> (Option<Ipv6Addr>, Option<(Ipv6Addr, u8)>, Option<u16>) {
        let mut na = None;
        let mut pd = None;
        let mut nak = None;
        for ia in m.ia_nas() {
            if let Some(s) = ia.status().filter(|s| s.code != 0) {
                nak = Some(s.code);
            }
            if let Some(a) = ia.addresses().find(|a| a.valid_secs > 0) {
                na = Some(a.addr);
            }
        }
        for ia in m.ia_pds() {
            if let Some(s) = ia.status().filter(|s| s.code != 0) {
                nak = Some(s.code);
            }
            if let Some(p) = ia.prefixes().find(|p| p.valid_secs > 0) {
                pd = Some((p.prefix, p.prefix_len));
            }
        }
        if self.settings.want.na() && na.is_none() && nak.is_none() {
            nak = Some(StatusCode::NoAddrsAvail as u16);
        }
        if self.settings.want.pd() && pd.is_none() && nak.is_none() {
            nak = Some(StatusCode::NoPrefixAvail as u16);
        }
        (na, pd, nak)
    }

    fn finish_ok(&mut self, i: usize, now: Instant, st: &mut PhaseStats) {
        let c = &mut self.clients[i];
        self.by_xid.remove(&c.xid);
        st.ok += 1;
        self.progress.fetch_add(1, Ordering::Relaxed);
        st.record(now.duration_since(c.started));
        st.timeline
            .done(now.duration_since(self.phase_start).as_millis() as u64);
        c.state = State::Bound;
    }

    fn finish_failed(&mut self, i: usize, code: u16, st: &mut PhaseStats) {
        let c = &mut self.clients[i];
        self.by_xid.remove(&c.xid);
        *st.naks.entry(code).or_default() += 1;
        c.state = if c.na.is_some() || c.pd.is_some() {
            State::Bound
        } else {
            State::Failed
        };
    }
}
