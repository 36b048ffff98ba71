//! Abuse limits (`[limits]`) against a real `tandem serve` in a namespace of its own (`tdmab`):
//! one host floods Rapid Commit Solicits with 16 IA_PDs each under fresh DUIDs, while 20
//! legitimate clients on another address ask for one prefix each. Without limits the flood
//! takes the whole prefix pool and the legitimate clients get none (the test can fail); with
//! the defaults plus a per-source rate, every legitimate client gets its prefix and the flood
//! holds only what its rate allows.
//!
//! The test's sockets live in the namespace: a thread enters it (setns) before opening them.

mod common;

use common::TANDEM;
use common::netns::Netns;
use common::proc::{Proc, serve, tail, wait_log_line};
use common::tools::skip_netns;
use dhcproto::v6::{DhcpOption, IAPD, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

const SERVER: &str = "[2001:db8:ff::10]:547";
const FLOODER: &str = "2001:db8:ff::1";
const CLIENTS: &str = "2001:db8:ff::2";
/// Delegated prefixes in the pool: a /46 in /56s.
const POOL_PREFIXES: usize = 1024;

/// Runs `f` on a thread inside namespace `ns` (its sockets belong there).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

fn solicit(duid: &[u8], pds: u32) -> Vec<u8> {
    let mut m = Message::new(MessageType::Solicit);
    let o = m.opts_mut();
    o.insert(DhcpOption::ClientId(duid.to_vec()));
    o.insert(DhcpOption::RapidCommit);
    for i in 0..pds {
        o.insert(DhcpOption::IAPD(IAPD {
            id: i + 1,
            t1: 0,
            t2: 0,
            opts: Default::default(),
        }));
    }
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

/// Prefixes with a valid lifetime in a reply.
fn prefixes(reply: &[u8]) -> usize {
    let Ok(m) = Message::decode(&mut Decoder::new(reply)) else {
        return 0;
    };
    m.opts()
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IAPD(ia) => Some(
                ia.opts
                    .iter()
                    .filter(|p| matches!(p, DhcpOption::IAPrefix(x) if x.valid_lifetime > 0))
                    .count(),
            ),
            _ => None,
        })
        .sum()
}

struct Outcome {
    flood_prefixes: usize,
    legit_ok: usize,
    flood_secs: f64,
}

/// 600 flood Solicits (16 IA_PDs each, fresh DUIDs) in about 3 s; in its second half,
/// 10 legitimate clients, one at a time, each waiting up to 1 s for its Reply.
fn flood_and_serve(ns: &str) -> Outcome {
    in_netns(ns, || {
        let flooder =
            UdpSocket::bind(SocketAddrV6::new(FLOODER.parse().unwrap(), 0, 0, 0)).unwrap();
        flooder
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let clients =
            UdpSocket::bind(SocketAddrV6::new(CLIENTS.parse().unwrap(), 0, 0, 0)).unwrap();
        clients
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut flood_prefixes = 0;
        let mut buf = [0u8; 8192];
        let mut drain = |s: &UdpSocket, n: &mut usize| {
            while let Ok(len) = s.recv(&mut buf) {
                *n += prefixes(&buf[..len]);
            }
        };
        let mut legit_ok = 0;
        let start = Instant::now();
        for i in 0..600u32 {
            let duid = [&[0u8, 4][..], &(0xf100_0000u32 + i).to_be_bytes()[..]].concat();
            flooder.send_to(&solicit(&duid, 16), SERVER).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            drain(&flooder, &mut flood_prefixes);
            // From the second half on, a legitimate client every 15 flood messages.
            if i >= 300 && i % 30 == 0 {
                let duid = [&[0u8, 4, 0xaa][..], &i.to_be_bytes()[..]].concat();
                clients.send_to(&solicit(&duid, 1), SERVER).unwrap();
                let mut rb = [0u8; 2048];
                if let Ok(n) = clients.recv(&mut rb)
                    && prefixes(&rb[..n]) == 1
                {
                    legit_ok += 1;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "flood loop bound"
            );
        }
        // Late replies to the flood.
        flooder
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        drain(&flooder, &mut flood_prefixes);
        Outcome {
            flood_prefixes,
            legit_ok,
            flood_secs: start.elapsed().as_secs_f64(),
        }
    })
}

fn run_case(ns: &Netns, dir: &std::path::Path, limits: &str) -> Outcome {
    let data = dir.join(format!("data-{}", limits.len()));
    let cfg = dir.join(format!("tandem-{}.toml", limits.len()));
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = ["{SERVER}"]
data_dir = "{}"
rapid_commit = true
unicast_address = "2001:db8:ff::10"
sync = false
workers = 2
[[subnet]]
id = 1
prefix = "2001:db8:ff::/64"
pools = [{{ range = "2001:db8:ff::100-2001:db8:ff::1ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/46", delegated_len = 56 }}]
{limits}
"#,
            data.display()
        ),
    )
    .unwrap();
    let log = dir.join(format!("server-{}.log", limits.len()));
    let mut cmd = ns.cmd(TANDEM);
    cmd.args([
        "serve",
        "--log-level",
        "warn,tandem_server::cli=info",
        "--config",
    ])
    .arg(&cfg);
    let mut server = Proc::spawn_cmd("tandem serve", cmd, &log);
    wait_log_line(
        &mut server,
        &log,
        "serving; stop with",
        Duration::from_secs(15),
        "tandem serve",
    );
    let out = flood_and_serve(&ns.name);
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
    out
}

