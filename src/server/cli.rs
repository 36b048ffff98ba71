//! `tandem`: the DHCPv6 server's command line.

use crate::config_file;
use crate::edge::partner::PartnerStartError;
use crate::edge::server::{Server, StartError};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};
use std::net::SocketAddrV6;
use std::path::PathBuf;
use std::process::ExitCode;
use tandem_core::config::{self, Config};
use tracing::{error, info, warn};

/// Exit code: the configuration is invalid.
const EXIT_CONFIG: u8 = 2;
/// Exit code: the data directory or store cannot be used.
const EXIT_STORE: u8 = 3;
/// Exit code: a socket could not be opened, bound or joined.
const EXIT_SOCKET: u8 = 4;
/// Exit code: any other failure to start.
const EXIT_OTHER: u8 = 1;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem: a DHCPv6 server (RFC 8415) for addresses and delegated prefixes, built for failover pairs.",
    after_help = "Exit codes: 0 clean stop, 1 other failure, 2 bad configuration, 3 data dir or store unusable (also when commits fail for 10 s while serving), 4 socket error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM. With no --config it runs the embedded default:
    /// documentation prefixes (2001:db8::/32), LMDB in ./tandem-data, [::1]:5547, no root needed.
    Serve(ServeArgs),
    /// Validate a configuration file and print what it configures; exits 2 if it is invalid.
    CheckConfig(ConfigArg),
    /// Print the embedded default configuration, a starting point for your own file.
    PrintDefaultConfig,
    /// Print every lease in a store, one per line, tab-separated: kind, address/length, state,
    /// DUID (hex), IAID, subnet, expires_at (unix secs), cltt, seq, and what the relays said
    /// at the last grant or renewal (`relay=ADDR,link_address=…,remote_id=HEX,…`, or `-` if
    /// the client came directly). Safe beside a running server (read-only).
    Leases(LeasesArgs),
    /// Import the leases of an ISC Kea DHCPv6 server from its memfile (leases6.csv) into the
    /// store of --config's data_dir, with the server stopped. Each lease goes to the configured
    /// pool holding its address or prefix; lines that fit none are listed with their line
    /// numbers and nothing is written (unless --skip-unfit). Set server.duid to the Kea
    /// server's DUID (its kea-dhcp6-serverid file) so Renews addressed to it are answered. For
    /// a failover pair, import the same file into both servers' stores.
    ImportKea(ImportKeaArgs),
    /// Ask a running server over its control socket. `status`: pool use and, with a partner,
    /// failover state, partner state, time in state, link, last contact, unacknowledged
    /// updates, for each relationship. `partner-down [--relationship NAME]`: declare the partner down
    /// (only when it really is, e.g. its host is gone; the partner's free resources become usable
    /// MCLT later). `statistics`: the
    /// counters as JSON. `lease-get ADDR|PREFIX/LEN`, `lease-get --duid HEX` or `lease-get
    /// --remote-id HEX`: leases as JSON, with what the relays said when each was last granted
    /// or renewed.
    /// `lease-add ADDR|PREFIX/LEN --duid HEX --iaid N [--valid-secs S] [--preferred-secs S]`:
    /// give a free resource to a client (with a partner: from this server's share, for at
    /// most MCLT until the partner acknowledges it; the partner hears of it).
    /// `lease-delete ADDR|PREFIX/LEN`: end a lease as released (the partner hears of it). `reclaim`: reclaim expired leases now (no partner only).
    /// `reload`: read the configuration file again and apply what can change live (options,
    /// limits, leasequery, rapid_commit, preference, log_level; without a partner also added
    /// subnets and pools, lifetimes and reservations), as SIGHUP does.
    /// `config-test`: read the file as a reload would and say what it would apply, or why
    /// it would be refused, applying nothing.
    Ctl(CtlArgs),
}

