//! The sans-IO DHCPv6 engine (RFC 8415 §18.3): takes the time, where a packet came from and its
//! bytes, and writes the reply bytes and the lease changes that must be durable before the
//! reply may leave. No sockets, threads, clocks or disk in here.

use crate::config::{Config, KeyKind, OptionSet, Reservation, ResourceKind, SubnetConfig};
use crate::lease::Lease;
use crate::pool::{AcquireMode, Allocator, ClientIa, Extended, Granted, MessageBytes, Rules};
use crate::wire::{
    self, Message, MessageType, MessageWriter, OptionIter, OptionWriter, RelayHop, StatusCode,
    WireError, opt,
};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;

/// Most IA_NA plus IA_PD options served from one message; further ones are ignored, so one
/// packet cannot take a pool's worth of leases.
pub const IAS_PER_MESSAGE_MAX: usize = 16;
/// Most addresses or prefixes looked at inside one IA (hints, renewals, releases).
pub const RESOURCES_PER_IA_MAX: usize = 8;
/// Most option codes of an Option Request option looked at; further ones are ignored.
pub const ORO_CODES_MAX: usize = 64;
/// Most pools whose own options one reply takes into account (the pools of the resources it
/// grants, in IA order).
pub const POOLS_WITH_OPTIONS_PER_REPLY_MAX: usize = 8;

/// A received datagram with what the edge knows about it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Current time, unix seconds.
    pub now_secs: u64,
    /// A monotonic clock in milliseconds (rate limits).
    pub now_ms: u64,
    /// Source address and port.
    pub src: SocketAddrV6,
    /// Whether it was sent to a multicast address (ff02::1:2).
    pub multicast: bool,
    /// Name of the interface it arrived on, when known.
    pub interface: Option<&'a str>,
    /// The UDP payload.
    pub bytes: &'a [u8],
}

/// Why a packet got no reply. Each has a stable label for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The bytes are not a valid DHCPv6 message.
    Malformed(WireError),
    /// A message type a server never answers (Advertise, Reply, Reconfigure, Relay-repl, ...).
    NotForServer(MessageType),
    /// Required Client Identifier missing.
    NoClientId,
    /// Server Identifier present where it must not be, or missing where it must be.
    ServerIdRule,
    /// Addressed to another server (Server Identifier is not ours).
    OtherServer,
    /// No configured subnet matches the link the client is on.
    NoSubnet,
    /// Confirm without addresses, or Information-request with IAs: RFC says stay silent.
    NothingToAnswer,
    /// The failover state does not let this server answer this message now.
    NotServing,
    /// Over `limits.client_rate_per_sec` for this client DUID.
    RateLimitedClient,
    /// Over `limits.source_rate_per_sec` for this source address.
    RateLimitedSource,
    /// A Renew or Rebind names a binding this server does not hold, or a Leasequery finds
    /// none, while the server is still catching up with its partner's updates (see
    /// [`Policy::catching_up`]).
    CatchingUp,
}

/// Which client messages this server answers in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// None (STARTUP, RECOVER, RECOVER-WAIT, POTENTIAL-CONFLICT).
    Nobody,
    /// Only messages carrying a Server Identifier (Request, Renew, Release, Decline; §16
    /// drops those naming another server). New leases still need `Rules` to allow them.
    AddressedToUs,
    /// Every client.
    Everyone,
}

/// What the failover state lets the engine do; a server without a partner does everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Which client messages to answer.
    pub answering: Answering,
    /// What may be allocated and how long leases may run.
    pub rules: Rules,
    /// The partner's updates from before the link came up have not all arrived (our update
    /// request has no UPDDONE yet): a Renew or Rebind naming a binding this server does not
    /// hold for the client gets no answer rather than NoBinding, since the binding may be
    /// on its way. The client retransmits and is answered once the server has caught up.
    pub catching_up: bool,
}

impl Policy {
    /// A server on its own.
    pub const STANDALONE: Policy = Policy {
        answering: Answering::Everyone,
        rules: Rules::STANDALONE,
        catching_up: false,
    };

    /// This policy with no new lease allowed (bindings in use are still renewed): what a
    /// server whose store is nearly full does.
    pub fn without_new_leases(mut self) -> Policy {
        self.rules.owned = [false, false];
        self.rules.partner_from = None;
        self
    }
}

/// The most careful of `policies` (answering the fewest, catching up if any is): what applies
/// where no one relationship does. None: a server on its own.
fn strictest(policies: &[Policy]) -> Policy {
    let rank = |a: Answering| match a {
        Answering::Nobody => 0,
        Answering::AddressedToUs => 1,
        Answering::Everyone => 2,
    };
    let mut out = match policies.first() {
        Some(p) => *p,
        None => return Policy::STANDALONE,
    };
    for p in &policies[1..] {
        if rank(p.answering) < rank(out.answering) {
            out = Policy {
                catching_up: out.catching_up,
                ..*p
            };
        }
        out.catching_up |= p.catching_up;
    }
    out
}

