//! The AF_XDP datapath (`tandem serve --datapath xdp`): one AF_XDP socket per receive queue of
//! each configured interface, each owned by a worker, fed by the XDP program ([`program`]) with
//! the UDP datagrams for the server port; frames are parsed and built by [`frame`].
//!
//! The rings and the UMEM come from the `xdp` crate (pure Rust, no C library, MIT OR
//! Apache-2.0). Frames are recycled between the fill, RX, TX and completion rings without
//! allocation. Replies that needed no commit leave through the worker's TX ring at once;
//! committed replies come back to the owning worker through a [`ReturnPath`] (a bounded channel
//! and an eventfd that wakes it), since only the worker may touch its rings. Anything the frame
//! path cannot carry (a reply too large for a frame or the link MTU) leaves through the UDP
//! socket on the server port instead, and the XDP program passes to the kernel whatever it does
//! not hand over (fragments, other traffic), where the UDP listener on the interface answers.

// The rings, the UMEM and the eventfd are shared with the kernel through raw memory and
// descriptors: this module (and `edge::mmsg`, the UDP batch calls) is where the server's unsafe
// code lives, each block with its SAFETY.
#![allow(unsafe_code)]

pub mod features;
pub mod frame;
pub mod neighbour;
pub mod next_hop;
pub mod program;
pub mod spread;
pub mod xsk;

use super::{PendingReply, RxMeta};
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// Frames of each socket's UMEM: [`FILL_TARGET`] kept in the fill ring, at most
/// [`RX_BATCH_MAX`] in the worker's hands, the rest for replies in the TX ring. The fill ring
/// is topped up first, so what TX holds never starves RX; a reply that finds no free frame
/// leaves through the UDP socket.
pub const UMEM_FRAMES: u32 = 4096;
/// Frames the fill ring is topped up to after every batch: all it holds, so a burst of that
/// many requests at once is received whole.
pub const FILL_TARGET: usize = RING_ENTRIES as usize;
/// The kernel's headroom at the start of every UMEM frame.
pub const FRAME_HEADROOM: usize = xdp::libc::xdp::XDP_PACKET_HEADROOM as usize;
/// Most bytes of link-layer header around an IPv6 packet we receive or send (Ethernet and two
/// VLAN tags).
const L2_HEADER_MAX: usize = frame::ETH_HEADER_LEN + frame::VLAN_TAG_LEN * frame::VLAN_TAGS_MAX;

/// Whether the driver of interface `index` advertises AF_XDP zero-copy
/// (NETDEV_XDP_ACT_XSK_ZEROCOPY, asked of the kernel over netlink). False when the kernel
/// cannot say: copy mode works everywhere.
pub fn driver_zero_copy(index: u32) -> bool {
    xdp::nic::NicIndex::new(index)
        .query_capabilities()
        .is_ok_and(|c| c.xdp_features.zero_copy())
}

/// The UMEM frame size for an interface of MTU `mtu`: 2 KiB when a whole frame fits one after
/// the kernel's headroom (MTU up to about 1,770), 4 KiB otherwise. Receiving a frame larger than
/// this is impossible in copy mode (the kernel drops it), so it follows the MTU.
pub fn frame_bytes(mtu: usize) -> usize {
    if mtu + L2_HEADER_MAX + FRAME_HEADROOM <= 2048 {
        2048
    } else {
        4096
    }
}

/// Bytes a frame may fill in a UMEM frame on an interface of MTU `mtu` (the frame less the
/// kernel's headroom): the longest frame the program hands to a socket.
pub fn frame_room(mtu: usize) -> usize {
    frame_bytes(mtu) - FRAME_HEADROOM
}

/// Locked memory to ask for before opening `sockets` sockets on `iface`: where the driver
/// advertises zero-copy (`zero_copy_driver`), one UMEM more, since a zero-copy bind that fails
/// anyway has its UMEM released by the kernel later, not at close, while the copy-mode retry
/// registers its own.
pub fn umem_budget(iface: &Interface, sockets: usize, zero_copy_driver: bool) -> u64 {
    umem_bytes(sockets + zero_copy_driver as usize, iface.mtu)
}

