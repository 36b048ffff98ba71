//! The server: opens the store, restores the lease table, opens the sockets and starts the
//! committer, the reclaimer or the partner thread, the reporter and the workers; and stops
//! them in order.

use super::audit::AuditLog;
use super::bulk_leasequery;
use super::commit::{ReplyOut, ReplySink, run_committer};
use super::control;
use super::metrics::{MetricsHttp, MetricsHub};
use super::partner::{self, PolicyCell};
use super::reclaim::run_reclaimer;
use super::reload::{EngineCell, Reloader, SetLogLevel};
use super::stats::{run_metrics_http, run_reporter};
use super::udp::{ListenSpec, UdpPath};
use super::worker::Worker;
use super::xdp::program::{XdpAttachMode, XdpProgram};
use super::xdp::{Interface, XdpPath};
use super::{COMMIT_QUEUE_MAX, PendingReply, hex};
use crate::store::{CommitJob, CommitStats, Store, StoreError};
use crossbeam_channel::Sender;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_core::config::Config;
use tandem_core::engine::Engine;
use tandem_core::pool::Allocator;
use tracing::{error, info, warn};

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
    /// The AF_XDP datapath could not be set up (`--datapath xdp` never falls back silently).
    #[error("--datapath xdp: {0}")]
    Xdp(String),
    /// The audit log could not be opened.
    #[error("server.audit_log {}: {source}", path.display())]
    Audit {
        /// The configured path.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Which datapath the workers receive and send on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatapathKind {
    /// UDP sockets: works everywhere.
    #[default]
    Udp,
    /// AF_XDP sockets on every receive queue of server.interfaces, fed by the XDP program; the
    /// UDP listeners stay open for what the program passes to the kernel.
    Xdp(XdpAttachMode),
}

/// A worker's datapath (one per worker, for the server's life: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyPath {
    /// A UDP socket.
    Udp(UdpPath),
    /// An AF_XDP socket.
    Xdp(XdpPath),
}

impl super::Datapath for AnyPath {
    fn recv_batch(&mut self, metas: &mut Vec<super::RxMeta>) -> io::Result<usize> {
        match self {
            AnyPath::Udp(p) => p.recv_batch(metas),
            AnyPath::Xdp(p) => p.recv_batch(metas),
        }
    }
    fn datagram(&self, meta: &super::RxMeta) -> &[u8] {
        match self {
            AnyPath::Udp(p) => p.datagram(meta),
            AnyPath::Xdp(p) => p.datagram(meta),
        }
    }
    fn send_batch(&mut self, replies: &[PendingReply]) -> usize {
        match self {
            AnyPath::Udp(p) => p.send_batch(replies),
            AnyPath::Xdp(p) => p.send_batch(replies),
        }
    }
    fn send(&mut self, reply: &PendingReply) -> io::Result<()> {
        match self {
            AnyPath::Udp(p) => p.send(reply),
            AnyPath::Xdp(p) => p.send(reply),
        }
    }
    fn take_drops(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        match self {
            AnyPath::Udp(p) => p.take_drops(add),
            AnyPath::Xdp(p) => p.take_drops(add),
        }
    }
    fn take_handoffs(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        match self {
            AnyPath::Udp(p) => p.take_handoffs(add),
            AnyPath::Xdp(p) => p.take_handoffs(add),
        }
    }
    fn take_kernel_routed(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        match self {
            AnyPath::Udp(p) => p.take_kernel_routed(add),
            AnyPath::Xdp(p) => p.take_kernel_routed(add),
        }
    }
}

/// How often the XDP programs' maps of this host's addresses are brought up to date (and their
/// counters published to the metrics).
pub const XDP_ADDRESSES_REFRESH: Duration = Duration::from_secs(2);

fn lock_programs(
    p: &std::sync::Mutex<Vec<XdpProgram>>,
) -> std::sync::MutexGuard<'_, Vec<XdpProgram>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Brings every program's map of this host's addresses up to date, and publishes the programs'
/// counters to the metrics hub.
fn sync_xdp_addresses(programs: &std::sync::Mutex<Vec<XdpProgram>>, hub: &MetricsHub) {
    let mut counts = Vec::new();
    let host = super::xdp::host_addresses();
    for p in lock_programs(programs).iter_mut() {
        let (redirected, passed) = p.counts();
        counts.push(super::metrics::XdpCounts {
            interface: p.interface().to_string(),
            mode: p.mode,
            redirected,
            passed,
        });
        let now = super::xdp::program::local_addresses(&host, p.ifindex);
        match p.sync_addresses(&now) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                changed = n,
                addresses = now.len(),
                "XDP address map updated"
            ),
            Err(e) => warn!(error = %e, "XDP address map not updated"),
        }
    }
    hub.publish_xdp(counts);
}

