//! The I/O edge: worker threads, sockets, the group committer thread, the reclaim timer and
//! the metrics they report. Everything with a clock, a socket or a disk lives here.
//!
//! A datapath is anything that implements [`Datapath`]: the UDP socket path ([`udp`]), the
//! default that works everywhere, and the AF_XDP path ([`xdp`]) beside it, without touching
//! the engine.

//!
//! Files: [`server`] (assembly, start-up and shutdown), [`worker`] (the receive → engine →
//! reply loop), [`commit`] (the group committer and what it sends once leases are durable),
//! [`reclaim`] (the expiry timer of a server without a partner), [`stats`] (counters merged at
//! the edge), [`metrics`] (Prometheus rendering and its HTTP listener), [`control`] (the `tandem ctl` socket), [`audit`] (the audit log), [`reload`] (live reload), [`udp`] (the socket datapath), [`xdp`] (the AF_XDP datapath and its XDP program), [`partner`] (the failover partner thread).

pub mod audit;
pub mod bulk_leasequery;
pub mod commit;
pub mod control;
pub mod metrics;
pub mod mmsg;
pub mod partner;
pub mod reclaim;
pub mod reload;
pub mod server;
pub mod stats;
pub mod udp;
pub mod worker;
pub mod xdp;

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest DHCPv6 datagram accepted; larger ones are dropped as oversized.
pub const DATAGRAM_LEN_MAX: usize = 4096;
/// Commit jobs that may wait for the group committer before workers block (backpressure).
pub const COMMIT_QUEUE_MAX: usize = 65_536;

/// What a datapath tells about a received datagram.
#[derive(Debug, Clone, Copy)]
pub struct RxMeta {
    /// Source address and port (scope id set for link-local sources).
    pub src: SocketAddrV6,
    /// Datagram length (may exceed the buffer when `truncated`).
    pub len: usize,
    /// The datagram did not fit the buffer.
    pub truncated: bool,
    /// Sent to a multicast address.
    pub multicast: bool,
    /// The unicast address it was sent to, when the reply must name it as its source: so a
    /// relay or client hears back from the address it asked, where the kernel would pick one
    /// by the route (a socket bound to `[::]`; the AF_XDP path's kernel fallback). `None` for
    /// a multicast message (the kernel, or the frame builder, picks the interface's address)
    /// and on a socket bound to one address (its replies leave from it anyway).
    pub dst: Option<Ipv6Addr>,
    /// Receiving interface index (0 when unknown).
    pub ifindex: u32,
    /// Where the datapath keeps the bytes (see [`Datapath::datagram`]).
    pub slot: usize,
    /// The headers of the reply (AF_XDP: a reply frame retraces the request's path); None on
    /// the socket path, where the kernel routes.
    pub reply_frame: Option<xdp::frame::UdpFrameHeader>,
    /// Why the datapath could not take this frame (a drop counter label); the worker counts it
    /// and goes on.
    pub drop: Option<&'static str>,
    /// When another worker received the message and handed it over (AF_XDP, `xdp::spread`):
    /// its reply latency counts from then. `None`: received with this batch.
    pub received_at: Option<std::time::Instant>,
}

/// A way to receive DHCPv6 datagrams and send replies, in batches where the OS allows.
pub trait Datapath: Send {
    /// Receives a batch: blocks briefly for the first datagram, then takes what is queued.
    /// Fills `metas` (cleared first) and returns how many; 0 after a timeout.
    fn recv_batch(&mut self, metas: &mut Vec<RxMeta>) -> io::Result<usize>;
    /// The bytes of a datagram of the last batch.
    fn datagram(&self, meta: &RxMeta) -> &[u8];
    /// Sends replies in as few calls as possible; returns how many leading ones went out.
    fn send_batch(&mut self, replies: &[PendingReply]) -> usize;
    /// Sends one reply.
    fn send(&mut self, reply: &PendingReply) -> io::Result<()>;
    /// Adds to `add` (a drop reason and a count) what the datapath's kernel side dropped since
    /// the last call; called by the worker once per report interval. The socket path has
    /// nothing of its own to add.
    fn take_drops(&mut self, _add: &mut dyn FnMut(&'static str, u64)) {}
    /// Adds to `add` (a [`xdp::spread::HANDOFF_RESULTS`] label and a count) what the datapath
    /// handed to other workers, or kept, since the last call; called with
    /// [`Datapath::take_drops`]. Only the AF_XDP path on an interface of several queues has any
    /// (no default, so a datapath that wraps others cannot forget to pass it on).
    fn take_handoffs(&mut self, add: &mut dyn FnMut(&'static str, u64));
    /// Adds to `add` (a [`xdp::next_hop::KERNEL_REASONS`] label and a count) the messages
    /// whose replies left through the kernel instead of the datapath's own frames since the
    /// last call; called with [`Datapath::take_drops`]. Only the AF_XDP path has any.
    fn take_kernel_routed(&mut self, add: &mut dyn FnMut(&'static str, u64));
}

/// A reply waiting for its leases to be durable.
pub struct PendingReply {
    /// Index into the committer's socket list.
    pub socket: usize,
    /// Destination.
    pub to: SocketAddrV6,
    /// Source address when sent through a socket ([`RxMeta::dst`]; `None`: the kernel's pick).
    pub from: Option<Ipv6Addr>,
    /// The reply bytes.
    pub bytes: Vec<u8>,
    /// The reply frame's headers on the AF_XDP path ([`RxMeta::reply_frame`]).
    pub reply_frame: Option<xdp::frame::UdpFrameHeader>,
    /// When the message it answers was received (for the reply latency histogram).
    pub received_at: std::time::Instant,
    /// Audit log lines of the leases this reply changes (empty when the log is off).
    pub audit: String,
    /// The client message it answers (the lease log lines name it).
    pub answered: tandem_core::wire::MessageType,
}

/// Wall-clock time in unix seconds: the edge's clock, passed into the sans-IO core.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lower-case hex of `b`, for logs (one allocation).
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}