/// Bytes of locked memory the UMEMs of `sockets` sockets on an interface of MTU `mtu` take
/// (counted against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK).
pub fn umem_bytes(sockets: usize, mtu: usize) -> u64 {
    (sockets * UMEM_FRAMES as usize * frame_bytes(mtu)) as u64
}

/// Raises the soft RLIMIT_MEMLOCK to `needed` bytes (or to the hard limit, if that is lower)
/// so the UMEMs can be registered; returns the limit in force.
pub fn raise_memlock(needed: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed {
        return lim.rlim_cur;
    }
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        needed
    } else {
        needed.min(lim.rlim_max)
    };
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit from a live struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &new) } == 0 {
        want
    } else {
        lim.rlim_cur
    }
}
/// Entries of each ring (fill, RX, TX, completion).
pub const RING_ENTRIES: u32 = 2048;
/// Most frames taken from the RX ring per batch.
pub const RX_BATCH_MAX: usize = super::udp::RECV_BATCH_MAX;
/// Committed replies that may wait for their worker's TX ring; past it they are dropped and
/// counted (the client retransmits).
pub const RETURN_QUEUE_MAX: usize = 4096;
/// The drop reasons of an AF_XDP socket's kernel counters (XDP_STATISTICS), as they appear in
/// the drop counters: frames lost before the worker saw them.
pub const KERNEL_DROPS: [&str; 4] = [
    // no room in the RX ring: the worker fell behind
    "xdp_rx_ring_full",
    // no frame in the fill ring to receive into
    "xdp_fill_ring_empty",
    // frames the kernel dropped for other reasons (e.g. larger than a UMEM frame)
    "xdp_rx_dropped",
    // invalid descriptors (a bug of ours if ever non-zero)
    "xdp_rx_invalid_desc",
];

/// How often a path without a link-local address looks for one again (an interface brought
/// up with the server, still in duplicate address detection, has none for a second or two).
pub const LINK_LOCAL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Most committed replies sent per wake-up.
pub const RETURN_BATCH_MAX: usize = 256;

/// What the AF_XDP path needs to know of an interface.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its index.
    pub index: u32,
    /// Its MAC address (the source of our frames).
    pub mac: [u8; 6],
    /// Its link-local address at start-up (the source of replies to multicast requests; each
    /// path looks again while it has none, see [`LINK_LOCAL_RETRY`]).
    pub link_local: Option<Ipv6Addr>,
    /// Its MTU: larger replies go through the kernel, which fragments.
    pub mtu: usize,
    /// How many receive queues it has (one socket and worker each).
    pub rx_queues: u32,
    /// How many transmit queues it has (a socket sends on the one of its own number).
    pub tx_queues: u32,
    /// Its upper devices (VLANs, macvlans, bonds over it), from sysfs.
    pub uppers: Vec<String>,
}

impl Interface {
    /// Reads what the kernel says of interface `name` (sysfs and /proc).
    pub fn lookup(name: &str) -> io::Result<Interface> {
        let sys = format!("/sys/class/net/{name}");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{sys}/{f}"))
                .map(|s| s.trim().to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("interface {name}: {sys}/{f}: {e}")))
        };
        let index: u32 = read("ifindex")?
            .parse()
            .map_err(|_| io::Error::other(format!("interface {name}: bad ifindex")))?;
        let mut mac = [0u8; 6];
        let text = read("address")?;
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(io::Error::other(format!(
                "interface {name} has no Ethernet address ({text:?}); AF_XDP needs an Ethernet interface"
            )));
        }
        for (m, p) in mac.iter_mut().zip(parts) {
            *m = u8::from_str_radix(p, 16)
                .map_err(|_| io::Error::other(format!("interface {name}: bad address {text}")))?;
        }
        let mtu = read("mtu")?.parse().unwrap_or(1500);
        let queues = |kind: &str| {
            std::fs::read_dir(format!("{sys}/queues"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with(kind))
                        .count() as u32
                })
                .unwrap_or(1)
                .max(1)
        };
        let uppers = std::fs::read_dir(&sys)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("upper_")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Interface {
            name: name.to_string(),
            index,
            mac,
            link_local: link_local(index),
            mtu,
            rx_queues: queues("rx-"),
            tx_queues: queues("tx-"),
            uppers,
        })
    }
}

