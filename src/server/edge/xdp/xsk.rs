//! One AF_XDP socket on one receive queue, with its UMEM and its four rings: frames in, frames
//! out, recycled without allocation. What the frames mean is the caller's: the server's worker
//! ([`super::XdpPath`]) and the load generator (`tandem-gen --datapath xdp`) both sit on it.
//!
//! The fill ring is always topped up first, so frames waiting to be sent never starve
//! receiving; a frame that finds no free UMEM frame or no room in the TX ring is refused and
//! the caller sends it some other way or counts it lost.

use super::frame::{self, UdpFrameHeader};
use super::{FILL_TARGET, Interface, KERNEL_DROPS, RING_ENTRIES, RX_BATCH_MAX};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use xdp::slab::Slab;

/// Most sendto kicks per flush: in copy mode the kernel sends at most 32 frames a kick and
/// says EAGAIN while more wait, so a full TX ring needs RING_ENTRIES / 32 of them.
const KICKS_MAX: usize = RING_ENTRIES as usize / 32 + 2;

/// Frames owned by user space between rings: a batch of received frames, or a frame on its
/// way into the TX ring. Bounded by the capacity it is made with.
struct Frames {
    q: VecDeque<xdp::Packet>,
    cap: usize,
}

// SAFETY: `Packet`s are raw pointers into one Xsk's UMEM; a `Frames` lives in that Xsk, which
// is built on one thread and then moved, whole, to the thread that alone uses it, so the
// packets never outlive or leave the mapping they point into, and no two threads ever touch
// them.
unsafe impl Send for Frames {}

impl Frames {
    fn with_capacity(cap: usize) -> Frames {
        Frames {
            q: VecDeque::with_capacity(cap),
            cap,
        }
    }
}

impl Slab for Frames {
    fn available(&self) -> usize {
        self.cap - self.q.len()
    }
    fn len(&self) -> usize {
        self.q.len()
    }
    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    fn push_front(&mut self, p: xdp::Packet) -> Option<xdp::Packet> {
        if self.q.len() >= self.cap {
            return Some(p);
        }
        self.q.push_front(p);
        None
    }
    fn pop_back(&mut self) -> Option<xdp::Packet> {
        self.q.pop_back()
    }
}

/// Why [`Xsk::send`] did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// Headers and payload do not fit one UMEM frame.
    TooLarge,
    /// Every UMEM frame is in a ring or in hand.
    NoFrame,
    /// The TX ring is full.
    RingFull,
}

/// An AF_XDP socket bound to one receive queue, its UMEM and rings.
pub struct Xsk {
    // Field order is drop order: the rings and socket go before the UMEM they point into.
    rx: xdp::RxRing,
    tx: xdp::WakableTxRing,
    fill: xdp::WakableFillRing,
    completion: xdp::CompletionRing,
    socket: xdp::socket::XdpSocket,
    /// The frames of the last received batch, newest first (as the RX ring pushes them).
    batch: Frames,
    /// A frame on its way into the TX ring (one at a time: the ring's reservation is all or
    /// nothing, and the sent count must be exact).
    out: Frames,
    /// Frames in the fill ring (enqueued, not yet received).
    fill_held: usize,
    /// Frames in the TX ring or being sent (submitted, not yet completed).
    tx_held: usize,
    /// Bytes a frame may fill in a UMEM frame (its size less the kernel's headroom).
    frame_room: usize,
    /// Whether it is bound in zero-copy mode.
    zero_copy: bool,
    /// The socket's kernel drop counters (XDP_STATISTICS) as last read, by [`KERNEL_DROPS`].
    kernel_drops: [u64; KERNEL_DROPS.len()],
    umem: xdp::Umem,
}

impl Xsk {
    /// Opens the socket for receive queue `queue` of `iface` and fills its fill ring. The
    /// caller registers [`Xsk::fd`] with the interface's program.
    ///
    /// With `zero_copy` (where the driver advertises it, see [`super::driver_zero_copy`]) a
    /// zero-copy bind is tried first; if it fails anyway, the socket is built again in copy
    /// mode, which every driver has, and the reason is logged. [`Xsk::zero_copy`] says which.
    pub fn open(iface: &Interface, queue: u32, zero_copy: bool) -> io::Result<Xsk> {
        if zero_copy {
            match Xsk::open_bound(iface, queue, true) {
                Ok(x) => return Ok(x),
                Err(e) => tracing::warn!(
                    interface = %iface.name,
                    queue,
                    error = %e,
                    "AF_XDP: zero-copy bind failed although the driver advertises it; using copy mode"
                ),
            }
        }
        Xsk::open_bound(iface, queue, false)
    }