#[test]
fn a_multi_ia_flood_does_not_starve_legitimate_clients() {
    if skip_netns("a_multi_ia_flood_does_not_starve_legitimate_clients") {
        return;
    }
    let ns = Netns::new("tdmab");
    for a in [
        "2001:db8:ff::1/128",
        "2001:db8:ff::2/128",
        "2001:db8:ff::10/128",
    ] {
        ns.ip(&["addr", "add", a, "dev", "lo"]);
    }
    let d = tempfile::tempdir().unwrap();

    // No limits: the flood takes every prefix; legitimate clients get nothing.
    let open = run_case(
        &ns,
        d.path(),
        "[limits]\nias_per_message_max = 16\nclient_rate_per_sec = 0\n",
    );
    assert_eq!(
        open.flood_prefixes, POOL_PREFIXES,
        "the flood drains the pool"
    );
    assert!(
        open.legit_ok <= 2,
        "{} legitimate clients served",
        open.legit_ok
    );

    // The defaults (4 IAs per message, 10 messages a second per client) and 5 a second per
    // source (per worker: the server's two workers each keep their own buckets).
    let limited = run_case(
        &ns,
        d.path(),
        "[limits]\nsource_rate_per_sec = 5\nsource_burst = 5\n",
    );
    eprintln!(
        "abuse test: without limits the flood held {} prefixes in {:.1} s and {}/10 legitimate clients got one; with limits {} in {:.1} s and {}/10",
        open.flood_prefixes,
        open.flood_secs,
        open.legit_ok,
        limited.flood_prefixes,
        limited.flood_secs,
        limited.legit_ok
    );
    assert_eq!(
        limited.legit_ok, 10,
        "every legitimate client gets its prefix"
    );
    // What the limits allow the flood: 4 IAs a message, and per worker a burst of 5 then 5 a
    // second, over the time the flood ran.
    let ceiling = 4.0 * 2.0 * (5.0 + 5.0 * limited.flood_secs.ceil());
    assert!(
        limited.flood_prefixes as f64 <= ceiling,
        "the flood held {} prefixes in {:.1} s; the limits allow {ceiling}",
        limited.flood_prefixes,
        limited.flood_secs
    );
}

/// Runs tandem-gen against `server` (release-free: the debug build is fast enough here) and
/// returns its JSON.
fn run_gen(server: &str, args: &[&str], secs: u32) -> serde_json::Value {
    let mut all = vec!["--server", server];
    all.extend_from_slice(args);
    common::gen_json(&all, secs)
}

/// A flood of `clients` Rapid Commit IA_NA clients under fresh DUIDs (`seed`), each given
/// 300 ms and `max_retries` retransmissions, for at most `phase_secs` (tandem-gen killed after
/// `secs`).
fn fresh_clients(
    server: &str,
    clients: u32,
    seed: u32,
    phase_secs: u32,
    max_retries: u32,
    secs: u32,
) -> serde_json::Value {
    run_gen(
        server,
        &[
            "--clients",
            &clients.to_string(),
            "--seed",
            &seed.to_string(),
            "--rapid-commit",
            "--mode",
            "na",
            "--phase-secs",
            &phase_secs.to_string(),
            "--timeout-ms",
            "300",
            "--max-retries",
            &max_retries.to_string(),
        ],
        secs,
    )
}

