//! m-to-1 on real processes: one `tandem serve` (the hub) in two failover relationships, each
//! with its own partner (a spoke) and its own subnet. Each server runs in a network namespace of
//! its own (`tdmhubh`, `tdmhub1`, `tdmhub2`), joined by veths to a bridge in the relay side's
//! (`tdmhubr`), where tandem-gen runs; all deleted afterwards, also when the test fails. The hub
//! is secondary to one spoke and primary to the other, so both roles run side by side in one
//! process.
//!
//! - both relationships reach NORMAL; clients of each subnet, relayed to the hub and that
//!   subnet's spoke, are served, and each binding reaches exactly the two servers sharing it;
//! - kill -9 of one spoke moves only its relationship out of NORMAL: the other keeps its link
//!   and its state, and clients of both subnets are still served;
//! - `tandem ctl status` and `/metrics` show each relationship; `partner-down` names one.
//!
//! Needs root (namespaces); skipped with TANDEM_SKIP_NETNS=1.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::leases::parse_row;
use common::netns::Lan;
use common::pki::Ca;
use common::proc::{Server, tail_str};
use common::prom::Scrape;
use common::tools::skip_netns;
use common::{GEN, TANDEM, one_at_a_time};

/// Addresses of the hub, the spokes and the relay side on the segment.
const ADDR_HUB: &str = "2001:db8:ff::10";
const ADDR_S1: &str = "2001:db8:ff::11";
const ADDR_S2: &str = "2001:db8:ff::12";
const ADDR_RELAY: &str = "2001:db8:ff::1";
/// DHCPv6 ports of the hub and the two spokes.
const PORT_HUB: u16 = 5611;
const PORT_S1: u16 = 5612;
const PORT_S2: u16 = 5613;
/// Partner links: the hub listens for spoke 1 (its primary); spoke 2 listens for the hub.
const LINK_S1: u16 = 6481;
const LINK_S2: u16 = 6482;
const METRICS_HUB: u16 = 9611;

