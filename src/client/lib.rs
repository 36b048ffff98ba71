//! A sans-IO DHCPv6 client (RFC 8415): one per simulated host, shared by the simulator and the
//! load generator.
//!
//! A [`Client`] builds its messages (Solicit with IA_NA and/or IA_PD and optionally Rapid
//! Commit, Request, Renew, Rebind, Release, Decline, Confirm), validates what comes back (transaction id, client
//! and server identifiers, status codes at the top and in each IA, lifetimes, T1/T2) and runs
//! the exchange state machine with bounded retransmission (timeouts doubling, optionally
//! jittered, capped, then given up; an unanswered Request goes back to Solicit once, RFC 8415
//! §18.2.2). It has no sockets, threads or clock: the caller passes the time in milliseconds
//! and a transaction id with every call, reads the datagram to send from an [`Outbox`], and
//! calls [`Client::on_timer`] when [`Client::timer_ms`] comes.
//!
//! Two ways to drive it ([`Mode`]):
//!
//! - [`Mode::Autonomous`] (the simulator): the client lives on its own, as a host would. It
//!   solicits when its start time comes, renews at T1 (or does what [`AtT1`] says), rebinds at T2,
//!   drops its leases when they expire, and starts over when an exchange fails or is refused.
//! - [`Mode::Driven`] (the generator): the caller starts each exchange with [`Client::start`];
//!   the client retransmits and reports how the exchange ended ([`Event::Bound`],
//!   [`Event::Refused`], [`Event::Released`], [`Event::TimedOut`]) and then waits. A failed
//!   exchange leaves what the client held in place for the caller to judge.
//!
//! Nothing here allocates per message: messages are written into the [`Outbox`]'s reused
//! buffers and the server identifier into a buffer the client keeps.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::net::Ipv6Addr;
use tandem_core::wire::{self, Message, MessageType, MessageWriter, StatusCode, opt};

/// A timer that never fires.
pub const NEVER: u64 = u64::MAX;
/// Length of the DUIDs clients use (DUID-LL: type, hardware type, six octets).
pub const DUID_LEN: usize = 10;
/// Longest Server Identifier accepted (RFC 8415 §11.1: a DUID is at most 130 octets with its
/// type); a reply naming a longer one is malformed.
pub const SERVER_ID_MAX: usize = 130;
/// Autonomous mode: first retransmission timeout, milliseconds (doubles each time).
pub const CLIENT_RT_MS: u64 = 1000;
/// Autonomous mode: the retransmission timeout never grows past this, milliseconds.
pub const CLIENT_RT_MAX_MS: u64 = 64_000;
/// Autonomous mode: retransmissions of one message before the client gives up on the exchange.
pub const CLIENT_RETRIES_MAX: u32 = 4;
/// Autonomous mode: after a Release is answered the client waits this many initial timeouts
/// before soliciting again.
pub const RELEASE_PAUSE_RTS: u64 = 5;
/// Largest Elapsed Time value, hundredths of a second (RFC 8415 §21.9).
pub const ELAPSED_MAX_CS: u64 = 0xffff;
/// Largest retransmission jitter, per mille (RFC 8415 §15 uses ±100).
pub const JITTER_PERMILLE_MAX: u16 = 500;
/// Buffer capacity an [`Outbox`] starts with, bytes (a client message with both IAs and a
/// relay header fits several times over).
pub const OUTBOX_CAPACITY: usize = 512;

/// What a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// IAID of the IA_NA, when it wants an address.
    pub na: Option<u32>,
    /// IAID of the IA_PD, when it wants a delegated prefix.
    pub pd: Option<u32>,
    /// Only delegated prefixes of this length are taken (any length when `None`).
    pub pd_len: Option<u8>,
    /// Asks for Rapid Commit in Solicit (a Reply with Rapid Commit then ends the exchange).
    pub rapid_commit: bool,
    /// Asks for DNS servers and the domain search list (ORO 23, 24), as a CE router does.
    pub dns: bool,
}

impl Ask {
    /// One address, in the IA_NA `iaid`.
    pub fn address(iaid: u32) -> Ask {
        Ask {
            na: Some(iaid),
            pd: None,
            pd_len: None,
            rapid_commit: false,
            dns: false,
        }
    }

    /// One delegated prefix (of `len` bits, when given), in the IA_PD `iaid`.
    pub fn prefix(iaid: u32, len: Option<u8>) -> Ask {
        Ask {
            na: None,
            pd: Some(iaid),
            pd_len: len,
            rapid_commit: false,
            dns: false,
        }
    }
}

/// Retransmission (RFC 8415 §15): the first timeout, doubled (± jitter) on each retransmission
/// up to a cap, and a bounded number of retransmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// First timeout, milliseconds (at least 1 is used).
    pub initial_ms: u64,
    /// Largest timeout, milliseconds.
    pub max_rt_ms: u64,
    /// Retransmissions before the exchange is given up.
    pub max_retries: u32,
    /// Each doubled timeout is scaled by a uniform factor within ± this per mille (capped at
    /// [`JITTER_PERMILLE_MAX`]); 0 keeps it exact, and the client deterministic.
    pub jitter_permille: u16,
}

/// Who starts exchanges (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The client follows its own timers: start, T1, T2, expiry; it starts over on failure.
    Autonomous,
    /// The caller starts each exchange; the client waits after each one ends.
    Driven,
}

/// How a client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// What it asks for.
    pub ask: Ask,
    /// How it retransmits.
    pub retransmit: Retransmit,
    /// Who starts exchanges.
    pub mode: Mode,
}

impl Config {
    /// An autonomous client asking for `ask`, with the `CLIENT_*` retransmission constants and
    /// no jitter (so a seeded world using it stays deterministic).
    pub fn autonomous(ask: Ask) -> Config {
        Config {
            ask,
            retransmit: Retransmit {
                initial_ms: CLIENT_RT_MS,
                max_rt_ms: CLIENT_RT_MAX_MS,
                max_retries: CLIENT_RETRIES_MAX,
                jitter_permille: 0,
            },
            mode: Mode::Autonomous,
        }
    }
}

/// A client exchange, named by the message that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Solicit → Advertise (or → Reply with Rapid Commit).
    Solicit,
    /// Request → Reply, to the server that advertised.
    Request,
    /// Renew → Reply, to the server that granted the leases.
    Renew,
    /// Rebind → Reply, from any server.
    Rebind,
    /// Release → Reply.
    Release,
    /// Decline → Reply, to the server that granted the address (RFC 8415 §18.2.8).
    Decline,
    /// Confirm → Reply, to every server: are my addresses still on this link (§18.2.3)?
    Confirm,
}

