//! tandem-gen's own checks: deliberately broken servers must make it fail, a correct one
//! (its own reflector) must not.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tandem::wire::{Message, MessageType, MessageWriter};

#[derive(Clone, Copy)]
enum Broken {
    /// Every client gets the same address.
    SameAddress,
    /// Renew answers with another address than the one granted.
    RenewMoves,
    /// Addresses outside the configured pool.
    OutsidePool,
}

/// A tiny UDP server that answers like a DHCPv6 server with the given defect.
fn stub(kind: Broken) -> (SocketAddrV6, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let addr = match sock.local_addr().unwrap() {
        std::net::SocketAddr::V6(a) => a,
        _ => unreachable!(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let h = std::thread::spawn(move || {
        let (mut buf, mut out) = (vec![0u8; 2048], Vec::new());
        let mut n = 0u128;
        while !s2.load(Ordering::Relaxed) {
            let Ok((len, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::parse(&buf[..len]) else {
                continue;
            };
            let ty = match m.msg_type() {
                MessageType::Solicit => MessageType::Advertise,
                _ => MessageType::Reply,
            };
            n += 1;
            let client = u128::from(m.client_id().unwrap()[9]);
            let a = match (kind, m.msg_type()) {
                (Broken::SameAddress, _) => {
                    Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0005u128)
                }
                (Broken::RenewMoves, MessageType::Renew) => {
                    Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0002_0000u128 + n)
                }
                (Broken::RenewMoves, _) => {
                    Ipv6Addr::from(0x2001_0db8_0001_0000_0000_0000_0001_0000u128 + client)
                }
                (Broken::OutsidePool, _) => {
                    Ipv6Addr::from(0x2001_0db8_0009_0000_0000_0000_0000_0000u128 + client)
                }
            };
            {
                let mut w = MessageWriter::new(&mut out, ty, m.transaction_id());
                w.server_id(&[0, 2, 0, 0, 0, 9, 1, 2]);
                w.client_id(m.client_id().unwrap());
                w.ia_na(1, 100, 160, |o| o.ia_addr(a, 200, 300, |_| {}));
            }
            let _ = sock.send_to(&out, from);
        }
    });
    (addr, stop, h)
}

fn run_gen(server: SocketAddrV6, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pools.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{range=\"2001:db8:1::1:0-2001:db8:1::3:ffff\"}]\n",
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tandem-gen"))
        .args([
            "--server",
            &server.to_string(),
            "--clients",
            "8",
            "--threads",
            "2",
            "--timeout-ms",
            "200",
        ])
        .args([
            "--max-retries",
            "2",
            "--phase-secs",
            "10",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn check_fails(kind: Broken, phases: &str, needle: &str) {
    let (addr, stop, h) = stub(kind);
    let o = run_gen(addr, &["--phases", phases]);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(needle), "expected `{needle}` in: {out}");
}

#[test]
fn one_address_for_two_clients_fails() {
    check_fails(Broken::SameAddress, "acquire", "while client");
}

#[test]
fn renew_that_moves_the_lease_fails() {
    check_fails(Broken::RenewMoves, "acquire,renew", "renew of client");
}

#[test]
fn lease_outside_the_pool_fails() {
    check_fails(
        Broken::OutsidePool,
        "acquire",
        "outside every configured pool",
    );
}

#[test]
fn reflector_passes_every_phase_relayed_and_direct() {
    let port = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut refl = Command::new(env!("CARGO_BIN_EXE_tandem-gen"))
        .args([
            "--reflector",
            "--listen",
            &format!("[::1]:{port}"),
            "--threads",
            "1",
            "--reflect-secs",
            "30",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let server: SocketAddrV6 = format!("[::1]:{port}").parse().unwrap();
    let direct = Command::new(env!("CARGO_BIN_EXE_tandem-gen"))
        .args([
            "--server",
            &server.to_string(),
            "--clients",
            "200",
            "--mode",
            "both",
            "--json",
        ])
        .args([
            "--phases",
            "acquire,renew,rebind,release",
            "--phase-secs",
            "10",
            "--timeout-ms",
            "300",
        ])
        .output()
        .unwrap();
    let relayed = Command::new(env!("CARGO_BIN_EXE_tandem-gen"))
        .args([
            "--server",
            &server.to_string(),
            "--clients",
            "200",
            "--relay-link",
            "2001:db8:1::1",
            "--json",
        ])
        .args([
            "--phases",
            "acquire,renew",
            "--phase-secs",
            "10",
            "--timeout-ms",
            "300",
            "--rapid-commit",
        ])
        .output()
        .unwrap();
    let _ = refl.kill();
    let _ = refl.wait();
    for o in [&direct, &relayed] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["violations"], 0);
        for p in v["phases"].as_array().unwrap() {
            assert_eq!(p["ok"], 200, "{p}");
            assert!(p["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
        }
    }
}
