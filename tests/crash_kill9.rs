//! A loaded `tandem serve` on loopback is killed with SIGKILL: every lease a client was told
//! about is in the store afterwards, and the restarted server gives it to the same client
//! again (and no surviving lease to a new client). Needs neither root nor external tools.

mod common;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_client::{Ask, Client, Event, Exchange, Mode, Outbox, Retransmit};

use common::checks::{Checks, check_store_invariants};
use common::hex;
use common::leases::{LINK1, Pools, Row, store_rows};
use common::proc::{free_udp_port, read_lossy, server_duid, start_server, tail};

// ---------------------------------------------------------------------------------------------
// kill -9 under load: every acknowledged lease survives

/// A lease the server told a client it has (a Reply with an address in the IA_NA).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    duid: Vec<u8>,
    iaid: u32,
    addr: Ipv6Addr,
}

/// A driven client of the shared `tandem-client` for thread `t`, request `n`: DUID-LL
/// 02:7a:4e:`t`:`n` (locally administered), one IA_NA `iaid`, Rapid Commit. The caller
/// retransmits.
fn crash_client(t: u8, n: u16, iaid: u32) -> Client {
    let cfg = tandem_client::Config {
        ask: Ask {
            rapid_commit: true,
            ..Ask::address(iaid)
        },
        retransmit: Retransmit {
            initial_ms: 1000,
            max_rt_ms: 1000,
            max_retries: 0,
            jitter_permille: 0,
        },
        mode: Mode::Driven,
    };
    Client::new(
        0x4e00_0000 | (u32::from(t) << 16) | u32::from(n),
        0x7a,
        cfg,
        0,
    )
}

/// The rapid-commit Solicit of `c` (transaction `xid`) in `out`.
fn solicit(c: &mut Client, xid: u32, out: &mut Outbox) {
    c.start(Exchange::Solicit, 0, xid, out);
}

/// The address a rapid-commit Reply grants `c`, or what is wrong with it: the shared client
/// checks the transaction, the identifiers, Rapid Commit, statuses and lifetimes; here the
/// Server Identifier must be the server's.
fn reply_addr(c: &mut Client, bytes: &[u8], server: &[u8]) -> Result<Ipv6Addr, String> {
    let mut out = Outbox::direct();
    let step = c.on_datagram(0, bytes, 0, &mut out);
    if step.event != Event::Bound {
        return Err(format!(
            "{:?} to a rapid-commit Solicit, want a binding",
            step.event
        ));
    }
    if c.server_id() != server {
        return Err(format!(
            "Server Identifier {} is not the server's {}",
            hex(c.server_id()),
            hex(server)
        ));
    }
    c.address()
        .map(|l| l.addr)
        .ok_or_else(|| "bound without an address".into())
}

/// Client DUID (DUID-LL, locally administered 6-byte link-layer address) for thread `t`,
/// request `n`: the one [`crash_client`] has.
fn crash_duid(t: u8, n: u16) -> Vec<u8> {
    crash_client(t, n, 0).duid().to_vec()
}

const CRASH_THREADS: u8 = 8;
/// Solicits each thread keeps outstanding.
const CRASH_WINDOW: usize = 16;
/// Solicits each thread sends at most (far more than one second of load needs, so the load
/// is still running when the server is killed).
const CRASH_MAX_PER_THREAD: u16 = 50_000;

/// The crash test's subnet: LINK1 with an address pool large enough for any load.
const CRASH_POOL: Pools = Pools {
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0xff, 0xffff),
    ..LINK1
};

