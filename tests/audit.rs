//! The audit log of a real `tandem serve`: tandem-gen, acting as a relay, acquires, renews and
//! releases an address and a prefix for each of 5 clients; every change is one JSON line with
//! the client, the lease and the relay's identifiers; leases that run out are logged as
//! expired; after logrotate-style renaming, SIGHUP makes the server write to a new file.

mod common;

use common::GEN;
use common::proc::{free_udp_port, serve, tail};
use std::path::Path;
use std::time::{Duration, Instant};

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A server on [::1]:`port` with its store in `data`, its audit log at `audit`, reclaiming
/// every 100 ms, and leases of 2 s preferred, 3 s valid.
fn server_config(port: u16, data: &Path, audit: &Path) -> String {
    format!(
        r#"[server]
listen = ["[::1]:{port}"]
data_dir = "{}"
audit_log = "{}"
reclaim_interval_ms = 100
[lease]
preferred_lifetime_secs = 2
valid_lifetime_secs = 3
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::100-2001:db8:1::1ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/40", delegated_len = 56 }}]
"#,
        data.display(),
        audit.display()
    )
}

/// tandem-gen as a relay to the servers on [::1]:`ports`, 5 clients asking for an address and
/// a prefix, with `extra` arguments; it must succeed.
fn relay_clients(ports: &[u16], extra: &[&str]) {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-k", "2", "30", GEN]);
    for p in ports {
        cmd.args(["--server", &format!("[::1]:{p}")]);
    }
    let out = cmd
        .args([
            "--relay-link",
            "2001:db8:1::",
            "--clients",
            "5",
            "--mode",
            "both",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn count(v: &[serde_json::Value], event: &str) -> usize {
    v.iter().filter(|l| l["event"] == event).count()
}

#[test]
fn every_lease_change_is_one_json_line_with_the_relay() {
    let d = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let audit = d.path().join("audit.log");
    let cfg = d.path().join("tandem.toml");
    std::fs::write(&cfg, server_config(port, &d.path().join("data"), &audit)).unwrap();
    let log = d.path().join("server.log");
    let mut server = serve(&["--config", cfg.to_str().unwrap()], &log);
    let run_gen = |seed: &str, phases: &str| {
        relay_clients(&[port], &["--seed", seed, "--phases", phases]);
    };
    run_gen("1", "acquire,renew,release");
    let v = lines(&audit);
    assert_eq!(
        (
            count(&v, "granted"),
            count(&v, "renewed"),
            count(&v, "released")
        ),
        (10, 10, 10),
        "{v:?}"
    );
    let g = v.iter().find(|l| l["event"] == "granted").unwrap();
    assert_eq!(g["link_address"], "2001:db8:1::");
    assert_eq!(g["relay"], "::1");
    assert!(
        g["interface_id"].is_string(),
        "tandem-gen's relay sends an Interface-Id: {g}"
    );
    assert_eq!(g["via"], "Request");
    assert!(g["duid"].as_str().unwrap().len() >= 6);

    // logrotate: move the file, reload, and the next lines go to a new file.
    let rotated = d.path().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    // The reload reopens (creates) the file at its path.
    let end = Instant::now() + Duration::from_secs(10);
    while !audit.exists() {
        assert!(
            Instant::now() < end,
            "the audit log was not reopened on SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run_gen("2", "acquire");
    assert_eq!(count(&lines(&audit), "granted"), 10);
    assert_eq!(
        lines(&rotated).len(),
        30,
        "nothing more in the rotated file"
    );
    // Those leases run out after 3 s: reclaimed, and logged as expired.
    let end = Instant::now() + Duration::from_secs(10);
    while count(&lines(&audit), "expired") < 10 {
        assert!(
            Instant::now() < end,
            "no expired lines: {}",
            tail(&audit, 5)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = lines(&audit)
        .into_iter()
        .find(|l| l["event"] == "expired")
        .unwrap();
    assert!(e.get("via").is_none() && e.get("relay").is_none(), "{e}");
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}

/// In a failover pair the partner thread, not the committer, reclaims expired leases (its
/// partner must hear of them): those expiries are audited too, by each server.
#[test]
fn a_pair_audits_the_expiries_its_partner_thread_reclaims() {
    let d = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("audit pair CA");
    std::fs::write(d.path().join("ca.pem"), &ca.cert_pem).unwrap();
    ca.write_leaf("tandem-a", d.path(), "a");
    ca.write_leaf("tandem-b", d.path(), "b");
    let link = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let config = |name: &str, port: u16, role: &str, partner: &str| {
        let p = d.path();
        // Failover takes leases of 30 s at least (RFC 8156 §1); the first grant lasts MCLT
        // (2 s) anyway, and the clients here never renew.
        server_config(
            port,
            &p.join(format!("data-{name}")),
            &p.join(format!("audit-{name}.log")),
        )
        .replace("valid_lifetime_secs = 3\n", "valid_lifetime_secs = 30\n")
            + &format!(
                "[failover]\nrole = \"{role}\"\nrelationship = \"audit-pair\"\n\
             partner = \"[::1]:{link}\"\nlisten = \"[::1]:{link}\"\npartner_name = \"tandem-{partner}\"\n\
             ca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\nmclt_secs = 2\n",
                ca = p.join("ca.pem").display(),
                cert = p.join(format!("{name}.pem")).display(),
                key = p.join(format!("{name}.key")).display(),
            )
    };
    std::fs::write(d.path().join("a.toml"), config("a", pa, "primary", "b")).unwrap();
    std::fs::write(d.path().join("b.toml"), config("b", pb, "secondary", "a")).unwrap();
    let la = d.path().join("a.log");
    let lb = d.path().join("b.log");
    let mut a = serve(
        &["--config", d.path().join("a.toml").to_str().unwrap()],
        &la,
    );
    let mut b = serve(
        &["--config", d.path().join("b.toml").to_str().unwrap()],
        &lb,
    );
    let normal = |name: &str| {
        let out = std::process::Command::new(common::TANDEM)
            .args(["ctl", "--socket"])
            .arg(d.path().join(format!("data-{name}/control.sock")))
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("state: NORMAL")
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !(normal("a") && normal("b")) {
        assert!(
            Instant::now() < end,
            "not NORMAL: {}\n{}",
            tail(&la, 10),
            tail(&lb, 10)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    relay_clients(&[pa, pb], &[]);
    let audit_a = d.path().join("audit-a.log");
    assert_eq!(
        count(&lines(&audit_a), "granted"),
        10,
        "{}",
        tail(&audit_a, 12)
    );
    // The leases run out after 3 s; the primary's partner thread reclaims them.
    let end = Instant::now() + Duration::from_secs(15);
    while count(&lines(&audit_a), "expired") < 10 {
        assert!(
            Instant::now() < end,
            "the primary audited {} expiries, want 10: {}",
            count(&lines(&audit_a), "expired"),
            tail(&audit_a, 5)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(a.exited().is_none(), "{}", tail(&la, 20));
    assert!(b.exited().is_none(), "{}", tail(&lb, 20));
}