/// What an autonomous client does when T1 comes (the caller chooses, see [`Client::on_timer`]).
/// Decline and Confirm need an address held; a client holding only a prefix renews instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtT1 {
    /// Renew, as a host does.
    Renew,
    /// Release everything and solicit again later (a host leaving).
    Release,
    /// Decline the address (duplicate address detection failed) and start over.
    Decline,
    /// Confirm the address (a host that rebooted or moved), then go on renewing.
    Confirm,
}

impl Exchange {
    /// The message type that opens it.
    pub fn msg_type(self) -> MessageType {
        match self {
            Exchange::Solicit => MessageType::Solicit,
            Exchange::Request => MessageType::Request,
            Exchange::Renew => MessageType::Renew,
            Exchange::Rebind => MessageType::Rebind,
            Exchange::Release => MessageType::Release,
            Exchange::Decline => MessageType::Decline,
            Exchange::Confirm => MessageType::Confirm,
        }
    }

    /// Where its messages go.
    pub fn to(self) -> To {
        match self {
            Exchange::Solicit | Exchange::Rebind | Exchange::Confirm => To::All,
            _ => To::Server,
        }
    }

    /// The phase a client is in while the exchange is in flight.
    pub fn phase(self) -> Phase {
        match self {
            Exchange::Solicit => Phase::Soliciting,
            Exchange::Request => Phase::Requesting,
            Exchange::Renew => Phase::Renewing,
            Exchange::Rebind => Phase::Rebinding,
            Exchange::Release => Phase::Releasing,
            Exchange::Decline => Phase::Declining,
            Exchange::Confirm => Phase::Confirming,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Exchange::Solicit => "solicit",
            Exchange::Request => "request",
            Exchange::Renew => "renew",
            Exchange::Rebind => "rebind",
            Exchange::Release => "release",
            Exchange::Decline => "decline",
            Exchange::Confirm => "confirm",
        }
    }
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Holds nothing and has no exchange in flight.
    Idle,
    /// Sent Solicit; takes the first usable Advertise.
    Soliciting,
    /// Sent Request to the server that advertised.
    Requesting,
    /// Holds its leases, no exchange in flight.
    Bound,
    /// Sent Renew to the server that granted the leases.
    Renewing,
    /// Sent Rebind to every server.
    Rebinding,
    /// Sent Release.
    Releasing,
    /// Sent Decline.
    Declining,
    /// Sent Confirm.
    Confirming,
    /// Driven mode: its last exchange timed out or was abandoned, or was refused while it held
    /// nothing; what it held, if anything, is kept but it is not bound.
    Failed,
}

impl Phase {
    /// The exchange in flight, if any.
    pub fn exchange(self) -> Option<Exchange> {
        match self {
            Phase::Soliciting => Some(Exchange::Solicit),
            Phase::Requesting => Some(Exchange::Request),
            Phase::Renewing => Some(Exchange::Renew),
            Phase::Rebinding => Some(Exchange::Rebind),
            Phase::Releasing => Some(Exchange::Release),
            Phase::Declining => Some(Exchange::Decline),
            Phase::Confirming => Some(Exchange::Confirm),
            Phase::Idle | Phase::Bound | Phase::Failed => None,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// Every server (Solicit, Rebind, Confirm).
    All,
    /// The server named by [`Client::server_id`] (Request, Renew, Release, Decline); a relay agent or a
    /// multicast sends it to all and the others ignore it.
    Server,
}

/// An address (`len` 128) or delegated prefix held or granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The address, or the prefix.
    pub addr: Ipv6Addr,
    /// 128 for an address, the prefix length for a prefix.
    pub len: u8,
    /// Valid lifetime granted, seconds.
    pub valid_secs: u32,
    /// When it expires, caller's milliseconds.
    pub expires_ms: u64,
}

/// Why a datagram was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// It does not parse, or breaks a rule of RFC 8415 (no or an oversized Server Identifier).
    Malformed,
    /// Not an answer to this client's message in flight (transaction id, Client Identifier, or
    /// no exchange in flight).
    NotOurs,
    /// A message type the exchange does not take (say, a Reply to Solicit without Rapid Commit).
    Unexpected,
}

/// What a call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing: the timer was not due, or the client is waiting.
    Nothing,
    /// Autonomous mode: an exchange started from a timer (start time, T1, T2).
    Started(Exchange),
    /// The message in flight was sent again.
    Retransmitted,
    /// A Request went unanswered: the client solicits again (once per exchange).
    Restarted,
    /// The exchange was given up after its last retransmission. Autonomous: the client moves
    /// on (Rebind if it holds leases, else Solicit; an unanswered Release drops them anyway).
    TimedOut(Exchange),
    /// Autonomous mode: its leases expired; it solicits again.
    Expired,
    /// A usable Advertise: the Request is sent.
    Advertised,
    /// A Reply granted leases: the client is bound ([`Client::address`], [`Client::prefix`]).
    Bound,
    /// A Reply or Advertise said no: a failure status at the top or in an IA, or no usable
    /// lease where one was asked for (NoAddrsAvail / NoPrefixAvail). Driven: the exchange is
    /// over and what the client held is kept. Autonomous: a refused Advertise is ignored (it
    /// keeps soliciting); a refused Reply drops what it held and it starts over.
    Refused(u16),
    /// A Release was answered; the client holds nothing.
    Released,
    /// A Decline was answered; the client holds nothing.
    Declined,
    /// A Confirm was answered with Success: the client keeps its leases (and renews next).
    Confirmed,
    /// The datagram was not for the exchange in flight.
    Ignored(Ignored),
}

/// What a call did and whether it wrote a message to send (into the [`Outbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Step {
    /// What happened.
    pub event: Event,
    /// Where the message now in the outbox goes, when one was written.
    pub send: Option<To>,
}

impl Step {
    fn quiet(event: Event) -> Step {
        Step { event, send: None }
    }
}

/// How datagrams leave: straight to the servers, or through a relay agent the caller plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The datagram is the client message.
    Direct,
    /// The datagram is a Relay-forw (hop count 0) around the client message, with the client's
    /// link-local address ([`relay_peer`]) as peer-address.
    Relay {
        /// link-address of the Relay-forw.
        link: Ipv6Addr,
        /// Interface-Id option contents.
        interface_id: &'static [u8],
        /// Relay Source Port option (RFC 8357) when the relay does not send from port 547.
        source_port: Option<u16>,
    },
}

/// Buffers a client writes its messages into, owned and reused by the caller (one per socket
/// or thread), so building a message allocates nothing once they have grown.
#[derive(Debug, Clone)]
pub struct Outbox {
    via: Via,
    msg: Vec<u8>,
    frame: Vec<u8>,
}

