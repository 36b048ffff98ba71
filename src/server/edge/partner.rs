//! The partner thread: the failover [`Node`] on real sockets.
//!
//! One thread per server with a partner. It owns the endpoint state machine and the lazy-update
//! session, the TCP + mutual-TLS link to the partner (mio, rustls), the local control socket of
//! `tandem ctl`, and the failover timers. Workers never talk to it directly: they read the
//! current [`Policy`] from a [`PolicyCell`], and the group committer hands it every lease change
//! once it is durable ([`PartnerNotifier::committed`]), so a client never waits for the partner.
//!
//! What it stores itself (the partner's bindings, PENDING-FREE releases, reclaimed leases and
//! the endpoint state) it writes to the store before sending anything that announces it: a
//! BNDREPLY leaves only after the binding it acknowledges is durable, a STATE only after the
//! state is.
//!
//! Link life cycle: the primary connects (backoff from 100 ms to `reconnect_max_ms`), the
//! secondary listens; TLS with both certificates checked against the operator's CA and the
//! partner's name; then CONNECT / CONNECTREPLY (relationship, roles, version, MCLT, clock skew,
//! pools digest); then STATE and binding updates. Either side sends CONTACT when it has been
//! quiet for a quarter of the partner's keepalive time, and declares the link dead after its
//! own keepalive time without a message.

use super::{PendingReply, now_secs};
use crate::store::CommitJob;
use crate::store::Store;
use crate::tls::TlsMaterial;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tandem_core::config::Role;
use tandem_core::config::{Config, FailoverConfig, defaults};
use tandem_core::engine::Policy;
use tandem_core::failover::connect::{ConnectAccepted, LinkParams};
use tandem_core::failover::link::{Backoff, HANDSHAKE_TIMEOUT_MS, Link, LinkEvent, Now};
use tandem_core::failover::node::{Node, NodeOut};
use tandem_core::failover::peer::PeerMsg;
use tandem_core::failover::persist;
use tandem_core::failover::state::{EndpointConfig, ServerState};
use tandem_core::lease::Lease;
use tandem_core::pool::Allocator;
use tracing::{debug, error, info, warn};

/// How often the failover timers run when nothing else wakes the thread.
pub const TICK: Duration = Duration::from_millis(100);
/// Batches of committed lease changes that may wait for the partner thread before the
/// committer blocks (the thread drains them continuously, whatever the partner does).
pub const COMMITTED_QUEUE_MAX: usize = 1024;
/// Frames taken from the partner per loop turn before their bindings are stored and answered:
/// bounds the latency of one group commit and the memory of one turn.
pub const FRAMES_PER_TURN_MAX: usize = 8192;
/// Plaintext read from TLS per turn at most.
pub const READ_PER_TURN_MAX_BYTES: usize = 4 << 20;
/// How long TCP connect, TLS and CONNECT may take before the attempt is dropped (the link
/// keeps the same deadline for CONNECT).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
/// Connections (partner or control) accepted per loop turn; the rest wait for the next turn.
pub const ACCEPTS_PER_TURN_MAX: usize = 16;
/// How often a missing partner link is logged at warn level.
pub const LINK_DOWN_LOG_EVERY: Duration = Duration::from_secs(30);
/// Longest control request accepted, bytes.
pub const CONTROL_REQUEST_MAX_BYTES: usize = 256;
/// How long a control client may take to send its request.
pub const CONTROL_IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Unacknowledged plaintext queued toward the partner past which no new BNDUPDs are added
/// (TLS buffers it while TCP is full; the window normally keeps it far lower).
pub const SEND_BUFFER_MAX_BYTES: usize = 64 << 20;

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const CONTROL: Token = Token(2);
const CONN_FIRST: usize = 16;

/// The engine policy the workers read; the partner thread writes it after every state change.
#[derive(Debug)]
pub struct PolicyCell(RwLock<Policy>);

impl PolicyCell {
    /// A cell holding `p`.
    pub fn new(p: Policy) -> PolicyCell {
        PolicyCell(RwLock::new(p))
    }
    /// The current policy.
    pub fn get(&self) -> Policy {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
    fn set(&self, p: Policy) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = p;
    }
}

/// Hands durable lease changes to the partner thread (held by the group committer).
#[derive(Clone)]
pub struct PartnerNotifier {
    tx: Sender<Vec<Lease>>,
    waker: Arc<Waker>,
}

