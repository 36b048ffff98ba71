//! Moving from Kea: Debian's kea-dhcp6 serves perfdhcp's clients (addresses and prefixes) over
//! a veth pair between two namespaces (`tdmkis`, `tdmkic`) and writes its leases6.csv; then
//! `tandem import-kea` reads that file into a Tandem store, Tandem starts with Kea's server
//! DUID (from Kea's kea-dhcp6-serverid file), and every one of those clients renews (a Renew
//! built with dhcproto, addressed to Kea's DUID, carrying the address and prefix Kea gave it):
//! each keeps its address and its prefix with fresh lifetimes.

mod common;

use common::netns::Topo;
use common::proc::{Proc, free_udp_port, read_lossy, run, serve, tail};
use common::tools::{find_tool, prerequisites};
use common::{TANDEM, unhex};
use dhcproto::v6::{self, DhcpOption, IAAddr, IANA, IAPD, IAPrefix, Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

const KEA_CONFIG: &str = r#"{
  "Dhcp6": {
    "data-directory": "@DIR@",
    "interfaces-config": { "interfaces": [ "tdmkis" ] },
    "lease-database": { "type": "memfile", "persist": true, "name": "@DIR@/leases6.csv", "lfc-interval": 0 },
    "preferred-lifetime": 3000, "valid-lifetime": 4000, "renew-timer": 1500, "rebind-timer": 2400,
    "subnet6": [ {
      "id": 1, "subnet": "2001:db8:1::/64", "interface": "tdmkis",
      "pools": [ { "pool": "2001:db8:1::1:0-2001:db8:1::ffff:ffff" } ],
      "pd-pools": [ { "prefix": "2001:db8:8000::", "prefix-len": 33, "delegated-len": 56 } ]
    } ],
    "loggers": [ { "name": "kea-dhcp6", "severity": "INFO", "output_options": [ { "output": "@DIR@/kea.log" } ] } ]
  }
}"#;

/// One client's leases as Kea's file has them.
#[derive(Default, Debug)]
struct Client {
    iaid_na: u32,
    addr: Option<Ipv6Addr>,
    iaid_pd: u32,
    prefix: Option<(Ipv6Addr, u8)>,
}

fn kea_clients(csv: &str) -> BTreeMap<String, Client> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|c| *c == n).unwrap();
    let (a, d, t, i, l) = (
        col("address"),
        col("duid"),
        col("lease_type"),
        col("iaid"),
        col("prefix_len"),
    );
    let mut out: BTreeMap<String, Client> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let c = out.entry(f[d].to_string()).or_default();
        let iaid: u32 = f[i].parse().unwrap();
        match f[t] {
            "0" => (c.iaid_na, c.addr) = (iaid, Some(f[a].parse().unwrap())),
            "2" => {
                (c.iaid_pd, c.prefix) = (iaid, Some((f[a].parse().unwrap(), f[l].parse().unwrap())))
            }
            other => panic!("lease_type {other} in {line}"),
        }
    }
    out
}