impl Outbox {
    /// An outbox that frames messages as `via` says.
    pub fn new(via: Via) -> Outbox {
        Outbox {
            via,
            msg: Vec::with_capacity(OUTBOX_CAPACITY),
            frame: Vec::with_capacity(OUTBOX_CAPACITY),
        }
    }

    /// An outbox for messages sent straight to the servers.
    pub fn direct() -> Outbox {
        Outbox::new(Via::Direct)
    }

    /// The datagram last written: the client message, or the Relay-forw around it.
    pub fn datagram(&self) -> &[u8] {
        match self.via {
            Via::Direct => &self.msg,
            Via::Relay { .. } => &self.frame,
        }
    }

    /// The client message last written (inside the relay header, if any).
    pub fn message(&self) -> &[u8] {
        &self.msg
    }

    /// Wraps the message just written for client `id`, when relaying.
    fn frame(&mut self, id: u32) {
        if let Via::Relay {
            link,
            interface_id,
            source_port,
        } = self.via
        {
            wire::wrap_relay_forw(
                0,
                link,
                relay_peer(id),
                Some(interface_id),
                source_port,
                &self.msg,
                &mut self.frame,
            );
        }
    }
}

/// The link-local address a relay agent reports for client `id` (fe80::200:0:0:0 plus the id).
pub fn relay_peer(id: u32) -> Ipv6Addr {
    Ipv6Addr::from(
        0xfe80_0000_0000_0000_0000_0000_0000_0000u128 | 0x0200_0000_0000u128 | id as u128,
    )
}

/// A DUID-LL (type 3, Ethernet) whose MAC is locally administered and made of `tag` and `id`.
pub fn duid_ll(id: u32, tag: u8) -> [u8; DUID_LEN] {
    let mut d = [0u8; DUID_LEN];
    d[..4].copy_from_slice(&[0, 3, 0, 1]);
    d[4] = 0x02;
    d[5] = tag;
    d[6..].copy_from_slice(&id.to_be_bytes());
    d
}

/// An owned datagram and where it goes, for callers that queue messages rather than send them
/// at once (the simulator). Copies: not for a hot path.
#[derive(Debug, Clone)]
pub struct Send {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// The DUID of the one server it is for (Request, Renew, Release), or `None` for all.
    pub to: Option<Vec<u8>>,
}

impl Send {
    /// The datagram in `out`, which `client` just wrote for `to`.
    pub fn new(client: &Client, to: To, out: &Outbox) -> Send {
        Send {
            bytes: out.datagram().to_vec(),
            to: (to == To::Server).then(|| client.server_id().to_vec()),
        }
    }
}

/// What a valid answer grants.
#[derive(Debug, Clone, Copy, Default)]
struct Grant {
    na: Option<Lease>,
    pd: Option<Lease>,
    t1_secs: u32,
    t2_secs: u32,
}

/// One client (see the crate documentation).
#[derive(Debug, Clone)]
pub struct Client {
    id: u32,
    duid: [u8; DUID_LEN],
    cfg: Config,
    phase: Phase,
    /// Transaction id of the message in flight (24 bits).
    xid: u32,
    /// Retransmissions of the message in flight so far.
    attempt: u32,
    rt_ms: u64,
    timer_ms: u64,
    /// When the exchange began (for Elapsed Time).
    started_ms: u64,
    /// This exchange already went back from Request to Solicit.
    restarted: bool,
    /// Server it talks to; capacity kept across exchanges, at most SERVER_ID_MAX bytes.
    server_id: Vec<u8>,
    na: Option<Lease>,
    pd: Option<Lease>,
    /// What the Advertise offered, asked for in the Request.
    offer_na: Option<Ipv6Addr>,
    offer_pd: Option<(Ipv6Addr, u8)>,
    t1_ms: u64,
    t2_ms: u64,
    /// The last two transaction ids that got an answer, newest first.
    answered: [u32; 2],
    /// xorshift32 state for jitter only.
    rng: u32,
}

/// Transaction ids are 24 bits, so this never names a real one.
const NO_XID: u32 = u32::MAX;

impl Client {
    /// Client `id` with DUID [`duid_ll`]`(id, duid_tag)`. Autonomous: it solicits at
    /// `start_ms`. Driven: it waits for [`Client::start`].
    pub fn new(id: u32, duid_tag: u8, cfg: Config, start_ms: u64) -> Client {
        Client {
            id,
            duid: duid_ll(id, duid_tag),
            cfg,
            phase: Phase::Idle,
            xid: NO_XID,
            attempt: 0,
            rt_ms: 0,
            timer_ms: match cfg.mode {
                Mode::Autonomous => start_ms,
                Mode::Driven => NEVER,
            },
            started_ms: start_ms,
            restarted: false,
            server_id: Vec::new(),
            na: None,
            pd: None,
            offer_na: None,
            offer_pd: None,
            t1_ms: NEVER,
            t2_ms: NEVER,
            answered: [NO_XID; 2],
            rng: (id ^ (duid_tag as u32) << 24).wrapping_mul(0x9e37_79b1) | 1,
        }
    }

    /// Its number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its DUID.
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// How it behaves.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether it holds leases with no exchange in flight.
    pub fn bound(&self) -> bool {
        self.phase == Phase::Bound
    }

    /// Transaction id of the message last sent.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When [`Client::on_timer`] is next due ([`NEVER`] when it waits for nothing).
    pub fn timer_ms(&self) -> u64 {
        self.timer_ms
    }

    /// DUID of the server it talks to (empty before the first Advertise or Reply).
    pub fn server_id(&self) -> &[u8] {
        &self.server_id
    }

    /// The address it holds.
    pub fn address(&self) -> Option<&Lease> {
        self.na.as_ref()
    }

    /// The delegated prefix it holds.
    pub fn prefix(&self) -> Option<&Lease> {
        self.pd.as_ref()
    }

    /// What it holds: its address, else its prefix.
    pub fn lease(&self) -> Option<&Lease> {
        self.na.as_ref().or(self.pd.as_ref())
    }

    /// T1 of what it holds, caller's milliseconds ([`NEVER`] when it holds nothing).
    pub fn t1_ms(&self) -> u64 {
        self.t1_ms
    }

    /// T2 of what it holds, caller's milliseconds.
    pub fn t2_ms(&self) -> u64 {
        self.t2_ms
    }

    /// Whether `xid` is one of the last two transactions that got an answer: a later answer to
    /// it is a duplicate (another server's copy), not a late answer.
    pub fn answered(&self, xid: u32) -> bool {
        self.answered.contains(&xid)
    }

