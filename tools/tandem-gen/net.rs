//! How a generator thread's datagrams go out and come back: through a UDP socket (the default,
//! works everywhere), or with `--datapath xdp` as Ethernet frames through an AF_XDP socket on
//! one receive queue of the interface, past the kernel's UDP stack, the way traffic generators
//! for BNG labs load a server.
//!
//! On AF_XDP each thread owns the socket of the receive queue of its own number and one UDP
//! port, and the XDP program (the server's, loaded for the generator's port range) hands every
//! reply to the socket of the queue it arrived on. A reply that lands on another thread's queue
//! (the NIC or veth chose the queue, not us) is passed to its thread through a bounded channel.
//! The kernel socket bound to each port keeps the port ours and receives what the program
//! passes to the kernel (a queue without a socket); a message no UMEM frame or TX slot is free
//! for leaves through it too. Nothing is dropped silently: every path has a counter.

use std::io;
use std::net::{SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tandem_server::edge::xdp::EventFd;
use tandem_server::edge::xdp::frame::{self, UdpFrameHeader};
use tandem_server::edge::xdp::spread::Peers;
use tandem_server::edge::xdp::xsk::{NotSent, Xsk};

/// Replies waiting to be passed from the thread whose queue they arrived on to the thread
/// that owns their port; past it they are dropped and counted (the client retransmits).
pub const FORWARD_QUEUE_MAX: usize = 4096;
/// Receive buffer of the kernel's socket on each port (as the UDP datapath's sockets).
pub const KERNEL_RECV_BUFFER: usize = 4 << 20;
/// How long one receive call waits when nothing has arrived.
pub const RECV_WAIT: Duration = Duration::from_millis(1);

/// A reply on its way to the thread that owns its port.
pub type Forwarded = Vec<u8>;

/// What the AF_XDP path of all threads counted (summed over threads; for the report).
#[derive(Default)]
pub struct XdpCounts {
    /// Frames received on our AF_XDP sockets.
    pub frames_in: AtomicU64,
    /// Frames sent through our AF_XDP sockets.
    pub frames_out: AtomicU64,
    /// Replies that arrived on another thread's queue and were passed to their thread.
    pub forwarded: AtomicU64,
    /// Of those, dropped because the owner's queue was full.
    pub forward_dropped: AtomicU64,
    /// Replies received through the kernel's UDP socket (passed by the program).
    pub kernel_in: AtomicU64,
    /// Messages sent through the kernel's UDP socket (no free frame or TX slot, or too large).
    pub kernel_out: AtomicU64,
    /// Messages or replies lost on our side for any other reason (a kernel send that failed,
    /// a reply larger than a receive slot): the retransmission timers cover them.
    pub dropped: AtomicU64,
    /// Frames the kernel dropped before our sockets saw them (RX ring full, no frame in the
    /// fill ring, ...: XDP_STATISTICS), read when a thread's path closes.
    pub socket_drops: AtomicU64,
    /// Received frames refused by the frame parser (bad checksum, truncated, ...).
    pub bad_frames: AtomicU64,
    /// Of those, refused for their UDP checksum (on veth: a kernel sender's checksum left to
    /// an offload that never happens; turn the sender's tx checksum offload off).
    pub bad_checksums: AtomicU64,
}

impl XdpCounts {
    /// The counts as JSON.
    pub fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "frames_in": g(&self.frames_in),
            "frames_out": g(&self.frames_out),
            "forwarded": g(&self.forwarded),
            "forward_dropped": g(&self.forward_dropped),
            "kernel_in": g(&self.kernel_in),
            "kernel_out": g(&self.kernel_out),
            "dropped": g(&self.dropped),
            "socket_drops": g(&self.socket_drops),
            "bad_frames": g(&self.bad_frames),
            "bad_checksums": g(&self.bad_checksums),
        })
    }
}

/// One thread's AF_XDP path.
pub struct XdpNet {
    /// The AF_XDP socket of receive queue `thread`.
    xsk: Xsk,
    /// The kernel's socket on our port (see the module documentation).
    udp: UdpSocket,
    /// This thread's index; its port is `first_port + thread`.
    thread: usize,
    /// The first port of the run's range.
    first_port: u16,
    /// The frame headers to each destination, from our port.
    headers: Vec<(SocketAddrV6, UdpFrameHeader)>,
    /// The other threads: replies for them go to their inboxes (woken once per batch), and
    /// theirs for us come in ours.
    peers: Peers<Forwarded>,
    /// Signalled by the other threads when they put replies in our inbox.
    wake: Arc<EventFd>,
    /// Read the kernel's socket on every pass, not only when nothing else came: some receive
    /// queues have no socket of ours, so their replies reach the kernel's socket under load.
    read_kernel_always: bool,
    /// Where the kernel's socket's datagrams are listed before they join the batch.
    kernel_got: Vec<(usize, SocketAddrV6)>,
    /// The run's counters.
    counts: Arc<XdpCounts>,
}