#[derive(Args)]
struct CtlArgs {
    /// The control socket. Default: server.control_socket of --config, else
    /// <data_dir>/control.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Configuration file to take the socket path from.
    #[arg(short, long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory whose control.sock to use (when there is no --config).
    #[arg(long, default_value = "./tandem-data")]
    data_dir: PathBuf,
    /// The command.
    #[arg(value_parser = ["status", "partner-down", "statistics", "lease-get", "lease-add", "lease-delete", "reclaim", "reload", "config-test"])]
    command: String,
    /// lease-get, lease-add, lease-delete: the address (2001:db8::5) or delegated prefix
    /// (2001:db8:8000:100::/56).
    lease: Option<String>,
    /// lease-get: the client's DUID in hex (colons allowed) instead of a lease; lease-add: the
    /// client the lease is for.
    #[arg(long)]
    duid: Option<String>,
    /// lease-get: the leases whose last grant or renewal came through a relay (the one
    /// closest to the client) sending this Remote-ID option (RFC 4649), in hex, enterprise
    /// number first: e.g. 00000009 followed by the id. Walks the lease table.
    #[arg(long)]
    remote_id: Option<String>,
    /// lease-add: the IAID of the client's IA_NA or IA_PD.
    #[arg(long)]
    iaid: Option<u32>,
    /// lease-add: valid lifetime (default: the subnet's).
    #[arg(long)]
    valid_secs: Option<u32>,
    /// lease-add: preferred lifetime (default: the subnet's).
    #[arg(long)]
    preferred_secs: Option<u32>,
    /// partner-down: the relationship whose partner is down (required when the server has
    /// several `[[failover]]` sections; `tandem ctl status` lists them).
    #[arg(long)]
    relationship: Option<String>,
}

impl CtlArgs {
    /// The line sent on the socket: the word for `status` and `partner-down`, JSON otherwise.
    fn request(&self) -> Result<String, String> {
        let mut req = serde_json::json!({"command": self.command});
        match self.command.as_str() {
            "status" => return Ok(self.command.clone()),
            "partner-down" => {
                return Ok(match &self.relationship {
                    Some(r) if r.trim().is_empty() || r.contains('\n') => {
                        return Err("--relationship: a relationship name on one line".into());
                    }
                    Some(r) => format!("partner-down {r}"),
                    None => self.command.clone(),
                });
            }
            "lease-get" => match (&self.lease, &self.duid, &self.remote_id) {
                (Some(l), None, None) => req["lease"] = l.as_str().into(),
                (None, Some(d), None) => req["duid"] = d.as_str().into(),
                (None, None, Some(r)) => req["remote_id"] = r.as_str().into(),
                _ => {
                    return Err(
                        "lease-get takes one of: an address or prefix, --duid HEX, --remote-id HEX"
                            .into(),
                    );
                }
            },
            "lease-delete" => {
                req["lease"] = self
                    .lease
                    .as_deref()
                    .ok_or("lease-delete needs the address or prefix")?
                    .into();
            }
            "lease-add" => {
                req["lease"] = self
                    .lease
                    .as_deref()
                    .ok_or("lease-add needs the address or prefix")?
                    .into();
                req["duid"] = self.duid.as_deref().ok_or("lease-add needs --duid")?.into();
                req["iaid"] = self.iaid.ok_or("lease-add needs --iaid")?.into();
                if let Some(v) = self.valid_secs {
                    req["valid_secs"] = v.into();
                }
                if let Some(p) = self.preferred_secs {
                    req["preferred_secs"] = p.into();
                }
            }
            _ => {}
        }
        Ok(req.to_string())
    }
}

#[derive(Args)]
struct ConfigArg {
    /// TOML configuration file. Without it, the embedded default is used.
    #[arg(short, long, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ImportKeaArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Import the lines that fit and list the others, instead of importing nothing.
    #[arg(long)]
    skip_unfit: bool,
    /// Read and check only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Kea's lease file (memfile), e.g. /var/lib/kea/kea-leases6.csv.
    file: PathBuf,
}

