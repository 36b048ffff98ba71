//! The `tandem-gen` command line: flags, threads, phases, the report.

use crate::check::{Pools, Registry};
use crate::client::{Client, Driver, Phase, Route, SERVERS_MAX, Settings, Want};
use crate::stats::PhaseStats;
use clap::{Parser, ValueEnum};
use std::io::{IsTerminal, Write};
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Most simulated clients in one run.
const CLIENTS_MAX: u32 = 10_000_000;
/// How long past the longest phase time a thread done with a phase keeps passing replies on
/// to the others (AF_XDP) before it waits for them without.
const PASS_ON_GRACE: Duration = Duration::from_secs(5);
/// Longest a reflector may run.
const REFLECT_SECS_MAX: u64 = 3600;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// IA_NA only.
    Na,
    /// IA_PD only.
    Pd,
    /// IA_NA and IA_PD in every exchange.
    Both,
}

/// How the generator's datagrams travel.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Datapath {
    /// A UDP socket per thread: works everywhere.
    Udp,
    /// An AF_XDP socket per thread on the receive queue of its number, frames built by the
    /// generator, past the kernel's UDP stack (needs root or CAP_NET_ADMIN, CAP_BPF,
    /// CAP_PERFMON and CAP_NET_RAW, and a build with the XDP program).
    Xdp,
}

#[derive(Parser)]
#[command(
    name = "tandem-gen",
    version,
    about = "DHCPv6 load generator: many simulated clients, real exchanges, latency histograms, lease checks.",
    after_help = "Clients act as RFC 8415 clients across a failover: Request, Renew and Release name the server that answered last, and a Renew unanswered by T2 or through its retransmissions goes on as a Rebind to any server (counted as renew_fell_back_to_rebind).\n\nExit codes: 0 all good, 1 a lease check was violated, 2 bad arguments or socket error, 3 a phase failed more than --max-failed-pct of its exchanges (by default: any exchange failed)."
)]
struct Cli {
    /// Server address to send to by unicast (or to relay to with --relay-link). Repeat for a
    /// server pair: every message then goes to each server and the first usable answer counts.
    #[arg(long, default_value = "[::1]:5547")]
    server: Vec<SocketAddrV6>,
    /// Send to ff02::1:2 on this interface (port --port) instead of --server.
    #[arg(long)]
    interface: Option<String>,
    /// Server port with --interface.
    #[arg(long, default_value_t = 547)]
    port: u16,
    /// Act as a relay agent: wrap every message in Relay-forw with this link-address (plus
    /// Interface-Id and RFC 8357 Relay Source Port) and send it to every --server.
    #[arg(long)]
    relay_link: Option<Ipv6Addr>,
    /// Number of distinct simulated clients (each its own DUID).
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Sending threads; clients are divided between them. With --datapath xdp at most the
    /// interface's number of receive queues (a socket on each of the first --threads queues).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `udp`: a UDP socket per thread. `xdp`: Ethernet frames through AF_XDP, on --interface
    /// or else on the interface the kernel routes the first --server through; every --server
    /// must be on that link (its MAC address is taken from the kernel's neighbour table). The
    /// XDP program is attached to that interface for the run and takes the replies to the
    /// threads' ports; ping, ND and everything else still reach the kernel. On veth, turn the
    /// server side's tx checksum offload off (ethtool -K IF tx off) when a kernel socket
    /// answers, or the replies' checksums arrive unfilled and are refused (counted).
    #[arg(long, value_enum, default_value = "udp")]
    datapath: Datapath,
    /// With --datapath xdp: attach the program in native (driver) mode, generic (skb) mode,
    /// or native where the driver has it (auto).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: tandem_server::edge::xdp::program::XdpAttachMode,
    /// Target exchanges per second over all threads; 0 = as fast as --window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Exchanges outstanding per thread at most.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// What clients ask for.
    #[arg(long, value_enum, default_value = "na")]
    mode: Mode,
    /// Ask for Rapid Commit (Solicit → Reply).
    #[arg(long)]
    rapid_commit: bool,
    /// Ask for DNS servers and the domain search list (Option Request 23, 24) in every
    /// message, as a CE router does, so the server's option path is measured too.
    #[arg(long)]
    ask_dns: bool,
    /// With --relay-link: the relay adds a Remote-ID (RFC 4649) per client, as an access node
    /// numbering subscriber lines: enterprise 9 and the text `line-N` for client N (0, 1, ...).
    /// A second run with another --seed is the same lines with new CPEs (new DUIDs), e.g. to
    /// check that reservations by line (`remote-id 9:text:line-0 ...`) follow the line.
    #[arg(long, requires = "relay_link")]
    line_remote_ids: bool,
    /// Phases to run, in order: acquire, renew, rebind, release (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "acquire")]
    phases: Vec<String>,
    /// Initial retransmission timeout in milliseconds (RFC 8415 uses 1000).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Retransmissions before an exchange counts as timed out.
    #[arg(long, default_value_t = 4)]
    max_retries: u32,
    /// Longest one phase may run, in seconds.
    #[arg(long, default_value_t = 60)]
    phase_secs: u64,
    /// Seed for the client DUIDs: runs with different seeds are different clients.
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// A Tandem config file whose pools every lease must lie in.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the leases the clients hold at the end to this file (kind, lease, DUID hex, IAID).
    #[arg(long)]
    leases_out: Option<PathBuf>,
    /// Print a JSON summary on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit 3 if any phase fails more than this share of its exchanges (percent): timed out,
    /// refused, or still outstanding when the phase ran out of time. The default, 0, fails the
    /// run on any failed exchange; 100 never does (a run whose failures are expected).
    #[arg(long, default_value_t = 0.0)]
    max_failed_pct: f64,
    /// Run the reflector instead: answer every message on --listen with a precomputed-style
    /// valid reply, no state, no storage (the machine's packet ceiling).
    #[arg(long)]
    reflector: bool,
    /// Where the reflector listens.
    #[arg(long, default_value = "[::1]:5548")]
    listen: SocketAddrV6,
    /// How long the reflector runs, in seconds.
    #[arg(long, default_value_t = 60)]
    reflect_secs: u64,
}

