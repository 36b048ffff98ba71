//! DHCPv6 Leasequery (RFC 5007) over UDP: a requestor (a BNG or PE router rebuilding its routes
//! to delegated prefixes after a reboot) asks which client holds an address or prefix, or what
//! a client holds. Read-only: a LEASEQUERY never changes a binding.
//!
//! Queries: QUERY_BY_ADDRESS (the lease on an address, or the delegated prefix containing it)
//! and QUERY_BY_CLIENTID (every binding of a client on a link; with link-address 0::0 and
//! bindings on several links, the list of links instead). Only requestors in
//! `[leasequery] requestors` are answered; the others get NotAllowed. The query's own ORO may
//! ask for OPTION_LQ_RELAY_DATA: the relay data kept with the client's most recently granted or
//! renewed binding (`wire::relay_data`), inside OPTION_CLIENT_DATA (RFC 5007 §4.1.2.2, §4.1.2.4).
//! Bulk Leasequery's query types (RFC 5460: by relay id, link address, remote id) get NotAllowed
//! over UDP, as RFC 5460 §4 says.
//!
//! Bulk Leasequery (RFC 5460) is answered here too, sans-IO ([`answer_bulk`]): the edge reads
//! length-prefixed queries from a TCP connection and writes the messages of the
//! [`BulkAnswer`] back. Over TCP the queries may also ask by Relay-ID, by link address, and by
//! Remote-ID; those walk the lease table (there is no index by relay identifier yet).

use crate::config::Config;
use crate::engine::Dropped;
use crate::lease::Lease;
use crate::pool::Allocator;
use crate::wire::relay_data::{RELAY_ID, RelayData};
use crate::wire::{Message, MessageType, MessageWriter, OptionIter, StatusCode, opt};
use std::net::Ipv6Addr;

/// RFC 5007 query types.
const QUERY_BY_ADDRESS: u8 = 1;
const QUERY_BY_CLIENTID: u8 = 2;
/// RFC 5460 query types, for Bulk Leasequery over TCP only (4 is QUERY_BY_LINK_ADDRESS).
const QUERY_BY_RELAY_ID: u8 = 3;
const QUERY_BY_REMOTE_ID: u8 = 5;

/// Most bindings one client's OPTION_CLIENT_DATA lists; a client holds a few, this bounds a
/// reply to a crafted table.
pub const BINDINGS_PER_REPLY_MAX: usize = 64;
/// Most links an OPTION_LQ_CLIENT_LINK lists (16 bytes each, well inside one option).
pub const LINKS_PER_REPLY_MAX: usize = 256;
/// Most bindings one Bulk Leasequery answer holds (they are held as leases until the last
/// message is written); a query finding more is answered QueryTerminated, to be narrowed by
/// link-address.
pub const BULK_BINDINGS_MAX: usize = 1 << 20;

/// What a Leasequery answer needs to know.
pub struct Ctx<'a> {
    /// The running configuration (subnets, `[leasequery]`).
    pub config: &'a Config,
    /// The lease table.
    pub alloc: &'a Allocator,
    /// This server's DUID.
    pub server_duid: &'a [u8],
    /// Now, unix seconds.
    pub now_secs: u64,
    /// The requestor's address (the datagram's or connection's source).
    pub requestor: Ipv6Addr,
    /// Failover: still catching up with the partner ([`crate::engine::Policy::catching_up`]).
    /// A query that finds no binding then gets no answer rather than "none" (over TCP:
    /// QueryTerminated): the binding may be on its way, and a relay told "none" could drop
    /// its route.
    pub catching_up: bool,
}

/// A query, checked (RFC 5007 §4.1.2.1, RFC 5460 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query<'m> {
    /// The binding on an address or the delegated prefix holding it, in subnet index `subnet`.
    Address { addr: Ipv6Addr, subnet: usize },
    /// A client's bindings, on one link or all.
    ClientId {
        duid: &'m [u8],
        on_link: Option<usize>,
    },
    /// Bindings last granted or renewed through the relay with this Relay-ID (RFC 5460).
    RelayId {
        id: &'m [u8],
        on_link: Option<usize>,
    },
    /// Every binding on a link (RFC 5460).
    LinkAddress { subnet: usize },
    /// Bindings whose relay closest to the client sent this Remote-ID option (RFC 5460).
    RemoteId {
        id: &'m [u8],
        on_link: Option<usize>,
    },
}