#[derive(Args)]
struct LeasesArgs {
    /// Directory of the LMDB store.
    #[arg(long, default_value = "./tandem-data")]
    data_dir: PathBuf,
    /// Only leases in this state (active, expired, released, declined).
    #[arg(long)]
    state: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Worker threads per listener (0 = one per core). Overrides server.workers.
    #[arg(long)]
    workers: Option<usize>,
    /// Unicast address and port to listen on, e.g. [::1]:5547; repeat for several. Replaces
    /// server.listen.
    #[arg(long)]
    listen: Vec<SocketAddrV6>,
    /// Interface to join ff02::1:2 on (listening on server.port, 547 by default); repeat for
    /// several. Replaces server.interfaces.
    #[arg(long = "interface")]
    interfaces: Vec<String>,
    /// Directory for the LMDB store. Overrides server.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or per module (tandem=debug). Overrides
    /// server.log_level. Lease grants are logged at info.
    #[arg(long)]
    log_level: Option<String>,
    /// Do not fsync commits. Faster, but a crash can lose leases clients were told they have:
    /// for benchmarks only.
    #[arg(long)]
    no_sync: bool,
    /// Under load, start a group commit (one fsync) at most every this many microseconds,
    /// 0 to 100000: replies wait up to this much longer, and each fsync covers more of them
    /// (less CPU per exchange). Without load (under 4 replies waiting for a commit per
    /// interval) each commits at once. 0: commit as soon as the last commit ends. Applies with
    /// --no-sync too (a commit still writes). Overrides server.commit_interval_us (default
    /// 5000).
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=tandem_core::config::defaults::COMMIT_INTERVAL_US_MAX))]
    commit_interval_us: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. [::1]:9469 (plain HTTP, no
    /// authentication: bind it to a management address). Overrides server.metrics_listen.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// How packets reach the workers. `udp`: sockets, works everywhere (the default). `xdp`: an
    /// XDP program on each of server.interfaces hands the DHCPv6 datagrams (UDP to
    /// server.port) to one AF_XDP socket per receive queue, each with its own worker; all other
    /// traffic goes to the kernel untouched, and the UDP listeners stay open for what the
    /// program passes on (fragments). Needs root or CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW,
    /// and a build with clang installed; refuses to start, saying why, rather than fall back.
    #[arg(long, value_enum, default_value = "udp")]
    datapath: DatapathArg,
    /// With --datapath xdp: attach in `native` (driver) mode, `generic` (skb) mode, or `auto`
    /// (native where the driver supports it, generic otherwise).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: crate::edge::xdp::program::XdpAttachMode,
}

/// `--datapath`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DatapathArg {
    /// UDP sockets.
    Udp,
    /// AF_XDP sockets fed by an XDP program.
    Xdp,
}

fn load(arg: &ConfigArg) -> Result<Config, config::ConfigError> {
    match &arg.config {
        Some(p) => config_file::load(p),
        None => config_file::parse("<embedded default>", config::EMBEDDED_DEFAULT),
    }
}

/// Starts logging to stderr with `filter`; returns what changes the filter later (reload).
fn init_logs(filter: &str) -> Option<crate::edge::reload::SetLogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let f = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter_layer, handle) = tracing_subscriber::reload::Layer::new(f);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(fmt)
        .try_init()
        .ok()?;
    Some(Box::new(move |level: &str| {
        let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    }))
}

