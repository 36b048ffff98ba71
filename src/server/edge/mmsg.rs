//! recvmmsg and sendmmsg with their headers on the stack: no allocation per call.
//!
//! nix's wrappers allocate the message headers, the addresses and (for receiving) a
//! control-message buffer per header on every call, and zero them: about 3,000 instructions
//! per exchange at the rates where a receive returns one datagram (callgrind,
//! `bench/instructions-per-exchange.sh`), more than parsing the message. Here the headers,
//! the addresses and the control buffers live in arrays on the caller's stack for the one
//! call, so the sockets and the paths that own them stay plain `Send` values.
//!
//! The crate denies `unsafe` everywhere but here and in the AF_XDP datapath; every block
//! says why it is sound.

#![allow(unsafe_code)]

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;

/// Most datagrams one [`recv`] call takes.
pub const RECV_BATCH_MAX: usize = 64;

/// Most datagrams one sendmmsg call of [`send`] hands the kernel (it loops for more).
pub const SEND_BATCH_MAX: usize = 256;

/// Room for one IPV6_PKTINFO control message (CMSG_SPACE of 20 bytes is 40 on 64-bit Linux),
/// 8-byte aligned as cmsghdr needs.
#[repr(C, align(8))]
struct CmsgBuf(#[allow(dead_code)] [u8; 64]);

/// What [`recv`] learned of one datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    /// Its length as the kernel reports it: the bytes copied into its slot (at most the
    /// slot; `truncated` tells whether there were more).
    pub len: usize,
    /// Where it came from (`None`: not an IPv6 source, which an IPv6 socket does not return).
    pub src: Option<SocketAddrV6>,
    /// It did not fit its slot (MSG_TRUNC).
    pub truncated: bool,
    /// Its destination address and the receiving interface's index, from IPV6_PKTINFO (when
    /// asked for and the socket has the option on).
    pub pktinfo: Option<(Ipv6Addr, u32)>,
}

/// Receives up to `min(bufs.len() / slot_len, RECV_BATCH_MAX)` datagrams with one recvmmsg
/// on `fd`: blocks (up to the socket's read timeout) for the first, then takes what is queued.
/// Datagram i lands in `bufs[i * slot_len..]` and is reported by `each(i, ..)`. With
/// `pktinfo`, each datagram's IPV6_PKTINFO is read too. Returns how many; 0 on timeout or
/// interruption.
pub fn recv(
    fd: RawFd,
    bufs: &mut [u8],
    slot_len: usize,
    pktinfo: bool,
    mut each: impl FnMut(usize, Datagram),
) -> io::Result<usize> {
    if slot_len == 0 {
        return Ok(0);
    }
    let slots = (bufs.len() / slot_len).min(RECV_BATCH_MAX);
    if slots == 0 {
        return Ok(0);
    }
    // Only the first `slots` entries are set, each whole; the kernel fills the addresses and
    // the control buffers. Nothing is zeroed in bulk (a memset of every array cost more than
    // the allocations it replaced).
    let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; RECV_BATCH_MAX];
    let mut names = [const { MaybeUninit::<libc::sockaddr_in6>::uninit() }; RECV_BATCH_MAX];
    let mut cmsgs = [const { MaybeUninit::<CmsgBuf>::uninit() }; RECV_BATCH_MAX];
    let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; RECV_BATCH_MAX];
    for (iov, chunk) in iovs.iter_mut().zip(bufs.chunks_mut(slot_len).take(slots)) {
        iov.write(libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        });
    }
    // Pointers into the arrays above, taken once the iovecs are written; nothing else writes
    // to those arrays until the call has returned.
    let (iov_at, name_at, cmsg_at) = (iovs.as_mut_ptr(), names.as_mut_ptr(), cmsgs.as_mut_ptr());
    for (i, h) in hdrs.iter_mut().take(slots).enumerate() {
        // SAFETY: i < slots <= RECV_BATCH_MAX, the length of each array.
        let (iov, name, cmsg) = unsafe { (iov_at.add(i), name_at.add(i), cmsg_at.add(i)) };
        let mut mm = header(iov.cast(), name.cast());
        if pktinfo {
            mm.msg_hdr.msg_control = cmsg.cast();
            mm.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>();
        }
        h.write(mm);
    }
    // SAFETY: the first `slots` headers are initialised and point at initialised iovecs
    // (reaching `bufs`) and at address and control space, all alive and not otherwise
    // borrowed for the call; the kernel writes only within the lengths given.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
            slots as libc::c_uint,
            libc::MSG_WAITFORONE,
            ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    let n = (n as usize).min(slots);
    for i in 0..n {
        // SAFETY: headers 0..slots were written above; the kernel updated lengths and flags.
        let h = unsafe { hdrs[i].assume_init_ref() };
        let m = &h.msg_hdr;
        let src = if m.msg_namelen as usize >= mem::size_of::<libc::sockaddr_in6>() {
            // SAFETY: the kernel wrote a whole sockaddr_in6 there (msg_namelen says so).
            let a = unsafe { names[i].assume_init_ref() };
            (a.sin6_family == libc::AF_INET6 as libc::sa_family_t).then(|| {
                SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
            })
        } else {
            None
        };
        let pktinfo = if pktinfo { read_pktinfo(m) } else { None };
        each(
            i,
            Datagram {
                len: h.msg_len as usize,
                src,
                truncated: m.msg_flags & libc::MSG_TRUNC != 0 || h.msg_len as usize > slot_len,
                pktinfo,
            },
        );
    }
    Ok(n)
}

