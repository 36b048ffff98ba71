//! The partner thread: the failover [`Node`] on real sockets.
//!
//! One thread per failover relationship (m-to-1: a server may have several, each with its own
//! partner and subnets). Each owns its endpoint state machine and lazy-update session, the TCP +
//! mutual-TLS link to its partner (mio, rustls), and its failover timers; the first also serves
//! the local control socket of `tandem ctl`, asking the others for their part. Workers never
//! talk to them directly: they read the current [`Policy`] of each relationship from a
//! [`PolicyCell`], and the group committer hands every lease change, once it is durable, to the
//! thread of the relationship covering its subnet ([`PartnerNotifier::committed`]), so a client
//! never waits for a partner.
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
use tandem_core::failover::state::{EndpointConfig, Persisted, ServerState};
use tandem_core::lease::Lease;
use tandem_core::pool::{Allocator, PdPoolId, Scope};
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

/// How long the control socket's thread waits for another relationship's thread to answer.
pub const CONTROL_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The engine policies the workers read, one per relationship in configuration order (one,
/// [`Policy::STANDALONE`], for a server on its own); each partner thread writes its own after
/// every state change.
#[derive(Debug)]
pub struct PolicyCell(RwLock<Vec<Policy>>);

impl PolicyCell {
    /// A cell for `relationships` relationships (at least one slot), each [`Policy::STANDALONE`]
    /// until its partner thread sets it.
    pub fn new(relationships: usize) -> PolicyCell {
        PolicyCell(RwLock::new(vec![Policy::STANDALONE; relationships.max(1)]))
    }
    /// The current policy of relationship `i`.
    pub fn get(&self, i: usize) -> Policy {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .copied()
            .unwrap_or(Policy::STANDALONE)
    }
    /// Every relationship's current policy, into `out` (no allocation once it has room).
    pub fn read_into(&self, out: &mut Vec<Policy>) {
        out.clear();
        out.extend_from_slice(&self.0.read().unwrap_or_else(|e| e.into_inner()));
    }
    fn set(&self, i: usize, p: Policy) {
        if let Some(slot) = self.0.write().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *slot = p;
        }
    }
}

/// One partner thread's queue of durable changes.
#[derive(Clone)]
struct CommittedQueue {
    tx: Sender<Vec<Lease>>,
    waker: Arc<Waker>,
}

impl CommittedQueue {
    fn send(&self, leases: Vec<Lease>) {
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

/// Hands durable lease changes to the partner threads (held by the group committer and the
/// control socket), each to the relationship that covers its subnet.
#[derive(Clone)]
pub struct PartnerNotifier {
    queues: Arc<[CommittedQueue]>,
    /// Subnet id → index of its relationship (empty with one relationship).
    relationship_of: Arc<std::collections::HashMap<u32, usize>>,
}

impl PartnerNotifier {
    /// Queues leases the store just made durable. Blocks only if a partner thread is
    /// [`COMMITTED_QUEUE_MAX`] batches behind.
    pub fn committed(&self, leases: Vec<Lease>) {
        if self.queues.len() <= 1 {
            if let Some(q) = self.queues.first() {
                q.send(leases);
            }
            return;
        }
        for (q, part) in self.queues.iter().zip(self.split(leases)) {
            q.send(part);
        }
    }

    /// [`PartnerNotifier::committed`] from partner thread `own`: queues the other
    /// relationships' changes and returns its own, for it to take at once (it is the only
    /// reader of its queue, so waiting on it could wait forever).
    pub(super) fn committed_except(&self, own: usize, leases: Vec<Lease>) -> Vec<Lease> {
        if self.queues.len() <= 1 {
            return leases;
        }
        let mut mine = Vec::new();
        for (i, (q, part)) in self.queues.iter().zip(self.split(leases)).enumerate() {
            if i == own {
                mine = part;
            } else {
                q.send(part);
            }
        }
        mine
    }

    /// `leases` by relationship.
    fn split(&self, leases: Vec<Lease>) -> Vec<Vec<Lease>> {
        let mut split: Vec<Vec<Lease>> = vec![Vec::new(); self.queues.len()];
        for l in leases {
            // Every subnet is covered (config validation), and a reload cannot change
            // which; a lease of a subnet the configuration no longer has fits no pool, so no
            // client changed it.
            if let Some(&i) = self.relationship_of.get(&l.subnet_id) {
                split[i].push(l);
            }
        }
        split
    }
}

/// A question from the control socket's thread to another relationship's thread.
pub(super) struct ControlAsk {
    what: Ask,
    answer: Sender<String>,
    /// Past this the asker has given up: the question is dropped unanswered and not acted on
    /// (an operator told "no answer" must not see a partner-down happen later).
    deadline: Instant,
}

impl ControlAsk {
    /// Whether the asker still waits for the answer.
    pub(super) fn wanted(&self) -> bool {
        Instant::now() < self.deadline
    }
}

/// What a [`ControlAsk`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// The relationship's status lines.
    Status,
    /// The operator declares this relationship's partner down.
    PartnerDown,
}

/// Another relationship's thread, as the control socket's thread reaches it.
pub(super) struct OtherRelationship {
    name: String,
    asks: Sender<ControlAsk>,
    waker: Arc<Waker>,
}

impl OtherRelationship {
    /// Asks, and waits up to [`CONTROL_ASK_TIMEOUT`] for the answer.
    fn ask(&self, what: Ask) -> String {
        Self::ask_all(std::slice::from_ref(self), what).remove(0)
    }