/// Runs `tandem` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::PrintDefaultConfig => {
            // A reader that went away (`| head`) is no error.
            let _ = std::io::Write::write_all(
                &mut std::io::stdout(),
                config::EMBEDDED_DEFAULT.as_bytes(),
            );
            ExitCode::SUCCESS
        }
        Command::CheckConfig(arg) => match load(&arg) {
            Ok(c) => {
                // Written at once, and a reader that went away (`| head`) is no error.
                use std::fmt::Write as _;
                let mut o = String::new();
                let _ = writeln!(o, "configuration is valid");
                let _ = writeln!(o, "data_dir: {}", c.server.data_dir.display());
                for l in &c.server.listen {
                    let _ = writeln!(o, "listen: {l}");
                }
                for i in &c.server.interfaces {
                    let _ = writeln!(o, "interface: {i} (port {})", c.server.port);
                }
                if let Some(m) = c.server.metrics_listen {
                    let _ = writeln!(o, "metrics: http://{m}/metrics");
                }
                for f in &c.relationships {
                    let _ = writeln!(
                        o,
                        "failover: {:?} of relationship `{}` (subnets {}), partner {} (certificate name {}), listen {}, mclt {} s, keepalive {} s, auto partner-down {}",
                        f.role,
                        f.relationship,
                        f.subnets
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        f.partner.map_or("-".to_string(), |a| a.to_string()),
                        f.partner_name,
                        f.listen,
                        f.mclt_secs,
                        f.keepalive_secs,
                        f.auto_partner_down_secs
                            .map_or("off".to_string(), |s| format!("after {s} s"))
                    );
                }
                if c.has_failover() {
                    let _ = writeln!(
                        o,
                        "control socket: {}",
                        c.server.control_socket_path().display()
                    );
                }
                let lq = &c.leasequery;
                if !lq.requestors.is_empty() || !lq.bulk_listen.is_empty() {
                    let _ = writeln!(
                        o,
                        "leasequery: {} requestor prefixes; bulk (TCP) {}",
                        lq.requestors.len(),
                        if lq.bulk_listen.is_empty() {
                            "off".to_string()
                        } else {
                            format!(
                                "on {} (at most {} connections)",
                                lq.bulk_listen
                                    .iter()
                                    .map(|a| a.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                lq.bulk_connections_max
                            )
                        }
                    );
                }
                if !c.options.is_empty() {
                    let _ = writeln!(o, "options: {}", option_list(&c.options));
                }
                for s in &c.subnets {
                    let prefixes: Vec<String> = s.prefixes().map(|p| p.to_string()).collect();
                    let _ = writeln!(
                        o,
                        "subnet {} {} (preferred {}s, valid {}s)",
                        s.id,
                        prefixes.join(" + "),
                        s.lifetimes.preferred_secs,
                        s.lifetimes.valid_secs
                    );
                    if !s.options.is_empty() {
                        let _ = writeln!(
                            o,
                            "  options (global and subnet): {}",
                            option_list(&s.options)
                        );
                    }
                    if !s.reservations.is_empty() {
                        let kinds: Vec<&str> = config::KeyKind::ALL
                            .into_iter()
                            .filter(|k| s.reservations.uses(*k))
                            .map(config::KeyKind::name)
                            .collect();
                        let _ = writeln!(
                            o,
                            "  reservations: {} (by {})",
                            s.reservations.len(),
                            kinds.join(", ")
                        );
                    }
                    for p in &s.pools {
                        let _ = writeln!(
                            o,
                            "  {:?} pool {}..{} ({} x /{}, {} sub-pools)",
                            p.kind,
                            std::net::Ipv6Addr::from(p.first),
                            std::net::Ipv6Addr::from(p.last_addr()),
                            p.count,
                            p.resource_len,
                            p.subpools
                        );
                        if !p.options.is_empty() {
                            let _ = writeln!(o, "    pool options: {}", option_list(&p.options));
                        }
                    }
                }
                let _ = std::io::Write::write_all(&mut std::io::stdout(), o.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve(args) => serve(args),
        Command::Leases(args) => leases(args),
        Command::ImportKea(args) => import_kea(args),
        Command::Ctl(args) => ctl(args),
    }
}

/// The command-line overrides of `serve`, applied to the file's configuration at start and
/// again at every reload.
#[derive(Clone)]
struct Overrides {
    workers: Option<usize>,
    listen: Vec<SocketAddrV6>,
    interfaces: Vec<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    no_sync: bool,
    commit_interval_us: Option<u64>,
    metrics_listen: Option<std::net::SocketAddr>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(w) = self.workers {
            cfg.server.workers = w;
        }
        if !self.listen.is_empty() {
            cfg.server.listen = self.listen.clone();
        }
        if !self.interfaces.is_empty() {
            cfg.server.interfaces = self.interfaces.clone();
        }
        if let Some(d) = &self.data_dir {
            cfg.server.data_dir = d.clone();
        }
        if let Some(l) = &self.log_level {
            cfg.server.log_level = l.clone();
        }
        if self.no_sync {
            cfg.server.sync = false;
        }
        if let Some(us) = self.commit_interval_us {
            cfg.server.commit_interval_us = us;
        }
        if let Some(m) = self.metrics_listen {
            cfg.server.metrics_listen = Some(m);
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let loading = std::time::Instant::now();
    let mut cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(l) = &args.log_level
        && let Err(e) = config_file::check_log_level(l)
    {
        eprintln!("error: --log-level: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let overrides = Overrides {
        workers: args.workers,
        listen: args.listen.clone(),
        interfaces: args.interfaces.clone(),
        data_dir: args.data_dir.clone(),
        log_level: args.log_level.clone(),
        no_sync: args.no_sync,
        commit_interval_us: args.commit_interval_us,
        metrics_listen: args.metrics_listen,
    };
    overrides.apply(&mut cfg);
    let set_log_level = init_logs(&cfg.server.log_level);
    info!(
        subnets = cfg.subnets.len(),
        reservations = cfg
            .subnets
            .iter()
            .map(|s| s.reservations.len())
            .sum::<usize>(),
        elapsed_ms = loading.elapsed().as_millis() as u64,
        "configuration loaded"
    );

    // Block SIGINT/SIGTERM/SIGHUP before any thread starts, so every thread inherits the mask
    // and the main thread alone takes them with sigwait.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    if let Err(e) = signals.thread_block() {
        error!(error = %e, "cannot block signals");
        return ExitCode::from(EXIT_OTHER);
    }
    let read_config: Box<dyn Fn() -> Result<Config, String> + Send + Sync> = {
        let arg = ConfigArg {
            config: args.config.config.clone(),
        };
        let overrides = overrides.clone();
        Box::new(move || {
            let mut c = load(&arg).map_err(|e| e.to_string())?;
            overrides.apply(&mut c);
            Ok(c)
        })
    };
    let datapath = match args.datapath {
        DatapathArg::Udp => crate::edge::server::DatapathKind::Udp,
        DatapathArg::Xdp => crate::edge::server::DatapathKind::Xdp(args.xdp_mode),
    };
    let server = match Server::start(cfg, Some(read_config), set_log_level, datapath) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start: {e}");
            eprintln!("error: {e}");
            return ExitCode::from(match e {
                StartError::Store(_) => EXIT_STORE,
                StartError::Socket(_) | StartError::Xdp(_) => EXIT_SOCKET,
                StartError::Thread(_) => EXIT_OTHER,
                StartError::Audit { .. } => EXIT_STORE,
                StartError::Failover(PartnerStartError::Tls(_)) => EXIT_CONFIG,
                StartError::Failover(PartnerStartError::Socket { .. }) => EXIT_SOCKET,
                StartError::Failover(PartnerStartError::Store(_)) => EXIT_STORE,
            });
        }
    };
    info!("serving; stop with SIGINT or SIGTERM");
    // systemd Type=notify: every socket is open and every lease loaded.
    let notifier = crate::sd_notify::Notifier::from_env();
    if let Some(n) = &notifier
        && let Err(e) = n.send("READY=1\nSTATUS=serving")
    {
        warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
    let reloader = server.reloader();
    let sig = loop {
        match signals.wait() {
            // SIGHUP (systemctl reload): read the file again; apply what can change live,
            // refuse the rest with the reason (logged by the reloader). Never a stop.
            Ok(Signal::SIGHUP) => {
                let _ = reloader.reload();
            }
            other => break other,
        }
    };
    // The committer raises SIGTERM itself when it gives up on the store.
    let why = if server.store_failed() {
        error!("stopping: the store cannot be written (see the errors above)");
        "the store cannot be written"
    } else {
        info!(signal = ?sig.ok(), "stopping: finishing queued commits");
        "finishing queued commits"
    };
    if let Some(n) = &notifier {
        let _ = n.send(&format!("STOPPING=1\nSTATUS=stopping: {why}"));
    }
    // Also when commits being tried again as the signal came fail for good.
    if server.shutdown() {
        error!("stopped: the store could not be written (see the errors above)");
        return ExitCode::from(EXIT_STORE);
    }
    info!("stopped");
    ExitCode::SUCCESS
}

fn ctl(args: CtlArgs) -> ExitCode {
    use std::io::{Read, Write};
    let path = match (&args.socket, &args.config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => match config_file::load(c) {
            Ok(c) => c.server.control_socket_path(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None) => args.data_dir.join("control.sock"),
    };
    let request = match args.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot reach the server's control socket {}: {e} (is `tandem serve` running with this data dir or config?)",
                path.display()
            );
            return ExitCode::from(EXIT_OTHER);
        }
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let mut answer = String::new();
    if let Err(e) = s
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .and_then(|()| s.read_to_string(&mut answer))
    {
        eprintln!("error: control socket {}: {e}", path.display());
        return ExitCode::from(EXIT_OTHER);
    }
    // Written, not printed: a closed stdout (`| head`) must not panic.
    let mut stdout = std::io::stdout().lock();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(answer.trim()) {
        let pretty = serde_json::to_string_pretty(&v).unwrap_or(answer);
        let _ = writeln!(stdout, "{pretty}");
        return if v["result"] == "ok" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_OTHER)
        };
    }
    let _ = write!(stdout, "{answer}");
    if answer.starts_with("error") {
        ExitCode::from(EXIT_OTHER)
    } else {
        ExitCode::SUCCESS
    }
}

