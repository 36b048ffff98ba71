//! Emission of client/server messages and relay wrapping into caller-owned buffers.
//!
//! Writers append to a `Vec<u8>` that the caller keeps and reuses, so once its capacity has
//! grown, emission does not allocate. Nested options (IA_NA, IA_PD, IA Address, IA Prefix,
//! …) are written with a placeholder length that is back-patched when the body closure returns.
//!
//! Option lengths are 16-bit. The server must never put more than 65535 bytes in one option;
//! if it does anyway, the writer does not panic in release builds: a `debug_assert!` fires in
//! debug builds, the length field saturates at 65535 (the data is still written in full, so the
//! result is malformed), and [`OptionWriter::overflowed`] / [`MessageWriter::overflowed`]
//! report it so the caller can drop the message instead of sending it.
//!
//! Relay wrapping echoes relay-supplied bytes (Interface-Id), so its sizes are client-driven:
//! [`try_wrap_relay_reply`] / [`try_wrap_relay_forw`] return [`WireError::TooLong`] instead of
//! asserting, and [`wrap_relay_reply`] / [`wrap_relay_forw`] leave `out` empty in that case.

use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};

use super::options::{StatusCode, opt};
use super::{MessageType, OPTION_HEADER_LEN, RelayHop, WireError};

/// Converts an option length to the 16-bit wire field, saturating (see module docs).
fn wire_len(len: usize) -> (u16, bool) {
    match u16::try_from(len) {
        Ok(l) => (l, false),
        Err(_) => {
            debug_assert!(false, "option length {len} exceeds 65535");
            (u16::MAX, true)
        }
    }
}

/// Appends an option header; returns true if `len` overflowed.
fn put_header(buf: &mut Vec<u8>, code: u16, len: usize) -> bool {
    let (l, overflow) = wire_len(len);
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(&l.to_be_bytes());
    overflow
}

/// Appends options to a buffer. Used for the top level (through [`MessageWriter`]) and for
/// the contents of nested options (passed to the `body` closures).
#[derive(Debug)]
pub struct OptionWriter<'b> {
    buf: &'b mut Vec<u8>,
    overflow: bool,
}

impl<'b> OptionWriter<'b> {
    /// Appends options to the end of `buf` (nothing is cleared).
    pub fn new(buf: &'b mut Vec<u8>) -> Self {
        OptionWriter {
            buf,
            overflow: false,
        }
    }

    /// Total length of the underlying buffer in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if the underlying buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole underlying buffer (for a top-level writer, the message written so far).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }

    /// True if some option written through this writer (or a nested one) was longer than
    /// 65535 bytes; the output is then malformed and must not be sent.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Writes an option with the given data.
    pub fn option(&mut self, code: u16, data: &[u8]) {
        self.overflow |= put_header(self.buf, code, data.len());
        self.buf.extend_from_slice(data);
    }

    /// Writes an option whose data is `parts` one after the other (a fixed part followed by
    /// caller bytes, for instance), without assembling them first.
    pub fn option_parts(&mut self, code: u16, parts: &[&[u8]]) {
        let len = parts.iter().fold(0usize, |n, p| n.saturating_add(p.len()));
        self.overflow |= put_header(self.buf, code, len);
        for p in parts {
            self.buf.extend_from_slice(p);
        }
    }

    /// Writes an option with no data (e.g. Rapid Commit).
    pub fn empty_option(&mut self, code: u16) {
        self.option(code, &[]);
    }

    /// Writes an option holding one byte.
    pub fn option_u8(&mut self, code: u16, v: u8) {
        self.option(code, &[v]);
    }

    /// Writes an option holding a big-endian u16.
    pub fn option_u16(&mut self, code: u16, v: u16) {
        self.option(code, &v.to_be_bytes());
    }

    /// Writes an option holding a big-endian u32.
    pub fn option_u32(&mut self, code: u16, v: u32) {
        self.option(code, &v.to_be_bytes());
    }

