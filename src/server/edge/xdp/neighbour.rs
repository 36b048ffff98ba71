//! The kernel's IPv6 neighbour table, read over rtnetlink: the MAC address a frame sent by
//! AF_XDP must carry to reach an on-link address (the kernel's own sends look it up the same
//! way). [`resolve`] has the kernel resolve a neighbour it does not know yet by sending it one
//! ICMPv6 Echo Request through the kernel, which starts neighbour discovery.

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

const RTM_GETNEIGH: u16 = 30;
const RTM_NEWNEIGH: u16 = 28;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HEADER_LEN: usize = 16;
const NDMSG_LEN: usize = 12;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const AF_INET6: u8 = 10;
/// Neighbour states whose link-layer address can be used (reachable, stale, delay, probe,
/// no-ARP, permanent): not incomplete and not failed.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
/// Largest dump reply read at once.
const RECV_BYTES: usize = 64 * 1024;
/// Most reads of one dump (its end is NLMSG_DONE).
const DUMP_READS_MAX: usize = 4096;
/// Longest wait for one read of the dump.
const DUMP_TIMEOUT_SECS: i64 = 2;
/// The attribute type's bits (the others are flags).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// How often the table is read again while [`resolve`] waits.
const RESOLVE_POLL: Duration = Duration::from_millis(20);

/// The MAC address of `addr` on interface `ifindex` if the kernel's neighbour table has a
/// usable entry for it.
pub fn lookup(ifindex: u32, addr: Ipv6Addr) -> io::Result<Option<[u8; 6]>> {
    let mut found = None;
    Netlink::open()?.dump(&mut |i, a, mac| {
        if i == ifindex && a == addr {
            found = Some(mac);
        }
    })?;
    Ok(found)
}

/// Every usable entry of the kernel's IPv6 neighbour table: (interface index, address) → MAC.
pub fn table() -> io::Result<HashMap<(u32, Ipv6Addr), [u8; 6]>> {
    Netlink::open()?.table()
}

/// An rtnetlink socket for requests made one after another (a round of route lookups and a
/// neighbour dump costs one socket, not one each). Each request carries its own sequence
/// number, and messages of another (what an earlier request that failed left unread) are
/// skipped.
pub(super) struct Netlink {
    fd: std::os::fd::OwnedFd,
    /// Sequence number of the last request sent.
    seq: u32,
    /// Where answers are read into.
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens and binds the socket, with a [`DUMP_TIMEOUT_SECS`] limit on each read.
    pub(super) fn open() -> io::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 0),
        )?;
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(DUMP_TIMEOUT_SECS, 0),
        )?;
        Ok(Netlink {
            fd,
            seq: 0,
            buf: vec![0u8; RECV_BYTES],
        })
    }

    /// Every usable entry of the kernel's IPv6 neighbour table: (interface index, address) →
    /// MAC.
    pub(super) fn table(&mut self) -> io::Result<HashMap<(u32, Ipv6Addr), [u8; 6]>> {
        let mut t = HashMap::new();
        self.dump(&mut |i, a, mac| {
            t.insert((i, a), mac);
        })?;
        Ok(t)
    }

    /// Dumps the IPv6 neighbour table, calling `visit` with each usable entry.
    fn dump(&mut self, visit: &mut dyn FnMut(u32, Ipv6Addr, [u8; 6])) -> io::Result<()> {
        let mut req = [0u8; NLMSG_HEADER_LEN + NDMSG_LEN];
        req[NLMSG_HEADER_LEN] = AF_INET6;
        self.request(RTM_GETNEIGH, NLM_F_DUMP, &mut req, &mut |msg| {
            scan_entry(msg, visit)
        })
    }

    /// Sends one rtnetlink request of `kind` (its body after the header already in `req`,
    /// whose header this fills in) and passes every message of the answer to `on_message`
    /// until the answer ends (NLMSG_DONE, an acknowledgement, or, without NLM_F_DUMP in
    /// `flags`, the first message). An error the kernel answers with is returned as that
    /// errno.
    pub(super) fn request(
        &mut self,
        kind: u16,
        flags: u16,
        req: &mut [u8],
        on_message: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        send(fd, req, MsgFlags::empty())?;
        for _ in 0..DUMP_READS_MAX {
            let n = recv(fd, &mut self.buf, MsgFlags::empty())?;
            if n == 0 {
                break;
            }
            match scan(&self.buf[..n], self.seq, on_message) {
                Scan::More | Scan::Other if flags & NLM_F_DUMP != 0 => continue,
                // A single answer still to come after another request's leftovers.
                Scan::Other => continue,
                Scan::More | Scan::Done => return Ok(()),
                Scan::Error(code) => return Err(io::Error::from_raw_os_error(code)),
            }
        }
        Ok(())
    }
}