/// One load thread: keeps `CRASH_WINDOW` rapid-commit Solicits for new DUIDs in flight until
/// `stop`, then drains what already arrived. Returns the acknowledged leases and any protocol
/// errors.
fn crash_load(
    t: u8,
    server: SocketAddr,
    server_duid: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
    sent_count: Arc<AtomicUsize>,
) -> (Vec<Acked>, Vec<String>) {
    let sock = UdpSocket::bind("[::1]:0").expect("bind client socket");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let hard_end = Instant::now() + Duration::from_secs(20);
    let mut outstanding: HashMap<u32, (Client, u32)> = HashMap::new();
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let mut out = Outbox::direct();
    let mut rx = [0u8; 2048];
    let mut n: u16 = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed) || Instant::now() >= hard_end;
        while !stopping && outstanding.len() < CRASH_WINDOW && n < CRASH_MAX_PER_THREAD {
            let xid = (u32::from(t) << 16) | u32::from(n);
            let iaid = 0x1000_0000 | xid;
            let mut c = crash_client(t, n, iaid);
            solicit(&mut c, xid, &mut out);
            if sock.send_to(out.datagram(), server).is_ok() {
                outstanding.insert(xid, (c, iaid));
                sent_count.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        match sock.recv_from(&mut rx) {
            Ok((len, from)) => {
                if from != server {
                    continue;
                }
                let bytes = &rx[..len];
                let xid = u32::from_be_bytes([
                    0,
                    bytes.get(1).copied().unwrap_or(0),
                    bytes.get(2).copied().unwrap_or(0),
                    bytes.get(3).copied().unwrap_or(0),
                ]);
                let Some((mut c, iaid)) = outstanding.remove(&xid) else {
                    errors.push(format!(
                        "reply for unknown or answered transaction {xid:#x}"
                    ));
                    continue;
                };
                let duid = c.duid().to_vec();
                match reply_addr(&mut c, bytes, &server_duid) {
                    Ok(addr) => {
                        acked.push(Acked { duid, iaid, addr });
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(format!("client {}: {e}", hex(&duid))),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stopping {
                    break;
                }
            }
            Err(e) => {
                if stopping {
                    break;
                }
                errors.push(format!("recv: {e}"));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    (acked, errors)
}

/// The crash client with this DUID (one [`crash_duid`] made).
fn client_for(duid: &[u8], iaid: u32) -> Result<Client, String> {
    match duid {
        [0, 3, 0, 1, 0x02, 0x7a, 0x4e, t, hi, lo] => {
            Ok(crash_client(*t, u16::from_be_bytes([*hi, *lo]), iaid))
        }
        _ => Err(format!("{} is not a crash-test DUID", hex(duid))),
    }
}

/// Sends one rapid-commit Solicit and waits for its Reply (3 tries, 1 s each).
fn solicit_once(
    sock: &UdpSocket,
    server: SocketAddr,
    xid: u32,
    duid: &[u8],
    iaid: u32,
    server_duid: &[u8],
) -> Result<Ipv6Addr, String> {
    let mut out = Outbox::direct();
    let mut rx = [0u8; 2048];
    let mut c = client_for(duid, iaid)?;
    solicit(&mut c, xid, &mut out);
    for _ in 0..3 {
        sock.send_to(out.datagram(), server)
            .map_err(|e| format!("send: {e}"))?;
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            match sock.recv_from(&mut rx) {
                Ok((len, from))
                    if from == server && len >= 4 && rx[1..4] == xid.to_be_bytes()[1..4] =>
                {
                    return reply_addr(&mut c, &rx[..len], server_duid);
                }
                Ok(_) => {}
                Err(_) => {}
            }
        }
    }
    Err("no reply after 3 tries".into())
}

#[test]
fn crash_kill9_keeps_every_acknowledged_lease() {
    let test = "crash_kill9_keeps_every_acknowledged_lease";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    // A unique port matters: the server's SO_REUSEPORT sockets would silently share a port
    // with another tandem listening on it.
    let port = free_udp_port();
    let server_addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0));
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\nlisten = [\"[::1]:{port}\"]\nrapid_commit = true\n\
             [lease]\npreferred_lifetime_secs = 3600\nvalid_lifetime_secs = 7200\n{}",
            data.display(),
            CRASH_POOL.toml(None)
        ),
    )
    .expect("write config");
    let log1 = dir.path().join("server1.log");
    let mut server = start_server(&[], &cfg, &["--workers", "4"], &log1);
    let duid = Arc::new(server_duid(&log1));

    // Load from several threads, then SIGKILL the server while Solicits are in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CRASH_THREADS)
        .map(|t| {
            let (duid, stop) = (duid.clone(), stop.clone());
            let (count, sent) = (count.clone(), sent.clone());
            std::thread::spawn(move || crash_load(t, server_addr, duid, stop, count, sent))
        })
        .collect();
    let t0 = Instant::now();
    // About one second of load (at least 200 leases, at most 8 s), but kill before the threads
    // run out of Solicits, so that some are always in flight.
    let cap = usize::from(CRASH_THREADS) * usize::from(CRASH_MAX_PER_THREAD);
    while (t0.elapsed() < Duration::from_secs(1)
        || (count.load(Ordering::Relaxed) < 200 && t0.elapsed() < Duration::from_secs(8)))
        && sent.load(Ordering::Relaxed) < cap * 3 / 5
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent_before = sent.load(Ordering::Relaxed);
    server.proc.kill9(); // SIGKILL: no shutdown, no final commit
    let at_kill = count.load(Ordering::Relaxed);
    let load_time = t0.elapsed();
    stop.store(true, Ordering::Relaxed); // threads drain replies already in their sockets
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for h in threads {
        let (a, e) = h.join().expect("load thread");
        acked.extend(a);
        errors.extend(e);
    }
    let mut ck = Checks::default();
    ck.check(sent_before < cap, || {
        "the load ran out before the kill: nothing was in flight when the server died".into()
    });
    ck.check(errors.is_empty(), || {
        format!(
            "{} protocol errors under load, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        )
    });
    ck.check(acked.len() >= 100, || {
        format!(
            "only {} leases acknowledged in {:?} of load: too few for the test to mean anything",
            acked.len(),
            t0.elapsed()
        )
    });
    let mut by_addr: HashMap<Ipv6Addr, &Acked> = HashMap::new();
    for a in &acked {
        if let Some(prev) = by_addr.insert(a.addr, a) {
            ck.check_in("address acknowledged to two clients", false, || {
                format!(
                    "{} given to both {} and {}",
                    a.addr,
                    hex(&prev.duid),
                    hex(&a.duid)
                )
            });
        }
    }

    // The store as the crash left it.
    let check_acked = |ck: &mut Checks, rows: &[Row], when: &str| {
        let by: HashMap<Ipv6Addr, &Row> = rows
            .iter()
            .filter(|r| r.kind == "na")
            .map(|r| (r.addr, r))
            .collect();
        let mut lost = Vec::new();
        for a in &acked {
            match by.get(&a.addr) {
                Some(r) if r.state == "active" && r.duid == hex(&a.duid) && r.iaid == a.iaid => {}
                other => lost.push(format!(
                    "{} for {} iaid {}: store has {:?}",
                    a.addr,
                    hex(&a.duid),
                    a.iaid,
                    other
                )),
            }
        }
        ck.check(lost.is_empty(), || {
            format!(
                "{when}: {} of {} acknowledged leases are not active in the store for their client; first: {:#?}",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(5)]
            )
        });
    };
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[CRASH_POOL]);
    check_acked(&mut ck, &rows, "after kill -9");
    let stored_active = rows.iter().filter(|r| r.state == "active").count();

    // Restart on the same store: the leases are back in memory too.
    let log2 = dir.path().join("server2.log");
    let mut server2 = start_server(&[], &cfg, &["--workers", "4"], &log2);
    ck.eq(
        "server DUID after restart",
        server_duid(&log2),
        duid.to_vec(),
    );
    let restored = read_lossy(&log2)
        .lines()
        .find(|l| l.contains("leases restored"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("loaded="))
                .and_then(|v| v.parse::<usize>().ok())
        });
    ck.check(restored.is_some_and(|n| n >= acked.len()), || {
        format!(
            "restarted server restored {restored:?} leases, fewer than the {} acknowledged",
            acked.len()
        )
    });
    let sock = UdpSocket::bind("[::1]:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let step = (acked.len() / 64).max(1);
    let mut xid = 0x00f0_0000u32;
    for a in acked.iter().step_by(step).take(64) {
        xid += 1;
        let got = solicit_once(&sock, server_addr, xid, &a.duid, a.iaid, &duid);
        ck.check_in(
            "after restart a client did not get its lease back",
            got == Ok(a.addr),
            || {
                format!(
                    "after restart {} (iaid {}) got {got:?}, want its lease {}",
                    hex(&a.duid),
                    a.iaid,
                    a.addr
                )
            },
        );
    }
    // New clients must not be given a surviving lease.
    for n in 0..32u16 {
        xid += 1;
        let d = crash_duid(0xee, n);
        match solicit_once(&sock, server_addr, xid, &d, 1, &duid) {
            Ok(addr) => ck.check_in(
                "after restart a new client got a surviving lease",
                !by_addr.contains_key(&addr),
                || {
                    format!(
                        "after restart new client {} got {addr}, which {} holds",
                        hex(&d),
                        hex(&by_addr[&addr].duid)
                    )
                },
            ),
            Err(e) => ck.check_in("after restart a new client got no lease", false, || {
                format!("after restart new client {}: {e}", hex(&d))
            }),
        }
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[CRASH_POOL]);
    check_acked(&mut ck, &rows, "after restart");
    println!(
        "{test}: {load_time:?} of load: {sent_before} Solicits sent, {} leases acknowledged \
         ({at_kill} when the kill returned, {} drained after), {} in flight at the kill, \
         {stored_active} active in the store after kill -9",
        acked.len(),
        acked.len().saturating_sub(at_kill),
        sent_before.saturating_sub(at_kill)
    );
    server2.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("server log before kill (tail)", tail(&log1, 10)),
            ("server log after restart (tail)", tail(&log2, 10)),
        ],
    );
    drop(server2);
}
