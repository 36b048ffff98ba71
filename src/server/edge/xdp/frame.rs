//! Ethernet / IPv6 / UDP framing for the AF_XDP datapath: [`parse`] finds the DHCPv6 payload
//! of a received frame and checks it (lengths, extension header chain, UDP checksum), and
//! [`write`] builds a reply frame around a payload, computing lengths and the checksum.
//!
//! Written for the one shape the XDP program hands over (UDP over IPv6, up to two VLAN tags,
//! a few extension headers) so the hot path reads fixed offsets and allocates nothing; the
//! tests check both directions against `etherparse`.

use std::net::Ipv6Addr;
use std::ops::Range;

/// Ethernet II header: destination, source, EtherType.
pub const ETH_HEADER_LEN: usize = 14;
/// One 802.1Q or 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// How many VLAN tags a frame may carry (QinQ).
pub const VLAN_TAGS_MAX: usize = 2;
/// The fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// The UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// How many IPv6 extension headers are followed before a frame is refused.
pub const EXT_HEADERS_MAX: usize = 8;
/// Hop limit of the replies we send.
pub const REPLY_HOP_LIMIT: u8 = 64;

const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_DEST_OPTS: u8 = 60;
const NEXT_UDP: u8 = 17;

/// One VLAN tag as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Priority, drop eligibility and VLAN id.
    pub tci: u16,
}

/// The headers of a UDP datagram on Ethernet, without the payload: what a reply needs to
/// retrace the path of the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrameHeader {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first.
    pub vlans: [Option<VlanTag>; VLAN_TAGS_MAX],
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Hop limit.
    pub hop_limit: u8,
}

/// A received frame, checked: its headers and where its UDP payload lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFrame {
    /// The headers.
    pub header: UdpFrameHeader,
    /// The UDP payload's place in the frame.
    pub payload: Range<usize>,
}

/// Why a frame was not taken (each has a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its headers or than its length fields say.
    #[error("frame truncated")]
    Truncated,
    /// Not IPv6 (after any VLAN tags), or more tags than we look through.
    #[error("not IPv6")]
    NotIpv6,
    /// The IPv6 version field is not 6.
    #[error("bad IP version")]
    BadVersion,
    /// A fragment: left to the kernel's reassembly (the XDP program passes these).
    #[error("IPv6 fragment")]
    Fragment,
    /// The extension header chain is longer than [`EXT_HEADERS_MAX`].
    #[error("extension header chain too long")]
    ExtHeaders,
    /// Not UDP.
    #[error("not UDP")]
    NotUdp,
    /// The UDP length field disagrees with the IPv6 payload length.
    #[error("bad UDP length")]
    BadLength,
    /// The UDP checksum is zero (forbidden in IPv6) or wrong.
    #[error("bad UDP checksum")]
    BadChecksum,
    /// A routing header with segments left: addressed to another node in the end.
    #[error("routing header with segments left")]
    Routed,
    /// The source address is multicast, unspecified or loopback: no one to answer.
    #[error("bad source address")]
    BadSource,
}

impl FrameError {
    /// Label for the drop counter.
    pub fn label(self) -> &'static str {
        match self {
            FrameError::Truncated => "frame_truncated",
            FrameError::NotIpv6 => "frame_not_ipv6",
            FrameError::BadVersion => "frame_bad_version",
            FrameError::Fragment => "frame_fragment",
            FrameError::ExtHeaders => "frame_ext_headers",
            FrameError::NotUdp => "frame_not_udp",
            FrameError::BadLength => "frame_bad_udp_length",
            FrameError::BadChecksum => "frame_bad_udp_checksum",
            FrameError::BadSource => "frame_bad_source",
            FrameError::Routed => "frame_routed",
        }
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, FrameError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(FrameError::Truncated)
}

