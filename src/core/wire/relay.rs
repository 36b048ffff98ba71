//! Relay-forw / Relay-repl messages (RFC 8415 §9, §19) and unwrapping of nested relays.

use std::fmt;
use std::net::Ipv6Addr;

use super::options::{OptionIter, RawOption, Seen, exact_len, walk};
use super::{MAX_RELAY_DEPTH, Message, MessageType, RELAY_HEADER_LEN, WireError, opt};

/// One relay level: the relay header and the relay-level options a server echoes or uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayHop<'a> {
    /// [`MessageType::RelayForw`] or [`MessageType::RelayRepl`].
    pub msg_type: MessageType,
    /// Number of relay agents that already relayed this message.
    pub hop_count: u8,
    /// Address identifying the client's link (may be unspecified).
    pub link_address: Ipv6Addr,
    /// Address of the client or relay the message was received from.
    pub peer_address: Ipv6Addr,
    /// Interface-Id option data, if present (to be echoed in the Relay-repl).
    pub interface_id: Option<&'a [u8]>,
    /// Relay Source Port option value (RFC 8357 downstream source port), if present.
    pub relay_source_port: Option<u16>,
}

const EMPTY_HOP: RelayHop<'static> = RelayHop {
    msg_type: MessageType::RelayForw,
    hop_count: 0,
    link_address: Ipv6Addr::UNSPECIFIED,
    peer_address: Ipv6Addr::UNSPECIFIED,
    interface_id: None,
    relay_source_port: None,
};

/// A single, validated relay message level (Relay-forw or Relay-repl). Borrows the input.
///
/// Validation: header of 34 bytes, well-formed options, exactly one Relay Message option, at
/// most one Interface-Id and at most one Relay Source Port (which must be 2 bytes). Other
/// relay-level options (Remote-Id, Subscriber-Id, …) are checked for length only and stay
/// reachable through [`RelayMessage::options`]. The relayed message is not validated here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayMessage<'a> {
    hop: RelayHop<'a>,
    options: &'a [u8],
    relay_msg: &'a [u8],
}

impl<'a> RelayMessage<'a> {
    /// Parses one relay level.
    ///
    /// Errors: [`WireError::Truncated`] for an empty packet or one shorter than the 34-byte
    /// relay header, [`WireError::NotRelay`] if the type is not 12/13,
    /// [`WireError::MissingRelayMessage`], [`WireError::DuplicateOption`], and option errors.
    pub fn parse(bytes: &'a [u8]) -> Result<RelayMessage<'a>, WireError> {
        let Some(&t) = bytes.first() else {
            return Err(WireError::Truncated);
        };
        let msg_type = MessageType::from_u8(t);
        if !msg_type.is_relay() {
            return Err(WireError::NotRelay);
        }
        let Some((hdr, options)) = bytes.split_first_chunk::<RELAY_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        let mut link = [0u8; 16];
        let mut peer = [0u8; 16];
        link.copy_from_slice(hdr.get(2..18).unwrap_or(&[0; 16]));
        peer.copy_from_slice(hdr.get(18..34).unwrap_or(&[0; 16]));
        let mut hop = RelayHop {
            msg_type,
            hop_count: hdr[1],
            link_address: Ipv6Addr::from(link),
            peer_address: Ipv6Addr::from(peer),
            interface_id: None,
            relay_source_port: None,
        };
        let mut relay_msg = None;
        let mut seen = Seen::default();
        walk(options, |o: RawOption<'a>| {
            seen.note(o.code)?;
            match o.code {
                opt::RELAY_MSG => relay_msg = Some(o.data),
                opt::INTERFACE_ID => hop.interface_id = Some(o.data),
                opt::RELAY_SOURCE_PORT => {
                    exact_len(o, 2)?;
                    hop.relay_source_port =
                        o.data.first_chunk::<2>().map(|p| u16::from_be_bytes(*p));
                }
                _ => {}
            }
            Ok(())
        })?;
        let relay_msg = relay_msg.ok_or(WireError::MissingRelayMessage)?;
        Ok(RelayMessage {
            hop,
            options,
            relay_msg,
        })
    }

