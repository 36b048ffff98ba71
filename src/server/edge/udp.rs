//! The portable datapath: one SO_REUSEPORT UDP socket per worker and listener.
//!
//! The kernel's default SO_REUSEPORT spreading hashes the source address and port, and at an
//! ISP edge nearly every packet comes from a handful of relays, which would pin all work to one
//! worker. A classic BPF program attached with SO_ATTACH_REUSEPORT_CBPF picks the worker from
//! the DHCPv6 payload instead: the low byte of the transaction id for client messages, and of
//! the client's peer address for Relay-forw.

use super::{DATAGRAM_LEN_MAX, Datapath, PendingReply, RxMeta, mmsg};
use nix::sys::socket::{self, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// All DHCP servers and relay agents (RFC 8415 §7.1).
pub const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// Receive buffer asked of the kernel per socket, to ride out bursts.
pub const SOCKET_RCVBUF_BYTES: usize = 4 << 20;
/// How long a receive blocks before the worker checks whether it should stop.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(200);

/// Where a listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// A unicast address and port (e.g. `[::1]:5547`).
    Unicast(SocketAddrV6),
    /// `[::]:port`, joined to ff02::1:2 on each named interface.
    Multicast {
        /// UDP port, normally 547.
        port: u16,
        /// Interface names.
        interfaces: Vec<String>,
    },
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenSpec::Unicast(a) => write!(f, "{a}"),
            ListenSpec::Multicast { port, interfaces } => {
                write!(f, "[ff02::1:2]:{port} on {}", interfaces.join(","))
            }
        }
    }
}

/// Most datagrams taken from the socket by one recvmmsg call.
pub const RECV_BATCH_MAX: usize = 32;

/// One worker's UDP socket for one listener, with its receive buffers.
pub struct UdpPath {
    sock: UdpSocket,
    /// RECV_BATCH_MAX slots of DATAGRAM_LEN_MAX bytes.
    bufs: Vec<u8>,
    /// Length of each datagram of the last batch.
    lens: [usize; RECV_BATCH_MAX],
    /// Bound to `[::]`: a reply names its source ([`RxMeta::dst`]), which the kernel would
    /// otherwise pick by the route. A socket bound to one address sends from it anyway.
    wildcard: bool,
}

fn ifindex(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .map_err(|e| io::Error::other(format!("interface {name}: {e}")))
}

/// Which byte of a DHCPv6 message spreads it over workers: the low byte of the client's
/// peer-address in a Relay-forw (one relay carries many clients), else the low byte of the
/// transaction id. None when the message is too short to have it. The UDP path's
/// [`spread_program`] makes the same choice in the kernel; the AF_XDP path's
/// [`super::xdp::spread`] in the worker.
pub fn spread_key(payload: &[u8]) -> Option<u8> {
    match payload.first()? {
        12 => payload.get(33).copied(),
        _ => payload.get(3).copied(),
    }
}

/// Classic BPF for SO_ATTACH_REUSEPORT_CBPF: returns (selected payload byte) % `n`, the byte
/// [`spread_key`] names.
fn spread_program(n: u32) -> Vec<libc::sock_filter> {
    let ins = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        ins(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 0), // A = msg-type
        ins(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 2, 0, 12), // Relay-forw?
        ins(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 3), // A = low byte of transaction-id
        ins(libc::BPF_JMP | libc::BPF_JA, 0, 0, 1),
        ins(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 33), // A = low byte of peer-address
        ins(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, n.max(1)),
        ins(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
    ]
}

