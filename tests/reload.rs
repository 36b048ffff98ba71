//! Live reload of a real `tandem serve`: under load from tandem-gen, SIGHUP with a new DNS
//! server option changes the next replies without a single failed exchange; `tandem ctl
//! reload` does the same and answers with what it applied; a broken file, or a change that
//! needs a restart (a pool changed or removed), is refused with the reason while the old
//! configuration keeps running. A pool and a subnet added under load serve the next clients; a
//! reservation added by a reload is offered at once, to its client only.

mod common;

use common::proc::{free_udp_port, read_lossy, serve, tail};
use common::{GEN, TANDEM};
use dhcproto::v6::{DhcpOption, Message, MessageType, ORO, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{Ipv6Addr, UdpSocket};
use std::path::Path;
use std::time::Duration;

fn config(port: u16, data: &Path, dns: &str, pool_end: &str) -> String {
    format!(
        r#"[server]
listen = ["[::1]:{port}"]
data_dir = "{}"
unicast_address = "::1"
[options]
dns_servers = ["{dns}"]
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::1:0-2001:db8:1::{pool_end}:ffff" }}]
"#,
        data.display()
    )
}

/// A scratch folder with its data dir and configuration file paths, and a free port.
fn scratch() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    u16,
) {
    let d = tempfile::tempdir().unwrap();
    let (data, f) = (d.path().join("data"), d.path().join("tandem.toml"));
    (d, data, f, free_udp_port())
}