impl Dropped {
    /// Short stable label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Dropped::Malformed(e) => e.kind(),
            Dropped::NotForServer(_) => "not_for_server",
            Dropped::NoClientId => "no_client_id",
            Dropped::ServerIdRule => "server_id_rule",
            Dropped::OtherServer => "other_server",
            Dropped::NoSubnet => "no_subnet",
            Dropped::NothingToAnswer => "nothing_to_answer",
            Dropped::NotServing => "not_serving",
            Dropped::RateLimitedClient => "rate_limited_client",
            Dropped::RateLimitedSource => "rate_limited_source",
            Dropped::CatchingUp => "catching_up",
        }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dropped::Malformed(e) => write!(f, "malformed: {e}"),
            Dropped::NotForServer(t) => write!(f, "{t:?} is not a message a server answers"),
            Dropped::NoClientId => f.write_str("no Client Identifier option"),
            Dropped::ServerIdRule => {
                f.write_str("Server Identifier present or missing against RFC 8415 §16")
            }
            Dropped::OtherServer => f.write_str("addressed to another server"),
            Dropped::NoSubnet => f.write_str("no subnet configured for the client's link"),
            Dropped::NothingToAnswer => f.write_str("nothing to answer"),
            Dropped::NotServing => f.write_str("failover state does not answer this now"),
            Dropped::RateLimitedClient => {
                f.write_str("the client sent more than limits.client_rate_per_sec")
            }
            Dropped::RateLimitedSource => f.write_str(
                "the source (relay or client address) sent more than limits.source_rate_per_sec",
            ),
            Dropped::CatchingUp => f.write_str(
                "asks about a binding this server has not heard of while it catches up with its partner",
            ),
        }
    }
}

/// What the engine did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `reply` holds a message to send back to the source. If `writes` is not empty they must
    /// be durable before it is sent.
    Reply {
        /// The client's message type (innermost, for relayed messages).
        answered: MessageType,
    },
    /// Nothing to send.
    Dropped(Dropped),
}

/// The DHCPv6 server logic, shared by every worker.
pub struct Engine {
    config: Arc<Config>,
    duid: Box<[u8]>,
    alloc: Arc<Allocator>,
    /// For each subnet (by index), the relationship whose policy it is served under (empty
    /// without failover: every subnet under the first policy).
    relationship_of: Box<[usize]>,
    /// The subnets by what selects them (link selection without a scan).
    links: crate::config::links::LinkIndex,
}

/// Buffers a worker reuses from packet to packet so the hot path does not allocate.
#[derive(Default)]
pub struct Scratch {
    inner: Vec<u8>,
    /// The relay data of the message being answered (`wire::relay_data`).
    relay: Vec<u8>,
    /// This worker's rate-limit buckets.
    pub limiter: crate::limits::RateLimiter,
}

impl Engine {
    /// An engine with the server's DUID and the shared lease table.
    pub fn new(config: Arc<Config>, duid: Box<[u8]>, alloc: Arc<Allocator>) -> Self {
        Engine {
            relationship_of: config.relationship_of_subnets().into(),
            links: crate::config::links::LinkIndex::new(&config.subnets),
            config,
            duid,
            alloc,
        }
    }

    /// The policy subnet index `sn` is served under: its relationship's (m-to-1: each
    /// relationship has its own state); with no subnet, the most careful of them all.
    /// `policies` holds one per relationship, in configuration order; empty: on its own.
    fn policy_for(&self, policies: &[Policy], sn: Option<usize>) -> Policy {
        match sn {
            Some(i) => policies
                .get(self.relationship_of.get(i).copied().unwrap_or(0))
                .or(policies.first())
                .copied()
                .unwrap_or(Policy::STANDALONE),
            None => strictest(policies),
        }
    }

    /// IAs answered per message (`limits.ias_per_message_max`, within the fixed bound).
    fn ias_max(&self) -> usize {
        (self.config.limits.ias_per_message_max as usize).min(IAS_PER_MESSAGE_MAX)
    }

    /// The server DUID.
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// The configuration this engine answers with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The lease table.
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// Answers one Bulk Leasequery message `bytes` (RFC 5460) received over TCP from
    /// `requestor` at `now_secs`: the answer, to be written out message by message. Errors:
    /// the message is dropped (not a LEASEQUERY, malformed, discarded by RFC 5007 §4.2.1, or
    /// the failover state answers nobody).
    pub fn answer_bulk_leasequery(
        &self,
        policies: &[Policy],
        requestor: Ipv6Addr,
        now_secs: u64,
        bytes: &[u8],
    ) -> Result<crate::leasequery::BulkAnswer, Dropped> {
        let msg = Message::parse(bytes).map_err(Dropped::Malformed)?;
        if msg.msg_type() != MessageType::Leasequery {
            return Err(Dropped::NotForServer(msg.msg_type()));
        }
        let cx = self.leasequery_ctx(policies, requestor, now_secs)?;
        crate::leasequery::answer_bulk(&cx, &msg)
    }