fn parse_phases(v: &[String]) -> Result<Vec<Phase>, String> {
    v.iter()
        .map(|p| match p.trim() {
            "acquire" => Ok(Phase::Acquire),
            "renew" => Ok(Phase::Renew),
            "rebind" => Ok(Phase::Rebind),
            "release" => Ok(Phase::Release),
            o => Err(format!(
                "unknown phase `{o}` (acquire, renew, rebind, release)"
            )),
        })
        .collect()
}

/// Runs `tandem-gen` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.reflector && cli.datapath == Datapath::Xdp {
        eprintln!(
            "error: the reflector answers through a UDP socket; --datapath xdp is for the clients"
        );
        return ExitCode::from(2);
    }
    if cli.reflector {
        let stop = Arc::new(AtomicBool::new(false));
        let secs = cli.reflect_secs.min(REFLECT_SECS_MAX);
        let s2 = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            s2.store(true, Ordering::Relaxed);
        });
        eprintln!(
            "reflector on {} with {} threads for {secs}s",
            cli.listen, cli.threads
        );
        return match crate::reflector::run(cli.listen, cli.threads, stop) {
            Ok(n) => {
                eprintln!("reflector sent {n} replies");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: reflector on {}: {e}", cli.listen);
                ExitCode::from(2)
            }
        };
    }
    let phases = match parse_phases(&cli.phases) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            eprintln!("error: --phases is empty");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !(0.0..=100.0).contains(&cli.max_failed_pct) {
        eprintln!("error: --max-failed-pct must be 0 to 100");
        return ExitCode::from(2);
    }
    if cli.clients == 0 || cli.clients > CLIENTS_MAX || cli.threads == 0 || cli.window == 0 {
        eprintln!(
            "error: need 1..={CLIENTS_MAX} clients, at least one thread and a window of at least 1"
        );
        return ExitCode::from(2);
    }
    if cli.server.is_empty() || cli.server.len() > SERVERS_MAX {
        eprintln!("error: need 1..={SERVERS_MAX} --server addresses");
        return ExitCode::from(2);
    }
    let pools = match &cli.config {
        Some(p) => match tandem_server::config_file::load(p) {
            Ok(c) => Pools::from_config(&c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Pools::default(),
    };
    let route = match (&cli.interface, cli.relay_link) {
        (Some(i), _) => match nix::net::if_::if_nametoindex(i.as_str()) {
            Ok(idx) => Route::Direct(vec![SocketAddrV6::new(
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2),
                cli.port,
                0,
                idx,
            )]),
            Err(e) => {
                eprintln!("error: interface {i}: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(link)) => Route::Relay {
            servers: cli.server.clone(),
            link,
        },
        (None, None) => Route::Direct(cli.server.clone()),
    };
    let settings = Settings {
        route,
        want: match cli.mode {
            Mode::Na => Want::Address,
            Mode::Pd => Want::Prefix,
            Mode::Both => Want::Both,
        },
        rapid_commit: cli.rapid_commit,
        ask_dns: cli.ask_dns,
        line_remote_ids: cli.line_remote_ids,
        initial_rt: Duration::from_millis(cli.timeout_ms.max(1)),
        max_retries: cli.max_retries,
        window: cli.window,
        rate_per_thread: cli.rate / cli.threads as f64,
        phase_time_max: Duration::from_secs(cli.phase_secs.max(1)),
        seed: cli.seed,
    };
    let threads = cli.threads.min(cli.clients as usize);
    let mut sockets = Vec::new();
    // With --datapath xdp: the program (detached when this is dropped, after the threads).
    let mut xdp_run = None;
    if cli.datapath == Datapath::Xdp {
        match crate::net::open(
            cli.interface.as_deref(),
            settings.route.dests(),
            threads,
            cli.xdp_mode,
        ) {
            Ok(mut run) => {
                eprintln!(
                    "AF_XDP on {} ({} mode, {} of {threads} sockets zero-copy)",
                    run.interface, run.program.mode, run.zero_copy_sockets
                );
                sockets = std::mem::take(&mut run.nets);
                xdp_run = Some(run);
            }
            Err(e) => {
                eprintln!("error: --datapath xdp: {e}");
                return ExitCode::from(2);
            }
        }
    }
    while sockets.len() < threads {
        match UdpSocket::bind("[::]:0") {
            Ok(s) => {
                if let Some(i) = &cli.interface
                    && let Ok(idx) = nix::net::if_::if_nametoindex(i.as_str())
                {
                    let _ = s.set_multicast_loop_v6(false);
                    let _ = socket2::SockRef::from(&s).set_multicast_if_v6(idx);
                }
                let s2 = socket2::SockRef::from(&s);
                let _ = s2.set_recv_buffer_size(4 << 20);
                sockets.push(crate::net::Net::udp(s));
            }
            Err(e) => {
                eprintln!("error: socket: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let registry = Registry::default();
    let barrier = Barrier::new(threads + 1);
    let results: Mutex<Vec<Vec<PhaseStats>>> = Mutex::new(Vec::new());
    let held: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let tty = std::io::stderr().is_terminal();
    let progress = AtomicU64::new(0);
    let finished = AtomicUsize::new(0);
    let mut merged: Vec<PhaseStats> = Vec::new();
    std::thread::scope(|scope| {
        for (t, sock) in sockets.into_iter().enumerate() {
            let (settings, registry, pools, barrier, results, held, phases, progress, finished) = (
                settings.clone(),
                &registry,
                &pools,
                &barrier,
                &results,
                &held,
                &phases,
                &progress,
                &finished,
            );
            let clients: Vec<Client> = (0..cli.clients)
                .filter(|c| *c as usize % threads == t)
                .map(|c| crate::client::new_client(c, &settings))
                .collect();
            scope.spawn(move || {
                let mut d =
                    Driver::new(sock, clients, settings, registry, pools, progress, t as u32);
                let mut mine = Vec::new();
                for (k, p) in phases.iter().enumerate() {
                    barrier.wait();
                    mine.push(d.run(*p));
                    finished.fetch_add(1, Ordering::SeqCst);
                    // On AF_XDP replies for the others may land on this thread's queue.
                    d.pass_on_replies_until(
                        || finished.load(Ordering::SeqCst) >= threads * (k + 1),
                        PASS_ON_GRACE,
                    );
                    barrier.wait();
                }
                let mut lines = Vec::new();
                for c in d.clients.iter().filter(|c| c.bound()) {
                    let duid: String = c.duid().iter().map(|b| format!("{b:02x}")).collect();
                    if let Some(a) = c.address().map(|l| l.addr) {
                        lines.push(format!("na\t{a}/128\t{duid}\t{}", crate::client::IAID_NA));
                    }
                    if let Some(l) = c.prefix() {
                        lines.push(format!(
                            "pd\t{}/{}\t{duid}\t{}",
                            l.addr,
                            l.len,
                            crate::client::IAID_PD
                        ));
                    }
                }
                held.lock().unwrap_or_else(|e| e.into_inner()).extend(lines);
                results.lock().unwrap_or_else(|e| e.into_inner()).push(mine);
            });
        }
        for (k, p) in phases.iter().enumerate() {
            progress.store(0, Ordering::Relaxed);
            barrier.wait();
            let t0 = Instant::now();
            let (mut last_ok, mut last_at) = (0u64, t0);
            // Progress while the phase runs: every second, on one line on a terminal, as plain
            // lines otherwise (never in --json mode). Bounded by the phase's own time limit.
            while finished.load(Ordering::SeqCst) < threads * (k + 1) {
                std::thread::sleep(Duration::from_millis(50));
                if cli.json || last_at.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let ok = progress.load(Ordering::Relaxed);
                let rate = (ok - last_ok) as f64 / last_at.elapsed().as_secs_f64();
                let line = format!(
                    "{:<8} {:>5.1}s  ok {ok:>9}  {rate:>9.0}/s  violations {}",
                    p.name(),
                    t0.elapsed().as_secs_f64(),
                    registry.violation_count()
                );
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                (last_ok, last_at) = (ok, Instant::now());
            }
            if tty && !cli.json {
                eprintln!();
            }
            barrier.wait();
        }
    });
    for per_thread in results.into_inner().unwrap_or_default() {
        for (i, s) in per_thread.iter().enumerate() {
            if merged.len() <= i {
                merged.push(PhaseStats::default());
            }
            merged[i].merge(s);
        }
    }
    if let Some(path) = &cli.leases_out {
        let mut lines = held.into_inner().unwrap_or_default();
        lines.sort();
        if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
            eprintln!("error: writing {}: {e}", path.display());
        }
    }
    let violations = registry.violations();
    let n_viol = registry.violation_count();
    let worst_failed = merged.iter().map(|s| s.failed_pct()).fold(0.0, f64::max);
    if cli.json {
        let v = serde_json::json!({
            "clients": cli.clients,
            "threads": threads,
            "target_rate": cli.rate,
            "servers": match &cli.interface {
                Some(i) => vec![format!("[ff02::1:2%{i}]:{}", cli.port)],
                None => cli.server.iter().map(|s| s.to_string()).collect(),
            },
            "mode": match cli.mode { Mode::Na => "na", Mode::Pd => "pd", Mode::Both => "both" },
            "phases": phases.iter().zip(&merged).map(|(p, s)| s.json(p.name())).collect::<Vec<_>>(),
            "violations": n_viol,
            "violation_examples": violations,
            "xdp": xdp_run.as_ref().map(|r| r.counts.json()),
        });
        println!("{v}");
    } else {
        let mut out = std::io::stdout().lock();
        for (p, s) in phases.iter().zip(&merged) {
            let _ = writeln!(out, "{}", s.line(p.name()));
            let _ = writeln!(out, "{}", s.gap_line());
            if let Some(l) = s.fallback_line() {
                let _ = writeln!(out, "{l}");
            }
            if !s.naks.is_empty() {
                let _ = writeln!(out, "         naks by status code: {:?}", s.naks);
            }
        }
        if let Some(r) = &xdp_run {
            let _ = writeln!(out, "xdp: {}", r.counts.json());
        }
        let _ = writeln!(out, "violations: {n_viol}");
        for v in &violations {
            let _ = writeln!(out, "  {v}");
        }
    }
    if n_viol > 0 {
        ExitCode::from(1)
    } else if worst_failed > cli.max_failed_pct {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
