//! The I/O edge: worker threads, sockets, the group committer thread, the reclaim timer and
//! the metrics they report. Everything with a clock, a socket or a disk lives here.
//!
//! A datapath is anything that implements [`Datapath`]: the UDP socket path ([`udp`]) today,
//! AF_XDP beside it later, without touching the engine.

pub mod partner;
pub mod udp;

use crate::store::{self, AfterCommit, CommitJob, CommitStats, Store, StoreError};
use crossbeam_channel::{Receiver, Sender};
use partner::PolicyCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_core::config::Config;
use tandem_core::engine::{Engine, Outcome, Policy, Received, Scratch};
use tandem_core::lease::{Lease, LeaseState};
use tandem_core::pool::Allocator;
use tracing::{debug, error, info, warn};
use udp::{ListenSpec, UdpPath};

/// Largest DHCPv6 datagram accepted; larger ones are dropped as oversized.
pub const DATAGRAM_LEN_MAX: usize = 4096;
/// Commit jobs that may wait for the group committer before workers block (backpressure).
pub const COMMIT_QUEUE_MAX: usize = 65_536;
/// How often workers report their counters and the committer logs its own.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

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
    /// Receiving interface index (0 when unknown).
    pub ifindex: u32,
    /// Where the datapath keeps the bytes (see [`Datapath::datagram`]).
    pub slot: usize,
}

/// A way to receive DHCPv6 datagrams and send replies, in batches where the OS allows.
pub trait Datapath: Send {
    /// Receives a batch: blocks briefly for the first datagram, then takes what is queued.
    /// Fills `metas` (cleared first) and returns how many; 0 after a timeout.
    fn recv_batch(&mut self, metas: &mut Vec<RxMeta>) -> io::Result<usize>;
    /// The bytes of a datagram of the last batch.
    fn datagram(&self, meta: &RxMeta) -> &[u8];
    /// Sends replies in as few calls as possible; returns how many leading ones went out.
    fn send_batch(&self, replies: &[PendingReply]) -> usize;
    /// Sends one reply.
    fn send(&self, to: SocketAddrV6, bytes: &[u8]) -> io::Result<()>;
}

/// Counters one worker keeps; values merged at the edge, never shared while counting.
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies sent straight away (nothing to store).
    pub replied_now: u64,
    /// Replies handed to the group committer.
    pub replied_after_commit: u64,
    /// Send failures.
    pub send_errors: u64,
    /// Dropped datagrams by reason label.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl WorkerStats {
    fn merge(&mut self, o: &WorkerStats) {
        self.received += o.received;
        self.replied_now += o.replied_now;
        self.replied_after_commit += o.replied_after_commit;
        self.send_errors += o.send_errors;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k).or_default() += v;
        }
    }
}

/// A reply waiting for its leases to be durable.
pub struct PendingReply {
    /// Index into the committer's socket list.
    pub socket: usize,
    /// Destination.
    pub to: SocketAddrV6,
    /// The reply bytes.
    pub bytes: Vec<u8>,
}

/// Sends replies once the group committer made their leases durable.
pub struct ReplySink {
    sockets: Vec<UdpSocket>,
    send_errors: u64,
    /// The failover partner thread, told of every durable change.
    partner: Option<partner::PartnerNotifier>,
}