    /// Writes an option holding an IPv6 address.
    pub fn option_addr(&mut self, code: u16, addr: Ipv6Addr) {
        self.option(code, &addr.octets());
    }

    /// Writes an option holding a list of IPv6 addresses (e.g. DNS servers).
    pub fn option_addrs(&mut self, code: u16, addrs: &[Ipv6Addr]) {
        self.nested(code, &[], |w| {
            for a in addrs {
                w.buf.extend_from_slice(&a.octets());
            }
        });
    }

    /// Writes an option made of `fixed` bytes followed by whatever `body` writes, with the
    /// option length back-patched.
    pub fn nested(&mut self, code: u16, fixed: &[u8], body: impl FnOnce(&mut OptionWriter<'_>)) {
        let start = self.buf.len();
        put_header(self.buf, code, 0);
        self.buf.extend_from_slice(fixed);
        let mut inner = OptionWriter::new(&mut *self.buf);
        body(&mut inner);
        let child_overflow = inner.overflow;
        let len = self
            .buf
            .len()
            .saturating_sub(start.saturating_add(OPTION_HEADER_LEN));
        let (l, overflow) = wire_len(len);
        self.overflow |= overflow | child_overflow;
        let at = start.saturating_add(2);
        if let Some(slot) = self.buf.get_mut(at..at.saturating_add(2)) {
            slot.copy_from_slice(&l.to_be_bytes());
        }
    }

    /// Writes a Client Identifier option.
    pub fn client_id(&mut self, duid: &[u8]) {
        self.option(opt::CLIENTID, duid);
    }

    /// Writes a Server Identifier option.
    pub fn server_id(&mut self, duid: &[u8]) {
        self.option(opt::SERVERID, duid);
    }

    /// Writes a Status Code option.
    pub fn status(&mut self, code: StatusCode, message: &str) {
        self.status_raw(code.to_u16(), message.as_bytes());
    }

    /// Writes a Status Code option with any numeric code and message bytes.
    pub fn status_raw(&mut self, code: u16, message: &[u8]) {
        self.option_parts(opt::STATUS_CODE, &[&code.to_be_bytes(), message]);
    }

    /// Writes an IA_NA option; `body` writes its IA Address / Status Code options.
    pub fn ia_na(&mut self, iaid: u32, t1: u32, t2: u32, body: impl FnOnce(&mut OptionWriter<'_>)) {
        self.nested(opt::IA_NA, &ia_fixed(iaid, t1, t2), body);
    }

    /// Writes an IA_PD option; `body` writes its IA Prefix / Status Code options.
    pub fn ia_pd(&mut self, iaid: u32, t1: u32, t2: u32, body: impl FnOnce(&mut OptionWriter<'_>)) {
        self.nested(opt::IA_PD, &ia_fixed(iaid, t1, t2), body);
    }

    /// Writes an IA_TA option; `body` writes its IA Address / Status Code options.
    pub fn ia_ta(&mut self, iaid: u32, body: impl FnOnce(&mut OptionWriter<'_>)) {
        self.nested(opt::IA_TA, &iaid.to_be_bytes(), body);
    }

    /// Writes an IA Address option; `body` may write a Status Code.
    pub fn ia_addr(
        &mut self,
        addr: Ipv6Addr,
        preferred_secs: u32,
        valid_secs: u32,
        body: impl FnOnce(&mut OptionWriter<'_>),
    ) {
        let mut fixed = [0u8; 24];
        fixed[..16].copy_from_slice(&addr.octets());
        fixed[16..20].copy_from_slice(&preferred_secs.to_be_bytes());
        fixed[20..].copy_from_slice(&valid_secs.to_be_bytes());
        self.nested(opt::IAADDR, &fixed, body);
    }

    /// Writes an IA Prefix option; `body` may write a Status Code.
    ///
    /// `prefix_len` must be at most 128 (checked with `debug_assert!`; written as given).
    pub fn ia_prefix(
        &mut self,
        prefix: Ipv6Addr,
        prefix_len: u8,
        preferred_secs: u32,
        valid_secs: u32,
        body: impl FnOnce(&mut OptionWriter<'_>),
    ) {
        debug_assert!(prefix_len <= 128, "prefix length {prefix_len} > 128");
        let mut fixed = [0u8; 25];
        fixed[..4].copy_from_slice(&preferred_secs.to_be_bytes());
        fixed[4..8].copy_from_slice(&valid_secs.to_be_bytes());
        fixed[8] = prefix_len;
        fixed[9..].copy_from_slice(&prefix.octets());
        self.nested(opt::IAPREFIX, &fixed, body);
    }

    /// Writes an Option Request Option.
    pub fn oro(&mut self, codes: &[u16]) {
        self.nested(opt::ORO, &[], |w| {
            for c in codes {
                w.buf.extend_from_slice(&c.to_be_bytes());
            }
        });
    }

    /// Writes an Elapsed Time option (hundredths of a second).
    pub fn elapsed_time(&mut self, centisecs: u16) {
        self.option_u16(opt::ELAPSED_TIME, centisecs);
    }

    /// Writes a Preference option.
    pub fn preference(&mut self, pref: u8) {
        self.option_u8(opt::PREFERENCE, pref);
    }

    /// Writes a Rapid Commit option.
    pub fn rapid_commit(&mut self) {
        self.empty_option(opt::RAPID_COMMIT);
    }

    /// Writes a Reconfigure Accept option.
    pub fn reconfigure_accept(&mut self) {
        self.empty_option(opt::RECONF_ACCEPT);
    }

    /// Writes a Server Unicast option.
    pub fn server_unicast(&mut self, addr: Ipv6Addr) {
        self.option_addr(opt::UNICAST, addr);
    }
}

fn ia_fixed(iaid: u32, t1: u32, t2: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&iaid.to_be_bytes());
    b[4..8].copy_from_slice(&t1.to_be_bytes());
    b[8..].copy_from_slice(&t2.to_be_bytes());
    b
}

/// Writes a client/server message into a caller-owned, reused buffer.
///
/// Every option method of [`OptionWriter`] (`option`, `option_u16`, `empty_option`,
/// `client_id`, `server_id`, `status`, `ia_na`, `ia_pd`, `oro`, `elapsed_time`, …) is
/// available through `Deref`. The message is complete at any point: `buf` holds it.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    w: OptionWriter<'b>,
}

impl<'b> MessageWriter<'b> {
    /// Clears `buf` and writes the 4-byte header. Only the low 24 bits of `transaction_id`
    /// are used (higher bits are ignored).
    pub fn new(buf: &'b mut Vec<u8>, msg_type: MessageType, transaction_id: u32) -> Self {
        buf.clear();
        let [_, a, b, c] = transaction_id.to_be_bytes();
        buf.extend_from_slice(&[msg_type.to_u8(), a, b, c]);
        MessageWriter {
            w: OptionWriter::new(buf),
        }
    }

    /// Length of the message written so far.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// Always false: the header is written by [`MessageWriter::new`].
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// The message written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.w.buf
    }

    /// True if an option overflowed its 16-bit length (see module docs): do not send.
    pub fn overflowed(&self) -> bool {
        self.w.overflow
    }
}

impl<'b> Deref for MessageWriter<'b> {
    type Target = OptionWriter<'b>;
    fn deref(&self) -> &OptionWriter<'b> {
        &self.w
    }
}

impl DerefMut for MessageWriter<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.w
    }
}