/// The warning and error lines of a server log.
fn warnings(log: &std::path::Path) -> String {
    common::proc::read_lossy(log)
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_full_store_refuses_new_clients_but_never_a_renewal() {
    use common::prom::Scrape;
    let d = tempfile::tempdir().unwrap();
    let listen = format!("[::1]:{}", common::proc::free_udp_port());
    let cfg = d.path().join("tandem.toml");
    // The smallest map (16 MiB), so that a flood can fill it within seconds.
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = ["{listen}"]
data_dir = "{}"
rapid_commit = true
unicast_address = "::1"
sync = false
map_size_mib = 16
metrics_listen = "[::1]:0"
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::1:0-2001:db8:1::ffff:ffff" }}]
[limits]
client_rate_per_sec = 0
"#,
            d.path().join("data").display()
        ),
    )
    .unwrap();
    let log = d.path().join("server.log");
    let mut server = serve(
        &[
            "--log-level",
            "warn,tandem_server=info",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &log,
    );
    let text = common::proc::read_lossy(&log);
    let url = text
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .unwrap()
        .to_string();

    // 300 customers hold addresses.
    let j = run_gen(
        &listen,
        &[
            "--clients",
            "300",
            "--seed",
            "1",
            "--rapid-commit",
            "--mode",
            "na",
        ],
        60,
    );
    assert_eq!(j["phases"][0]["ok"], 300, "{j}");

    // A flood of fresh DUIDs fills the store until new leases are refused (bounded: 400,000
    // clients, 120 s).
    let end = Instant::now() + Duration::from_secs(120);
    let mut seed = 10;
    loop {
        fresh_clients(&listen, 40000, seed, 20, 1, 40);
        seed += 1;
        let m = Scrape::get(&[], &url);
        if m.one("tandem_store_refusing_new_leases", &[]) == 1.0 {
            assert_eq!(
                m.one("tandem_commit_failures_total", &[]),
                0.0,
                "a commit failed: {}",
                warnings(&log)
            );
            break;
        }
        assert!(
            seed < 20 && Instant::now() < end,
            "the store never filled: {:?}",
            (
                m.one("tandem_store_used_bytes", &[]),
                m.one("tandem_store_map_bytes", &[])
            )
        );
    }
    assert!(
        common::proc::read_lossy(&log).contains("no new leases until"),
        "{}",
        tail(&log, 10)
    );

    // Every customer renews; a new client is told no.
    let j = run_gen(
        &listen,
        &[
            "--clients",
            "300",
            "--seed",
            "1",
            "--rapid-commit",
            "--mode",
            "na",
            "--phases",
            "acquire,renew",
        ],
        60,
    );
    assert_eq!(
        j["phases"][0]["ok"], 300,
        "customers keep their bindings: {j}"
    );
    assert_eq!(j["phases"][1]["ok"], 300, "every renewal succeeds: {j}");
    let j = run_gen(
        &listen,
        &[
            "--clients",
            "5",
            "--seed",
            "200",
            "--rapid-commit",
            "--mode",
            "na",
            "--max-retries",
            "0",
            "--timeout-ms",
            "500",
        ],
        20,
    );
    assert_eq!(j["phases"][0]["ok"], 0, "a new client gets nothing: {j}");
    let m = Scrape::get(&[], &url);
    assert_eq!(
        m.one("tandem_commit_failures_total", &[]),
        0.0,
        "a commit failed: {}",
        warnings(&log)
    );
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}

/// Records of leases that ended are deleted `server.keep_ended_secs` after they ended, from the
/// lease table and from the store, so clients that come and go (fresh DUIDs) cannot fill the
/// store for ever; the resources go to new clients afterwards.
#[test]
fn records_of_long_ended_leases_are_deleted_from_the_store() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("[::1]:{}", common::proc::free_udp_port());
    let cfg = d.path().join("tandem.toml");
    let data = d.path().join("data");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = ["{listen}"]