    /// Asks each of `others` at once, then collects the answers, all within one
    /// [`CONTROL_ASK_TIMEOUT`]. A thread that does not answer in time (or whose queue of
    /// questions is full) gets an error line in its place; its question is then dropped
    /// unanswered.
    fn ask_all(others: &[OtherRelationship], what: Ask) -> Vec<String> {
        let deadline = Instant::now() + CONTROL_ASK_TIMEOUT;
        let asked: Vec<Result<Receiver<String>, String>> = others
            .iter()
            .map(|o| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let ask = ControlAsk {
                    what,
                    answer: tx,
                    deadline,
                };
                match o.asks.try_send(ask) {
                    Ok(()) => {
                        let _ = o.waker.wake();
                        Ok(rx)
                    }
                    Err(TrySendError::Full(_)) => Err(format!(
                        "error: the thread of relationship `{}` is busy with earlier questions; try again\n",
                        o.name
                    )),
                    Err(TrySendError::Disconnected(_)) => Err(format!(
                        "error: the thread of relationship `{}` is gone\n",
                        o.name
                    )),
                }
            })
            .collect();
        others
            .iter()
            .zip(asked)
            .map(|(o, a)| match a {
                Ok(rx) => rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .unwrap_or_else(|_| {
                        format!(
                            "error: the thread of relationship `{}` did not answer within {} s (nothing was done)\n",
                            o.name,
                            CONTROL_ASK_TIMEOUT.as_secs()
                        )
                    }),
                Err(e) => e,
            })
            .collect()
    }
}

/// What relationship `i` sees of the whole configuration `whole`: the whole one when it is the
/// only relationship, else [`Config::relationship_view`].
fn relationship_config(whole: &Arc<Config>, i: usize) -> Arc<Config> {
    if whole.relationships.len() > 1 {
        Arc::new(whole.relationship_view(i))
    } else {
        whole.clone()
    }
}

