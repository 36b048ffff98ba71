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
//!
//! Files: this one (start-up, the handles the rest of the server holds), `thread` (the loop:
//! the node, its store, the link's connections), `conn` (one TCP + TLS connection and the
//! [`Link`](tandem_core::failover::link::Link) on it), `control` (the `tandem ctl` socket).

mod conn;
mod control;
mod thread;

use control::bind_control;
use thread::PartnerThread;

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
    /// The store (shared with the group committer).
    pub store: Arc<Store>,
    /// The lease table (shared with the workers).
    pub alloc: Arc<Allocator>,
    /// Where the workers read the policy.
    pub policy: Arc<PolicyCell>,
    /// The group committer's queue, for writes nothing waits for (acknowledgements).
    pub commits: Sender<CommitJob<PendingReply>>,
    /// Where the thread publishes its gauges for `/metrics`.
    pub hub: Arc<super::metrics::MetricsHub>,
    /// What `tandem ctl reload` calls.
    pub reloader: Arc<super::reload::Reloader>,
    /// The audit log, if on: the leases this thread reclaims (or hears expired from the
    /// partner) are written there once stored.
    pub audit: Option<Arc<super::audit::AuditLog>>,
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
    let stored_shares = match setup.store.get_meta(persist::META_PD_SHARES)? {
        Some(b) => persist::decode_shares(fo.role, &b).unwrap_or_else(|| {
            warn!("stored prefix shares unreadable; each pool starts safe (no free prefix of its own until the partner sets it)");
            Vec::new()
        }),
        None => Vec::new(),
    };
    if fo.mclt_secs < tandem_core::config::defaults::MCLT_SECS_ADVISED_MIN {
        warn!(
            mclt_secs = fo.mclt_secs,
            "failover: mclt_secs is below 30 s: a client's first lease lasts at most MCLT, and RFC 8156 expects leases of 30 s at least; fine for a test, not for clients"
        );
    }
    let now = now_secs();
    let epc = EndpointConfig {
        mclt_secs: fo.mclt_secs,
        auto_partner_down_secs: fo.auto_partner_down_secs,
        startup_secs: fo.startup_secs,
        skew_max_secs: fo.skew_max_secs,
    };
    let node = Node::with_allocator(
        setup.config.clone(),
        fo.role,
        epc,
        setup.alloc.clone(),
        persisted,
        &stored_shares,
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
        policy_held: false,
        unsendable_logged: 0,
        last_down_log: None,
        last_down_reason: String::new(),
        started: Instant::now(),
        accept_more: false,
        control_more: false,
        sent_updates: 0,
        received_updates: 0,
        hub: setup.hub,
        reloader: setup.reloader,
        audit: setup.audit,
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