fn import_kea(args: ImportKeaArgs) -> ExitCode {
    let cfg = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_OTHER);
        }
    };
    let store = match crate::store::Store::open(&cfg.server.data_dir, cfg.server.map_size_mib, true)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e} (stop the server first: the store is written directly)");
            return ExitCode::from(EXIT_STORE);
        }
    };
    // What the store holds already: a lease there is never overwritten by the import.
    let mut held: std::collections::HashMap<(u8, u128), tandem_core::lease::Lease> =
        std::collections::HashMap::new();
    let mut max_seq = 0;
    if let Err(e) = store.load_leases(
        |l| {
            max_seq = max_seq.max(l.seq);
            held.insert((l.prefix_len, u128::from(l.addr)), l);
        },
        |_, _| {},
    ) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_STORE);
    }
    let now = crate::edge::now_secs();
    let mut plan = match crate::import_kea::plan(&text, &cfg, now, max_seq + 1) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    plan.leases
        .retain(|l| match held.get(&(l.prefix_len, u128::from(l.addr))) {
            None => true,
            Some(h) => {
                plan.refused.push(crate::import_kea::Refusal {
                    line: 0,
                    why: format!(
                        "{}/{} is already in the store ({} for DUID {}); not imported",
                        l.addr,
                        l.prefix_len,
                        h.state,
                        crate::edge::hex(&h.duid)
                    ),
                });
                false
            }
        });
    for r in &plan.refused {
        if r.line > 0 {
            eprintln!("{}:{}: {}", args.file.display(), r.line, r.why);
        } else {
            eprintln!("{}: {}", args.file.display(), r.why);
        }
    }
    let count = |f: &dyn Fn(&tandem_core::lease::Lease) -> bool| {
        plan.leases.iter().filter(|l| f(l)).count()
    };
    let summary = format!(
        "{} lines read: {} leases to import ({} addresses, {} prefixes; {} active, {} expired, {} declined), {} lines refused",
        plan.lines,
        plan.leases.len(),
        count(&|l| l.kind == config::ResourceKind::Address),
        count(&|l| l.kind == config::ResourceKind::Prefix),
        count(&|l| l.state == tandem_core::lease::LeaseState::Active),
        count(&|l| l.state == tandem_core::lease::LeaseState::Expired),
        count(&|l| l.state == tandem_core::lease::LeaseState::Declined),
        plan.refused.len()
    );
    if !plan.refused.is_empty() && !args.skip_unfit {
        eprintln!("{summary}");
        eprintln!(
            "error: nothing imported: fix the configuration's pools, or pass --skip-unfit to import the rest"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if args.dry_run {
        println!("{summary}; dry run: nothing written");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = store.commit(plan.leases.iter()) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_STORE);
    }
    println!("{summary}; imported into {}", cfg.server.data_dir.display());
    if cfg.server.duid.is_none() {
        println!(
            "note: set server.duid to the Kea server's DUID (its kea-dhcp6-serverid file) so that Renews addressed to it are answered"
        );
    }
    ExitCode::SUCCESS
}