    /// What a Leasequery from `requestor` is answered with, over UDP or TCP; none while the
    /// failover state answers nobody (a server that is recovering does not know every binding
    /// yet). A query may be about any subnet, so with several relationships the most careful
    /// state of them all decides.
    fn leasequery_ctx(
        &self,
        policies: &[Policy],
        requestor: Ipv6Addr,
        now_secs: u64,
    ) -> Result<crate::leasequery::Ctx<'_>, Dropped> {
        let policy = strictest(policies);
        if policy.answering == Answering::Nobody {
            return Err(Dropped::NotServing);
        }
        Ok(crate::leasequery::Ctx {
            config: &self.config,
            alloc: &self.alloc,
            server_duid: &self.duid,
            now_secs,
            requestor,
            catching_up: policy.catching_up,
        })
    }

    /// Handles one datagram. On [`Outcome::Reply`], `reply` holds the bytes to send to
    /// `rx.src`; `writes` gets every lease change, which must be committed before sending.
    pub fn handle(
        &self,
        rx: &Received,
        reply: &mut Vec<u8>,
        scratch: &mut Scratch,
        writes: &mut Vec<Lease>,
    ) -> Outcome {
        self.handle_with(&[], rx, reply, scratch, writes)
    }

    /// [`Engine::handle`] under failover: `policies` holds one [`Policy`] per relationship,
    /// in configuration order (a client is served under its subnet's relationship's).
    pub fn handle_with(
        &self,
        policies: &[Policy],
        rx: &Received,
        reply: &mut Vec<u8>,
        scratch: &mut Scratch,
        writes: &mut Vec<Lease>,
    ) -> Outcome {
        reply.clear();
        let relayed = match wire::unwrap_relays(rx.bytes) {
            Ok(r) => r,
            Err(WireError::UnexpectedRelay(t)) => {
                return Outcome::Dropped(Dropped::NotForServer(t));
            }
            Err(e) => return Outcome::Dropped(Dropped::Malformed(e)),
        };
        let msg = match Message::parse(relayed.inner()) {
            Ok(m) => m,
            Err(e) => return Outcome::Dropped(Dropped::Malformed(e)),
        };
        // Abuse limits: per source (relay, or client on the link), then per client DUID.
        let limits = &self.config.limits;
        if !scratch
            .limiter
            .allow_source(limits, *rx.src.ip(), rx.now_ms)
        {
            return Outcome::Dropped(Dropped::RateLimitedSource);
        }
        if let Some(duid) = msg.client_id()
            && !scratch.limiter.allow_client(limits, duid, rx.now_ms)
        {
            return Outcome::Dropped(Dropped::RateLimitedClient);
        }
        let hops = relayed.hops();
        let is_relayed = !hops.is_empty();
        let ty = msg.msg_type();
        let out = if is_relayed {
            &mut scratch.inner
        } else {
            &mut *reply
        };
        // The relay closest to the client: where a line's identifiers are.
        let line = hops.len().checked_sub(1).map(|i| relayed.hop_options(i));
        // What the relays said, kept with what this message grants or renews.
        if is_relayed
            && matches!(
                ty,
                MessageType::Solicit
                    | MessageType::Request
                    | MessageType::Renew
                    | MessageType::Rebind
            )
        {
            wire::relay_data::encode(&relayed, *rx.src.ip(), &mut scratch.relay);
        } else {
            scratch.relay.clear();
        }
        let r = self.answer(policies, rx, &msg, hops, line, &scratch.relay, out, writes);
        if let Err(d) = r {
            writes.clear();
            reply.clear();
            return Outcome::Dropped(d);
        }
        if is_relayed && let Err(e) = wire::try_wrap_relay_reply(hops, &scratch.inner, reply) {
            writes.clear();
            reply.clear();
            return Outcome::Dropped(Dropped::Malformed(e));
        }
        Outcome::Reply { answered: ty }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        policies: &[Policy],
        rx: &Received,
        msg: &Message,
        hops: &[RelayHop],
        line: Option<OptionIter>,
        relay: &[u8],
        out: &mut Vec<u8>,
        writes: &mut Vec<Lease>,
    ) -> Result<(), Dropped> {
        use MessageType as T;
        let ty = msg.msg_type();
        // RFC 5007: a requestor asks directly.
        if ty == T::Leasequery && hops.is_empty() {
            let cx = self.leasequery_ctx(policies, *rx.src.ip(), rx.now_secs)?;
            return crate::leasequery::answer(&cx, msg, out);
        }
        if !matches!(
            ty,
            T::Solicit
                | T::Request
                | T::Confirm
                | T::Renew
                | T::Rebind
                | T::Release
                | T::Decline
                | T::InformationRequest
        ) {
            return Err(Dropped::NotForServer(ty));
        }
        // RFC 8415 §16: which messages must, and must not, carry our Server Identifier.
        match (ty, msg.server_id()) {
            (T::Solicit | T::Confirm | T::Rebind, Some(_)) => return Err(Dropped::ServerIdRule),
            (T::Request | T::Renew | T::Release | T::Decline, None) => {
                return Err(Dropped::ServerIdRule);
            }
            (_, Some(s)) if s != &*self.duid => return Err(Dropped::OtherServer),
            _ => {}
        }
        // The client's link: its subnet, and so the failover relationship it is served under.
        let sn = self.select_subnet(hops, rx.src.ip(), rx.interface);
        let policy = &self.policy_for(policies, sn);
        // Failover: a server in NORMAL as secondary (hot standby) or in RECOVER-DONE answers
        // only what is addressed to it; in STARTUP, RECOVER or POTENTIAL-CONFLICT nothing.
        match policy.answering {
            Answering::Everyone => {}
            Answering::AddressedToUs if msg.server_id().is_some() => {}
            _ => return Err(Dropped::NotServing),
        }
        let client_id = msg.client_id();
        if client_id.is_none() && ty != T::InformationRequest {
            return Err(Dropped::NoClientId);
        }
        let duid = client_id.unwrap_or(&[]);
        // Made once for all of the message's IAs, when a new record first needs them.
        let bytes = MessageBytes::default();
        if ty == T::InformationRequest {
            if msg.ia_nas().next().is_some() || msg.ia_pds().next().is_some() {
                return Err(Dropped::NothingToAnswer);
            }
            // Stateless DHCPv6 (RFC 8415 §18.3.6): the options of the client's link, or the
            // global ones when no subnet covers it.
            let options = sn.map_or(&self.config.options, |i| &self.config.subnets[i].options);
            let mut w = self.start(out, T::Reply, msg, hops);
            put_requested(&mut w, msg, ty, options, &UsedPools::default(), None, None);
            return Ok(());
        }
        let subnet = sn.ok_or(Dropped::NoSubnet)?;
        let sub = &self.config.subnets[subnet];
        let reservation = find_reservation(sub, duid, line);
        // RFC 6603: Prefix Exclude only to a client that asked for it.
        let wants_exclude = msg.oro().take(ORO_CODES_MAX).any(|c| c == opt::PD_EXCLUDE);
        let excluded = |g: &Granted| -> Option<Exclude> {
            if !wants_exclude {
                return None;
            }
            sub.pools
                .iter()
                .find(|p| {
                    p.kind == ResourceKind::Prefix
                        && p.resource_len == g.prefix_len
                        && p.index_of(g.addr).is_some()
                })
                .and_then(|p| p.excluded)
                .map(|x| x.encode(g.prefix_len))
        };
        let reserved_options = reservation.map(|(_, r)| r.options());
        // The options the client asked for, after its IAs (with the pools they came from).
        let options_for = |w: &mut MessageWriter, used: &UsedPools, pools: bool| {
            put_requested(
                w,
                msg,
                ty,
                &sub.options,
                used,
                pools.then_some(sub),
                reserved_options,
            )
        };
        // RFC 8415 §18.4: unicast to a server that never offered unicast → UseMulticast.
        if hops.is_empty()
            && !rx.multicast
            && self.config.server.unicast_address.is_none()
            && matches!(ty, T::Request | T::Renew | T::Release | T::Decline)
        {
            let mut w = self.start(out, T::Reply, msg, hops);
            w.status(StatusCode::UseMulticast, "send to ff02::1:2");
            return Ok(());
        }
        let now = rx.now_secs;
        let lt = self.config.subnets[subnet].lifetimes;
        match ty {
            T::Solicit | T::Request => {
                let rapid = ty == T::Solicit && msg.rapid_commit() && sub.rapid_commit;
                let (reply_ty, mode) = match (ty, rapid) {
                    (T::Solicit, false) => (
                        T::Advertise,
                        AcquireMode::Offer {
                            hold_secs: self.config.server.offer_hold_secs,
                        },
                    ),
                    _ => (T::Reply, AcquireMode::Grant),
                };
                let mut w = self.start(out, reply_ty, msg, hops);
                if rapid {
                    w.empty_option(opt::RAPID_COMMIT);
                }
                if reply_ty == T::Advertise
                    && let Some(p) = self.config.server.preference
                {
                    w.option(opt::PREFERENCE, &[p]);
                }
                let mut any = false;
                let mut used = UsedPools::default();
                for ia in ia_requests(msg, self.ias_max()) {
                    let c = ia.client(subnet, duid, relay, reservation, &bytes);
                    let mut hints = [Ipv6Addr::UNSPECIFIED; RESOURCES_PER_IA_MAX];
                    for (h, (a, _)) in hints.iter_mut().zip(ia.named()) {
                        *h = *a;
                    }
                    let hints = &hints[..ia.named().len()];
                    match self
                        .alloc
                        .acquire(now, &c, hints, mode, &policy.rules, writes)
                    {
                        Some(g) => {
                            any = true;
                            used.note(sub, ia.kind, g.addr);
                            let (t1, t2) = timers(&lt, g.preferred_secs);
                            write_ia(&mut w, ia.kind, ia.iaid, t1, t2, |o| {
                                put_resource(o, ia.kind, &g, excluded(&g))
                            });
                        }
                        None => write_ia(&mut w, ia.kind, ia.iaid, 0, 0, |o| {
                            let (code, text) = match ia.kind {
                                ResourceKind::Address => {
                                    (StatusCode::NoAddrsAvail, "no addresses available")
                                }
                                ResourceKind::Prefix => {
                                    (StatusCode::NoPrefixAvail, "no prefixes available")
                                }
                            };
                            o.status(code, text)
                        }),
                    }
                }

                // RFC 8415 §18.3.9 (RFC 3315 §17.2.2): an Advertise that will assign nothing
                // carries only the status and the two identifiers (some clients choke on empty
                // IAs in an Advertise).
                if !any && reply_ty == T::Advertise {
                    let mut w = MessageWriter::new(out, reply_ty, msg.transaction_id());
                    w.server_id(&self.duid);
                    w.client_id(duid);
                    w.status(StatusCode::NoAddrsAvail, "nothing available for any IA");
                    // Requested options still go (SOL_MAX_RT exists to slow such clients).
                    options_for(&mut w, &used, false);
                } else {
                    options_for(&mut w, &used, true);
                }
            }
            T::Renew | T::Rebind => {
                // Back in touch with the partner but not caught up: a binding we do not hold
                // may be in the partner's backlog. Silence, not NoBinding: the client retries
                // and keeps its lease (issue 10 item 4). Checked before anything changes.
                if policy.catching_up {
                    for ia in ia_requests(msg, self.ias_max()) {
                        let c = ia.client(subnet, duid, relay, reservation, &bytes);
                        if ia
                            .named()
                            .iter()
                            .any(|(addr, len)| !self.alloc.holds(&c, *addr, *len))
                        {
                            return Err(Dropped::CatchingUp);
                        }
                    }
                }
                let mut w = self.start(out, T::Reply, msg, hops);
                let mut used = UsedPools::default();
                for ia in ia_requests(msg, self.ias_max()) {
                    let c = ia.client(subnet, duid, relay, reservation, &bytes);
                    let mut results =
                        [(Ipv6Addr::UNSPECIFIED, 0u8, Extended::NotInPool); RESOURCES_PER_IA_MAX];
                    for (r, (addr, len)) in results.iter_mut().zip(ia.named()) {
                        *r = (
                            *addr,
                            *len,
                            self.alloc
                                .extend(now, &c, *addr, *len, true, &policy.rules, writes),
                        );
                    }
                    let results = &results[..ia.named().len()];
                    let fallback = self.renew_fallback(now, &c, results, &policy.rules, writes);
                    for r in results {
                        if let Extended::Extended(g) = r.2 {
                            used.note(sub, ia.kind, g.addr);
                        }
                    }
                    if let Some(g) = fallback {
                        used.note(sub, ia.kind, g.addr);
                    }
                    let (t1, t2) = timers(&lt, shortest_preferred(results, fallback));
                    write_ia(&mut w, ia.kind, ia.iaid, t1, t2, |o| {
                        renewed(o, results, fallback, ia.kind, &excluded)
                    });
                }
                options_for(&mut w, &used, true);
            }
            T::Release | T::Decline => {
                let hold = (ty == T::Decline).then_some(self.config.server.decline_hold_secs);
                let mut w = self.start(out, T::Reply, msg, hops);
                w.status(
                    StatusCode::Success,
                    if hold.is_some() {
                        "declined"
                    } else {
                        "released"
                    },
                );
                for ia in ia_requests(msg, self.ias_max()) {
                    let c = ia.client(subnet, duid, relay, reservation, &bytes);
                    let mut all = true;
                    for (addr, _) in ia.named() {
                        all &= self.alloc.end(now, &c, *addr, hold, writes);
                    }
                    if !all {
                        write_ia(&mut w, ia.kind, ia.iaid, 0, 0, |o| {
                            o.status(StatusCode::NoBinding, "no binding for this IA")
                        });
                    }
                }
            }
            T::Confirm => {
                let mut seen = false;
                let mut on_link = true;
                for ia in msg.ia_nas().take(self.ias_max()) {
                    for a in ia.addresses().take(RESOURCES_PER_IA_MAX) {
                        seen = true;
                        on_link &= sub.on_link(a.addr);
                    }
                }
                if !seen {
                    return Err(Dropped::NothingToAnswer);
                }
                let mut w = self.start(out, T::Reply, msg, hops);
                if on_link {
                    w.status(StatusCode::Success, "all addresses on link");
                } else {
                    w.status(StatusCode::NotOnLink, "some addresses are not on this link");
                }
            }
            _ => unreachable!("filtered above"),
        }
        Ok(())
    }

    /// When a Renew/Rebind named nothing the server could extend, the lease the client holds
    /// for the IA (if any) is extended and returned too (RFC 8415 §18.3.4: new addresses may
    /// be added to the IA).
    fn renew_fallback(
        &self,
        now: u64,
        c: &ClientIa,
        results: &[(Ipv6Addr, u8, Extended)],
        rules: &Rules,
        writes: &mut Vec<Lease>,
    ) -> Option<Granted> {
        if results.iter().any(|r| matches!(r.2, Extended::Extended(_))) {
            return None;
        }
        let cur = self.alloc.current(c)?;
        match self
            .alloc
            .extend(now, c, cur.addr, cur.prefix_len, false, rules, writes)
        {
            Extended::Extended(g) => Some(g),
            _ => None,
        }
    }

    fn start<'b>(
        &self,
        out: &'b mut Vec<u8>,
        ty: MessageType,
        msg: &Message,
        hops: &[RelayHop],
    ) -> MessageWriter<'b> {
        let mut w = MessageWriter::new(out, ty, msg.transaction_id());
        w.server_id(&self.duid);
        if let Some(c) = msg.client_id() {
            w.client_id(c);
        }
        if hops.is_empty()
            && let Some(u) = self.config.server.unicast_address
        {
            w.option(opt::UNICAST, &u.octets());
        }
        w
    }

    /// Link selection (RFC 8415 §13.1): relayed messages by the link-address of the relay
    /// closest to the client (the innermost non-zero one) inside a subnet's prefix, else named
    /// in a subnet's `relay.addresses`; then by the closest relay's Interface-ID in a subnet's
    /// `relay.interface_ids`; then, when every link-address is zero, by the address the
    /// message came from in `relay.addresses`. Direct messages from a global source address
    /// by the subnet holding that address (the client was allowed unicast); other direct
    /// messages by the receiving interface, falling back to the first subnet not tied to an
    /// interface.
    fn select_subnet(
        &self,
        hops: &[RelayHop],
        src: &Ipv6Addr,
        interface: Option<&str>,
    ) -> Option<usize> {
        let links = &self.links;
        if !hops.is_empty() {
            let link = hops
                .iter()
                .rev()
                .find(|h| !h.link_address.is_unspecified())
                .map(|h| h.link_address);
            let by_link = link.and_then(|l| links.on_link(l).or_else(|| links.relay_address(&l)));
            let by_interface_id = || links.interface_id(hops.last()?.interface_id?);
            let by_source = || link.is_none().then(|| links.relay_address(src)).flatten();
            return by_link.or_else(by_interface_id).or_else(by_source);
        }
        if hops.is_empty()
            && !src.is_unicast_link_local()
            && let Some(p) = links.on_link(*src)
        {
            return Some(p);
        }
        if let Some(i) = interface
            && let Some(p) = links.interface(i)
        {
            return Some(p);
        }
        links.untied()
    }
}