impl UdpPath {
    /// Opens the socket of worker `worker` of `workers` for `spec`. Every worker's socket of a
    /// listener joins one SO_REUSEPORT group; the first one attaches the spreading program.
    pub fn open(spec: &ListenSpec, worker: usize, workers: usize) -> io::Result<UdpPath> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        let _ = s.set_recv_buffer_size(SOCKET_RCVBUF_BYTES);
        s.set_read_timeout(Some(RECV_TIMEOUT))?;
        let sock: UdpSocket = s.into();
        socket::setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
        let bind = match spec {
            ListenSpec::Unicast(a) => *a,
            ListenSpec::Multicast { port, .. } => {
                SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, *port, 0, 0)
            }
        };
        // Bind through socket2 to keep the reuse options set above.
        let s2 = Socket::from(sock);
        s2.bind(&bind.into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind {bind}: {e}")))?;
        let sock: UdpSocket = s2.into();
        if let ListenSpec::Multicast { interfaces, .. } = spec {
            // Linux hands a multicast datagram to every socket bound to the port, SO_REUSEPORT
            // or not, so with IPV6_MULTICAST_ALL off only the one socket that joined the group
            // receives it (once). Unicast and relayed traffic still spreads over all workers.
            socket2::SockRef::from(&sock).set_multicast_all_v6(false)?;
            if worker != 0 {
                return Ok(UdpPath {
                    sock,
                    bufs: vec![0u8; RECV_BATCH_MAX * DATAGRAM_LEN_MAX],
                    lens: [0; RECV_BATCH_MAX],
                    wildcard: true,
                });
            }
            for name in interfaces {
                sock.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex(name)?)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("join ff02::1:2 on {name}: {e}"))
                    })?;
            }
        }
        if worker == 0 && workers > 1 {
            let prog = spread_program(workers as u32);
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut _,
            };
            // The kernel copies the program during the call; `prog` outlives it.
            socket::setsockopt(&sock, sockopt::AttachReusePortCbpf, &fprog)
                .map_err(io::Error::from)?;
        }
        Ok(UdpPath {
            sock,
            bufs: vec![0u8; RECV_BATCH_MAX * DATAGRAM_LEN_MAX],
            lens: [0; RECV_BATCH_MAX],
            wildcard: bind.ip().is_unspecified(),
        })
    }

    /// Fails if another process already listens where `spec` would: every worker socket uses
    /// SO_REUSEPORT, which would otherwise let a second server silently share the traffic.
    pub fn check_free(spec: &ListenSpec) -> io::Result<()> {
        let bind = match spec {
            ListenSpec::Unicast(a) => *a,
            ListenSpec::Multicast { port, .. } => {
                SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, *port, 0, 0)
            }
        };
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.bind(&bind.into()).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::AddrInUse {
                "in use by another process".to_string()
            } else {
                e.to_string()
            };
            io::Error::new(e.kind(), format!("bind {bind}: {why}"))
        })
    }

    /// A handle that can send from this socket (for the group committer).
    pub fn sender(&self) -> io::Result<UdpSocket> {
        self.sock.try_clone()
    }
}

