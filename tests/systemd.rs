//! Running under systemd: the shipped unit passes `systemd-analyze verify` without a warning;
//! the server speaks the notify protocol (READY=1 once serving, WATCHDOG=1 at half of
//! WATCHDOG_USEC while its workers report, STOPPING=1 on SIGTERM) to a NOTIFY_SOCKET the test
//! binds, as systemd would; and it serves as an unprivileged user holding only
//! CAP_NET_BIND_SERVICE, on port 547 in a namespace of its own (`tdmsd`), and fails with exit
//! code 4 and the reason without the capability.

mod common;

use common::netns::Netns;
use common::proc::{Proc, free_udp_port, read_lossy, tail, wait_log_line};
use common::tools::{find_tool, skip_netns};
use common::{GEN, TANDEM};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let analyze = find_tool("systemd-analyze")
        .expect("systemd-analyze missing: tools/test.sh installs Debian's systemd");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/tandem.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/tandem serve"));
    // verify checks that ExecStart's program exists: point it at this build.
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("tandem.service");
    std::fs::write(&f, unit.replace("/usr/local/bin/tandem", TANDEM)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&f)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // An unknown or misspelt directive is only a warning: there must be none.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("tandem.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze warns:\n{err}");
}

/// Datagrams received on `sock` until `until` holds for one of them or `within` passes.
fn wait_for(sock: &UnixDatagram, got: &mut Vec<String>, within: Duration, until: &str) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = m.contains(until);
            got.push(m);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn notifies_ready_feeds_the_watchdog_and_says_stopping() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = d.path().join("server.log");
    let mut cmd = Command::new(TANDEM);
    cmd.args(["serve", "--listen", &format!("[::1]:{}", free_udp_port())])
        .arg("--data-dir")
        .arg(d.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000");
    let server = Proc::spawn_cmd("tandem serve", cmd, &log);
    let mut got = Vec::new();
    assert!(
        wait_for(&sock, &mut got, Duration::from_secs(15), "READY=1"),
        "no READY=1 (got {got:?}); log:\n{}",
        tail(&log, 20)
    );
    assert!(read_lossy(&log).contains("serving; stop with"));
    // Half of WATCHDOG_USEC: a ping about every 0.5 s once the workers have reported.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        got.clear();
        assert!(
            wait_for(&sock, &mut got, Duration::from_secs(5), "WATCHDOG=1"),
            "no WATCHDOG=1 within 5 s (got {got:?}); log:\n{}",
            tail(&log, 20)
        );
        pings += 1;
    }
    assert!(start.elapsed() < Duration::from_secs(8));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    got.clear();
    assert!(
        wait_for(&sock, &mut got, Duration::from_secs(10), "STOPPING=1"),
        "no STOPPING=1 (got {got:?})"
    );
}

#[test]
fn serves_as_an_unprivileged_user_with_only_cap_net_bind_service() {
    if skip_netns("serves_as_an_unprivileged_user_with_only_cap_net_bind_service") {
        return;
    }
    let setpriv = find_tool("setpriv").expect("setpriv (util-linux) missing");
    let ns = Netns::new("tdmsd");
    // A directory the unprivileged user can reach, with a data dir it owns.
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = d.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let run_as_nobody = |caps: &[&str], log: &std::path::Path| {
        let mut cmd = ns.cmd(&setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(caps)
            .args(["--", TANDEM, "serve", "--listen", "[::1]:547", "--data-dir"])
            .arg(&data);
        Proc::spawn_cmd("tandem serve (nobody)", cmd, log)
    };

    // Without the capability: port 547 cannot be bound; exit 4 says so.
    let log = d.path().join("nocap.log");
    let mut p = run_as_nobody(&["--inh-caps=-all", "--bounding-set=-all"], &log);
    let st = p.wait_exit(Duration::from_secs(15));
    assert_eq!(st.and_then(|s| s.code()), Some(4), "{}", tail(&log, 10));
    assert!(read_lossy(&log).contains("547"), "{}", tail(&log, 10));

    // With CAP_NET_BIND_SERVICE only (ambient, so it survives exec): it serves.
    let log = d.path().join("cap.log");
    let mut p = run_as_nobody(
        &[
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
        ],
        &log,
    );
    wait_log_line(
        &mut p,
        &log,
        "serving; stop with",
        Duration::from_secs(15),
        "tandem serve",
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), "65534", "runs as nobody");
    // CapEff holds bit 10 (CAP_NET_BIND_SERVICE) and nothing else.
    assert_eq!(field("CapEff:"), format!("{:016x}", 1u64 << 10), "{status}");
    let out = ns
        .cmd(GEN)
        .args(["--server", "[::1]:547", "--clients", "20", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tandem-gen: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(json["phases"][0]["ok"], 20, "{json}");
    assert!(p.exited().is_none(), "{}", tail(&log, 10));
}