/// One IA_NA or IA_PD of a client message with the addresses or prefixes it names (at most
/// [`RESOURCES_PER_IA_MAX`]), so each message type handles both kinds in one loop.
#[derive(Clone, Copy)]
struct IaRequest {
    kind: ResourceKind,
    iaid: u32,
    named: [(Ipv6Addr, u8); RESOURCES_PER_IA_MAX],
    n: usize,
}

impl IaRequest {
    /// The client IA this request is for, in subnet index `subnet`.
    fn client<'d>(
        &self,
        subnet: usize,
        duid: &'d [u8],
        relay: &'d [u8],
        reservation: Option<(u64, &'d Reservation)>,
        bytes: &'d MessageBytes,
    ) -> ClientIa<'d> {
        ClientIa {
            subnet,
            kind: self.kind,
            duid,
            iaid: self.iaid,
            reservation,
            relay,
            bytes: Some(bytes),
        }
    }

    fn new(kind: ResourceKind, iaid: u32, named: impl Iterator<Item = (Ipv6Addr, u8)>) -> Self {
        let mut r = IaRequest {
            kind,
            iaid,
            named: [(Ipv6Addr::UNSPECIFIED, 0); RESOURCES_PER_IA_MAX],
            n: 0,
        };
        for (slot, x) in r.named.iter_mut().zip(named) {
            *slot = x;
            r.n += 1;
        }
        r
    }
    fn named(&self) -> &[(Ipv6Addr, u8)] {
        &self.named[..self.n]
    }
}