fn addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// Parses and checks a received frame. Never panics, whatever the bytes.
pub fn parse(frame: &[u8]) -> Result<ParsedFrame, FrameError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let mut ethertype = be16(frame, 12)?;
    let mut at = ETH_HEADER_LEN;
    let mut vlans = [None; VLAN_TAGS_MAX];
    for slot in vlans.iter_mut() {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        *slot = Some(VlanTag {
            tpid: ethertype,
            tci: be16(frame, at)?,
        });
        ethertype = be16(frame, at + 2)?;
        at += VLAN_TAG_LEN;
    }
    if ethertype != ETHERTYPE_IPV6 {
        return Err(FrameError::NotIpv6);
    }
    let ip = frame
        .get(at..at + IPV6_HEADER_LEN)
        .ok_or(FrameError::Truncated)?;
    if ip[0] >> 4 != 6 {
        return Err(FrameError::BadVersion);
    }
    let ip_payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let mut next = ip[6];
    let hop_limit = ip[7];
    let src = addr(ip, 8);
    let dst = addr(ip, 24);
    if src.is_multicast() || src.is_unspecified() || src.is_loopback() {
        return Err(FrameError::BadSource);
    }
    let ip_end = at + IPV6_HEADER_LEN + ip_payload_len;
    if ip_end > frame.len() {
        return Err(FrameError::Truncated);
    }
    // Ethernet pads short frames: only the IPv6 payload length counts from here on.
    let frame = &frame[..ip_end];
    at += IPV6_HEADER_LEN;
    let mut ext = 0;
    loop {
        match next {
            NEXT_UDP => break,
            NEXT_FRAGMENT => return Err(FrameError::Fragment),
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                ext += 1;
                if ext > EXT_HEADERS_MAX {
                    return Err(FrameError::ExtHeaders);
                }
                let h = frame.get(at..at + 4).ok_or(FrameError::Truncated)?;
                if next == NEXT_ROUTING && h[3] != 0 {
                    // Segments left: on its way to another node (the program passes these).
                    return Err(FrameError::Routed);
                }
                next = h[0];
                at += (h[1] as usize + 1) * 8;
            }
            _ => return Err(FrameError::NotUdp),
        }
    }
    let udp = frame
        .get(at..at + UDP_HEADER_LEN)
        .ok_or(FrameError::Truncated)?;
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    let sum = u16::from_be_bytes([udp[6], udp[7]]);
    if udp_len < UDP_HEADER_LEN || at + udp_len != frame.len() {
        return Err(FrameError::BadLength);
    }
    if sum == 0 || udp_checksum(&src, &dst, &frame[at..]) != 0xffff {
        return Err(FrameError::BadChecksum);
    }
    Ok(ParsedFrame {
        header: UdpFrameHeader {
            dst_mac,
            src_mac,
            vlans,
            src,
            dst,
            src_port,
            dst_port,
            hop_limit,
        },
        payload: at + UDP_HEADER_LEN..frame.len(),
    })
}

/// The ones' complement sum (folded, not inverted) of the IPv6 pseudo-header and `udp` (header
/// and payload, checksum field included as it stands). A datagram whose checksum is right sums
/// to 0xffff.
///
/// The bytes are summed as native-endian 32-bit words into a 64-bit accumulator, and the result
/// turned to network order at the end (RFC 1071's byte-order independence and deferred carries):
/// a quarter of the additions of 16-bit big-endian words, and no byte swaps.
fn udp_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, udp: &[u8]) -> u16 {
    // The pseudo-header's length and next-header words, as they would read from the wire.
    let mut sum = native_words_sum(&src.octets())
        + native_words_sum(&dst.octets())
        + u64::from((udp.len() as u16).to_be())
        + u64::from(u16::from(NEXT_UDP).to_be())
        + native_words_sum(udp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::from_be(sum as u16)
}

/// The sum of `bytes` as native-endian 32-bit words (a last odd byte padded with a zero after
/// it, as RFC 768 pads), not folded. Up to 2^32 words fit before it could overflow.
fn native_words_sum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let mut sum: u64 = (&mut words)
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    match *words.remainder() {
        [a, b, c] => {
            sum += u64::from(u16::from_ne_bytes([a, b])) + u64::from(u16::from_ne_bytes([c, 0]))
        }
        [a, b] => sum += u64::from(u16::from_ne_bytes([a, b])),
        [a] => sum += u64::from(u16::from_ne_bytes([a, 0])),
        _ => {}
    }
    sum
}

/// The header of the reply to a request that arrived with `request`: back to its sender's MAC,
/// address and port, from `our_mac`, from `our_addr` (the address the request was sent to, or
/// for a multicast request our link-local address), on the same VLANs.
pub fn reply_header(
    request: &UdpFrameHeader,
    our_mac: [u8; 6],
    our_addr: Ipv6Addr,
) -> UdpFrameHeader {
    UdpFrameHeader {
        dst_mac: request.src_mac,
        src_mac: our_mac,
        vlans: request.vlans,
        src: our_addr,
        dst: request.src,
        src_port: request.dst_port,
        dst_port: request.src_port,
        hop_limit: REPLY_HOP_LIMIT,
    }
}

