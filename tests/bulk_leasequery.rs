//! Bulk Leasequery (RFC 5460) against a real `tandem serve`: clients are served through relays
//! (an access relay with the line's Remote-ID behind an aggregation relay with its Relay-ID);
//! a requestor then asks over TCP by Remote-ID, by Relay-ID and by link address on one
//! connection, and reads REPLY, DATA and DONE messages with the bindings; a second connection
//! beyond `bulk_connections_max` is closed at once, and the server stops promptly with an idle
//! connection open.

mod common;

use common::proc::{serve_config, tail};
use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use tandem_core::wire::{Message, MessageType, MessageWriter, OptionIter, opt, wrap_relay_forw};

const RELAY_ID: &[u8] = &[0, 3, 0, 1, 0xaa, 0xbb, 0xcc, 0, 0, 1];

fn option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut o = code.to_be_bytes().to_vec();
    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
    o.extend_from_slice(data);
    o
}

/// Client `n` asks for an address and a prefix with Rapid Commit, through access relay line
/// "line-n" behind the aggregation relay; returns once the server has answered.
fn acquire(sock: &UdpSocket, server: &str, n: u8) {
    let mut solicit = Vec::new();
    let mut w = MessageWriter::new(&mut solicit, MessageType::Solicit, u32::from(n));
    w.client_id(&[0, 3, 0, 1, 2, 0, 0, 0, 0, n]);
    w.elapsed_time(0);
    w.rapid_commit();
    w.ia_na(1, 0, 0, |_| {});
    w.ia_pd(2, 0, 0, |_| {});
    let mut access = Vec::new();
    let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 2, u16::from(n));
    wrap_relay_forw(
        0,
        "2001:db8:1::1".parse().unwrap(),
        peer,
        Some(format!("ae0.{n}").as_bytes()),
        None,
        &solicit,
        &mut access,
    );
    access.extend(option(opt::REMOTE_ID, &line(n)));
    let mut agg = Vec::new();
    wrap_relay_forw(
        1,
        Ipv6Addr::UNSPECIFIED,
        "2001:db8:ffff::1".parse().unwrap(),
        None,
        None,
        &access,
        &mut agg,
    );
    agg.extend(option(53, RELAY_ID));
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        sock.send_to(&agg, server).unwrap();
        if let Ok((_, _)) = sock.recv_from(&mut buf) {
            assert_eq!(buf[0], 13, "a Relay-reply");
            return;
        }
    }
    panic!("client {n}: no reply");
}

/// Remote-ID option data of line `n`: enterprise 9, "line-n".
fn line(n: u8) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 9];
    v.extend_from_slice(format!("line-{n}").as_bytes());
    v
}

/// A LEASEQUERY with transaction id `xid`, query type `ty` on `link`, and `query_options`.
fn query(xid: u32, ty: u8, link: &str, query_options: &[Vec<u8>]) -> Vec<u8> {
    let mut q = vec![ty];
    q.extend_from_slice(&link.parse::<Ipv6Addr>().unwrap().octets());
    for o in query_options {
        q.extend_from_slice(o);
    }
    let mut m = Vec::new();
    let mut w = MessageWriter::new(&mut m, MessageType::Leasequery, xid);
    w.client_id(&[0, 4, 7, 7, 7]);
    w.option(opt::LQ_QUERY, &q);
    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m);
    framed
}

/// One answered message: type, status, and each Client Data's client DUID and binding count.
#[derive(Debug)]
struct Got {
    ty: MessageType,
    status: Option<u16>,
    clients: Vec<(Vec<u8>, usize, bool)>,
}

/// Reads messages of transaction `xid` until the answer is complete (a DONE, or a REPLY that
/// carries no client data).
fn answer(s: &mut TcpStream, xid: u32) -> Vec<Got> {
    let mut got = Vec::new();
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("frame length");
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut m).expect("frame");
        let msg = Message::parse(&m).expect("a DHCPv6 message");
        assert_eq!(msg.transaction_id(), xid);
        let clients = msg
            .options()
            .filter(|o| o.code == opt::CLIENT_DATA)
            .map(|o| {
                let inner: Vec<_> = OptionIter::new(o.data).collect();
                let duid = inner.iter().find(|i| i.code == opt::CLIENTID).unwrap();
                let bindings = inner
                    .iter()
                    .filter(|i| i.code == opt::IAADDR || i.code == opt::IAPREFIX)
                    .count();
                let relay = inner.iter().any(|i| i.code == opt::LQ_RELAY_DATA);
                (duid.data.to_vec(), bindings, relay)
            })
            .collect::<Vec<_>>();
        let g = Got {
            ty: msg.msg_type(),
            status: msg.status().map(|s| s.code),
            clients,
        };
        let end = g.ty == MessageType::LeasequeryDone
            || (g.ty == MessageType::LeasequeryReply && g.clients.is_empty());
        got.push(g);
        if end {
            return got;
        }
    }
}