/// A thread's way to the servers.
pub enum Net {
    /// A UDP socket.
    Udp(UdpSocket),
    /// An AF_XDP socket (boxed: its rings and state are large).
    Xdp(Box<XdpNet>),
}

impl Net {
    /// A UDP path on `sock`.
    pub fn udp(sock: UdpSocket) -> Net {
        let _ = sock.set_read_timeout(Some(RECV_WAIT));
        Net::Udp(sock)
    }

    /// Whether this is the AF_XDP path.
    pub fn is_xdp(&self) -> bool {
        matches!(self, Net::Xdp(_))
    }

    /// The UDP port our messages come from.
    pub fn local_port(&self) -> u16 {
        let s = match self {
            Net::Udp(s) => s,
            Net::Xdp(x) => &x.udp,
        };
        s.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends each (message, destination); a message that cannot be sent is lost, which the
    /// retransmission timer covers.
    pub fn send<'a>(&mut self, msgs: impl Iterator<Item = (&'a [u8], SocketAddrV6)> + Clone) {
        match self {
            Net::Udp(sock) => {
                let sent = tandem_server::edge::udp::send_many(sock, msgs.clone());
                for (b, d) in msgs.skip(sent) {
                    let _ = sock.send_to(b, d);
                }
            }
            Net::Xdp(x) => x.send(msgs),
        }
    }

    /// Receives what has arrived into `batch` (slots of `slot` bytes), one entry per datagram
    /// in `got` (its length and sender), waiting at most [`RECV_WAIT`] when nothing has.
    pub fn recv(
        &mut self,
        batch: &mut [u8],
        slot: usize,
        got: &mut Vec<(usize, SocketAddrV6)>,
    ) -> usize {
        match self {
            Net::Udp(sock) => {
                tandem_server::edge::udp::recv_many(sock, batch, slot, got).unwrap_or(0)
            }
            Net::Xdp(x) => x.recv(batch, slot, got),
        }
    }
}

impl Drop for XdpNet {
    fn drop(&mut self) {
        let mut sum = 0;
        self.xsk.take_drops(&mut |_, n| sum += n);
        self.counts.socket_drops.fetch_add(sum, Ordering::Relaxed);
    }
}