impl AfterCommit<PendingReply> for ReplySink {
    fn written(&mut self, leases: &mut dyn Iterator<Item = &Lease>) {
        if let Some(p) = &self.partner {
            p.committed(
                leases
                    .filter(|l| l.state != LeaseState::Offered)
                    .cloned()
                    .collect(),
            );
        }
    }
    fn durable(&mut self, released: &mut Vec<PendingReply>) {
        // One sendmmsg per socket for the whole batch instead of a sendto per reply; under
        // load a group commit releases about a hundred replies at once.
        released.sort_by_key(|r| r.socket);
        let mut start = 0;
        while start < released.len() {
            let sock = released[start].socket;
            let end = start
                + released[start..]
                    .iter()
                    .take_while(|r| r.socket == sock)
                    .count();
            let sent = udp::send_batch(&self.sockets[sock], &released[start..end]);
            for r in &released[start + sent..end] {
                if let Err(e) = udp::send_to(&self.sockets[sock], r.to, &r.bytes) {
                    self.send_errors += 1;
                    debug!(to = %r.to, error = %e, "reply send failed");
                }
            }
            start = end;
        }
        released.clear();
    }
    fn failed(&mut self, dropped: &mut Vec<PendingReply>, e: &StoreError) {
        error!(error = %e, replies = dropped.len(), "commit failed; replies withheld (clients will retransmit)");
        dropped.clear();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn log_lease(l: &Lease, via: &str) {
    let what = match l.state {
        LeaseState::Active if via == "Renew" || via == "Rebind" => "lease renewed",
        LeaseState::Active => "lease granted",
        LeaseState::Released => "lease released",
        LeaseState::Declined => "lease declined",
        LeaseState::Expired => "lease expired",
        LeaseState::Offered => "lease offered",
    };
    info!(
        lease = %format_args!("{}/{}", l.addr, l.prefix_len),
        duid = %hex(&l.duid),
        iaid = l.iaid,
        valid_secs = l.valid_secs,
        subnet = l.subnet_id,
        via,
        "{what}"
    );
}

/// Everything one worker thread needs.
struct Worker<D: Datapath> {
    path: D,
    socket_index: usize,
    engine: Arc<Engine>,
    policy: Arc<PolicyCell>,
    commits: Sender<CommitJob<PendingReply>>,
    stats_tx: Sender<(usize, WorkerStats)>,
    stop: Arc<AtomicBool>,
    id: usize,
}

impl<D: Datapath> Worker<D> {
    fn run(mut self) {
        let mut metas: Vec<RxMeta> = Vec::with_capacity(udp::RECV_BATCH_MAX);
        let mut now_out: Vec<PendingReply> = Vec::with_capacity(udp::RECV_BATCH_MAX);
        let mut reply = Vec::with_capacity(1500);
        let mut scratch = Scratch::default();
        let mut writes: Vec<Lease> = Vec::new();
        let mut stats = WorkerStats::default();
        let mut names: HashMap<u32, Option<String>> = HashMap::new();
        let mut last_report = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if last_report.elapsed() >= STATS_INTERVAL / 2 {
                last_report = Instant::now();
                let _ = self.stats_tx.try_send((self.id, stats.clone()));
            }
            match self.path.recv_batch(&mut metas) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(worker = self.id, error = %e, "receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let now = now_secs();
            let policy = self.policy.get();
            for meta in &metas {
                stats.received += 1;
                if meta.truncated {
                    *stats.dropped.entry("oversized").or_default() += 1;
                    debug!(src = %meta.src, len = meta.len, "dropped: datagram larger than {DATAGRAM_LEN_MAX} bytes");
                    continue;
                }
                let interface = if meta.ifindex == 0 {
                    None
                } else {
                    names
                        .entry(meta.ifindex)
                        .or_insert_with(|| {
                            nix::net::if_::if_indextoname(meta.ifindex)
                                .ok()
                                .and_then(|c| c.into_string().ok())
                        })
                        .as_deref()
                };
                let rx = Received {
                    now_secs: now,
                    src: meta.src,
                    multicast: meta.multicast,
                    interface,
                    bytes: self.path.datagram(meta),
                };
                writes.clear();
                match self
                    .engine
                    .handle_with(&policy, &rx, &mut reply, &mut scratch, &mut writes)
                {
                    Outcome::Reply { answered } => {
                        let pending = PendingReply {
                            socket: self.socket_index,
                            to: meta.src,
                            bytes: reply.clone(),
                        };
                        if writes.is_empty() {
                            now_out.push(pending);
                            continue;
                        }
                        if tracing::enabled!(tracing::Level::INFO) {
                            let via = format!("{answered:?}");
                            writes.iter().for_each(|l| log_lease(l, &via));
                        }
                        stats.replied_after_commit += 1;
                        let job = CommitJob {
                            writes: std::mem::take(&mut writes),
                            then: Some(pending),
                            announce: true,
                        };
                        if self.commits.send(job).is_err() {
                            return;
                        }
                    }
                    Outcome::Dropped(d) => {
                        *stats.dropped.entry(d.label()).or_default() += 1;
                        debug!(src = %meta.src, reason = %d, "dropped");
                    }
                }
            }
            // Replies that needed no commit leave together, after the batch.
            let sent = self.path.send_batch(&now_out);
            stats.replied_now += sent as u64;
            for r in &now_out[sent..] {
                match self.path.send(r.to, &r.bytes) {
                    Ok(()) => stats.replied_now += 1,
                    Err(e) => {
                        stats.send_errors += 1;
                        debug!(to = %r.to, error = %e, "reply send failed");
                    }
                }
            }
            now_out.clear();
        }
        let _ = self.stats_tx.try_send((self.id, stats));
    }
}

/// Why the server could not start. Each maps to an exit code (see `tandem serve --help`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A socket could not be opened, bound or joined.
    #[error("socket: {0}")]
    Socket(io::Error),
    /// A thread could not be started.
    #[error("thread: {0}")]
    Thread(io::Error),
    /// The failover partner link could not be set up.
    #[error("{0}")]
    Failover(#[from] partner::PartnerStartError),
}

/// A running server; [`Server::shutdown`] stops it cleanly.
pub struct Server {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    committer: Option<JoinHandle<CommitStats>>,
    reclaimer: Option<JoinHandle<()>>,
    reporter: Option<JoinHandle<()>>,
    commits: Option<Sender<CommitJob<PendingReply>>>,
    engine: Arc<Engine>,
    partner: Option<partner::PartnerHandle>,
}

fn make_duid() -> Vec<u8> {
    // DUID-UUID (RFC 6355): type 4 followed by 16 random octets.
    let mut d = vec![0u8, 4];
    let mut r = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut r))
        .is_err()
    {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        r = (t ^ ((std::process::id() as u128) << 64)).to_be_bytes();
    }
    r[6] = (r[6] & 0x0f) | 0x40; // UUID version 4
    r[8] = (r[8] & 0x3f) | 0x80; // RFC 4122 variant
    d.extend_from_slice(&r);
    d
}