#[test]
fn kea_leases_imported_keep_every_client_on_renew() {
    let Some(t) = prerequisites("kea_leases_imported_keep_every_client_on_renew") else {
        return;
    };
    let kea =
        find_tool("kea-dhcp6").expect("kea-dhcp6 missing: tools/test.sh installs kea-dhcp6-server");
    let topo = Topo::new(&t, "ki", &["2001:db8:1::1/64"], &["2001:db8:1::2/64"]);
    let d = tempfile::tempdir().unwrap();
    let kdir = d.path().join("kea");
    std::fs::create_dir(&kdir).unwrap();
    let kcfg = kdir.join("kea-dhcp6.json");
    std::fs::write(&kcfg, KEA_CONFIG.replace("@DIR@", kdir.to_str().unwrap())).unwrap();
    let klog = kdir.join("stdout.log");
    let mut cmd = topo.s.cmd(&kea);
    cmd.arg("-c")
        .arg(&kcfg)
        .env("KEA_PIDFILE_DIR", &kdir)
        .env("KEA_LOCKFILE_DIR", &kdir);
    let mut kea_proc = Proc::spawn_cmd("kea-dhcp6", cmd, &klog);
    // Kea is ready once it listens on 547 in its namespace.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let ss = run(
            &t.timeout,
            5,
            &[&t.ip, "netns", "exec", &topo.s.name, "ss", "-uln"],
        );
        if ss.out.contains(":547") {
            break;
        }
        assert!(
            kea_proc.exited().is_none(),
            "kea-dhcp6 exited: {}",
            tail(&klog, 20)
        );
        assert!(
            Instant::now() < end,
            "kea-dhcp6 never bound 547: {}",
            tail(&kdir.join("kea.log"), 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 40 clients, each with an address and a prefix, 4-way.
    let mut perf: Vec<String> = topo.c.exec();
    perf.extend(
        [
            t.perfdhcp.as_str(),
            "-6",
            "-l",
            topo.c.name.as_str(),
            "-e",
            "address-and-prefix",
            "-r",
            "20",
            "-R",
            "40",
            "-n",
            "40",
            "-p",
            "10",
            "-d",
            "3",
            "-W",
            "3000000",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = perf.iter().map(String::as_str).collect();
    let r = run(&t.timeout, 40, &refs);
    kea_proc.signal(nix::sys::signal::Signal::SIGTERM);
    kea_proc.wait_exit(Duration::from_secs(10));
    let csv = read_lossy(&kdir.join("leases6.csv"));
    let clients = kea_clients(&csv);
    let complete = clients
        .values()
        .filter(|c| c.addr.is_some() && c.prefix.is_some())
        .count();
    assert!(
        complete >= 30,
        "Kea's file holds {complete} clients with both (perfdhcp:\n{})\n{csv}",
        r.out
    );
    let kea_duid = read_lossy(&kdir.join("kea-dhcp6-serverid"))
        .trim()
        .to_string();
    assert!(
        kea_duid.len() > 8,
        "no kea-dhcp6-serverid: {:?}",
        std::fs::read_dir(&kdir).unwrap().collect::<Vec<_>>()
    );

    // Import into a fresh Tandem store whose pools match Kea's, with Kea's server DUID.
    let port = free_udp_port();
    let tcfg = d.path().join("tandem.toml");
    std::fs::write(
        &tcfg,
        format!(
            r#"[server]
listen = ["[::1]:{port}"]
data_dir = "{data}"
duid = "{kea_duid}"
# The test's client sends by unicast to loopback (real clients multicast, or come by relay).
unicast_address = "::1"
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::1:0-2001:db8:1::ffff:ffff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/33", delegated_len = 56 }}]
"#,
            data = d.path().join("data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(TANDEM)
        .args(["import-kea", "--config"])
        .arg(&tcfg)
        .arg(kdir.join("leases6.csv"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("0 lines refused"), "{said}");

    let log = d.path().join("tandem.log");
    let mut server = serve(&["--config", tcfg.to_str().unwrap()], &log);

    // Every client renews with what Kea gave it, addressed to Kea's DUID.
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let server_id = unhex(&kea_duid.replace(':', "")).unwrap();
    let mut kept = 0;
    for (duid_hex, c) in &clients {
        let (Some(addr), Some((prefix, plen))) = (c.addr, c.prefix) else {
            continue;
        };
        let duid = unhex(&duid_hex.replace(':', "")).unwrap();
        let mut m = Message::new(MessageType::Renew);
        let o = m.opts_mut();
        o.insert(DhcpOption::ClientId(duid.clone()));
        o.insert(DhcpOption::ServerId(server_id.clone()));
        let mut na_opts = v6::DhcpOptions::new();
        na_opts.insert(DhcpOption::IAAddr(IAAddr {
            addr,
            preferred_life: 0,
            valid_life: 0,
            opts: v6::DhcpOptions::new(),
        }));
        o.insert(DhcpOption::IANA(IANA {
            id: c.iaid_na,
            t1: 0,
            t2: 0,
            opts: na_opts,
        }));
        let mut pd_opts = v6::DhcpOptions::new();
        pd_opts.insert(DhcpOption::IAPrefix(IAPrefix {
            preferred_lifetime: 0,
            valid_lifetime: 0,
            prefix_len: plen,
            prefix_ip: prefix,
            opts: v6::DhcpOptions::new(),
        }));
        o.insert(DhcpOption::IAPD(IAPD {
            id: c.iaid_pd,
            t1: 0,
            t2: 0,
            opts: pd_opts,
        }));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        sock.send_to(&buf, format!("[::1]:{port}")).unwrap();
        let mut rb = [0u8; 2048];
        let n = sock.recv(&mut rb).unwrap_or_else(|e| {
            panic!(
                "no Reply to {duid_hex}'s Renew ({e}); log:\n{}",
                tail(&log, 20)
            )
        });
        let reply = Message::decode(&mut Decoder::new(&rb[..n])).unwrap();
        assert_eq!(reply.msg_type(), MessageType::Reply);
        let mut got_addr = None;
        let mut got_prefix = None;
        for opt in reply.opts().iter() {
            match opt {
                DhcpOption::IANA(ia) => {
                    for io in ia.opts.iter() {
                        if let DhcpOption::IAAddr(a) = io
                            && a.valid_life > 0
                        {
                            got_addr = Some(a.addr);
                        }
                    }
                }
                DhcpOption::IAPD(ia) => {
                    for io in ia.opts.iter() {
                        if let DhcpOption::IAPrefix(p) = io
                            && p.valid_lifetime > 0
                        {
                            got_prefix = Some((p.prefix_ip, p.prefix_len));
                        }
                    }
                }
                _ => {}
            }
        }
        assert_eq!(got_addr, Some(addr), "{duid_hex}: {reply:?}");
        assert_eq!(got_prefix, Some((prefix, plen)), "{duid_hex}: {reply:?}");
        kept += 1;
    }
    assert_eq!(kept, complete);
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
    let text = read_lossy(&log);
    assert_eq!(
        text.matches("lease renewed").count(),
        2 * complete,
        "{}",
        tail(&log, 10)
    );
}