    /// Starts exchange `ex` at `now_ms` with transaction id `xid`, writing its first message
    /// into `out`; returns where it goes. Replaces any exchange in flight.
    pub fn start(&mut self, ex: Exchange, now_ms: u64, xid: u32, out: &mut Outbox) -> To {
        self.started_ms = now_ms;
        self.restarted = false;
        self.begin(ex, now_ms, xid, out)
    }

    /// Gives the exchange in flight up without a word (the caller's time for it ran out). The
    /// client is [`Phase::Failed`] and keeps what it held. Driven: it waits for the caller.
    /// Autonomous: its timer is due at once and solicits again.
    pub fn abandon(&mut self) {
        if self.phase.exchange().is_some() {
            self.phase = Phase::Failed;
        }
        self.timer_ms = match self.cfg.mode {
            Mode::Driven => NEVER,
            Mode::Autonomous => 0,
        };
    }

    /// Runs the timer at `now_ms` (nothing happens before [`Client::timer_ms`]). `xid` is used
    /// if a message is sent. `at_t1`: what an autonomous client does if T1 has come.
    pub fn on_timer(&mut self, now_ms: u64, xid: u32, at_t1: AtT1, out: &mut Outbox) -> Step {
        if now_ms < self.timer_ms {
            return Step::quiet(Event::Nothing);
        }
        let auto = self.cfg.mode == Mode::Autonomous;
        let mut expired = false;
        if auto && self.expires_ms().is_some_and(|e| now_ms >= e) {
            self.drop_leases();
            self.phase = Phase::Idle;
            expired = true;
        }
        let started = |s: &mut Client, ex: Exchange, out: &mut Outbox| {
            let to = s.start(ex, now_ms, xid, out);
            Step {
                event: if expired {
                    Event::Expired
                } else {
                    Event::Started(ex)
                },
                send: Some(to),
            }
        };
        match self.phase {
            Phase::Idle | Phase::Failed if auto => started(self, Exchange::Solicit, out),
            Phase::Bound | Phase::Renewing if auto && now_ms >= self.t2_ms => {
                started(self, Exchange::Rebind, out)
            }
            Phase::Bound if auto && now_ms >= self.t1_ms => {
                let ex = match at_t1 {
                    AtT1::Release => Exchange::Release,
                    AtT1::Decline if self.na.is_some() => Exchange::Decline,
                    AtT1::Confirm if self.na.is_some() => Exchange::Confirm,
                    _ => Exchange::Renew,
                };
                started(self, ex, out)
            }
            Phase::Bound if auto => {
                self.timer_ms = self.t1_ms;
                Step::quiet(Event::Nothing)
            }
            Phase::Idle | Phase::Bound | Phase::Failed => {
                self.timer_ms = NEVER;
                Step::quiet(Event::Nothing)
            }
            Phase::Soliciting
            | Phase::Requesting
            | Phase::Renewing
            | Phase::Rebinding
            | Phase::Releasing
            | Phase::Declining
            | Phase::Confirming => self.retry(now_ms, xid, out),
        }
    }

    /// Parses `bytes` (a client message, not relayed) and handles it as [`Client::on_reply`].
    pub fn on_datagram(&mut self, now_ms: u64, bytes: &[u8], xid: u32, out: &mut Outbox) -> Step {
        match Message::parse(bytes) {
            Ok(m) => self.on_reply(now_ms, &m, xid, out),
            Err(_) => Step::quiet(Event::Ignored(Ignored::Malformed)),
        }
    }

    /// Handles a server's answer `m` at `now_ms`. `xid` is used if a message is sent (the
    /// Request after an Advertise).
    pub fn on_reply(&mut self, now_ms: u64, m: &Message<'_>, xid: u32, out: &mut Outbox) -> Step {
        let Some(ex) = self.phase.exchange() else {
            return Step::quiet(Event::Ignored(Ignored::NotOurs));
        };
        if m.transaction_id() != self.xid || m.client_id() != Some(&self.duid[..]) {
            return Step::quiet(Event::Ignored(Ignored::NotOurs));
        }
        let ty = m.msg_type();
        let expected = match ex {
            Exchange::Solicit => {
                ty == MessageType::Advertise || (ty == MessageType::Reply && m.rapid_commit())
            }
            _ => ty == MessageType::Reply,
        };
        if !expected {
            return Step::quiet(Event::Ignored(Ignored::Unexpected));
        }
        let Some(server) = m.server_id().filter(|s| s.len() <= SERVER_ID_MAX) else {
            return Step::quiet(Event::Ignored(Ignored::Malformed));
        };
        self.answered = [self.xid, self.answered[0]];
        let auto = self.cfg.mode == Mode::Autonomous;
        let top_failure = m
            .status()
            .map(|s| s.code)
            .filter(|&c| c != StatusCode::Success as u16);
        if matches!(ex, Exchange::Release | Exchange::Decline) {
            // RFC 8415 §18.2.10.2: the Release is over whatever the status; a driven client
            // keeps what it held on a failure status so that its caller can judge. A Decline
            // (§18.2.10.1) likewise: the address is not used again, and this client starts
            // over (without its prefix too: it begins again as a new host).
            if let Some(code) = top_failure
                && !auto
            {
                return self.refused(code, now_ms);
            }
            self.drop_leases();
            self.phase = Phase::Idle;
            let (pause_rts, event) = if ex == Exchange::Release {
                (RELEASE_PAUSE_RTS, Event::Released)
            } else {
                (1, Event::Declined)
            };
            self.timer_ms = if auto {
                now_ms.saturating_add(pause_rts * self.initial_rt())
            } else {
                NEVER
            };
            return Step::quiet(event);
        }
        if ex == Exchange::Confirm {
            // RFC 8415 §18.2.10.1: Success keeps the leases (lifetimes unchanged); NotOnLink
            // (or any failure) means they are of no use here.
            if let Some(code) = top_failure {
                return self.refused(code, now_ms);
            }
            self.phase = Phase::Bound;
            self.timer_ms = if auto { now_ms } else { NEVER };
            return Step::quiet(Event::Confirmed);
        }
        let grant = match top_failure {
            Some(code) => Err(code),
            None => self.grant_in(m, now_ms),
        };
        match (ty, grant) {
            (MessageType::Advertise, Ok(g)) => {
                self.set_server(server);
                self.offer_na = g.na.map(|l| l.addr);
                self.offer_pd = g.pd.map(|l| (l.addr, l.len));
                let to = self.begin(Exchange::Request, now_ms, xid, out);
                Step {
                    event: Event::Advertised,
                    send: Some(to),
                }
            }
            // RFC 8415 §18.2.9: an Advertise with nothing to offer is ignored.
            (MessageType::Advertise, Err(code)) if auto => Step::quiet(Event::Refused(code)),
            (_, Ok(g)) => {
                self.set_server(server);
                self.na = g.na;
                self.pd = g.pd;
                self.offer_na = None;
                self.offer_pd = None;
                self.t1_ms = now_ms.saturating_add(g.t1_secs as u64 * 1000);
                self.t2_ms = now_ms.saturating_add(g.t2_secs as u64 * 1000);
                self.phase = Phase::Bound;
                self.timer_ms = if auto { self.t1_ms } else { NEVER };
                Step::quiet(Event::Bound)
            }
            (_, Err(code)) => self.refused(code, now_ms),
        }
    }