data_dir = "{}"
rapid_commit = true
unicast_address = "::1"
sync = false
keep_ended_secs = 2
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::1:0-2001:db8:1::1:3ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/46", delegated_len = 56 }}]
[limits]
client_rate_per_sec = 0
"#,
            data.display()
        ),
    )
    .unwrap();
    let log = d.path().join("server.log");
    let _server = serve(
        &[
            "--log-level",
            "info,tandem_server=debug",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &log,
    );
    let records = |state: Option<&str>| -> usize {
        let mut cmd = std::process::Command::new(TANDEM);
        cmd.args(["leases", "--data-dir"]).arg(&data);
        if let Some(s) = state {
            cmd.args(["--state", s]);
        }
        let out = cmd.output().expect("tandem leases");
        assert!(out.status.success(), "tandem leases failed");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // 1,024 clients take every address and every prefix, then release them all.
    let j = run_gen(
        &listen,
        &[
            "--clients",
            "1024",
            "--seed",
            "3",
            "--rapid-commit",
            "--mode",
            "both",
            "--phases",
            "acquire,release",
        ],
        60,
    );
    assert_eq!(j["phases"][1]["ok"], 1024, "{j}");
    let released = records(Some("released"));
    assert_eq!(
        released, 2048,
        "every address and prefix has a released record"
    );
    // Two seconds after the releases, within a reclaim pass or two, the records are gone.
    let end = Instant::now() + Duration::from_secs(15);
    while records(None) > 0 {
        assert!(
            Instant::now() < end,
            "{} records still in the store 15 s after the releases; log:\n{}",
            records(None),
            tail(&log, 10)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        common::proc::read_lossy(&log)
            .contains("records of leases ended longer than keep_ended_secs deleted"),
        "{}",
        tail(&log, 10)
    );
    // The pool is whole again: 1,024 new clients get an address and a prefix each.
    let j = run_gen(
        &listen,
        &[
            "--clients",
            "1024",
            "--seed",
            "4",
            "--rapid-commit",
            "--mode",
            "both",
        ],
        60,
    );
    assert_eq!(j["phases"][0]["ok"], 1024, "{j}");
    assert_eq!(records(Some("active")), 2048);
}

/// Unmounts a tmpfs when dropped (also when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process still holding it open does not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A store that can no longer be written (its file system full): the committer tries the
/// failed commit again, holding its replies, and after 10 s gives up and stops the server with
/// exit code 3, instead of serving on with leases in memory that the disk does not have.
#[test]
fn a_store_that_cannot_be_written_stops_the_server() {
    if !common::tools::is_root() {
        common::tools::say_skipped(
            "a_store_that_cannot_be_written_stops_the_server",
            "mounting a small tmpfs needs root",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tandem-test",
            data.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    if !mounted.success() {
        // Root without the right to mount (a container).
        common::tools::say_skipped(
            "a_store_that_cannot_be_written_stops_the_server",
            "cannot mount a tmpfs here",
        );
        return;
    }
    let _unmount = Tmpfs(data.clone());
    let (mut server, log, listen) = common::proc::serve_config(
        d.path(),
        r#"unicast_address = "::1"
map_size_mib = 16
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::1:0-2001:db8:1::ffff:ffff" }]
[limits]
client_rate_per_sec = 0
"#,
    );
    // Fresh clients until the server stops: 1 MiB holds a few thousand leases, and a commit
    // that fails holds every later one behind it (bounded: 20 rounds of 2,000, at most 5 s
    // each).
    let mut seed = 1;
    while server.exited().is_none() && seed <= 20 {
        fresh_clients(&listen, 2000, seed, 5, 0, 20);
        seed += 1;
    }
    let text = common::proc::read_lossy(&log);
    assert!(
        text.contains("group commit failed; the same changes are tried again"),
        "the store never failed:\n{}",
        tail(&log, 20)
    );
    // 10 s of tries, then the stop (bounded at 60 s).
    let st = server
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still serving on a failed store:\n{}", tail(&log, 20)));
    assert_eq!(st.code(), Some(3), "{st}:\n{}", tail(&log, 20));
    let text = common::proc::read_lossy(&log);
    assert!(text.contains("giving up"), "{}", tail(&log, 20));
    assert!(
        text.contains("stopping: the store cannot be written"),
        "{}",
        tail(&log, 20)
    );
}