fn leases(args: LeasesArgs) -> ExitCode {
    let store = match crate::store::Store::open_reader(&args.data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_STORE);
        }
    };
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = false;
    let r = store.load_leases(
        |l| {
            if args
                .state
                .as_deref()
                .is_some_and(|s| s != l.state.to_string())
            {
                return;
            }
            let duid: String = l.duid.iter().map(|b| format!("{b:02x}")).collect();
            let kind = match l.kind {
                config::ResourceKind::Address => "na",
                config::ResourceKind::Prefix => "pd",
            };
            let relay = crate::edge::audit::RelayInfo::from_relay_data(&l.relay)
                .fields()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let relay = if relay.is_empty() { "-".into() } else { relay };
            failed |= writeln!(
                out,
                "{kind}\t{}/{}\t{}\t{duid}\t{}\t{}\t{}\t{}\t{}\t{relay}",
                l.addr, l.prefix_len, l.state, l.iaid, l.subnet_id, l.expires_at, l.cltt, l.seq
            )
            .is_err();
        },
        |k, e| eprintln!("corrupt record {k:02x?}: {e}"),
    );
    let _ = out.flush();
    match r {
        Ok(_) if !failed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_OTHER),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_STORE)
        }
    }
}

/// `23 (32 B), 24 (30 B)`: the option codes of a set with their encoded sizes.
fn option_list(set: &config::OptionSet) -> String {
    set.iter()
        .map(|(code, v)| format!("{code} ({} B)", v.len()))
        .collect::<Vec<_>>()
        .join(", ")
}