/// The pools (indices in the subnet) of the resources a reply grants whose own options apply,
/// at most [`POOLS_WITH_OPTIONS_PER_REPLY_MAX`], in the order first granted.
#[derive(Default)]
struct UsedPools {
    idx: [usize; POOLS_WITH_OPTIONS_PER_REPLY_MAX],
    n: usize,
}

impl UsedPools {
    /// Notes the pool of `addr` if it has options of its own.
    fn note(&mut self, sub: &SubnetConfig, kind: ResourceKind, addr: Ipv6Addr) {
        if self.n == self.idx.len() {
            return;
        }
        let Some(i) = sub
            .pools
            .iter()
            .position(|p| p.kind == kind && !p.options.is_empty() && p.index_of(addr).is_some())
        else {
            return;
        };
        if !self.idx[..self.n].contains(&i) {
            self.idx[self.n] = i;
            self.n += 1;
        }
    }
}

/// Writes the options the client asked for in its Option Request option (RFC 8415 §18.3,
/// §21.7), each once, in the order asked: the client's reservation's value first, then a
/// pool's own (of the resources granted, in order), else `options` (the subnet's, global ones
/// underneath). Only requested options
/// are sent. Information Refresh Time and INF_MAX_RT go only in a Reply to an
/// Information-request (§21.23, §21.25); SOL_MAX_RT only in replies to the other messages.
#[allow(clippy::too_many_arguments)]
fn put_requested(
    w: &mut MessageWriter,
    msg: &Message,
    answering: MessageType,
    options: &OptionSet,
    used: &UsedPools,
    sub: Option<&SubnetConfig>,
    reserved: Option<&OptionSet>,
) {
    let info = answering == MessageType::InformationRequest;
    let mut done = [0u16; ORO_CODES_MAX];
    let mut n = 0;
    for code in msg.oro().take(ORO_CODES_MAX) {
        if done[..n].contains(&code) {
            continue;
        }
        done[n] = code;
        n += 1;
        let allowed = match code {
            opt::INFORMATION_REFRESH_TIME | opt::INF_MAX_RT => info,
            opt::SOL_MAX_RT => !info,
            _ => true,
        };
        if !allowed {
            continue;
        }
        let from_pool = sub.and_then(|s| {
            used.idx[..used.n]
                .iter()
                .map(|&i| &s.pools[i].options)
                .find(|o| o.contains(code))
        });
        let from_reservation = reserved.filter(|o| o.contains(code));
        for v in from_reservation.or(from_pool).unwrap_or(options).get(code) {
            w.option(code, v);
        }
    }
}