/// A LEASEQUERY's identifiers and its query, or the status that refuses it.
struct Asked<'m> {
    xid: u32,
    requestor_id: &'m [u8],
    /// The query, or why it is refused.
    query: Result<Query<'m>, (StatusCode, &'static str)>,
    /// The query's own ORO asks for OPTION_LQ_RELAY_DATA.
    with_relay_data: bool,
}

/// Checks a LEASEQUERY. Discards what RFC 5007 §4.2.1 says to discard (no requestor id,
/// another server's id, no query option); anything else gets an answer, maybe a refusal.
/// `bulk`: received over TCP, where RFC 5460's query types are allowed.
fn ask<'m>(cx: &Ctx, msg: &Message<'m>, bulk: bool) -> Result<Asked<'m>, Dropped> {
    let requestor_id = msg.client_id().ok_or(Dropped::NoClientId)?;
    if msg.server_id().is_some_and(|s| s != cx.server_duid) {
        return Err(Dropped::OtherServer);
    }
    let query = msg.first(opt::LQ_QUERY).ok_or(Dropped::NothingToAnswer)?;
    let mut asked = Asked {
        xid: msg.transaction_id(),
        requestor_id,
        query: Err((StatusCode::Success, "")),
        with_relay_data: false,
    };
    asked.query = check_query(cx, query, bulk, &mut asked.with_relay_data);
    Ok(asked)
}

fn check_query<'m>(
    cx: &Ctx,
    query: &'m [u8],
    bulk: bool,
    with_relay_data: &mut bool,
) -> Result<Query<'m>, (StatusCode, &'static str)> {
    use StatusCode as S;
    if !cx.config.leasequery.allows(&cx.requestor) {
        return Err((
            S::NotAllowed,
            "this requestor is not in leasequery.requestors",
        ));
    }
    let (&query_type, rest) = query
        .split_first()
        .ok_or((S::MalformedQuery, "empty query option"))?;
    let (link, query_options) = rest
        .split_first_chunk::<16>()
        .ok_or((S::MalformedQuery, "query option without link-address"))?;
    let link = Ipv6Addr::from(*link);
    let is_bulk_type = (QUERY_BY_RELAY_ID..=QUERY_BY_REMOTE_ID).contains(&query_type);
    if is_bulk_type && !bulk {
        return Err((
            S::NotAllowed,
            "bulk leasequery query-types are for TCP only (RFC 5460 section 4)",
        ));
    }
    if !is_bulk_type && !matches!(query_type, QUERY_BY_ADDRESS | QUERY_BY_CLIENTID) {
        return Err((S::UnknownQueryType, "query-type not supported"));
    }
    // The query's options must be well-formed before anything is looked up: the walk (which
    // stops at the first bad header) must cover every byte.
    let walked: usize = OptionIter::new(query_options)
        .map(|o| crate::wire::OPTION_HEADER_LEN + o.data.len())
        .sum();
    if walked != query_options.len() {
        return Err((S::MalformedQuery, "query options do not parse"));
    }
    let find = |code: u16| -> Option<&'m [u8]> {
        OptionIter::new(query_options)
            .find(|o| o.code == code)
            .map(|o| o.data)
    };
    // What the requestor asks to have with each client's data (RFC 5007 §4.1.2.1).
    *with_relay_data = find(opt::ORO).is_some_and(|oro| {
        oro.chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == opt::LQ_RELAY_DATA)
    });
    // A non-zero link-address names the link (RFC 5007 §4.4.1, RFC 5460 §7.2).
    let on_link = if link.is_unspecified() {
        None
    } else {
        Some(
            subnet_of(cx.config, link)
                .ok_or((S::NotConfigured, "no subnet for this link-address"))?,
        )
    };
    let needs = |code: u16, why: &'static str| {
        find(code)
            .filter(|d| !d.is_empty())
            .ok_or((S::MalformedQuery, why))
    };
    Ok(match query_type {
        QUERY_BY_ADDRESS => {
            // An IA Address option is at least address and two lifetimes (24 bytes).
            let addr = find(opt::IAADDR)
                .filter(|d| d.len() >= 24)
                .and_then(|d| d.first_chunk::<16>())
                .map(|a| Ipv6Addr::from(*a))
                .ok_or((
                    S::MalformedQuery,
                    "QUERY_BY_ADDRESS needs an IA Address option",
                ))?;
            let subnet = on_link
                .or_else(|| subnet_holding(cx.config, addr))
                .ok_or((S::NotConfigured, "the address is in no configured subnet"))?;
            Query::Address { addr, subnet }
        }
        QUERY_BY_CLIENTID => Query::ClientId {
            duid: needs(
                opt::CLIENTID,
                "QUERY_BY_CLIENTID needs a Client Identifier option",
            )?,
            on_link,
        },
        QUERY_BY_RELAY_ID => Query::RelayId {
            id: needs(RELAY_ID, "QUERY_BY_RELAY_ID needs a Relay-ID option")?,
            on_link,
        },
        QUERY_BY_REMOTE_ID => Query::RemoteId {
            // Enterprise number and at least one byte of id.
            id: find(opt::REMOTE_ID).filter(|d| d.len() > 4).ok_or((
                S::MalformedQuery,
                "QUERY_BY_REMOTE_ID needs a Remote-ID option",
            ))?,
            on_link,
        },
        _ => Query::LinkAddress {
            subnet: on_link.ok_or((
                S::MalformedQuery,
                "QUERY_BY_LINK_ADDRESS needs a link-address",
            ))?,
        },
    })
}

