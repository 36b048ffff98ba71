//! The relay data kept with a lease: what the relays said when the client last reached us,
//! in the form of OPTION_LQ_RELAY_DATA's payload (RFC 5007 §4.1.2.4), so Leasequery can send
//! it as it is and the failover partner, the store and `tandem leases` all hold one format.
//!
//! ```text
//! peer-address (16)   the relay the server received the message from (the datagram's source)
//! Relay-forw chain    as received, outermost first, with the client's own message left out:
//!                     each level's header and options in the order received, but its Relay
//!                     Message option (now holding the next level) moved last; the innermost
//!                     level has no Relay Message option
//! ```
//!
//! A chain longer than [`RELAY_DATA_MAX_LEN`] is not kept (the lease has none): the bound keeps
//! a table of a million leases within a known size whatever relays send.

use std::net::Ipv6Addr;

use super::options::{OptionIter, RawOption};
use super::{MAX_RELAY_DEPTH, OPTION_HEADER_LEN, RELAY_HEADER_LEN, Relayed, opt};

/// Longest relay data kept with a lease, in bytes.
pub const RELAY_DATA_MAX_LEN: usize = 512;

/// OPTION_RELAY_ID (RFC 5460 §5.4.1): the relay agent's DUID, which relays put in their
/// Relay-forw messages and Bulk Leasequery asks by.
pub const RELAY_ID: u16 = 53;

/// Writes the relay data of `relayed`, received from `src`, into `out` (cleared first).
/// Returns false, with `out` empty, for a message that came directly or a chain over
/// [`RELAY_DATA_MAX_LEN`]. Allocates nothing once `out` has grown to the bound.
pub fn encode(relayed: &Relayed<'_>, src: Ipv6Addr, out: &mut Vec<u8>) -> bool {
    encode_up_to(relayed, src, out, RELAY_DATA_MAX_LEN)
}

/// [`encode`] with another bound (the audit log keeps what a lease may not).
pub fn encode_up_to(relayed: &Relayed<'_>, src: Ipv6Addr, out: &mut Vec<u8>, max: usize) -> bool {
    out.clear();
    let hops = relayed.hops();
    if hops.is_empty() {
        return false;
    }
    // The size of each level with everything inside it, innermost first.
    let others = |i: usize| -> usize {
        relayed
            .hop_options(i)
            .filter(|o| o.code != opt::RELAY_MSG)
            .map(|o| OPTION_HEADER_LEN + o.data.len())
            .sum()
    };
    let mut sizes = [0usize; MAX_RELAY_DEPTH];
    let mut inside = 0;
    for i in (0..hops.len()).rev() {
        let wrapped = if i + 1 < hops.len() {
            OPTION_HEADER_LEN + inside
        } else {
            0
        };
        inside = RELAY_HEADER_LEN + others(i) + wrapped;
        sizes[i] = inside;
    }
    let total = 16 + sizes[0];
    if total > max || sizes.iter().any(|&s| s > usize::from(u16::MAX)) {
        return false;
    }
    out.extend_from_slice(&src.octets());
    for (i, h) in hops.iter().enumerate() {
        out.push(h.msg_type.to_u8());
        out.push(h.hop_count);
        out.extend_from_slice(&h.link_address.octets());
        out.extend_from_slice(&h.peer_address.octets());
        for o in relayed.hop_options(i).filter(|o| o.code != opt::RELAY_MSG) {
            put_option(out, o);
        }
        if let Some(&next) = sizes.get(i + 1).filter(|_| i + 1 < hops.len()) {
            out.extend_from_slice(&opt::RELAY_MSG.to_be_bytes());
            out.extend_from_slice(&(next as u16).to_be_bytes());
        }
    }
    debug_assert_eq!(out.len(), total);
    true
}

fn put_option(out: &mut Vec<u8>, o: RawOption<'_>) {
    out.extend_from_slice(&o.code.to_be_bytes());
    out.extend_from_slice(&(o.data.len() as u16).to_be_bytes());
    out.extend_from_slice(o.data);
}

/// One relay level of stored relay data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level<'a> {
    /// The hop count the relay wrote.
    pub hop_count: u8,
    /// The link-address the relay wrote.
    pub link_address: Ipv6Addr,
    /// The peer-address the relay wrote (the client's, at the innermost level).
    pub peer_address: Ipv6Addr,
    /// This level's options, without its Relay Message option.
    pub options: &'a [u8],
}

impl<'a> Level<'a> {
    /// This level's options other than the Relay Message option.
    pub fn options(&self) -> impl Iterator<Item = RawOption<'a>> + 'a {
        OptionIter::new(self.options).filter(|o| o.code != opt::RELAY_MSG)
    }

    /// The data of this level's first option `code`.
    pub fn find(&self, code: u16) -> Option<&'a [u8]> {
        self.options().find(|o| o.code == code).map(|o| o.data)
    }
}

/// A view of stored relay data (see the module docs). Tolerant: whatever does not parse ends
/// the chain where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayData<'a> {
    bytes: &'a [u8],
}

impl<'a> RelayData<'a> {
    /// A view of `bytes`, or None if they are empty or shorter than one level.
    pub fn new(bytes: &'a [u8]) -> Option<RelayData<'a>> {
        (bytes.len() >= 16 + RELAY_HEADER_LEN).then_some(RelayData { bytes })
    }

    /// The relay the server received the message from.
    pub fn relay_address(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes[..16]);
        Ipv6Addr::from(a)
    }