enum Scan {
    /// The answer goes on in the next read.
    More,
    /// The answer ended.
    Done,
    /// The kernel answered with this errno.
    Error(i32),
    /// The read held only messages of another request.
    Other,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

/// Reads the netlink messages in `buf` of request `seq`, passing each that is not an end or an
/// error to `on_message` (whole, header included); messages of other requests are skipped.
fn scan(buf: &[u8], seq: u32, on_message: &mut dyn FnMut(&[u8])) -> Scan {
    let mut at = 0;
    let mut ours = false;
    while at + NLMSG_HEADER_LEN <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < NLMSG_HEADER_LEN || at + len > buf.len() {
            return Scan::Error(libc::EBADMSG);
        }
        let kind = u16_at(buf, at + 4);
        let msg = &buf[at..at + len];
        if u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]) != seq {
            at += (len + 3) & !3;
            continue;
        }
        ours = true;
        match kind {
            NLMSG_DONE => return Scan::Done,
            NLMSG_ERROR => {
                let code = msg
                    .get(16..20)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                return if code == 0 {
                    Scan::Done
                } else {
                    Scan::Error(-code)
                };
            }
            _ => on_message(msg),
        }
        at += (len + 3) & !3;
    }
    if ours { Scan::More } else { Scan::Other }
}

/// Calls `visit` with each attribute (type without its flag bits, value) of a netlink message
/// whose attributes start at `from`; stops at the first one that does not fit.
pub(super) fn attributes(msg: &[u8], from: usize, visit: &mut dyn FnMut(u16, &[u8])) {
    let mut a = from;
    while a + 4 <= msg.len() {
        let alen = u16_at(msg, a) as usize;
        if alen < 4 || a + alen > msg.len() {
            break;
        }
        visit(u16_at(msg, a + 2) & NLA_TYPE_MASK, &msg[a + 4..a + alen]);
        a += (alen + 3) & !3;
    }
}

/// Passes a usable IPv6 entry of an RTM_NEWNEIGH message to `visit`.
fn scan_entry(msg: &[u8], visit: &mut dyn FnMut(u32, Ipv6Addr, [u8; 6])) {
    if u16_at(msg, 4) != RTM_NEWNEIGH || msg.len() < NLMSG_HEADER_LEN + NDMSG_LEN {
        return;
    }
    let nd = &msg[NLMSG_HEADER_LEN..];
    let index = u32::from_ne_bytes([nd[4], nd[5], nd[6], nd[7]]);
    let state = u16_at(nd, 8);
    if nd[0] != AF_INET6 || state & NUD_USABLE == 0 {
        return;
    }
    let (mut dst, mut mac) = (None, None);
    attributes(
        msg,
        NLMSG_HEADER_LEN + NDMSG_LEN,
        &mut |kind, value| match kind {
            NDA_DST if value.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(value);
                dst = Some(Ipv6Addr::from(o));
            }
            NDA_LLADDR if value.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(value);
                mac = Some(m);
            }
            _ => {}
        },
    );
    if let (Some(d), Some(m)) = (dst, mac) {
        visit(index, d, m);
    }
}

/// The MAC address of on-link `addr` on interface `ifindex`: from the neighbour table, or,
/// when it has no usable entry, after the kernel resolved it (an ICMPv6 Echo Request sent to
/// `addr` through the kernel starts that), waiting at most `wait`.
pub fn resolve(ifindex: u32, addr: Ipv6Addr, wait: Duration) -> io::Result<[u8; 6]> {
    if let Some(mac) = lookup(ifindex, addr)? {
        return Ok(mac);
    }
    let scope = if addr.is_unicast_link_local() {
        ifindex
    } else {
        0
    };
    let to = SocketAddrV6::new(addr, 0, 0, scope);
    poke(to)?;
    let start = Instant::now();
    while start.elapsed() < wait {
        std::thread::sleep(RESOLVE_POLL);
        if let Some(mac) = lookup(ifindex, addr)? {
            return Ok(mac);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{addr} did not answer neighbour discovery within {} ms (is it on the link? a \
             routed server is reached through its router, which this does not look up)",
            wait.as_millis()
        ),
    ))
}