/// The programs attached, the sockets opened by [`open_xdp`], and the next-hop table their
/// replies follow with the receiving end of its lookups ([`super::xdp::next_hop::run`]).
type XdpOpened = (
    Vec<XdpProgram>,
    Vec<(XdpPath, super::xdp::ReturnPath)>,
    NextHopTable,
);

/// The AF_XDP paths' next-hop table and the receiving end of their lookups.
type NextHopTable = (
    Arc<super::xdp::next_hop::NextHops>,
    crossbeam_channel::Receiver<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
);

/// The core each worker thread is pinned to: worker `i` (its path's index) on
/// `cores[(i % workers) % cores.len()]`, the cores this process may run on (its affinity mask:
/// `taskset` or a cgroup's cpuset narrows them); none when they cannot be read.
struct WorkerCores {
    cores: Vec<core_affinity::CoreId>,
    workers: usize,
}

impl WorkerCores {
    fn core_of(&self, path_index: usize) -> Option<core_affinity::CoreId> {
        (!self.cores.is_empty()).then(|| self.cores[(path_index % self.workers) % self.cores.len()])
    }
}

/// Attaches the XDP program to every interface of `cfg` and opens an AF_XDP socket per receive
/// queue. `fallback` is the UDP socket on the server port (for what a frame cannot carry);
/// `first_path_index` is the index the first AF_XDP path will have among all paths (the UDP
/// ones come first), for `cores`.
fn open_xdp(
    cfg: &Config,
    mode: XdpAttachMode,
    fallback: &std::net::UdpSocket,
    cores: &WorkerCores,
    first_path_index: usize,
) -> Result<XdpOpened, StartError> {
    if !super::xdp::program::built() {
        return Err(StartError::Xdp(
            super::xdp::program::ProgramError::NotBuilt.to_string(),
        ));
    }
    if cfg.server.interfaces.is_empty() {
        return Err(StartError::Xdp(
            "no interface to attach to: set server.interfaces or --interface".into(),
        ));
    }
    let mut programs = Vec::new();
    let mut paths = Vec::new();
    let mut ifaces = Vec::new();
    let (hops, asked) = super::xdp::next_hop::NextHops::new();
    for name in &cfg.server.interfaces {
        ifaces.push(Arc::new(
            Interface::lookup(name).map_err(|e| StartError::Xdp(e.to_string()))?,
        ));
    }
    // Whether each driver advertises AF_XDP zero-copy (asked once per interface).
    let zero_copy_drivers: Vec<bool> = ifaces
        .iter()
        .map(|i| super::xdp::driver_zero_copy(i.index))
        .collect();
    // The UMEMs are locked memory: without CAP_IPC_LOCK they count against RLIMIT_MEMLOCK.
    let needed: u64 = ifaces
        .iter()
        .zip(&zero_copy_drivers)
        .map(|(i, &zc)| super::xdp::umem_budget(i, i.rx_queues as usize, zc))
        .sum();
    let limit = super::xdp::raise_memlock(needed);
    tracing::debug!(needed, limit, "RLIMIT_MEMLOCK for the UMEMs");
    for (iface, zero_copy_driver) in ifaces.into_iter().zip(zero_copy_drivers) {
        let name = &iface.name;
        if !iface.uppers.is_empty() {
            return Err(StartError::Xdp(format!(
                "{name} carries {} (VLAN or other upper devices): their traffic reaches {name} \
                 too, untagged where the NIC strips VLAN tags, and would be answered as {name}'s; \
                 list the interfaces the clients are on instead (the program runs in generic mode \
                 there), or use --datapath udp",
                iface.uppers.join(", ")
            )));
        }
        // A driver that strips VLAN tags before XDP would make tagged clients look untagged.
        let vlan = match super::xdp::features::vlan_stripping(name) {
            Ok(found) => {
                if let Some(why) = super::xdp::features::vlan_refusal(name, &found) {
                    return Err(StartError::Xdp(why));
                }
                if found.driver == "veth" {
                    info!(interface = %name, "veth: frames a VLAN device on the peer sends reach the XDP program untagged unless the peer's tx-vlan-offload is off (ethtool -K PEER txvlan off)");
                }
                format!(
                    "{} ({})",
                    found.driver,
                    if found.active.is_empty() {
                        "no VLAN stripping".into()
                    } else {
                        found.active.join(", ")
                    }
                )
            }
            Err(e) => {
                warn!(interface = %name, error = %e, "could not read the driver's VLAN offloads (ethtool ioctls); make sure rx-vlan-offload is off");
                "unknown".into()
            }
        };
        if iface.tx_queues < iface.rx_queues {
            return Err(StartError::Xdp(format!(
                "{name} has {} receive but {} transmit queues: the socket of a receive queue \
                 without a transmit queue of the same number cannot send (set them equal: \
                 ethtool -L {name} combined N)",
                iface.rx_queues, iface.tx_queues
            )));
        }
        let mut prog = XdpProgram::attach_to(&iface, cfg.server.port..=cfg.server.port, mode)
            .map_err(|e| StartError::Xdp(e.to_string()))?;
        let zero_copy = prog.zero_copy(zero_copy_driver);
        let mut zero_copy_queues = 0;
        let first = paths.len();
        for q in 0..iface.rx_queues {
            let fb = fallback.try_clone().map_err(StartError::Socket)?;
            let (path, back, zc) = XdpPath::open(iface.clone(), q, fb, zero_copy, hops.clone())
                .map_err(|e| StartError::Xdp(e.to_string()))?;
            zero_copy_queues += zc as u32;
            prog.register(q, path.socket_fd())
                .map_err(|e| StartError::Xdp(e.to_string()))?;
            paths.push((path, back));
        }
        // What one relay sends arrives on one queue: the interface's workers share it out,
        // among those that can run at the same time (on different cores).
        let mine = &mut paths[first..];
        let member_cores: Vec<Option<usize>> = (0..mine.len())
            .map(|i| cores.core_of(first_path_index + first + i).map(|c| c.id))
            .collect();
        if mine.len() > 1 {
            let wakes: Vec<_> = mine.iter().map(|(p, _)| p.wake_fd()).collect();
            let group = super::xdp::spread::group(&wakes, &member_cores);
            for ((p, _), s) in mine.iter_mut().zip(group) {
                p.join(s);
            }
            if member_cores[0].is_some() && member_cores.iter().all(|c| *c == member_cores[0]) {
                info!(interface = %name, queues = mine.len(), "the interface's workers share one CPU: each answers what its queue receives (no handoffs)");
            }
        }
        let bind = match zero_copy_queues {
            0 => "copy",
            n if n == iface.rx_queues => "zero-copy",
            _ => "zero-copy on some queues, copy on the others",
        };
        info!(interface = %name, queues = iface.rx_queues, mode = prog.mode, bind, driver = %vlan, port = cfg.server.port, "AF_XDP datapath attached");
        programs.push(prog);
    }
    Ok((programs, paths, (hops, asked)))
}

