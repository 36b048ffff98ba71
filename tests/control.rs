//! `tandem ctl` against a real standalone `tandem serve`: status, statistics, lease-get by
//! address and by DUID, lease-delete (the store holds it released and the address goes to the
//! next client), lease-add (refused on a held address with the holder's identity, accepted on
//! a free one and kept in the store), reclaim, and bad requests answered with a reason; lease-get
//! by Remote-ID and `tandem leases` showing what the relay said. The pair's lease-delete, which
//! the partner must hear of, is in tests/failover_pair.rs.

mod common;

use common::leases::store_rows;
use common::proc::{free_udp_port, serve, tail};
use common::{GEN, TANDEM};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

struct Ctl<'a> {
    data: &'a Path,
}

impl Ctl<'_> {
    /// Runs `tandem ctl --data-dir D args...`: exit code and stdout.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(TANDEM)
            .arg("ctl")
            .arg("--data-dir")
            .arg(self.data)
            .args(args)
            .output()
            .expect("tandem ctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Runs a command that answers JSON; returns the exit code and the object.
    fn json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let (code, out) = self.run(args);
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`tandem ctl {args:?}` is not JSON ({e}):\n{out}"));
        (code, v)
    }
}

#[test]
fn ctl_reads_deletes_and_adds_leases_of_a_standalone_server() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let log = d.path().join("server.log");
    let listen = format!("[::1]:{}", free_udp_port());
    let mut server = serve(
        &[
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--no-sync",
        ],
        &log,
    );
    let ctl = Ctl { data: &data };

    // Three clients with an address and a prefix each.
    let held = d.path().join("held.tsv");
    let out = Command::new("timeout")
        .args(["-k", "2", "30", GEN, "--server", &listen, "--clients", "3"])
        .args(["--mode", "both", "--leases-out"])
        .arg(&held)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let held: Vec<Vec<String>> = std::fs::read_to_string(&held)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    assert_eq!(held.len(), 6);
    let na = held.iter().find(|r| r[0] == "na").unwrap();
    let (addr, duid) = (na[1].trim_end_matches("/128").to_string(), na[2].clone());

    // status (text) and statistics (JSON).
    let (code, status) = ctl.run(&["status"]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("role: standalone"), "{status}");
    assert!(status.contains("active 3"), "{status}");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let (code, v) = ctl.json(&["statistics"]);
        assert_eq!(code, 0, "{v}");
        if v["lease_events"]["granted"] == 6 || std::time::Instant::now() > end {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["lease_events"]["granted"], 6, "{stats}");
    assert_eq!(stats["received"]["solicit"], 3, "{stats}");
    assert_eq!(stats["pools"][0]["active"], 3, "{stats}");

    // lease-get by address and by DUID.
    let (code, v) = ctl.json(&["lease-get", &addr]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["leases"][0]["duid"], duid.as_str());
    assert_eq!(v["leases"][0]["state"], "active");
    let (_, v) = ctl.json(&["lease-get", "--duid", &duid]);
    assert_eq!(
        v["leases"].as_array().unwrap().len(),
        2,
        "address and prefix: {v}"
    );

    // lease-delete: released at once, in the store too; a second delete says why not.
    let (code, v) = ctl.json(&["lease-delete", &addr]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["deleted"]["state"], "released");
    let row = store_rows(&data)
        .into_iter()
        .find(|r| r.addr.to_string() == addr && r.len == 128)
        .unwrap();
    assert_eq!(row.state, "released");
    let (code, v) = ctl.json(&["lease-delete", &addr]);
    assert_eq!(code, 1);
    assert!(
        v["error"].as_str().unwrap().contains("no active lease"),
        "{v}"
    );

    // lease-add: refused on a held address, naming the holder; accepted on a free one.
    let other = held.iter().find(|r| r[0] == "na" && r[1] != na[1]).unwrap();
    let (code, v) = ctl.json(&[
        "lease-add",
        other[1].trim_end_matches("/128"),
        "--duid",
        "00:01:aa:bb",
        "--iaid",
        "9",
    ]);
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains(&other[2]), "{v}");
    let (code, v) = ctl.json(&[
        "lease-add",
        &addr,
        "--duid",
        "00:01:aa:bb",
        "--iaid",
        "9",
        "--valid-secs",
        "600",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["added"]["valid_secs"], 600);
    let row = store_rows(&data)
        .into_iter()
        .find(|r| r.addr.to_string() == addr && r.len == 128)
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.duid.as_str()),
        ("active", "0001aabb")
    );
    // A DUID too short to be one (RFC 8415 §11): refused before anything else.
    let (code, v) = ctl.json(&["lease-add", &addr, "--duid", "01", "--iaid", "1"]);
    assert_eq!(code, 1);
    assert!(
        v["error"].as_str().unwrap().contains("at least 3 bytes"),
        "{v}"
    );
    // Outside every pool: refused.
    let (code, v) = ctl.json(&[
        "lease-add",
        "2001:db8:99::1",
        "--duid",
        "010203",
        "--iaid",
        "1",
    ]);
    assert_eq!(code, 1);
    assert!(
        v["error"].as_str().unwrap().contains("no configured pool"),
        "{v}"
    );

    // reclaim: nothing has expired yet.
    let (code, v) = ctl.json(&["reclaim"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["reclaimed"], 0);

    // Bad requests on the socket itself: not JSON, an unknown command.
    let sock = data.join("control.sock");
    let ask = |line: &str| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut a = String::new();
        s.read_to_string(&mut a).unwrap();
        a
    };
    let a = ask("{not json\n");
    assert!(
        a.contains("\"result\":\"error\"") && a.contains("not JSON"),
        "{a}"
    );
    let a = ask("{\"command\":\"status\"}\n");
    assert!(
        a.contains("\"role\":\"standalone\"") && a.contains("\"pools\""),
        "{a}"
    );
    // A DUID that is not hex, with multi-byte characters: an error, and the thread lives on.
    let a = ask("{\"command\":\"lease-get\",\"duid\":\"a\u{e9}1\"}\n");
    assert!(
        a.contains("\"result\":\"error\"") && a.contains("duid"),
        "{a}"
    );
    let a = ask("{\"command\":\"frobnicate\"}\n");
    assert!(a.contains("unknown command `frobnicate`"), "{a}");
    let (code, out) = ctl.run(&["partner-down"]);
    assert_eq!(code, 1);
    assert!(out.contains("no failover partner"), "{out}");

    assert!(server.exited().is_none(), "server died: {}", tail(&log, 20));
    // The socket is private to the server's user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Issue 9 item 4 / issue 11: a relay's line identifiers are kept with the lease. A relayed