impl PartnerNotifier {
    /// Queues leases the store just made durable. Blocks only if the partner thread is
    /// [`COMMITTED_QUEUE_MAX`] batches behind.
    pub fn committed(&self, leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        match self.tx.try_send(leases) {
            Ok(()) => {}
            Err(TrySendError::Full(l)) => {
                let _ = self.waker.wake();
                let _ = self.tx.send(l);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
        let _ = self.waker.wake();
    }
}

/// Why the partner thread could not start (maps to the server's exit codes).
#[derive(Debug, thiserror::Error)]
pub enum PartnerStartError {
    /// TLS material unusable.
    #[error("failover TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A socket (partner listener, control socket) could not be opened.
    #[error("{what}: {source}")]
    Socket {
        /// Which socket.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// The stored failover state could not be read.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The running partner thread.
pub struct PartnerHandle {
    notifier: PartnerNotifier,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl PartnerHandle {
    /// What the committer uses to hand over durable changes.
    pub fn notifier(&self) -> PartnerNotifier {
        self.notifier.clone()
    }

    /// Stops the thread (the partner sees the link close) and waits for it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.notifier.waker.wake();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Everything the partner thread needs.
pub struct PartnerSetup {
    /// The whole configuration.
    pub config: Arc<Config>,
    /// Our server DUID.
    pub duid: Box<[u8]>,
    /// The store (shared with the group committer).
    pub store: Arc<Store>,
    /// The lease table (shared with the workers).
    pub alloc: Arc<Allocator>,
    /// Where the workers read the policy.
    pub policy: Arc<PolicyCell>,
    /// The group committer's queue, for writes nothing waits for (acknowledgements).
    pub commits: Sender<CommitJob<PendingReply>>,
}

/// Opens the partner listener (secondary) and the control socket, loads the stored endpoint
/// state and starts the thread. Fails before anything is answered.
pub fn start(setup: PartnerSetup) -> Result<PartnerHandle, PartnerStartError> {
    let fo = setup
        .config
        .failover
        .clone()
        .expect("partner::start needs a [failover] section");
    let tls = TlsMaterial::load(&fo.ca, &fo.cert, &fo.key, &fo.partner_name)?;
    let tls_client = tls.client_config()?;
    let tls_server = tls.server_config()?;
    let poll = Poll::new().map_err(|e| sock_err("mio poll", e))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| sock_err("waker", e))?);
    let mut listener = match fo.role {
        Role::Secondary => Some(
            TcpListener::bind(fo.listen)
                .map_err(|e| sock_err(&format!("failover.listen {}", fo.listen), e))?,
        ),
        Role::Primary => None,
    };
    if let Some(l) = listener.as_mut() {
        poll.registry()
            .register(l, LISTENER, Interest::READABLE)
            .map_err(|e| sock_err("register listener", e))?;
        info!(listen = %fo.listen, "failover: waiting for the primary");
    }
    let control_path = setup.config.server.control_socket_path();
    let control = bind_control(&control_path)?;
    poll.registry()
        .register(
            &mut SourceFd(&control.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )
        .map_err(|e| sock_err("register control socket", e))?;

    let persisted = setup
        .store
        .get_meta(persist::META_FAILOVER_STATE)?
        .and_then(|b| {
            let p = persist::decode(&b);
            if p.is_none() {
                warn!("stored failover state unreadable; starting as if the store were new");
            }
            p
        });
    let now = now_secs();
    let epc = EndpointConfig {
        mclt_secs: fo.mclt_secs,
        auto_partner_down_secs: fo.auto_partner_down_secs,
        startup_secs: fo.startup_secs,
    };
    let node = Node::with_allocator(
        setup.config.clone(),
        setup.duid,
        fo.role,
        epc,
        setup.alloc.clone(),
        persisted,
        now,
    );
    match persisted {
        Some(p) => {
            info!(role = ?fo.role, stored_state = %p.state, since = p.state_since, "failover: starting, resuming stored state after STARTUP")
        }
        None => {
            info!(role = ?fo.role, "failover: no stored state (new or lost store): will recover everything from the partner")
        }
    }
    setup.policy.set(node.policy());
    let mut params = LinkParams::new(
        fo.role,
        fo.relationship.clone(),
        fo.mclt_secs,
        fo.keepalive_secs,
        fo.max_unacked,
        &setup.config,
    );
    params.skew_max_secs = fo.skew_max_secs;
    let summary: Arc<[String]> =
        tandem_core::failover::pools_digest::pools_summary(&setup.config).into();
    let fo_reconnect_max_ms = fo.reconnect_max_ms;
    let (tx, rx) = crossbeam_channel::bounded(COMMITTED_QUEUE_MAX);
    let stop = Arc::new(AtomicBool::new(false));
    let mut t = PartnerThread {
        cfg: setup.config.clone(),
        fo,
        tls,
        tls_client,
        tls_server,
        params,
        summary,
        poll,
        listener,
        control,
        control_path,
        node,
        store: setup.store,
        alloc: setup.alloc,
        policy: setup.policy,
        commits: setup.commits,
        committed: rx,
        stop: stop.clone(),
        conn: None,
        pending: None,
        next_token: CONN_FIRST,
        backoff: Backoff::new(defaults::RECONNECT_MIN_MS, fo_reconnect_max_ms),
        origin: Instant::now(),
        out: NodeOut::default(),
        outbox: Vec::new(),
        last_reclaim: Instant::now(),
        link_since: None,
        last_contact: None,
        store_failed: false,
        last_down_log: None,
        last_down_reason: String::new(),
        started: Instant::now(),
        accept_more: false,
        control_more: false,
        sent_updates: 0,
        received_updates: 0,
    };
    let join = std::thread::Builder::new()
        .name("partner".into())
        .spawn(move || t.run())
        .map_err(|e| sock_err("partner thread", e))?;
    Ok(PartnerHandle {
        notifier: PartnerNotifier { tx, waker },
        stop,
        join: Some(join),
    })
}

fn sock_err(what: &str, source: io::Error) -> PartnerStartError {
    PartnerStartError::Socket {
        what: what.to_string(),
        source,
    }
}

/// Binds the control socket, replacing a stale socket file that nobody listens on.
fn bind_control(path: &std::path::Path) -> Result<UnixListener, PartnerStartError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(sock_err(
                &format!("control socket {}", path.display()),
                io::Error::new(io::ErrorKind::AddrInUse, "another server answers on it"),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| sock_err(&format!("control socket {}", path.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    // partner-down is dangerous: only the server's own user may use the socket.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

/// Where a connection's transport is in its life; the protocol on top is its [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress (primary).
    Connecting,
    /// TLS handshake.
    Tls,
    /// TLS done and the partner's name checked: the link runs.
    Linked,
}

struct Conn {
    sock: TcpStream,
    tls: rustls::Connection,
    peer: SocketAddr,
    phase: Phase,
    /// The protocol, once the transport is secure.
    link: Option<Link>,
    /// Whether the link came up (CONNECT accepted), for what its end means.
    up: bool,
    opened: Instant,
    /// `opened` on the thread's monotonic clock (see [`PartnerThread::now`]).
    opened_ms: u64,
    /// The partner closed its side.
    eof: bool,
    closed: Option<String>,
}

impl Conn {
    fn new(
        sock: TcpStream,
        mut tls: rustls::Connection,
        peer: SocketAddr,
        phase: Phase,
        opened_ms: u64,
    ) -> Conn {
        // rustls buffers 64 KiB of plaintext by default; a window of BNDUPDs is more. The
        // window bounds what is queued, this only catches a runaway.
        tls.set_buffer_limit(Some(SEND_BUFFER_MAX_BYTES));
        Conn {
            sock,
            tls,
            peer,
            phase,
            link: None,
            up: false,
            opened: Instant::now(),
            opened_ms,
            eof: false,
            closed: None,
        }
    }

    fn close(&mut self, why: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(why.into());
        }
    }

    /// Queues plaintext for the partner.
    fn send(&mut self, bytes: &[u8]) {
        if self.closed.is_some() || bytes.is_empty() {
            return;
        }
        if let Err(e) = self.tls.writer().write_all(bytes) {
            self.close(format!("TLS write: {e}"));
        }
    }

    /// Moves what the link has to send into TLS.
    fn transmit(&mut self) {
        if let Some(l) = self.link.as_mut() {
            let bytes = std::mem::take(l.take_transmit());
            self.send(&bytes);
        }
    }

    /// Whether the link is up.
    fn is_up(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_up)
    }

    /// Moves TLS records to the socket until it would block.
    fn flush(&mut self) {
        while self.closed.is_none() && self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.close(format!("send: {e}")),
            }
        }
    }

    /// Reads what the socket has, through TLS, into the framer (bounded per turn).
    fn read(&mut self, plain: &mut Vec<u8>) {
        let mut budget = READ_PER_TURN_MAX_BYTES;
        while self.closed.is_none() && !self.eof && budget > 0 {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    // Closed after whatever it sent last (a refusal, a DISCONNECT): that is
                    // read first, then the connection is closed (`drive`).
                    self.eof = true;
                    break;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(format!("receive: {e}"));
                    break;
                }
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Send the alert that says why, then give up on this connection.
                self.flush();
                self.close(format!("TLS: {e}"));
                break;
            }
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        self.close(format!("TLS read: {e}"));
                        break;
                    }
                }
            }
        }
    }
}

