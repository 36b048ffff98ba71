//! The CONNECT / CONNECTREPLY handshake (`tandem_core::failover::connect`): a matching pair connects
//! both ways; every configuration difference the partners must not have is refused with the
//! right status and a reason naming it; server-local settings do not count; the pools digest is
//! pinned; garbage never panics and is refused.

use proptest::prelude::*;
use tandem_core::config::Role;
use tandem_core::config::{self, Config, EMBEDDED_DEFAULT};
use tandem_core::failover::connect::{
    ConnectAccepted, ConnectRefused, LinkParams, build_connect, build_connectreply, check_connect,
    check_connect_message, check_connectreply, check_connectreply_message,
};
use tandem_core::failover::pools_digest::{
    pools_digest, pools_summary, read_tandem_pools, write_tandem_pools,
};
use tandem_core::failover::wire::{
    ConnectFlags, ConnectOptions, FailoverMessage, FailoverStatusCode, FailoverType,
    FailoverWriter, ProtocolVersion, to_failover_time,
};

const NOW: u64 = 1_760_000_000;
const XID: u32 = 0x00ab_cdef;

fn parse(text: &str) -> Config {
    config::parse("<d>", text).unwrap()
}

fn default_cfg() -> Config {
    parse(EMBEDDED_DEFAULT)
}

/// One side of a pair: its parameters and its summary lines.
struct Side {
    p: LinkParams,
    summary: Vec<String>,
}

fn side(role: Role, c: &Config) -> Side {
    Side {
        p: LinkParams::new(role, "pair-a", 3600, 60, 64, c),
        summary: pools_summary(c),
    }
}

fn pair(c: &Config) -> (Side, Side) {
    (side(Role::Primary, c), side(Role::Secondary, c))
}

fn connect_frame(pri: &Side, now: u64) -> Vec<u8> {
    let mut f = Vec::new();
    build_connect(&pri.p, &pri.summary, XID, now, &mut f).unwrap();
    f
}

fn reply_frame(sec: &Side, r: Result<&ConnectAccepted, &ConnectRefused>, now: u64) -> Vec<u8> {
    let mut f = Vec::new();
    build_connectreply(&sec.p, &sec.summary, r, XID, now, &mut f).unwrap();
    f
}

/// The secondary's verdict on the primary's CONNECT, sent at `sent`, received at `now`.
fn secondary_verdict(
    pri: &Side,
    sec: &Side,
    sent: u64,
    now: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    check_connect(&sec.p, &sec.summary, &connect_frame(pri, sent), now)
}

/// The primary's verdict on an accepting CONNECTREPLY built from `accepted`.
fn primary_verdict(
    pri: &Side,
    sec: &Side,
    accepted: &ConnectAccepted,
    sent: u64,
    now: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    check_connectreply(
        &pri.p,
        &pri.summary,
        &reply_frame(sec, Ok(accepted), sent),
        XID,
        now,
    )
}

fn accepted_3600() -> ConnectAccepted {
    ConnectAccepted {
        xid: XID,
        partner_version: ProtocolVersion::V1_0,
        mclt_secs: 3600,
        partner_keepalive_secs: 60,
        partner_max_unacked: 64,
        partner_flags: ConnectFlags::FIXED_PD_LENGTH,
        skew_secs: 0,
    }
}

/// A hand-built CONNECT (unframed) with the given version and the primary's other options.
fn connect_with_version(pri: &Side, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, XID, to_failover_time(NOW));
    w.connect_options(&ConnectOptions {
        protocol_version: Some(v),
        mclt: Some(3600),
        keepalive_time: Some(60),
        max_unacked_bndupd: Some(64),
        connect_flags: Some(ConnectFlags::FIXED_PD_LENGTH),
        relationship_name: Some("pair-a"),
    });
    write_tandem_pools(&mut w, &pri.p.pools_digest, &pri.summary);
    buf
}