    /// A refusal ends the exchange (see [`Event::Refused`]).
    fn refused(&mut self, code: u16, now_ms: u64) -> Step {
        match self.cfg.mode {
            Mode::Autonomous => {
                self.drop_leases();
                self.phase = Phase::Idle;
                self.timer_ms = now_ms.saturating_add(self.initial_rt());
            }
            Mode::Driven => {
                self.phase = if self.na.is_some() || self.pd.is_some() {
                    Phase::Bound
                } else {
                    Phase::Failed
                };
                self.timer_ms = NEVER;
            }
        }
        Step::quiet(Event::Refused(code))
    }

    /// What `m` grants of what the client asked for, or the status code refusing it: the first
    /// failure status in an IA asked for, else NoAddrsAvail / NoPrefixAvail when an IA asked
    /// for holds nothing usable. Usable: the IAID asked for, T1 ≤ T2 (RFC 8415 §21.4, §21.21),
    /// valid lifetime non-zero and not below the preferred one (§21.6, §21.22), and for a
    /// prefix the length asked for.
    fn grant_in(&self, m: &Message<'_>, now_ms: u64) -> Result<Grant, u16> {
        let ask = self.cfg.ask;
        let mut g = Grant {
            t1_secs: u32::MAX,
            t2_secs: u32::MAX,
            ..Grant::default()
        };
        let mut refusal = None;
        let lease = |addr, len, valid: u32| Lease {
            addr,
            len,
            valid_secs: valid,
            expires_ms: now_ms.saturating_add(valid as u64 * 1000),
        };
        let times = |g: &mut Grant, t1: u32, t2: u32, valid: u32| {
            // RFC 8415 §18.2.4: T1 and T2 of 0 leave the times to the client.
            let t1 = if t1 == 0 { valid / 2 } else { t1 };
            let t2 = if t2 == 0 {
                valid / 5 * 4 + valid % 5 * 4 / 5
            } else {
                t2
            };
            g.t1_secs = g.t1_secs.min(t1);
            g.t2_secs = g.t2_secs.min(t2);
        };
        let t_ok = |t1: u32, t2: u32| t1 == 0 || t2 == 0 || t1 <= t2;
        // The loops below are bounded by the message: its options, parsed in place, fit in one
        // datagram.
        if let Some(iaid) = ask.na {
            for ia in m
                .ia_nas()
                .filter(|ia| ia.iaid == iaid && t_ok(ia.t1, ia.t2))
            {
                if let Some(s) = ia.status().filter(|s| s.code != 0) {
                    refusal = Some(s.code);
                }
                if let Some(a) = ia
                    .addresses()
                    .find(|a| a.valid_secs > 0 && a.preferred_secs <= a.valid_secs)
                    && g.na.is_none()
                {
                    g.na = Some(lease(a.addr, 128, a.valid_secs));
                    times(&mut g, ia.t1, ia.t2, a.valid_secs);
                }
            }
        }
        if let Some(iaid) = ask.pd {
            for ia in m
                .ia_pds()
                .filter(|ia| ia.iaid == iaid && t_ok(ia.t1, ia.t2))
            {
                if let Some(s) = ia.status().filter(|s| s.code != 0) {
                    refusal = Some(s.code);
                }
                if let Some(p) = ia.prefixes().find(|p| {
                    p.valid_secs > 0
                        && p.preferred_secs <= p.valid_secs
                        && ask.pd_len.is_none_or(|l| l == p.prefix_len)
                }) && g.pd.is_none()
                {
                    g.pd = Some(lease(p.prefix, p.prefix_len, p.valid_secs));
                    times(&mut g, ia.t1, ia.t2, p.valid_secs);
                }
            }
        }
        if let Some(code) = refusal {
            return Err(code);
        }
        if ask.na.is_some() && g.na.is_none() {
            return Err(StatusCode::NoAddrsAvail as u16);
        }
        if ask.pd.is_some() && g.pd.is_none() {
            return Err(StatusCode::NoPrefixAvail as u16);
        }
        Ok(g)
    }

    /// Opens `ex` within the current exchange: first timeout, message sent.
    fn begin(&mut self, ex: Exchange, now_ms: u64, xid: u32, out: &mut Outbox) -> To {
        if ex == Exchange::Solicit {
            self.offer_na = None;
            self.offer_pd = None;
        }
        self.phase = ex.phase();
        self.attempt = 0;
        self.rt_ms = self.initial_rt();
        self.arm(now_ms);
        self.write(ex, now_ms, xid, out);
        ex.to()
    }

    /// The timer after the last retransmission fired: retransmit, restart or give up.
    fn retry(&mut self, now_ms: u64, xid: u32, out: &mut Outbox) -> Step {
        let Some(ex) = self.phase.exchange() else {
            return Step::quiet(Event::Nothing);
        };
        if self.attempt < self.cfg.retransmit.max_retries {
            self.attempt += 1;
            self.rt_ms = self.next_rt();
            self.arm(now_ms);
            self.write(ex, now_ms, xid, out);
            return Step {
                event: Event::Retransmitted,
                send: Some(ex.to()),
            };
        }
        if ex == Exchange::Request && !self.restarted {
            // RFC 8415 §18.2.2: its server may be gone, and another will not take a Request
            // naming it.
            self.restarted = true;
            let to = self.begin(Exchange::Solicit, now_ms, xid, out);
            return Step {
                event: Event::Restarted,
                send: Some(to),
            };
        }
        let event = Event::TimedOut(ex);
        if self.cfg.mode == Mode::Driven {
            self.phase = Phase::Failed;
            self.timer_ms = NEVER;
            return Step::quiet(event);
        }
        let holds = self.na.is_some() || self.pd.is_some();
        let next = match ex {
            Exchange::Release | Exchange::Decline => {
                // Unanswered: it stops using the leases anyway (RFC 8415 §18.2.7, §18.2.8).
                self.drop_leases();
                self.phase = Phase::Idle;
                self.timer_ms = now_ms.saturating_add(self.initial_rt());
                return Step::quiet(event);
            }
            Exchange::Confirm if holds => {
                // Unanswered: it goes on with what it holds (RFC 8415 §18.2.3), renewing next.
                self.phase = Phase::Bound;
                self.timer_ms = now_ms;
                return Step::quiet(event);
            }
            _ if holds => Exchange::Rebind,
            _ => Exchange::Solicit,
        };
        let to = self.begin(next, now_ms, xid, out);
        Step {
            event,
            send: Some(to),
        }
    }