/// The client's reservation in `sub`, trying its identifiers in [`KeyKind::ALL`] order: its
/// DUID; its link-layer address (the innermost relay's Client Link-Layer Address option, else
/// the one in a DUID-LL or DUID-LLT); the innermost relay's Remote-ID, Subscriber-ID and
/// Interface-ID. One hash probe per kind some reservation uses.
fn find_reservation<'c>(
    sub: &'c SubnetConfig,
    duid: &[u8],
    line: Option<OptionIter>,
) -> Option<(u64, &'c Reservation)> {
    let rs = &sub.reservations;
    if rs.is_empty() {
        return None;
    }
    let relay_opt =
        |code: u16| -> Option<&[u8]> { line.clone()?.find(|o| o.code == code).map(|o| o.data) };
    for kind in KeyKind::ALL {
        if !rs.uses(kind) {
            continue;
        }
        let value = match kind {
            KeyKind::Duid => Some(duid),
            KeyKind::HwAddress => relay_opt(opt::CLIENT_LINKLAYER_ADDR)
                .and_then(|d| d.get(2..))
                .or_else(|| duid_link_layer(duid)),
            KeyKind::RemoteId => relay_opt(opt::REMOTE_ID),
            KeyKind::SubscriberId => relay_opt(opt::SUBSCRIBER_ID),
            KeyKind::InterfaceId => relay_opt(opt::INTERFACE_ID),
        };
        if let Some(id) = value
            .filter(|v| !v.is_empty())
            .and_then(|v| rs.find(kind, v))
        {
            let r = rs.get(id);
            return Some((r.key.stable_id(), r));
        }
    }
    None
}