struct PartnerThread {
    cfg: Arc<Config>,
    fo: FailoverConfig,
    tls: TlsMaterial,
    tls_client: Arc<rustls::ClientConfig>,
    tls_server: Arc<rustls::ServerConfig>,
    params: LinkParams,
    summary: Arc<[String]>,
    poll: Poll,
    listener: Option<TcpListener>,
    control: UnixListener,
    control_path: std::path::PathBuf,
    node: Node,
    store: Arc<Store>,
    alloc: Arc<Allocator>,
    policy: Arc<PolicyCell>,
    commits: Sender<CommitJob<PendingReply>>,
    committed: Receiver<Vec<Lease>>,
    stop: Arc<AtomicBool>,
    /// The link (or the primary's attempt at one).
    conn: Option<Conn>,
    /// Secondary: a newer connection in handshake while `conn` may still be up.
    pending: Option<Conn>,
    next_token: usize,
    /// The primary's reconnection schedule.
    backoff: Backoff,
    /// Origin of the monotonic milliseconds the links read.
    origin: Instant,
    out: NodeOut,
    /// Messages for the partner, sent on the link once `out` is durable.
    outbox: Vec<PeerMsg>,
    last_reclaim: Instant,
    link_since: Option<Instant>,
    last_contact: Option<Instant>,
    store_failed: bool,
    last_down_log: Option<Instant>,
    last_down_reason: String,
    started: Instant,
    /// A listener may still have connections waiting (see `run`).
    accept_more: bool,
    control_more: bool,
    sent_updates: u64,
    received_updates: u64,
}