/// A running server; [`Server::shutdown`] stops it cleanly.
pub struct Server {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    committer: Option<JoinHandle<CommitStats>>,
    /// Set when the committer gave up on a store whose commits kept failing
    /// ([`crate::store::CommitRetry`]); it then raised SIGTERM to stop the server.
    store_failed: Arc<AtomicBool>,
    reclaimer: Option<JoinHandle<()>>,
    reporter: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    /// The Bulk Leasequery accept thread (it waits for its connections).
    bulk_lq: Option<JoinHandle<()>>,
    commits: Option<Sender<CommitJob<PendingReply>>>,
    engines: Arc<EngineCell>,
    reloader: Arc<Reloader>,
    partner: Option<partner::PartnerHandle>,
    /// The XDP programs, detached when dropped (after the workers stopped).
    xdp_programs: Arc<std::sync::Mutex<Vec<XdpProgram>>>,
    /// Keeps the programs' maps of this host's addresses current.
    xdp_addresses: Option<JoinHandle<()>>,
    /// Looks up the next hops of AF_XDP replies to routed senders.
    xdp_routes: Option<JoinHandle<()>>,
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
    /// failure happens before a single packet is answered. `read_config` reads the
    /// configuration again for a reload (None: reload refused); `set_log_level` changes the
    /// log filter then. If the store's commits keep failing, the committer raises SIGTERM on
    /// the process ([`Server::store_failed`]): the caller blocks SIGTERM and waits for it (as
    /// `tandem serve` does), or the default action ends the process.
    pub fn start(
        cfg: Config,
        read_config: Option<Box<dyn Fn() -> Result<Config, String> + Send + Sync>>,
        set_log_level: Option<SetLogLevel>,
        datapath: DatapathKind,
    ) -> Result<Server, StartError> {
        let cfg = Arc::new(cfg);
        let store = Arc::new(Store::open(
            &cfg.server.data_dir,
            cfg.server.map_size_mib,
            cfg.server.sync,
        )?);
        let duid = match &cfg.server.duid {
            // Configured (e.g. the DUID of the Kea server this one replaces): clients renewing
            // with it in their Server Identifier are answered.
            Some(d) => d.clone(),
            None => store.server_duid_or_create(make_duid)?,
        };
        info!(data_dir = %cfg.server.data_dir.display(), duid = %hex(&duid), sync = cfg.server.sync, "store open");
        let alloc = Arc::new(if cfg.has_failover() {
            Allocator::with_failover(&cfg.subnets)
        } else {
            Allocator::new(&cfg.subnets)
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
        let cores = WorkerCores {
            cores: core_affinity::get_core_ids().unwrap_or_default(),
            workers,
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
        let mut outs = paths
            .iter()
            .map(|p| p.sender().map(ReplyOut::Udp))
            .collect::<io::Result<Vec<_>>>()
            .map_err(StartError::Socket)?;
        let mut paths: Vec<AnyPath> = paths.into_iter().map(AnyPath::Udp).collect();
        let mut xdp_programs = Vec::new();
        let mut next_hops = None;
        if let DatapathKind::Xdp(mode) = datapath {
            // The UDP listener on the server port (joined to ff02::1:2, so the NIC's multicast
            // filter lets the group in) answers what the program passes to the kernel, and
            // sends what a frame cannot carry.
            let fallback = match specs
                .iter()
                .position(|s| matches!(s, ListenSpec::Multicast { .. }))
            {
                Some(i) => match &paths[i * workers] {
                    AnyPath::Udp(p) => p.sender().map_err(StartError::Socket)?,
                    AnyPath::Xdp(_) => unreachable!("UDP paths come first"),
                },
                None => {
                    return Err(StartError::Xdp(
                        "no interface to attach to: set server.interfaces or --interface".into(),
                    ));
                }
            };
            let (programs, xsks, hops) = open_xdp(&cfg, mode, &fallback, &cores, paths.len())?;
            for (path, back) in xsks {
                outs.push(ReplyOut::Xdp(back));
                paths.push(AnyPath::Xdp(path));
            }
            xdp_programs = programs;
            next_hops = Some(hops);
        }
        let xdp_programs = Arc::new(std::sync::Mutex::new(xdp_programs));

        let metrics_http = match cfg.server.metrics_listen {
            Some(addr) => {
                let h = MetricsHttp::bind(addr).map_err(|e| {
                    StartError::Socket(io::Error::new(
                        e.kind(),
                        format!("server.metrics_listen {addr}: {e}"),
                    ))
                })?;
                let at = h.local_addr().unwrap_or(addr);
                info!(listen = %at, "metrics at http://{at}/metrics");
                Some(h)
            }
            None => None,
        };
        let hub = Arc::new(MetricsHub::new(alloc.clone(), paths.len()));
        let audit = match &cfg.server.audit_log {
            Some(p) => {
                let a = AuditLog::open(p.clone()).map_err(|e| StartError::Audit {
                    path: p.clone(),
                    source: e,
                })?;
                info!(path = %p.display(), "audit log on");
                Some(Arc::new(a))
            }
            None => None,
        };
        let duid: Box<[u8]> = duid.into();
        let engines = Arc::new(EngineCell::new(Arc::new(Engine::new(
            cfg.clone(),
            duid.clone(),
            alloc.clone(),
        ))));
        let reloader = Arc::new(Reloader::new(
            read_config.unwrap_or_else(|| {
                Box::new(|| {
                    Err(
                        "this server was started without a way to read its configuration again"
                            .to_string(),
                    )
                })
            }),
            cfg.clone(),
            engines.clone(),
            alloc.clone(),
            duid,
            set_log_level,
        ));
        // A reload that adds pools replaces the lease table: it loads what the store kept
        // for them, and the metrics read the new one.
        reloader.keep_store_and_metrics(store.clone(), hub.clone());
        if let Some(a) = &audit {
            reloader.reopen_on_reload(a.clone());
        }
        let policy = Arc::new(PolicyCell::new(cfg.relationships.len()));
        let (commit_tx, commit_rx) = crossbeam_channel::bounded(COMMIT_QUEUE_MAX);
        let partner = match cfg.has_failover() {
            true => Some(partner::start(partner::PartnerSetup {
                config: cfg.clone(),
                store: store.clone(),
                alloc: alloc.clone(),
                policy: policy.clone(),
                commits: commit_tx.clone(),
                hub: hub.clone(),
                reloader: reloader.clone(),
                audit: audit.clone(),
            })?),
            false => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (stats_tx, stats_rx) = crossbeam_channel::bounded(1024);
        // With a partner, the partner thread serves the control socket (it owns the state).
        let control = match partner {
            Some(_) => None,
            None => {
                let path = cfg.server.control_socket_path();
                let listener = control::bind_control(&path).map_err(|e| {
                    StartError::Socket(io::Error::new(
                        e.kind(),
                        format!("control socket {}: {e}", path.display()),
                    ))
                })?;
                let ctx = control::ControlCtx {
                    cfg: cfg.clone(),
                    alloc: alloc.clone(),
                    store: store.clone(),
                    hub: hub.clone(),
                    reloader: reloader.clone(),
                    policies: vec![tandem_core::engine::Policy::STANDALONE],
                };
                let stop = stop.clone();
                Some(
                    std::thread::Builder::new()
                        .name("control".into())
                        .spawn(move || control::run_control(listener, path, ctx, &stop))
                        .map_err(StartError::Thread)?,
                )
            }
        };

        // Bulk Leasequery (RFC 5460) over TCP, where configured.
        let bulk_lq = if cfg.leasequery.bulk_listen.is_empty() {
            None
        } else {
            let listeners =
                bulk_leasequery::bind(&cfg.leasequery.bulk_listen).map_err(StartError::Socket)?;
            info!(listen = ?cfg.leasequery.bulk_listen, "bulk leasequery (TCP) on");
            let ctx = bulk_leasequery::BulkCtx {
                engines: engines.clone(),
                policy: policy.clone(),
                stop: stop.clone(),
                connections_max: cfg.leasequery.bulk_connections_max as usize,
            };
            Some(
                std::thread::Builder::new()
                    .name("bulk-lq-accept".into())
                    .spawn(move || bulk_leasequery::run(listeners, ctx))
                    .map_err(StartError::Thread)?,
            )
        };

        let sink = ReplySink {
            outs,
            send_errors: 0,
            sent: 0,
            partner: partner.as_ref().map(|p| p.notifier()),
            reply_us: Default::default(),
            hub: hub.clone(),
            audit: audit.clone(),
        };
        let store_refusing = Arc::new(AtomicBool::new(false));
        let reclaim_store = store.clone();
        let store_failed = Arc::new(AtomicBool::new(false));
        let committer = {
            let refusing = store_refusing.clone();
            let failed = store_failed.clone();
            let interval = Duration::from_micros(cfg.server.commit_interval_us);
            std::thread::Builder::new()
                .name("commit".into())
                .spawn(move || {
                    let st = run_committer(store, commit_rx, sink, interval, refusing);
                    if st.gave_up {
                        // The main thread waits for signals: this one stops the server the
                        // way an operator's would, and it exits with the store's code.
                        failed.store(true, Ordering::SeqCst);
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::this(),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                    st
                })
        }
        .map_err(StartError::Thread)?;

        // With a partner, the partner thread reclaims (the partner must hear of it).
        let reclaimer = match partner {
            Some(_) => None,
            None => {
                let (reloader, tx, stop) = (reloader.clone(), commit_tx.clone(), stop.clone());
                let every = Duration::from_millis(cfg.server.reclaim_interval_ms);
                let keep = cfg.server.keep_ended_secs;
                Some(
                    std::thread::Builder::new()
                        .name("reclaim".into())
                        .spawn(move || {
                            run_reclaimer(&reloader, &tx, &reclaim_store, &stop, every, keep)
                        })
                        .map_err(StartError::Thread)?,
                )
            }
        };
        let metrics = match metrics_http {
            Some(http) => {
                let (hub, stop) = (hub.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("metrics".into())
                        .spawn(move || run_metrics_http(http, hub, &stop))
                        .map_err(StartError::Thread)?,
                )
            }
            None => None,
        };
        let reporter = {
            let (stop, hub) = (stop.clone(), hub.clone());
            let nworkers = paths.len();
            let watchdog = crate::sd_notify::watchdog_interval().and_then(|every| {
                info!(every_ms = every.as_millis() as u64, "systemd watchdog on");
                crate::sd_notify::Notifier::from_env().map(|n| (n, every))
            });
            std::thread::Builder::new()
                .name("stats".into())
                .spawn(move || run_reporter(stats_rx, &stop, hub, nworkers, watchdog))
                .map_err(StartError::Thread)?
        };

        let xdp_addresses = if lock_programs(&xdp_programs).is_empty() {
            None
        } else {
            // Before the first packet: the program passes unicast to addresses not in its map.
            sync_xdp_addresses(&xdp_programs, &hub);
            let (programs, stop, hub) = (xdp_programs.clone(), stop.clone(), hub.clone());
            Some(
                std::thread::Builder::new()
                    .name("xdp-addrs".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(XDP_ADDRESSES_REFRESH);
                            sync_xdp_addresses(&programs, &hub);
                        }
                    })
                    .map_err(StartError::Thread)?,
            )
        };
        let xdp_routes = match next_hops {
            Some((hops, asked)) => {
                let stop = stop.clone();
                Some(
                    std::thread::Builder::new()
                        .name("xdp-routes".into())
                        .spawn(move || super::xdp::next_hop::run(hops, asked, &stop))
                        .map_err(StartError::Thread)?,
                )
            }
            None => None,
        };
        let mut handles = Vec::new();
        for (i, path) in paths.into_iter().enumerate() {
            let core = cores.core_of(i);
            let w = Worker {
                path,
                socket_index: i,
                engines: engines.clone(),
                policy: policy.clone(),
                commits: commit_tx.clone(),
                stats_tx: stats_tx.clone(),
                stop: stop.clone(),
                store_refusing: store_refusing.clone(),
                audit: audit.is_some(),
                id: i,
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || {
                        if let Some(c) = core
                            && !core_affinity::set_for_current(c)
                        {
                            warn!(worker = i, core = c.id, "could not pin the worker to its core; it runs wherever the scheduler puts it");
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
            store_failed,
            reclaimer,
            reporter: Some(reporter),
            metrics,
            control,
            bulk_lq,
            commits: Some(commit_tx),
            engines,
            reloader,
            partner,
            xdp_programs,
            xdp_addresses,
            xdp_routes,
        })
    }

    /// The engine in force (tests read the lease table through it).
    pub fn engine(&self) -> Arc<Engine> {
        self.engines.get()
    }

    /// Whether the committer gave up on the store (its commits kept failing): the server is
    /// stopping, and should exit with the store's exit code.
    pub fn store_failed(&self) -> bool {
        self.store_failed.load(Ordering::SeqCst)
    }

    /// What SIGHUP and `tandem ctl reload` call.
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Stops receiving, lets the committer write and answer everything queued, and returns
    /// whether the committer gave up on the store ([`Server::store_failed`]), before or
    /// during the stop.
    pub fn shutdown(mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.reclaimer.take() {
            let _ = h.join();
        }
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
        if let Some(h) = self.bulk_lq.take() {
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
        if let Some(h) = self.metrics.take() {
            let _ = h.join();
        }
        if let Some(h) = self.xdp_addresses.take() {
            let _ = h.join();
        }
        if let Some(h) = self.xdp_routes.take() {
            let _ = h.join();
        }
        for p in lock_programs(&self.xdp_programs).drain(..) {
            let (redirected, passed) = p.counts();
            info!(mode = p.mode, redirected, passed, "XDP program detached");
        }
        self.store_failed()
    }
}