/// Bytes a relay level adds around its relayed message.
fn relay_overhead(hop: &RelayHop<'_>) -> usize {
    let iface = hop
        .interface_id
        .map_or(0, |i| OPTION_HEADER_LEN.saturating_add(i.len()));
    let port = hop.relay_source_port.map_or(0, |_| OPTION_HEADER_LEN + 2);
    super::RELAY_HEADER_LEN
        .saturating_add(iface)
        .saturating_add(port)
        .saturating_add(OPTION_HEADER_LEN)
}

/// Writes one relay header plus its Interface-Id / Relay Source Port options and the Relay
/// Message option header for `inner_len` bytes of relayed message. The caller has checked
/// that every length fits in 16 bits.
fn put_relay_level(out: &mut Vec<u8>, msg_type: MessageType, hop: &RelayHop<'_>, inner_len: u16) {
    out.push(msg_type.to_u8());
    out.push(hop.hop_count);
    out.extend_from_slice(&hop.link_address.octets());
    out.extend_from_slice(&hop.peer_address.octets());
    if let Some(id) = hop.interface_id {
        let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&opt::INTERFACE_ID.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(id);
    }
    if let Some(port) = hop.relay_source_port {
        out.extend_from_slice(&opt::RELAY_SOURCE_PORT.to_be_bytes());
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&port.to_be_bytes());
    }
    out.extend_from_slice(&opt::RELAY_MSG.to_be_bytes());
    out.extend_from_slice(&inner_len.to_be_bytes());
}