    /// The stored bytes (OPTION_LQ_RELAY_DATA's payload).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The levels, outermost (the relay closest to the server) first.
    pub fn levels(&self) -> impl Iterator<Item = Level<'a>> + 'a {
        let mut cur = self.bytes.get(16..).unwrap_or_default();
        let mut n = 0;
        std::iter::from_fn(move || {
            if n == MAX_RELAY_DEPTH || cur.len() < RELAY_HEADER_LEN {
                return None;
            }
            n += 1;
            let (hdr, options) = cur.split_at(RELAY_HEADER_LEN);
            let addr = |r: std::ops::Range<usize>| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&hdr[r]);
                Ipv6Addr::from(a)
            };
            let level = Level {
                hop_count: hdr[1],
                link_address: addr(2..18),
                peer_address: addr(18..34),
                options,
            };
            cur = OptionIter::new(options)
                .find(|o| o.code == opt::RELAY_MSG)
                .map_or(&[], |o| o.data);
            Some(level)
        })
    }

    /// The level of the relay closest to the client, where a line's identifiers are.
    pub fn closest_to_client(&self) -> Option<Level<'a>> {
        self.levels().last()
    }

    /// The Remote-ID (RFC 4649: enterprise number, then the id) the relay closest to the
    /// client sent: the subscriber's line.
    pub fn remote_id(&self) -> Option<&'a [u8]> {
        self.closest_to_client()?.find(opt::REMOTE_ID)
    }

    /// The Relay-IDs (OPTION_RELAY_ID's DUID) of the levels that have one, outermost first.
    pub fn relay_ids(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.levels().filter_map(|l| l.find(RELAY_ID))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::raw;
    use crate::wire::unwrap_relays;

    fn level(hops: u8, link: &str, peer: &str, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![12, hops];
        v.extend(link.parse::<Ipv6Addr>().unwrap().octets());
        v.extend(peer.parse::<Ipv6Addr>().unwrap().octets());
        for o in opts {
            v.extend_from_slice(o);
        }
        v
    }

    const SOLICIT: [u8; 8] = [1, 0, 0, 1, 0, 8, 0, 0];

    #[test]
    fn a_two_level_chain_keeps_every_relay_option_and_drops_the_client_message() {
        let inner = level(
            0,
            "2001:db8:1::",
            "fe80::1",
            &[
                raw(opt::INTERFACE_ID, b"ge-0/0/1.100"),
                raw(opt::RELAY_MSG, &SOLICIT),
                raw(opt::REMOTE_ID, &[0, 0, 0, 9, 0xab]),
            ],
        );
        let outer = level(
            1,
            "::",
            "2001:db8:ffff::2",
            &[
                raw(opt::RELAY_MSG, &inner),
                raw(RELAY_ID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]),
            ],
        );
        let relayed = unwrap_relays(&outer).unwrap();
        let src: Ipv6Addr = "2001:db8:ffff::9".parse().unwrap();
        let mut out = Vec::new();
        assert!(encode(&relayed, src, &mut out));
        // Everything but the client's 8-byte message and its 4-byte option header.
        assert_eq!(out.len(), 16 + outer.len() - SOLICIT.len() - 4);
        let d = RelayData::new(&out).unwrap();
        assert_eq!(d.relay_address(), src);
        let levels: Vec<_> = d.levels().collect();
        assert_eq!(levels.len(), 2);
        assert_eq!(
            levels[0].peer_address,
            "2001:db8:ffff::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(levels[0].hop_count, 1);
        let c = d.closest_to_client().unwrap();
        assert_eq!(c.link_address, "2001:db8:1::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.find(opt::INTERFACE_ID), Some(&b"ge-0/0/1.100"[..]));
        assert_eq!(c.find(opt::REMOTE_ID), Some(&[0, 0, 0, 9, 0xab][..]));
        assert_eq!(
            c.find(opt::RELAY_MSG),
            None,
            "the client's message is not kept"
        );
        assert_eq!(
            d.relay_ids().collect::<Vec<_>>(),
            vec![&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6][..]]
        );
        // The same chain is what a relay parser reads, minus the client message.
        let mut again = Vec::new();
        assert!(encode(&unwrap_relays(&outer).unwrap(), src, &mut again));
        assert_eq!(again, out);
    }

    #[test]
    fn direct_messages_and_oversized_chains_keep_nothing() {
        let mut out = vec![1, 2, 3];
        assert!(!encode(
            &unwrap_relays(&SOLICIT).unwrap(),
            Ipv6Addr::LOCALHOST,
            &mut out
        ));
        assert!(out.is_empty());
        let big = level(
            0,
            "2001:db8:1::",
            "fe80::1",
            &[
                raw(opt::REMOTE_ID, &[7; 600]),
                raw(opt::RELAY_MSG, &SOLICIT),
            ],
        );
        assert!(!encode(
            &unwrap_relays(&big).unwrap(),
            Ipv6Addr::LOCALHOST,
            &mut out
        ));
        assert!(out.is_empty());
        assert!(RelayData::new(&[0; 20]).is_none());
    }

    #[test]
    fn any_bytes_read_as_relay_data_never_panic() {
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 7) as u8 // small values: many option codes 0..6 and short lengths
                })
                .collect();
            if let Some(d) = RelayData::new(&bytes) {
                let _ = d.relay_address();
                for l in d.levels() {
                    let _ = l.options().count();
                }
                let _ = d.relay_ids().count();
            }
        }
    }
}