    /// [`Xsk::open`] in one bind mode.
    fn open_bound(iface: &Interface, queue: u32, zero_copy: bool) -> io::Result<Xsk> {
        let what = |e: &dyn std::fmt::Display| {
            io::Error::other(format!("AF_XDP on {} queue {queue}: {e}", iface.name))
        };
        let frame_size = super::frame_bytes(iface.mtu);
        let umem_cfg = xdp::umem::UmemCfgBuilder {
            frame_size: if frame_size == 2048 {
                xdp::umem::FrameSize::TwoK
            } else {
                xdp::umem::FrameSize::FourK
            },
            frame_count: super::UMEM_FRAMES,
            ..Default::default()
        }
        .build()
        .map_err(|e| what(&e))?;
        let mut umem = xdp::Umem::map(umem_cfg).map_err(|e| what(&e))?;
        let ring_cfg = xdp::RingConfigBuilder {
            rx_count: RING_ENTRIES,
            tx_count: RING_ENTRIES,
            fill_count: RING_ENTRIES,
            completion_count: RING_ENTRIES,
        }
        .build()
        .map_err(|e| what(&e))?;
        let mut builder = xdp::socket::XdpSocketBuilder::new().map_err(|e| {
            what(&format_args!(
                "{} (AF_XDP needs CAP_NET_RAW and a kernel with CONFIG_XDP_SOCKETS)",
                socket_error(&e)
            ))
        })?;
        let (rings, mut flags) = builder.build_wakable_rings(&umem, ring_cfg).map_err(
            |e| match &e {
                xdp::socket::SocketError::SetSockOpt { inner, .. }
                    if inner.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    what(&format_args!(
                        "registering its {} MiB of packet memory exceeds the locked-memory limit \
                         (RLIMIT_MEMLOCK): raise it (systemd LimitMEMLOCK=, ulimit -l) or grant \
                         CAP_IPC_LOCK",
                        super::umem_bytes(1, iface.mtu) >> 20
                    ))
                }
                _ => what(&socket_error(&e)),
            },
        )?;
        // Copy mode works on every driver (veth included); zero-copy only where the driver
        // has it (the NIC's DMA lands in the UMEM, no copy per frame).
        if zero_copy {
            flags.force_zerocopy();
        } else {
            flags.force_copy();
        }
        let socket = builder
            .bind(xdp::nic::NicIndex::new(iface.index), queue, flags)
            .map_err(|e| what(&socket_error(&e)))?;
        let xdp::WakableRings {
            mut fill_ring,
            rx_ring,
            completion_ring,
            tx_ring,
        } = rings;
        // SAFETY: the frames enqueued belong to `umem`, which outlives the ring (same struct,
        // dropped after it).
        let filled = unsafe { fill_ring.enqueue(&mut umem, FILL_TARGET, false) }?;
        if filled == 0 {
            return Err(what(&"the fill ring took no frame"));
        }
        let (rx, tx) = match (rx_ring, tx_ring) {
            (Some(rx), Some(tx)) => (rx, tx),
            _ => return Err(what(&"the kernel gave no RX or TX ring")),
        };
        Ok(Xsk {
            rx,
            tx,
            fill: fill_ring,
            completion: completion_ring,
            socket,
            batch: Frames::with_capacity(RX_BATCH_MAX),
            out: Frames::with_capacity(1),
            fill_held: filled,
            tx_held: 0,
            frame_room: super::frame_room(iface.mtu),
            zero_copy,
            kernel_drops: [0; KERNEL_DROPS.len()],
            umem,
        })
    }

    /// The AF_XDP socket, for the program's map.
    pub fn fd(&self) -> &impl AsRawFd {
        &self.socket
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Bytes a frame may fill (a UMEM frame less the kernel's headroom).
    pub fn frame_room(&self) -> usize {
        self.frame_room
    }

    /// Gives the frames of the last batch back to the fill ring, takes sent frames back from
    /// the completion ring, tops the fill ring up and has the kernel send what waits.
    pub fn recycle(&mut self) {
        while let Some(p) = self.batch.pop_back() {
            self.umem.free_packet(p);
        }
        self.reap();
        let want = FILL_TARGET
            .saturating_sub(self.fill_held)
            .min(self.umem.allocatable());
        if want > 0 {
            // SAFETY: the frames come from `self.umem`, which outlives the ring.
            let n = unsafe { self.fill.enqueue(&mut self.umem, want, false) }.unwrap_or(0);
            self.fill_held += n;
        }
        self.flush();
    }

    /// Takes the frames the kernel has sent back from the completion ring into the UMEM.
    fn reap(&mut self) {
        let n = self
            .completion
            .dequeue(&mut self.umem, RING_ENTRIES as usize);
        self.tx_held = self.tx_held.saturating_sub(n);
    }

    /// Has the kernel send what waits in the TX ring (copy mode sends only in a syscall, at
    /// most 32 frames each), reaping completions between kicks; bounded by [`KICKS_MAX`].
    pub fn flush(&mut self) {
        if self.tx_held == 0 {
            return;
        }
        for _ in 0..KICKS_MAX {
            // SAFETY: a zero-length sendto on our own AF_XDP socket, no buffers passed.
            let r = unsafe {
                libc::sendto(
                    self.socket.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let errno = (r < 0).then(|| io::Error::last_os_error().raw_os_error());
            self.reap();
            match errno {
                None => return,
                Some(Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)) => continue,
                Some(_) => return,
            }
        }
    }

    /// Builds a frame with headers `h` around `payload` in a free UMEM frame and puts it in
    /// the TX ring; [`Xsk::flush`] (or the next [`Xsk::recycle`]) has the kernel send it.
    pub fn send(&mut self, h: &UdpFrameHeader, payload: &[u8]) -> Result<(), NotSent> {
        let len = frame::header_len(h) + payload.len();
        if len > self.frame_room {
            return Err(NotSent::TooLarge);
        }
        // SAFETY: the packet points into `self.umem` and goes back to it (through the TX and
        // completion rings, or `free_packet` below) before the UMEM is dropped.
        let packet = unsafe { self.umem.alloc() }.or_else(|| {
            self.reap();
            // SAFETY: as above.
            unsafe { self.umem.alloc() }
        });
        let Some(mut packet) = packet else {
            return Err(NotSent::NoFrame);
        };
        if packet.adjust_tail(len as i32).is_err()
            || frame::write(h, payload, &mut packet[..]).is_none()
        {
            self.umem.free_packet(packet);
            return Err(NotSent::TooLarge);
        }
        if let Some(p) = self.out.push_front(packet) {
            self.umem.free_packet(p);
            return Err(NotSent::RingFull);
        }
        // SAFETY: the frame in `out` belongs to `self.umem`; the ring hands it back through
        // the completion ring, which `reap` drains into the same UMEM.
        let taken = unsafe { self.tx.send(&mut self.out, false) }.unwrap_or(0);
        if taken == 0 {
            while let Some(p) = self.out.pop_back() {
                self.umem.free_packet(p);
            }
            return Err(NotSent::RingFull);
        }
        self.tx_held += taken;
        Ok(())
    }

    /// Takes what the RX ring holds (at most [`RX_BATCH_MAX`] frames) as the current batch;
    /// returns how many. Call [`Xsk::recycle`] before the next one.
    pub fn take(&mut self) -> usize {
        // SAFETY: the packets point into `self.umem`; they stay in `batch` until `recycle`
        // frees them back to it.
        let n = unsafe { self.rx.recv(&self.umem, &mut self.batch) };
        // Each frame received came out of the fill ring.
        self.fill_held = self.fill_held.saturating_sub(n);
        n
    }

    /// Frames in the current batch.
    pub fn received(&self) -> usize {
        self.batch.len()
    }

    /// Frame `slot` of the current batch, in receive order.
    pub fn frame(&self, slot: usize) -> Option<&[u8]> {
        // The ring pushed each frame to the front: the oldest is at the back.
        let n = self.batch.len();
        self.batch.q.get(n.checked_sub(1 + slot)?).map(|p| &p[..])
    }

    /// Most other descriptors [`Xsk::wait`] watches beside the socket.
    pub const WAIT_ALSO_MAX: usize = 3;

    /// Waits up to `ms` milliseconds for a frame, or for one of `also` (at most
    /// [`Xsk::WAIT_ALSO_MAX`]; more are not watched) to become readable; returns which of
    /// `also` did.
    pub fn wait(&self, also: &[RawFd], ms: i32) -> io::Result<[bool; Self::WAIT_ALSO_MAX]> {
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(self.socket.as_raw_fd()); 1 + Self::WAIT_ALSO_MAX];
        let extra = also.len().min(Self::WAIT_ALSO_MAX);
        for (slot, fd) in fds[1..].iter_mut().zip(&also[..extra]) {
            *slot = pollfd(*fd);
        }
        let nfds = 1 + extra;
        let mut ready = [false; Self::WAIT_ALSO_MAX];
        // SAFETY: `fds` is a live array of at least `nfds` pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(ready)
            } else {
                Err(e)
            };
        }
        for (r, f) in ready.iter_mut().zip(&fds[1..nfds]) {
            *r = f.revents != 0;
        }
        Ok(ready)
    }

    /// Frames the kernel dropped before this socket saw them, by [`KERNEL_DROPS`] reason,
    /// since the last call (reported even when zero).
    pub fn take_drops(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        let Ok(st) = self.socket.statistics() else {
            return;
        };
        let now = [
            st.rx_ring_full,
            st.rx_fill_ring_empty_descs,
            st.rx_dropped,
            st.rx_invalid_descs,
        ];
        for ((why, new), old) in KERNEL_DROPS
            .iter()
            .zip(now)
            .zip(self.kernel_drops.iter_mut())
        {
            add(why, new.saturating_sub(*old));
            *old = new;
        }
    }
}

/// The xdp crate's socket errors print as Debug; this says what failed and the OS error.
fn socket_error(e: &xdp::socket::SocketError) -> String {
    use xdp::socket::SocketError as E;
    match e {
        E::SocketCreation(io) => format!("socket(AF_XDP): {io}"),
        E::SetSockOpt { inner, option } => format!("setsockopt {option:?}: {inner}"),
        E::GetSockOpt { inner, option } => format!("getsockopt {option:?}: {inner}"),
        E::RingMap { inner, ring } => format!("mapping the {ring:?} ring: {inner}"),
        E::Bind(io) => format!("bind: {io}"),
    }
}