/// Rapid Commit Solicit for an address and a prefix, with Remote-ID enterprise 9 "line-42"
/// from the relay closest to the client, behind a second relay with a Relay-ID: `lease-get
/// --remote-id` finds both leases of that line and names the relays, another line finds
/// none, and `tandem leases` shows the same in its last column.
#[test]
fn lease_get_by_remote_id_finds_the_line_and_tandem_leases_shows_the_relay() {
    use tandem_core::wire::{MessageType, MessageWriter, opt, wrap_relay_forw};
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let log = d.path().join("server.log");
    let port = free_udp_port();
    let listen = format!("[::1]:{port}");
    let mut server = serve(
        &[
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--no-sync",
        ],
        &log,
    );
    let ctl = Ctl { data: &data };
    let mut solicit = Vec::new();
    let mut w = MessageWriter::new(&mut solicit, MessageType::Solicit, 0x0a0b0c);
    w.client_id(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 42]);
    w.elapsed_time(0);
    w.rapid_commit();
    w.ia_na(1, 0, 0, |_| {});
    w.ia_pd(2, 0, 0, |_| {});
    let option = |code: u16, data: &[u8]| {
        let mut o = code.to_be_bytes().to_vec();
        o.extend_from_slice(&(data.len() as u16).to_be_bytes());
        o.extend_from_slice(data);
        o
    };
    // The access relay (closest to the client): Interface-ID and Remote-ID.
    let mut access = Vec::new();
    wrap_relay_forw(
        0,
        "2001:db8:1::1".parse().unwrap(),
        "fe80::2:42".parse().unwrap(),
        Some(b"ae0.42"),
        None,
        &solicit,
        &mut access,
    );
    access.extend(option(opt::REMOTE_ID, b"\0\0\0\x09line-42"));
    // An aggregation relay in front of it, with its Relay-ID (RFC 5460).
    let mut agg = Vec::new();
    wrap_relay_forw(
        1,
        "::".parse().unwrap(),
        "2001:db8:ffff::1".parse().unwrap(),
        None,
        None,
        &access,
        &mut agg,
    );
    agg.extend(option(53, &[0, 3, 0, 1, 0xaa, 0xbb, 0xcc, 0, 0, 1]));
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    let mut answered = false;
    for _ in 0..5 {
        sock.send_to(&agg, &listen).unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            assert_eq!(buf[0], 13, "a Relay-reply: {:02x?}", &buf[..n]);
            answered = true;
            break;
        }
    }
    assert!(answered, "no reply: {}", tail(&log, 20));

    let (code, v) = ctl.json(&["lease-get", "--remote-id", "00000009:6c696e652d3432"]);
    assert_eq!(code, 0, "{v}");
    let leases = v["leases"].as_array().unwrap();
    assert_eq!(
        leases.len(),
        2,
        "the address and the prefix of line-42: {v}"
    );
    for l in leases {
        let r = &l["relay"];
        assert_eq!(r["remote_id"], "000000096c696e652d3432", "{l}");
        assert_eq!(r["interface_id"], "6165302e3432", "{l}");
        assert_eq!(r["link_address"], "2001:db8:1::1", "{l}");
        assert_eq!(r["peer_address"], "fe80::2:42", "{l}");
        assert_eq!(r["relay"], "::1", "{l}");
        assert_eq!(r["relay_id"], "00030001aabbcc000001", "{l}");
    }
    let (code, v) = ctl.json(&["lease-get", "--remote-id", "000000096c696e652d3433"]);
    assert_eq!((code, v["leases"].as_array().unwrap().len()), (0, 0), "{v}");
    let (code, v) = ctl.json(&["lease-get", "--remote-id", "zz"]);
    assert_eq!(code, 1, "{v}");

    // `tandem leases`: the relay column.
    let rows = store_rows(&data);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert!(
            r.relay.contains("remote_id=000000096c696e652d3432")
                && r.relay.contains("link_address=2001:db8:1::1"),
            "{}",
            r.relay
        );
    }
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}