impl PartnerThread {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        let mut last_tick = Instant::now();
        let mut plain = Vec::with_capacity(64 * 1024);
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = TICK.saturating_sub(last_tick.elapsed());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!(error = %e, "partner thread: poll failed");
                std::thread::sleep(TICK);
            }
            let mut control_ready = false;
            let mut accept_ready = false;
            for ev in events.iter() {
                match ev.token() {
                    CONTROL => control_ready = true,
                    LISTENER => accept_ready = true,
                    _ => {}
                }
            }
            // Edge-triggered: a listener left with connections waiting (the per-turn bound)
            // gets no new event, so it is tried again every turn until it would block.
            if accept_ready || self.accept_more {
                self.accept();
            }
            if control_ready || self.control_more {
                self.serve_control();
            }
            let now = now_secs();
            // Changes the workers made durable.
            let mut batches = 0;
            while let Ok(leases) = self.committed.try_recv() {
                self.node.committed(now, leases.iter(), &mut self.out);
                batches += 1;
                if batches >= COMMITTED_QUEUE_MAX {
                    break;
                }
            }
            self.apply();
            self.flush_outbox();
            self.pump(&mut plain);
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.timers();
            }
        }
        if let Some(c) = self.conn.as_mut() {
            c.tls.send_close_notify();
            c.flush();
        }
        let _ = std::fs::remove_file(&self.control_path);
        info!("failover: partner thread stopped");
    }

    /// Makes `out` durable, then sends its messages, then publishes the policy.
    fn apply(&mut self) {
        if !self.out.store_lazy.is_empty() {
            // Acknowledgements ride along with the next group commit: no fsync of their own,
            // no wait. If the committer is backed up, store them here instead.
            let job = CommitJob {
                writes: std::mem::take(&mut self.out.store_lazy),
                then: None,
                // The partner sent these acknowledgements: nothing to tell it.
                announce: false,
            };
            if let Err(e) = self.commits.try_send(job) {
                let writes = e.into_inner().writes;
                self.out.store.extend(writes);
            }
        }
        if self.out.store.is_empty()
            && self.out.persist.is_none()
            && self.out.to_peer.is_empty()
            && self.out.changes.is_empty()
        {
            return;
        }
        let mut durable = true;
        if !self.out.store.is_empty()
            && let Err(e) = self.store.commit(self.out.store.iter())
        {
            error!(error = %e, leases = self.out.store.len(), "failover: cannot store partner bindings; dropping the link so the partner resends them");
            durable = false;
        }
        if let Some(p) = self.out.persist
            && durable
            && let Err(e) = self
                .store
                .put_meta(persist::META_FAILOVER_STATE, &persist::encode(&p))
        {
            error!(error = %e, "failover: cannot store the endpoint state");
            durable = false;
        }
        for (from, to) in self.out.changes.drain(..) {
            info!(from = %from, to = %to, partner = ?self.node.endpoint().partner_state().map(|s| s.to_string()), "failover state change");
        }
        self.policy.set(self.node.policy());
        if !durable {
            self.store_failed = true;
            if let Some(c) = self.conn.as_mut() {
                c.close("store failure");
            }
            self.out.clear();
            self.outbox.clear();
            return;
        }
        for m in self.out.to_peer.drain(..) {
            match &m {
                PeerMsg::BndUpd { .. } => self.sent_updates += 1,
                PeerMsg::State { state, .. } => debug!(state = %state, "failover: sending STATE"),
                _ => {}
            }
            self.outbox.push(m);
        }
        self.out.clear();
    }

    /// Sends the outbox on the link in its slot (when it is up), else drops it.
    fn flush_outbox(&mut self) {
        let now = self.now();
        match self.conn.as_mut() {
            Some(c) => Self::send_msgs(&mut self.outbox, c, now),
            None => self.outbox.clear(),
        }
    }

    /// Sends `msgs` on `c` if its link is up, else drops them (the lazy-update session
    /// resends what the partner never acknowledged).
    fn send_msgs(msgs: &mut Vec<PeerMsg>, c: &mut Conn, now: Now) {
        if let Some(l) = c.link.as_mut().filter(|l| l.is_up()) {
            for m in msgs.iter() {
                if let Err(e) = l.send(now, m) {
                    warn!(error = %e, message = msg_kind(m), "failover: cannot encode a message for the partner; skipped");
                }
            }
        }
        msgs.clear();
        c.transmit();
        c.flush();
    }

    /// The links' clocks: monotonic milliseconds since the thread began, and unix seconds.
    fn now(&self) -> Now {
        Now {
            mono_ms: self.origin.elapsed().as_millis() as u64,
            unix_secs: now_secs(),
        }
    }

    fn accept(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        self.accept_more = true;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match l.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let tls = match self.tls.accept(&self.tls_server) {
                        Ok(t) => t,
                        Err(e) => {
                            error!(error = %e, "failover: TLS setup failed");
                            continue;
                        }
                    };
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) = self.poll.registry().register(
                        &mut sock,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!(error = %e, "failover: cannot register a connection");
                        continue;
                    }
                    info!(%peer, "failover: connection from the partner side; checking it");
                    let opened_ms = self.now().mono_ms;
                    let c = Conn::new(sock, tls.into(), peer, Phase::Tls, opened_ms);
                    if let Some(mut old) = self.pending.replace(c) {
                        old.close("replaced by a newer connection");
                        self.drop_conn(old);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    break;
                }
                Err(e) => {
                    // EMFILE and the like: try again next turn rather than spin now.
                    warn!(error = %e, "failover: accept failed");
                    break;
                }
            }
        }
        self.listener = Some(l);
    }

    fn connect(&mut self) {
        let Some(addr) = self.fo.partner else {
            return;
        };
        let tls = match self.tls.connect(&self.tls_client) {
            Ok(t) => t,
            Err(e) => {
                error!(error = %e, "failover: TLS setup failed");
                return;
            }
        };
        match TcpStream::connect(addr) {
            Ok(mut sock) => {
                let token = Token(self.next_token);
                self.next_token += 1;
                if let Err(e) = self.poll.registry().register(
                    &mut sock,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    warn!(error = %e, "failover: cannot register a connection");
                    return;
                }
                debug!(partner = %addr, "failover: connecting");
                let opened_ms = self.now().mono_ms;
                self.conn = Some(Conn::new(
                    sock,
                    tls.into(),
                    addr,
                    Phase::Connecting,
                    opened_ms,
                ));
            }
            Err(e) => {
                self.note_link_down(&format!("connect to {addr}: {e}"));
                self.schedule_reconnect();
            }
        }
    }

    /// Logs, at most every [`LINK_DOWN_LOG_EVERY`], that there is still no link and why.
    fn note_link_down(&mut self, why: &str) {
        let due = self.last_down_reason != why
            || self
                .last_down_log
                .is_none_or(|t| t.elapsed() >= LINK_DOWN_LOG_EVERY);
        if due {
            self.last_down_log = Some(Instant::now());
            self.last_down_reason = why.to_string();
            warn!(state = %self.node.endpoint().state(), reason = why, "failover: no link to the partner");
        } else {
            debug!(reason = why, "failover: no link to the partner");
        }
    }

    fn schedule_reconnect(&mut self) {
        let now_ms = self.now().mono_ms;
        self.backoff.failed(now_ms);
    }

    fn drop_conn(&mut self, mut c: Conn) {
        c.flush();
        let _ = self.poll.registry().deregister(&mut c.sock);
    }

    /// Reads, handles and writes on every connection; closes the broken ones.
    fn pump(&mut self, plain: &mut Vec<u8>) {
        for pending in [true, false] {
            let slot = if pending {
                self.pending.take()
            } else {
                self.conn.take()
            };
            let Some(mut c) = slot else { continue };
            self.drive(&mut c, plain);
            if let Some(why) = c.closed.clone() {
                let was_up = c.up;
                let peer = c.peer;
                self.drop_conn(c);
                if was_up {
                    warn!(%peer, reason = %why, "failover: link to the partner down");
                    self.link_down();
                } else {
                    self.note_link_down(&format!("connection with {peer}: {why}"));
                }
                if self.fo.role == Role::Primary {
                    self.schedule_reconnect();
                }
            } else if pending && !c.up {
                self.pending = Some(c);
            } else {
                // The link, or a newer connection that just replaced it (see `up`).
                self.conn = Some(c);
            }
        }
    }

    fn link_down(&mut self) {
        self.link_since = None;
        self.node.link_down(now_secs(), &mut self.out);
        self.apply();
        self.outbox.clear();
    }

    fn drive(&mut self, c: &mut Conn, plain: &mut Vec<u8>) {
        if c.phase == Phase::Connecting {
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    c.close(format!("connect: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => c.phase = Phase::Tls,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if c.opened.elapsed() > HANDSHAKE_TIMEOUT {
                        c.close("connect timed out");
                    }
                    return;
                }
                Err(e) => {
                    c.close(format!("connect: {e}"));
                    return;
                }
            }
            let _ = c.sock.set_nodelay(true);
        }
        plain.clear();
        c.read(plain);
        if c.phase == Phase::Tls && !c.tls.is_handshaking() && c.closed.is_none() {
            self.tls_done(c);
        }
        if c.link.is_none() && !plain.is_empty() && c.closed.is_none() {
            c.close("data before the TLS handshake ended");
        }
        let now = self.now();
        if c.eof
            && let Some(l) = c.link.as_mut()
        {
            l.on_eof();
        }
        let mut taken = 0;
        let mut events = 0;
        while c.closed.is_none() {
            let Some(l) = c.link.as_mut() else { break };
            let n = l.on_bytes(now, plain.get(taken..).unwrap_or_default());
            taken += n;
            while let Some(ev) = c.link.as_mut().and_then(|l| l.poll_event(now)) {
                self.on_link_event(c, ev, now);
                events += 1;
                if events % FRAMES_PER_TURN_MAX == 0 {
                    self.apply();
                    self.send_outbox(c);
                }
            }
            if n == 0 || taken >= plain.len() {
                break;
            }
        }
        self.apply();
        self.send_outbox(c);
        if let Some(l) = c.link.as_mut() {
            l.on_timeout(now);
        }
        while let Some(ev) = c.link.as_mut().and_then(|l| l.poll_event(now)) {
            self.on_link_event(c, ev, now);
        }
        if c.eof {
            c.close("the partner closed the connection");
        }
        if c.link.is_none() && c.opened.elapsed() > HANDSHAKE_TIMEOUT && c.closed.is_none() {
            c.close(format!(
                "no complete handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ));
        }
        c.transmit();
        c.flush();
    }

    /// Sends the outbox on `c`, the connection being driven, if it is the link.
    fn send_outbox(&mut self, c: &mut Conn) {
        let now = self.now();
        Self::send_msgs(&mut self.outbox, c, now);
    }

    fn tls_done(&mut self, c: &mut Conn) {
        if let rustls::Connection::Server(s) = &c.tls
            && let Err(e) = self.tls.check_client(s)
        {
            c.close(format!("{e}"));
            return;
        }
        // The primary's CONNECT is queued by the link and leaves with this turn's transmit.
        c.link = Some(Link::new(
            self.params.clone(),
            self.summary.clone(),
            self.cfg.clone(),
            self.fo.keepalive_secs,
            c.opened_ms,
            self.now(),
        ));
        c.phase = Phase::Linked;
    }

    fn on_link_event(&mut self, c: &mut Conn, ev: LinkEvent, now: Now) {
        match ev {
            LinkEvent::Up(a) => self.up(c, &a),
            LinkEvent::Msg(m) => {
                self.last_contact = Some(Instant::now());
                if matches!(m, PeerMsg::BndUpd { .. }) {
                    self.received_updates += 1;
                }
                if m != PeerMsg::Contact {
                    debug!(message = msg_kind(&m), "failover: from partner");
                }
                self.node.on_peer(now.unix_secs, m, &mut self.out);
            }
            LinkEvent::Skipped(why) => {
                self.last_contact = Some(Instant::now());
                warn!(error = %why, "failover: message from the partner not understood");
            }
            LinkEvent::Closed {
                reason,
                was_up: _,
                refused,
            } => {
                if refused {
                    match self.fo.role {
                        Role::Secondary => {
                            error!(peer = %c.peer, refused = %reason, "failover: refused the partner's CONNECT")
                        }
                        Role::Primary => {
                            error!(peer = %c.peer, refused = %reason, "failover: the partner link was refused");
                            // Try again later, less often (RFC 8156 §6.1).
                            self.backoff.refused();
                        }
                    }
                }
                // What the link queued last (a refusing CONNECTREPLY) leaves before the close.
                c.transmit();
                c.flush();
                c.close(reason);
            }
        }
    }

    fn up(&mut self, c: &mut Conn, a: &ConnectAccepted) {
        c.up = true;
        // A secondary's newer connection replaces the old link (the primary restarted, or
        // the old connection is half-dead); `conn` is empty while the primary's is driven.
        if let Some(mut old) = self.conn.take() {
            let was_up = old.up;
            old.close("replaced by a newer connection");
            let peer = old.peer;
            self.drop_conn(old);
            if was_up {
                warn!(%peer, "failover: the partner connected again; old link dropped");
                self.link_down();
            }
        }
        self.node
            .set_partner_window(a.partner_max_unacked.max(1) as usize);
        self.last_contact = Some(Instant::now());
        self.link_since = Some(Instant::now());
        self.backoff.up();
        info!(peer = %c.peer, skew_secs = a.skew_secs, mclt_secs = a.mclt_secs, partner_max_unacked = a.partner_max_unacked, "failover: partner link up");
        self.node.link_up(now_secs(), &mut self.out);
        self.apply();
        self.send_outbox(c);
    }

    fn timers(&mut self) {
        let now = now_secs();
        if self.last_reclaim.elapsed() >= Duration::from_millis(self.cfg.server.reclaim_interval_ms)
        {
            self.last_reclaim = Instant::now();
            self.node.tick(now, &mut self.out);
        } else {
            self.node.tick_timers(now, &mut self.out);
        }
        if !self.out.store.is_empty() {
            debug!(
                leases = self.out.store.len(),
                "failover: timer changes stored"
            );
        }
        self.apply();
        self.flush_outbox();
        if self.fo.role == Role::Secondary
            && self.conn.is_none()
            && self.pending.is_none()
            && self
                .last_down_log
                .is_none_or(|t| t.elapsed() >= LINK_DOWN_LOG_EVERY)
            && self.started.elapsed() >= Duration::from_secs(self.fo.startup_secs)
        {
            let listen = self.fo.listen;
            self.note_link_down(&format!("waiting for the primary to connect to {listen}"));
        }
        if self.fo.role == Role::Primary
            && self.conn.is_none()
            && self.backoff.due(self.now().mono_ms)
        {
            self.connect();
        }
    }

    fn serve_control(&mut self) {
        self.control_more = true;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match self.control.accept() {
                Ok((sock, _)) => self.control_request(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.control_more = false;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
    }

    fn control_request(&mut self, mut s: UnixStream) {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(CONTROL_IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(CONTROL_IO_TIMEOUT));
        let mut req = Vec::new();
        let mut buf = [0u8; 64];
        while req.len() < CONTROL_REQUEST_MAX_BYTES && !req.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        let line = String::from_utf8_lossy(&req);
        let cmd = line.trim();
        let answer = match cmd {
            "status" => self.status_text(),
            "partner-down" => {
                let st = self.node.endpoint().state();
                if self.node.endpoint().link_up() && st == ServerState::Normal {
                    "error: the link to the partner is up and both are NORMAL; partner-down is for a partner that is really down\n".to_string()
                } else {
                    warn!(state = %st, "failover: operator declared the partner down");
                    self.node.operator_partner_down(now_secs(), &mut self.out);
                    self.apply();
                    self.flush_outbox();
                    match self.node.endpoint().state() {
                        ServerState::PartnerDown => "ok: state PARTNER-DOWN\n".to_string(),
                        now @ (ServerState::Recover
                        | ServerState::RecoverWait
                        | ServerState::RecoverDone) => format!(
                            "error: not entered (state {now}): this server is still recovering its bindings from the partner; serving alone without them could hand out leases the partner's clients hold\n"
                        ),
                        ServerState::Startup => "error: not entered: still in STARTUP (failover.startup_secs); try again in a few seconds\n".to_string(),
                        now => format!(
                            "error: not entered (state {now}): the state machine does not go to PARTNER-DOWN from here\n"
                        ),
                    }
                }
            }
            other => format!("error: unknown command `{other}` (status, partner-down)\n"),
        };
        let _ = s.write_all(answer.as_bytes());
    }

    fn status_text(&self) -> String {
        use std::fmt::Write as _;
        let e = self.node.endpoint();
        let now = now_secs();
        let mut t = String::new();
        let _ = writeln!(
            t,
            "role: {}",
            match e.role() {
                Role::Primary => "primary",
                Role::Secondary => "secondary",
            }
        );
        let _ = writeln!(t, "relationship: {}", self.fo.relationship);
        let _ = writeln!(t, "state: {}", e.state());
        let _ = writeln!(
            t,
            "state_since: {} ({} s ago)",
            e.state_since(),
            now.saturating_sub(e.state_since())
        );
        let _ = writeln!(
            t,
            "partner_state: {}",
            e.partner_state()
                .map_or("unknown".to_string(), |s| s.to_string())
        );
        match (&self.conn, self.link_since) {
            (Some(c), Some(since)) if c.is_up() => {
                let _ = writeln!(
                    t,
                    "link: up with {} for {:.1} s",
                    c.peer,
                    since.elapsed().as_secs_f64()
                );
            }
            (Some(c), _) => {
                let _ = writeln!(t, "link: connecting to {} ({:?})", c.peer, c.phase);
            }
            (None, _) => {
                let _ = writeln!(t, "link: down");
            }
        }
        match self.last_contact {
            Some(i) => {
                let _ = writeln!(t, "last_contact: {:.1} s ago", i.elapsed().as_secs_f64());
            }
            None => {
                let _ = writeln!(t, "last_contact: never since start");
            }
        }
        let _ = writeln!(t, "unacked_updates: {}", self.node.unacked());
        let _ = writeln!(t, "update_backlog: {}", self.node.backlog());
        let _ = writeln!(t, "updates_sent: {}", self.sent_updates);
        let _ = writeln!(t, "updates_received: {}", self.received_updates);
        let _ = writeln!(t, "store_failed: {}", self.store_failed);
        for (subnet, pool, u) in self.alloc.usage() {
            let _ = writeln!(
                t,
                "pool: subnet {} {}/{} {:?} total {} active {} declined {} offered {}",
                subnet,
                std::net::Ipv6Addr::from(pool.first),
                pool.resource_len,
                pool.kind,
                u.total,
                u.active,
                u.declined,
                u.offered
            );
        }
        t
    }
}

fn msg_kind(m: &PeerMsg) -> &'static str {
    match m {
        PeerMsg::State { .. } => "STATE",
        PeerMsg::BndUpd { .. } => "BNDUPD",
        PeerMsg::BndReply { .. } => "BNDREPLY",
        PeerMsg::UpdReq => "UPDREQ",
        PeerMsg::UpdReqAll => "UPDREQALL",
        PeerMsg::UpdDone => "UPDDONE",
        PeerMsg::PoolReq => "POOLREQ",
        PeerMsg::Contact => "CONTACT",
    }
}