fn listeners(cfg: &Config) -> Vec<ListenSpec> {
    let mut v: Vec<ListenSpec> = cfg
        .server
        .listen
        .iter()
        .copied()
        .map(ListenSpec::Unicast)
        .collect();
    if !cfg.server.interfaces.is_empty() {
        v.push(ListenSpec::Multicast {
            port: cfg.server.port,
            interfaces: cfg.server.interfaces.clone(),
        });
    }
    v
}

impl Server {
    /// Opens the store, restores every lease, opens every socket and starts the threads. Any
    /// failure happens before a single packet is answered.
    pub fn start(cfg: Config) -> Result<Server, StartError> {
        let cfg = Arc::new(cfg);
        let store = Arc::new(Store::open(
            &cfg.server.data_dir,
            cfg.server.map_size_mib,
            cfg.server.sync,
        )?);
        let duid = store.server_duid_or_create(make_duid)?;
        info!(data_dir = %cfg.server.data_dir.display(), duid = %hex(&duid), sync = cfg.server.sync, "store open");
        let alloc = Arc::new(match cfg.failover {
            Some(_) => Allocator::with_failover(&cfg.subnets),
            None => Allocator::new(&cfg.subnets),
        });
        let mut orphans = 0u64;
        let t0 = Instant::now();
        let st = store.load_leases(
            |l| {
                if let Err(l) = alloc.restore(l) {
                    orphans += 1;
                    warn!(lease = %format_args!("{}/{}", l.addr, l.prefix_len), subnet = l.subnet_id, "stored lease fits no configured pool; kept on disk, not served");
                }
            },
            |k, e| error!(key = %hex(k), error = %e, "corrupt lease record skipped"),
        )?;
        alloc.finish_restore();
        info!(
            loaded = st.loaded,
            corrupt = st.corrupt,
            orphans,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "leases restored"
        );
        for (subnet, pool, u) in alloc.usage() {
            info!(subnet, pool = %format_args!("{}/{}", std::net::Ipv6Addr::from(pool.first), pool.resource_len), total = %u.total, active = u.active, declined = u.declined, "pool");
        }

        let workers = match cfg.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let specs = listeners(&cfg);
        for spec in &specs {
            UdpPath::check_free(spec).map_err(StartError::Socket)?;
        }
        let mut paths = Vec::new();
        for spec in &specs {
            for w in 0..workers {
                paths.push(UdpPath::open(spec, w, workers).map_err(StartError::Socket)?);
            }
            info!(listen = %spec, workers, "listening");
        }
        let sockets = paths
            .iter()
            .map(|p| p.sender())
            .collect::<io::Result<Vec<_>>>()
            .map_err(StartError::Socket)?;

        let engine = Arc::new(Engine::new(cfg.clone(), duid.clone().into(), alloc.clone()));
        let policy = Arc::new(PolicyCell::new(Policy::STANDALONE));
        let (commit_tx, commit_rx) = crossbeam_channel::bounded(COMMIT_QUEUE_MAX);
        let partner = match cfg.failover {
            Some(_) => Some(partner::start(partner::PartnerSetup {
                config: cfg.clone(),
                duid: duid.into(),
                store: store.clone(),
                alloc: alloc.clone(),
                policy: policy.clone(),
                commits: commit_tx.clone(),
            })?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (stats_tx, stats_rx) = crossbeam_channel::bounded(1024);

        let sink = ReplySink {
            sockets,
            send_errors: 0,
            partner: partner.as_ref().map(|p| p.notifier()),
        };
        let committer = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || run_committer(store, commit_rx, sink))
            .map_err(StartError::Thread)?;

        // With a partner, the partner thread reclaims (the partner must hear of it).
        let reclaimer = match partner {
            Some(_) => None,
            None => {
                let (alloc, tx, stop) = (alloc.clone(), commit_tx.clone(), stop.clone());
                let every = Duration::from_millis(cfg.server.reclaim_interval_ms);
                Some(
                    std::thread::Builder::new()
                        .name("reclaim".into())
                        .spawn(move || run_reclaimer(&alloc, &tx, &stop, every))
                        .map_err(StartError::Thread)?,
                )
            }
        };
        let reporter = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("stats".into())
                .spawn(move || run_reporter(stats_rx, &stop))
                .map_err(StartError::Thread)?
        };

        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut handles = Vec::new();
        for (i, path) in paths.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[(i % workers) % cores.len()]);
            let w = Worker {
                path,
                socket_index: i,
                engine: engine.clone(),
                policy: policy.clone(),
                commits: commit_tx.clone(),
                stats_tx: stats_tx.clone(),
                stop: stop.clone(),
                id: i,
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || {
                        if let Some(c) = core {
                            core_affinity::set_for_current(c);
                        }
                        w.run()
                    })
                    .map_err(StartError::Thread)?,
            );
        }
        Ok(Server {
            stop,
            workers: handles,
            committer: Some(committer),
            reclaimer,
            reporter: Some(reporter),
            commits: Some(commit_tx),
            engine,
            partner,
        })
    }

    /// The engine (tests read the lease table through it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops receiving, lets the committer write and answer everything queued, and returns.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.reclaimer.take() {
            let _ = h.join();
        }
        // The partner thread queues commits too: stop it before the committer drains.
        if let Some(p) = self.partner.take() {
            p.shutdown();
        }
        self.commits.take();
        if let Some(h) = self.committer.take()
            && let Ok(st) = h.join()
        {
            info!(
                commits = st.commits,
                leases = st.leases,
                replies = st.jobs,
                failures = st.failures,
                "committer stopped"
            );
        }
        if let Some(h) = self.reporter.take() {
            let _ = h.join();
        }
    }
}