/// The store's meta key of relationship `fo`'s `base` record: the key itself with one
/// relationship (as before m-to-1), the key and the relationship's name with several.
fn meta_key(base: &[u8], fo: &FailoverConfig, several: bool) -> Vec<u8> {
    let mut k = base.to_vec();
    if several {
        k.push(b'/');
        k.extend_from_slice(fo.relationship.as_bytes());
    }
    k
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

/// The running partner threads, one per relationship.
pub struct PartnerHandle {
    notifier: PartnerNotifier,
    stop: Arc<AtomicBool>,
    joins: Vec<JoinHandle<()>>,
}

impl PartnerHandle {
    /// What the committer uses to hand over durable changes.
    pub fn notifier(&self) -> PartnerNotifier {
        self.notifier.clone()
    }

    /// Stops the threads (each partner sees its link close) and waits for them.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for q in self.notifier.queues.iter() {
            let _ = q.waker.wake();
        }
        for j in self.joins {
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
    /// Where the workers read the policies (one slot per relationship).
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

/// Starts one partner thread per relationship: opens each listener (secondary), loads each
/// stored endpoint state, and the control socket (served by the first). Fails before anything
/// is answered.
pub fn start(setup: PartnerSetup) -> Result<PartnerHandle, PartnerStartError> {
    let n = setup.config.relationships.len();
    assert!(n > 0, "partner::start needs a [failover] section");
    if n > 1 {
        // Each relationship keeps its state under its own keys; what one relationship left
        // under the plain keys must not come back if the server returns to one.
        for k in [
            persist::META_FAILOVER_STATE,
            persist::META_PD_SHARES,
            persist::META_FAILOVER_SCOPE,
        ] {
            if setup.store.delete_meta(k)? {
                info!(key = %String::from_utf8_lossy(k), "failover: several relationships now: the single relationship's stored record is deleted");
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(n);
    let mut queues = Vec::with_capacity(n);
    let mut others = Vec::with_capacity(n);
    for i in 0..n {
        let (t, queue, asks) = prepare(&setup, i, stop.clone())?;
        if i > 0 {
            others.push(OtherRelationship {
                name: t.fo.relationship.clone(),
                asks,
                waker: queue.waker.clone(),
            });
        }
        queues.push(queue);
        threads.push(t);
    }
    let control_path = setup.config.server.control_socket_path();
    let control = bind_control(&control_path)?;
    threads[0]
        .poll
        .registry()
        .register(
            &mut SourceFd(&control.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )
        .map_err(|e| sock_err("register control socket", e))?;
    let relationship_of: std::collections::HashMap<u32, usize> = if n > 1 {
        setup
            .config
            .relationships
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.subnets.iter().map(move |s| (*s, i)))
            .collect()
    } else {
        Default::default()
    };
    let notifier = PartnerNotifier {
        queues: queues.into(),
        relationship_of: Arc::new(relationship_of),
    };
    threads[0].control = Some(control);
    threads[0].control_path = Some(control_path);
    threads[0].others = others;
    let mut joins = Vec::with_capacity(n);
    for mut t in threads {
        t.notifier = Some(notifier.clone());
        let name = if n > 1 {
            format!("partner-{}", t.index)
        } else {
            "partner".to_string()
        };
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || t.run())
        {
            Ok(j) => joins.push(j),
            Err(e) => {
                PartnerHandle {
                    notifier,
                    stop,
                    joins,
                }
                .shutdown();
                return Err(sock_err("partner thread", e));
            }
        }
    }
    Ok(PartnerHandle {
        notifier,
        stop,
        joins,
    })
}

/// Relationship `i`'s thread, not yet running: its listener, stored state, node and queues.
fn prepare(
    setup: &PartnerSetup,
    i: usize,
    stop: Arc<AtomicBool>,
) -> Result<(PartnerThread, CommittedQueue, Sender<ControlAsk>), PartnerStartError> {
    let fo = setup.config.relationships[i].clone();
    let several = setup.config.relationships.len() > 1;
    // What this relationship shares with its partner: its subnets only.
    let view = relationship_config(&setup.config, i);
    let scope = if several {
        Scope::subnets(&fo.subnets)
    } else {
        Scope::ALL
    };
    let tls = TlsMaterial::load(&fo.ca, &fo.cert, &fo.key, &fo.partner_name)?;
    let tls_client = tls.client_config()?;
    let tls_server = tls.server_config()?;
    let poll = Poll::new().map_err(|e| sock_err("mio poll", e))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| sock_err("waker", e))?);
    let mut listener = match fo.role {
        Role::Secondary => Some(TcpListener::bind(fo.listen).map_err(|e| {
            sock_err(
                &format!(
                    "failover.listen {} (relationship `{}`)",
                    fo.listen, fo.relationship
                ),
                e,
            )
        })?),
        Role::Primary => None,
    };
    if let Some(l) = listener.as_mut() {
        poll.registry()
            .register(l, LISTENER, Interest::READABLE)
            .map_err(|e| sock_err("register listener", e))?;
        info!(relationship = %fo.relationship, listen = %fo.listen, "failover: waiting for the primary");
    }
    let state_key = meta_key(persist::META_FAILOVER_STATE, &fo, several);
    let shares_key = meta_key(persist::META_PD_SHARES, &fo, several);
    let (persisted, stored_shares) = load_stored(&setup.store, &fo, several)?;
    if fo.mclt_secs < tandem_core::config::defaults::MCLT_SECS_ADVISED_MIN {
        warn!(
            relationship = %fo.relationship,
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
    let node = Node::in_scope(
        view.clone(),
        fo.role,
        epc,
        setup.alloc.clone(),
        scope.clone(),
        persisted,
        &stored_shares,
        now,
    );
    match persisted {
        Some(p) => {
            info!(relationship = %fo.relationship, role = ?fo.role, stored_state = %p.state, since = p.state_since, "failover: starting, resuming stored state after STARTUP")
        }
        None => {
            info!(relationship = %fo.relationship, role = ?fo.role, "failover: no stored state (new or lost store): will recover everything from the partner")
        }
    }
    setup.policy.set(i, node.policy());
    let mut params = LinkParams::new(
        fo.role,
        fo.relationship.clone(),
        fo.mclt_secs,
        fo.keepalive_secs,
        fo.max_unacked,
        &view,
    );
    params.skew_max_secs = fo.skew_max_secs;
    let summary: Arc<[String]> = tandem_core::failover::pools_digest::pools_summary(&view).into();
    let fo_reconnect_max_ms = fo.reconnect_max_ms;
    let (tx, rx) = crossbeam_channel::bounded(COMMITTED_QUEUE_MAX);
    let (asks_tx, asks_rx) = crossbeam_channel::bounded(ACCEPTS_PER_TURN_MAX);
    let t = PartnerThread {
        index: i,
        cfg: view,
        whole: setup.config.clone(),
        scope,
        state_key,
        shares_key,
        fo,
        tls,
        tls_client,
        tls_server,
        params,
        summary,
        poll,
        listener,
        control: None,
        control_path: None,
        others: Vec::new(),
        asks: asks_rx,
        notifier: None,
        node,
        store: setup.store.clone(),
        alloc: setup.alloc.clone(),
        policy: setup.policy.clone(),
        commits: setup.commits.clone(),
        committed: rx,
        stop,
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
        published: (ServerState::Startup, None, false),
        last_down_log: None,
        last_down_reason: String::new(),
        started: Instant::now(),
        accept_more: false,
        control_more: false,
        sent_updates: 0,
        received_updates: 0,
        hub: setup.hub.clone(),
        reloader: setup.reloader.clone(),
        audit: setup.audit.clone(),
    };
    Ok((t, CommittedQueue { tx, waker }, asks_tx))
}

/// A relationship's stored endpoint state (if any) and prefix shares.
type StoredRelationship = (Option<Persisted>, Vec<(PdPoolId, u128)>);

/// Relationship `fo`'s stored endpoint state and prefix shares, if they are its own: a state
/// stored for other subnets, another partner or another role is not (its leases'
/// acknowledgements came from someone else), so it is deleted and the relationship recovers
/// from its partner as a new server does (the node then sends the partner every binding).
fn load_stored(
    store: &Store,
    fo: &FailoverConfig,
    several: bool,
) -> Result<StoredRelationship, crate::store::StoreError> {
    let state_key = meta_key(persist::META_FAILOVER_STATE, fo, several);
    let shares_key = meta_key(persist::META_PD_SHARES, fo, several);
    let scope_key = meta_key(persist::META_FAILOVER_SCOPE, fo, several);
    let fingerprint = persist::scope_fingerprint(fo);
    match store.get_meta(&scope_key)? {
        Some(stored) if stored == fingerprint => {}
        Some(stored) => {
            warn!(
                relationship = %fo.relationship,
                stored = %String::from_utf8_lossy(&stored),
                now = %String::from_utf8_lossy(&fingerprint),
                "failover: the relationship's subnets, partner or role changed since its state was stored; recovering everything from the partner"
            );
            store.delete_meta(&state_key)?;
            store.delete_meta(&shares_key)?;
            store.put_meta(&scope_key, &fingerprint)?;
        }
        // Stored by a build from before the record: the state is this relationship's.
        None => store.put_meta(&scope_key, &fingerprint)?,
    }
    let persisted = store.get_meta(&state_key)?.and_then(|b| {
        let p = persist::decode(&b);
        if p.is_none() {
            warn!(relationship = %fo.relationship, "stored failover state unreadable; starting as if the store were new");
        }
        p
    });
    let shares = match store.get_meta(&shares_key)? {
        Some(b) => persist::decode_shares(fo.role, &b).unwrap_or_else(|| {
            warn!(relationship = %fo.relationship, "stored prefix shares unreadable; each pool starts safe (no free prefix of its own until the partner sets it)");
            Vec::new()
        }),
        None => Vec::new(),
    };
    Ok((persisted, shares))
}

fn sock_err(what: &str, source: io::Error) -> PartnerStartError {
    PartnerStartError::Socket {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fo(name: &str, subnets: &[u32]) -> FailoverConfig {
        let text = format!(
            "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{{prefix=\"2001:db8:1::/64\"}}]\n\
             [[subnet]]\nid=2\nprefix=\"2001:db8:2::/64\"\npools=[{{prefix=\"2001:db8:2::/64\"}}]\n\
             [failover]\nrole=\"secondary\"\nrelationship=\"{name}\"\npartner_name=\"p\"\nca=\"c\"\ncert=\"c\"\nkey=\"k\"\n"
        );
        let mut f = tandem_core::config::parse("t", &text)
            .unwrap()
            .relationships[0]
            .clone();
        f.subnets = subnets.to_vec();
        f
    }

    #[test]
    fn a_state_stored_for_other_subnets_or_another_partner_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 16, false).unwrap();
        let p = Persisted {
            state: tandem_core::failover::state::ServerState::Normal,
            state_since: 100,
            last_operated: 200,
            partner_down_since: 0,
            communicated: true,
            store_was_empty: false,
        };
        // A build from before the scope record stored a state: it is resumed, and the record
        // written.
        let a = fo("a", &[1, 2]);
        store
            .put_meta(persist::META_FAILOVER_STATE, &persist::encode(&p))
            .unwrap();
        assert_eq!(load_stored(&store, &a, false).unwrap().0, Some(p));
        assert_eq!(
            load_stored(&store, &a, false).unwrap().0,
            Some(p),
            "same relationship"
        );
        // The relationship now covers other subnets: the state is dropped, for good.
        let moved = fo("a", &[1]);
        assert_eq!(load_stored(&store, &moved, false).unwrap().0, None);
        assert_eq!(store.get_meta(persist::META_FAILOVER_STATE).unwrap(), None);
        assert_eq!(load_stored(&store, &a, false).unwrap().0, None);
        // Another partner, or another role, under the same name: the same.
        store
            .put_meta(persist::META_FAILOVER_STATE, &persist::encode(&p))
            .unwrap();
        let other_partner = FailoverConfig {
            partner_name: "q".into(),
            ..a.clone()
        };
        assert_eq!(load_stored(&store, &other_partner, false).unwrap().0, None);
        store
            .put_meta(persist::META_FAILOVER_STATE, &persist::encode(&p))
            .unwrap();
        let other_role = FailoverConfig {
            role: Role::Primary,
            ..other_partner.clone()
        };
        assert_eq!(load_stored(&store, &other_role, false).unwrap().0, None);
        // With several relationships each has its own keys.
        let (b, c) = (fo("b", &[1]), fo("c", &[2]));
        store
            .put_meta(
                &meta_key(persist::META_FAILOVER_STATE, &b, true),
                &persist::encode(&p),
            )
            .unwrap();
        assert_eq!(load_stored(&store, &b, true).unwrap().0, Some(p));
        assert_eq!(load_stored(&store, &c, true).unwrap().0, None);
    }
}
