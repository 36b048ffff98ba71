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
//! over UDP, as RFC 5460 §4 says. Not here yet: Bulk Leasequery over TCP.

use crate::config::Config;
use crate::engine::Dropped;
use crate::lease::Lease;
use crate::pool::Allocator;
use crate::wire::{Message, MessageType, MessageWriter, OptionIter, StatusCode, opt};
use std::net::Ipv6Addr;

/// RFC 5007 query types.
const QUERY_BY_ADDRESS: u8 = 1;
const QUERY_BY_CLIENTID: u8 = 2;
/// RFC 5460 query types, for Bulk Leasequery over TCP only.
const QUERY_BY_RELAY_ID: u8 = 3;
const QUERY_BY_REMOTE_ID: u8 = 5;

/// Most bindings one client's OPTION_CLIENT_DATA lists; a client holds a few, this bounds a
/// reply to a crafted table.
pub const BINDINGS_PER_REPLY_MAX: usize = 64;
/// Most links an OPTION_LQ_CLIENT_LINK lists (16 bytes each, well inside one option).
pub const LINKS_PER_REPLY_MAX: usize = 256;

/// What the engine knows that a Leasequery answer needs.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub alloc: &'a Allocator,
    pub server_duid: &'a [u8],
    pub now_secs: u64,
    /// The requestor's address (the datagram's source).
    pub requestor: Ipv6Addr,
    /// Failover: still catching up with the partner ([`crate::engine::Policy::catching_up`]).
    /// A query that finds no binding then gets no answer rather than "none": the binding may
    /// be on its way, and a relay told "none" could drop its route.
    pub catching_up: bool,
}

/// Answers one LEASEQUERY (received directly, not relayed) into `out`, or says why not.
pub(crate) fn answer(cx: &Ctx, msg: &Message, out: &mut Vec<u8>) -> Result<(), Dropped> {
    // RFC 5007 §4.2.1: discard without a Client Identifier, with another server's
    // identifier, or without a Query option.
    let requestor_id = msg.client_id().ok_or(Dropped::NoClientId)?;
    if msg.server_id().is_some_and(|s| s != cx.server_duid) {
        return Err(Dropped::OtherServer);
    }
    let query = msg.first(opt::LQ_QUERY).ok_or(Dropped::NothingToAnswer)?;
    let mut w = MessageWriter::new(out, MessageType::LeasequeryReply, msg.transaction_id());
    w.server_id(cx.server_duid);
    w.client_id(requestor_id);
    if !cx.config.leasequery.allows(&cx.requestor) {
        w.status(
            StatusCode::NotAllowed,
            "this requestor is not in leasequery.requestors",
        );
        return Ok(());
    }
    let Some((&query_type, rest)) = query.split_first() else {
        w.status(StatusCode::MalformedQuery, "empty query option");
        return Ok(());
    };
    let Some((link, query_options)) = rest.split_first_chunk::<16>() else {
        w.status(
            StatusCode::MalformedQuery,
            "query option without link-address",
        );
        return Ok(());
    };
    let link = Ipv6Addr::from(*link);
    if (QUERY_BY_RELAY_ID..=QUERY_BY_REMOTE_ID).contains(&query_type) {
        w.status(
            StatusCode::NotAllowed,
            "bulk leasequery query-types are for TCP only (RFC 5460 section 4)",
        );
        return Ok(());
    }
    if !matches!(query_type, QUERY_BY_ADDRESS | QUERY_BY_CLIENTID) {
        w.status(StatusCode::UnknownQueryType, "query-type not supported");
        return Ok(());
    }
    // The query's options must be well-formed before anything is looked up: the walk (which
    // stops at the first bad header) must cover every byte.
    let walked: usize = OptionIter::new(query_options)
        .map(|o| crate::wire::OPTION_HEADER_LEN + o.data.len())
        .sum();
    if walked != query_options.len() {
        w.status(StatusCode::MalformedQuery, "query options do not parse");
        return Ok(());
    }
    let find = |code: u16| -> Option<&[u8]> {
        OptionIter::new(query_options)
            .find(|o| o.code == code)
            .map(|o| o.data)
    };
    // What the requestor asks to have with each client's data (RFC 5007 §4.1.2.1).
    let with_relay_data = find(opt::ORO).is_some_and(|oro| {
        oro.chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == opt::LQ_RELAY_DATA)
    });
    // A non-zero link-address names the link (RFC 5007 §4.4.1).
    let on_link = if link.is_unspecified() {
        None
    } else {
        match subnet_of(cx.config, link) {
            Some(s) => Some(s),
            None => {
                w.status(StatusCode::NotConfigured, "no subnet for this link-address");
                return Ok(());
            }
        }
    };
    match query_type {
        QUERY_BY_ADDRESS => {
            // An IA Address option is at least address and two lifetimes (24 bytes).
            let Some(addr) = find(opt::IAADDR)
                .filter(|d| d.len() >= 24)
                .and_then(|d| d.first_chunk::<16>())
                .map(|a| Ipv6Addr::from(*a))
            else {
                w.status(
                    StatusCode::MalformedQuery,
                    "QUERY_BY_ADDRESS needs an IA Address option",
                );
                return Ok(());
            };
            let Some(sn) = on_link.or_else(|| subnet_holding(cx.config, addr)) else {
                w.status(
                    StatusCode::NotConfigured,
                    "the address is in no configured subnet",
                );
                return Ok(());
            };
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
                let leases: Vec<&Lease> = all.iter().map(|(_, l)| l).collect();
                client_data(&mut w, cx.now_secs, &l.duid, &leases, with_relay_data);
            } else if cx.catching_up {
                return Err(Dropped::CatchingUp);
            }
        }
        QUERY_BY_CLIENTID => {
            let Some(duid) = find(opt::CLIENTID).filter(|d| !d.is_empty()) else {
                w.status(
                    StatusCode::MalformedQuery,
                    "QUERY_BY_CLIENTID needs a Client Identifier option",
                );
                return Ok(());
            };
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
                let leases: Vec<&Lease> = all.iter().map(|(_, l)| l).collect();
                client_data(&mut w, cx.now_secs, duid, &leases, with_relay_data);
            } else if cx.catching_up {
                return Err(Dropped::CatchingUp);
            }
        }
        _ => unreachable!("query types checked above"),
    }
    if w.overflowed() {
        // Bounded above so it cannot happen; never send a broken reply if it did.
        return Err(Dropped::NothingToAnswer);
    }
    Ok(())
}

/// OPTION_CLIENT_DATA (RFC 5007 §4.4.2): the client's identifier, its addresses and prefixes
/// with their remaining lifetimes, how long ago it last talked to us, and with
/// `with_relay_data` the relay data of its most recently renewed binding that has any.
fn client_data(
    w: &mut MessageWriter,
    now: u64,
    duid: &[u8],
    leases: &[&Lease],
    with_relay_data: bool,
) {
    let last = leases.iter().map(|l| l.cltt).max().unwrap_or(now);
    let relay = leases
        .iter()
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
        .position(|s| s.prefix.contains(link))
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