/// Answers one LEASEQUERY (received directly, not relayed) into `out`, or says why not.
pub(crate) fn answer(cx: &Ctx, msg: &Message, out: &mut Vec<u8>) -> Result<(), Dropped> {
    let asked = ask(cx, msg, false)?;
    let mut w = MessageWriter::new(out, MessageType::LeasequeryReply, asked.xid);
    w.server_id(cx.server_duid);
    w.client_id(asked.requestor_id);
    let query = match asked.query {
        Ok(q) => q,
        Err((code, why)) => {
            w.status(code, why);
            return Ok(());
        }
    };
    let with_relay_data = asked.with_relay_data;
    match query {
        Query::Address { addr, subnet: sn } => {
            // Only bindings with valid lifetime left (§4.1.2.2); one not yet reclaimed is over.
            if let Some(l) = cx
                .alloc
                .lease_covering(sn, addr)
                .filter(|l| l.expires_at > cx.now_secs)
            {
                // The client's data: every binding it has on that link.
                let mut all = cx.alloc.leases_of(&l.duid, Some(sn));
                all.retain(|(_, l)| l.expires_at > cx.now_secs);
                all.truncate(BINDINGS_PER_REPLY_MAX);
                let leases = all.iter().map(|(_, l)| l);
                client_data(&mut w, cx.now_secs, &l.duid, leases, with_relay_data);
            } else if cx.catching_up {
                return Err(Dropped::CatchingUp);
            }
        }
        Query::ClientId { duid, on_link } => {
            let mut all = cx.alloc.leases_of(duid, on_link);
            all.retain(|(_, l)| l.expires_at > cx.now_secs);
            let mut links: Vec<usize> = all.iter().map(|(s, _)| *s).collect();
            links.sort_unstable();
            links.dedup();
            if links.len() > 1 {
                // Several links and none named: the links, and no client data (§4.4.1).
                let addrs: Vec<Ipv6Addr> = links
                    .iter()
                    .take(LINKS_PER_REPLY_MAX)
                    .map(|&s| cx.config.subnets[s].prefix.addr)
                    .collect();
                w.option_addrs(opt::LQ_CLIENT_LINK, &addrs);
            } else if !all.is_empty() {
                all.truncate(BINDINGS_PER_REPLY_MAX);
                let leases = all.iter().map(|(_, l)| l);
                client_data(&mut w, cx.now_secs, duid, leases, with_relay_data);
            } else if cx.catching_up {
                return Err(Dropped::CatchingUp);
            }
        }
        // Refused in `check_query` over UDP.
        Query::RelayId { .. } | Query::LinkAddress { .. } | Query::RemoteId { .. } => {
            return Err(Dropped::NothingToAnswer);
        }
    }
    if w.overflowed() {
        // Bounded above so it cannot happen; never send a broken reply if it did.
        return Err(Dropped::NothingToAnswer);
    }
    Ok(())
}

/// One client's bindings on one link: what one OPTION_CLIENT_DATA carries.
struct ClientOnLink {
    duid: crate::lease::SharedBytes,
    leases: Vec<Lease>,
}

