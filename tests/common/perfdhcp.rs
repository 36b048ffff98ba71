//! Running ISC Kea's perfdhcp in a client namespace and reading what it prints: its
//! per-exchange counters and the leases it lists (`-x l`), with the checks the interop tests
//! make of a bounded 4-way run.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use super::checks::Checks;
use super::colon_hex;
use super::leases::Row;
use super::netns::Topo;
use super::proc::run;
use super::tools::Tools;

/// The active leases of one kind must be exactly `want` (DUID hex -> address or prefix).
pub fn check_active(ck: &mut Checks, rows: &[Row], kind: &str, want: &BTreeMap<String, Ipv6Addr>) {
    let got: BTreeMap<String, Vec<Ipv6Addr>> = rows
        .iter()
        .filter(|r| r.kind == kind && r.state == "active")
        .fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.duid.clone())
                .or_insert_with(Vec::new)
                .push(r.addr);
            m
        });
    let n_active: usize = got.values().map(Vec::len).sum();
    ck.eq(
        &format!("active {kind} leases in the store (one per client served)"),
        n_active,
        want.len(),
    );
    let mut wrong = Vec::new();
    for (duid, addr) in want {
        match got.get(duid) {
            Some(v) if v == &vec![*addr] => {}
            other => wrong.push(format!(
                "client {duid}: perfdhcp got {addr}, store has active {other:?}"
            )),
        }
    }
    for (duid, v) in &got {
        if !want.contains_key(duid) {
            wrong.push(format!(
                "store has active {kind} {v:?} for {duid}, which no client was given"
            ));
        }
    }
    let topic =
        format!("{kind} leases of the clients and active {kind} leases in the store differ");
    for w in wrong {
        ck.check_in(&topic, false, || w);
    }
}

/// One "Statistics for" block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XStats {
    pub sent: u64,
    pub received: u64,
    pub drops: u64,
    pub orphans: u64,
    pub rejected: u64,
    pub non_unique: u64,
}

/// A lease as `perfdhcp -x l` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PLease {
    /// DUID, lowercase hex.
    pub client: String,
    pub addr: Option<Ipv6Addr>,
    pub prefix: Option<Ipv6Addr>,
}

pub struct Perf {
    pub code: Option<i32>,
    /// The output without the lease lists and the "Reached max requests limit." flood.
    pub summary: String,
    pub stats: BTreeMap<String, XStats>,
    pub leases: BTreeMap<String, Vec<PLease>>,
}

impl Perf {
    pub fn x(&self, exchange: &str) -> XStats {
        self.stats.get(exchange).copied().unwrap_or_default()
    }

    pub fn leases(&self, exchange: &str) -> &[PLease] {
        self.leases.get(exchange).map_or(&[], Vec::as_slice)
    }
}

pub fn parse_perfdhcp(code: Option<i32>, out: &str) -> Perf {
    let mut p = Perf {
        code,
        summary: String::new(),
        stats: BTreeMap::new(),
        leases: BTreeMap::new(),
    };
    let mut stats_of: Option<String> = None;
    let mut leases_of: Option<String> = None;
    for line in out.lines() {
        let l = line.trim();
        if l == "Reached max requests limit." {
            continue;
        }
        if let Some(name) = l
            .strip_prefix("***Statistics for: ")
            .and_then(|r| r.strip_suffix("***"))
        {
            stats_of = Some(name.to_string());
            leases_of = None;
            p.stats.entry(name.to_string()).or_default();
        } else if let Some(name) = l
            .strip_prefix("***Leases for ")
            .and_then(|r| r.strip_suffix("***"))
        {
            leases_of = Some(name.to_string());
            stats_of = None;
            p.leases.entry(name.to_string()).or_default();
            continue;
        } else if l.starts_with("***") {
            stats_of = None;
            leases_of = None;
        }
        if let Some(x) = &leases_of {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() == 3
                && f[0] != "client_id"
                && let Some(client) = colon_hex(f[0])
            {
                p.leases.get_mut(x).expect("section").push(PLease {
                    client,
                    addr: f[1].parse().ok(),
                    prefix: f[2].parse().ok(),
                });
            }
            continue;
        }
        p.summary.push_str(line);
        p.summary.push('\n');
        if let (Some(x), Some((k, v))) = (&stats_of, l.split_once(": ")) {
            let v: u64 = match v.trim().parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let s = p.stats.get_mut(x).expect("section");
            match k {
                "sent packets" => s.sent = v,
                "received packets" => s.received = v,
                "drops" => s.drops = v,
                "orphans" => s.orphans = v,
                "rejected leases" => s.rejected = v,
                "non unique addresses" => s.non_unique = v,
                _ => {}
            }
        }
    }
    p
}

/// Runs perfdhcp in the client namespace (bounded by `timeout` at 50 s and by `-p`).
pub fn perfdhcp(t: &Tools, topo: &Topo, args: &[&str]) -> Perf {
    let mut full: Vec<String> = topo.c.exec();
    full.extend([t.perfdhcp.as_str(), "-6", "-l", topo.c.name.as_str()].map(String::from));
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let r = run(&t.timeout, 50, &refs);
    let p = parse_perfdhcp(r.code, &r.out);
    assert!(
        p.stats.contains_key("SOLICIT-ADVERTISE"),
        "perfdhcp printed no statistics (exit {:?}); {full:?}:\n{}",
        r.code,
        p.summary
    );
    p
}