/// Sends one packet to `to` through the kernel, so that it resolves the neighbour: an ICMPv6
/// Echo Request where raw sockets are allowed, else one empty UDP datagram to the discard
/// port (9).
fn poke(to: SocketAddrV6) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if let Ok(s) = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)) {
        // Type 128 (Echo Request), code 0; the kernel fills in the checksum.
        let echo = [128u8, 0, 0, 0, 0x74, 0x64, 0, 1];
        if s.send_to(&echo, &to.into()).is_ok() {
            return Ok(());
        }
    }
    let u = std::net::UdpSocket::bind("[::]:0")?;
    u.send_to(&[], SocketAddrV6::new(*to.ip(), 9, 0, to.scope_id()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `buf` for a usable entry of `addr` on `ifindex`, as [`lookup`] does.
    fn find(buf: &[u8], ifindex: u32, addr: Ipv6Addr) -> (Scan, Option<[u8; 6]>) {
        let mut found = None;
        let end = scan(buf, 0, &mut |msg| {
            scan_entry(msg, &mut |i, a, m| {
                if i == ifindex && a == addr {
                    found = Some(m);
                }
            })
        });
        (end, found)
    }

    /// A dump reply with one entry of `addr` on `ifindex` in `state`, then NLMSG_DONE.
    fn dump(ifindex: u32, addr: Ipv6Addr, state: u16, mac: [u8; 6]) -> Vec<u8> {
        let mut m = Vec::new();
        let attrs_len = (4 + 16) + (4 + 6 + 2);
        let len = NLMSG_HEADER_LEN + NDMSG_LEN + attrs_len;
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[AF_INET6, 0, 0, 0]);
        m.extend_from_slice(&ifindex.to_ne_bytes());
        m.extend_from_slice(&state.to_ne_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&20u16.to_ne_bytes());
        m.extend_from_slice(&NDA_DST.to_ne_bytes());
        m.extend_from_slice(&addr.octets());
        m.extend_from_slice(&10u16.to_ne_bytes());
        m.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
        m.extend_from_slice(&mac);
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(NLMSG_HEADER_LEN as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m
    }

    #[test]
    fn an_entry_is_found_only_on_its_interface_for_its_address_when_usable() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mac = [2, 0, 0, 0, 0, 7];
        assert!(matches!(find(&dump(3, a, 0x02, mac), 3, a), (Scan::Done, Some(m)) if m == mac));
        for (buf, idx, want) in [
            (dump(4, a, 0x02, mac), 3, a),
            (dump(3, a, 0x20, mac), 3, a),
            (dump(3, a, 0x01, mac), 3, a),
            (dump(3, a, 0x02, mac), 3, "2001:db8::2".parse().unwrap()),
        ] {
            assert_eq!(find(&buf, idx, want).1, None);
        }
    }

    /// What an earlier request left unread (another sequence number) is skipped, whole reads
    /// of it included: a socket serves one request after another.
    #[test]
    fn messages_of_another_request_are_skipped() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut stale = dump(3, a, 0x02, [1; 6]);
        for at in [0, stale.len() - NLMSG_HEADER_LEN] {
            stale[at + 8..at + 12].copy_from_slice(&7u32.to_ne_bytes());
        }
        assert!(matches!(find(&stale, 3, a), (Scan::Other, None)));
        // Another request's entry, then ours, in one read.
        let mut both = stale.clone();
        both.truncate(stale.len() - NLMSG_HEADER_LEN);
        both.extend_from_slice(&dump(3, a, 0x02, [2; 6]));
        assert!(matches!(find(&both, 3, a), (Scan::Done, Some(m)) if m == [2; 6]));
    }

    #[test]
    fn truncated_or_garbage_replies_end_the_scan_without_a_panic() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let full = dump(3, a, 0x02, [1; 6]);
        for cut in 0..full.len() {
            find(&full[..cut], 3, a);
        }
        let mut junk = full.clone();
        for b in junk.iter_mut().skip(16).step_by(3) {
            *b = 0xff;
        }
        find(&junk, 3, a);
    }
}