impl XdpNet {
    fn send<'a>(&mut self, msgs: impl Iterator<Item = (&'a [u8], SocketAddrV6)>) {
        let (mut framed, mut kernel, mut dropped) = (0u64, 0u64, 0u64);
        for (payload, dest) in msgs {
            let Some(h) = self
                .headers
                .iter()
                .find(|(d, _)| *d == dest)
                .map(|(_, h)| *h)
            else {
                // Every destination gets a header at start: this is a bug if it ever counts.
                dropped += 1;
                continue;
            };
            let mut r = self.xsk.send(&h, payload);
            if matches!(r, Err(NotSent::NoFrame | NotSent::RingFull)) {
                // The kernel sends what waits and hands its frames back; then once more.
                self.xsk.recycle();
                r = self.xsk.send(&h, payload);
            }
            match r {
                Ok(()) => framed += 1,
                Err(_) => match self.udp.send_to(payload, dest) {
                    Ok(_) => kernel += 1,
                    Err(_) => dropped += 1,
                },
            }
        }
        self.xsk.flush();
        let c = &self.counts;
        c.frames_out.fetch_add(framed, Ordering::Relaxed);
        if kernel + dropped > 0 {
            c.kernel_out.fetch_add(kernel, Ordering::Relaxed);
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    fn recv(
        &mut self,
        batch: &mut [u8],
        slot: usize,
        got: &mut Vec<(usize, SocketAddrV6)>,
    ) -> usize {
        got.clear();
        let slots = batch.len() / slot;
        self.xsk.recycle();
        let mut kernel_ready = self.read_kernel_always;
        if self.xsk.take() == 0 && !self.peers.waiting() {
            let fds = [self.udp.as_raw_fd(), self.wake.as_raw_fd()];
            if let Ok(ready) = self.xsk.wait(&fds, RECV_WAIT.as_millis() as i32) {
                kernel_ready |= ready[0];
            }
            self.xsk.take();
        }
        self.wake.clear();
        let n = self.xsk.received();
        let (mut bad, mut bad_sum, mut forwarded, mut forward_dropped, mut dropped) =
            (0, 0, 0, 0, 0);
        for k in 0..n {
            let Some(f) = self.xsk.frame(k) else { continue };
            let p = match frame::parse(f) {
                Ok(p) => p,
                Err(e) => {
                    bad += 1;
                    bad_sum += (e == frame::FrameError::BadChecksum) as u64;
                    continue;
                }
            };
            let h = p.header;
            let payload = &f[p.payload.clone()];
            let owner = h.dst_port.wrapping_sub(self.first_port) as usize;
            let from = SocketAddrV6::new(h.src, h.src_port, 0, 0);
            if owner == self.thread {
                // The batch has a slot per frame the RX ring hands over at most.
                if got.len() < slots && payload.len() <= slot {
                    let at = got.len() * slot;
                    batch[at..at + payload.len()].copy_from_slice(payload);
                    got.push((payload.len(), from));
                } else {
                    dropped += 1;
                }
            } else if owner < self.peers.members() {
                forwarded += 1;
                if self.peers.send(owner, payload.to_vec()).is_err() {
                    forward_dropped += 1;
                }
            } else {
                dropped += 1;
            }
        }
        self.peers.wake_peers();
        while got.len() < slots {
            let Some(d) = self.peers.recv() else { break };
            if d.len() <= slot {
                let at = got.len() * slot;
                batch[at..at + d.len()].copy_from_slice(&d);
                got.push((
                    d.len(),
                    SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, 0, 0, 0),
                ));
            } else {
                dropped += 1;
            }
        }
        if (kernel_ready || got.is_empty()) && got.len() < slots {
            // What the program passed to the kernel: a queue without a socket of ours, or a
            // frame it does not take. Non-blocking; into the slots still free.
            let at = got.len() * slot;
            let k = tandem_server::edge::udp::recv_many(
                &self.udp,
                &mut batch[at..],
                slot,
                &mut self.kernel_got,
            )
            .unwrap_or(0);
            if k > 0 {
                self.counts.kernel_in.fetch_add(k as u64, Ordering::Relaxed);
                got.extend_from_slice(&self.kernel_got);
            }
        }
        let c = &self.counts;
        c.frames_in.fetch_add(n as u64, Ordering::Relaxed);
        if bad + dropped > 0 {
            c.bad_frames.fetch_add(bad, Ordering::Relaxed);
            c.bad_checksums.fetch_add(bad_sum, Ordering::Relaxed);
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if forwarded > 0 {
            c.forwarded.fetch_add(forwarded, Ordering::Relaxed);
            c.forward_dropped
                .fetch_add(forward_dropped, Ordering::Relaxed);
        }
        got.len()
    }
}

/// What [`open`] sets up for a run: the program (detached when dropped) and a path per thread.
pub struct XdpRun {
    /// The XDP program on the interface; keep it until the threads are done.
    pub program: tandem_server::edge::xdp::program::XdpProgram,
    /// One path per thread.
    pub nets: Vec<Net>,
    /// The counters the paths share.
    pub counts: Arc<XdpCounts>,
    /// The interface's name.
    pub interface: String,
    /// How many of the sockets are bound in zero-copy mode.
    pub zero_copy_sockets: usize,
}

/// Most attempts at finding a free range of ports.
const PORT_RANGE_TRIES: usize = 64;

/// Binds `n` UDP sockets on consecutive ports (any free range); returns them, first port first.
fn bind_port_range(n: usize) -> io::Result<Vec<UdpSocket>> {
    for _ in 0..PORT_RANGE_TRIES {
        let first = UdpSocket::bind("[::]:0")?;
        let base = first.local_addr()?.port();
        if base as usize + n > u16::MAX as usize {
            continue;
        }
        let mut v = vec![first];
        for i in 1..n {
            match UdpSocket::bind(SocketAddrV6::new(
                std::net::Ipv6Addr::UNSPECIFIED,
                base + i as u16,
                0,
                0,
            )) {
                Ok(s) => v.push(s),
                Err(_) => break,
            }
        }
        if v.len() == n {
            return Ok(v);
        }
    }
    Err(io::Error::other(format!(
        "found no {n} consecutive free UDP ports in {PORT_RANGE_TRIES} tries"
    )))
}

/// The interface the kernel would send to `dest` through, and the source address it would use.
fn route_of(dest: SocketAddrV6) -> io::Result<(u32, std::net::Ipv6Addr)> {
    let probe = UdpSocket::bind("[::]:0")?;
    probe
        .connect(dest)
        .map_err(|e| io::Error::new(e.kind(), format!("no route to {dest}: {e}")))?;
    let src = match probe.local_addr()? {
        std::net::SocketAddr::V6(a) => *a.ip(),
        std::net::SocketAddr::V4(_) => return Err(io::Error::other("not IPv6")),
    };
    if dest.scope_id() != 0 {
        return Ok((dest.scope_id(), src));
    }
    let host = tandem_server::edge::xdp::host_addresses();
    let idx = host
        .iter()
        .find(|h| h.addr == src)
        .map(|h| h.ifindex)
        .ok_or_else(|| {
            io::Error::other(format!(
                "source address {src} for {dest} is on no interface"
            ))
        })?;
    Ok((idx, src))
}

/// Sets up `--datapath xdp` for `threads` threads sending to `dests`: the interface (named, or
/// the one the kernel routes the first destination through), a socket on each of its first
/// `threads` receive queues, the program for the threads' ports, and each destination's frame
/// header (its MAC address from the kernel's neighbour table).
pub fn open(
    interface: Option<&str>,
    dests: &[SocketAddrV6],
    threads: usize,
    mode: tandem_server::edge::xdp::program::XdpAttachMode,
) -> Result<XdpRun, String> {
    use tandem_server::edge::xdp::{self as x, Interface, neighbour, program};
    if !program::built() {
        return Err(program::ProgramError::NotBuilt.to_string());
    }
    let mut routes = Vec::new();
    for d in dests {
        routes.push(route_of(*d).map_err(|e| e.to_string())?);
    }
    let name = match interface {
        Some(n) => n.to_string(),
        None => {
            let idx = routes.first().map(|r| r.0).unwrap_or(0);
            nix::net::if_::if_indextoname(idx)
                .map_err(|e| format!("interface {idx}: {e}"))?
                .to_string_lossy()
                .into_owned()
        }
    };
    let iface = Interface::lookup(&name).map_err(|e| e.to_string())?;
    if let Some((d, _)) = dests.iter().zip(&routes).find(|(_, r)| r.0 != iface.index) {
        return Err(format!(
            "{d} is not reached through {name}: with --datapath xdp every --server must be on the one interface"
        ));
    }
    if threads as u32 > iface.rx_queues || threads as u32 > iface.tx_queues {
        return Err(format!(
            "{name} has {} receive and {} transmit queues: --threads must be at most that with \
             --datapath xdp (a socket per queue; more queues with ethtool -L {name} combined N, \
             or numrxqueues/numtxqueues on a veth)",
            iface.rx_queues, iface.tx_queues
        ));
    }
    let udp = bind_port_range(threads).map_err(|e| e.to_string())?;
    let first_port = udp[0].local_addr().map(|a| a.port()).unwrap_or(0);
    let last_port = first_port + threads as u16 - 1;
    let mut headers = Vec::new();
    for (d, (_, src)) in dests.iter().zip(&routes) {
        let ip = *d.ip();
        let dst_mac = if ip.is_multicast() {
            let o = ip.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        } else {
            neighbour::resolve(iface.index, ip, Duration::from_secs(3))
                .map_err(|e| format!("the MAC address of {ip} on {name}: {e}"))?
        };
        headers.push((
            *d,
            UdpFrameHeader {
                dst_mac,
                src_mac: iface.mac,
                vlans: [None; frame::VLAN_TAGS_MAX],
                src: *src,
                dst: ip,
                src_port: 0,
                dst_port: d.port(),
                hop_limit: if ip.is_multicast() {
                    1
                } else {
                    frame::REPLY_HOP_LIMIT
                },
            },
        ));
    }
    let zero_copy_driver = x::driver_zero_copy(iface.index);
    x::raise_memlock(x::umem_budget(&iface, threads, zero_copy_driver));
    let mut prog = program::XdpProgram::attach_to(&iface, first_port..=last_port, mode)
        .map_err(|e| e.to_string())?;
    let zero_copy = prog.zero_copy(zero_copy_driver);
    let counts = Arc::new(XdpCounts::default());
    let wakes = (0..threads)
        .map(|_| EventFd::new().map(Arc::new))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| format!("eventfd: {e}"))?;
    let groups = Peers::group(&wakes, FORWARD_QUEUE_MAX);
    let mut nets = Vec::new();
    let mut zero_copy_sockets = 0;
    for ((t, sock), peers) in udp.into_iter().enumerate().zip(groups) {
        let xsk = Xsk::open(&iface, t as u32, zero_copy).map_err(|e| e.to_string())?;
        prog.register(t as u32, xsk.fd())
            .map_err(|e| e.to_string())?;
        zero_copy_sockets += xsk.zero_copy() as usize;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(KERNEL_RECV_BUFFER);
        let port = first_port + t as u16;
        nets.push(Net::Xdp(Box::new(XdpNet {
            xsk,
            udp: sock,
            thread: t,
            first_port,
            headers: headers
                .iter()
                .map(|(d, h)| {
                    (
                        *d,
                        UdpFrameHeader {
                            src_port: port,
                            ..*h
                        },
                    )
                })
                .collect(),
            peers,
            wake: wakes[t].clone(),
            read_kernel_always: (threads as u32) < iface.rx_queues,
            kernel_got: Vec::with_capacity(crate::client::RECV_BURST_MAX),
            counts: counts.clone(),
        })));
    }
    Ok(XdpRun {
        program: prog,
        nets,
        counts,
        interface: name,
        zero_copy_sockets,
    })
}