fn run_committer(
    store: Arc<Store>,
    rx: Receiver<CommitJob<PendingReply>>,
    mut sink: ReplySink,
) -> CommitStats {
    let mut last = CommitStats::default();
    let mut last_at = Instant::now();
    store::run_group_commit(&store, rx, &mut sink, Duration::from_millis(500), |st| {
        if last_at.elapsed() >= STATS_INTERVAL {
            if st.commits != last.commits {
                let per_commit =
                    (st.leases - last.leases) as f64 / (st.commits - last.commits).max(1) as f64;
                info!(
                    commits = st.commits - last.commits,
                    leases = st.leases - last.leases,
                    leases_per_commit = format_args!("{per_commit:.1}"),
                    failures = st.failures,
                    "group commit"
                );
            }
            last = *st;
            last_at = Instant::now();
        }
    })
}

fn run_reclaimer(
    alloc: &Allocator,
    tx: &Sender<CommitJob<PendingReply>>,
    stop: &AtomicBool,
    every: Duration,
) {
    let tick = every.min(Duration::from_millis(200));
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        let mut writes = Vec::new();
        let n = alloc.reclaim(now_secs(), &mut writes);
        if n > 0 {
            for l in &writes {
                debug!(lease = %format_args!("{}/{}", l.addr, l.prefix_len), duid = %hex(&l.duid), state = %l.state, "reclaimed");
            }
            info!(
                changed = n,
                stored = writes.len(),
                "reclaimed leases whose time was up"
            );
        }
        if !writes.is_empty()
            && tx
                .send(CommitJob {
                    writes,
                    then: None,
                    announce: true,
                })
                .is_err()
        {
            break;
        }
    }
}

fn run_reporter(rx: Receiver<(usize, WorkerStats)>, stop: &AtomicBool) {
    let mut latest: HashMap<usize, WorkerStats> = HashMap::new();
    let mut last_total = WorkerStats::default();
    let mut last_log = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Ok((id, s)) = rx.try_recv() {
            latest.insert(id, s);
        }
        if last_log.elapsed() >= STATS_INTERVAL || stopping {
            last_log = Instant::now();
            let mut total = WorkerStats::default();
            latest.values().for_each(|s| total.merge(s));
            if total.received != last_total.received {
                let dropped: u64 = total.dropped.values().sum();
                info!(
                    received = total.received - last_total.received,
                    replied = (total.replied_now + total.replied_after_commit) - (last_total.replied_now + last_total.replied_after_commit),
                    dropped_total = dropped,
                    drops = ?total.dropped,
                    "traffic"
                );
            }
            last_total = total;
        }
        if stopping {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
