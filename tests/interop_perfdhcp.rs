//! Interop with ISC Kea's perfdhcp over a veth pair between two network namespaces, by
//! multicast to ff02::1:2: 4-way exchanges for addresses, prefixes and both; relayed (`-A 1`);
//! with Renew and Release phases (`-f`, `-F`). perfdhcp's counters are parsed, and the lease
//! store is read back with `tandem leases` and cross-checked against the leases perfdhcp
//! reports (`-x l`).
//!
//! Topology (`common::netns::Topo`) of a test with tag `<tag>`: namespace `tdm<tag>s` runs the
//! server on its end of the veth pair, `tdm<tag>c` runs perfdhcp. Every tag is distinct (also
//! from the dhclient tests), so the tests run in parallel.
//!
//! The namespace tests need root, iproute2 and perfdhcp. When something is missing they fail
//! and say what, unless `TANDEM_SKIP_NETNS=1`, in which case they print `skipped: ...` and
//! pass. The parser test at the end needs neither root nor tools.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::checks::{Checks, check_store_invariants};
use common::leases::{LINK1, LINK2, netns_config, parse_row, store_rows};
use common::netns::Topo;
use common::perfdhcp::*;
use common::proc::{start_server, tail};
use common::tools::prerequisites;

// ---------------------------------------------------------------------------------------------
// perfdhcp, direct, multicast over the veth

