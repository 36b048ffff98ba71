//! `/metrics` of a real `tandem serve`, read with Prometheus' own parser: the format is what
//! Prometheus accepts, and the values match the traffic tandem-gen sent (every message counted
//! once by type, every lease change once, pools back to empty after the releases, the commit
//! histograms adding up to the lease counters). The pair's failover gauges are checked in
//! tests/failover_pair.rs.

mod common;

use common::proc::{free_udp_port, serve, tail};
use common::prom::{Scrape, http_get, metric_names_in, promtool_ok, shipped_examples};
use common::{GEN, TANDEM};
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

/// The URL the server logged for its metrics listener (it was given port 0).
fn metrics_url(log: &Path) -> String {
    let text = common::proc::read_lossy(log);
    let line = text
        .lines()
        .find(|l| l.contains("metrics at http://"))
        .unwrap_or_else(|| panic!("no `metrics at` line in the log:\n{text}"));
    let start = line.find("http://").unwrap();
    line[start..].split_whitespace().next().unwrap().to_string()
}

/// Scrapes until `ready` holds (workers report every second), at most 10 s.
fn scrape_until(url: &str, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = Scrape::get(&[], url);
        if ready(&s) {
            return s;
        }
        assert!(Instant::now() < end, "metrics never showed {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const TYPES: [&str; 4] = ["solicit", "request", "renew", "release"];

#[test]
fn metrics_count_the_traffic_sent_and_parse_as_prometheus_text() {
    let d = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let log = d.path().join("server.log");
    let listen = format!("[::1]:{port}");
    let data = d.path().join("data").display().to_string();
    let mut server = serve(
        &[
            "--listen",
            &listen,
            "--data-dir",
            &data,
            "--metrics-listen",
            "[::1]:0",
            "--no-sync",
        ],
        &log,
    );
    let url = metrics_url(&log);

    // Before any traffic: the pools of the embedded default, nothing counted.
    let s = Scrape::get(&[], &url);
    assert_eq!(s.one("tandem_build_info", &[]), 1.0);
    assert_eq!(s.sum("tandem_packets_received_total", &[]), 0.0);
    // The embedded default: 2001:db8:1::1:0 to 2001:db8:1::ffff:ffff, and /56s of a /33.
    assert_eq!(
        s.one("tandem_pool_resources", &[("kind", "address")]),
        4_294_901_760.0
    );
    assert_eq!(
        s.one("tandem_pool_resources", &[("kind", "prefix")]),
        8_388_608.0
    );
    assert_eq!(s.sum("tandem_pool_active", &[]), 0.0);
    assert!(
        !s.has("tandem_failover_link_up"),
        "a server without a partner has no failover gauges"
    );

    // 200 clients, each with an address and a prefix: acquire, renew, release.
    let clients = 200.0;
    let out = std::process::Command::new("timeout")
        .args(["-k", "2", "60", GEN, "--server", &listen])
        .args(["--clients", "200", "--window", "16", "--mode", "both"])
        .args(["--phases", "acquire,renew,release", "--json"])
        .output()
        .expect("run tandem-gen");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tandem-gen output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let phases = json["phases"].as_array().expect("phases");
    for p in phases {
        assert_eq!(p["ok"].as_f64(), Some(clients), "phase {}", p["phase"]);
    }
    let retransmits: f64 = phases
        .iter()
        .map(|p| p["retransmits"].as_f64().unwrap())
        .sum();
    // Acquire sends a Solicit and a Request per client, renew and release one message each.
    let sent = 4.0 * clients + retransmits;
    // The workers' counters, the group commit's (every 250 ms) and the pools (live) are
    // published apart: wait for each to have seen the end of the run.
    let s = scrape_until(
        &url,
        "every message tandem-gen sent, and its releases stored",
        |s| {
            s.sum("tandem_packets_received_total", &[]) >= sent
                && s.sum("tandem_pool_active", &[]) == 0.0
                && s.one("tandem_leases_written_total", &[("state", "released")]) >= 400.0
        },
    );
    assert_eq!(s.sum("tandem_packets_received_total", &[]), sent);
    for t in TYPES {
        let got = s.one("tandem_packets_received_total", &[("type", t)]);
        assert!(
            got >= clients && got <= clients + retransmits,
            "{t}: {got} received"
        );
        assert_eq!(
            s.one("tandem_packets_answered_total", &[("type", t)]),
            got,
            "{t}: every one answered"
        );
    }
    assert_eq!(s.sum("tandem_packets_dropped_total", &[]), 0.0);
    if retransmits == 0.0 {
        // Each exchange changed both of the client's leases once.
        for (event, n) in [("granted", 400.0), ("renewed", 400.0), ("released", 400.0)] {
            assert_eq!(
                s.one("tandem_lease_events_total", &[("event", event)]),
                n,
                "{event}"
            );
        }
        assert_eq!(
            s.one("tandem_lease_events_total", &[("event", "declined")]),
            0.0
        );
    }
    // Advertise goes out at once; the rest waited for their leases to be durable.
    assert_eq!(
        s.one("tandem_replies_sent_total", &[("path", "now")]),
        s.one("tandem_packets_answered_total", &[("type", "solicit")])
    );
    assert_eq!(
        s.one("tandem_replies_sent_total", &[("path", "after_commit")]),
        s.sum("tandem_packets_answered_total", &[])
            - s.one("tandem_packets_answered_total", &[("type", "solicit")])
    );
    for path in ["now", "after_commit"] {
        assert_eq!(
            s.one("tandem_reply_latency_seconds_count", &[("path", path)]),
            s.one("tandem_replies_sent_total", &[("path", path)]),
            "{path}: one latency per reply"
        );
        assert_eq!(
            s.one(
                "tandem_reply_latency_seconds_bucket",
                &[("path", path), ("le", "+Inf")]
            ),
            s.one("tandem_reply_latency_seconds_count", &[("path", path)])
        );
    }
    // The commit histograms add up to the lease counters.
    assert_eq!(
        s.one("tandem_commit_batch_leases_sum", &[]),
        s.sum("tandem_leases_written_total", &[])
    );
    assert_eq!(
        s.one("tandem_commit_batch_leases_count", &[]),
        s.one("tandem_commits_total", &[])
    );
    assert_eq!(
        s.one("tandem_commit_duration_seconds_count", &[]),
        s.one("tandem_commits_total", &[])
    );
    // Idle, the group committer folds the store's journal into the lease database.
    let s = scrape_until(&url, "the journal folded while idle", |s| {
        s.one("tandem_store_journal_folds_total", &[]) >= 1.0
    });
    assert_eq!(
        s.one("tandem_store_journal_fold_duration_seconds_count", &[]),
        s.one("tandem_store_journal_folds_total", &[])
    );
    assert_eq!(s.one("tandem_store_journal_fold_failures_total", &[]), 0.0);
    assert_eq!(s.sum("tandem_pool_active", &[]), 0.0, "all released");

    // A datagram that is not DHCPv6 is dropped and counted with its reason.
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.send_to(&[1, 2, 3], listen.as_str()).unwrap();
    let s = scrape_until(&url, "the dropped datagram", |s| {
        s.sum("tandem_packets_dropped_total", &[]) >= 1.0
    });
    assert_eq!(s.sum("tandem_packets_dropped_total", &[]), 1.0);

    // promtool's linter accepts the text (names, units, _total on counters, HELP and TYPE).
    let (head, body) = http_get(&url);
    assert!(head.contains(" 200 "), "{head}");
    promtool_ok(&["check", "metrics"], &body);

    // Every metric the shipped dashboard and alert rules query exists (the failover ones are
    // checked against a pair in tests/failover_pair.rs).
    for name in metric_names_in(&shipped_examples()) {
        if !name.starts_with("tandem_failover_") {
            assert!(
                s.has(&name),
                "docs/examples query {name}, which /metrics lacks"
            );
        }
    }

    // Anything but /metrics is a 404 that says where the metrics are.
    let (head, body) = http_get(&url.replace("/metrics", "/nope"));
    assert!(head.contains(" 404 "), "{head}");
    assert!(body.contains("/metrics"), "{body}");

    assert!(server.exited().is_none(), "server died: {}", tail(&log, 20));
}

#[test]
fn a_metrics_address_in_use_stops_the_start_with_exit_4() {
    let d = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("[::1]:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new("timeout")
        .args(["-k", "2", "20", TANDEM, "serve", "--listen"])
        .arg(format!("[::1]:{}", free_udp_port()))
        .arg("--data-dir")
        .arg(d.path().join("data"))
        .args(["--metrics-listen", &at])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("server.metrics_listen"), "{err}");
}

#[test]
fn shipped_alert_rules_and_dashboard_queries_are_valid_promql() {
    let root = env!("CARGO_MANIFEST_DIR");
    promtool_ok(
        &[
            "check",
            "rules",
            &format!("{root}/docs/examples/alerts.yml"),
        ],
        "",
    );
    // The alerts fire on the series that should fire them, and only then.
    promtool_ok(
        &[
            "test",
            "rules",
            &format!("{root}/tests/fixtures/alerts-test.yml"),
        ],
        "",
    );
    // Each dashboard query, with Grafana's variables filled in, as a recording rule: promtool
    // parses it as Prometheus would.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/examples/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard_query_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(n >= 10, "only {n} dashboard queries");
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("dashboard-rules.yml");
    std::fs::write(&f, rules).unwrap();
    promtool_ok(&["check", "rules", f.to_str().unwrap()], "");
}