#[test]
fn matching_pair_handshakes_both_ways() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let f = connect_frame(&pri, NOW);
    let a = check_connect(&sec.p, &sec.summary, &f, NOW + 1).unwrap();
    assert_eq!(a.xid, XID);
    assert_eq!(a.partner_version, ProtocolVersion::V1_0);
    assert_eq!(a.mclt_secs, 3600);
    assert_eq!((a.partner_keepalive_secs, a.partner_max_unacked), (60, 64));
    assert_eq!(a.skew_secs, -1);

    let r = reply_frame(&sec, Ok(&a), NOW + 1);
    let b = check_connectreply(&pri.p, &pri.summary, &r, XID, NOW + 1).unwrap();
    assert_eq!(b.xid, XID);
    assert_eq!(b.mclt_secs, 3600);
    assert_eq!((b.partner_keepalive_secs, b.partner_max_unacked), (60, 64));
    assert_eq!(b.skew_secs, 0);

    // The CONNECT carries what RFC 8156 requires, and our pools option.
    let m = FailoverMessage::parse(&f[2..]).unwrap();
    let o = m.connect();
    assert_eq!(o.relationship_name, Some("pair-a"));
    assert_eq!(o.protocol_version, Some(ProtocolVersion::V1_0));
    assert!(o.connect_flags.is_some() && o.keepalive_time.is_some());
    let (d, lines) = read_tandem_pools(&m).unwrap();
    assert_eq!(d, pools_digest(&c));
    assert_eq!(lines, pools_summary(&c));
    // The accepting reply carries no relationship name and no status.
    let m = FailoverMessage::parse(&r[2..]).unwrap();
    assert_eq!(m.connect().relationship_name, None);
    assert_eq!(m.status(), None);

    // The unframed variants (what a Framer yields) agree.
    assert_eq!(
        check_connect_message(&sec.p, &sec.summary, &f[2..], NOW + 1),
        Ok(a)
    );
    assert_eq!(
        check_connectreply_message(&pri.p, &pri.summary, &r[2..], XID, NOW + 1),
        Ok(b)
    );

    // No relationship name on either side: the single relationship between the pair.
    let (mut pri, mut sec) = pair(&c);
    pri.p.relationship.clear();
    sec.p.relationship.clear();
    let a = secondary_verdict(&pri, &sec, NOW, NOW).unwrap();
    let f = connect_frame(&pri, NOW);
    assert_eq!(
        FailoverMessage::parse(&f[2..])
            .unwrap()
            .connect()
            .relationship_name,
        None
    );
    primary_verdict(&pri, &sec, &a, NOW, NOW).unwrap();
}

#[test]
fn relationship_name_mismatch_is_refused() {
    let c = default_cfg();
    let (pri, mut sec) = pair(&c);
    sec.p.relationship = "pair-b".into();
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(e.reason.contains("relationship name"), "{e}");
    assert!(
        e.reason.contains("\"pair-a\"") && e.reason.contains("\"pair-b\""),
        "{e}"
    );

    // Name absent in the CONNECT while the secondary has one.
    let (mut pri, sec) = pair(&c);
    pri.p.relationship.clear();
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(
        e.reason.contains("\"\"") && e.reason.contains("\"pair-a\""),
        "{e}"
    );
}

#[test]
fn mclt_mismatch_is_refused_both_ways() {
    let c = default_cfg();
    let (pri, mut sec) = pair(&c);
    sec.p.mclt_secs = 1800;
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(e.reason.contains("MCLT"), "{e}");
    assert!(
        e.reason.contains("3600 s") && e.reason.contains("1800 s"),
        "{e}"
    );

    // A CONNECTREPLY whose MCLT is not ours.
    let (pri, sec) = pair(&c);
    let a = ConnectAccepted {
        mclt_secs: 1800,
        ..accepted_3600()
    };
    let e = primary_verdict(&pri, &sec, &a, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(
        e.reason.contains("1800 s") && e.reason.contains("3600 s"),
        "{e}"
    );
}

#[test]
fn protocol_version_major_2_is_not_supported() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let m = connect_with_version(&pri, ProtocolVersion { major: 2, minor: 0 });
    let e = check_connect_message(&sec.p, &sec.summary, &m, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::NotSupported);
    assert!(e.reason.contains("2.0"), "{e}");
    assert!(e.to_string().starts_with("NotSupported (14): "), "{e}");

    // A newer minor version of 1 is fine.
    let m = connect_with_version(&pri, ProtocolVersion { major: 1, minor: 5 });
    let a = check_connect_message(&sec.p, &sec.summary, &m, NOW).unwrap();
    assert_eq!(a.partner_version, ProtocolVersion { major: 1, minor: 5 });

    // The same check on the primary's side.
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(
        &mut buf,
        FailoverType::ConnectReply,
        XID,
        to_failover_time(NOW),
    );
    w.connect_options(&ConnectOptions {
        protocol_version: Some(ProtocolVersion { major: 2, minor: 1 }),
        mclt: Some(3600),
        keepalive_time: Some(60),
        max_unacked_bndupd: Some(64),
        connect_flags: Some(ConnectFlags::FIXED_PD_LENGTH),
        relationship_name: None,
    });
    write_tandem_pools(&mut w, &sec.p.pools_digest, &sec.summary);
    let e = check_connectreply_message(&pri.p, &pri.summary, &buf, XID, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::NotSupported);
    assert!(e.reason.contains("2.1"), "{e}");
}