/// One usable address of this host, as /proc/net/if_inet6 lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddress {
    /// The address.
    pub addr: Ipv6Addr,
    /// The interface it is on.
    pub ifindex: u32,
    /// On the loopback interface.
    pub loopback_interface: bool,
}

/// This host's usable IPv6 addresses, from /proc/net/if_inet6: none that is tentative
/// (duplicate address detection running) or failed DAD, since such an address must be neither
/// answered on nor used as a source.
pub fn host_addresses() -> Vec<HostAddress> {
    const IFA_F_DADFAILED: u32 = 0x08;
    const IFA_F_TENTATIVE: u32 = 0x40;
    let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (hex, idx, flags, name) = (f.first()?, f.get(1)?, f.get(4)?, f.get(5)?);
            if hex.len() != 32
                || u32::from_str_radix(flags, 16).ok()? & (IFA_F_TENTATIVE | IFA_F_DADFAILED) != 0
            {
                return None;
            }
            let mut a = [0u8; 16];
            for (i, b) in a.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(HostAddress {
                addr: Ipv6Addr::from(a),
                ifindex: u32::from_str_radix(idx, 16).ok()?,
                loopback_interface: *name == "lo",
            })
        })
        .collect()
}

/// The usable link-local address of interface `index`.
fn link_local(index: u32) -> Option<Ipv6Addr> {
    host_addresses()
        .into_iter()
        .find(|h| h.ifindex == index && h.addr.is_unicast_link_local())
        .map(|h| h.addr)
}

/// An eventfd: one thread signals it, the thread it wakes polls and clears it (the committer
/// and an AF_XDP worker; tandem-gen's threads passing replies on).
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new, non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes it readable (wakes the poller).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our descriptor; a full counter (EAGAIN)
        // still leaves it readable, which is all a wake-up needs.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reads it back to not readable.
    pub fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our non-blocking descriptor.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// How the group committer hands a committed reply to the worker that owns the AF_XDP socket
/// it must leave by.
#[derive(Clone)]
pub struct ReturnPath {
    tx: Sender<PendingReply>,
    wake: Arc<EventFd>,
}

impl ReturnPath {
    /// Queues a reply; false when the queue is full (the reply is dropped).
    pub fn send(&self, reply: PendingReply) -> bool {
        self.tx.try_send(reply).is_ok()
    }

    /// Wakes the worker (once per batch of [`ReturnPath::send`]).
    pub fn wake(&self) {
        self.wake.signal();
    }
}

/// One worker's AF_XDP socket on one receive queue ([`xsk::Xsk`]), with what the server adds:
/// the committer's way back to it, and the UDP socket for what a frame cannot carry.
pub struct XdpPath {
    xsk: xsk::Xsk,
    /// Where each frame of the current batch keeps its payload, by slot (receive order).
    payloads: Vec<std::ops::Range<usize>>,
    returned: Receiver<PendingReply>,
    wake: Arc<EventFd>,
    returning: Vec<PendingReply>,
    /// The UDP socket on the server port, for what a frame cannot carry.
    fallback: UdpSocket,
    iface: Arc<Interface>,
    /// The interface's link-local address, and when it was last looked for while missing.
    link_local: Option<Ipv6Addr>,
    link_local_checked: std::time::Instant,
    /// Its place among the interface's workers (None: the only one).
    spread: Option<spread::Spread>,
    /// Messages other workers handed over in the current batch; their slots follow the frames'.
    handed: Vec<spread::Handoff>,
    /// Frames of the current batch (the slots below it are frames, the rest `handed`).
    frames_in_batch: usize,
    /// The next hops of routed senders ([`next_hop`]).
    next_hops: next_hop::Reader,
    /// Messages whose replies leave through the kernel instead of as frames, by
    /// [`next_hop::ThroughKernel`], since the last report.
    kernel_routed: [u64; next_hop::KERNEL_REASONS.len()],
}

