//! Replies decoded by a dissector that is not our code: Wireshark's (`tshark`, installed by
//! `tools/test.sh`). The engine answers in-process; each message is wrapped in IPv6/UDP (or,
//! for Bulk Leasequery, the length-framed messages in one TCP segment) by `text2pcap` and
//! dissected by `tshark -V`, and the test reads the fields Wireshark names. No network, no root.

mod common;

use std::net::SocketAddrV6;
use std::process::Command;
use std::sync::Arc;

use common::tools::find_tool;
use tandem_core::config;
use tandem_core::engine::{Engine, Outcome, Received, Scratch};
use tandem_core::pool::Allocator;
use tandem_core::wire::{MessageType, MessageWriter, opt};

const CONF: &str = r#"[server]
listen = ["[::1]:5547"]
rapid_commit = true
[lease]
preferred_lifetime_secs = 100
valid_lifetime_secs = 200
[options]
dns_servers = ["2001:db8::53"]
domain_search = ["example.net"]
[leasequery]
requestors = ["::1"]
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::100-2001:db8:1::1ff" }]
pd_pools = [{ prefix = "2001:db8:8000::/40", delegated_len = 56, excluded_prefix_len = 64 }]
"#;

/// Wireshark's verbose dissection of one DHCPv6 message sent from `from_port` to `to_port`.
fn dissect(bytes: &[u8], from_port: u16, to_port: u16) -> String {
    dissect_as(bytes, "-u", from_port, to_port)
}

/// As [`dissect`], over UDP (`-u`) or as one TCP segment (`-T`).
fn dissect_as(bytes: &[u8], transport: &str, from_port: u16, to_port: u16) -> String {
    let (Some(text2pcap), Some(tshark)) = (find_tool("text2pcap"), find_tool("tshark")) else {
        panic!("tshark and text2pcap are needed (tools/test.sh installs the tshark package)");
    };
    let dir = tempfile::tempdir().unwrap();
    let hex: String = bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let b: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:06x} {}\n", i * 16, b.join(" "))
        })
        .collect();
    let txt = dir.path().join("msg.txt");
    let pcap = dir.path().join("msg.pcap");
    std::fs::write(&txt, hex).unwrap();
    let ok = Command::new(text2pcap)
        .args(["-q", "-6", "::1,::1", transport])
        .arg(format!("{from_port},{to_port}"))
        .arg(&txt)
        .arg(&pcap)
        .status()
        .unwrap()
        .success();
    assert!(ok, "text2pcap failed");
    let out = Command::new(tshark)
        .args(["-n", "-V", "-r"])
        .arg(&pcap)
        .env("HOME", dir.path()) // no user profile, no warnings about it
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An engine on [`CONF`] with a fresh lease table.
fn engine() -> Engine {
    let cfg = Arc::new(config::parse("t", CONF).unwrap());
    let alloc = Arc::new(Allocator::new(&cfg.subnets));
    Engine::new(
        cfg,
        vec![0, 3, 0, 1, 0x52, 0x54, 0, 0xff, 0, 1].into(),
        alloc,
    )
}

fn has(text: &str, what: &str) -> bool {
    text.lines().any(|l| l.contains(what))
}

/// Every line of `wanted` in Wireshark's reading, and nothing it calls malformed.
fn assert_reads(text: &str, wanted: &[&str]) {
    for want in wanted {
        assert!(
            has(text, want),
            "no `{want}` in Wireshark's reading:\n{text}"
        );
    }
    assert!(
        !has(text, "Malformed"),
        "Wireshark finds it malformed:\n{text}"
    );
}

#[test]
fn wireshark_reads_a_reply_with_options_and_a_leasequery_reply() {
    let engine = engine();
    let mut scratch = Scratch::default();
    let mut run = |now: u64, bytes: &[u8]| -> Vec<u8> {
        let mut reply = Vec::new();
        let mut writes = Vec::new();
        let rx = Received {
            now_secs: now,
            now_ms: now * 1000,
            src: "[::1]:546".parse::<SocketAddrV6>().unwrap(),
            multicast: true,
            interface: None,
            bytes,
        };
        let out = engine.handle(&rx, &mut reply, &mut scratch, &mut writes);
        assert!(matches!(out, Outcome::Reply { .. }), "{out:?}");
        reply
    };
    // A client takes an address and a prefix, asking for DNS servers and the search list.
    let mut solicit = Vec::new();
    let mut w = MessageWriter::new(&mut solicit, MessageType::Solicit, 7);
    w.client_id(&[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 5]);
    w.elapsed_time(0);
    w.rapid_commit();
    w.oro(&[opt::DNS_SERVERS, opt::DOMAIN_LIST, opt::PD_EXCLUDE]);
    w.ia_na(1, 0, 0, |_| {});
    w.ia_pd(2, 0, 0, |_| {});
    let reply = run(1000, &solicit);
    let text = dissect(&reply, 547, 546);
    // Options, both IAs and the Prefix Exclude inside the IA Prefix, nothing malformed.
    assert_reads(
        &text,
        &[
            "Message type: Reply (7)",
            "DNS recursive name server",
            "2001:db8::53",
            "Domain Search List",
            "example.net",
            "IA Address",
            "2001:db8:1::1",
            "IA Prefix",
            "Prefix Exclude",
        ],
    );
    // A router asks who holds the address.
    let mut q = vec![1u8];
    q.extend_from_slice(&[0; 16]);
    q.extend_from_slice(&opt::IAADDR.to_be_bytes());
    q.extend_from_slice(&24u16.to_be_bytes());
    let addr: std::net::Ipv6Addr = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("IPv6 address: "))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no IA address in:\n{text}"));
    q.extend_from_slice(&addr.octets());
    q.extend_from_slice(&[0; 8]);
    let mut lq = Vec::new();
    let mut w = MessageWriter::new(&mut lq, MessageType::Leasequery, 9);
    w.client_id(&[0, 2, 0, 0, 0x11, 0x8b, 1, 2, 3]); // DUID-EN of the requestor
    w.option(opt::LQ_QUERY, &q);
    let query = dissect(&lq, 546, 547);
    assert!(has(&query, "Message type: Leasequery (14)"), "{query}");
    assert!(has(&query, "Query-type: by-address (1)"), "{query}");
    assert!(has(&query, &format!("IPv6 address: {addr}")), "{query}");
    let reply = run(1100, &lq);
    let text = dissect(&reply, 547, 546);
    assert_reads(
        &text,
        &[
            "Message type: Leasequery-reply (15)",
            "Client Data",
            "Client Last Transaction Time",
            "IA Address",
            "IA Prefix",
        ],
    );
    assert!(!has(&query, "Malformed"), "{query}");
}