#[test]
fn clock_skew_past_the_bound_is_refused_within_it_accepted() {
    assert_eq!(tandem_core::config::defaults::SKEW_MAX_SECS, 5);
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    // The secondary's clock 6 s after / before the primary's sent-time: refused.
    for (now, dir) in [(NOW + 6, "behind"), (NOW - 6, "ahead of")] {
        let e = secondary_verdict(&pri, &sec, NOW, now).unwrap_err();
        assert_eq!(e.status, FailoverStatusCode::ExcessiveTimeSkew);
        assert!(e.reason.contains("6 s") && e.reason.contains(dir), "{e}");
        assert!(e.reason.contains("limit 5 s"), "{e}");
        assert!(e.to_string().starts_with("ExcessiveTimeSkew (22): "), "{e}");
    }
    // 4 s either way, and exactly 5 s, are within it.
    for now in [NOW + 4, NOW - 4, NOW + 5, NOW - 5] {
        let a = secondary_verdict(&pri, &sec, NOW, now).unwrap();
        assert_eq!(a.skew_secs, NOW as i64 - now as i64);
    }
    // The primary checks the reply's sent-time the same way.
    let a = accepted_3600();
    let e = primary_verdict(&pri, &sec, &a, NOW, NOW + 6).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ExcessiveTimeSkew);
    assert!(e.reason.contains("6 s"), "{e}");
    primary_verdict(&pri, &sec, &a, NOW, NOW + 4).unwrap();
    // A configured bound is honoured.
    let mut strict = side(Role::Secondary, &c);
    strict.p.skew_max_secs = 1;
    assert_eq!(
        secondary_verdict(&pri, &strict, NOW, NOW + 2)
            .unwrap_err()
            .status,
        FailoverStatusCode::ExcessiveTimeSkew
    );
}

#[test]
fn secondary_refusal_reaches_the_primary_with_its_status() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let refused = secondary_verdict(&pri, &sec, NOW, NOW + 30).unwrap_err();
    let r = reply_frame(&sec, Err(&refused), NOW + 30);
    // Only a status code in the refusal.
    let m = FailoverMessage::parse(&r[2..]).unwrap();
    assert_eq!(m.options().count(), 1);
    let e = check_connectreply(&pri.p, &pri.summary, &r, XID, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ExcessiveTimeSkew);
    assert!(e.reason.contains("refused our CONNECT"), "{e}");
    assert!(e.reason.contains("30 s"), "{e}");

    // A refusal built with a success status still reads as a refusal.
    let odd = ConnectRefused {
        status: FailoverStatusCode::Success,
        reason: "no".into(),
    };
    let r = reply_frame(&sec, Err(&odd), NOW);
    let e = check_connectreply(&pri.p, &pri.summary, &r, XID, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::UnspecFail);
}

#[test]
fn reply_must_echo_the_transaction_id() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let r = reply_frame(&sec, Ok(&accepted_3600()), NOW);
    let e = check_connectreply(&pri.p, &pri.summary, &r, XID + 1, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::UnspecFail);
    assert!(e.reason.contains("transaction id"), "{e}");
}

/// The lines in `a` that are not in `b`.
fn lines_only_in(a: &Config, b: &Config) -> Vec<String> {
    let lb = pools_summary(b);
    pools_summary(a)
        .into_iter()
        .filter(|l| !lb.contains(l))
        .collect()
}