/// Exchanges each perfdhcp run starts (`-n`), each from a distinct client.
pub const PERF_CLIENTS: u64 = 300;
/// Exchanges perfdhcp may start beyond `-n`: it sends every exchange its rate has made due at
/// once and checks `-n` only between such batches, so a run that lags near its end (a busy
/// box) starts one or two more (seen: 302 of 300). `-R` leaves room for them, so they come
/// from clients of their own; with `-R` = `-n` they reused the first clients, whose second
/// lease perfdhcp then counted as handed out twice.
pub const PERF_OVERSHOOT_MAX: u64 = 16;

/// perfdhcp arguments for a bounded run of `PERF_CLIENTS` distinct clients at 100 exchanges/s.
/// `-d 3`: a reply later than 3 s counts as a drop; `-W 3000000`: after the last exchange is
/// started, wait 3 s for its replies (without it, perfdhcp stops at once and counts the last
/// exchange as dropped, which is perfdhcp's doing, not the server's). `-u`: count any address
/// or prefix handed to two clients. `-x l`: list the leases received.
pub fn perf_args(mode: &str, mac_base: &str) -> Vec<String> {
    let n = PERF_CLIENTS.to_string();
    let clients = (PERF_CLIENTS + PERF_OVERSHOOT_MAX).to_string();
    [
        "-e",
        mode,
        "-r",
        "100",
        "-R",
        &clients,
        "-n",
        &n,
        "-p",
        "20",
        "-d",
        "3",
        "-W",
        "3000000",
        "-u",
        "-x",
        "l",
        "-b",
        &format!("mac={mac_base}"),
    ]
    .map(String::from)
    .to_vec()
}

/// perfdhcp's view of a 4-way run: every Solicit answered, every Request answered, nothing
/// rejected or handed out twice, no stray replies. `rr_orphans` is the number of Replies
/// perfdhcp cannot match to a Request by design: it tries every Reply against the Requests
/// first, so each Reply to a Renew or Release also counts as a REQUEST-REPLY orphan.
pub fn check_four_way(ck: &mut Checks, run: &str, p: &Perf, rr_orphans: u64) {
    let sa = p.x("SOLICIT-ADVERTISE");
    let rr = p.x("REQUEST-REPLY");
    ck.eq(&format!("{run}: perfdhcp exit code"), p.code, Some(0));
    ck.check(
        (PERF_CLIENTS..=PERF_CLIENTS + PERF_OVERSHOOT_MAX).contains(&sa.sent),
        || {
            format!(
                "{run}: SOLICIT-ADVERTISE sent: {}, want {PERF_CLIENTS} (perfdhcp's -n) to {}",
                sa.sent,
                PERF_CLIENTS + PERF_OVERSHOOT_MAX
            )
        },
    );
    ck.eq(
        &format!("{run}: SOLICIT-ADVERTISE received (== sent)"),
        sa.received,
        sa.sent,
    );
    ck.eq(
        &format!("{run}: REQUEST-REPLY sent (== advertises received)"),
        rr.sent,
        sa.received,
    );
    ck.eq(
        &format!("{run}: REQUEST-REPLY received (== sent)"),
        rr.received,
        rr.sent,
    );
    for (name, x) in [("SOLICIT-ADVERTISE", sa), ("REQUEST-REPLY", rr)] {
        ck.eq(&format!("{run}: {name} drops"), x.drops, 0);
        ck.eq(&format!("{run}: {name} rejected leases"), x.rejected, 0);
        ck.eq(
            &format!("{run}: {name} non unique addresses"),
            x.non_unique,
            0,
        );
    }
    ck.check(sa.orphans == 0, || {
        format!(
            "{run}: SOLICIT-ADVERTISE orphans: {} (want 0): the client got Advertises that match no \
             Solicit it has outstanding, e.g. a second Advertise for the same Solicit",
            sa.orphans
        )
    });
    ck.check(rr.orphans == rr_orphans, || {
        format!(
            "{run}: REQUEST-REPLY orphans: {} (want {rr_orphans}): the client got Replies that match no \
             exchange, e.g. a second Reply for the same Request",
            rr.orphans
        )
    });
}

/// The leases of the REQUEST-REPLY list by client, checked for the lease type asked for.
pub fn granted_by_client(
    ck: &mut Checks,
    run: &str,
    p: &Perf,
    mode: &str,
) -> BTreeMap<String, PLease> {
    let list = p.leases("REQUEST-REPLY");
    let mut by: BTreeMap<String, PLease> = BTreeMap::new();
    for l in list {
        let want = match mode {
            "address-only" => l.addr.is_some() && l.prefix.is_none(),
            "prefix-only" => l.addr.is_none() && l.prefix.is_some(),
            _ => l.addr.is_some() && l.prefix.is_some(),
        };
        ck.check_in("lease does not match the -e lease type", want, || {
            format!("{run}: perfdhcp lease {l:?} does not match -e {mode}")
        });
        if let Some(prev) = by.insert(l.client.clone(), l.clone()) {
            ck.check_in(
                "client listed with two different leases",
                prev == *l,
                || format!("{run}: client {} got {prev:?} and {l:?}", l.client),
            );
        }
    }
    ck.eq(
        &format!("{run}: distinct clients with a lease (perfdhcp -x l, one per exchange)"),
        by.len() as u64,
        p.x("SOLICIT-ADVERTISE").sent,
    );
    by
}