struct Hub {
    /// The hub's and the spokes' namespaces on the relay side's bridge.
    lan: Lan,
    dir: tempfile::TempDir,
    servers: BTreeMap<&'static str, Server>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The `[[subnet]]` with id `id` (2001:db8:<id>::/64, addresses and /56 prefixes).
fn subnet(id: u32) -> String {
    format!(
        "[[subnet]]\nid = {id}\nprefix = \"2001:db8:{id}::/64\"\npools = [{{ prefix = \"2001:db8:{id}::/64\" }}]\npd_pools = [{{ prefix = \"2001:db8:{id}00::/40\", delegated_len = 56 }}]\n"
    )
}

impl Hub {
    fn new() -> Hub {
        let turn = one_at_a_time();
        let lan = Lan::new(
            "hub",
            &format!("{ADDR_RELAY}/64"),
            &[
                ("h", &format!("{ADDR_HUB}/64")),
                ("1", &format!("{ADDR_S1}/64")),
                ("2", &format!("{ADDR_S2}/64")),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("hub CA");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        for n in ["hub", "s1", "s2"] {
            ca.write_leaf(&format!("tandem-{n}"), dir.path(), n);
        }
        Hub {
            lan,
            dir,
            servers: BTreeMap::new(),
            _turn: turn,
        }
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("data-{name}"))
    }

    /// One `[[failover]]` section.
    fn section(
        &self,
        me: &str,
        rel: &str,
        role: &str,
        link: u16,
        partner: &str,
        subnets: &str,
    ) -> String {
        let d = self.dir.path().display();
        // The secondary's address: where it listens and its primary connects.
        let secondary = if role == "secondary" { me } else { partner };
        let addr = format!("[{}]:{link}", addr_of(secondary));
        let (partner_line, listen_line) = if role == "primary" {
            (format!("partner = \"{addr}\"\n"), String::new())
        } else {
            (String::new(), format!("listen = \"{addr}\"\n"))
        };
        format!(
            "[[failover]]\nrole = \"{role}\"\nrelationship = \"{rel}\"\n{partner_line}{listen_line}subnets = [{subnets}]\npartner_name = \"tandem-{partner}\"\nca = \"{d}/ca.pem\"\ncert = \"{d}/{me}.pem\"\nkey = \"{d}/{me}.key\"\nmclt_secs = 5\n"
        )
    }

    fn start(&mut self, name: &'static str) {
        let (port, body) = match name {
            "hub" => (
                PORT_HUB,
                format!(
                    "metrics_listen = \"[{ADDR_HUB}]:{METRICS_HUB}\"\n{}{}{}{}",
                    subnet(1),
                    subnet(2),
                    self.section("hub", "edge-1", "secondary", LINK_S1, "s1", "1"),
                    self.section("hub", "edge-2", "primary", LINK_S2, "s2", "2"),
                ),
            ),
            "s1" => (
                PORT_S1,
                format!(
                    "{}{}",
                    subnet(1),
                    self.section("s1", "edge-1", "primary", LINK_S1, "hub", "1")
                ),
            ),
            _ => (
                PORT_S2,
                format!(
                    "{}{}",
                    subnet(2),
                    self.section("s2", "edge-2", "secondary", LINK_S2, "hub", "2")
                ),
            ),
        };
        // `metrics_listen` belongs to [server]: it comes first in the hub's body.
        let (server_extra, rest) = match body.split_once("[[subnet]]") {
            Some((extra, rest)) => (extra.to_string(), format!("[[subnet]]{rest}")),
            None => (String::new(), body),
        };
        let cfg = format!(
            "[server]\nlisten = [\"[{}]:{port}\"]\ndata_dir = \"{}\"\nworkers = 1\nrapid_commit = true\n{server_extra}[lease]\npreferred_lifetime_secs = 600\nvalid_lifetime_secs = 1200\n{rest}",
            addr_of(name),
            self.data(name).display()
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let ns = &self.lan.members[match name {
            "hub" => 0,
            "s1" => 1,
            _ => 2,
        }];
        let mut cmd = ns.cmd(TANDEM);
        cmd.args(["serve", "--config"]).arg(&path);
        self.servers.insert(name, Server::spawn(cmd, &log));
    }

    fn log(&self, name: &str) -> String {
        tail_str(&self.servers[name].log_text(), 40)
    }

    /// `tandem ctl` on server `name`'s socket: (exit success, stdout).
    fn ctl(&self, name: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(TANDEM)
            .args(["ctl", "--socket"])
            .arg(self.data(name).join("control.sock"))
            .args(args)
            .output()
            .expect("tandem ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Status per relationship: name -> key/value pairs (each block starts at `role:`).
    fn status(&self, name: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        relationships(&self.ctl(name, &["status"]).1)
    }

    /// Waits until relationship `rel` of server `name` is in `state`.
    fn wait_state(&self, name: &str, rel: &str, state: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(name);
            let now = st.get(rel).and_then(|r| r.get("state")).cloned();
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{name}: relationship {rel} not {state} within {secs} s (status {st:?})\nlog:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until relationship `rel` of `name` owes its partner nothing.
    fn wait_drained(&self, name: &str, rel: &str, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(name);
            let r = st.get(rel);
            if r.and_then(|r| r.get("update_backlog")).map(String::as_str) == Some("0")
                && r.and_then(|r| r.get("unacked_updates")).map(String::as_str) == Some("0")
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "{name}: relationship {rel} not drained within {secs} s (status {st:?})\nlog:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// tandem-gen as a relay on `link` to `servers`; the leases the clients hold
    /// ("addr/len" -> DUID hex). Fails the test if any client was not served.
    fn load(
        &self,
        servers: &[&str],
        link: &str,
        clients: u32,
        seed: u32,
    ) -> BTreeMap<String, String> {
        let held = self.dir.path().join(format!("held-{seed}.tsv"));
        let mut cmd = self.lan.hub.cmd("timeout");
        cmd.args(["-k", "2", "60", GEN]);
        for name in servers {
            cmd.args([
                "--server",
                &format!("[{}]:{}", addr_of(name), port_of(name)),
            ]);
        }
        let clients = clients.to_string();
        let seed = seed.to_string();
        cmd.args([
            "--relay-link",
            link,
            "--clients",
            &clients,
            "--rate",
            "500",
            "--mode",
            "both",
            "--seed",
            &seed,
            "--json",
            "--leases-out",
        ])
        .arg(&held);
        let out = cmd.output().expect("run tandem-gen");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "tandem-gen output is not JSON ({e}), exit {}:\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        for p in json["phases"].as_array().expect("phases") {
            assert_eq!(
                p["ok"], p["started"],
                "clients on {link} not all served in phase {}: {json}",
                p["phase"]
            );
        }
        assert!(out.status.success(), "tandem-gen failed: {json}");
        std::fs::read_to_string(&held)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 4).then(|| (f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }

    /// Active leases in `name`'s store: "addr/len" -> DUID hex.
    fn active(&self, name: &str) -> BTreeMap<String, String> {
        let out = Command::new(TANDEM)
            .args(["leases", "--state", "active", "--data-dir"])
            .arg(self.data(name))
            .output()
            .expect("tandem leases");
        assert!(out.status.success(), "tandem leases failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let r = parse_row(l).unwrap_or_else(|| panic!("not a `tandem leases` row: {l}"));
                (format!("{}/{}", r.addr, r.len), r.duid)
            })
            .collect()
    }
}

/// Server `name`'s address on the segment.
fn addr_of(name: &str) -> &'static str {
    match name {
        "hub" => ADDR_HUB,
        "s1" => ADDR_S1,
        _ => ADDR_S2,
    }
}

/// Server `name`'s DHCPv6 port.
fn port_of(name: &str) -> u16 {
    match name {
        "hub" => PORT_HUB,
        "s1" => PORT_S1,
        _ => PORT_S2,
    }
}

/// `tandem ctl status` text as relationship name -> its key/value pairs.
fn relationships(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut cur: Option<BTreeMap<String, String>> = None;
    let mut flush = |cur: &mut Option<BTreeMap<String, String>>| {
        if let Some(m) = cur.take()
            && let Some(name) = m.get("relationship").cloned()
        {
            out.insert(name, m);
        }
    };
    for (k, v) in text.lines().filter_map(|l| l.split_once(": ")) {
        if k == "role" {
            flush(&mut cur);
            cur = Some(BTreeMap::new());
        }
        if let Some(m) = cur.as_mut() {
            m.insert(k.to_string(), v.to_string());
        }
    }
    flush(&mut cur);
    out
}

/// Whether every lease in `held` is active in `store` for the same client.
fn missing<'a>(
    held: &'a BTreeMap<String, String>,
    store: &BTreeMap<String, String>,
) -> Vec<&'a String> {
    held.iter()
        .filter(|(l, d)| store.get(*l) != Some(*d))
        .map(|(l, _)| l)
        .collect()
}

/// Whether a lease ("addr/len") is in subnet `id`'s pools: 2001:db8:<id>::/64 and
/// 2001:db8:<id>00::/40 (nothing else starts with `2001:db8:<id>`).
fn in_subnet(lease: &str, id: u32) -> bool {
    lease.starts_with(&format!("2001:db8:{id}"))
}

/// The first few leases of `m` not in subnet `id` (none: all are).
fn outside(m: &BTreeMap<String, String>, id: u32) -> Vec<&String> {
    m.keys().filter(|l| !in_subnet(l, id)).take(5).collect()
}

#[test]
fn a_hub_serves_two_relationships_and_one_spokes_crash_leaves_the_other_normal() {
    if skip_netns("a_hub_serves_two_relationships_and_one_spokes_crash_leaves_the_other_normal") {
        return;
    }
    let mut h = Hub::new();
    h.start("s2");
    h.start("hub");
    h.start("s1");
    for (name, rel) in [
        ("hub", "edge-1"),
        ("hub", "edge-2"),
        ("s1", "edge-1"),
        ("s2", "edge-2"),
    ] {
        h.wait_state(name, rel, "NORMAL", 30);
    }
    let st = h.status("hub");
    assert_eq!(
        st.keys().cloned().collect::<Vec<_>>(),
        vec!["edge-1".to_string(), "edge-2".to_string()],
        "the hub's status names both relationships"
    );
    assert_eq!(st["edge-1"]["role"], "secondary");
    assert_eq!(st["edge-2"]["role"], "primary");

    // Clients of each subnet, relayed to the hub and to that subnet's spoke.
    let one = h.load(&["hub", "s1"], "2001:db8:1::", 200, 41);
    let two = h.load(&["hub", "s2"], "2001:db8:2::", 200, 42);
    assert_eq!(
        (one.len(), two.len()),
        (400, 400),
        "an address and a prefix each"
    );
    assert_eq!(outside(&one, 1), Vec::<&String>::new());
    assert_eq!(outside(&two, 2), Vec::<&String>::new());
    h.wait_drained("hub", "edge-1", 20);
    h.wait_drained("hub", "edge-2", 20);
    h.wait_drained("s1", "edge-1", 20);
    h.wait_drained("s2", "edge-2", 20);
    // Each binding is on both servers that share its subnet, and only there.
    let (hub, s1, s2) = (h.active("hub"), h.active("s1"), h.active("s2"));
    for (server, store, held) in [
        ("hub", &hub, &one),
        ("hub", &hub, &two),
        ("s1", &s1, &one),
        ("s2", &s2, &two),
    ] {
        let m = missing(held, store);
        assert!(
            m.is_empty(),
            "{server} lacks {} leases, e.g. {:?}",
            m.len(),
            &m[..m.len().min(5)]
        );
    }
    // A spoke hears only of its own relationship's bindings.
    assert_eq!(outside(&s1, 1), Vec::<&String>::new());
    assert_eq!(outside(&s2, 2), Vec::<&String>::new());

    // /metrics: every failover family once, a series per relationship.
    let m = Scrape::get(
        &h.lan.hub.exec(),
        &format!("http://[{ADDR_HUB}]:{METRICS_HUB}/metrics"),
    );
    let normal: BTreeSet<String> = m
        .samples
        .iter()
        .filter(|(n, l, v)| {
            n == "tandem_failover_state"
                && l.get("state").map(String::as_str) == Some("NORMAL")
                && *v == 1.0
        })
        .filter_map(|(_, l, _)| l.get("relationship").cloned())
        .collect();
    assert_eq!(
        normal,
        BTreeSet::from(["edge-1".to_string(), "edge-2".to_string()])
    );

    // Spoke 1 dies: only edge-1 leaves NORMAL.
    h.servers.get_mut("s1").unwrap().kill9();
    h.wait_state("hub", "edge-1", "COMMUNICATIONS-INTERRUPTED", 20);
    let st = h.status("hub");
    assert_eq!(st["edge-2"]["state"], "NORMAL", "{st:?}");
    assert!(st["edge-2"]["link"].starts_with("up"), "{st:?}");
    // Both subnets are still served: subnet 1 by the hub alone, subnet 2 by the pair.
    let alone = h.load(&["hub"], "2001:db8:1::", 50, 43);
    assert_eq!(alone.len(), 100);
    let more = h.load(&["hub", "s2"], "2001:db8:2::", 50, 44);
    assert_eq!(more.len(), 100);

    // partner-down names its relationship.
    let (ok, text) = h.ctl("hub", &["partner-down"]);
    assert!(!ok || text.starts_with("error"), "{text}");
    assert!(text.contains("--relationship"), "{text}");
    let (_, text) = h.ctl("hub", &["partner-down", "--relationship", "nope"]);
    assert!(text.contains("no relationship is named `nope`"), "{text}");
    let (_, text) = h.ctl("hub", &["partner-down", "--relationship", "edge-1"]);
    assert!(
        text.starts_with("ok: state PARTNER-DOWN"),
        "{text}\nlog:\n{}",
        h.log("hub")
    );
    let st = h.status("hub");
    assert_eq!(st["edge-1"]["state"], "PARTNER-DOWN");
    assert_eq!(st["edge-2"]["state"], "NORMAL");

    // Spoke 1 returns with its store and catches up; both relationships are NORMAL again.
    h.start("s1");
    h.wait_state("s1", "edge-1", "NORMAL", 60);
    h.wait_state("hub", "edge-1", "NORMAL", 60);
    h.wait_drained("hub", "edge-1", 20);
    let s1 = h.active("s1");
    let m = missing(&alone, &s1);
    assert!(
        m.is_empty(),
        "spoke 1 lacks {} of the leases the hub granted alone",
        m.len()
    );
    assert_eq!(h.status("hub")["edge-2"]["state"], "NORMAL");
}