/// Bytes of headers before the payload in a frame with `h`.
pub fn header_len(h: &UdpFrameHeader) -> usize {
    ETH_HEADER_LEN
        + VLAN_TAG_LEN * h.vlans.iter().flatten().count()
        + IPV6_HEADER_LEN
        + UDP_HEADER_LEN
}

/// Writes a whole frame (headers with `h`, then `payload`) at the start of `out`, with the
/// lengths and the UDP checksum filled in; returns its length, or None when it does not fit
/// `out` or a UDP datagram.
pub fn write(h: &UdpFrameHeader, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let head = header_len(h);
    let udp_len = UDP_HEADER_LEN + payload.len();
    let total = head + payload.len();
    if total > out.len() || udp_len > u16::MAX as usize {
        return None;
    }
    out[0..6].copy_from_slice(&h.dst_mac);
    out[6..12].copy_from_slice(&h.src_mac);
    let mut at = 12;
    for tag in h.vlans.iter().flatten() {
        out[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&tag.tci.to_be_bytes());
        at += VLAN_TAG_LEN;
    }
    out[at..at + 2].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    at += 2;
    let ip = &mut out[at..at + IPV6_HEADER_LEN];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    ip[6] = NEXT_UDP;
    ip[7] = h.hop_limit;
    ip[8..24].copy_from_slice(&h.src.octets());
    ip[24..40].copy_from_slice(&h.dst.octets());
    at += IPV6_HEADER_LEN;
    let udp = &mut out[at..total];
    udp[0..2].copy_from_slice(&h.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&h.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[UDP_HEADER_LEN..].copy_from_slice(payload);
    let sum = !udp_checksum(&h.src, &h.dst, udp);
    // A computed zero is sent as all ones (RFC 8200 §8.1).
    let sum = if sum == 0 { 0xffff } else { sum };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(vlans: [Option<VlanTag>; 2]) -> UdpFrameHeader {
        UdpFrameHeader {
            dst_mac: [0x33, 0x33, 0, 1, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            vlans,
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:2".parse().unwrap(),
            src_port: 546,
            dst_port: 547,
            hop_limit: 1,
        }
    }

    fn frame(h: &UdpFrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        let n = write(h, payload, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip_plain_and_tagged() {
        let tag = |tpid, tci| Some(VlanTag { tpid, tci });
        for vlans in [
            [None, None],
            [tag(ETHERTYPE_VLAN, 100), None],
            [tag(ETHERTYPE_QINQ, 7), tag(ETHERTYPE_VLAN, 0x2005)],
        ] {
            let h = header(vlans);
            let f = frame(&h, b"\x01\x00\x00\x01hello");
            let p = parse(&f).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(&f[p.payload], b"\x01\x00\x00\x01hello");
        }
    }

    #[test]
    fn etherparse_reads_what_we_write() {
        let h = header([
            Some(VlanTag {
                tpid: ETHERTYPE_VLAN,
                tci: 42,
            }),
            None,
        ]);
        let f = frame(&h, b"odd-length payload!");
        let s = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::TransportSlice::Udp(udp)) = s.transport else {
            panic!("no UDP in {s:?}");
        };
        assert_eq!(udp.source_port(), 546);
        assert_eq!(udp.payload(), b"odd-length payload!");
        let Some(etherparse::NetSlice::Ipv6(ip)) = &s.net else {
            panic!("no IPv6");
        };
        let want = udp
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), want);
    }

    #[test]
    fn refuses_what_it_must() {
        let h = header([None, None]);
        let f = frame(&h, b"payload");
        // Every truncation is refused, never a panic.
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "accepted {n} bytes");
        }
        // Ethernet padding past the IPv6 payload is ignored.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 9]);
        assert_eq!(parse(&padded).unwrap().header, h);
        // A flipped payload bit breaks the checksum; a zero checksum is refused.
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&bad), Err(FrameError::BadChecksum));
        let mut zero = f.clone();
        let c = ETH_HEADER_LEN + IPV6_HEADER_LEN + 6;
        zero[c..c + 2].copy_from_slice(&[0, 0]);
        assert_eq!(parse(&zero), Err(FrameError::BadChecksum));
        // IPv4 and a fragment header.
        let mut v4 = f.clone();
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&v4), Err(FrameError::NotIpv6));
        let mut frag = f.clone();
        frag[ETH_HEADER_LEN + 6] = NEXT_FRAGMENT;
        assert_eq!(parse(&frag), Err(FrameError::Fragment));
        // No one to answer: multicast, unspecified and loopback sources.
        for bad in ["ff02::1", "::", "::1"] {
            let mut h = header([None, None]);
            h.src = bad.parse().unwrap();
            assert_eq!(parse(&frame(&h, b"x")), Err(FrameError::BadSource), "{bad}");
        }
    }

    #[test]
    fn a_routing_header_with_segments_left_is_not_ours() {
        // Routing header type 0 style: next UDP, length 2 (24 bytes), type 0, segments left 1.
        let h = header([None, None]);
        let f = frame(&h, b"payload");
        let ip = ETH_HEADER_LEN;
        let mut rh = vec![NEXT_UDP, 2, 0, 1, 0, 0, 0, 0];
        rh.extend_from_slice(&[0u8; 16]);
        let mut g = f[..ip + IPV6_HEADER_LEN].to_vec();
        g[ip + 6] = NEXT_ROUTING;
        let plen = u16::from_be_bytes([g[ip + 4], g[ip + 5]]) as usize + rh.len();
        g[ip + 4..ip + 6].copy_from_slice(&(plen as u16).to_be_bytes());
        g.extend_from_slice(&rh);
        g.extend_from_slice(&f[ip + IPV6_HEADER_LEN..]);
        assert_eq!(parse(&g), Err(FrameError::Routed));
        // With no segments left it is ours, and read past.
        g[ip + IPV6_HEADER_LEN + 3] = 0;
        assert_eq!(
            parse(&g).map(|p| g[p.payload].to_vec()),
            Ok(b"payload".to_vec())
        );
    }

    #[test]
    fn follows_extension_headers() {
        // Hop-by-hop options (8 bytes) then destination options (16 bytes) before UDP,
        // built with etherparse.
        let payload = b"\x0c\x00relayed";
        let udp = etherparse::UdpHeader {
            source_port: 547,
            destination_port: 547,
            length: (8 + payload.len()) as u16,
            checksum: 0,
        };
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut udp_bytes = udp.to_bytes().to_vec();
        udp_bytes.extend_from_slice(payload);
        let sum = !udp_checksum(&src, &dst, &udp_bytes);
        udp_bytes[6..8].copy_from_slice(&sum.to_be_bytes());
        let mut ext = vec![NEXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, PadN
        ext.extend_from_slice(&[NEXT_UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + udp_bytes.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[NEXT_HOP_BY_HOP, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&ext);
        f.extend_from_slice(&udp_bytes);
        let p = parse(&f).unwrap();
        assert_eq!(&f[p.payload.clone()], payload);
        assert_eq!(p.header.src, src);
        // etherparse agrees on where the payload is.
        let s = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = s.transport else {
            panic!("etherparse found no UDP");
        };
        assert_eq!(u.payload(), payload);
    }

    #[test]
    fn reply_retraces_the_request() {
        let req = header([
            Some(VlanTag {
                tpid: ETHERTYPE_VLAN,
                tci: 9,
            }),
            None,
        ]);
        let ours: Ipv6Addr = "fe80::99".parse().unwrap();
        let r = reply_header(&req, [2, 0, 0, 0, 0, 0x99], ours);
        assert_eq!(r.dst_mac, req.src_mac);
        assert_eq!((r.src, r.dst), (ours, req.src));
        assert_eq!((r.src_port, r.dst_port), (547, 546));
        assert_eq!(r.vlans, req.vlans);
        let f = frame(&r, b"reply");
        assert_eq!(parse(&f).unwrap().header, r);
    }

    /// RFC 768's checksum sum, folded, word by word: the pseudo-header and the datagram as
    /// 16-bit big-endian words, a last odd byte padded with a zero after it.
    fn checksum_by_definition(src: &[u8; 16], dst: &[u8; 16], udp: &[u8]) -> u16 {
        let mut bytes = [&src[..], &dst[..]].concat();
        bytes.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, NEXT_UDP]);
        bytes.extend_from_slice(udp);
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let mut sum: u64 = bytes
            .chunks_exact(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mangled_frames(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            at in 0usize..200,
            byte in any::<u8>(),
            cut in 0usize..200,
        ) {
            let mut f = frame(&header([None, None]), &payload);
            if at < f.len() {
                f[at] = byte;
            }
            f.truncate(cut.max(1));
            let _ = parse(&f);
        }

        /// Frames with zero to two VLAN tags (802.1Q or QinQ) and a generated chain of
        /// extension headers (hop-by-hop, destination options, routing with or without
        /// segments left, of random lengths and option bytes) before UDP, with a right or a
        /// broken checksum: parse gives what the chain says (the payload, or the one refusal
        /// that applies first), never a panic.
        #[test]
        fn extension_header_chains_and_tags_parse_as_their_chain_says(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            tags in proptest::collection::vec((any::<bool>(), any::<u16>()), 0..=2),
            chain in proptest::collection::vec(
                (0usize..3, 0u8..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 32)),
                0..=EXT_HEADERS_MAX + 2,
            ),
            broken in any::<bool>(),
        ) {
            let mut vlans = [None; VLAN_TAGS_MAX];
            for (slot, (qinq, tci)) in vlans.iter_mut().zip(&tags) {
                let tpid = if *qinq { ETHERTYPE_QINQ } else { ETHERTYPE_VLAN };
                *slot = Some(VlanTag { tpid, tci: *tci });
            }
            let mut h = header(vlans);
            h.src = "2001:db8::1".parse().unwrap();
            h.dst = "2001:db8::2".parse().unwrap();
            let plain = frame(&h, &payload);
            let ip = ETH_HEADER_LEN + VLAN_TAG_LEN * tags.len();
            // The chain, each header naming the next; the last names UDP.
            let kinds = [NEXT_HOP_BY_HOP, NEXT_DEST_OPTS, NEXT_ROUTING];
            let mut ext = Vec::new();
            for (i, (kind, units, segments_left, fill)) in chain.iter().enumerate() {
                let next = chain.get(i + 1).map_or(NEXT_UDP, |c| kinds[c.0]);
                let len = (*units as usize + 1) * 8;
                let mut e = fill[..len].to_vec();
                e[0] = next;
                e[1] = *units;
                if kinds[*kind] == NEXT_ROUTING {
                    e[3] = u8::from(*segments_left);
                }
                ext.extend_from_slice(&e);
            }
            let mut f = plain[..ip + IPV6_HEADER_LEN].to_vec();
            if let Some(first) = chain.first() {
                f[ip + 6] = kinds[first.0];
            }
            let plen = plain.len() - ip - IPV6_HEADER_LEN + ext.len();
            f[ip + 4..ip + 6].copy_from_slice(&(plen as u16).to_be_bytes());
            f.extend_from_slice(&ext);
            f.extend_from_slice(&plain[ip + IPV6_HEADER_LEN..]);
            if broken {
                // A bit of the UDP checksum field.
                let c = f.len() - payload.len() - 2;
                f[c] ^= 0x10;
            }
            // What the chain says, in the order the parser meets it.
            let mut want = Ok(payload.clone());
            for (i, (kind, _, segments_left, _)) in chain.iter().enumerate() {
                if i + 1 > EXT_HEADERS_MAX {
                    want = Err(FrameError::ExtHeaders);
                    break;
                }
                if kinds[*kind] == NEXT_ROUTING && *segments_left {
                    want = Err(FrameError::Routed);
                    break;
                }
            }
            if want.is_ok() && broken {
                want = Err(FrameError::BadChecksum);
            }
            let got = parse(&f).map(|p| {
                assert_eq!(p.header.vlans, vlans);
                f[p.payload].to_vec()
            });
            prop_assert_eq!(got, want);
        }

        /// The checksum against etherparse's and against RFC 768's definition summed word by
        /// word (16-bit, big-endian), as this module did before.
        #[test]
        fn checksum_matches_etherparse_and_the_definition(
            payload in proptest::collection::vec(any::<u8>(), 0..700),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
        ) {
            let udp = etherparse::UdpHeader::with_ipv6_checksum(ports.0, ports.1, &etherparse::Ipv6Header {
                source: src,
                destination: dst,
                ..Default::default()
            }, &payload).unwrap();
            let mut bytes = udp.to_bytes().to_vec();
            bytes[6..8].fill(0);
            bytes.extend_from_slice(&payload);
            let ours = !udp_checksum(&src.into(), &dst.into(), &bytes);
            prop_assert_eq!(ours, !checksum_by_definition(&src, &dst, &bytes));
            // RFC 768: a computed 0 is sent as 0xffff.
            prop_assert_eq!(if ours == 0 { 0xffff } else { ours }, udp.checksum);
        }

        #[test]
        fn write_then_parse_is_identity(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            tci in proptest::option::of(any::<u16>()),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
        ) {
            let mut h = header([tci.map(|tci| VlanTag { tpid: ETHERTYPE_VLAN, tci }), None]);
            h.src = src.into();
            prop_assume!(!h.src.is_multicast() && !h.src.is_unspecified() && !h.src.is_loopback());
            h.dst = dst.into();
            (h.src_port, h.dst_port) = ports;
            let f = frame(&h, &payload);
            let p = parse(&f).unwrap();
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(&f[p.payload], &payload[..]);
        }
    }
}