/// The link-layer address inside a DUID-LLT (type 1) or DUID-LL (type 3), RFC 8415 §11.2/§11.4.
fn duid_link_layer(duid: &[u8]) -> Option<&[u8]> {
    match duid.first_chunk::<2>().map(|t| u16::from_be_bytes(*t)) {
        Some(1) => duid.get(8..),
        Some(3) => duid.get(4..),
        _ => None,
    }
    .filter(|a| !a.is_empty())
}

/// The message's IAs: IA_NAs first, then IA_PDs, at most `max` in all.
fn ia_requests<'m>(msg: &'m Message<'m>, max: usize) -> impl Iterator<Item = IaRequest> + 'm {
    let nas = msg.ia_nas().map(|ia| {
        IaRequest::new(
            ResourceKind::Address,
            ia.iaid,
            ia.addresses().map(|a| (a.addr, 128)),
        )
    });
    let pds = msg.ia_pds().map(|ia| {
        IaRequest::new(
            ResourceKind::Prefix,
            ia.iaid,
            ia.prefixes().map(|p| (p.prefix, p.prefix_len)),
        )
    });
    nas.chain(pds).take(max)
}

/// Writes an IA_NA or IA_PD, by kind.
fn write_ia(
    w: &mut MessageWriter,
    kind: ResourceKind,
    iaid: u32,
    t1: u32,
    t2: u32,
    body: impl FnOnce(&mut OptionWriter),
) {
    match kind {
        ResourceKind::Address => w.ia_na(iaid, t1, t2, body),
        ResourceKind::Prefix => w.ia_pd(iaid, t1, t2, body),
    }
}