    fn initial_rt(&self) -> u64 {
        self.cfg.retransmit.initial_ms.max(1)
    }

    /// The doubled timeout, jittered and capped.
    fn next_rt(&mut self) -> u64 {
        let r = &self.cfg.retransmit;
        let doubled = self.rt_ms.saturating_mul(2);
        let j = r.jitter_permille.min(JITTER_PERMILLE_MAX) as u64;
        let rt = if j == 0 {
            doubled
        } else {
            // xorshift32: jitter only, needs nothing beyond "not synchronised".
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 17;
            self.rng ^= self.rng << 5;
            let k = 1000 - j + self.rng as u64 % (2 * j + 1);
            doubled.saturating_mul(k) / 1000
        };
        rt.min(r.max_rt_ms).max(1)
    }

    /// Sets the timer one timeout from now (autonomous: no later than the leases expire).
    fn arm(&mut self, now_ms: u64) {
        self.timer_ms = now_ms.saturating_add(self.rt_ms);
        if self.cfg.mode == Mode::Autonomous
            && let Some(e) = self.expires_ms()
        {
            self.timer_ms = self.timer_ms.min(e);
        }
    }

    fn expires_ms(&self) -> Option<u64> {
        match (self.na, self.pd) {
            (Some(a), Some(p)) => Some(a.expires_ms.min(p.expires_ms)),
            (a, p) => a.or(p).map(|l| l.expires_ms),
        }
    }

    fn drop_leases(&mut self) {
        self.na = None;
        self.pd = None;
        self.t1_ms = NEVER;
        self.t2_ms = NEVER;
    }

    fn set_server(&mut self, server: &[u8]) {
        self.server_id.clear();
        self.server_id.extend_from_slice(server);
    }