/// `tandem ctl --data-dir data args...`: whether it succeeded, and what it printed.
fn ctl(data: &Path, args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(TANDEM)
        .args(["ctl", "--data-dir", data.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// The DNS servers an Information-request from `sock` gets back.
fn dns_of(sock: &UdpSocket, port: u16) -> Vec<Ipv6Addr> {
    let mut m = Message::new(MessageType::InformationRequest);
    m.opts_mut()
        .insert(DhcpOption::ClientId(vec![0, 4, 1, 2, 3, 4]));
    m.opts_mut().insert(DhcpOption::ORO(ORO {
        opts: vec![OptionCode::DomainNameServers],
    }));
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    sock.send_to(&b, format!("[::1]:{port}")).unwrap();
    let mut rb = [0u8; 2048];
    let n = sock
        .recv(&mut rb)
        .expect("a reply to the Information-request");
    let r = Message::decode(&mut Decoder::new(&rb[..n])).unwrap();
    r.opts()
        .iter()
        .find_map(|o| match o {
            DhcpOption::DomainNameServers(v) => Some(v.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn options_reload_live_under_load_and_restart_only_changes_are_refused() {
    let (d, data, f, port) = scratch();
    std::fs::write(&f, config(port, &data, "2001:db8::53", "ffff")).unwrap();
    let log = d.path().join("server.log");
    let mut server = serve(&["--config", f.to_str().unwrap()], &log);
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::53".parse::<Ipv6Addr>().unwrap()]
    );

    // Under load: 3,000 clients at 1,000 exchanges a second, five SIGHUPs with a new DNS
    // server each, 400 ms apart.
    let load = std::thread::spawn({
        let server = format!("[::1]:{port}");
        move || {
            std::process::Command::new("timeout")
                .args([
                    "-k",
                    "2",
                    "40",
                    GEN,
                    "--server",
                    &server,
                    "--clients",
                    "3000",
                ])
                .args([
                    "--rate",
                    "1000",
                    "--ask-dns",
                    "--json",
                    "--max-retries",
                    "0",
                ])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        std::fs::write(
            &f,
            config(port, &data, &format!("2001:db8::{}", 60 + i), "ffff"),
        )
        .unwrap();
        server.signal(nix::sys::signal::Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(400));
    }
    let out = load.join().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tandem-gen: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let p = &json["phases"][0];
    assert_eq!(
        p["ok"], 3000,
        "every exchange succeeds across the reloads: {p}"
    );
    assert_eq!(p["retransmits"], 0, "{p}");
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::64".parse::<Ipv6Addr>().unwrap()]
    );
    assert_eq!(
        read_lossy(&log).matches("applied: options").count(),
        5,
        "{}",
        tail(&log, 20)
    );

    // tandem ctl reload answers with what it applied.
    std::fs::write(&f, config(port, &data, "2001:db8::99", "ffff")).unwrap();
    let ctl = |what: &str| ctl(&data, &[what]);
    let (ok, out) = ctl("config-test");
    assert!(ok && out.contains("a reload would apply: options"), "{out}");
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::64".parse::<Ipv6Addr>().unwrap()],
        "config-test applies nothing"
    );
    let (ok, out) = ctl("reload");
    assert!(ok && out.contains("applied: options"), "{out}");
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::99".parse::<Ipv6Addr>().unwrap()]
    );

    // A pool change needs a restart: refused, the running configuration stays.
    std::fs::write(&f, config(port, &data, "2001:db8::aa", "fffe")).unwrap();
    let (ok, out) = ctl("config-test");
    assert!(
        !ok && out.contains("needs a restart: subnet 1 pools"),
        "{out}"
    );
    let (ok, out) = ctl("reload");
    assert!(
        !ok && out.contains("needs a restart: subnet 1 pools"),
        "{out}"
    );
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::99".parse::<Ipv6Addr>().unwrap()]
    );
    // A broken file: refused with where it is broken.
    std::fs::write(&f, "[server]\nlisten = 5\n").unwrap();
    let (ok, out) = ctl("reload");
    assert!(!ok && out.contains("tandem.toml:2"), "{out}");
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::99".parse::<Ipv6Addr>().unwrap()]
    );
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}

#[test]
fn pools_and_subnets_added_live_under_load_serve_the_next_clients() {
    let (d, data, f, port) = scratch();
    // 1,000 addresses: not enough for the 3,000 clients below.
    let small = config(port, &data, "2001:db8::53", "1").replace(
        "2001:db8:1::1:0-2001:db8:1::1:ffff",
        "2001:db8:1::1:0-2001:db8:1::1:3e7",
    );
    assert_ne!(small, config(port, &data, "2001:db8::53", "1"));
    std::fs::write(&f, &small).unwrap();
    let log = d.path().join("server.log");
    let mut server = serve(&["--config", f.to_str().unwrap()], &log);
    let load = std::thread::spawn({
        let server = format!("[::1]:{port}");
        move || {
            std::process::Command::new("timeout")
                .args(["-k", "2", "40", GEN, "--server", &server])
                // At 500/s the small pool lasts 2 s: the reload 300 ms in has 1.7 s to land
                // on a busy box.
                .args(["--clients", "3000", "--rate", "500", "--json"])
                .output()
                .unwrap()
        }
    });
    // About 150 clients in: a pool of 4,096 after the first, a second subnet, a new option.
    std::thread::sleep(Duration::from_millis(300));
    let grown = small.replace(
        "pools = [{ range = \"2001:db8:1::1:0-2001:db8:1::1:3e7\" }]",
        "pools = [{ range = \"2001:db8:1::1:0-2001:db8:1::1:3e7\" }, { range = \"2001:db8:1::2:0-2001:db8:1::2:fff\" }]\n\
         [[subnet]]\nid = 2\nprefix = \"2001:db8:2::/64\"\npools = [{ range = \"2001:db8:2::100-2001:db8:2::1ff\" }]",
    );
    assert_ne!(grown, small);
    // And a new DNS server in the same reload.
    let grown = grown.replace("2001:db8::53", "2001:db8::77");
    std::fs::write(&f, &grown).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let out = load.join().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tandem-gen: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let p = &json["phases"][0];
    assert_eq!(
        p["ok"],
        3000,
        "every client is served: {p}\n{}",
        tail(&log, 20)
    );
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        dns_of(&sock, port),
        vec!["2001:db8::77".parse::<Ipv6Addr>().unwrap()]
    );
    let text = read_lossy(&log);
    assert!(
        text.contains("subnet 1 pools added (1)") && text.contains("subnet 2 added"),
        "{}",
        tail(&log, 20)
    );
    // The control socket and the counters see the new table: 3,000 leases, most in the
    // added pool.
    let stats: serde_json::Value = serde_json::from_str(&ctl(&data, &["statistics"]).1).unwrap();
    let pools = stats["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 3, "{stats}");
    let active = |i: usize| pools[i]["active"].as_u64().unwrap();
    assert_eq!(active(0) + active(1) + active(2), 3000, "{stats}");
    assert!(
        active(0) <= 1000 && active(1) + active(2) >= 2000,
        "{stats}"
    );
    // The control socket works on the new configuration and table: a lease in the added
    // subnet is added, then found.
    let (ok, out) = ctl(
        &data,
        &[
            "lease-add",
            "2001:db8:2::150",
            "--duid",
            "000102030405",
            "--iaid",
            "7",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = ctl(&data, &["lease-get", "2001:db8:2::150"]);
    assert!(ok && out.contains("000102030405"), "{out}");
    // What went away is refused: back to one pool.
    std::fs::write(&f, &small).unwrap();
    let (ok, out) = ctl(&data, &["reload"]);
    assert!(!ok && out.contains("subnet 2 (removed)"), "{out}");
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}

/// The address an Advertise from the server on `port` offers client `duid` (Solicit from `sock`).
fn offered(sock: &UdpSocket, port: u16, duid: &[u8]) -> Option<Ipv6Addr> {
    let mut m = Message::new(MessageType::Solicit);
    m.opts_mut().insert(DhcpOption::ClientId(duid.to_vec()));
    m.opts_mut().insert(DhcpOption::IANA(dhcproto::v6::IANA {
        id: 1,
        t1: 0,
        t2: 0,
        opts: Default::default(),
    }));
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    sock.send_to(&b, format!("[::1]:{port}")).unwrap();
    let mut rb = [0u8; 2048];
    let n = sock.recv(&mut rb).expect("an Advertise");
    let r = Message::decode(&mut Decoder::new(&rb[..n])).unwrap();
    r.opts().iter().find_map(|o| match o {
        DhcpOption::IANA(ia) => ia.opts.iter().find_map(|o| match o {
            DhcpOption::IAAddr(a) => Some(a.addr),
            _ => None,
        }),
        _ => None,
    })
}

#[test]
fn reservations_change_live() {
    let (d, data, f, port) = scratch();
    let base = config(port, &data, "2001:db8::53", "ffff");
    std::fs::write(&f, &base).unwrap();
    let log = d.path().join("server.log");
    let mut server = serve(&["--config", f.to_str().unwrap()], &log);
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let vip = [0u8, 3, 0, 1, 0xaa, 0xbb, 0xcc, 0, 0, 1];
    let reserved: Ipv6Addr = "2001:db8:1::1:abcd".parse().unwrap();
    let before = offered(&sock, port, &vip).unwrap();
    assert_ne!(before, reserved);
    // A reservation for it, by reload.
    let with = format!(
        "{base}reservations = [{{ duid = \"00:03:00:01:aa:bb:cc:00:00:01\", addresses = [\"{reserved}\"] }}]\n"
    );
    std::fs::write(&f, &with).unwrap();
    let ctl = |what: &str| ctl(&data, &[what]);
    let (ok, out) = ctl("reload");
    assert!(
        ok && out.contains("subnet 1 reservations"),
        "{out}\n{}",
        tail(&log, 10)
    );
    assert_eq!(offered(&sock, port, &vip), Some(reserved));
    // Nobody else is offered it meanwhile.
    for i in 0..20u8 {
        assert_ne!(
            offered(&sock, port, &[0, 3, 0, 1, 1, 2, 3, 4, 5, i]),
            Some(reserved)
        );
    }
    // Taken away again: applied live too.
    std::fs::write(&f, &base).unwrap();
    let (ok, out) = ctl("reload");
    assert!(ok && out.contains("subnet 1 reservations"), "{out}");
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}