#[test]
fn changed_pool_range_is_refused_naming_the_lines() {
    let a = default_cfg();
    let b = parse(&EMBEDDED_DEFAULT.replace(
        "2001:db8:1::1:0-2001:db8:1::ffff:ffff",
        "2001:db8:1::1:0-2001:db8:1::fffe:ffff",
    ));
    assert_ne!(pools_digest(&a), pools_digest(&b));
    let (pri, _) = pair(&a);
    let sec = side(Role::Secondary, &b);
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    let only_pri = lines_only_in(&a, &b);
    let only_sec = lines_only_in(&b, &a);
    assert_eq!((only_pri.len(), only_sec.len()), (1, 1));
    assert!(only_pri[0].contains("2001:db8:1::ffff:ffff"));
    assert!(only_sec[0].contains("2001:db8:1::fffe:ffff"));
    assert!(
        e.reason
            .contains(&format!("only on this secondary: [{}]", only_sec[0])),
        "{e}"
    );
    assert!(
        e.reason
            .contains(&format!("only on the primary: [{}]", only_pri[0])),
        "{e}"
    );
    // The unchanged PD pool is not named.
    assert!(!e.reason.contains("prefixes /56"), "{e}");

    // The primary finds the same difference in the CONNECTREPLY, from its side.
    let e = primary_verdict(&pri, &sec, &accepted_3600(), NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(
        e.reason
            .contains(&format!("only on this primary: [{}]", only_pri[0])),
        "{e}"
    );
    assert!(
        e.reason
            .contains(&format!("only on the secondary: [{}]", only_sec[0])),
        "{e}"
    );
}

const TWO_SUBNETS: &str = r#"
[server]
listen = ["[::1]:5547"]

[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::100-2001:db8:1::1ff" }]

[[subnet]]
id = 2
prefix = "2001:db8:2::/64"
pools = [{ range = "2001:db8:2::100-2001:db8:2::1ff" }]
pd_pools = [{ prefix = "2001:db8:9000::/40", delegated_len = 48 }]
"#;

#[test]
fn changed_subnet_lifetimes_are_refused_naming_the_lines() {
    let a = parse(TWO_SUBNETS);
    let b = parse(&TWO_SUBNETS.replace(
        "id = 2\n",
        "id = 2\nlease = { valid_lifetime_secs = 9000 }\n",
    ));
    assert_ne!(pools_digest(&a), pools_digest(&b));
    let (pri, _) = pair(&a);
    let sec = side(Role::Secondary, &b);
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    let only_sec = lines_only_in(&b, &a);
    assert_eq!(only_sec.len(), 2, "both pools of subnet 2");
    for l in &only_sec {
        assert!(
            l.starts_with("subnet 2 ") && l.contains("valid 9000 s"),
            "{l}"
        );
        assert!(e.reason.contains(&format!("[{l}]")), "{e}");
    }
    for l in lines_only_in(&a, &b) {
        assert!(l.contains("valid 7200 s"));
        assert!(e.reason.contains(&format!("[{l}]")), "{e}");
    }
    // Subnet 1 is unchanged and not named.
    assert!(!e.reason.contains("subnet 1 "), "{e}");
}

#[test]
fn many_differences_are_bounded_in_the_reason() {
    let mut text = String::from("[server]\nlisten = [\"[::1]:5547\"]\n");
    for i in 1..=30 {
        text.push_str(&format!(
            "[[subnet]]\nid = {i}\nprefix = \"2001:db8:{i:x}::/64\"\npools = [{{ range = \"2001:db8:{i:x}::100-2001:db8:{i:x}::1ff\" }}]\n"
        ));
    }
    let a = parse(&text);
    let b = parse(&text.replace("[server]", "[lease]\nvalid_lifetime_secs = 8000\n[server]"));
    let (pri, _) = pair(&a);
    let sec = side(Role::Secondary, &b);
    let e = secondary_verdict(&pri, &sec, NOW, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(e.reason.contains("and 20 more"), "{e}");
    assert!(e.reason.len() <= 4096);
}

#[test]
fn server_local_settings_do_not_change_the_digest() {
    let base = default_cfg();
    let local = EMBEDDED_DEFAULT
        .replace("./tandem-data", "/var/lib/tandem-b")
        .replace("[::1]:5547", "[2001:db8::53]:547")
        .replace("unicast_address = \"::1\"", "unicast_address = \"2001:db8::53\"")
        .replace("rapid_commit = true", "rapid_commit = false\nworkers = 7\nlog_level = \"debug\"\nsync = false\nmap_size_mib = 64")
        .replace("id = 1\n", "id = 1\ninterface = \"eth3\"\n");
    let other = parse(&local);
    assert_ne!(other.server, base.server);
    assert_eq!(other.subnets[0].interface.as_deref(), Some("eth3"));
    assert_eq!(pools_digest(&other), pools_digest(&base));
    assert_eq!(pools_summary(&other), pools_summary(&base));
    let (pri, _) = pair(&base);
    let sec = side(Role::Secondary, &other);
    secondary_verdict(&pri, &sec, NOW, NOW).unwrap();
}

/// The pools digest of the embedded default configuration.
///
/// Pinned on purpose: changing the canonical encoding or the hash changes every digest, and
/// then a pair running two Tandem versions refuses to connect (ConfigurationConflict). Change
/// it only together with a deliberate, documented encoding version bump. (Checked once against
/// an independent re-implementation of the documented encoding and hash.)
const EMBEDDED_DEFAULT_POOLS_DIGEST: &str =
    "2e43a258952695eb129caf108154075ac3b3e7473c9243e937425da6fe7fec20";

#[test]
fn pools_digest_is_pinned() {
    let d = pools_digest(&default_cfg());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, EMBEDDED_DEFAULT_POOLS_DIGEST);
}

#[test]
fn partner_without_pools_digest_is_refused() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, XID, to_failover_time(NOW));
    w.connect_options(&ConnectOptions {
        protocol_version: Some(ProtocolVersion::V1_0),
        mclt: Some(3600),
        keepalive_time: Some(60),
        max_unacked_bndupd: Some(64),
        connect_flags: Some(ConnectFlags::default()),
        relationship_name: Some("pair-a"),
    });
    let e = check_connect_message(&sec.p, &sec.summary, &buf, NOW).unwrap_err();
    assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
    assert!(e.reason.contains("pools digest"), "{e}");
    let _ = pri;
}