    /// Writes the message of `ex` with transaction id `xid` into `out`.
    fn write(&mut self, ex: Exchange, now_ms: u64, xid: u32, out: &mut Outbox) {
        self.xid = xid & 0x00ff_ffff;
        let ask = self.cfg.ask;
        let elapsed_cs = (now_ms.saturating_sub(self.started_ms) / 10).min(ELAPSED_MAX_CS) as u16;
        let (na, pd) = match ex {
            Exchange::Request => (
                self.offer_na.or(self.na.map(|l| l.addr)),
                self.offer_pd.or(self.pd.map(|l| (l.addr, l.len))),
            ),
            _ => (self.na.map(|l| l.addr), self.pd.map(|l| (l.addr, l.len))),
        };
        {
            let mut w = MessageWriter::new(&mut out.msg, ex.msg_type(), self.xid);
            w.client_id(&self.duid);
            if ex.to() == To::Server {
                w.server_id(&self.server_id);
            }
            w.elapsed_time(elapsed_cs);
            if ex == Exchange::Solicit && ask.rapid_commit {
                w.rapid_commit();
            }
            if ask.dns && !matches!(ex, Exchange::Release | Exchange::Decline) {
                w.oro(&[opt::DNS_SERVERS, opt::DOMAIN_LIST]);
            }
            if let Some(iaid) = ask.na {
                w.ia_na(iaid, 0, 0, |o| {
                    if let Some(a) = na {
                        o.ia_addr(a, 0, 0, |_| {});
                    }
                });
            }
            // Decline and Confirm are about addresses only (RFC 8415 §18.2.3, §18.2.8).
            if let Some(iaid) = ask
                .pd
                .filter(|_| !matches!(ex, Exchange::Decline | Exchange::Confirm))
            {
                w.ia_pd(iaid, 0, 0, |o| {
                    if let Some((p, l)) = pd {
                        o.ia_prefix(p, l, 0, 0, |_| {});
                    }
                });
            }
        }
        out.frame(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &[u8] = &[0, 2, 0, 0, 0, 9, 1, 2];
    const ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5);

    fn driven(ask: Ask) -> Client {
        let cfg = Config {
            ask,
            retransmit: Retransmit {
                initial_ms: 100,
                max_rt_ms: 350,
                max_retries: 2,
                jitter_permille: 0,
            },
            mode: Mode::Driven,
        };
        Client::new(3, 0x51, cfg, 0)
    }

    /// A server's answer of type `ty` to the message in `out`, granting `ADDR` with `valid`
    /// seconds (none when 0), with top-level `status` when given.
    fn answer(out: &Outbox, ty: MessageType, valid: u32, status: Option<StatusCode>) -> Vec<u8> {
        let q = Message::parse(out.message()).unwrap();
        let mut buf = Vec::new();
        {
            let mut w = MessageWriter::new(&mut buf, ty, q.transaction_id());
            w.client_id(q.client_id().unwrap());
            w.server_id(SERVER);
            if let Some(s) = status {
                w.status(s, "");
            }
            if valid > 0 {
                w.ia_na(1, 0, 0, |o| o.ia_addr(ADDR, valid / 2, valid, |_| {}));
            }
        }
        buf
    }

    #[test]
    fn solicit_advertise_request_reply_binds() {
        let mut c = driven(Ask::address(1));
        let mut out = Outbox::direct();
        assert_eq!(c.start(Exchange::Solicit, 0, 10, &mut out), To::All);
        let m = Message::parse(out.datagram()).unwrap();
        assert_eq!(m.msg_type(), MessageType::Solicit);
        assert_eq!(m.ia_nas().next().map(|ia| ia.iaid), Some(1));
        let adv = answer(&out, MessageType::Advertise, 600, None);
        let s = c.on_datagram(5, &adv, 11, &mut out);
        assert_eq!(s.event, Event::Advertised);
        assert_eq!(s.send, Some(To::Server));
        let req = Message::parse(out.datagram()).unwrap();
        assert_eq!(req.msg_type(), MessageType::Request);
        assert_eq!(req.server_id(), Some(SERVER));
        assert_eq!(req.elapsed_time(), Some(0));
        let hinted = req
            .ia_nas()
            .next()
            .unwrap()
            .addresses()
            .next()
            .map(|a| a.addr);
        assert_eq!(
            hinted,
            Some(ADDR),
            "the Request asks for what was advertised"
        );
        // A second copy of the Advertise is a duplicate, not for the Request in flight.
        let s = c.on_datagram(6, &adv, 12, &mut out);
        assert_eq!(s.event, Event::Ignored(Ignored::NotOurs));
        assert!(c.answered(10));
        let rep = answer(&out, MessageType::Reply, 600, None);
        let s = c.on_datagram(30, &rep, 12, &mut out);
        assert_eq!((s.event, s.send), (Event::Bound, None));
        assert!(c.bound());
        let l = *c.address().unwrap();
        assert_eq!((l.addr, l.valid_secs, l.expires_ms), (ADDR, 600, 600_030));
        assert_eq!((c.t1_ms(), c.t2_ms()), (300_030, 480_030));
        assert_eq!(c.timer_ms(), NEVER, "a driven client waits when bound");
    }

    #[test]
    fn retransmission_is_bounded_and_a_lost_request_solicits_again_once() {
        let mut c = driven(Ask::address(1));
        let mut out = Outbox::direct();
        let _ = c.start(Exchange::Solicit, 0, 1, &mut out);
        let adv = answer(&out, MessageType::Advertise, 600, None);
        assert_eq!(c.on_datagram(1, &adv, 2, &mut out).event, Event::Advertised);
        assert_eq!(c.timer_ms(), 101);
        assert_eq!(
            c.on_timer(100, 3, AtT1::Renew, &mut out).event,
            Event::Nothing
        );
        let mut t = 101;
        let mut gaps = Vec::new();
        for xid in 3..5 {
            let s = c.on_timer(t, xid, AtT1::Renew, &mut out);
            assert_eq!((s.event, s.send), (Event::Retransmitted, Some(To::Server)));
            assert_eq!(
                Message::parse(out.datagram()).unwrap().transaction_id(),
                xid
            );
            gaps.push(c.timer_ms() - t);
            t = c.timer_ms();
        }
        assert_eq!(gaps, [200, 350], "doubling, capped at max_rt_ms");
        let s = c.on_timer(t, 5, AtT1::Renew, &mut out);
        assert_eq!((s.event, c.phase()), (Event::Restarted, Phase::Soliciting));
        for xid in 6..8 {
            assert_eq!(
                c.on_timer(c.timer_ms(), xid, AtT1::Renew, &mut out).event,
                Event::Retransmitted
            );
        }
        let s = c.on_timer(c.timer_ms(), 8, AtT1::Renew, &mut out);
        assert_eq!(
            (s.event, s.send),
            (Event::TimedOut(Exchange::Solicit), None)
        );
        assert_eq!((c.phase(), c.timer_ms()), (Phase::Failed, NEVER));
    }

    #[test]
    fn refusals_are_reported_with_their_status_code() {
        let mut out = Outbox::direct();
        let mut c = driven(Ask::address(1));
        let _ = c.start(Exchange::Solicit, 0, 1, &mut out);
        let adv = answer(&out, MessageType::Advertise, 0, None);
        let s = c.on_datagram(1, &adv, 2, &mut out);
        assert_eq!(s.event, Event::Refused(StatusCode::NoAddrsAvail as u16));
        assert_eq!(c.phase(), Phase::Failed);
        let _ = c.start(Exchange::Solicit, 10, 3, &mut out);
        let adv = answer(
            &out,
            MessageType::Advertise,
            600,
            Some(StatusCode::UseMulticast),
        );
        let s = c.on_datagram(11, &adv, 4, &mut out);
        assert_eq!(s.event, Event::Refused(StatusCode::UseMulticast as u16));
        // A Reply to Solicit without Rapid Commit is not an answer.
        let _ = c.start(Exchange::Solicit, 20, 5, &mut out);
        let rep = answer(&out, MessageType::Reply, 600, None);
        assert_eq!(
            c.on_datagram(21, &rep, 6, &mut out).event,
            Event::Ignored(Ignored::Unexpected)
        );
        // Nor is one with preferred above valid lifetime (the IA holds nothing usable).
        let mut bad = Vec::new();
        {
            let q = Message::parse(out.message()).unwrap();
            let mut w = MessageWriter::new(&mut bad, MessageType::Advertise, q.transaction_id());
            w.client_id(q.client_id().unwrap());
            w.server_id(SERVER);
            w.ia_na(1, 0, 0, |o| o.ia_addr(ADDR, 700, 600, |_| {}));
        }
        let s = c.on_datagram(22, &bad, 7, &mut out);
        assert_eq!(s.event, Event::Refused(StatusCode::NoAddrsAvail as u16));
    }

    /// An autonomous client asking for `ask`, started at 0.5 s and bound to `ADDR` (valid
    /// 100 s, T1 and T2 left to it) at 0.52 s.
    fn bound_autonomous(ask: Ask) -> (Client, Outbox) {
        let mut c = Client::new(9, 0x51, Config::autonomous(ask), 500);
        let mut out = Outbox::direct();
        assert_eq!(
            c.on_timer(499, 1, AtT1::Renew, &mut out).event,
            Event::Nothing
        );
        let s = c.on_timer(500, 1, AtT1::Renew, &mut out);
        assert_eq!(s.event, Event::Started(Exchange::Solicit));
        let adv = answer(&out, MessageType::Advertise, 100, None);
        assert_eq!(
            c.on_datagram(510, &adv, 2, &mut out).event,
            Event::Advertised
        );
        let rep = answer(&out, MessageType::Reply, 100, None);
        assert_eq!(c.on_datagram(520, &rep, 3, &mut out).event, Event::Bound);
        (c, out)
    }

    #[test]
    fn autonomous_client_renews_at_t1_rebinds_at_t2_and_expires() {
        let (mut c, mut out) = bound_autonomous(Ask::address(1));
        assert_eq!(c.timer_ms(), 50_520, "T1 is half the valid lifetime when 0");
        let s = c.on_timer(50_520, 4, AtT1::Renew, &mut out);
        assert_eq!(
            (s.event, s.send),
            (Event::Started(Exchange::Renew), Some(To::Server))
        );
        // Renew unanswered until T2: Rebind to all.
        let mut xid = 5;
        while c.phase() == Phase::Renewing {
            let _ = c.on_timer(c.timer_ms(), xid, AtT1::Renew, &mut out);
            xid += 1;
            assert!(xid < 5 + 2 * CLIENT_RETRIES_MAX, "bounded");
        }
        assert_eq!(c.phase(), Phase::Rebinding);
        // Rebind unanswered until the lease expires: it solicits again.
        let mut steps = 0;
        loop {
            let s = c.on_timer(c.timer_ms(), xid, AtT1::Renew, &mut out);
            xid += 1;
            steps += 1;
            assert!(steps < 20, "bounded");
            if s.event == Event::Expired {
                break;
            }
        }
        assert_eq!((c.phase(), c.lease()), (Phase::Soliciting, None));
        assert_eq!(c.timer_ms() - 100_520, CLIENT_RT_MS);
        // Abandoned, it solicits again at its next timer call.
        c.abandon();
        let s = c.on_timer(100_600, xid, AtT1::Renew, &mut out);
        assert_eq!(s.event, Event::Started(Exchange::Solicit));
    }

    /// T1 comes for a client of [`bound_autonomous`] that does `at_t1`: the exchange `ex`
    /// starts, its message goes to `to`, and the message is answered with Success.
    fn at_t1(c: &mut Client, out: &mut Outbox, at_t1: AtT1, ex: Exchange, to: To) -> Vec<u8> {
        let s = c.on_timer(50_520, 4, at_t1, out);
        assert_eq!((s.event, s.send), (Event::Started(ex), Some(to)));
        assert_eq!(
            Message::parse(out.datagram()).unwrap().msg_type(),
            ex.msg_type()
        );
        answer(out, MessageType::Reply, 0, Some(StatusCode::Success))
    }

    #[test]
    fn decline_names_the_address_to_its_server_and_starts_over() {
        let (mut c, mut out) = bound_autonomous(Ask::address(1));
        let rep = at_t1(
            &mut c,
            &mut out,
            AtT1::Decline,
            Exchange::Decline,
            To::Server,
        );
        let m = Message::parse(out.datagram()).unwrap();
        assert_eq!(m.server_id(), Some(SERVER));
        let declined: Vec<Ipv6Addr> = m
            .ia_nas()
            .flat_map(|ia| ia.addresses().map(|a| a.addr).collect::<Vec<_>>())
            .collect();
        assert_eq!(declined, [ADDR]);
        assert_eq!(
            c.on_datagram(50_530, &rep, 5, &mut out).event,
            Event::Declined
        );
        assert_eq!((c.phase(), c.lease()), (Phase::Idle, None));
        assert_eq!(c.timer_ms(), 50_530 + CLIENT_RT_MS, "solicits again");
    }

    #[test]
    fn confirm_asks_every_server_and_keeps_the_lease_on_success_only() {
        let (mut c, mut out) = bound_autonomous(Ask::address(1));
        let rep = at_t1(&mut c, &mut out, AtT1::Confirm, Exchange::Confirm, To::All);
        let m = Message::parse(out.datagram()).unwrap();
        assert_eq!(m.server_id(), None, "Confirm carries no Server Identifier");
        assert_eq!(
            c.on_datagram(50_530, &rep, 5, &mut out).event,
            Event::Confirmed
        );
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(
            c.address().map(|l| l.expires_ms),
            Some(100_520),
            "lifetimes unchanged"
        );
        // Its timer is due at once: T1 has passed, so it renews next.
        let s = c.on_timer(50_530, 6, AtT1::Renew, &mut out);
        assert_eq!(s.event, Event::Started(Exchange::Renew));
        // NotOnLink: what it holds is of no use here.
        let (mut c, mut out) = bound_autonomous(Ask::address(1));
        let _ = c.on_timer(50_520, 4, AtT1::Confirm, &mut out);
        let rep = answer(&out, MessageType::Reply, 0, Some(StatusCode::NotOnLink));
        assert_eq!(
            c.on_datagram(50_530, &rep, 5, &mut out).event,
            Event::Refused(StatusCode::NotOnLink as u16)
        );
        assert_eq!(c.lease(), None);
    }

    #[test]
    fn decline_and_confirm_need_an_address_and_leave_the_prefix_out() {
        // A client holding only a prefix renews instead.
        let mut c = Client::new(9, 0x51, Config::autonomous(Ask::prefix(2, None)), 500);
        let mut out = Outbox::direct();
        let _ = c.on_timer(500, 1, AtT1::Renew, &mut out);
        let q = Message::parse(out.message()).unwrap();
        let mut adv = Vec::new();
        {
            let mut w = MessageWriter::new(&mut adv, MessageType::Advertise, q.transaction_id());
            w.client_id(q.client_id().unwrap());
            w.server_id(SERVER);
            w.ia_pd(2, 0, 0, |o| o.ia_prefix(ADDR, 56, 50, 100, |_| {}));
        }
        assert_eq!(
            c.on_datagram(510, &adv, 2, &mut out).event,
            Event::Advertised
        );
        let q = Message::parse(out.message()).unwrap();
        let mut rep = Vec::new();
        {
            let mut w = MessageWriter::new(&mut rep, MessageType::Reply, q.transaction_id());
            w.client_id(q.client_id().unwrap());
            w.server_id(SERVER);
            w.ia_pd(2, 0, 0, |o| o.ia_prefix(ADDR, 56, 50, 100, |_| {}));
        }
        assert_eq!(c.on_datagram(520, &rep, 3, &mut out).event, Event::Bound);
        for at_t1 in [AtT1::Decline, AtT1::Confirm] {
            let mut d = c.clone();
            let s = d.on_timer(50_520, 4, at_t1, &mut out);
            assert_eq!(s.event, Event::Started(Exchange::Renew), "{at_t1:?}");
        }
        // With both, the Confirm speaks of the address only.
        let mut both = Ask::address(1);
        both.pd = Some(2);
        let (mut c, mut out) = bound_autonomous(Ask::address(1));
        c.cfg.ask = both;
        let _ = c.on_timer(50_520, 4, AtT1::Confirm, &mut out);
        let m = Message::parse(out.datagram()).unwrap();
        assert_eq!((m.ia_nas().count(), m.ia_pds().count()), (1, 0));
    }

    #[test]
    fn relayed_messages_carry_the_client_message() {
        let via = Via::Relay {
            link: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
            interface_id: b"x",
            source_port: Some(5000),
        };
        let mut out = Outbox::new(via);
        let mut c = driven(Ask {
            na: Some(1),
            pd: Some(2),
            pd_len: None,
            rapid_commit: true,
            dns: true,
        });
        let _ = c.start(Exchange::Solicit, 0, 1, &mut out);
        let r = wire::unwrap_relays(out.datagram()).unwrap();
        assert_eq!(r.hops()[0].peer_address, relay_peer(3));
        assert_eq!(r.inner(), out.message());
        let m = Message::parse(out.message()).unwrap();
        assert_eq!(
            m.oro().collect::<Vec<_>>(),
            vec![opt::DNS_SERVERS, opt::DOMAIN_LIST],
            "asks for DNS like a CE router"
        );
        let m = r.message().unwrap();
        assert!(m.rapid_commit());
        assert_eq!((m.ia_nas().count(), m.ia_pds().count()), (1, 1));
    }
}
