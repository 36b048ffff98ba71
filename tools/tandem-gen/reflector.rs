//! The reflector: answers every client message with a valid reply and keeps no state, stores
//! nothing and allocates nothing per packet. Its rate is the packet ceiling of this machine for
//! this generator, the line a real server's rate is compared with.
//!
//! Each client IA gets an address or prefix derived from a hash of its DUID and IAID, so the
//! same client gets the same lease every time and two clients collide only by hash accident.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tandem_core::wire::{self, Message, MessageType, MessageWriter, StatusCode};

/// Most datagrams the reflector takes in one recvmmsg.
pub const REFLECT_BATCH_MAX: usize = 64;

/// The reflector's server DUID (DUID-EN with the documentation enterprise number 32473).
pub const REFLECTOR_DUID: [u8; 10] = [0, 2, 0, 0, 0x7e, 0xd9, b't', b'g', b'e', b'n'];
/// Addresses come from 2001:db8:1::/64 (64 bits of hash), prefixes (/64) from 2001:db8::/32
/// (32 bits of hash, so a few hundred thousand clients almost never collide).
const NA_BASE: u128 = 0x2001_0db8_0001_0000_0000_0000_0000_0000;
const PD_BASE: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;
/// Length of the prefixes the reflector delegates.
pub const REFLECTOR_PD_LEN: u8 = 64;

fn mix(duid: &[u8], iaid: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in duid.iter().chain(iaid.to_be_bytes().iter()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Builds the reply to `bytes` into `out` (cleared); false if there is nothing to answer.
pub fn answer(bytes: &[u8], inner: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    let Ok(relayed) = wire::unwrap_relays(bytes) else {
        return false;
    };
    let Ok(m) = Message::parse(relayed.inner()) else {
        return false;
    };
    let Some(cid) = m.client_id() else {
        return false;
    };
    let ty = match m.msg_type() {
        MessageType::Solicit if !m.rapid_commit() => MessageType::Advertise,
        MessageType::Solicit
        | MessageType::Request
        | MessageType::Renew
        | MessageType::Rebind
        | MessageType::Release
        | MessageType::Decline
        | MessageType::Confirm
        | MessageType::InformationRequest => MessageType::Reply,
        _ => return false,
    };
    {
        let mut w = MessageWriter::new(inner, ty, m.transaction_id());
        w.server_id(&REFLECTOR_DUID);
        w.client_id(cid);
        if m.msg_type() == MessageType::Solicit && m.rapid_commit() {
            w.rapid_commit();
        }
        if matches!(m.msg_type(), MessageType::Release | MessageType::Decline) {
            w.status(StatusCode::Success, "ok");
        } else {
            for ia in m.ia_nas() {
                let a = Ipv6Addr::from(NA_BASE | mix(cid, ia.iaid) as u128);
                w.ia_na(ia.iaid, 1800, 2880, |o| o.ia_addr(a, 3600, 7200, |_| {}));
            }
            for ia in m.ia_pds() {
                // 32 bits of hash pick one of the /64s in the /32.
                let p =
                    Ipv6Addr::from(PD_BASE | (((mix(cid, ia.iaid) & 0xffff_ffff) as u128) << 64));
                w.ia_pd(ia.iaid, 1800, 2880, |o| {
                    o.ia_prefix(p, REFLECTOR_PD_LEN, 3600, 7200, |_| {})
                });
            }
        }
    }
    if relayed.is_relayed() {
        wire::wrap_relay_reply(relayed.hops(), inner, out);
    } else {
        out.clear();
        out.extend_from_slice(inner);
    }
    !out.is_empty()
}

/// Serves on `listen` with `threads` SO_REUSEPORT sockets until `stop`; returns replies sent.
pub fn run(listen: SocketAddrV6, threads: usize, stop: Arc<AtomicBool>) -> io::Result<u64> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut socks = Vec::new();
    for _ in 0..threads.max(1) {
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_only_v6(true)?;
        s.set_reuse_port(true)?;
        let _ = s.set_recv_buffer_size(4 << 20);
        s.bind(&listen.into())?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        socks.push(UdpSocket::from(s));
    }
    let handles: Vec<_> = socks
        .into_iter()
        .map(|sock| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                // Batches both ways (recvmmsg / sendmmsg), like the server, so the ceiling is
                // not set by this responder's own syscalls.
                let mut bufs = vec![0u8; REFLECT_BATCH_MAX * 4096];
                let mut got = Vec::with_capacity(REFLECT_BATCH_MAX);
                let (mut inner, mut out) = (Vec::with_capacity(512), Vec::with_capacity(512));
                let mut arena: Vec<u8> = Vec::with_capacity(REFLECT_BATCH_MAX * 256);
                let mut replies: Vec<(std::ops::Range<usize>, SocketAddrV6)> =
                    Vec::with_capacity(REFLECT_BATCH_MAX);
                let mut n_sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) =
                        tandem_server::edge::udp::recv_many(&sock, &mut bufs, 4096, &mut got)
                    else {
                        continue;
                    };
                    arena.clear();
                    replies.clear();
                    for (i, (len, from)) in got.iter().enumerate().take(n) {
                        if answer(&bufs[i * 4096..i * 4096 + len], &mut inner, &mut out) {
                            let start = arena.len();
                            arena.extend_from_slice(&out);
                            replies.push((start..arena.len(), *from));
                        }
                    }
                    n_sent += tandem_server::edge::udp::send_many(
                        &sock,
                        replies.iter().map(|(r, to)| (&arena[r.clone()], *to)),
                    ) as u64;
                }
                sent.fetch_add(n_sent, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Ok(sent.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_solicit_and_relayed_request_stably() {
        let (mut inner, mut out) = (Vec::new(), Vec::new());
        let mut pkt = Vec::new();
        {
            let mut w = MessageWriter::new(&mut pkt, MessageType::Solicit, 7);
            w.client_id(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
            w.ia_na(1, 0, 0, |_| {});
            w.ia_pd(2, 0, 0, |_| {});
        }
        assert!(answer(&pkt, &mut inner, &mut out));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.msg_type(), MessageType::Advertise);
        assert_eq!(m.transaction_id(), 7);
        let a1 = m.ia_nas().next().unwrap().addresses().next().unwrap().addr;
        assert_eq!(
            m.ia_pds()
                .next()
                .unwrap()
                .prefixes()
                .next()
                .unwrap()
                .prefix_len,
            REFLECTOR_PD_LEN
        );
        let mut relayed = Vec::new();
        wire::wrap_relay_forw(
            0,
            "2001:db8:1::1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            Some(b"x"),
            None,
            &pkt,
            &mut relayed,
        );
        assert!(answer(&relayed, &mut inner, &mut out));
        let r = wire::unwrap_relay_replies(&out).unwrap();
        let m = Message::parse(r.inner()).unwrap();
        assert_eq!(
            m.ia_nas().next().unwrap().addresses().next().unwrap().addr,
            a1
        );
    }
}