#[test]
fn damaged_frames_are_refused() {
    let c = default_cfg();
    let (pri, sec) = pair(&c);
    let f = connect_frame(&pri, NOW);
    let r = reply_frame(&sec, Ok(&accepted_3600()), NOW);
    for n in 0..f.len() {
        let e = check_connect(&sec.p, &sec.summary, &f[..n], NOW).unwrap_err();
        assert_eq!(e.status, FailoverStatusCode::UnspecFail, "{n}: {e}");
        // Truncated messages (with a consistent length) are refused too.
        if n >= 2 {
            assert!(
                check_connect_message(&sec.p, &sec.summary, &f[2..n], NOW).is_err(),
                "{n}"
            );
        }
    }
    for n in 0..r.len() {
        assert!(
            check_connectreply(&pri.p, &pri.summary, &r[..n], XID, NOW).is_err(),
            "{n}"
        );
    }
    // Trailing bytes after the frame.
    let mut long = f.clone();
    long.push(0);
    assert!(check_connect(&sec.p, &sec.summary, &long, NOW).is_err());
    // Every single-byte corruption: a verdict, never a panic.
    for i in 0..f.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut g = f.clone();
            g[i] ^= x;
            let _ = check_connect(&sec.p, &sec.summary, &g, NOW);
            let _ = check_connectreply(&pri.p, &pri.summary, &g, XID, NOW);
        }
    }
    for junk in [
        &[][..],
        &[0, 0],
        &[0, 8, 31, 0, 0, 0, 0, 0, 0, 0],
        &[0xff; 40],
    ] {
        assert!(check_connect(&sec.p, &sec.summary, junk, NOW).is_err());
        assert!(check_connectreply(&pri.p, &pri.summary, junk, XID, NOW).is_err());
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), now in any::<u64>()) {
        let c = default_cfg();
        let (pri, sec) = pair(&c);
        let _ = check_connect(&sec.p, &sec.summary, &bytes, now);
        let _ = check_connect_message(&sec.p, &sec.summary, &bytes, now);
        let _ = check_connectreply(&pri.p, &pri.summary, &bytes, XID, now);
        let _ = check_connectreply_message(&pri.p, &pri.summary, &bytes, XID, now);
    }

    #[test]
    fn arbitrary_options_after_a_connect_header_never_panic(
        opts in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        vendor in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let c = default_cfg();
        let (pri, sec) = pair(&c);
        for t in [31u8, 32] {
            let mut m = vec![t, 0xab, 0xcd, 0xef];
            m.extend_from_slice(&to_failover_time(NOW).to_be_bytes());
            for (code, data) in &opts {
                m.extend_from_slice(&code.to_be_bytes());
                m.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
                m.extend_from_slice(data);
            }
            // A Tandem vendor option with arbitrary contents.
            let data = [32473u32.to_be_bytes().to_vec(), vendor.clone()].concat();
            m.extend_from_slice(&17u16.to_be_bytes());
            m.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            m.extend_from_slice(&data);
            let _ = check_connect_message(&sec.p, &sec.summary, &m, NOW);
            let _ = check_connectreply_message(&pri.p, &pri.summary, &m, XID, NOW);
        }
    }
}
