//! Tests of the lease table.

use super::*;
use crate::config;

fn alloc(text_pools: &str) -> Allocator {
    let t = format!(
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n{text_pools}\n"
    );
    let c = config::parse("t", &t).unwrap();
    Allocator::new(&c.subnets)
}

fn ia(duid: &[u8], iaid: u32) -> ClientIa<'_> {
    ClientIa {
        subnet: 0,
        kind: ResourceKind::Address,
        duid,
        iaid,
        reservation: None,
        relay: &[],
        bytes: None,
    }
}

/// A grant at `now` for `c` by the rules of a server without a partner (its writes dropped).
fn grant(a: &Allocator, now: u64, c: &ClientIa) -> Option<Granted> {
    a.acquire(
        now,
        c,
        &[],
        AcquireMode::Grant,
        &Rules::STANDALONE,
        &mut Vec::new(),
    )
}

#[test]
fn same_client_same_lease_and_no_duplicates_until_exhausted() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..256u32 {
        let d = i.to_be_bytes();
        let g = a
            .acquire(
                10,
                &ia(&d, 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert!(seen.insert(g.addr), "{} handed out twice", g.addr);
        let again = a
            .acquire(
                11,
                &ia(&d, 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        assert_eq!(again.addr, g.addr);
    }
    assert_eq!(
        a.acquire(
            12,
            &ia(b"late", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        ),
        None
    );
    assert_eq!(w.len(), 512);
    assert_eq!(a.usage()[0].2.active, 256);
}

#[test]
fn hint_is_honoured_when_free_and_not_when_taken() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    let h: Ipv6Addr = "2001:db8::1a0".parse().unwrap();
    let g = a
        .acquire(
            1,
            &ia(b"a", 1),
            &[h],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(g.addr, h);
    let g2 = a
        .acquire(
            1,
            &ia(b"b", 1),
            &[h],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_ne!(g2.addr, h);
    // Outside the pool: ignored.
    let g3 = a
        .acquire(
            1,
            &ia(b"c", 1),
            &["2001:db8::5".parse().unwrap()],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_ne!(g3.addr, "2001:db8::5".parse::<Ipv6Addr>().unwrap());
}

#[test]
fn expiry_frees_and_the_old_client_gets_it_back() {
    let a = alloc(
        "pools=[{range=\"2001:db8::100-2001:db8::101\"}]\nlease={preferred_lifetime_secs=50, valid_lifetime_secs=100}",
    );
    let mut w = Vec::new();
    let g1 = a
        .acquire(
            0,
            &ia(b"a", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    let g2 = a
        .acquire(
            0,
            &ia(b"b", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(
        a.acquire(
            0,
            &ia(b"c", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        ),
        None
    );
    w.clear();
    assert_eq!(a.reclaim(99, &mut w), 0);
    assert_eq!(a.reclaim(100, &mut w), 2);
    assert!(w.iter().all(|l| l.state == LeaseState::Expired));
    // a comes back first and gets its own address, not the oldest free one.
    assert_eq!(
        a.acquire(
            200,
            &ia(b"a", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        )
        .unwrap()
        .addr,
        g1.addr
    );
    // c takes the remaining one (b's), since nothing else is free.
    assert_eq!(
        a.acquire(
            200,
            &ia(b"c", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        )
        .unwrap()
        .addr,
        g2.addr
    );
    // b's stale index entry must not give it c's lease.
    assert_eq!(
        a.acquire(
            200,
            &ia(b"b", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        ),
        None
    );
}

#[test]
fn offers_are_memory_only_and_lapse() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::100\"}]");
    let mut w = Vec::new();
    let g = a
        .acquire(
            0,
            &ia(b"a", 1),
            &[],
            AcquireMode::Offer { hold_secs: 5 },
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert!(w.is_empty());
    assert_eq!(
        a.acquire(
            1,
            &ia(b"b", 1),
            &[],
            AcquireMode::Offer { hold_secs: 5 },
            &Rules::STANDALONE,
            &mut w
        ),
        None
    );
    assert_eq!(a.reclaim(5, &mut w), 1);
    assert!(w.is_empty(), "a lapsed offer is not stored");
    assert_eq!(
        a.acquire(
            6,
            &ia(b"b", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w
        )
        .unwrap()
        .addr,
        g.addr
    );
}

/// Offers are queued in the order made, not indexed: one that became a binding, or was made
/// again with a later end, leaves an entry the reclaimer skips; the offer that is still held
/// lapses at its own end, and the queue is empty once every offer made has been looked at.
#[test]
fn stale_offer_entries_are_skipped_and_the_live_offer_lapses() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::101\"}]");
    let mut w = Vec::new();
    let take = |a: &Allocator, now, duid: &[u8], mode, w: &mut Vec<Lease>| {
        a.acquire(now, &ia(duid, 1), &[], mode, &Rules::STANDALONE, w)
    };
    let hold = AcquireMode::Offer { hold_secs: 5 };
    let offer = |a: &Allocator, now, duid: &[u8], w: &mut Vec<Lease>| take(a, now, duid, hold, w);
    let first = offer(&a, 0, b"a", &mut w).unwrap();
    // Made again: held until 7 now, not 5.
    assert_eq!(offer(&a, 2, b"a", &mut w).unwrap().addr, first.addr);
    let other = offer(&a, 3, b"b", &mut w).unwrap();
    let bound = take(&a, 4, b"b", AcquireMode::Grant, &mut w).unwrap();
    assert_eq!(bound.addr, other.addr);
    assert!(w.iter().all(|l| l.state == LeaseState::Active));
    w.clear();
    // At 5 the first offer's old end and at 8 the bound one's offer end: both stale.
    assert_eq!(a.reclaim(5, &mut w), 0);
    assert_eq!(offer(&a, 6, b"c", &mut w), None, "a's offer is still held");
    assert_eq!(a.reclaim(7, &mut w), 1, "a's offer lapses at its own end");
    assert_eq!(a.reclaim(8, &mut w), 0, "b's binding stays");
    assert!(
        w.is_empty(),
        "nothing stored: an offer lapsed, a binding stayed"
    );
    assert_eq!(offer(&a, 9, b"c", &mut w).unwrap().addr, first.addr);
    assert_eq!(a.reclaim(20, &mut w), 1, "c's offer lapses");
    for sp in a.subnets[0].pools[0].subpools.iter() {
        assert!(lock(sp).offers.is_empty());
    }
}

#[test]
fn release_decline_and_extend() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    let g = a
        .acquire(
            0,
            &ia(b"a", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert!(
        !a.end(1, &ia(b"b", 1), g.addr, None, &mut w),
        "not b's to release"
    );
    assert_eq!(
        a.extend(
            1,
            &ia(b"b", 1),
            g.addr,
            128,
            true,
            &Rules::STANDALONE,
            &mut w
        ),
        Extended::NotOwned
    );
    assert!(matches!(
        a.extend(
            1,
            &ia(b"a", 1),
            g.addr,
            128,
            false,
            &Rules::STANDALONE,
            &mut w
        ),
        Extended::Extended(_)
    ));
    assert_eq!(
        a.extend(
            1,
            &ia(b"a", 1),
            "2001:db9::1".parse().unwrap(),
            128,
            true,
            &Rules::STANDALONE,
            &mut w
        ),
        Extended::NotInPool
    );
    assert!(a.end(2, &ia(b"a", 1), g.addr, Some(30), &mut w));
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().state,
        LeaseState::Declined
    );
    assert_eq!(
        a.extend(
            3,
            &ia(b"a", 1),
            g.addr,
            128,
            true,
            &Rules::STANDALONE,
            &mut w
        ),
        Extended::NotOwned
    );
    // The declined address is not handed out again while held.
    let g2 = a
        .acquire(
            3,
            &ia(b"a", 1),
            &[g.addr],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_ne!(g2.addr, g.addr);
    assert!(a.end(4, &ia(b"a", 1), g2.addr, None, &mut w));
    // Renewing a free address not held by anyone recreates the binding (server lost it).
    assert!(matches!(
        a.extend(
            5,
            &ia(b"z", 9),
            "2001:db8::1f0".parse().unwrap(),
            128,
            true,
            &Rules::STANDALONE,
            &mut w
        ),
        Extended::Extended(_)
    ));
}

#[test]
fn prefix_pool_of_millions_allocates_without_scanning() {
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npd_pools=[{prefix=\"2001:db8:8000::/33\", delegated_len=56}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::new(&c.subnets);
    assert_eq!(a.subpool_ranges(0, 0).len(), 64);
    let mut w = Vec::new();
    let c1 = ClientIa {
        subnet: 0,
        kind: ResourceKind::Prefix,
        duid: b"x",
        iaid: 1,
        reservation: None,
        relay: &[],
        bytes: None,
    };
    let g = a
        .acquire(0, &c1, &[], AcquireMode::Grant, &Rules::STANDALONE, &mut w)
        .unwrap();
    assert_eq!(g.prefix_len, 56);
    let p = &c.subnets[0].pools[0];
    let idx = p.index_of(g.addr).unwrap();
    let home = spread(client_key(1, ResourceKind::Prefix, b"x", 1)) % 64;
    assert_eq!(
        idx / (p.count / 64),
        home as u128,
        "allocated in the client's home sub-pool"
    );
}

/// A message's IA_NA and IA_PD keep one copy of its DUID and relay data between them, and the
/// grant that follows an offer keeps the offer's; without the message's bytes each record makes
/// its own.
#[test]
fn one_message_s_leases_share_its_duid_and_relay_data() {
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{range=\"2001:db8::100-2001:db8::1ff\"}]\npd_pools=[{prefix=\"2001:db8:8000::/48\", delegated_len=56}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::new(&c.subnets);
    let (duid, relay) = (b"client-duid".as_slice(), b"relay data".as_slice());
    let client = |kind, bytes| ClientIa {
        subnet: 0,
        kind,
        duid,
        iaid: 7,
        reservation: None,
        relay,
        bytes,
    };
    let same = |x: &crate::lease::SharedBytes, y: &crate::lease::SharedBytes| {
        assert_eq!(**x, **y);
        x.as_ptr() == y.as_ptr()
    };
    let mut w = Vec::new();
    let offer = AcquireMode::Offer { hold_secs: 60 };
    let solicit = MessageBytes::default();
    let mut offered = Vec::new();
    for kind in [ResourceKind::Address, ResourceKind::Prefix] {
        let g = a
            .acquire(
                10,
                &client(kind, Some(&solicit)),
                &[],
                offer,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        offered.push(a.lookup(kind, g.addr).unwrap());
    }
    assert!(same(&offered[0].duid, &offered[1].duid));
    assert!(same(&offered[0].relay, &offered[1].relay));
    let request = MessageBytes::default();
    for (kind, o) in [ResourceKind::Address, ResourceKind::Prefix]
        .into_iter()
        .zip(&offered)
    {
        let c = client(kind, Some(&request));
        let g = a
            .acquire(11, &c, &[], AcquireMode::Grant, &Rules::STANDALONE, &mut w)
            .unwrap();
        let l = a.lookup(kind, g.addr).unwrap();
        assert_eq!(l.state, LeaseState::Active);
        assert!(same(&l.duid, &o.duid), "the grant keeps the offer's bytes");
        assert!(same(&l.relay, &o.relay));
    }
    let (x, y) = (b"another".as_slice(), b"one".as_slice());
    let mut own = Vec::new();
    for (kind, d) in [(ResourceKind::Address, x), (ResourceKind::Address, y)] {
        let c = ClientIa {
            duid: d,
            bytes: None,
            ..client(kind, None)
        };
        let g = a
            .acquire(12, &c, &[], offer, &Rules::STANDALONE, &mut w)
            .unwrap();
        own.push(a.lookup(kind, g.addr).unwrap());
    }
    assert!(
        !same(&own[0].relay, &own[1].relay),
        "no message bytes: a copy each"
    );
}

#[test]
fn sequential_duids_spread_over_subpools() {
    // perfdhcp-style DUIDs that differ only in their last bytes.
    let mut used = std::collections::HashSet::new();
    for i in 0..1000u32 {
        let mut d = vec![0, 1, 0, 1, 0x32, 0x99, 0xd9, 0x01, 0, 0x0c, 1, 2];
        d.extend_from_slice(&(i as u16).to_be_bytes());
        used.insert(spread(client_key(1, ResourceKind::Address, &d, 1)) % 64);
    }
    assert!(used.len() >= 60, "only {} of 64 sub-pools used", used.len());
}

/// A client whose placement hash is the same as another's (anyone can craft one: the hash is
/// fixed) shares its home sub-pool and nothing else: each keeps its lease through the other's
/// requests, also after a restart (the index is rebuilt) and a reload (shared). With the index
/// keyed on the placement hash, the second client's Request moved the first off its entry, and
/// the first got a new address at its next Renew.
#[test]
fn clients_with_colliding_placement_hashes_keep_their_own_leases() {
    fn colliding(_: u32, _: ResourceKind, _: &[u8], _: u32) -> u128 {
        42
    }
    let pools = "pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]";
    let a = alloc(pools).with_placement_key(colliding);
    let (victim, crafted) = (ia(b"victim", 1), ia(b"crafted", 7));
    let mut w = Vec::new();
    let v = grant(&a, 10, &victim).unwrap();
    for now in 11..14 {
        let c = grant(&a, now, &crafted).unwrap();
        assert_ne!(c.addr, v.addr);
        assert_eq!(
            grant(&a, now, &victim).unwrap().addr,
            v.addr,
            "victim moved at {now}"
        );
        assert_eq!(a.current(&crafted).unwrap().addr, c.addr);
    }
    a.acquire(
        14,
        &victim,
        &[],
        AcquireMode::Grant,
        &Rules::STANDALONE,
        &mut w,
    )
    .unwrap();
    a.acquire(
        14,
        &crafted,
        &[],
        AcquireMode::Grant,
        &Rules::STANDALONE,
        &mut w,
    )
    .unwrap();
    let b = alloc(pools).with_placement_key(colliding);
    for l in w {
        b.restore(l).unwrap();
    }
    b.finish_restore();
    assert_eq!(
        grant(&b, 15, &crafted).unwrap().addr,
        a.current(&crafted).unwrap().addr
    );
    assert_eq!(
        grant(&b, 15, &victim).unwrap().addr,
        v.addr,
        "victim moved after a restart"
    );
    let (r, _) = b
        .reconfigured(&config::parse("t", &format!(
            "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n{pools}\n"
        ))
        .unwrap()
        .subnets)
        .unwrap();
    assert_eq!(
        r.current(&victim).unwrap().addr,
        v.addr,
        "victim lost after a reload"
    );
}

#[test]
fn restore_rebuilds_cursor_index_and_free_list() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    for i in 0..10u32 {
        a.acquire(
            0,
            &ia(&i.to_be_bytes(), 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    }
    let g0 = a.current(&ia(&0u32.to_be_bytes(), 1)).unwrap();
    a.end(1, &ia(&0u32.to_be_bytes(), 1), g0.addr, None, &mut w);
    let b = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut last = std::collections::HashMap::new();
    for l in w.drain(..) {
        last.insert(l.key(), l);
    }
    for l in last.into_values() {
        b.restore(l).unwrap();
    }
    b.finish_restore();
    for i in 1..10u32 {
        let d = i.to_be_bytes();
        assert_eq!(b.current(&ia(&d, 1)), a.current(&ia(&d, 1)));
    }
    // New clients never get an active restored lease.
    let mut held: std::collections::HashSet<_> = (1..10u32)
        .map(|i| a.current(&ia(&i.to_be_bytes(), 1)).unwrap().addr)
        .collect();
    for i in 100..1000u32 {
        match b.acquire(
            2,
            &ia(&i.to_be_bytes(), 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        ) {
            Some(g) => assert!(held.insert(g.addr), "{} given twice after restore", g.addr),
            None => break,
        }
    }
    assert_eq!(held.len(), 256);
}

fn rules(own: usize, partner_from: Option<u64>, mclt: Option<u64>) -> Rules {
    let mut owned = [false, false];
    owned[own] = true;
    Rules {
        owned,
        partner_from,
        mclt_secs: mclt,
        partner_bit: mclt.map(|_| 1 - own),
    }
}

#[test]
fn independent_allocation_splits_addresses_by_bit_127() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    let primary = rules(PRIMARY_BIT, None, None);
    let secondary = rules(1 - PRIMARY_BIT, None, None);
    for i in 0..128u32 {
        let g = a
            .acquire(
                0,
                &ia(&i.to_be_bytes(), 1),
                &[],
                AcquireMode::Grant,
                &primary,
                &mut w,
            )
            .unwrap();
        assert_eq!(u128::from(g.addr) & 1, 1, "primary handed out {}", g.addr);
    }
    assert_eq!(
        a.acquire(
            0,
            &ia(b"p-late", 1),
            &[],
            AcquireMode::Grant,
            &primary,
            &mut w
        ),
        None,
        "primary's half is used up"
    );
    // A hint in the primary's half is not honoured for the secondary.
    let g = a
        .acquire(
            0,
            &ia(b"s", 1),
            &["2001:db8::101".parse().unwrap()],
            AcquireMode::Grant,
            &secondary,
            &mut w,
        )
        .unwrap();
    assert_eq!(u128::from(g.addr) & 1, 0);
}

#[test]
fn partner_half_opens_only_at_its_time_for_prefixes_never_for_addresses() {
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::100-2001:db8::103\"}]\n\
             pd_pools=[{prefix=\"2001:db8:8000::/54\", delegated_len=56}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::new(&c.subnets);
    let mut w = Vec::new();
    let r = rules(PRIMARY_BIT, Some(1000), None);
    let pd = |d: &'static [u8]| ClientIa {
        subnet: 0,
        kind: ResourceKind::Prefix,
        duid: d,
        iaid: 1,
        reservation: None,
        relay: &[],
        bytes: None,
    };
    // Prefixes: our half (2 of 4) first, then nothing until the partner's half opens.
    let p1 = a
        .acquire(10, &pd(b"p1"), &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    let p2 = a
        .acquire(10, &pd(b"p2"), &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    let own =
        |g: &Granted| c.subnets[0].pools[1].index_of(g.addr).unwrap() & 1 == PRIMARY_BIT as u128;
    assert!(own(&p1) && own(&p2));
    assert_eq!(
        a.acquire(999, &pd(b"p3"), &[], AcquireMode::Grant, &r, &mut w),
        None
    );
    let p3 = a
        .acquire(1000, &pd(b"p3"), &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert!(!own(&p3), "partner's prefixes after PARTNER-DOWN + MCLT");
    // Addresses: never the partner's half for a new client (RFC 8156 SHOULD NOT).
    for i in 0..2u32 {
        let g = a
            .acquire(
                10,
                &ia(&i.to_be_bytes(), 1),
                &[],
                AcquireMode::Grant,
                &r,
                &mut w,
            )
            .unwrap();
        assert_eq!(u128::from(g.addr) & 1, 1);
    }
    assert_eq!(
        a.acquire(5000, &ia(b"x", 1), &[], AcquireMode::Grant, &r, &mut w),
        None
    );
    assert_eq!(
        a.acquire(
            5000,
            &ia(b"x", 1),
            &["2001:db8::102".parse().unwrap()],
            AcquireMode::Grant,
            &r,
            &mut w
        ),
        None,
        "not through a hint either"
    );
    // Creating a binding on the partner's half through Renew follows the rules too.
    let strict = rules(PRIMARY_BIT, None, None);
    assert_eq!(
        a.extend(
            5,
            &ia(b"y", 1),
            "2001:db8::102".parse().unwrap(),
            128,
            true,
            &strict,
            &mut w
        ),
        Extended::NotOwned
    );
}

#[test]
fn mclt_caps_lifetimes_until_the_partner_acknowledges() {
    // valid 7200 by default; MCLT 600.
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    let r = rules(PRIMARY_BIT, None, Some(600));
    let c = ia(b"m", 1);
    let g = a
        .acquire(1000, &c, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(g.valid_secs, 600, "nothing acknowledged: at most MCLT");
    assert!(g.preferred_secs <= g.valid_secs);
    let lease = w.last().unwrap().clone();
    assert_eq!(lease.expires_at, 1600);
    // The partner acknowledges a partner lifetime of 1000 + 600 + 7200.
    let acked = a.record_ack(&lease, 8800).unwrap();
    assert_eq!(acked.partner_ack_until, 8800);
    assert!(
        a.record_ack(&lease, 100).is_none(),
        "an older acknowledgement changes nothing"
    );
    let g2 = a
        .acquire(1300, &c, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(
        g2.valid_secs, 7200,
        "acknowledged: full lifetime fits under ack + MCLT"
    );
    // Without failover (standalone) no cap at all.
    let g3 = a
        .acquire(
            1300,
            &ia(b"n", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(g3.valid_secs, 7200);
}

/// `l` from the partner at `now`, taken as the secondary with nothing of ours in flight and the
/// default skew.
fn from_partner(a: &Allocator, l: &Lease, now: u64) -> Result<Lease, Option<Lease>> {
    a.apply_partner_update(l, true, false, now, SKEW_EQUAL_SECS)
}

/// A small pool with one lease granted at time 100 to client `ours`, IAID 1.
fn one_grant() -> (Allocator, Lease) {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut w = Vec::new();
    a.acquire(
        100,
        &ia(b"ours", 1),
        &[],
        AcquireMode::Grant,
        &Rules::STANDALONE,
        &mut w,
    )
    .unwrap();
    let l = w.last().unwrap().clone();
    (a, l)
}

/// One stored record of a client: (offset from `::100`, state, cltt, expires_at).
type Record = (u16, LeaseState, u64, u64);

/// Restores, in address order as the store reads them, records of one client `c` (IAID 1)
/// at `::100` + each offset with the given state, cltt and expiry, and returns what the
/// client is granted at time 150.
fn restored_client_gets(records: &[Record]) -> Ipv6Addr {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| r.0);
    for (off, state, cltt, expires_at) in sorted {
        let addr = Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)) + off as u128,
        );
        a.restore(Lease::stored_for_test(
            ResourceKind::Address,
            addr,
            128,
            state,
            b"c",
            cltt,
            expires_at,
        ))
        .unwrap();
    }
    a.finish_restore();
    grant(&a, 150, &ia(b"c", 1)).unwrap().addr
}

#[test]
fn after_a_restart_a_client_with_several_records_gets_the_one_it_uses() {
    use LeaseState::*;
    // (the client's records, the offset it gets)
    let cases: &[(&[Record], u16)] = &[
        // Active at ::101; an older expired record at ::180 read after it.
        (&[(1, Active, 100, 300), (0x80, Expired, 10, 60)], 1),
        // Active at ::181; a declined record at ::102 read before it, and one read after it.
        (
            &[
                (2, Declined, 120, 400),
                (0x81, Active, 100, 300),
                (0xf0, Declined, 130, 400),
            ],
            0x81,
        ),
        // Two free records: the later one (released at 90, not expired at 60).
        (&[(3, Released, 90, 90), (0x83, Expired, 10, 60)], 3),
        // Two bindings (the one it was moved off runs out): the later transaction.
        (&[(4, Active, 110, 300), (0x84, Active, 100, 290)], 4),
    ];
    for (records, off) in cases {
        assert_eq!(
            restored_client_gets(records),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100 + off),
            "{records:?}"
        );
    }
}

#[test]
fn a_partner_s_update_of_an_older_record_leaves_the_client_on_its_binding() {
    let (a, g) = one_grant();
    // The partner speaks of another, older record of the same client: it expired there.
    let mut old = g.clone();
    old.addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x1f0);
    old.state = LeaseState::Expired;
    old.cltt = 20;
    old.expires_at = 80;
    from_partner(&a, &old, 120).unwrap();
    assert_eq!(a.current(&ia(b"ours", 1)).unwrap().addr, g.addr);
    let again = grant(&a, 130, &ia(b"ours", 1)).unwrap();
    assert_eq!(again.addr, g.addr, "moved off the binding it uses");
    // A later binding of the same client from the partner is where the index goes.
    let mut newer = g.clone();
    newer.addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x1f2);
    newer.cltt = 140;
    newer.expires_at = 400;
    from_partner(&a, &newer, 140).unwrap();
    assert_eq!(a.current(&ia(b"ours", 1)).unwrap().addr, newer.addr);
}

/// [`one_grant`], declined by its client at 120 and held for `hold_secs`; and the partner's
/// copy of the grant, ended as `state` at `cltt`.
fn declined_and_the_partner_s_end(
    hold_secs: u32,
    state: LeaseState,
    cltt: u64,
) -> (Allocator, Lease, Lease) {
    let (a, g) = one_grant();
    assert!(a.end(
        120,
        &ia(b"ours", 1),
        g.addr,
        Some(hold_secs),
        &mut Vec::new()
    ));
    let mut theirs = g.clone();
    theirs.state = state;
    theirs.cltt = cltt;
    theirs.expires_at = cltt;
    (a, g, theirs)
}

#[test]
fn a_stale_free_update_does_not_undo_a_later_decline_while_it_is_held() {
    // The client declines at 120 (held for 600 s); the partner's word that the same client
    // released it at 110 arrives afterwards.
    let (a, g, mut released) = declined_and_the_partner_s_end(600, LeaseState::Released, 110);
    let sent_back = from_partner(&a, &released, 121)
        .expect_err("a stale release is refused")
        .expect("our record goes back");
    assert_eq!(sent_back.state, LeaseState::Declined);
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().state,
        LeaseState::Declined
    );
    // Nobody gets the declined address while it is held.
    for i in 0..255u32 {
        if let Some(x) = grant(&a, 130, &ia(&i.to_be_bytes(), 7)) {
            assert_ne!(x.addr, g.addr, "client {i} was given the declined address");
        }
    }
    // Within the skew of the decline the two cannot be ordered: the hold stays.
    released.cltt = 120 + SKEW_EQUAL_SECS;
    assert!(from_partner(&a, &released, 131).is_err());
    // A release clearly after the decline (the partner gave it out since) is taken.
    released.cltt = 121 + SKEW_EQUAL_SECS;
    released.expires_at = released.cltt;
    let taken = from_partner(&a, &released, 140).unwrap();
    assert_eq!(taken.state, LeaseState::Released);
}

/// The partner's acknowledgement of our decline (its hold sent as the partner lifetime) is
/// recorded, so the decline counts as known to the partner and a restart does not send it
/// again; an acknowledgement of another hold is not.
#[test]
fn a_decline_the_partner_acknowledged_is_known_to_it() {
    use crate::failover::node::acknowledged;
    let (a, g) = one_grant();
    let mut w = Vec::new();
    assert!(a.end(120, &ia(b"ours", 1), g.addr, Some(600), &mut w));
    let declined = w.last().unwrap().clone();
    assert_eq!(declined.state, LeaseState::Declined);
    assert!(
        !acknowledged(&declined, 7200),
        "not before the partner says so"
    );
    // An acknowledgement of a hold that is not ours (an older one) is not taken.
    let mut other = declined.clone();
    other.expires_at = 650;
    assert!(a.record_ack(&other, 650).is_none());
    let acked = a.record_ack(&declined, 720).expect("recorded");
    assert_eq!(acked.partner_ack_until, 720);
    assert!(acknowledged(&acked, 7200));
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr)
            .unwrap()
            .partner_ack_until,
        720
    );
    assert!(a.record_ack(&declined, 720).is_none(), "once");
    // When the hold ends the record expires PENDING-FREE: the acknowledgement was of the
    // decline, not of the end.
    a.reclaim(721, &mut Vec::new());
    let ended = a.lookup(ResourceKind::Address, g.addr).unwrap();
    assert_eq!(
        (ended.state, ended.partner_ack_until),
        (LeaseState::Expired, 0)
    );
    assert!(!acknowledged(&ended, 7200));
}

/// Declined here at 120 (held until 720); the partner resends another client's binding made
/// before the decline and long over (a restart's resend of what it never heard acknowledged).
/// The claim is taken, but the address stays held until our hold ends; what is stored is not
/// the partner's version (a restart sends it back).
#[test]
fn another_client_s_stale_claim_over_a_decline_keeps_the_hold() {
    let (a, g, mut theirs) = declined_and_the_partner_s_end(600, LeaseState::Active, 100);
    theirs.duid = b"theirs".to_vec().into();
    assert_eq!(theirs.expires_at, 100, "over before the decline");
    let taken = from_partner(&a, &theirs, 121).expect("another client's claim is taken");
    assert_eq!(taken.state, LeaseState::Active);
    assert_eq!(&taken.duid[..], b"theirs");
    assert_eq!(taken.expires_at, 720, "held as long as the decline was");
    assert!(!taken.is_partner_version(), "not as sent");
    // Past the claim's own end, within the hold: not freed, not handed out.
    a.reclaim(130, &mut Vec::new());
    let held = a.lookup(ResourceKind::Address, g.addr).unwrap();
    assert!(!held.state.is_free(), "freed within the hold: {held:?}");
    for i in 0..255u32 {
        if let Some(x) = grant(&a, 130, &ia(&i.to_be_bytes(), 7)) {
            assert_ne!(x.addr, g.addr, "client {i} was given the declined address");
        }
    }
    // Once the hold is over it runs out as any binding does.
    a.reclaim(721, &mut Vec::new());
    assert!(
        a.lookup(ResourceKind::Address, g.addr)
            .unwrap()
            .state
            .is_free()
    );
}

#[test]
fn once_the_decline_hold_is_over_an_older_free_update_is_taken() {
    let (a, _, expired) = declined_and_the_partner_s_end(60, LeaseState::Expired, 100);
    // Not yet reclaimed here, but the hold ended at 180 (and the skew after it).
    assert!(from_partner(&a, &expired, 180).is_err());
    let taken = from_partner(&a, &expired, 181 + SKEW_EQUAL_SECS).unwrap();
    assert_eq!(taken.state, LeaseState::Expired);
}

#[test]
fn a_decline_at_the_partner_holds_here_and_is_not_undone_by_older_news() {
    // Ours active since 100 (until 7300); the client declines it at the partner at 102.
    let (a, g) = one_grant();
    let mut declined = g.clone();
    declined.state = LeaseState::Declined;
    declined.cltt = 102;
    declined.expires_at = 160;
    let taken = from_partner(&a, &declined, 103)
        .expect("the client's decline is taken, not sent back as a stale release");
    assert_eq!(taken.state, LeaseState::Declined);
    assert_eq!(
        taken.expires_at, g.expires_at,
        "held as long as our binding was"
    );
    assert!(grant(&a, 104, &ia(b"other", 1)).is_some_and(|x| x.addr != g.addr));
    // The same decline again (resent after a reconnect) does not cut the hold short.
    let ours = from_partner(&a, &declined, 110)
        .expect_err("the shorter hold is refused")
        .unwrap();
    assert_eq!(ours.expires_at, g.expires_at);
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().expires_at,
        g.expires_at
    );
    // A decline clearly before our last transaction with the client is stale.
    let (b, g) = one_grant();
    declined.cltt = 100 - SKEW_EQUAL_SECS - 1;
    assert!(from_partner(&b, &declined, 103).is_err());
    assert_eq!(
        b.lookup(ResourceKind::Address, g.addr).unwrap().state,
        LeaseState::Active
    );
    // Declined here at 120 (held until 180): the partner's older active binding of the
    // client is refused,
    let (c, g, mut active) = declined_and_the_partner_s_end(60, LeaseState::Active, 100);
    active.expires_at = 300;
    assert!(from_partner(&c, &active, 121).is_err());
    // so is a renewal there that crossed the decline (within the skew), and the hold here
    // and in what goes back now covers that binding;
    active.cltt = 120 + SKEW_EQUAL_SECS;
    let ours = from_partner(&c, &active, 122)
        .expect_err("the decline stands")
        .unwrap();
    assert_eq!((ours.state, ours.expires_at), (LeaseState::Declined, 300));
    assert_eq!(
        c.lookup(ResourceKind::Address, g.addr).unwrap().expires_at,
        300
    );
    // a binding clearly after the decline is taken (the client got it again since).
    active.cltt = 121 + SKEW_EQUAL_SECS;
    active.expires_at = 400;
    assert_eq!(
        from_partner(&c, &active, 130).unwrap().state,
        LeaseState::Active
    );
    // and the partner's end of the same hold (expired at 180, its clock ahead) is taken.
    let (d, _, mut expired) = declined_and_the_partner_s_end(60, LeaseState::Expired, 120);
    expired.expires_at = 180;
    let taken = from_partner(&d, &expired, 178).unwrap();
    assert_eq!(taken.state, LeaseState::Expired);
}

#[test]
fn same_client_release_is_taken_only_when_clearly_after_our_last_transaction() {
    // Seed 7017165: within the skew the two servers' times cannot be ordered, and a release
    // taken over a grant made a second later elsewhere handed the prefix to another client.
    // Doubt keeps the lease held (until it expires).
    let (a, active) = one_grant();
    let mut released = active.clone();
    released.state = LeaseState::Released;
    for (cltt, why) in [
        (active.cltt - 1, "older than our last transaction"),
        (active.cltt + 1, "1 s after it: within the skew"),
        (active.cltt + SKEW_EQUAL_SECS, "at the edge of the skew"),
    ] {
        released.cltt = cltt;
        assert!(
            from_partner(&a, &released, 101).is_err(),
            "a release {why} is refused"
        );
    }
    released.cltt = active.cltt + SKEW_EQUAL_SECS + 1;
    let taken = from_partner(&a, &released, 110).unwrap();
    assert_eq!(taken.state, LeaseState::Released, "clearly later: taken");
}

#[test]
fn the_skew_the_relationship_allows_is_the_skew_within_which_times_are_equal() {
    // Found by the simulator's wide-skew mode (seed 338, failover.skew_max_secs = 57): the
    // link accepted a partner 49 s off, but the merge still counted only 5 s as equal. A
    // release made 5 s before a re-grant elsewhere, stamped by the faster clock, looked
    // 44 s later; it was taken, and the re-granted address went to another client.
    let (a, active) = one_grant();
    let mut released = active.clone();
    released.state = LeaseState::Released;
    released.cltt = active.cltt + 44;
    assert!(
        a.apply_partner_update(&released, true, false, 150, 57)
            .is_err(),
        "within a 57 s skew the release cannot be ordered after our grant: refused"
    );
    assert_eq!(
        from_partner(&a, &released, 150).unwrap().state,
        LeaseState::Released,
        "with the default skew it is clearly later: taken"
    );
}

#[test]
fn a_stale_active_update_for_a_client_that_released_is_refused() {
    let (a, old_active) = one_grant();
    let mut released = old_active.clone();
    released.state = LeaseState::Released;
    released.cltt = old_active.cltt + 50;
    from_partner(&a, &released, 160).unwrap();
    assert!(
        from_partner(&a, &old_active, 161).is_err(),
        "the client released it after that grant: the active update is stale"
    );
    let mut other = old_active.clone();
    other.duid = b"theirs".to_vec().into();
    assert!(
        from_partner(&a, &other, 161).is_ok(),
        "another client's claim is taken: refusing it could hand the address out twice"
    );
}

#[test]
fn partner_updates_are_taken_unless_we_saw_another_client_later() {
    let (a, g) = one_grant();
    let mut w = Vec::new();
    let mut theirs = g.clone();
    theirs.duid = b"theirs".to_vec().into();
    theirs.cltt = 50;
    assert!(
        a.apply_partner_update(&theirs, false, false, 100, SKEW_EQUAL_SECS)
            .is_err(),
        "our client is newer: refused"
    );
    theirs.cltt = 200;
    let taken = a
        .apply_partner_update(&theirs, false, false, 100, SKEW_EQUAL_SECS)
        .unwrap();
    assert_eq!(&*taken.duid, b"theirs");
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().duid,
        taken.duid
    );
    // The partner's client now owns it here too: our old client does not get it back.
    let again = a
        .acquire(
            300,
            &ia(b"ours", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_ne!(again.addr, g.addr);
    // A resource the partner used is no longer handed out as never-used.
    let mut fresh = taken.clone();
    fresh.addr = "2001:db8::1fe".parse().unwrap();
    fresh.duid = b"z".to_vec().into();
    a.apply_partner_update(&fresh, false, false, 100, SKEW_EQUAL_SECS)
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..300u32 {
        if let Some(g) = a.acquire(
            400,
            &ia(&i.to_be_bytes(), 9),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        ) {
            assert_ne!(g.addr, fresh.addr);
            assert!(seen.insert(g.addr));
        }
    }
}

/// The production assertions bite: a sub-pool whose expiry index lost an active lease's entry
/// stops at the next change of that lease, naming what is wrong, rather than going on with a
/// lease the reclaimer would never see.
#[test]
#[should_panic(expected = "expiry index lost")]
fn a_broken_expiry_index_is_caught_where_it_breaks() {
    let (a, l) = one_grant();
    let pool = &a.subnets[0].pools[0];
    let index = pool.cfg.index_of(l.addr).unwrap();
    lock(pool.subpool_of(index)).expiry.clear();
    let mut w = Vec::new();
    a.end(200, &ia(b"ours", 1), l.addr, None, &mut w);
}

/// A 4-address pool (2001:db8::10-13) where ::12 is reserved for DUID `r1` and ::13 for the
/// line with Interface-ID `eth0`.
fn reserved_setup() -> (config::Config, Allocator) {
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::10-2001:db8::13\"}]\n\
             reservations=[{duid=\"72:31:72\",addresses=[\"2001:db8::12\"]},\
             {interface_id=\"text:eth0\",addresses=[\"2001:db8::13\"]}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::new(&c.subnets);
    (c, a)
}

fn with_res<'a>(c: &'a config::Config, duid: &'a [u8], id: u32) -> ClientIa<'a> {
    ClientIa {
        reservation: Some((
            c.subnets[0].reservations.get(id).key.stable_id(),
            c.subnets[0].reservations.get(id),
        )),
        ..ia(duid, 1)
    }
}

#[test]
fn reserved_resources_go_only_to_their_client() {
    let (c, a) = reserved_setup();
    let mut w = Vec::new();
    let r = Rules::STANDALONE;
    let got: Vec<Ipv6Addr> = (0..4u8)
        .filter_map(|i| a.acquire(0, &ia(&[9, 9, i], 1), &[], AcquireMode::Grant, &r, &mut w))
        .map(|g| g.addr)
        .collect();
    assert_eq!(
        got,
        vec![
            "2001:db8::10".parse::<Ipv6Addr>().unwrap(),
            "2001:db8::11".parse().unwrap()
        ],
        "only the two unreserved addresses go to dynamic clients"
    );
    // Not by hint, nor by Renew of a free reserved address, either.
    let other = ia(b"zz", 1);
    let hint = ["2001:db8::12".parse().unwrap()];
    assert!(
        a.acquire(0, &other, &hint, AcquireMode::Grant, &r, &mut w)
            .is_none()
    );
    assert_eq!(
        a.extend(0, &other, hint[0], 128, true, &r, &mut w),
        Extended::NotOwned
    );
    // Its client gets it, however full the pool.
    let mine = with_res(&c, b"r1r", 0);
    let g = a
        .acquire(0, &mine, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(g.addr, hint[0]);
    assert_eq!(
        a.lookup(ResourceKind::Address, hint[0]).unwrap().duid[..],
        b"r1r"[..]
    );
    let e = a.extend(10, &mine, hint[0], 128, true, &r, &mut w);
    assert!(matches!(e, Extended::Extended(_)));
}

#[test]
fn a_client_moves_to_its_reservation_and_gives_up_the_old_lease() {
    let (c, a) = reserved_setup();
    let mut w = Vec::new();
    let r = Rules::STANDALONE;
    // Before the reservation applies to it (say, a client known by its line): a dynamic lease.
    let g = a
        .acquire(0, &ia(b"cpe", 1), &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(g.addr, "2001:db8::10".parse::<Ipv6Addr>().unwrap());
    let on_line = with_res(&c, b"cpe", 1);
    // An offer shows the reservation but leaves the lease in use alone.
    let o = a
        .acquire(
            1,
            &on_line,
            &[],
            AcquireMode::Offer { hold_secs: 60 },
            &r,
            &mut w,
        )
        .unwrap();
    assert_eq!(o.addr, "2001:db8::13".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().state,
        LeaseState::Active
    );
    // The grant moves it: the reserved address is its, the old one is released.
    w.clear();
    let n = a
        .acquire(2, &on_line, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(n.addr, o.addr);
    assert_eq!(
        a.lookup(ResourceKind::Address, g.addr).unwrap().state,
        LeaseState::Released
    );
    assert_eq!(
        w.len(),
        2,
        "the new lease and the release are both stored: {w:?}"
    );
}

#[test]
fn a_new_device_on_a_reserved_line_takes_the_line_s_address_over() {
    let (c, a) = reserved_setup();
    let mut w = Vec::new();
    let r = Rules::STANDALONE;
    let line = "2001:db8::13".parse::<Ipv6Addr>().unwrap();
    let old = with_res(&c, b"old-cpe", 1);
    assert_eq!(
        a.acquire(0, &old, &[], AcquireMode::Grant, &r, &mut w)
            .unwrap()
            .addr,
        line
    );
    // A swapped CPE (new DUID, same line) gets the same address while the old lease runs.
    let new = with_res(&c, b"new-cpe", 1);
    assert_eq!(
        a.acquire(5, &new, &[], AcquireMode::Grant, &r, &mut w)
            .unwrap()
            .addr,
        line
    );
    assert_eq!(
        a.lookup(ResourceKind::Address, line).unwrap().duid[..],
        b"new-cpe"[..]
    );
    // The old device's Renew is told it lost it.
    assert_eq!(
        a.extend(6, &old, line, 128, true, &r, &mut w),
        Extended::NotOwned
    );
    // A DUID reservation is the DUID's: another holder keeps it until it ends.
    let by_duid = "2001:db8::12".parse::<Ipv6Addr>().unwrap();
    let squatter = ia(b"sq", 1);
    // (Reserved after the squatter got it: restore its lease as the store would.)
    a.restore(Lease::stored_for_test(
        ResourceKind::Address,
        by_duid,
        128,
        LeaseState::Active,
        b"sq",
        0,
        200,
    ))
    .unwrap();
    let owner = with_res(&c, b"r1r", 0);
    let g = a.acquire(10, &owner, &[], AcquireMode::Grant, &r, &mut w);
    assert_ne!(
        g.map(|g| g.addr),
        Some(by_duid),
        "not while {squatter:?} holds it"
    );
    // The holder's next Renew is told no, and its lease ends; then the owner gets it.
    assert_eq!(
        a.extend(11, &squatter, by_duid, 128, true, &r, &mut w),
        Extended::NotOwned
    );
    assert_eq!(
        a.lookup(ResourceKind::Address, by_duid).unwrap().state,
        LeaseState::Released
    );
    let owner2 = ClientIa { iaid: 2, ..owner };
    let g = a
        .acquire(12, &owner2, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(g.addr, by_duid);
}

#[test]
fn a_line_reservation_fills_a_client_s_ias_in_turn_and_a_mac_does_not_take_over() {
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::10-2001:db8::13\"}]\n\
             reservations=[{interface_id=\"text:eth0\",addresses=[\"2001:db8::12\",\"2001:db8::13\"]},\
             {hw_address=\"52:54:00:00:00:01\",addresses=[\"2001:db8::11\"]}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::new(&c.subnets);
    let mut w = Vec::new();
    let r = Rules::STANDALONE;
    // One client, two IA_NAs on the reserved line: one address each, not the same one twice.
    let ia1 = with_res(&c, b"cpe", 0);
    let ia2 = ClientIa { iaid: 2, ..ia1 };
    let g1 = a
        .acquire(0, &ia1, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    let g2 = a
        .acquire(0, &ia2, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_ne!(g1.addr, g2.addr);
    // Again, in the other order of asking: still stable.
    let again = |ia: &ClientIa, w: &mut Vec<Lease>| {
        a.acquire(1, ia, &[], AcquireMode::Grant, &r, w)
            .unwrap()
            .addr
    };
    assert_eq!(again(&ia2, &mut w), g2.addr);
    assert_eq!(again(&ia1, &mut w), g1.addr);
    // A MAC reservation (the client writes its DUID-LL itself) does not take a lease away.
    let mac_addr: Ipv6Addr = "2001:db8::11".parse().unwrap();
    let first = with_res(&c, b"dev-a", 1);
    assert_eq!(again(&first, &mut w), mac_addr);
    let second = with_res(&c, b"dev-b", 1);
    let g = a.acquire(3, &second, &[], AcquireMode::Grant, &r, &mut w);
    assert_ne!(g.map(|g| g.addr), Some(mac_addr));
    let holder = a.lookup(ResourceKind::Address, mac_addr).unwrap();
    assert_eq!(holder.duid[..], b"dev-a"[..]);
}

#[test]
fn partner_down_waits_for_the_partner_lifetime_it_acknowledged() {
    // Seeds 5220882 and 5555856: released here (unacknowledged: the partner was cut off),
    // but the partner had been told it could count on the binding until 500 and may have
    // renewed it up to MCLT past that. PARTNER-DOWN frees it only then.
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::10-2001:db8::11\"}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::with_failover(&c.subnets);
    let addr: Ipv6Addr = "2001:db8::10".parse().unwrap();
    a.restore(Lease {
        partner_lifetime_received: 500,
        ..Lease::stored_for_test(
            ResourceKind::Address,
            addr,
            128,
            LeaseState::Released,
            b"gone",
            300,
            300,
        )
    })
    .unwrap();
    a.finish_restore();
    // Released at 300: MCLT (say 100) after that is not enough.
    assert!(a.release_pending(450, 550).is_empty());
    assert_eq!(
        a.lookup(ResourceKind::Address, addr)
            .unwrap()
            .partner_ack_until,
        0
    );
    // The partner lifetime is on the partner's clock: the skew allowance on top.
    assert!(a.release_pending(500 + SKEW_EQUAL_SECS - 1, 600).is_empty());
    let freed = a.release_pending(500 + SKEW_EQUAL_SECS, 600);
    assert_eq!(freed.len(), 1);
    assert!(
        a.lookup(ResourceKind::Address, addr)
            .unwrap()
            .partner_ack_until
            > 0
    );
}

#[test]
fn under_failover_a_line_s_resource_comes_from_its_half_and_is_not_taken_over() {
    // reserved_setup: ::13 (odd: the primary's half) is reserved for the line `eth0`.
    let (c, a) = reserved_setup();
    let mut w = Vec::new();
    let line = "2001:db8::13".parse::<Ipv6Addr>().unwrap();
    let secondary = rules(1 - PRIMARY_BIT, None, Some(60)); // COMMUNICATIONS-INTERRUPTED
    let primary = rules(PRIMARY_BIT, None, Some(60));
    let cpe1 = with_res(&c, b"cpe-1", 1);
    let g = a.acquire(0, &cpe1, &[], AcquireMode::Grant, &secondary, &mut w);
    assert_ne!(g.map(|g| g.addr), Some(line), "not from the partner's half");
    let cpe1 = ClientIa { iaid: 2, ..cpe1 };
    let g = a
        .acquire(1, &cpe1, &[], AcquireMode::Grant, &primary, &mut w)
        .unwrap();
    assert_eq!(g.addr, line);
    // A second device on the line, while the partner might be renewing the first: no takeover.
    let cpe2 = with_res(&c, b"cpe-2", 1);
    let g = a.acquire(2, &cpe2, &[], AcquireMode::Grant, &primary, &mut w);
    assert_ne!(g.map(|g| g.addr), Some(line));
    // In PARTNER-DOWN (no cap: nobody else renews), the line's new device takes it over.
    let pd = rules(PRIMARY_BIT, Some(0), None);
    let g = a
        .acquire(3, &cpe2, &[], AcquireMode::Grant, &pd, &mut w)
        .unwrap();
    assert_eq!(g.addr, line);
}

#[test]
fn operator_add_takes_only_a_free_resource_and_a_client_without_one() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::1ff\"}]");
    let addr: Ipv6Addr = "2001:db8::105".parse().unwrap();
    let add = |duid: &[u8], iaid, at: Ipv6Addr| {
        a.operator_add(
            &Rules::STANDALONE,
            100,
            ResourceKind::Address,
            at,
            128,
            duid,
            iaid,
            50,
            100,
        )
    };
    let l = add(b"op", 1, addr).unwrap();
    assert_eq!(
        (l.state, l.expires_at, l.subnet_id),
        (LeaseState::Active, 200, 1)
    );
    assert_eq!(
        a.lookup(ResourceKind::Address, addr).unwrap().duid[..],
        *b"op"
    );
    // The client sees it as its lease.
    assert_eq!(a.current(&ia(b"op", 1)).unwrap().addr, addr);
    // Held: refused with the holder; the same IA cannot take a second one.
    let e = add(b"other", 1, addr).unwrap_err();
    assert!(matches!(e, OperatorRefusal::Held { iaid: 1, .. }), "{e}");
    let e = add(b"op", 1, "2001:db8::106".parse().unwrap()).unwrap_err();
    assert_eq!(e, OperatorRefusal::ClientHolds("2001:db8::105/128".into()));
    // Outside every pool, or the wrong length.
    assert!(matches!(
        add(b"x", 1, "2001:db8::5".parse().unwrap()),
        Err(OperatorRefusal::NotInPool(_))
    ));
    assert!(matches!(
        a.operator_add(
            &Rules::STANDALONE,
            100,
            ResourceKind::Address,
            addr,
            64,
            b"x",
            1,
            1,
            1
        ),
        Err(OperatorRefusal::NotInPool(_))
    ));
    // The allocator never hands it to anyone else.
    let mut w = Vec::new();
    for i in 0..255u32 {
        let d = i.to_be_bytes();
        let g = a.acquire(
            101,
            &ia(&d, 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        );
        assert_ne!(g.map(|g| g.addr), Some(addr));
    }
}

#[test]
fn operator_delete_ends_the_active_lease_and_frees_the_resource() {
    let a = alloc("pools=[{range=\"2001:db8::100-2001:db8::100\"}]");
    let addr: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let mut w = Vec::new();
    let g = a
        .acquire(
            10,
            &ia(b"c1", 7),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(g.addr, addr);
    let l = a
        .operator_delete(20, ResourceKind::Address, addr, 128)
        .unwrap();
    assert_eq!(
        (l.state, l.expires_at, &l.duid[..], l.iaid),
        (LeaseState::Released, 20, &b"c1"[..], 7)
    );
    assert!(
        l.seq > w.last().unwrap().seq,
        "the deletion supersedes the grant"
    );
    assert_eq!(
        a.operator_delete(21, ResourceKind::Address, addr, 128),
        Err(OperatorRefusal::NoLease("2001:db8::100/128".into()))
    );
    // The only address is free again for another client.
    let g = a
        .acquire(
            22,
            &ia(b"c2", 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(g.addr, addr);
}

#[test]
fn a_partner_half_binding_the_partner_never_heard_of_is_not_extended_when_its_half_is_closed() {
    // Seed 10837211: granted in PARTNER-DOWN from the partner's half, its commit failed (not
    // stored, not announced), and under COMMUNICATIONS-INTERRUPTED the client's retransmitted
    // Request found it in memory while the partner handed the prefix out from its own half.
    // Seed 155006978: such a binding was ended at once, the Reply telling its client was lost,
    // and the resource went to another client while the first still held it: it is now left
    // active until it runs out.
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::10-2001:db8::13\"}]\n";
    let c = config::parse("t", t).unwrap();
    let a = Allocator::with_failover(&c.subnets);
    // Addresses: bit 127 set belongs to the primary; we are the secondary (bit 0 ours).
    let theirs: Ipv6Addr = "2001:db8::11".parse().unwrap();
    let known: Ipv6Addr = "2001:db8::13".parse().unwrap();
    let lease = |addr, duid: &[u8], ack| Lease {
        partner_ack_until: ack,
        ..Lease::stored_for_test(
            ResourceKind::Address,
            addr,
            128,
            LeaseState::Active,
            duid,
            300,
            500,
        )
    };
    a.restore(lease(theirs, b"c1", 0)).unwrap();
    a.restore(lease(known, b"c2", 700)).unwrap();
    a.finish_restore();
    let ci = rules(1 - PRIMARY_BIT, None, Some(60));
    let mut w = Vec::new();
    let g = a
        .acquire(400, &ia(b"c1", 1), &[], AcquireMode::Grant, &ci, &mut w)
        .unwrap();
    assert_ne!(g.addr, theirs, "moved to a resource of our own half");
    let old = a.lookup(ResourceKind::Address, theirs).unwrap();
    assert_eq!(
        (old.state, old.expires_at, &old.duid[..]),
        (LeaseState::Active, 500, &b"c1"[..]),
        "held for the client until the lifetime it last heard"
    );
    assert!(
        w.iter().all(|l| l.addr != theirs),
        "nothing to store or send"
    );
    // A Renew of it is refused the same way (lifetime 0 for the client), and it stays held.
    a.restore(lease(theirs, b"c3", 0)).ok();
    assert!(matches!(
        a.extend(401, &ia(b"c3", 1), theirs, 128, true, &ci, &mut w),
        Extended::NotOwned
    ));
    assert_eq!(
        a.lookup(ResourceKind::Address, theirs).unwrap().state,
        LeaseState::Active
    );
    assert!(w.iter().all(|l| l.addr != theirs));
    // A binding the partner acknowledged is the client's whatever the half.
    let g = a
        .acquire(400, &ia(b"c2", 1), &[], AcquireMode::Grant, &ci, &mut w)
        .unwrap();
    assert_eq!(g.addr, known);
    // Our own half is never affected, even when both halves are closed (a secondary back in
    // NORMAL, a store refusing new leases): bindings made there while apart stay renewable.
    let ours: Ipv6Addr = "2001:db8::12".parse().unwrap();
    a.restore(lease(ours, b"c4", 0)).unwrap();
    let mut closed = ci;
    closed.owned = [false, false];
    let g = a
        .acquire(400, &ia(b"c4", 1), &[], AcquireMode::Grant, &closed, &mut w)
        .unwrap();
    assert_eq!(g.addr, ours);
    assert!(matches!(
        a.extend(401, &ia(b"c4", 1), ours, 128, false, &closed, &mut w),
        Extended::Extended(_)
    ));
}

#[test]
fn a_refused_partner_part_prefix_stays_its_client_s_until_it_runs_out() {
    // Seed 155006978: a prefix delegated in PARTNER-DOWN from the partner's part, never
    // acknowledged; its client's Renew under RESOLUTION-INTERRUPTED is refused and the Reply
    // lost; the partner acknowledges what it was sent and a new share makes the prefix ours.
    // No other client may have it while its client can still use it.
    // 16 prefixes, one per sub-pool; share 4 gives the secondary (our partner) indices 0..4.
    let (c, a, id) = failover_pd("2001:db8:8000::/52");
    a.set_pd_share(id, 4);
    let pool = &c.subnets[0].pools[0];
    let x = pool.resource(0);
    let d1 = [1u8, 0, 0, 0, 0, 0, 1];
    a.restore(Lease::stored_for_test(
        ResourceKind::Prefix,
        x,
        56,
        LeaseState::Active,
        &d1,
        300,
        500,
    ))
    .unwrap();
    a.finish_restore();
    let resolution_interrupted = Rules {
        owned: [false, false],
        partner_from: None,
        mclt_secs: Some(60),
        partner_bit: Some(1 - PRIMARY_BIT),
    };
    let mut w = Vec::new();
    assert!(matches!(
        a.extend(
            400,
            &pd_ia(&d1),
            x,
            56,
            false,
            &resolution_interrupted,
            &mut w
        ),
        Extended::NotOwned
    ));
    let l = a.lookup(ResourceKind::Prefix, x).unwrap();
    a.record_ack(&l, 401);
    a.set_pd_share(id, 0);
    let normal = rules(PRIMARY_BIT, None, Some(60));
    let mut others = Vec::new();
    for i in 0..16u32 {
        let mut d = vec![2u8, 0, 0];
        d.extend_from_slice(&i.to_be_bytes());
        if let Some(g) = a.acquire(402, &pd_ia(&d), &[x], AcquireMode::Grant, &normal, &mut w) {
            others.push(g.addr);
        }
    }
    assert_eq!(others.len(), 15, "every other prefix went out");
    assert!(
        !others.contains(&x),
        "the refused prefix went to another client"
    );
    assert_eq!(
        a.lookup(ResourceKind::Prefix, x).unwrap().expires_at,
        500,
        "held until the lifetime its client last heard"
    );
    // Its own client renews it now that the partner knows of it.
    assert!(matches!(
        a.extend(403, &pd_ia(&d1), x, 56, false, &normal, &mut w),
        Extended::Extended(_)
    ));
}

#[test]
fn records_of_ended_leases_are_forgotten_after_the_retention_and_the_resource_comes_back() {
    let a = alloc(
        "pools=[{range=\"2001:db8::100-2001:db8::101\"}]\nlease={preferred_lifetime_secs=50, valid_lifetime_secs=100}",
    );
    let mut w = Vec::new();
    let grant = |a: &Allocator, now, who: &[u8], w: &mut Vec<Lease>| {
        a.acquire(
            now,
            &ia(who, 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            w,
        )
    };
    let g1 = grant(&a, 0, b"a", &mut w).unwrap();
    let g2 = grant(&a, 0, b"b", &mut w).unwrap();
    assert!(
        a.end(10, &ia(b"a", 1), g1.addr, None, &mut w),
        "a releases at 10"
    );
    assert_eq!(a.reclaim(100, &mut w), 1, "b's lease expires at 100");
    let mut gone = Vec::new();
    assert_eq!(
        a.forget_ended(1000, 0, &mut gone),
        0,
        "0 keeps every record"
    );
    assert_eq!(
        a.forget_ended(1009, 1000, &mut gone),
        0,
        "a's ended 999 s ago"
    );
    assert_eq!(a.forget_ended(1010, 1000, &mut gone), 1);
    assert_eq!(gone[0].addr, g1.addr);
    assert!(
        a.lookup(ResourceKind::Address, g1.addr).is_none(),
        "a's record is gone"
    );
    assert!(
        a.lookup(ResourceKind::Address, g2.addr).is_some(),
        "b's is kept until its own time"
    );
    assert_eq!(a.forget_ended(1100, 1000, &mut gone), 1);
    assert!(a.lookup(ResourceKind::Address, g2.addr).is_none());
    assert_eq!(a.forget_ended(5000, 1000, &mut gone), 0, "each record once");
    // Both addresses are usable again, by anyone: forgotten resources come back through the
    // free list the cursor has passed. a no longer gets its old address by preference (its
    // index entry went with the record), but it gets one.
    let c = grant(&a, 2000, b"c", &mut w).unwrap();
    let d = grant(&a, 2000, b"d", &mut w).unwrap();
    let mut got = [c.addr, d.addr];
    got.sort();
    let mut had = [g1.addr, g2.addr];
    had.sort();
    assert_eq!(got, had, "both forgotten addresses are handed out again");
    assert_eq!(
        grant(&a, 2000, b"a", &mut w),
        None,
        "and the pool is full again"
    );
}

#[test]
fn under_failover_a_record_is_forgotten_only_once_the_partner_acknowledged_its_end() {
    let c = config::parse(
        "t",
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{range=\"2001:db8::100-2001:db8::1ff\"}]\n",
    )
    .unwrap();
    let a = Allocator::with_failover(&c.subnets);
    let mut w = Vec::new();
    let r = rules(PRIMARY_BIT, None, None);
    let g = a
        .acquire(0, &ia(b"p", 1), &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    w.clear();
    assert!(a.end(10, &ia(b"p", 1), g.addr, None, &mut w));
    let released = w.last().unwrap().clone();
    let mut gone = Vec::new();
    assert_eq!(
        a.forget_ended(100_000, 60, &mut gone),
        0,
        "PENDING-FREE: the partner has not acknowledged the release"
    );
    assert!(a.lookup(ResourceKind::Address, g.addr).is_some());
    a.record_ack(&released, 10).unwrap();
    assert_eq!(
        a.forget_ended(100_000, 60, &mut gone),
        1,
        "looked at again, and forgotten"
    );
    assert!(a.lookup(ResourceKind::Address, g.addr).is_none());
}

#[test]
fn under_failover_operator_add_keeps_to_its_share_and_the_mclt() {
    let c = config::parse(
        "t",
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{range=\"2001:db8::100-2001:db8::1ff\"}]\n",
    )
    .unwrap();
    let a = Allocator::with_failover(&c.subnets);
    let r = rules(PRIMARY_BIT, None, Some(600));
    let add = |at: &str, duid: &[u8]| {
        a.operator_add(
            &r,
            100,
            ResourceKind::Address,
            at.parse().unwrap(),
            128,
            duid,
            1,
            3600,
            7200,
        )
    };
    // Bit 127 set: the primary's share. The lifetime is capped at MCLT: nothing of it is
    // acknowledged yet.
    let l = add("2001:db8::105", b"p").unwrap();
    assert_eq!(
        (l.valid_secs, l.preferred_secs, l.expires_at),
        (600, 600, 700)
    );
    // Bit 127 clear: the secondary's, refused.
    assert_eq!(
        add("2001:db8::106", b"q").unwrap_err(),
        OperatorRefusal::PartnersShare("2001:db8::106/128".into())
    );
    // Released and not yet acknowledged by the partner (PENDING-FREE): held.
    let mut w = Vec::new();
    assert!(a.end(150, &ia(b"p", 1), l.addr, None, &mut w));
    assert!(matches!(
        add("2001:db8::105", b"s"),
        Err(OperatorRefusal::Held { .. })
    ));
}

/// A failover table over a two-address pool, both halves ours (the rules say which we may use).
fn failover_pair_of_addresses() -> Allocator {
    let c = config::parse(
        "t",
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{range=\"2001:db8::100-2001:db8::101\"}]\n",
    )
    .unwrap();
    Allocator::with_failover(&c.subnets)
}

#[test]
fn under_failover_a_lapsed_offer_is_as_reusable_as_the_resource_was() {
    let a = failover_pair_of_addresses();
    let both = Rules {
        owned: [true, true],
        ..rules(PRIMARY_BIT, None, Some(600))
    };
    let mut w = Vec::new();
    let offer = |a: &Allocator, now, who: &[u8], w: &mut Vec<Lease>| {
        a.acquire(
            now,
            &ia(who, 1),
            &[],
            AcquireMode::Offer { hold_secs: 60 },
            &both,
            w,
        )
    };
    // Two never-used addresses offered to two clients that never ask again.
    offer(&a, 0, b"x", &mut w).unwrap();
    offer(&a, 0, b"y", &mut w).unwrap();
    assert!(w.is_empty(), "offers are never stored");
    assert_eq!(a.reclaim(60, &mut w), 2);
    assert!(w.is_empty(), "nor are their ends");
    // The partner never heard of them: nothing to wait for. (Before, each lapsed offer became
    // PENDING-FREE, waiting for an acknowledgement that never comes, until a restart.)
    for who in [&b"p"[..], b"q"] {
        assert!(
            a.acquire(61, &ia(who, 1), &[], AcquireMode::Grant, &both, &mut w)
                .is_some(),
            "a lapsed offer's address is free again"
        );
    }
    // But an offer made on a release the partner has not acknowledged lapses back into
    // PENDING-FREE: only the same client may have it until the partner answers.
    let g = w.iter().find(|l| &*l.duid == b"p").unwrap().clone();
    w.clear();
    assert!(a.end(100, &ia(b"p", 1), g.addr, None, &mut w));
    offer(&a, 101, b"p", &mut w).unwrap();
    assert_eq!(a.reclaim(161, &mut w), 1);
    assert!(
        a.acquire(162, &ia(b"r", 1), &[], AcquireMode::Grant, &both, &mut w)
            .is_none(),
        "still waiting for the partner's acknowledgement of p's release"
    );
}

#[test]
fn a_restart_does_not_lose_resources_that_were_never_stored() {
    // A client took a resource far into the pool by hint, and offers that lapsed were never
    // stored: after a restart the walk over never-used resources must still reach every
    // resource below the restored ones (it used to jump past the highest one restored).
    let a = alloc("pools=[{range=\"2001:db8::1000-2001:db8::13ff\"}]");
    let mut w = Vec::new();
    let h: Ipv6Addr = "2001:db8::100e".parse().unwrap();
    a.acquire(
        1,
        &ia(b"hinted", 1),
        &[h],
        AcquireMode::Grant,
        &Rules::STANDALONE,
        &mut w,
    )
    .unwrap();
    let b = alloc("pools=[{range=\"2001:db8::1000-2001:db8::13ff\"}]");
    for l in w.drain(..) {
        b.restore(l).unwrap();
    }
    b.finish_restore();
    let mut n = 1u32;
    while b
        .acquire(
            2,
            &ia(&n.to_be_bytes(), 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .is_some()
    {
        n += 1;
    }
    assert_eq!(
        n, 1024,
        "every resource of the pool is handed out after a restart"
    );
}

fn failover_pd(prefix: &str) -> (config::Config, Allocator, PdPoolId) {
    let t = format!(
        "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
         pd_pools=[{{prefix=\"{prefix}\", delegated_len=56}}]\n"
    );
    let c = config::parse("t", &t).unwrap();
    let a = Allocator::with_failover(&c.subnets);
    let id = a.pd_pools()[0];
    (c, a, id)
}

fn pd_ia(duid: &[u8]) -> ClientIa<'_> {
    ClientIa {
        subnet: 0,
        kind: ResourceKind::Prefix,
        duid,
        iaid: 1,
        reservation: None,
        relay: &[],
        bytes: None,
    }
}

/// Takes up to `max` prefixes under `r` (fewer if none is left); returns their indices.
fn fill_pd(c: &config::Config, a: &Allocator, r: &Rules, tag: u8, max: usize) -> Vec<u128> {
    let mut got = Vec::new();
    let mut w = Vec::new();
    for i in 0..max as u32 {
        let mut d = vec![tag, 0, 0];
        d.extend_from_slice(&i.to_be_bytes());
        match a.acquire(10, &pd_ia(&d), &[], AcquireMode::Grant, r, &mut w) {
            Some(g) => got.push(c.subnets[0].pools[0].index_of(g.addr).unwrap()),
            None => break,
        }
    }
    got
}

#[test]
fn a_share_spreads_over_sub_pools_growing_each_part_with_it() {
    let sizes = [4u128, 4, 4, 2, 0];
    let mut last = vec![0u128; sizes.len()];
    for share in 0..=16u128 {
        let k = subpool_shares(&sizes, share);
        assert_eq!(
            k.iter().sum::<u128>(),
            share.min(14),
            "share {share}: {k:?}"
        );
        for j in 0..sizes.len() {
            assert!(
                k[j] <= sizes[j] && k[j] >= last[j],
                "share {share}: {k:?} after {last:?}"
            );
        }
        last = k;
    }
    assert_eq!(subpool_shares(&sizes, 5), vec![2, 1, 1, 1, 0]);
    assert_eq!(subpool_shares(&sizes, 9), vec![3, 2, 2, 2, 0]);
}

#[test]
fn a_prefix_share_gives_each_partner_its_part_and_moves_never_overlap() {
    // 256 prefixes in 64 sub-pools of 4.
    let (c, a, id) = failover_pd("2001:db8:8000::/48");
    assert_eq!(a.pd_pools(), vec![id]);
    assert_eq!(a.pd_share(id), None, "not split until told");
    assert!(a.set_pd_share(id, 8));
    assert_eq!(a.pd_share(id), Some(8));
    let bal = a.pd_balance(id).unwrap();
    assert_eq!((bal.free_total(), bal.backup_free(8)), (256, 8));
    assert_eq!(
        (bal.share_for(8), bal.share_for(0), bal.share_max()),
        (8, 0, 256)
    );
    let primary = rules(PRIMARY_BIT, None, None);
    let secondary = rules(1 - PRIMARY_BIT, None, None);
    // Each side takes only its part.
    let s1 = fill_pd(&c, &a, &secondary, 1, 1000);
    assert_eq!(s1.len(), 8);
    let p1 = fill_pd(&c, &a, &primary, 2, 100);
    assert_eq!(p1.len(), 100);
    // The primary gives (share 40): the secondary gets exactly the free ones of its new
    // part, and the primary no longer takes any of them.
    a.set_pd_share(id, 40);
    let bal = a.pd_balance(id).unwrap();
    assert_eq!(bal.free_total(), 256 - 108);
    let given = bal.backup_free(40);
    assert!(given >= 20, "{given}");
    let s2 = fill_pd(&c, &a, &secondary, 3, 1000);
    assert_eq!(s2.len() as u128, given);
    // Then it takes back all but 3: it fills everything else, the secondary nothing more.
    a.set_pd_share(id, 3);
    let p2 = fill_pd(&c, &a, &primary, 5, 1000);
    assert_eq!(fill_pd(&c, &a, &secondary, 6, 1000).len(), 0);
    let mut all: Vec<u128> = [s1, p1, s2, p2].concat();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a prefix was handed out twice");
    assert_eq!(n, 256, "every prefix was handed out");
    assert_eq!(a.pd_balance(id).unwrap().free_total(), 0);
}

#[test]
fn a_prefix_freed_in_one_part_moves_to_its_new_owner_s_free_list() {
    // 16 prefixes, one per sub-pool.
    let (c, a, id) = failover_pd("2001:db8:8000::/52");
    a.set_pd_share(id, 4);
    let secondary = rules(1 - PRIMARY_BIT, None, None);
    let primary = rules(PRIMARY_BIT, None, None);
    let s = fill_pd(&c, &a, &secondary, 1, 100);
    assert_eq!(s.len(), 4);
    // The secondary's clients release (acknowledged by the partner: reusable).
    let mut w = Vec::new();
    for i in 0..4u32 {
        let mut d = vec![1, 0, 0];
        d.extend_from_slice(&i.to_be_bytes());
        let g = a.current(&pd_ia(&d)).unwrap();
        a.end(20, &pd_ia(&d), g.addr, None, &mut w);
        let l = a.lookup(ResourceKind::Prefix, g.addr).unwrap();
        a.record_ack(&l, 20);
    }
    // The primary takes the whole pool back: its clients get all 16, the freed ones too.
    a.set_pd_share(id, 0);
    let p = fill_pd(&c, &a, &primary, 2, 100);
    assert_eq!(p.len(), 16, "{p:?}");
    assert!(s.iter().all(|i| p.contains(i)));
}

#[test]
fn only_prefixes_the_partner_knows_to_be_free_change_hands() {
    // 16 prefixes, one per sub-pool: share n gives the secondary sub-pools 0..n (levels fill
    // sub-pools in order), so moving the share from a to b hands over indices a..b.
    let (c, a, id) = failover_pd("2001:db8:8000::/52");
    a.set_pd_share(id, 4);
    let primary = rules(PRIMARY_BIT, None, None);
    // The primary grants one prefix (index g, in its part). Its BNDUPD has not been
    // acknowledged, so a give may not reach it.
    let g = fill_pd(&c, &a, &primary, 1, 1)[0];
    assert!(g >= 4);
    assert_eq!(
        a.pd_movable_share(id, 4, 16),
        g,
        "stops just before index {g}"
    );
    // Acknowledged by the partner, it is still in use: it does not move either.
    let l = a
        .lookup(ResourceKind::Prefix, c.subnets[0].pools[0].resource(g))
        .unwrap();
    a.record_ack(&l, l.expires_at + 10_000);
    assert_eq!(a.pd_movable_share(id, 4, 16), g);
    // Released, not yet acknowledged (PENDING-FREE): still not.
    let mut w = Vec::new();
    let d = [1u8, 0, 0, 0, 0, 0, 0];
    a.end(20, &pd_ia(&d), l.addr, None, &mut w);
    assert_eq!(a.pd_movable_share(id, 4, 16), g);
    // Acknowledged free: it moves, and so does everything after it.
    let freed = a.lookup(ResourceKind::Prefix, l.addr).unwrap();
    a.record_ack(&freed, 21);
    assert_eq!(a.pd_movable_share(id, 4, 16), 16);
    // Taking back stops the same way, at a prefix the secondary's side holds.
    let secondary = rules(1 - PRIMARY_BIT, None, None);
    a.set_pd_share(id, 16);
    let s = fill_pd(&c, &a, &secondary, 2, 1)[0];
    assert_eq!(
        a.pd_movable_share(id, 16, 0),
        s + 1,
        "stops just above index {s}"
    );
}

/// Review of 2dbf046: crossing updates of one binding through two relays must leave the same
/// relay data on both partners: the later transaction's, ties by the bytes; an update with
/// none (a partner of an older version) keeps ours.
#[test]
fn partners_agree_on_the_relay_data_of_crossing_updates() {
    let (a, granted) = one_grant();
    let (b, _) = one_grant();
    let with = |cltt: u64, relay: &[u8]| Lease {
        cltt,
        expires_at: cltt + 7200,
        relay: relay.into(),
        ..granted.clone()
    };
    let stored = |x: &Allocator| x.lookup(granted.kind, granted.addr).unwrap().relay;
    // A renewed through R1 at 200, B through R2 at 201; each receives the other's update.
    a.apply_partner_update(&with(200, b"r1"), false, false, 200, SKEW_EQUAL_SECS)
        .unwrap();
    b.apply_partner_update(&with(201, b"r2"), false, false, 201, SKEW_EQUAL_SECS)
        .unwrap();
    a.apply_partner_update(&with(201, b"r2"), false, false, 201, SKEW_EQUAL_SECS)
        .unwrap();
    b.apply_partner_update(&with(200, b"r1"), false, false, 201, SKEW_EQUAL_SECS)
        .unwrap();
    assert_eq!((&*stored(&a), &*stored(&b)), (&b"r2"[..], &b"r2"[..]));
    // The same second through two relays: both keep the same one.
    a.apply_partner_update(&with(300, b"ra"), false, false, 300, SKEW_EQUAL_SECS)
        .unwrap();
    b.apply_partner_update(&with(300, b"rb"), false, false, 300, SKEW_EQUAL_SECS)
        .unwrap();
    a.apply_partner_update(&with(300, b"rb"), false, false, 300, SKEW_EQUAL_SECS)
        .unwrap();
    b.apply_partner_update(&with(300, b"ra"), false, false, 300, SKEW_EQUAL_SECS)
        .unwrap();
    assert_eq!(stored(&a), stored(&b));
    // An update without relay data keeps what we have.
    a.apply_partner_update(&with(400, b""), false, false, 400, SKEW_EQUAL_SECS)
        .unwrap();
    assert_eq!(&*stored(&a), &b"rb"[..]);
}

#[test]
fn a_reloaded_table_shares_the_old_pools_and_adds_new_ones() {
    let conf = |pools: &str, more: &str| {
        config::parse(
            "t",
            &format!(
                "[server]\nlisten=[\"[::1]:5547\"]\n{more}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{pools}]\n"
            ),
        )
        .unwrap()
    };
    let small = "{range=\"2001:db8::100-2001:db8::101\"}";
    let old_cfg = conf(small, "");
    let old = Allocator::new(&old_cfg.subnets);
    let mut w = Vec::new();
    let grant = |a: &Allocator, d: &[u8], w: &mut Vec<Lease>| {
        a.acquire(
            10,
            &ia(d, 1),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            w,
        )
        .map(|g| g.addr)
    };
    let first = grant(&old, b"c1", &mut w).unwrap();
    // A pool added after the existing one, a subnet added before it.
    let new_cfg = conf(
        &format!("{small}, {{range=\"2001:db8::200-2001:db8::2ff\"}}"),
        "[[subnet]]\nid=2\nprefix=\"2001:db8:2::/64\"\npools=[{range=\"2001:db8:2::100-2001:db8:2::1ff\"}]\n",
    );
    // A lease kept on disk for the added pool while it was not configured.
    let kept = Lease {
        kind: ResourceKind::Address,
        addr: "2001:db8::200".parse().unwrap(),
        prefix_len: 128,
        subnet_id: 1,
        state: LeaseState::Active,
        duid: b"kept".to_vec().into(),
        iaid: 1,
        preferred_secs: 100,
        valid_secs: 200,
        cltt: 5,
        expires_at: 1_000,
        seq: 99,
        partner_ack_until: 0,
        partner_lifetime_received: 0,
        relay: Default::default(),
        partner_seq: 0,
    };
    assert!(old.restore(kept.clone()).is_err(), "no pool for it yet");
    let (new, added) = old.reconfigured(&new_cfg.subnets).unwrap();
    assert_eq!(
        added,
        vec![(0, 0), (1, 1)],
        "subnet 2's pool, subnet 1's second"
    );
    assert!(new.restore_added(&added, kept.clone()));
    assert!(
        !new.restore_added(
            &added,
            Lease {
                addr: first,
                ..kept.clone()
            }
        ),
        "not an added pool"
    );
    new.finish_restore_added(&added);
    // Subnet 1 is index 1 now; the two tables see the same leases.
    fn in_new(d: &[u8]) -> ClientIa<'_> {
        ClientIa {
            subnet: 1,
            ..ia(d, 1)
        }
    }
    let again = new
        .acquire(
            11,
            &in_new(b"c1"),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap();
    assert_eq!(
        again.addr, first,
        "the client keeps its lease across the reload"
    );
    // The old pool's last address goes to a client through the old table, then the old pool
    // is full in both and the new table uses the added pool (never the kept lease).
    let second = grant(&old, b"c2", &mut w).unwrap();
    assert_eq!(grant(&old, b"c3", &mut w), None);
    let third = new
        .acquire(
            11,
            &in_new(b"c3"),
            &[],
            AcquireMode::Grant,
            &Rules::STANDALONE,
            &mut w,
        )
        .unwrap()
        .addr;
    assert_ne!(third, second);
    assert_ne!(third, kept.addr);
    assert!(third >= "2001:db8::200".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        new.lookup(ResourceKind::Address, kept.addr).unwrap().duid,
        kept.duid
    );
    // Removing or changing an existing pool, or adding one before it, is refused.
    for bad in [
        conf("{range=\"2001:db8::100-2001:db8::102\"}", ""),
        conf(
            &format!("{{range=\"2001:db8::200-2001:db8::2ff\"}}, {small}"),
            "",
        ),
    ] {
        assert!(new.reconfigured(&bad.subnets).is_err());
    }
    assert!(
        new.reconfigured(&old_cfg.subnets).is_err(),
        "subnet 2 removed"
    );
}

/// Two tables at once after a reload that added a pool (`Allocator::reconfigured`).
mod reloaded_tables {
    use super::*;

    fn conf(pools: &str) -> crate::config::Config {
        config::parse(
            "t",
            &format!(
                "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{pools}]\n"
            ),
        )
        .unwrap()
    }
    const ONE: &str = "{range=\"2001:db8::100-2001:db8::100\"}";
    const TWO: &str =
        "{range=\"2001:db8::100-2001:db8::100\"}, {range=\"2001:db8::200-2001:db8::2ff\"}";

    /// A client granted in the added pool through the new table, then seen by a worker still on
    /// the old one (the index they share points past the old table's pools): no panic, no
    /// second resource; the new table still has the client where it was.
    #[test]
    fn the_old_table_leaves_a_client_of_an_added_pool_alone() {
        let old = Allocator::new(&conf(ONE).subnets);
        let mut w = Vec::new();
        let grant = |a: &Allocator, d: &[u8], w: &mut Vec<Lease>| {
            a.acquire(1, &ia(d, 1), &[], AcquireMode::Grant, &Rules::STANDALONE, w)
        };
        grant(&old, b"a", &mut w).unwrap();
        let (new, _) = old.reconfigured(&conf(TWO).subnets).unwrap();
        let x = grant(&new, b"x", &mut w).unwrap().addr;
        assert!(x >= "2001:db8::200".parse::<Ipv6Addr>().unwrap());
        assert_eq!(grant(&old, b"x", &mut w), None);
        assert_eq!(old.current(&ia(b"x", 1)), None);
        assert_eq!(new.current(&ia(b"x", 1)).map(|g| g.addr), Some(x));
        assert!(
            old.operator_add(
                &Rules::STANDALONE,
                2,
                ResourceKind::Address,
                "2001:db8::100".parse().unwrap(),
                128,
                b"x",
                1,
                10,
                20
            )
            .is_err()
        );
    }

    /// Two records the store kept for the re-added pool, of a client the table in force has
    /// not seen: read back in address order, the client's binding, not the older record read
    /// first, is where the index points (as after a restart).
    #[test]
    fn of_a_client_s_records_read_back_for_an_added_pool_the_binding_wins() {
        let old = Allocator::new(&conf(ONE).subnets);
        let record = |addr: &str, state, cltt, expires_at| {
            Lease::stored_for_test(
                ResourceKind::Address,
                addr.parse().unwrap(),
                128,
                state,
                b"b",
                cltt,
                expires_at,
            )
        };
        let (new, added) = old.reconfigured(&conf(TWO).subnets).unwrap();
        let expired = record("2001:db8::205", LeaseState::Expired, 0, 50);
        let binding = record("2001:db8::206", LeaseState::Active, 2, 100);
        assert!(new.restore_added(&added, expired));
        assert!(new.restore_added(&added, binding.clone()));
        new.finish_restore_added(&added);
        assert_eq!(new.current(&ia(b"b", 1)).unwrap().addr, binding.addr);
        let again = grant(&new, 5, &ia(b"b", 1)).unwrap();
        assert_eq!(again.addr, binding.addr, "moved off the binding it uses");
    }

    /// A record the store kept for the re-added pool, of a client that holds another lease
    /// now: read back, it stays held, but the client keeps its current lease.
    #[test]
    fn a_record_read_back_for_an_added_pool_does_not_move_its_client() {
        let old = Allocator::new(&conf(ONE).subnets);
        let mut w = Vec::new();
        let live = old
            .acquire(
                1,
                &ia(b"a", 1),
                &[],
                AcquireMode::Grant,
                &Rules::STANDALONE,
                &mut w,
            )
            .unwrap();
        let stale = Lease {
            kind: ResourceKind::Address,
            addr: "2001:db8::205".parse().unwrap(),
            prefix_len: 128,
            subnet_id: 1,
            state: LeaseState::Active,
            duid: b"a".to_vec().into(),
            iaid: 1,
            preferred_secs: 1,
            valid_secs: 100,
            cltt: 0,
            expires_at: 100,
            seq: 1,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        };
        let (new, added) = old.reconfigured(&conf(TWO).subnets).unwrap();
        assert!(new.restore_added(&added, stale.clone()));
        new.finish_restore_added(&added);
        for a in [&old, &new] {
            let again = a
                .acquire(
                    5,
                    &ia(b"a", 1),
                    &[],
                    AcquireMode::Grant,
                    &Rules::STANDALONE,
                    &mut w,
                )
                .unwrap();
            assert_eq!(again.addr, live.addr, "the client stays on its lease");
        }
        assert_eq!(
            new.lookup(ResourceKind::Address, stale.addr)
                .map(|l| l.state),
            Some(LeaseState::Active),
            "the record read back is held until it ends, not handed out"
        );
    }
}

#[test]
fn reservations_set_by_a_reload_bind_at_once_and_free_what_they_drop() {
    let (c, a) = reserved_setup();
    let mut w = Vec::new();
    let r = Rules::STANDALONE;
    let hint = |addr: &str| [addr.parse::<Ipv6Addr>().unwrap()];
    // The reload moves ::12 from DUID r1 to DUID r2 and drops the Interface-ID one (::13).
    let t = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\n\
             pools=[{range=\"2001:db8::10-2001:db8::13\"}]\n\
             reservations=[{duid=\"72:32:72\",addresses=[\"2001:db8::12\"]}]\n";
    let c2 = config::parse("t", t).unwrap();
    a.set_reservations(&c2.subnets);
    // r1's reservation is gone from the table: under the old configuration (a worker still on
    // it) its id matches nothing, so ::12 is someone else's now.
    let old_r1 = with_res(&c, b"r1r", 0);
    let got = a
        .acquire(
            0,
            &old_r1,
            &hint("2001:db8::12"),
            AcquireMode::Grant,
            &r,
            &mut w,
        )
        .unwrap();
    assert_ne!(got.addr, hint("2001:db8::12")[0]);
    // A stranger does not get it either; r2 does.
    let stranger = a
        .acquire(
            0,
            &ia(b"zzz", 1),
            &hint("2001:db8::12"),
            AcquireMode::Grant,
            &r,
            &mut w,
        )
        .unwrap();
    assert_ne!(stranger.addr, hint("2001:db8::12")[0]);
    let r2 = with_res(&c2, b"r2r", 0);
    let got = a
        .acquire(0, &r2, &[], AcquireMode::Grant, &r, &mut w)
        .unwrap();
    assert_eq!(got.addr, hint("2001:db8::12")[0]);
    // ::13 is no longer kept for the line: a client naming it may have it.
    let line_gone = a
        .acquire(
            0,
            &ia(b"yyy", 1),
            &hint("2001:db8::13"),
            AcquireMode::Grant,
            &r,
            &mut w,
        )
        .unwrap();
    assert_eq!(line_gone.addr, hint("2001:db8::13")[0]);
}