/// The refusal of a bulk query that could be answered only in part while the server catches
/// up with its failover partner.
const CATCHING_UP: (StatusCode, &str) = (
    StatusCode::QueryTerminated,
    "catching up with the failover partner; ask again",
);

/// The answer to one Bulk Leasequery (RFC 5460 §7.2): the bindings found (at most
/// [`BULK_BINDINGS_MAX`]), written out message by message with [`BulkAnswer::next_message`]
/// so a large answer is never held as bytes too: a LEASEQUERY-REPLY
/// (the status, or the first client's data), a LEASEQUERY-DATA for each further client, and a
/// LEASEQUERY-DONE when at least one binding was sent.
pub struct BulkAnswer {
    xid: u32,
    server_duid: Box<[u8]>,
    requestor_id: Box<[u8]>,
    refused: Option<(StatusCode, &'static str)>,
    clients: Vec<ClientOnLink>,
    with_relay_data: bool,
    now_secs: u64,
    /// Messages written so far.
    sent: usize,
}

impl BulkAnswer {
    /// How many clients' data the answer holds.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Writes the next message of the answer into `out` (cleared first); false once the
    /// answer is complete (`out` then empty).
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        let i = self.sent;
        let n = self.clients.len();
        // REPLY, then DATA for clients 1.., then DONE if there was any client.
        let last = if n == 0 { 1 } else { n + 1 };
        if i >= last {
            return false;
        }
        self.sent += 1;
        let ty = match i {
            0 => MessageType::LeasequeryReply,
            i if i < n => MessageType::LeasequeryData,
            _ => MessageType::LeasequeryDone,
        };
        let mut w = MessageWriter::new(out, ty, self.xid);
        if i == 0 {
            w.server_id(&self.server_duid);
            w.client_id(&self.requestor_id);
            if let Some((code, why)) = self.refused {
                w.status(code, why);
                return true;
            }
        }
        if let Some(c) = self.clients.get(i).filter(|_| i < n) {
            client_data(
                &mut w,
                self.now_secs,
                &c.duid,
                c.leases.iter(),
                self.with_relay_data,
            );
        }
        true
    }
}

/// Answers one Bulk Leasequery received over TCP (RFC 5460): the bindings it asks for, each
/// client's on each link in one OPTION_CLIENT_DATA (at most [`BINDINGS_PER_REPLY_MAX`] each).
/// While the server is catching up with its failover partner, a query that walks the table
/// (by relay, line or link) or finds nothing is answered QueryTerminated: the bindings may be
/// on their way, and a BNG must not take a partial answer for the whole (it asks again).
/// Errors: the LEASEQUERY is discarded (RFC 5007 §4.2.1).
pub fn answer_bulk(cx: &Ctx, msg: &Message) -> Result<BulkAnswer, Dropped> {
    let asked = ask(cx, msg, true)?;
    let mut answer = BulkAnswer {
        xid: asked.xid,
        server_duid: cx.server_duid.into(),
        requestor_id: asked.requestor_id.into(),
        refused: None,
        clients: Vec::new(),
        with_relay_data: asked.with_relay_data,
        now_secs: cx.now_secs,
        sent: 0,
    };
    let query = match asked.query {
        Ok(q) => q,
        Err(refusal) => {
            answer.refused = Some(refusal);
            return Ok(answer);
        }
    };
    let now = cx.now_secs;
    let live = |l: &Lease| l.state == crate::lease::LeaseState::Active && l.expires_at > now;
    let mut found: Vec<Lease> = Vec::new();
    match query {
        Query::Address { addr, subnet } => {
            if let Some(l) = cx.alloc.lease_covering(subnet, addr).filter(|l| live(l)) {
                found = cx
                    .alloc
                    .leases_of(&l.duid, Some(subnet))
                    .into_iter()
                    .map(|(_, l)| l)
                    .collect();
            }
        }
        Query::ClientId { duid, on_link } => {
            found = cx
                .alloc
                .leases_of(duid, on_link)
                .into_iter()
                .map(|(_, l)| l)
                .collect();
        }
        Query::LinkAddress { .. } | Query::RelayId { .. } | Query::RemoteId { .. }
            if cx.catching_up =>
        {
            answer.refused = Some(CATCHING_UP);
            return Ok(answer);
        }
        Query::LinkAddress { subnet } => {
            cx.alloc.for_each_lease_in(Some(subnet), |l| {
                if live(l) && found.len() <= BULK_BINDINGS_MAX {
                    found.push(l.clone());
                }
            });
        }
        Query::RelayId { id, on_link } | Query::RemoteId { id, on_link } => {
            let by_relay = matches!(query, Query::RelayId { .. });
            cx.alloc.for_each_lease_in(on_link, |l| {
                if !live(l) || found.len() > BULK_BINDINGS_MAX {
                    return;
                }
                let Some(d) = RelayData::new(&l.relay) else {
                    return;
                };
                let hit = if by_relay {
                    d.relay_ids().any(|r| r == id)
                } else {
                    d.remote_id() == Some(id)
                };
                if hit {
                    found.push(l.clone());
                }
            });
        }
    }
    found.retain(|l| live(l));
    if found.len() > BULK_BINDINGS_MAX {
        answer.refused = Some((
            StatusCode::QueryTerminated,
            "more bindings than one answer holds; narrow the query by link-address",
        ));
        return Ok(answer);
    }
    if found.is_empty() && cx.catching_up {
        answer.refused = Some(CATCHING_UP);
        return Ok(answer);
    }
    // One OPTION_CLIENT_DATA per client and link.
    found.sort_by(|a, b| {
        (a.subnet_id, &a.duid, a.kind.code(), a.addr).cmp(&(
            b.subnet_id,
            &b.duid,
            b.kind.code(),
            b.addr,
        ))
    });
    for l in found {
        match answer.clients.last_mut() {
            Some(c)
                if c.duid == l.duid
                    && c.leases.first().is_some_and(|f| f.subnet_id == l.subnet_id) =>
            {
                if c.leases.len() < BINDINGS_PER_REPLY_MAX {
                    c.leases.push(l);
                }
            }
            _ => answer.clients.push(ClientOnLink {
                duid: l.duid.clone(),
                leases: vec![l],
            }),
        }
    }
    Ok(answer)
}