impl XdpPath {
    /// Opens the socket for receive queue `queue` of `iface` ([`xsk::Xsk::open`]) and returns
    /// it with the [`ReturnPath`] the committer uses to reach it, and whether it is bound in
    /// zero-copy mode (asked for with `zero_copy`). `fallback` is a UDP socket bound to the
    /// server port; replies to routed senders follow the routes in `next_hops`. The caller
    /// registers [`XdpPath::socket_fd`] with the program.
    pub fn open(
        iface: Arc<Interface>,
        queue: u32,
        fallback: UdpSocket,
        zero_copy: bool,
        next_hops: Arc<next_hop::NextHops>,
    ) -> io::Result<(XdpPath, ReturnPath, bool)> {
        let xsk = xsk::Xsk::open(&iface, queue, zero_copy)?;
        let (ret_tx, returned) = crossbeam_channel::bounded(RETURN_QUEUE_MAX);
        let wake = Arc::new(EventFd::new().map_err(|e| {
            io::Error::other(format!("AF_XDP on {} queue {queue}: {e}", iface.name))
        })?);
        let zc = xsk.zero_copy();
        Ok((
            XdpPath {
                xsk,
                payloads: Vec::with_capacity(RX_BATCH_MAX),
                returned,
                wake: wake.clone(),
                returning: Vec::with_capacity(RETURN_BATCH_MAX),
                fallback,
                link_local: iface.link_local,
                iface,
                link_local_checked: std::time::Instant::now(),
                spread: None,
                handed: Vec::new(),
                frames_in_batch: 0,
                next_hops: next_hop::Reader::new(next_hops),
                kernel_routed: [0; next_hop::KERNEL_REASONS.len()],
            },
            ReturnPath { tx: ret_tx, wake },
            zc,
        ))
    }

    /// The AF_XDP socket, for the program's map.
    pub fn socket_fd(&self) -> &impl AsRawFd {
        self.xsk.fd()
    }

    /// The eventfd this path's worker waits on (for [`spread::group`]).
    pub fn wake_fd(&self) -> Arc<EventFd> {
        self.wake.clone()
    }

    /// Puts this path's worker into its interface's group ([`spread`]): from now on it hands
    /// the messages that belong to other workers to them, and answers theirs.
    pub fn join(&mut self, spread: spread::Spread) {
        self.handed = Vec::with_capacity(spread::HANDOFF_TAKE_MAX);
        self.spread = Some(spread);
    }

    /// Sends the committed replies the committer handed back.
    fn send_returned(&mut self) {
        self.wake.clear();
        // Bounded: what the queue can hold when the call starts (the committer may add more;
        // the eventfd brings the worker back for those).
        for _ in 0..RETURN_QUEUE_MAX / RETURN_BATCH_MAX + 1 {
            self.returning.clear();
            while self.returning.len() < RETURN_BATCH_MAX {
                match self.returned.try_recv() {
                    Ok(r) => self.returning.push(r),
                    Err(_) => break,
                }
            }
            if self.returning.is_empty() {
                return;
            }
            let replies = std::mem::take(&mut self.returning);
            let sent = self.send_frames(&replies);
            for r in &replies[sent..] {
                let _ = self.send_one_fallback(r);
            }
            self.returning = replies;
        }
    }

    /// Builds a frame per reply into the TX ring, in order, then has the kernel send them;
    /// returns how many leading replies went out (exactly: the caller retries the rest). A
    /// reply a frame cannot carry, or that has no frame header, goes through the UDP socket.
    fn send_frames(&mut self, replies: &[PendingReply]) -> usize {
        let mut done = 0;
        for r in replies {
            let ip_len = frame::IPV6_HEADER_LEN + frame::UDP_HEADER_LEN + r.bytes.len();
            let sent = match r.reply_frame.filter(|_| ip_len <= self.iface.mtu) {
                Some(h) => self.xsk.send(&h, &r.bytes),
                None => Err(xsk::NotSent::TooLarge),
            };
            match sent {
                Ok(()) => {}
                Err(xsk::NotSent::TooLarge) => {
                    if self.send_one_fallback(r).is_err() {
                        break;
                    }
                }
                // No frame or no room in the ring: stop here, the caller counts the rest.
                Err(xsk::NotSent::NoFrame | xsk::NotSent::RingFull) => break,
            }
            done += 1;
        }
        self.xsk.flush();
        done
    }