/// A message header for one datagram in `iov` to or from the IPv6 address at `name`, without
/// control messages.
fn header(iov: *mut libc::iovec, name: *mut libc::sockaddr_in6) -> libc::mmsghdr {
    // SAFETY: all zeroes is a valid mmsghdr (null pointers, zero lengths).
    let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
    m.msg_hdr.msg_iov = iov;
    m.msg_hdr.msg_iovlen = 1;
    m.msg_hdr.msg_name = name.cast();
    m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    m
}

/// The IPV6_PKTINFO among the control messages the kernel wrote for `m`.
fn read_pktinfo(m: &libc::msghdr) -> Option<(Ipv6Addr, u32)> {
    let want = mem::size_of::<libc::in6_pktinfo>();
    let start = m.msg_control as usize;
    let end = start + m.msg_controllen;
    // SAFETY: `m` is a header the kernel just filled: msg_control points at its control
    // buffer (alive) and msg_controllen says how much of it the kernel wrote; CMSG_FIRSTHDR
    // and CMSG_NXTHDR return a header that fits within that length, or null.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
    while !c.is_null() {
        // SAFETY: non-null, so a complete cmsghdr within the written length.
        let h = unsafe { ptr::read_unaligned(c) };
        // SAFETY: CMSG_DATA and CMSG_LEN are pointer and size arithmetic only.
        let (data, full) = unsafe {
            (
                libc::CMSG_DATA(c),
                libc::CMSG_LEN(want as libc::c_uint) as usize,
            )
        };
        if h.cmsg_level == libc::IPPROTO_IPV6
            && h.cmsg_type == libc::IPV6_PKTINFO
            && h.cmsg_len as usize >= full
            && data as usize + want <= end
        {
            // SAFETY: the in6_pktinfo lies within what the kernel wrote (checked just above
            // against msg_controllen, not only cmsg_len); it may be unaligned.
            let pi: libc::in6_pktinfo =
                unsafe { ptr::read_unaligned(data.cast::<libc::in6_pktinfo>()) };
            return Some((Ipv6Addr::from(pi.ipi6_addr.s6_addr), pi.ipi6_ifindex));
        }
        // SAFETY: as for CMSG_FIRSTHDR; `c` is a header within the written length.
        c = unsafe { libc::CMSG_NXTHDR(m, c) };
    }
    None
}