/// OPTION_CLIENT_DATA (RFC 5007 §4.4.2): the client's identifier, its addresses and prefixes
/// with their remaining lifetimes, how long ago it last talked to us, and with
/// `with_relay_data` the relay data of its most recently renewed binding that has any.
fn client_data<'l>(
    w: &mut MessageWriter,
    now: u64,
    duid: &[u8],
    leases: impl Iterator<Item = &'l Lease> + Clone,
    with_relay_data: bool,
) {
    let last = leases.clone().map(|l| l.cltt).max().unwrap_or(now);
    let relay = leases
        .clone()
        .filter(|l| !l.relay.is_empty())
        .max_by_key(|l| l.cltt)
        .filter(|_| with_relay_data);
    w.nested(opt::CLIENT_DATA, &[], |o| {
        o.client_id(duid);
        if let Some(l) = relay {
            o.option(opt::LQ_RELAY_DATA, &l.relay);
        }
        for l in leases {
            let valid = l.expires_at.saturating_sub(now).min(u64::from(u32::MAX)) as u32;
            let preferred = (l.cltt + u64::from(l.preferred_secs))
                .saturating_sub(now)
                .min(u64::from(valid)) as u32;
            if l.prefix_len == 128 && l.kind == crate::config::ResourceKind::Address {
                o.ia_addr(l.addr, preferred, valid, |_| {});
            } else {
                o.ia_prefix(l.addr, l.prefix_len, preferred, valid, |_| {});
            }
        }
        // RFC 5007 §4.1.2.3: a positive number of seconds.
        let ago = now.saturating_sub(last).clamp(1, u64::from(u32::MAX)) as u32;
        o.option_u32(opt::CLT_TIME, ago);
    });
}

/// The subnet index a link-address names, as for client traffic: inside a subnet's prefix,
/// else listed in its `relay.addresses`.
fn subnet_of(config: &Config, link: Ipv6Addr) -> Option<usize> {
    let s = &config.subnets;
    s.iter()
        .position(|s| s.on_link(link))
        .or_else(|| s.iter().position(|s| s.relay_addresses.contains(&link)))
}

/// The subnet index that holds `addr`: the one with a pool covering it first (delegated
/// prefixes may lie inside another subnet's prefix), else the one on whose link it is.
fn subnet_holding(config: &Config, addr: Ipv6Addr) -> Option<usize> {
    let a = u128::from(addr);
    config
        .subnets
        .iter()
        .position(|s| s.pools.iter().any(|p| a >= p.first && a <= p.last_addr()))
        .or_else(|| subnet_of(config, addr))
}
