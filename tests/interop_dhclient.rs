//! Interop with ISC dhclient (`-6`, `-6 -P`) over a veth pair between two network namespaces,
//! with the hook script `tests/interop/dhclient-hook.sh`: it binds, renews at T1 keeping the
//! same address or prefix, and releases (`-r`); the lease store is read back with
//! `tandem leases` after each step.
//!
//! Topology (`common::netns::Topo`) of a test with tag `<tag>`: namespace `tdm<tag>s` runs the
//! server, `tdm<tag>c` runs dhclient, which talks link-local to ff02::1:2. Every tag is
//! distinct (also from the perfdhcp tests), so the tests run in parallel.
//!
//! The namespace tests need root, iproute2 and dhclient. When something is missing they fail
//! and say what, unless `TANDEM_SKIP_NETNS=1`, in which case they print `skipped: ...` and
//! pass. The parser test at the end needs neither root nor tools.

mod common;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::checks::{Checks, check_store_invariants};
use common::leases::{LINK1, Row, netns_config, store_rows};
use common::netns::Topo;
use common::proc::{Proc, read_lossy, run, start_server, tail};
use common::tools::prerequisites;
use common::{colon_hex, hex, unhex};

/// The dhclient `-sf` hook; written into each test's temp dir with mode 0755.
const HOOK: &str = include_str!("interop/dhclient-hook.sh");

// ---------------------------------------------------------------------------------------------
// ISC dhclient: bind, renew at T1, release

/// One record the hook script wrote: its `key=value` lines.
type Event = HashMap<String, String>;