/// Sends datagrams on `fd` with sendmmsg, [`SEND_BATCH_MAX`] per call, each from the local
/// address given with it (`Some`: an IPV6_PKTINFO control message names it; `None`: the
/// kernel picks one by the route). Returns how many leading ones went out (the caller sends or
/// drops the rest; a source the kernel refuses stops a call at that datagram).
pub fn send<'a>(
    fd: RawFd,
    msgs: impl Iterator<Item = (&'a [u8], SocketAddrV6, Option<Ipv6Addr>)>,
) -> usize {
    let mut done = 0;
    let mut msgs = msgs.peekable();
    while msgs.peek().is_some() {
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; SEND_BATCH_MAX];
        let mut names = [const { MaybeUninit::<libc::sockaddr_in6>::uninit() }; SEND_BATCH_MAX];
        let mut cmsgs = [const { MaybeUninit::<CmsgBuf>::uninit() }; SEND_BATCH_MAX];
        let mut froms = [const { MaybeUninit::<Option<Ipv6Addr>>::uninit() }; SEND_BATCH_MAX];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; SEND_BATCH_MAX];
        let mut count = 0;
        for (bytes, to, from) in msgs.by_ref().take(SEND_BATCH_MAX) {
            iovs[count].write(libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            });
            names[count].write(sockaddr(to));
            froms[count].write(from);
            count += 1;
        }
        let (iov_at, name_at, cmsg_at) =
            (iovs.as_mut_ptr(), names.as_mut_ptr(), cmsgs.as_mut_ptr());
        for (i, h) in hdrs.iter_mut().take(count).enumerate() {
            // SAFETY: i < count <= SEND_BATCH_MAX; entries 0..count of the iovec and address
            // arrays are initialised just above and not written again before the call
            // returns; control buffer i is written only by `put_source` below.
            let (iov, name, cmsg) = unsafe { (iov_at.add(i), name_at.add(i), cmsg_at.add(i)) };
            let mut mm = header(iov.cast(), name.cast());
            // SAFETY: i < count: written in the loop above.
            if let Some(from) = unsafe { froms[i].assume_init() } {
                // SAFETY: `cmsg` is a whole CmsgBuf of this stack frame, alive for the call.
                unsafe { put_source(cmsg.cast(), &mut mm.msg_hdr, from) };
            }
            h.write(mm);
        }
        // SAFETY: the first `count` headers are initialised and point at initialised iovecs,
        // addresses and control messages on this stack frame and at the callers' byte slices,
        // all alive for the call; the kernel only reads them (and writes each header's
        // msg_len).
        let sent = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                count as libc::c_uint,
                0,
            )
        };
        if sent < 0 {
            return done;
        }
        done += sent as usize;
        if (sent as usize) < count {
            return done;
        }
    }
    done
}