/// Bulk Leasequery (RFC 5460) as Wireshark's own Bulk Leasequery dissector reads it: a client
/// served through a relay with a Remote-ID, then a query by Remote-ID over TCP asking for the
/// relay data; the REPLY with the client's data and relay data, and the DONE, framed as on the
/// wire, nothing malformed.
#[test]
fn wireshark_reads_a_bulk_leasequery_answer_with_relay_data() {
    let engine = engine();
    let mut solicit = Vec::new();
    let mut w = MessageWriter::new(&mut solicit, MessageType::Solicit, 7);
    w.client_id(&[0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 6]);
    w.elapsed_time(0);
    w.rapid_commit();
    w.ia_pd(2, 0, 0, |_| {});
    let mut fwd = Vec::new();
    tandem_core::wire::wrap_relay_forw(
        0,
        "2001:db8:1::1".parse().unwrap(),
        "fe80::6".parse().unwrap(),
        Some(b"ae0.6"),
        None,
        &solicit,
        &mut fwd,
    );
    fwd.extend_from_slice(&opt::REMOTE_ID.to_be_bytes());
    fwd.extend_from_slice(&10u16.to_be_bytes());
    fwd.extend_from_slice(b"\0\0\0\x09line-6");
    let (mut reply, mut writes) = (Vec::new(), Vec::new());
    let rx = Received {
        now_secs: 1000,
        now_ms: 1_000_000,
        src: "[2001:db8:ff::1]:547".parse::<SocketAddrV6>().unwrap(),
        multicast: false,
        interface: None,
        bytes: &fwd,
    };
    let out = engine.handle(&rx, &mut reply, &mut Scratch::default(), &mut writes);
    assert!(matches!(out, Outcome::Reply { .. }), "{out:?}");
    // The query: by Remote-ID, with an ORO asking for the relay data.
    let mut q = vec![5u8];
    q.extend_from_slice(&[0; 16]);
    for (code, data) in [
        (opt::REMOTE_ID, &b"\0\0\0\x09line-6"[..]),
        (opt::ORO, &opt::LQ_RELAY_DATA.to_be_bytes()[..]),
    ] {
        q.extend_from_slice(&code.to_be_bytes());
        q.extend_from_slice(&(data.len() as u16).to_be_bytes());
        q.extend_from_slice(data);
    }
    let mut lq = Vec::new();
    let mut w = MessageWriter::new(&mut lq, MessageType::Leasequery, 0x0b0c0d);
    w.client_id(&[0, 2, 0, 0, 0x11, 0x8b, 1, 2, 3]);
    w.option(opt::LQ_QUERY, &q);
    let mut answer = engine
        .answer_bulk_leasequery(
            &[tandem_core::engine::Policy::STANDALONE],
            "::1".parse().unwrap(),
            1100,
            &lq,
        )
        .unwrap();
    let mut frames = Vec::new();
    let mut m = Vec::new();
    while answer.next_message(&mut m) {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        frames.push(f);
    }
    assert_eq!(
        frames.len(),
        2,
        "a REPLY with the client's data, then a DONE"
    );
    let text = dissect_as(&frames[0], "-T", 547, 40000);
    // Wireshark shows the relay message inside the relay data as text, not dissected.
    assert_reads(
        &text,
        &[
            "DHCPv6 Bulk Leasequery",
            "Message size: ",
            "Message type: Leasequery-reply (15)",
            "Leasequery Client Data",
            "IA Prefix",
            "Leasequery Relay Data",
            "Peer address: 2001:db8:ff::1",
            "Client Last Transaction Time",
        ],
    );
    // Wireshark 4.0's Bulk Leasequery dissector throws on any message without options (a
    // bare REPLY header as much as this DONE, which RFC 5460 §5.2.2 sends without any), so
    // only its reading of the header is checked here.
    let done = dissect_as(&frames[1], "-T", 547, 40000);
    assert!(
        has(&done, "Message size: 4") && has(&done, "Message type: Leasequery-done (16)"),
        "{done}"
    );
    let mut framed_query = (lq.len() as u16).to_be_bytes().to_vec();
    framed_query.extend_from_slice(&lq);
    let query = dissect_as(&framed_query, "-T", 40000, 547);
    assert_reads(
        &query,
        &[
            "Message type: Leasequery (14)",
            "Query-type: by-remoteID (5)",
        ],
    );
}