    /// The relay header fields and echoed options of this level.
    pub fn hop(&self) -> RelayHop<'a> {
        self.hop
    }

    /// The message carried in the Relay Message option (not validated).
    pub fn relay_message(&self) -> &'a [u8] {
        self.relay_msg
    }

    /// All options of this relay level, in order (including the Relay Message option).
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// Relay levels a [`Relayed`] holds inline. Each level is a relay agent on the client's path,
/// and real networks have one or two; a deeper chain (up to [`MAX_RELAY_DEPTH`]) is kept on
/// the heap. Inline, the value is small enough to move cheaply: with every possible level
/// inline it was 2.6 KiB, copied several times per message.
pub const INLINE_RELAY_HOPS: usize = 4;

/// Result of unwrapping a relay chain: the hops, outermost first, and the innermost message.
///
/// Up to [`INLINE_RELAY_HOPS`] hops are stored inline (no heap); a deeper chain, up to
/// [`MAX_RELAY_DEPTH`] hops, in two vectors.
#[derive(Clone)]
pub struct Relayed<'a> {
    hops: [RelayHop<'a>; INLINE_RELAY_HOPS],
    hop_options: [&'a [u8]; INLINE_RELAY_HOPS],
    /// Every hop and its options when there are more than [`INLINE_RELAY_HOPS`] (then the
    /// inline arrays are unused); empty, without an allocation, otherwise.
    deep_hops: Vec<RelayHop<'a>>,
    deep_options: Vec<&'a [u8]>,
    len: usize,
    inner: &'a [u8],
}

impl<'a> Relayed<'a> {
    fn direct(bytes: &'a [u8]) -> Self {
        Relayed {
            hops: [EMPTY_HOP; INLINE_RELAY_HOPS],
            hop_options: [&[]; INLINE_RELAY_HOPS],
            deep_hops: Vec::new(),
            deep_options: Vec::new(),
            len: 0,
            inner: bytes,
        }
    }

    /// Appends a level, innermost last (the caller keeps to [`MAX_RELAY_DEPTH`]).
    fn push(&mut self, hop: RelayHop<'a>, options: &'a [u8]) {
        if let (Some(h), Some(o)) = (
            self.hops.get_mut(self.len),
            self.hop_options.get_mut(self.len),
        ) {
            *h = hop;
            *o = options;
        } else {
            if self.deep_hops.is_empty() {
                self.deep_hops.extend_from_slice(&self.hops);
                self.deep_options.extend_from_slice(&self.hop_options);
            }
            self.deep_hops.push(hop);
            self.deep_options.push(options);
        }
        self.len += 1;
    }

    /// The relay hops, outermost (the relay that sent to us) first. Empty if not relayed.
    pub fn hops(&self) -> &[RelayHop<'a>] {
        self.levels().0
    }

    /// Each level's header and options, outermost first: inline, or on the heap past
    /// [`INLINE_RELAY_HOPS`].
    fn levels(&self) -> (&[RelayHop<'a>], &[&'a [u8]]) {
        if self.len > INLINE_RELAY_HOPS {
            (&self.deep_hops, &self.deep_options)
        } else {
            (
                self.hops.get(..self.len).unwrap_or_default(),
                self.hop_options.get(..self.len).unwrap_or_default(),
            )
        }
    }

    /// The innermost (client) message bytes; validate them with [`Relayed::message`] or
    /// [`Message::parse`].
    pub fn inner(&self) -> &'a [u8] {
        self.inner
    }

    /// True if at least one relay level was unwrapped.
    pub fn is_relayed(&self) -> bool {
        self.len > 0
    }

    /// All options of hop `index` (same order as [`Relayed::hops`]); empty if out of range.
    ///
    /// Use it for relay-supplied options such as Remote-Id or Client Link-Layer Address.
    pub fn hop_options(&self, index: usize) -> OptionIter<'a> {
        OptionIter::new(self.levels().1.get(index).copied().unwrap_or_default())
    }

    /// Parses the innermost message as a client/server [`Message`].
    pub fn message(&self) -> Result<Message<'a>, WireError> {
        Message::parse(self.inner)
    }
}