    fn send_one_fallback(&self, r: &PendingReply) -> io::Result<()> {
        super::udp::send_to(&self.fallback, r.to, r.from, &r.bytes)
    }

    /// Waits up to the receive timeout for a frame or a wake-up from the committer.
    fn wait(&mut self) -> io::Result<()> {
        let ms = super::udp::RECV_TIMEOUT.as_millis() as i32;
        if self.xsk.wait(&[self.wake.0.as_raw_fd()], ms)?[0] {
            self.send_returned();
        }
        Ok(())
    }

    /// The interface's link-local address; while it has none, looked for again at most every
    /// [`LINK_LOCAL_RETRY`].
    fn our_link_local(&mut self) -> Option<Ipv6Addr> {
        if self.link_local.is_none() && self.link_local_checked.elapsed() >= LINK_LOCAL_RETRY {
            self.link_local_checked = std::time::Instant::now();
            self.link_local = link_local(self.iface.index);
            if let Some(a) = self.link_local {
                tracing::info!(interface = %self.iface.name, address = %a, "link-local address found: answering multicast requests");
            }
        }
        self.link_local
    }
}

impl super::Datapath for XdpPath {
    fn take_drops(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        // Reported even when zero, so the series exist before the first loss.
        self.xsk.take_drops(add);
    }

    fn take_handoffs(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        if let Some(s) = &mut self.spread {
            s.take_counts(add);
        }
    }

    fn take_kernel_routed(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        for (why, n) in next_hop::KERNEL_REASONS
            .iter()
            .zip(std::mem::take(&mut self.kernel_routed))
        {
            if n > 0 {
                add(why, n);
            }
        }
    }

