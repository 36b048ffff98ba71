//! The `tandem` command line as an operator meets it: bad configuration, an unusable data dir
//! and an unbindable address are refused with a clear message and exit code before any socket
//! opens; a good one serves and stops cleanly on SIGTERM.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::proc::{HeldUdpPort, Proc, free_udp_port, read_lossy, serve, wait_log_line};
use nix::sys::signal::Signal;
use std::path::Path;

fn tandem(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tandem")
}

const GOOD: &str = r#"
[server]
listen = ["[::1]:PORT"]
data_dir = "DATA"
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::100-2001:db8:1::1ff" }]
"#;

/// Sends SIGTERM to `server`, checks it exits 0 within 10 s, and returns its log.
fn stop_with_sigterm(mut server: Proc, log: &Path) -> String {
    server.signal(Signal::SIGTERM);
    let st = server.wait_exit(Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "server did not stop cleanly on SIGTERM: {st:?}"
    );
    let log = read_lossy(log);
    assert!(log.contains("stopped"), "{log}");
    log
}

fn good(port: u16, data: &std::path::Path) -> String {
    GOOD.replace("PORT", &port.to_string())
        .replace("DATA", data.to_str().unwrap())
}

#[test]
fn check_config_reports_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("bad.toml");
    std::fs::write(
        &f,
        "[server]\nlisten = [\"[::1]:5547\"]\n[[subnet]]\nid = 1\nprefix = \"2001:db8::/64\"\npd_pools = [{ prefix = \"2001:db8:1::/60\", delegated_len = 48 }]\n",
    )
    .unwrap();
    let o = tandem(&["check-config", "--config", f.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:6:"), "{err}");
    assert!(err.contains("subnet[0].pd_pools[0].delegated_len"), "{err}");
}

#[test]
fn default_config_round_trips_through_check_config() {
    let d = tempfile::tempdir().unwrap();
    let o = tandem(&["print-default-config"], d.path());
    assert!(o.status.success());
    let f = d.path().join("default.toml");
    std::fs::write(&f, &o.stdout).unwrap();
    let o = tandem(&["check-config", "--config", f.to_str().unwrap()], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("listen: [::1]:5547"), "{out}");
    assert!(
        out.contains("2001:db8:8000::/33") || out.contains("x /56"),
        "{out}"
    );
}

#[test]
fn bad_config_exits_2_without_opening_a_socket() {
    let d = tempfile::tempdir().unwrap();
    // The configured port stays bound here (without SO_REUSEPORT) until the server has exited:
    // a server that touched the network before rejecting the config (its in-use probe or a
    // worker socket) would fail to bind it and exit 4 saying so, not 2. Freeing the port and
    // binding it again afterwards raced with whatever else took the freed port meanwhile.
    let held = HeldUdpPort::new();
    let f = d.path().join("overlap.toml");
    let text = good(held.port, &d.path().join("data")).replace(
        "pools = [{ range = \"2001:db8:1::100-2001:db8:1::1ff\" }]",
        "pools = [{ range = \"2001:db8:1::100-2001:db8:1::1ff\" }, { range = \"2001:db8:1::180-2001:db8:1::2ff\" }]",
    );
    std::fs::write(&f, text).unwrap();
    let o = tandem(&["serve", "--config", f.to_str().unwrap()], d.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("overlaps"), "{err}");
    assert!(
        !err.contains("bind") && !err.contains("in use"),
        "the server went for a socket before rejecting the config: {err}"
    );
    assert!(
        !d.path().join("data").exists(),
        "store must not be created for a bad config"
    );
    drop(held);
}

#[test]
fn unusable_data_dir_exits_3() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let f = d.path().join("c.toml");
    std::fs::write(&f, good(free_udp_port(), &file)).unwrap();
    let o = tandem(&["serve", "--config", f.to_str().unwrap()], d.path());
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("data dir"));
}

#[test]
fn unbindable_address_exits_4() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("c.toml");
    // A documentation address that is not configured on this machine.
    std::fs::write(
        &f,
        good(5547, &d.path().join("data")).replace("[::1]:5547", "[2001:db8:ffff::99]:5547"),
    )
    .unwrap();
    let o = tandem(&["serve", "--config", f.to_str().unwrap()], d.path());
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("bind"));
}

#[test]
fn second_server_on_the_same_store_is_refused_and_sigterm_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let f = d.path().join("c.toml");
    std::fs::write(&f, good(free_udp_port(), &data)).unwrap();
    let log = d.path().join("server.log");
    let server = serve(&["--config", f.to_str().unwrap()], &log);
    let f2 = d.path().join("c2.toml");
    std::fs::write(&f2, good(free_udp_port(), &data)).unwrap();
    let o = tandem(&["serve", "--config", f2.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another tandem"));
    stop_with_sigterm(server, &log);
}

#[test]
fn second_server_on_the_same_port_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let f1 = d.path().join("a.toml");
    std::fs::write(&f1, good(port, &d.path().join("data-a"))).unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--config", f1.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.path().join("data-a").join("data.mdb").exists() {
        assert!(Instant::now() < deadline, "first server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let f2 = d.path().join("b.toml");
    std::fs::write(&f2, good(port, &d.path().join("data-b"))).unwrap();
    let o = tandem(&["serve", "--config", f2.to_str().unwrap()], d.path());
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another process"));
}

#[test]
fn sighup_keeps_serving_and_says_what_it_did() {
    // `systemctl reload` and log rotators send SIGHUP; it used to kill the server.
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let f = d.path().join("c.toml");
    std::fs::write(&f, good(free_udp_port(), &data)).unwrap();
    let log_path = d.path().join("server.log");
    let mut server = serve(&["--config", f.to_str().unwrap()], &log_path);
    let within = Duration::from_secs(10);
    server.signal(Signal::SIGHUP);
    // The file is read again before it is broken below.
    wait_log_line(
        &mut server,
        &log_path,
        "configuration reloaded",
        within,
        "the server",
    );
    // A broken file on the next SIGHUP is reported; the server still runs.
    std::fs::write(&f, "[server]\nlisten = 5\n").unwrap();
    server.signal(Signal::SIGHUP);
    wait_log_line(
        &mut server,
        &log_path,
        "reload refused",
        within,
        "the server",
    );
    assert!(server.exited().is_none(), "the server exited on SIGHUP");
    let log = stop_with_sigterm(server, &log_path);
    assert!(
        log.contains("configuration reloaded") && log.contains("no change"),
        "{log}"
    );
    assert!(
        log.contains("reload refused") && log.contains("the running configuration stays"),
        "{log}"
    );
}

/// Issue 9's example of an ISP edge (relayed PD per line, DNS, reservations from a file, a
/// Leasequery allow-list, Bulk Leasequery, two prefixes on one link) is a valid
/// configuration, and says what it configures.
#[test]
fn the_isp_edge_example_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/isp-edge.toml");
    let d = tempfile::tempdir().unwrap();
    let o = tandem(&["check-config", "--config", example], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "subnet 1 2001:db8:100::/64 + 2001:db8:101::/64",
        "reservations: 4 (by hw-address, remote-id, interface-id)",
        "leasequery: 1 requestor prefixes; bulk (TCP) on [2001:db8:ff::53]:547",
        "options: 23 (32 B), 24 (13 B), 82 (4 B)",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
}

/// A printing command whose reader goes away (`| head`) ends without a panic.
#[test]
fn printing_into_a_closed_pipe_is_no_panic() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["print-default-config"][..],
        &[
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/isp-edge.toml"),
        ],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .current_dir(d.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before anything is written
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