impl fmt::Debug for Relayed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relayed")
            .field("hops", &self.hops())
            .field("inner_len", &self.inner.len())
            .finish()
    }
}

/// Unwraps a Relay-forw chain.
///
/// If `bytes` is a Relay-forw, every level is parsed with [`RelayMessage::parse`] (each must
/// hold exactly one Relay Message option) until a non-relay message is reached; if `bytes` is a
/// client message, the result has zero hops and `inner() == bytes`. The inner message itself
/// is not validated: call [`Relayed::message`].
///
/// Errors: [`WireError::Truncated`] for empty input or an empty relayed message,
/// [`WireError::RelayTooDeep`] beyond `HOP_COUNT_LIMIT + 1` levels,
/// [`WireError::UnexpectedRelay`] for a Relay-repl anywhere in the chain, plus the errors of
/// [`RelayMessage::parse`].
pub fn unwrap_relays(bytes: &[u8]) -> Result<Relayed<'_>, WireError> {
    unwrap_chain(bytes, MessageType::RelayForw)
}

/// Unwraps a Relay-repl chain (what a relay agent or a test receives from a server). Same rules
/// as [`unwrap_relays`] with the roles of Relay-forw and Relay-repl swapped.
pub fn unwrap_relay_replies(bytes: &[u8]) -> Result<Relayed<'_>, WireError> {
    unwrap_chain(bytes, MessageType::RelayRepl)
}