    fn recv_batch(&mut self, metas: &mut Vec<RxMeta>) -> io::Result<usize> {
        metas.clear();
        self.payloads.clear();
        self.handed.clear();
        self.frames_in_batch = 0;
        self.xsk.recycle();
        self.send_returned();
        let waiting = |s: &Option<spread::Spread>| s.as_ref().is_some_and(|s| s.waiting());
        if self.xsk.take() == 0 && !waiting(&self.spread) {
            self.wait()?;
            if self.xsk.take() == 0 && !waiting(&self.spread) {
                return Ok(0);
            }
        }
        let n = self.xsk.received();
        self.frames_in_batch = n;
        // Messages of other workers are handed to them only while this worker falls behind
        // (it took a whole batch): below that, answering here costs less than a handoff.
        let shed = n == RX_BATCH_MAX;
        let link_local = self.our_link_local();
        self.next_hops.refresh();
        // The kernel wrote the frames on the CPU that received them: ask for all their lines
        // at once, so that each frame's parse below does not wait for its own in turn.
        for slot in 0..n {
            prefetch(self.xsk.frame(slot).unwrap_or(&[]));
        }
        for slot in 0..n {
            let p = self.xsk.frame(slot).unwrap_or(&[]);
            let mut meta = RxMeta {
                src: SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0),
                len: 0,
                truncated: false,
                multicast: false,
                dst: None,
                ifindex: self.iface.index,
                slot,
                reply_frame: None,
                drop: None,
                received_at: None,
            };
            match frame::parse(p) {
                Ok(f) if f.header.dst_mac != self.iface.mac && f.header.dst_mac[0] & 1 == 0 => {
                    // Another host's frame (promiscuous mode): the kernel would drop it.
                    meta.drop = Some("frame_other_host");
                    self.payloads.push(0..0);
                }
                Ok(f) => {
                    let h = f.header;
                    let scope = if h.src.is_unicast_link_local() {
                        self.iface.index
                    } else {
                        0
                    };
                    meta.src = SocketAddrV6::new(h.src, h.src_port, 0, scope);
                    meta.len = f.payload.len();
                    meta.multicast = h.dst.is_multicast();
                    meta.dst = (!meta.multicast).then_some(h.dst);
                    if h.dst.segments()[0] == 0xff05 {
                        // All_DHCP_Servers (site scope): the sender is a relay, maybe routers
                        // away, and a link-local source would not reach it: the reply leaves
                        // through the UDP socket, from an address the kernel picks.
                        self.kernel_routed[next_hop::ThroughKernel::SiteScopeMulticast as usize] +=
                            1;
                    } else {
                        let ours = if meta.multicast {
                            link_local
                        } else {
                            Some(h.dst)
                        };
                        match ours {
                            Some(a) => {
                                let mut reply = frame::reply_header(&h, self.iface.mac, a);
                                // A link-local sender is on this link, at the frame's source
                                // MAC; a routed one is reached where the kernel's route says.
                                let hop = (!h.src.is_unicast_link_local())
                                    .then(|| self.next_hops.get(h.src, a));
                                match hop.map(|hop| next_hop::frame_mac(hop, self.iface.index)) {
                                    Some(Err(why)) => self.kernel_routed[why as usize] += 1,
                                    Some(Ok(mac)) => {
                                        reply.dst_mac = mac;
                                        meta.reply_frame = Some(reply);
                                    }
                                    None => meta.reply_frame = Some(reply),
                                }
                            }
                            None => meta.drop = Some("no_link_local_address"),
                        }
                    }
                    if shed
                        && meta.drop.is_none()
                        && let Some(s) = &mut self.spread
                        && s.hand_off(&meta, p.get(f.payload.clone()).unwrap_or(&[]))
                    {
                        // Another worker answers it; its frame is recycled with the batch.
                        self.payloads.push(0..0);
                        continue;
                    }
                    self.payloads.push(f.payload);
                }
                Err(e) => {
                    meta.drop = Some(e.label());
                    self.payloads.push(0..0);
                }
            }
            metas.push(meta);
        }
        if let Some(s) = &mut self.spread {
            s.wake_peers();
            s.take(&mut self.handed);
            for (i, h) in self.handed.iter().enumerate() {
                metas.push(RxMeta {
                    slot: n + i,
                    ..*h.meta()
                });
            }
        }
        Ok(metas.len())
    }

    fn datagram(&self, meta: &RxMeta) -> &[u8] {
        if meta.slot >= self.frames_in_batch {
            return self
                .handed
                .get(meta.slot - self.frames_in_batch)
                .map_or(&[], |h| h.payload());
        }
        match (self.xsk.frame(meta.slot), self.payloads.get(meta.slot)) {
            (Some(p), Some(r)) => p.get(r.clone()).unwrap_or(&[]),
            _ => &[],
        }
    }

    fn send_batch(&mut self, replies: &[PendingReply]) -> usize {
        self.send_frames(replies)
    }

    fn send(&mut self, reply: &PendingReply) -> io::Result<()> {
        if self.send_frames(std::slice::from_ref(reply)) == 1 {
            Ok(())
        } else {
            // No frame or no room in the TX ring: the kernel's path instead.
            self.send_one_fallback(reply)
        }
    }
}

/// Bytes of a received frame [`prefetch`] asks for: a DHCPv6 message with its headers and a
/// relay's options (most fit in 512; the rest is loaded when read).
pub const PREFETCH_BYTES_MAX: usize = 512;

/// Starts loading the cache lines of `bytes` (up to [`PREFETCH_BYTES_MAX`]) into this CPU's
/// caches, without waiting for them. A hint: no effect on what the program computes.
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.iter().take(PREFETCH_BYTES_MAX).step_by(64) {
        // SAFETY: a prefetch reads nothing into the program and cannot fault, whatever the
        // address (here one inside a live slice); SSE, which it needs, is part of x86_64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (line as *const u8).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