/// Sends one datagram on `fd` to `to`, from the local address `from` if given (as [`send`]),
/// and says why not when the kernel refuses it.
pub fn send_one(
    fd: RawFd,
    bytes: &[u8],
    to: SocketAddrV6,
    from: Option<Ipv6Addr>,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let mut name = sockaddr(to);
    let mut cmsg = MaybeUninit::<CmsgBuf>::uninit();
    let mut mm = header(&mut iov, &mut name);
    if let Some(from) = from {
        // SAFETY: `cmsg` is a whole CmsgBuf on this stack frame, alive for the call below.
        unsafe { put_source(cmsg.as_mut_ptr(), &mut mm.msg_hdr, from) };
    }
    // SAFETY: the header points at `iov` (reaching `bytes`), `name` and `cmsg`, all alive and
    // initialised for the call; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &mm.msg_hdr, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `to` as the kernel takes it.
fn sockaddr(to: SocketAddrV6) -> libc::sockaddr_in6 {
    // SAFETY: all zeroes is a valid sockaddr_in6; the fields that matter are set.
    let mut a: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    a.sin6_port = to.port().to_be();
    a.sin6_flowinfo = to.flowinfo();
    a.sin6_addr.s6_addr = to.ip().octets();
    a.sin6_scope_id = to.scope_id();
    a
}

/// Points `m`'s control data at `buf` and writes there one IPV6_PKTINFO naming `from` as the
/// source address (interface index 0: the route decides where it leaves).
///
/// # Safety
/// `buf` must be valid for writing a whole [`CmsgBuf`] and stay alive while `m` is used.
unsafe fn put_source(buf: *mut CmsgBuf, m: &mut libc::msghdr, from: Ipv6Addr) {
    let info_len = mem::size_of::<libc::in6_pktinfo>() as libc::c_uint;
    // SAFETY: the caller hands a writable CmsgBuf; zeroing it first keeps the padding CMSG_*
    // skips defined. CMSG_SPACE of an in6_pktinfo (40 bytes) fits its 64, so CMSG_FIRSTHDR
    // returns the buffer's start and CMSG_DATA a place with room for the in6_pktinfo, which
    // is written unaligned.
    unsafe {
        buf.write(CmsgBuf([0; 64]));
        m.msg_control = buf.cast();
        m.msg_controllen = libc::CMSG_SPACE(info_len) as usize;
        let c = libc::CMSG_FIRSTHDR(m);
        debug_assert!(!c.is_null());
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(info_len) as usize;
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: from.octets(),
            },
            ipi6_ifindex: 0,
        };
        ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("[::1]:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        b.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::Ipv6RecvPacketInfo, &true)
            .unwrap();
        (a, b)
    }

    fn v6(s: &UdpSocket) -> SocketAddrV6 {
        match s.local_addr().unwrap() {
            std::net::SocketAddr::V6(a) => a,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn datagrams_sent_in_one_call_arrive_with_source_length_and_pktinfo() {
        let (a, b) = pair();
        let to = v6(&b);
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + i as usize]).collect();
        let sent = send(a.as_raw_fd(), payloads.iter().map(|p| (&p[..], to, None)));
        assert_eq!(sent, 5);
        let mut bufs = vec![0u8; 8 * 64];
        let mut got = Vec::new();
        let mut total = 0;
        // recvmmsg may return before all five are queued: read until they are in.
        for _ in 0..10 {
            total += recv(b.as_raw_fd(), &mut bufs, 64, true, |_, d| got.push(d)).unwrap();
            if total >= 5 {
                break;
            }
        }
        assert_eq!(got.len(), 5, "{got:?}");
        for (k, d) in got.iter().enumerate() {
            assert_eq!(d.len, 10 + k);
            assert!(!d.truncated);
            assert_eq!(d.src, Some(v6(&a)));
            let (dst, ifindex) = d.pktinfo.expect("IPV6_PKTINFO");
            assert_eq!(dst, Ipv6Addr::LOCALHOST);
            assert!(ifindex > 0);
        }
    }

    #[test]
    fn a_datagram_longer_than_its_slot_is_reported_truncated() {
        let (a, b) = pair();
        let big = [7u8; 300];
        assert_eq!(
            send(a.as_raw_fd(), std::iter::once((&big[..], v6(&b), None))),
            1
        );
        let mut bufs = vec![0u8; 2 * 100];
        let mut seen = None;
        let n = recv(b.as_raw_fd(), &mut bufs, 100, false, |_, d| seen = Some(d)).unwrap();
        assert_eq!(n, 1);
        let d = seen.unwrap();
        assert!(d.truncated && d.len >= 100, "{d:?}");
        assert!(d.pktinfo.is_none());
        assert!(bufs[..100].iter().all(|&x| x == 7));
    }

    #[test]
    fn more_than_one_batch_is_sent_in_several_calls() {
        // A full batch to one socket, then three more to another: the second call's three
        // must arrive (the first socket's buffer may drop some of a 256-datagram burst).
        let (a, b) = pair();
        let (_, c) = pair();
        let one = [1u8; 8];
        let to = |k: usize| if k < SEND_BATCH_MAX { v6(&b) } else { v6(&c) };
        let n = SEND_BATCH_MAX + 3;
        let sent = send(a.as_raw_fd(), (0..n).map(|k| (&one[..], to(k), None)));
        assert_eq!(sent, n);
        let mut bufs = vec![0u8; RECV_BATCH_MAX * 16];
        let mut got = 0;
        for _ in 0..10 {
            got += recv(c.as_raw_fd(), &mut bufs, 16, false, |_, _| {}).unwrap();
            if got >= 3 {
                break;
            }
        }
        assert_eq!(got, 3);
        assert!(recv(b.as_raw_fd(), &mut bufs, 16, false, |_, _| {}).unwrap() > 0);
    }

    /// A source the socket may send from is used (checked on the receiving side); one that is
    /// not the host's is refused, by `send_one` with the kernel's reason and by `send` at that
    /// datagram, after the ones before it went out.
    #[test]
    fn datagrams_leave_from_the_source_given_and_a_foreign_source_is_refused() {
        let a = UdpSocket::bind("[::]:0").unwrap();
        let (_, b) = pair();
        let to = v6(&b);
        let from = Some(Ipv6Addr::LOCALHOST);
        send_one(a.as_raw_fd(), b"one", to, from).unwrap();
        assert_eq!(
            send(a.as_raw_fd(), std::iter::once((&b"two"[..], to, from))),
            1
        );
        let mut bufs = vec![0u8; 4 * 64];
        let mut got = Vec::new();
        for _ in 0..10 {
            recv(b.as_raw_fd(), &mut bufs, 64, false, |_, d| got.push(d)).unwrap();
            if got.len() >= 2 {
                break;
            }
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got.iter().all(|d| d.src.map(|s| *s.ip()) == from),
            "{got:?}"
        );
        let foreign = Some("2001:db8::dead".parse().unwrap());
        let e = send_one(a.as_raw_fd(), b"x", to, foreign).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        let three = [
            (&b"ok"[..], to, from),
            (&b"no"[..], to, foreign),
            (&b"ok"[..], to, None),
        ];
        assert_eq!(send(a.as_raw_fd(), three.into_iter()), 1);
    }

    #[test]
    fn a_timeout_returns_nothing() {
        let (_a, b) = pair();
        b.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut bufs = vec![0u8; 4 * 64];
        let n = recv(b.as_raw_fd(), &mut bufs, 64, true, |_, _| {
            panic!("nothing was sent")
        })
        .unwrap();
        assert_eq!(n, 0);
    }
}