/// True if the Interface-Id of `hop` fits in an option.
fn hop_fits(hop: &RelayHop<'_>) -> bool {
    hop.interface_id
        .is_none_or(|i| u16::try_from(i.len()).is_ok())
}

/// Wraps a reply in nested Relay-repl messages mirroring the Relay-forw chain; if it cannot be
/// encoded, `out` is left empty (see [`try_wrap_relay_reply`], which reports why).
pub fn wrap_relay_reply(hops: &[RelayHop<'_>], inner: &[u8], out: &mut Vec<u8>) {
    let _ = try_wrap_relay_reply(hops, inner, out);
}

/// Wraps a reply in nested Relay-repl messages mirroring the Relay-forw chain.
///
/// `hops` is outermost first, as returned by [`unwrap_relays`](super::unwrap_relays). Each
/// level is written as Relay-repl (type 13) with the same hop-count, link-address and
/// peer-address as the matching Relay-forw and the Interface-Id echoed when it was present
/// (RFC 8415 §19.3), and the Relay Source Port option echoed when it was present, so a relay
/// agent that used a non-547 port can find its downstream port again (RFC 8357 §5.2; ISC Kea and
/// ISC dhcpd echo it too). The outermost Relay-repl itself must be sent to the UDP source port
/// of the received Relay-forw datagram, which the codec does not see. With no hops, `out`
/// receives a copy of `inner`. `out` is cleared first.
///
/// Errors with [`WireError::TooLong`] (leaving `out` empty) when a Relay Message or Interface-Id
/// option would exceed 65535 bytes, which a client can provoke with a maximal Relay-forw.
pub fn try_wrap_relay_reply(
    hops: &[RelayHop<'_>],
    inner: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    out.clear();
    let total = hops
        .iter()
        .fold(inner.len(), |acc, h| acc.saturating_add(relay_overhead(h)));
    // Check every length before writing anything.
    let mut remaining = total;
    for hop in hops {
        remaining = remaining.saturating_sub(relay_overhead(hop));
        if !hop_fits(hop) || u16::try_from(remaining).is_err() {
            return Err(WireError::TooLong);
        }
    }
    out.reserve(total);
    let mut remaining = total;
    for hop in hops {
        remaining = remaining.saturating_sub(relay_overhead(hop));
        let len = u16::try_from(remaining).unwrap_or(u16::MAX);
        put_relay_level(out, MessageType::RelayRepl, hop, len);
    }
    out.extend_from_slice(inner);
    Ok(())
}

/// Wraps `inner` in one Relay-forw message (for relay agents, tools and tests); if it cannot be
/// encoded, `out` is left empty (see [`try_wrap_relay_forw`], which reports why).
pub fn wrap_relay_forw(
    hop_count: u8,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    interface_id: Option<&[u8]>,
    source_port: Option<u16>,
    inner: &[u8],
    out: &mut Vec<u8>,
) {
    let _ = try_wrap_relay_forw(hop_count, link, peer, interface_id, source_port, inner, out);
}

/// Wraps `inner` in one Relay-forw message. `out` is cleared first. Options are written in the
/// order Interface-Id, Relay Source Port, Relay Message.
///
/// Errors with [`WireError::TooLong`] (leaving `out` empty) when `inner` or `interface_id` is
/// longer than 65535 bytes.
pub fn try_wrap_relay_forw(
    hop_count: u8,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    interface_id: Option<&[u8]>,
    source_port: Option<u16>,
    inner: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    out.clear();
    let hop = RelayHop {
        msg_type: MessageType::RelayForw,
        hop_count,
        link_address: link,
        peer_address: peer,
        interface_id,
        relay_source_port: source_port,
    };
    let Ok(len) = u16::try_from(inner.len()) else {
        return Err(WireError::TooLong);
    };
    if !hop_fits(&hop) {
        return Err(WireError::TooLong);
    }
    out.reserve(relay_overhead(&hop).saturating_add(inner.len()));
    put_relay_level(out, MessageType::RelayForw, &hop, len);
    out.extend_from_slice(inner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, unwrap_relay_replies, unwrap_relays};

    #[test]
    fn writes_header_and_options() {
        let mut buf = vec![0xAA; 10];
        let mut w = MessageWriter::new(&mut buf, MessageType::Reply, 0x0102_0304);
        assert_eq!(w.len(), 4);
        w.client_id(&[0, 3, 0, 1, 9]);
        w.status(StatusCode::NoBinding, "x");
        w.rapid_commit();
        assert!(!w.overflowed());
        assert_eq!(w.as_bytes()[..4], [7, 2, 3, 4]);
        assert_eq!(
            &buf[4..],
            &[
                0, 1, 0, 5, 0, 3, 0, 1, 9, // client id
                0, 13, 0, 3, 0, 3, b'x', // status
                0, 14, 0, 0, // rapid commit
            ]
        );
    }

    #[test]
    fn nested_lengths_are_back_patched() {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, MessageType::Reply, 1);
        w.ia_na(5, 10, 20, |ia| {
            ia.ia_addr(Ipv6Addr::LOCALHOST, 30, 40, |a| {
                a.status(StatusCode::Success, "ok")
            });
            ia.ia_addr(Ipv6Addr::UNSPECIFIED, 1, 2, |_| {});
        });
        w.ia_pd(6, 0, 0, |pd| {
            pd.ia_prefix(Ipv6Addr::LOCALHOST, 64, 1, 2, |_| {})
        });
        w.ia_ta(7, |_| {});
        // IA_NA: 12 + (4+24+(4+2+2)) + (4+24) = 76
        assert_eq!(buf[4..8], [0, 3, 0, 76]);
        let m = Message::parse(&buf).unwrap();
        let ia = m.ia_nas().next().unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (5, 10, 20));
        let addrs: Vec<_> = ia.addresses().collect();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].status().unwrap().message, b"ok");
        let pd = m.ia_pds().next().unwrap();
        assert_eq!(pd.prefixes().next().unwrap().prefix_len, 64);
        assert!(m.has_ia_ta());
    }

    #[test]
    fn overflow_is_reported_not_panicking_in_release() {
        // Only meaningful without debug assertions; with them the debug_assert fires.
        if cfg!(debug_assertions) {
            let r = std::panic::catch_unwind(|| {
                let mut buf = Vec::new();
                let mut w = MessageWriter::new(&mut buf, MessageType::Reply, 1);
                w.option(99, &vec![0; 70_000]);
            });
            assert!(r.is_err());
        } else {
            let mut buf = Vec::new();
            let mut w = MessageWriter::new(&mut buf, MessageType::Reply, 1);
            w.ia_na(1, 2, 3, |ia| ia.option(99, &vec![0; 70_000]));
            assert!(w.overflowed());
        }
        assert_eq!(wire_len(65_535), (65_535, false));
    }

    #[test]
    fn relay_forw_and_reply_round_trip() {
        let client = [1u8, 0, 0, 9];
        let link = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        let mut l1 = Vec::new();
        wrap_relay_forw(0, link, peer, Some(b"ge-0/0/1"), Some(0), &client, &mut l1);
        let mut l2 = Vec::new();
        wrap_relay_forw(
            1,
            Ipv6Addr::UNSPECIFIED,
            link,
            None,
            Some(1067),
            &l1,
            &mut l2,
        );
        let r = unwrap_relays(&l2).unwrap();
        assert_eq!(r.hops().len(), 2);
        assert_eq!(r.hops()[0].relay_source_port, Some(1067));
        assert_eq!(r.hops()[1].interface_id, Some(&b"ge-0/0/1"[..]));
        assert_eq!(r.inner(), client);

        let reply = [7u8, 0, 0, 9];
        let mut out = vec![1, 2, 3];
        wrap_relay_reply(r.hops(), &reply, &mut out);
        let back = unwrap_relay_replies(&out).unwrap();
        assert_eq!(back.inner(), reply);
        assert_eq!(back.hops().len(), 2);
        for (a, b) in back.hops().iter().zip(r.hops()) {
            assert_eq!(a.msg_type, MessageType::RelayRepl);
            assert_eq!(
                (
                    a.hop_count,
                    a.link_address,
                    a.peer_address,
                    a.interface_id,
                    a.relay_source_port
                ),
                (
                    b.hop_count,
                    b.link_address,
                    b.peer_address,
                    b.interface_id,
                    b.relay_source_port
                )
            );
        }
        // No hops: plain copy.
        wrap_relay_reply(&[], &reply, &mut out);
        assert_eq!(out, reply);
    }

    #[test]
    fn relay_wrapping_reports_too_long_without_panicking() {
        let big = vec![1u8; 65_536];
        let mut out = vec![9];
        let a = Ipv6Addr::UNSPECIFIED;
        assert_eq!(
            try_wrap_relay_forw(0, a, a, None, None, &big, &mut out),
            Err(WireError::TooLong)
        );
        assert!(out.is_empty());
        assert_eq!(
            try_wrap_relay_forw(0, a, a, Some(&big), None, &[1, 0, 0, 0], &mut out),
            Err(WireError::TooLong)
        );
        assert!(try_wrap_relay_forw(0, a, a, None, None, &big[..65_535], &mut out).is_ok());
        // Two levels: the inner level's Interface-Id fits but pushes the outer Relay Message
        // over 65535 bytes.
        let iface = vec![0u8; 65_500];
        let hop = |id| RelayHop {
            msg_type: MessageType::RelayForw,
            hop_count: 0,
            link_address: a,
            peer_address: a,
            interface_id: id,
            relay_source_port: Some(1),
        };
        let hops = [hop(None), hop(Some(&iface[..]))];
        out.push(1);
        assert_eq!(
            try_wrap_relay_reply(&hops, &[7, 0, 0, 1], &mut out),
            Err(WireError::TooLong)
        );
        assert!(out.is_empty());
        out.push(1);
        wrap_relay_reply(&hops, &[7, 0, 0, 1], &mut out);
        assert!(out.is_empty());
        assert!(try_wrap_relay_reply(&hops[1..], &[7, 0, 0, 1], &mut out).is_ok());
        let back = crate::wire::unwrap_relay_replies(&out).unwrap();
        assert_eq!(back.hops()[0].interface_id.map(<[u8]>::len), Some(65_500));
    }
}