#[test]
fn perfdhcp_direct_address_prefix_and_both() {
    let test = "perfdhcp_direct_address_prefix_and_both";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipa", &["2001:db8:1::1/64"], &["2001:db8:1::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, netns_config(&data, &topo.s.name, &[(LINK1, None)]))
        .expect("write config");
    let mut server = start_server(
        &topo.s.exec(),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    let mut summaries = Vec::new();
    // Clients (exchanges) of the runs that ask for addresses, and for prefixes.
    let (mut na_clients, mut pd_clients) = (0, 0);
    // Distinct base MACs make the three runs' DUIDs (DUID-LLT from the MAC) disjoint.
    for (mode, mac) in [
        ("address-only", "00:0c:01:01:00:00"),
        ("prefix-only", "00:0c:01:02:00:00"),
        ("address-and-prefix", "00:0c:01:03:00:00"),
    ] {
        let args = perf_args(mode, mac);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = perfdhcp(&t, &topo, &refs);
        check_four_way(&mut ck, mode, &p, 0);
        let sent = p.x("SOLICIT-ADVERTISE").sent;
        if mode != "prefix-only" {
            na_clients += sent;
        }
        if mode != "address-only" {
            pd_clients += sent;
        }
        for (client, l) in granted_by_client(&mut ck, mode, &p, mode) {
            if let Some(a) = l.addr {
                ck.check_in(
                    "client in two perfdhcp runs",
                    want_na.insert(client.clone(), a).is_none(),
                    || format!("{mode}: client {client} seen in two runs"),
                );
            }
            if let Some(a) = l.prefix {
                ck.check_in(
                    "client in two perfdhcp runs",
                    want_pd.insert(client.clone(), a).is_none(),
                    || format!("{mode}: client {client} seen in two runs"),
                );
            }
        }
        summaries.push((mode, p.summary));
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    ck.eq("active na leases", want_na.len() as u64, na_clients);
    ck.eq("active pd leases", want_pd.len() as u64, pd_clients);

    let mut ctx: Vec<(&str, String)> = summaries.into_iter().collect();
    ctx.push(("server log (tail)", tail(&server.log, 15)));
    server.check_alive(&mut ck);
    ck.finish(test, &ctx);
    drop(server);
    drop(topo);
}

// ---------------------------------------------------------------------------------------------
// perfdhcp through a simulated relay

/// perfdhcp -A 1 sends Relay-forw from port 547 to ff02::1:2 with link-address and
/// peer-address both set to its own global address on the interface (here 2001:db8:2::2), and
/// takes the Relay-repl on port 547. The server has two subnets: 2001:db8:1::/64 tied to the
/// server's interface and 2001:db8:2::/64, so every lease must come from subnet 2, chosen by the
/// relay's link-address and not by the interface the packet arrived on.
#[test]
fn perfdhcp_relayed_selects_subnet_by_link_address() {
    let test = "perfdhcp_relayed_selects_subnet_by_link_address";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipr", &["2001:db8:2::1/64"], &["2001:db8:2::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    let subnets = [(LINK1, Some(topo.s.name.as_str())), (LINK2, None)];
    std::fs::write(&cfg, netns_config(&data, &topo.s.name, &subnets)).expect("write config");
    let mut server = start_server(
        &topo.s.exec(),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mode = "address-and-prefix";
    let mut args = perf_args(mode, "00:0c:02:01:00:00");
    args.extend(["-A", "1"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = perfdhcp(&t, &topo, &refs);
    check_four_way(&mut ck, "relayed", &p, 0);
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    for (client, l) in granted_by_client(&mut ck, "relayed", &p, mode) {
        if let Some(a) = l.addr {
            ck.check_in(
                "relayed client got an address outside subnet 2",
                LINK2.has_addr(a),
                || format!("relayed client {client} got {a}, outside subnet 2's pool"),
            );
            want_na.insert(client.clone(), a);
        }
        if let Some(a) = l.prefix {
            want_pd.insert(client, a);
        }
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK2]);
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    server.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("perfdhcp -A 1", p.summary),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// perfdhcp with Renew and Release phases

#[test]
fn perfdhcp_renew_and_release() {
    let test = "perfdhcp_renew_and_release";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipf", &["2001:db8:1::1/64"], &["2001:db8:1::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, netns_config(&data, &topo.s.name, &[(LINK1, None)]))
        .expect("write config");
    let mut server = start_server(
        &topo.s.exec(),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mode = "address-and-prefix";
    let mut args = perf_args(mode, "00:0c:03:01:00:00");
    // Of the 100 exchanges per second, 30 are Renews and 20 Releases of leases already granted.
    args.extend(["-f", "30", "-F", "20"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = perfdhcp(&t, &topo, &refs);
    let rn = p.x("RENEW-REPLY");
    let rl = p.x("RELEASE-REPLY");
    // perfdhcp matches a Reply against Requests, then Renews, then Releases, counting an orphan
    // at each level it fails: Replies to Renews are REQUEST-REPLY orphans, Replies to Releases
    // are REQUEST-REPLY and RENEW-REPLY orphans.
    check_four_way(&mut ck, "renew+release", &p, rn.received + rl.received);
    ck.check(rn.sent > 0, || "no Renew was sent".into());
    ck.check(rl.sent > 0, || "no Release was sent".into());
    ck.eq("RENEW-REPLY received (== sent)", rn.received, rn.sent);
    ck.eq("RELEASE-REPLY received (== sent)", rl.received, rl.sent);
    ck.eq("RENEW-REPLY drops", rn.drops, 0);
    ck.eq("RELEASE-REPLY drops", rl.drops, 0);
    ck.eq(
        "RENEW-REPLY orphans (Replies to Releases, see above)",
        rn.orphans,
        rl.received,
    );
    ck.eq("RELEASE-REPLY orphans", rl.orphans, 0);

    let granted = granted_by_client(&mut ck, "renew+release", &p, mode);
    // A Renew must keep the lease: same address and prefix as granted.
    let renewed = p.leases("RENEW-REPLY");
    ck.eq(
        "renewed leases listed (perfdhcp -x l)",
        renewed.len() as u64,
        rn.received,
    );
    for l in renewed {
        match granted.get(&l.client) {
            Some(g) => ck.check_in(
                "Renew changed the lease",
                g.addr == l.addr && g.prefix == l.prefix,
                || {
                    format!(
                        "Renew changed client {}'s lease: granted {g:?}, renewed {l:?}",
                        l.client
                    )
                },
            ),
            None => ck.check_in("renewed lease of a client never granted one", false, || {
                format!("renewed lease of a client never granted one: {l:?}")
            }),
        }
    }
    let released: BTreeSet<String> = p
        .leases("RELEASE-REPLY")
        .iter()
        .map(|l| l.client.clone())
        .collect();
    ck.eq(
        "released clients listed (perfdhcp -x l)",
        released.len() as u64,
        rl.received,
    );

    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    for (client, g) in &granted {
        if released.contains(client) {
            // Released: the store keeps the lease, in state `released`, for its last client.
            for (kind, a) in [("na", g.addr), ("pd", g.prefix)] {
                let Some(a) = a else { continue }; // already reported by granted_by_client
                let row = rows.iter().find(|r| r.kind == kind && r.addr == a);
                ck.check_in(
                    "released lease not in state released in the store",
                    row.is_some_and(|r| r.state == "released" && r.duid == *client),
                    || format!("client {client} released {kind} {a}, but the store has {row:?}"),
                );
            }
        } else if let (Some(a), Some(p)) = (g.addr, g.prefix) {
            want_na.insert(client.clone(), a);
            want_pd.insert(client.clone(), p);
        }
    }
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    let n_released = rows.iter().filter(|r| r.state == "released").count() as u64;
    ck.eq(
        "leases in state released (na + pd)",
        n_released,
        2 * rl.received,
    );
    server.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("perfdhcp -f 30 -F 20", p.summary),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// The parsers above, on recorded output (no root or tools needed)

#[test]
fn perfdhcp_output_and_lease_rows_parse_from_recorded_text() {
    let out = "Running: perfdhcp -6 ...\nReached max requests limit.\n\
        ***Statistics for: SOLICIT-ADVERTISE***\nsent packets: 300\nreceived packets: 299\n\
        drops: 1\ndrops ratio: 0.33 %\norphans: 2\nrejected leases: 3\nnon unique addresses: 4\n\n\
        min delay: 0.1 ms\n***Statistics for: RELEASE-REPLY***\nsent packets: 0\ndrops ratio: -nan %\n\
        Interrupted\n***Leases for REQUEST-REPLY***\nclient_id,adrress,prefix\n\
        00:01:00:01:32:99:da:80:00:0c:01:02:03:07,2001:db8:1::1:5000,2001:db8:80f8::\n\
        00:01:00:01:32:99:da:80:00:0c:01:02:03:08,,2001:db8:80f9::\n\n\
        ***Leases for RELEASE-REPLY***\nclient_id,adrress,prefix\n00:01:00:01:32:99:da:80:00:0c:01:02:03:07,,\n";
    let p = parse_perfdhcp(Some(0), out);
    assert_eq!(
        p.x("SOLICIT-ADVERTISE"),
        XStats {
            sent: 300,
            received: 299,
            drops: 1,
            orphans: 2,
            rejected: 3,
            non_unique: 4
        }
    );
    assert_eq!(p.x("RELEASE-REPLY"), XStats::default());
    assert!(!p.summary.contains("Reached max") && !p.summary.contains("2001:db8:80f8"));
    assert_eq!(
        p.leases("REQUEST-REPLY"),
        [
            PLease {
                client: "000100013299da80000c01020307".into(),
                addr: Some("2001:db8:1::1:5000".parse().unwrap()),
                prefix: Some("2001:db8:80f8::".parse().unwrap()),
            },
            PLease {
                client: "000100013299da80000c01020308".into(),
                addr: None,
                prefix: Some("2001:db8:80f9::".parse().unwrap()),
            },
        ]
    );
    assert_eq!(p.leases("RELEASE-REPLY").len(), 1);

    let row = parse_row(
        "pd\t2001:db8:8010::/56\treleased\t000100013299\t2294019590\t1\t1795628643\t1795628603\t7\t-",
    )
    .unwrap();
    assert_eq!(
        (
            row.kind.as_str(),
            row.len,
            row.state.as_str(),
            row.iaid,
            row.seq,
            row.relay.as_str()
        ),
        ("pd", 56, "released", 2294019590, 7, "-")
    );
    // The relay column of a relayed client's lease; a row of the format before it is refused.
    let relayed = parse_row(
        "na\t2001:db8:1::1:5000/128\tactive\t000100013299\t1\t1\t1795628643\t1795628603\t8\trelay=::1,link_address=2001:db8:1::,interface_id=74616e64656d2d67656e",
    )
    .unwrap();
    assert!(relayed.relay.contains("interface_id=74616e64656d2d67656e"));
    assert!(
        parse_row("pd\t2001:db8:8010::/56\treleased\t000100013299\t2294019590\t1\t1795628643\t1795628603\t7").is_none()
    );
    assert!(LINK1.has_prefix(row.addr, row.len));
    assert!(!LINK1.has_prefix("2001:db8:8010:1::".parse().unwrap(), 56)); // host bits
    assert!(!LINK1.has_prefix("2001:db8:8100::".parse().unwrap(), 56)); // outside the /40
    assert!(!LINK1.has_prefix("2001:db8:8010::".parse().unwrap(), 64)); // wrong length
    assert!(LINK1.has_addr("2001:db8:1::1:ffff".parse().unwrap()));
    assert!(!LINK1.has_addr("2001:db8:1::2:0".parse().unwrap()));
}