/// A `tandem serve` with its store in `d`, Rapid Commit, one subnet with an address and a
/// prefix pool, and `[leasequery]` `requestors` with Bulk Leasequery on a free TCP port of ::1
/// (plus `extra` lines); returns it, its log, its UDP address and the Bulk Leasequery port.
fn start(
    d: &std::path::Path,
    requestors: &str,
    extra: &str,
) -> (common::proc::Proc, std::path::PathBuf, String, u16) {
    let bulk_port = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (server, log, listen) = serve_config(
        d,
        &format!(
            r#"[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::100-2001:db8:1::1ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/40", delegated_len = 56 }}]
[leasequery]
requestors = [{requestors}]
bulk_listen = ["[::1]:{bulk_port}"]
{extra}"#
        ),
    );
    (server, log, listen, bulk_port)
}

#[test]
fn bulk_leasequery_over_tcp_by_line_relay_and_link() {
    let d = tempfile::tempdir().unwrap();
    let (mut server, log, server_addr, bulk_port) =
        start(d.path(), "\"::1\"", "bulk_connections_max = 1\n");
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for n in 1..=3 {
        acquire(&sock, &server_addr, n);
    }

    let mut s = TcpStream::connect(("::1", bulk_port)).expect("bulk leasequery listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // By Remote-ID, with the relay data asked for: line 2's client, address and prefix.
    let oro = option(opt::ORO, &opt::LQ_RELAY_DATA.to_be_bytes());
    s.write_all(&query(1, 5, "::", &[option(opt::REMOTE_ID, &line(2)), oro]))
        .unwrap();
    let got = answer(&mut s, 1);
    let shape: Vec<_> = got.iter().map(|g| (g.ty, g.status)).collect();
    assert_eq!(
        shape,
        [
            (MessageType::LeasequeryReply, None),
            (MessageType::LeasequeryDone, None)
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0].clients,
        vec![(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 2], 2, true)]
    );
    // By Relay-ID and by link address, on the same connection: all three clients, one
    // REPLY, two DATA, one DONE.
    for (xid, q) in [
        (2, query(2, 3, "::", &[option(53, RELAY_ID)])),
        (3, query(3, 4, "2001:db8:1::", &[])),
    ] {
        s.write_all(&q).unwrap();
        let got = answer(&mut s, xid);
        let types: Vec<_> = got.iter().map(|g| g.ty).collect();
        assert_eq!(
            types,
            [
                MessageType::LeasequeryReply,
                MessageType::LeasequeryData,
                MessageType::LeasequeryData,
                MessageType::LeasequeryDone
            ],
            "query {xid}: {got:?}"
        );
        let mut duids: Vec<_> = got.iter().flat_map(|g| g.clients.clone()).collect();
        duids.sort();
        assert_eq!(duids.len(), 3);
        assert!(duids.iter().all(|(_, n, relay)| *n == 2 && !relay));
    }
    // Nobody on that line: a REPLY alone.
    s.write_all(&query(4, 5, "::", &[option(opt::REMOTE_ID, &line(9))]))
        .unwrap();
    let got = answer(&mut s, 4);
    assert_eq!(got.len(), 1, "{got:?}");
    // A second connection beyond bulk_connections_max = 1 is closed at once.
    let mut second = TcpStream::connect(("::1", bulk_port)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(second.read(&mut b).unwrap_or(0), 0, "closed without a word");
    assert!(
        tail(&log, 20).contains("too many open"),
        "{}",
        tail(&log, 20)
    );
    // With the first connection idle, the server still stops promptly.
    let t = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let end = Instant::now() + Duration::from_secs(10);
    while server.exited().is_none() {
        assert!(
            Instant::now() < end,
            "the server did not stop: {}",
            tail(&log, 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        t.elapsed()
    );
    drop(s);
}

/// A connection from an address outside `leasequery.requestors` is closed at once, without a
/// word (RFC 5460 §7.1), and the log says why.
#[test]
fn a_stranger_s_bulk_connection_is_closed_at_once() {
    let d = tempfile::tempdir().unwrap();
    let (mut server, log, _, bulk_port) = start(d.path(), "\"2001:db8:ff::/64\"", "");
    let mut s = TcpStream::connect(("::1", bulk_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&query(1, 4, "2001:db8:1::", &[]));
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap_or(0), 0, "closed without an answer");
    assert!(
        tail(&log, 20).contains("not in leasequery.requestors"),
        "{}",
        tail(&log, 20)
    );
    assert!(server.exited().is_none(), "{}", tail(&log, 20));
}