impl Datapath for UdpPath {
    /// The kernel spreads the socket path's datagrams over workers ([`spread_program`]).
    fn take_handoffs(&mut self, _add: &mut dyn FnMut(&'static str, u64)) {}

    fn take_kernel_routed(&mut self, _add: &mut dyn FnMut(&'static str, u64)) {}

    fn recv_batch(&mut self, metas: &mut Vec<RxMeta>) -> io::Result<usize> {
        metas.clear();
        let lens = &mut self.lens;
        let wildcard = self.wildcard;
        // MSG_WAITFORONE: block (up to RECV_TIMEOUT) for the first datagram, then take
        // whatever else is already queued.
        mmsg::recv(
            self.sock.as_raw_fd(),
            &mut self.bufs,
            DATAGRAM_LEN_MAX,
            true,
            |i, d| {
                let Some(src) = d.src else { return };
                let (multicast, ifindex) = d
                    .pktinfo
                    .map_or((false, 0), |(dst, ifx)| (dst.is_multicast(), ifx));
                lens[i] = d.len.min(DATAGRAM_LEN_MAX);
                metas.push(RxMeta {
                    src,
                    len: d.len,
                    truncated: d.truncated,
                    multicast,
                    dst: d
                        .pktinfo
                        .map(|(dst, _)| dst)
                        .filter(|a| wildcard && !a.is_multicast()),
                    ifindex,
                    slot: i,
                    reply_frame: None,
                    drop: None,
                    received_at: None,
                });
            },
        )?;
        Ok(metas.len())
    }

    fn datagram(&self, meta: &RxMeta) -> &[u8] {
        let start = meta.slot * DATAGRAM_LEN_MAX;
        &self.bufs[start..start + self.lens[meta.slot]]
    }

    fn send_batch(&mut self, replies: &[PendingReply]) -> usize {
        send_batch(&self.sock, replies)
    }

    fn send(&mut self, reply: &PendingReply) -> io::Result<()> {
        send_to(&self.sock, reply.to, reply.from, &reply.bytes)
    }
}

/// Sends a datagram from `from` (the address the request was sent to, see [`RxMeta::dst`]) or,
/// when that is `None` or no longer the host's, from the address the kernel picks; used by
/// workers and the group committer alike.
pub fn send_to(
    sock: &UdpSocket,
    to: SocketAddrV6,
    from: Option<Ipv6Addr>,
    bytes: &[u8],
) -> io::Result<()> {
    match mmsg::send_one(sock.as_raw_fd(), bytes, to, from) {
        Err(e) if from.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
            mmsg::send_one(sock.as_raw_fd(), bytes, to, None)
        }
        r => r,
    }
}

/// Most datagrams handed to one sendmmsg call.
pub const SEND_BATCH_MAX: usize = mmsg::SEND_BATCH_MAX;

/// Sends replies with sendmmsg, [`SEND_BATCH_MAX`] at a time. Returns how many leading
/// replies were sent; the caller sends the rest one by one (and sees their errors).
pub fn send_batch(sock: &UdpSocket, replies: &[PendingReply]) -> usize {
    mmsg::send(
        sock.as_raw_fd(),
        replies.iter().map(|r| (&r.bytes[..], r.to, r.from)),
    )
}

/// Sends datagrams with sendmmsg, [`SEND_BATCH_MAX`] per call. Returns how many leading ones
/// went out (the caller sends or drops the rest). Used by the server and the tools alike.
pub fn send_many<'a>(
    sock: &UdpSocket,
    msgs: impl Iterator<Item = (&'a [u8], SocketAddrV6)>,
) -> usize {
    mmsg::send(sock.as_raw_fd(), msgs.map(|(b, to)| (b, to, None)))
}

/// Receives up to `bufs.len() / slot_len` datagrams (at most [`mmsg::RECV_BATCH_MAX`]) with
/// recvmmsg: blocks (up to the socket's read timeout) for the first, then takes what is queued. `out` gets (length, source) per
/// datagram, datagram i in `bufs[i * slot_len..]`. Returns how many; 0 on timeout.
pub fn recv_many(
    sock: &UdpSocket,
    bufs: &mut [u8],
    slot_len: usize,
    out: &mut Vec<(usize, SocketAddrV6)>,
) -> io::Result<usize> {
    out.clear();
    mmsg::recv(sock.as_raw_fd(), bufs, slot_len, false, |_, d| {
        let from = d
            .src
            .unwrap_or(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        out.push((d.len.min(slot_len), from));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_key_is_the_peer_address_of_a_relay_forw_else_the_transaction_id() {
        assert_eq!(spread_key(&[1, 0xaa, 0xbb, 0xcc, 0, 1]), Some(0xcc));
        let mut relay = vec![12u8, 0];
        relay.extend((0..32).map(|i| i as u8));
        assert_eq!(relay.len(), 34);
        assert_eq!(spread_key(&relay), Some(31), "peer-address's last byte");
        assert_eq!(spread_key(&relay[..33]), None);
        assert_eq!(spread_key(&[1, 2, 3]), None);
        assert_eq!(spread_key(&[]), None);
        // The kernel program reads the same bytes: offsets 0, 3 and 33.
        let prog = spread_program(4);
        let loads: Vec<u32> = prog
            .iter()
            .filter(|i| i.code == (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16)
            .map(|i| i.k)
            .collect();
        assert_eq!(loads, vec![0, 3, 33]);
    }
}
