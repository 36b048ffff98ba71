//! Bulk Leasequery (RFC 5460) over TCP: a BNG or PE router that lost its routes to delegated
//! prefixes opens a connection to `leasequery.bulk_listen`, sends LEASEQUERY messages (each
//! preceded by its length in two octets) and reads back, for each, a LEASEQUERY-REPLY, a
//! LEASEQUERY-DATA per further client and a LEASEQUERY-DONE (`tandem_core::leasequery`).
//!
//! One accept thread; one thread per connection, at most `leasequery.bulk_connections_max`
//! (RFC 5460 §5.6 BULK_LQ_MAX_CONNS); more connections, and those from addresses outside
//! `leasequery.requestors`, are closed at once (§7.1). A connection blocked for
//! [`BULK_LQ_DATA_TIMEOUT`] either way is closed. Queries on one connection are answered in
//! turn, each answer written out message by message as the core produces it.

use super::now_secs;
use super::partner::PolicyCell;
use super::reload::EngineCell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a connection may block on a read or a write (RFC 5460 §5.6 BULK_LQ_DATA_TIMEOUT).
pub const BULK_LQ_DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the accept thread sleeps when no one connects.
pub const ACCEPT_POLL: Duration = Duration::from_millis(100);
/// Connections accepted per listener per turn before the thread checks whether to stop.
pub const ACCEPTS_PER_TURN_MAX: usize = 16;
/// Queries answered on one connection before the server closes it.
pub const QUERIES_PER_CONNECTION_MAX: usize = 10_000;
/// How long one blocking read or write waits before the thread looks at the stop flag.
pub const IO_SLICE: Duration = Duration::from_secs(1);
/// Answer bytes gathered before they are written (a large answer goes out in pieces).
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What the Bulk Leasequery threads answer with.
#[derive(Clone)]
pub struct BulkCtx {
    /// The engine in force (its configuration, lease table and DUID).
    pub engines: Arc<EngineCell>,
    /// What the failover state allows now.
    pub policy: Arc<PolicyCell>,
    /// Set when the server stops.
    pub stop: Arc<AtomicBool>,
    /// Connections served at once.
    pub connections_max: usize,
}

/// Binds the listeners of `leasequery.bulk_listen` (non-blocking).
pub fn bind(addrs: &[SocketAddrV6]) -> io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            let l = TcpListener::bind(a).map_err(|e| {
                io::Error::new(e.kind(), format!("bulk leasequery listener {a}: {e}"))
            })?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .collect()
}

/// The accept loop, until `ctx.stop`; waits for the connections it started.
pub fn run(listeners: Vec<TcpListener>, ctx: BulkCtx) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut conns: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !ctx.stop.load(Ordering::Relaxed) {
        let mut accepted = 0;
        for l in &listeners {
            for _ in 0..ACCEPTS_PER_TURN_MAX {
                let (s, peer) = match l.accept() {
                    Ok(c) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!(error = %e, "bulk leasequery: accept failed");
                        break;
                    }
                };
                accepted += 1;
                let peer = match peer.ip() {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                if !ctx.engines.get().config().leasequery.allows(&peer) {
                    info!(%peer, "bulk leasequery: connection refused, not in leasequery.requestors");
                    continue;
                }
                if active.load(Ordering::Relaxed) >= ctx.connections_max {
                    warn!(%peer, max = ctx.connections_max, "bulk leasequery: connection refused, too many open");
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (c, a) = (ctx.clone(), active.clone());
                match std::thread::Builder::new()
                    .name("bulk-lq".into())
                    .spawn(move || {
                        serve(s, peer, &c);
                        a.fetch_sub(1, Ordering::Relaxed);
                    }) {
                    Ok(h) => conns.push(h),
                    Err(e) => {
                        active.fetch_sub(1, Ordering::Relaxed);
                        warn!(error = %e, "bulk leasequery: cannot start a connection thread");
                    }
                }
            }
        }
        conns.retain(|h| !h.is_finished());
        if accepted == 0 {
            std::thread::sleep(ACCEPT_POLL);
        }
    }
    for h in conns {
        let _ = h.join();
    }
}