/// Writes an IA Address or IA Prefix for a granted lease, by kind.
fn put_resource(o: &mut OptionWriter, kind: ResourceKind, g: &Granted, ex: Option<Exclude>) {
    match kind {
        ResourceKind::Address => put_addr(o, g),
        ResourceKind::Prefix => put_prefix(o, g, ex),
    }
}

/// OPTION_PD_EXCLUDE's data and its length.
type Exclude = ([u8; 17], usize);

/// T1 and T2 for an IA whose shortest preferred lifetime is `preferred`: the configured ones,
/// or, when failover capped the lifetime below the configured one, 1/2 and 4/5 of it.
fn timers(lt: &crate::config::Lifetimes, preferred: u32) -> (u32, u32) {
    if preferred >= lt.preferred_secs {
        (lt.t1_secs, lt.t2_secs)
    } else {
        (preferred / 2, (preferred as u64 * 4 / 5) as u32)
    }
}

/// The shortest preferred lifetime among the leases a Renew/Rebind extends (u32::MAX if none).
fn shortest_preferred(results: &[(Ipv6Addr, u8, Extended)], fallback: Option<Granted>) -> u32 {
    results
        .iter()
        .filter_map(|r| match r.2 {
            Extended::Extended(g) => Some(g.preferred_secs),
            _ => None,
        })
        .chain(fallback.map(|g| g.preferred_secs))
        .min()
        .unwrap_or(u32::MAX)
}

fn put_addr(o: &mut OptionWriter, g: &Granted) {
    o.ia_addr(g.addr, g.preferred_secs, g.valid_secs, |_| {});
}

fn put_prefix(o: &mut OptionWriter, g: &Granted, ex: Option<Exclude>) {
    o.ia_prefix(g.addr, g.prefix_len, g.preferred_secs, g.valid_secs, |o| {
        if let Some((data, n)) = &ex {
            o.option(opt::PD_EXCLUDE, &data[..*n]);
        }
    });
}

/// Writes a Renew/Rebind IA body: each named resource with new lifetimes, or lifetimes of 0
/// when the client may no longer use it; NoBinding when the IA ends up empty.
fn renewed(
    o: &mut OptionWriter,
    results: &[(Ipv6Addr, u8, Extended)],
    fallback: Option<Granted>,
    kind: ResourceKind,
    excluded: &dyn Fn(&Granted) -> Option<Exclude>,
) {
    let mut any = false;
    for (addr, len, r) in results {
        match (r, kind) {
            (Extended::Extended(g), ResourceKind::Address) => put_addr(o, g),
            (Extended::Extended(g), ResourceKind::Prefix) => put_prefix(o, g, excluded(g)),
            (_, ResourceKind::Address) => o.ia_addr(*addr, 0, 0, |_| {}),
            (_, ResourceKind::Prefix) => o.ia_prefix(*addr, *len, 0, 0, |_| {}),
        }
        any |= matches!(r, Extended::Extended(_));
    }
    if let Some(g) = fallback {
        any = true;
        match kind {
            ResourceKind::Address => put_addr(o, &g),
            ResourceKind::Prefix => put_prefix(o, &g, excluded(&g)),
        }
    }
    if !any {
        o.status(StatusCode::NoBinding, "no binding for this IA");
    }
}