fn unwrap_chain(bytes: &[u8], want: MessageType) -> Result<Relayed<'_>, WireError> {
    let mut out = Relayed::direct(bytes);
    let mut cur = bytes;
    loop {
        let Some(&t) = cur.first() else {
            return Err(WireError::Truncated);
        };
        let t = MessageType::from_u8(t);
        if !t.is_relay() {
            break;
        }
        if t != want {
            return Err(WireError::UnexpectedRelay(t));
        }
        if out.len >= MAX_RELAY_DEPTH {
            return Err(WireError::RelayTooDeep);
        }
        let level = RelayMessage::parse(cur)?;
        out.push(level.hop, level.options);
        cur = level.relay_msg;
    }
    out.inner = cur;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::raw;

    fn relay(t: u8, hops: u8, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![t, hops];
        v.extend(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
        v.extend(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, hops.into()).octets());
        for o in opts {
            v.extend_from_slice(o);
        }
        v
    }

    const SOLICIT: &[u8] = &[1, 0, 0, 1];

    #[test]
    fn direct_message_has_no_hops() {
        let r = unwrap_relays(SOLICIT).unwrap();
        assert!(!r.is_relayed());
        assert!(r.hops().is_empty());
        assert_eq!(r.inner(), SOLICIT);
        assert_eq!(r.hop_options(0).count(), 0);
        assert_eq!(unwrap_relays(&[]).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn single_relay_level() {
        let b = relay(
            12,
            0,
            &[
                raw(opt::INTERFACE_ID, b"eth0"),
                raw(opt::REMOTE_ID, &[0, 0, 0, 9, 1]),
                raw(opt::RELAY_SOURCE_PORT, &[0x12, 0x34]),
                raw(opt::RELAY_MSG, SOLICIT),
            ],
        );
        let r = unwrap_relays(&b).unwrap();
        assert_eq!(r.hops().len(), 1);
        let h = r.hops()[0];
        assert_eq!(h.msg_type, MessageType::RelayForw);
        assert_eq!(h.hop_count, 0);
        assert_eq!(
            h.link_address,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
        );
        assert_eq!(h.peer_address, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0));
        assert_eq!(h.interface_id, Some(&b"eth0"[..]));
        assert_eq!(h.relay_source_port, Some(0x1234));
        assert_eq!(r.inner(), SOLICIT);
        assert_eq!(r.message().unwrap().transaction_id(), 1);
        assert_eq!(r.hop_options(0).count(), 4);
        assert!(r.hop_options(0).any(|o| o.code == opt::REMOTE_ID));
    }

    #[test]
    fn relay_errors() {
        assert_eq!(
            unwrap_relays(&relay(12, 0, &[])).unwrap_err(),
            WireError::MissingRelayMessage
        );
        assert_eq!(
            unwrap_relays(&relay(12, 0, &[raw(9, SOLICIT), raw(9, SOLICIT)])).unwrap_err(),
            WireError::DuplicateOption { code: 9 }
        );
        assert_eq!(
            unwrap_relays(&relay(12, 0, &[raw(9, &[])])).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            unwrap_relays(&relay(12, 0, &[raw(135, &[1])])).unwrap_err(),
            WireError::BadOptionLength { code: 135, len: 1 }
        );
        assert_eq!(
            unwrap_relays(&[12, 0, 0]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            unwrap_relays(&relay(13, 0, &[raw(9, SOLICIT)])).unwrap_err(),
            WireError::UnexpectedRelay(MessageType::RelayRepl)
        );
        assert!(unwrap_relay_replies(&relay(13, 0, &[raw(9, SOLICIT)])).is_ok());
        // Relay-forw containing a Relay-repl.
        let inner = relay(13, 0, &[raw(9, SOLICIT)]);
        assert_eq!(
            unwrap_relays(&relay(12, 1, &[raw(9, &inner)])).unwrap_err(),
            WireError::UnexpectedRelay(MessageType::RelayRepl)
        );
        assert_eq!(RelayMessage::parse(SOLICIT), Err(WireError::NotRelay));
    }

    #[test]
    fn depth_limit() {
        let nest = |levels: usize| {
            let mut m = SOLICIT.to_vec();
            for i in 0..levels {
                m = relay(12, i as u8, &[raw(9, &m)]);
            }
            m
        };
        let ok = nest(MAX_RELAY_DEPTH);
        let r = unwrap_relays(&ok).unwrap();
        assert_eq!(r.hops().len(), MAX_RELAY_DEPTH);
        assert_eq!(r.hops()[0].hop_count, 32);
        assert_eq!(r.hops()[32].hop_count, 0);
        assert_eq!(r.inner(), SOLICIT);
        assert_eq!(
            unwrap_relays(&nest(MAX_RELAY_DEPTH + 1)).unwrap_err(),
            WireError::RelayTooDeep
        );
    }

    /// Every depth reads back the same, inline or on the heap: each level's header, its
    /// Interface-Id and its other options, outermost first.
    #[test]
    fn every_depth_keeps_each_level_in_order() {
        for levels in 0..=MAX_RELAY_DEPTH {
            let mut m = SOLICIT.to_vec();
            for i in 0..levels {
                let id = [i as u8; 3];
                let remote = vec![0u8; i];
                m = relay(
                    12,
                    i as u8,
                    &[
                        raw(opt::INTERFACE_ID, &id),
                        raw(opt::REMOTE_ID, &remote),
                        raw(9, &m),
                    ],
                );
            }
            let r = unwrap_relays(&m).unwrap();
            assert_eq!(r.hops().len(), levels);
            assert_eq!(r.is_relayed(), levels > 0);
            for (at, h) in r.hops().iter().enumerate() {
                // The outermost level was wrapped last.
                let i = levels - 1 - at;
                assert_eq!(h.hop_count, i as u8, "depth {levels}, level {at}");
                assert_eq!(h.interface_id, Some(&[i as u8; 3][..]));
                let remote = r
                    .hop_options(at)
                    .find(|o| o.code == opt::REMOTE_ID)
                    .unwrap();
                assert_eq!(remote.data.len(), i, "depth {levels}, level {at}");
            }
            assert_eq!(r.hop_options(levels).count(), 0);
            assert_eq!(r.inner(), SOLICIT);
        }
    }
}