/// Only complete records count: the hook writes a record in several `write`s, so a record still
/// being written (no blank line after it yet) is left for the next read.
fn read_events(path: &Path) -> Vec<Event> {
    let text = read_lossy(path);
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .split("\n\n")
        .filter(|rec| !rec.trim().is_empty())
        .map(|rec| {
            rec.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits for the `nth` (0-based) event with `reason`; fails early if `client` exits.
fn wait_event(
    path: &Path,
    reason: &str,
    nth: usize,
    within: Duration,
    client: &mut Proc,
    log: &Path,
) -> Event {
    let end = Instant::now() + within;
    loop {
        let evs: Vec<Event> = read_events(path)
            .into_iter()
            .filter(|e| e.get("reason").map(String::as_str) == Some(reason))
            .collect();
        if let Some(e) = evs.into_iter().nth(nth) {
            return e;
        }
        if let Some(st) = client.exited() {
            panic!(
                "dhclient exited ({st}) before {reason} #{nth}; events:\n{}\ndhclient log:\n{}",
                read_lossy(path),
                tail(log, 60)
            );
        }
        assert!(
            Instant::now() < end,
            "no {reason} #{nth} from dhclient within {within:?}; events:\n{}\ndhclient log:\n{}",
            read_lossy(path),
            tail(log, 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ev<'a>(e: &'a Event, k: &str) -> &'a str {
    e.get(k).map_or("", String::as_str)
}

/// Bytes as dhclient prints them (ISC's `print_hex`): colon-separated hex (`0:1:0:1:32:99`,
/// `88:bb:f6:06`), or, when every byte is printable, the bytes themselves between double
/// quotes, not escaped (`"g@? "`; an IAID of `P`, `B`, `?`, `\` came as `"PB?\"`).
fn dhclient_bytes(s: &str) -> Option<Vec<u8>> {
    match s.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(q) => Some(q.as_bytes().to_vec()),
        None => unhex(&colon_hex(s)?),
    }
}

/// dhclient's IAID as the number the store prints.
fn iaid_of(s: &str) -> Option<u32> {
    Some(u32::from_be_bytes(dhclient_bytes(s)?.try_into().ok()?))
}

/// Reserved (by the client's MAC) inside LINK1's address pool and PD pool.
const RESERVED_ADDR: &str = "2001:db8:1::1:abcd";
const RESERVED_PREFIX: &str = "2001:db8:80ab:cd00::";

/// Runs one dhclient through bind, one renewal at T1 and release. `pd`: `-P` (prefix
/// delegation only) instead of an address. `xdp`: the server on `--datapath xdp`, and every
/// message of the cycle must have gone through the XDP program.
fn dhclient_cycle(test: &str, tag: &str, pd: bool, xdp: bool) {
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, tag, &[], &[]); // dhclient talks link-local to ff02::1:2
    if xdp {
        topo.client_checksum_offload_off(&t);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    // The client's address and prefix are reserved for its MAC (dhclient's DUID-LLT carries
    // it), in a reservations file next to the config, named relative to it.
    let mac = String::from_utf8_lossy(
        &topo
            .c
            .cmd("cat")
            .arg(format!("/sys/class/net/{}/address", topo.c.name))
            .output()
            .expect("read the client's MAC")
            .stdout,
    )
    .trim()
    .to_string();
    std::fs::write(
        dir.path().join("reservations.txt"),
        format!("# generated\nhw-address {mac} {RESERVED_ADDR} {RESERVED_PREFIX}/56\n"),
    )
    .expect("write reservations");
    let options = "reservations_file = \"reservations.txt\"\n\
                   \n[options]\ndns_servers = [\"2001:db8::53\", \"2001:db8::54\"]\n\
                   domain_search = [\"example.net\", \"lab.example.net\"]\n";
    std::fs::write(
        &cfg,
        netns_config(&data, &topo.s.name, &[(LINK1, None)]) + options,
    )
    .expect("write config");
    let datapath: &[&str] = if xdp {
        &["--workers", "2", "--datapath", "xdp"]
    } else {
        &["--workers", "2"]
    };
    let mut server = start_server(
        &topo.s.exec(),
        &cfg,
        datapath,
        &dir.path().join("server.log"),
    );

    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, HOOK).expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod hook");
    let events = dir.path().join("events");
    let conf = dir.path().join("dhclient.conf");
    // What Debian's stock dhclient.conf asks for over DHCPv6.
    std::fs::write(
        &conf,
        "request dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers;\n",
    )
    .expect("write dhclient.conf");
    let p = |name: &str| dir.path().join(name).display().to_string();
    let common: Vec<String> = {
        let mut v = vec!["-6".to_string()];
        if pd {
            v.push("-P".into());
        }
        v.extend([
            "-v".to_string(),
            "-sf".into(),
            hook.display().to_string(),
            "-lf".into(),
            p("dhclient.leases"),
            "-pf".into(),
            p("dhclient.pid"),
            "-cf".into(),
            conf.display().to_string(),
            "-e".into(),
            format!("TDM_EVENTS={}", events.display()),
        ]);
        v
    };
    // -d: stay in the foreground, so the PID is the one spawned (ip netns exec execs dhclient);
    // -1: try once and exit if no server answers.
    let mut args = topo.c.exec();
    args.push(t.dhclient.clone());
    args.extend(common.iter().cloned());
    args.extend(["-d".to_string(), "-1".into(), topo.c.name.clone()]);
    let dlog = dir.path().join("dhclient.log");
    let mut client = Proc::spawn("dhclient", &args, &dlog);

    let kind = if pd { "pd" } else { "na" };
    let what = |e: &Event| -> String {
        if pd {
            ev(e, "new_ip6_prefix").to_string()
        } else {
            ev(e, "new_ip6_address").to_string()
        }
    };
    let mut ck = Checks::default();
    let bound = wait_event(
        &events,
        "BOUND6",
        0,
        Duration::from_secs(20),
        &mut client,
        &dlog,
    );
    let lease = what(&bound);
    let (addr, len): (Ipv6Addr, u8) = if pd {
        let (a, l) = lease
            .split_once('/')
            .unwrap_or_else(|| panic!("BOUND6 without a prefix: {bound:?}"));
        (
            a.parse().expect("prefix address"),
            l.parse().expect("prefix length"),
        )
    } else {
        (
            lease
                .parse()
                .unwrap_or_else(|_| panic!("BOUND6 without an address: {bound:?}")),
            128,
        )
    };
    let reserved: Ipv6Addr = if pd {
        RESERVED_PREFIX.parse().unwrap()
    } else {
        RESERVED_ADDR.parse().unwrap()
    };
    ck.eq(
        "BOUND6 lease is the one reserved for the MAC",
        addr,
        reserved,
    );
    if pd {
        ck.check(LINK1.has_prefix(addr, len), || {
            format!("delegated {addr}/{len} is not a /56 of {:?}", LINK1.pd)
        });
        ck.eq(
            "BOUND6 new_ip6_address with -P (prefix only)",
            ev(&bound, "new_ip6_address"),
            "",
        );
    } else {
        ck.check(LINK1.has_addr(addr), || {
            format!("address {addr} outside the pool")
        });
        ck.eq(
            "BOUND6 new_ip6_prefix without -P",
            ev(&bound, "new_ip6_prefix"),
            "",
        );
    }
    for (k, v) in [
        ("name_servers", "2001:db8::53 2001:db8::54"),
        ("domain_search", "example.net. lab.example.net."),
        ("new_renew", "5"),
        ("new_rebind", "8"),
        ("new_preferred_life", "20"),
        ("new_max_life", "40"),
    ] {
        ck.eq(&format!("BOUND6 {k}"), ev(&bound, k), v);
    }
    let duid = dhclient_bytes(ev(&bound, "client_id"))
        .map(|d| hex(&d))
        .unwrap_or_else(|| panic!("BOUND6 without client id: {bound:?}"));
    let iaid =
        iaid_of(ev(&bound, "new_iaid")).unwrap_or_else(|| panic!("BOUND6 without IAID: {bound:?}"));
    let row_of = |rows: &[Row]| {
        rows.iter()
            .find(|r| r.kind == kind && r.addr == addr)
            .cloned()
    };
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    ck.eq("leases in the store after BOUND6", rows.len(), 1);
    let at_bind = row_of(&rows);
    ck.check(
        at_bind.as_ref().is_some_and(|r| {
            r.state == "active" && r.duid == duid && r.iaid == iaid && r.len == len
        }),
        || format!("after BOUND6 of {lease} (DUID {duid}, IAID {iaid}) the store has {at_bind:?}"),
    );

    // T1 = 5 s: dhclient renews and must keep the same lease.
    let renew = wait_event(
        &events,
        "RENEW6",
        0,
        Duration::from_secs(15),
        &mut client,
        &dlog,
    );
    ck.eq("RENEW6 lease (same as BOUND6)", what(&renew), lease.clone());
    ck.eq("RENEW6 new_max_life", ev(&renew, "new_max_life"), "40");
    let rows = store_rows(&data);
    let at_renew = row_of(&rows);
    ck.check(
        at_renew
            .as_ref()
            .is_some_and(|r| r.state == "active" && r.duid == duid),
        || format!("after RENEW6 the store has {at_renew:?}"),
    );
    if let (Some(b), Some(r)) = (&at_bind, &at_renew) {
        ck.check(r.expires >= b.expires + 3 && r.cltt >= b.cltt + 3 && r.seq > b.seq, || {
            format!("the Renew ~5 s after binding did not move the stored lease on: at bind {b:?}, after renew {r:?}")
        });
    }

    // Release: dhclient -r stops the running client (SIGTERM to the PID in its pid file, which
    // is the one started above) and sends a Release for the lease in the lease file.
    let mut rargs = topo.c.exec();
    rargs.push(t.dhclient.clone());
    rargs.extend(common.iter().cloned());
    rargs.extend(["-r".to_string(), topo.c.name.clone()]);
    let rrefs: Vec<&str> = rargs.iter().map(String::as_str).collect();
    let r = run(&t.timeout, 20, &rrefs);
    ck.check(r.ok, || {
        format!("dhclient -r failed ({:?}):\n{}", r.code, r.out)
    });
    let released = read_events(&events)
        .into_iter()
        .find(|e| ev(e, "reason") == "RELEASE6");
    let old_key = if pd {
        "old_ip6_prefix"
    } else {
        "old_ip6_address"
    };
    ck.check(
        released.as_ref().is_some_and(|e| ev(e, old_key) == lease),
        || {
            format!(
                "no RELEASE6 of {lease} after dhclient -r; events:\n{}\ndhclient -r output:\n{}",
                read_lossy(&events),
                r.out
            )
        },
    );
    let end = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let row = row_of(&store_rows(&data));
        if row.as_ref().is_some_and(|r| r.state == "released") || Instant::now() >= end {
            break row;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ck.check(
        after
            .as_ref()
            .is_some_and(|r| r.state == "released" && r.duid == duid),
        || format!("after RELEASE6 the store has {after:?}, want state released"),
    );
    if client.wait_exit(Duration::from_secs(3)).is_none() {
        client.kill9();
    }
    server.check_alive(&mut ck);
    if xdp {
        // Solicit, Request, Renew, Release at least (the server logs the program's count at a
        // clean stop).
        server.signal(nix::sys::signal::Signal::SIGTERM);
        let _ = server.proc.wait_exit(Duration::from_secs(15));
        let text = server.log_text();
        let redirected = common::proc::xdp_redirected(&text);
        ck.check(redirected.is_some_and(|n| n >= 4), || {
            format!("the XDP program handed {redirected:?} frames to the server, want >= 4")
        });
    }
    ck.finish(
        test,
        &[
            ("events", read_lossy(&events)),
            ("dhclient log (tail)", tail(&dlog, 40)),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

#[test]
fn dhclient_address_bind_renew_release() {
    dhclient_cycle("dhclient_address_bind_renew_release", "idn", false, false);
}

#[test]
fn dhclient_address_bind_renew_release_over_af_xdp() {
    dhclient_cycle(
        "dhclient_address_bind_renew_release_over_af_xdp",
        "idx",
        false,
        true,
    );
}

#[test]
fn dhclient_prefix_bind_renew_release() {
    dhclient_cycle("dhclient_prefix_bind_renew_release", "idp", true, false);
}

#[test]
fn dhclient_prefix_bind_renew_release_over_af_xdp() {
    dhclient_cycle(
        "dhclient_prefix_bind_renew_release_over_af_xdp",
        "ipx",
        true,
        true,
    );
}

// ---------------------------------------------------------------------------------------------
// The parsers above, on recorded values (no root or tools needed)

#[test]
fn dhclient_values_parse_from_recorded_text() {
    assert_eq!(iaid_of("88:bb:f6:06"), Some(0x88bb_f606));
    assert_eq!(iaid_of("\"g@? \""), Some(0x6740_3f20));
    // Recorded from a failed run: a printable IAID that ends in a backslash, which dhclient
    // does not escape.
    assert_eq!(iaid_of(r#""PB?\""#), Some(0x5042_3f5c));
    assert_eq!(
        dhclient_bytes("0:1:0:1:32:99:da:ca:9a:c3:88:bb:f6:6")
            .map(|b| hex(&b))
            .as_deref(),
        Some("000100013299daca9ac388bbf606")
    );
}