/// One connection: queries answered in turn until the requestor closes, a read or write
/// fails or times out, a message is not a LEASEQUERY, or the server stops.
fn serve(s: TcpStream, peer: Ipv6Addr, ctx: &BulkCtx) {
    let setup = s
        .set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(Some(IO_SLICE)))
        .and_then(|()| s.set_write_timeout(Some(IO_SLICE)))
        .and_then(|()| s.set_nodelay(true));
    if let Err(e) = setup {
        warn!(%peer, error = %e, "bulk leasequery: cannot set up the connection");
        return;
    }
    let mut s = s;
    let stop = &*ctx.stop;
    let mut query = vec![0u8; usize::from(u16::MAX)];
    let mut out = Vec::with_capacity(1024);
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES + 1024);
    for _ in 0..QUERIES_PER_CONNECTION_MAX {
        let mut len = [0u8; 2];
        if let Err(e) = read_full(&mut s, &mut len, stop) {
            if e.kind() != io::ErrorKind::UnexpectedEof {
                info!(%peer, error = %e, "bulk leasequery: connection closed");
            }
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if let Err(e) = read_full(&mut s, &mut query[..len], stop) {
            warn!(%peer, error = %e, "bulk leasequery: the query was cut short");
            return;
        }
        let engine = ctx.engines.get();
        let answer =
            engine.answer_bulk_leasequery(&policies(&ctx.policy), peer, now_secs(), &query[..len]);
        let mut a = match answer {
            Ok(a) => a,
            Err(why) => {
                // Only LEASEQUERY belongs on this connection (RFC 5460 §4); one we may not
                // answer ends it.
                warn!(%peer, reason = %why, "bulk leasequery: message not answered; closing the connection");
                return;
            }
        };
        let mut messages = 0u64;
        loop {
            let more = a.next_message(&mut out);
            if more {
                let Ok(framed) = u16::try_from(out.len()) else {
                    warn!(%peer, "bulk leasequery: a message outgrew its frame; closing");
                    return;
                };
                batch.extend_from_slice(&framed.to_be_bytes());
                batch.extend_from_slice(&out);
                messages += 1;
            }
            if (!more && !batch.is_empty()) || batch.len() >= WRITE_BATCH_BYTES {
                if let Err(e) = write_full(&mut s, &batch, stop) {
                    warn!(%peer, error = %e, "bulk leasequery: writing the answer failed; closing");
                    return;
                }
                batch.clear();
            }
            if !more {
                break;
            }
        }
        info!(%peer, clients = a.clients(), messages, "bulk leasequery answered");
    }
    info!(%peer, "bulk leasequery: {QUERIES_PER_CONNECTION_MAX} queries on one connection; closing it");
}

/// Whether an I/O error only means "nothing yet" (the socket's timeout slice ran out).
fn waiting(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Fills `buf`, waiting at most [`BULK_LQ_DATA_TIMEOUT`] without progress and looking at
/// `stop` every [`IO_SLICE`]. A connection closed before the first byte is UnexpectedEof.
fn read_full(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<()> {
    patiently(buf.len(), stop, io::ErrorKind::UnexpectedEof, |done| {
        s.read(&mut buf[done..])
    })
}

/// Writes all of `buf`, with the same patience and the same look at `stop` as [`read_full`].
fn write_full(s: &mut TcpStream, buf: &[u8], stop: &AtomicBool) -> io::Result<()> {
    patiently(buf.len(), stop, io::ErrorKind::WriteZero, |done| {
        s.write(&buf[done..])
    })
}

/// Runs `step(done)` until `len` bytes are done: a step of 0 bytes is the error `at_zero`, a
/// step that only timed out its slice is tried again unless `stop` is set or nothing moved for
/// [`BULK_LQ_DATA_TIMEOUT`].
fn patiently(
    len: usize,
    stop: &AtomicBool,
    at_zero: io::ErrorKind,
    mut step: impl FnMut(usize) -> io::Result<usize>,
) -> io::Result<()> {
    let mut done = 0;
    let mut since = Instant::now();
    while done < len {
        match step(done) {
            Ok(0) => return Err(at_zero.into()),
            Ok(n) => {
                done += n;
                since = Instant::now();
            }
            Err(e) if waiting(&e) => {}
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the server is stopping"));
        }
        if since.elapsed() > BULK_LQ_DATA_TIMEOUT {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    Ok(())
}

/// Every relationship's current policy.
fn policies(cell: &PolicyCell) -> Vec<tandem_core::engine::Policy> {
    let mut v = Vec::new();
    cell.read_into(&mut v);
    v
}
