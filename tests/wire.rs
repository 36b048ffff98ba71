//! Integration tests for the DHCPv6 wire codec: fixed vectors, malformed input, property tests
//! and a differential test against dhcproto as an independent oracle.

#[path = "fixtures/options.rs"]
mod options;

use std::net::Ipv6Addr;

use options::raw;
use proptest::prelude::*;
use tandem_core::wire::{
    HOP_COUNT_LIMIT, MAX_RELAY_DEPTH, Message, MessageType, MessageWriter, OptionWriter, RelayHop,
    RelayMessage, StatusCode, WireError, opt, try_wrap_relay_forw, try_wrap_relay_reply,
    unwrap_relay_replies, unwrap_relays, wrap_relay_forw, wrap_relay_reply,
};

// ---------------------------------------------------------------------------------------------
// Hand-built byte helpers (independent of the writer under test).

fn msg(t: u8, xid: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let x = xid.to_be_bytes();
    let mut v = vec![t, x[1], x[2], x[3]];
    for o in opts {
        v.extend_from_slice(o);
    }
    v
}

fn relay_forw(hops: u8, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![12, hops];
    v.extend(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
    v.extend(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2).octets());
    for o in opts {
        v.extend_from_slice(o);
    }
    v
}

fn ia_fixed(iaid: u32, t1: u32, t2: u32) -> Vec<u8> {
    [iaid, t1, t2]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn iaaddr(addr: Ipv6Addr, pref: u32, valid: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = addr.octets().to_vec();
    d.extend(pref.to_be_bytes());
    d.extend(valid.to_be_bytes());
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(opt::IAADDR, &d)
}

fn iaprefix(prefix: Ipv6Addr, len: u8, pref: u32, valid: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = pref.to_be_bytes().to_vec();
    d.extend(valid.to_be_bytes());
    d.push(len);
    d.extend(prefix.octets());
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(opt::IAPREFIX, &d)
}

fn ia(code: u16, iaid: u32, t1: u32, t2: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = ia_fixed(iaid, t1, t2);
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(code, &d)
}

fn status(code: u16, m: &[u8]) -> Vec<u8> {
    let mut d = code.to_be_bytes().to_vec();
    d.extend_from_slice(m);
    raw(opt::STATUS_CODE, &d)
}

const DUID: &[u8] = &[
    0, 1, 0, 1, 0x1c, 0x39, 0xcf, 0x88, 0x08, 0x00, 0x27, 0xfe, 0x8f, 0x95,
];
const SDUID: &[u8] = &[0, 3, 0, 1, 0x08, 0x00, 0x27, 0xd4, 0x10, 0xbb];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Fixed vectors.

#[test]
fn real_solicit_vector_parses() {
    // Solicit captured from a real client (also used by dhcproto's own tests).
    let b = [
        0x01, 0x10, 0x08, 0x74, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01, 0x1c, 0x39, 0xcf,
        0x88, 0x08, 0x00, 0x27, 0xfe, 0x8f, 0x95, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18,
        0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x19, 0x00, 0x0c, 0x27, 0xfe, 0x8f, 0x95, 0x00,
        0x00, 0x0e, 0x10, 0x00, 0x00, 0x15, 0x18,
    ];
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.msg_type(), MessageType::Solicit);
    assert_eq!(m.transaction_id(), 0x100874);
    assert_eq!(m.client_id(), Some(DUID));
    assert_eq!(m.oro().collect::<Vec<_>>(), [23, 24]);
    assert_eq!(m.elapsed_time(), Some(0));
    let pds: Vec<_> = m.ia_pds().collect();
    assert_eq!(pds.len(), 1);
    assert_eq!(
        (pds[0].iaid, pds[0].t1, pds[0].t2),
        (0x27fe8f95, 3600, 5400)
    );
    assert_eq!(pds[0].prefixes().count(), 0);
}

#[test]
fn real_reply_vector_parses() {
    let b = [
        0x07, 0x49, 0x17, 0x4e, 0x00, 0x19, 0x00, 0x29, 0x27, 0xfe, 0x8f, 0x95, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x19, 0x00, 0x00, 0x11, 0x94, 0x00, 0x00,
        0x1c, 0x20, 0x40, 0x20, 0x01, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01, 0x1c, 0x39, 0xcf,
        0x88, 0x08, 0x00, 0x27, 0xfe, 0x8f, 0x95, 0x00, 0x02, 0x00, 0x0e, 0x00, 0x01, 0x00, 0x01,
        0x1c, 0x38, 0x25, 0xe8, 0x08, 0x00, 0x27, 0xd4, 0x10, 0xbb,
    ];
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.msg_type(), MessageType::Reply);
    assert_eq!(m.transaction_id(), 0x49174e);
    assert!(m.server_id().is_some());
    let pd = m.ia_pds().next().unwrap();
    let p = pd.prefixes().next().unwrap();
    assert_eq!(p.prefix, a("2001:0:0:fe00::"));
    assert_eq!(p.prefix_len, 64);
    assert_eq!((p.preferred_secs, p.valid_secs), (4500, 7200));
    assert!(p.status().is_none());
}

#[test]
fn every_message_type_parses() {
    // Client/server types of RFC 8415, Leasequery's two (RFC 5007) and Bulk Leasequery's two (RFC 5460).
    for t in (1u8..=11).chain([14, 15, 16, 17]) {
        let b = msg(
            t,
            0xabcdef,
            &[
                raw(opt::CLIENTID, DUID),
                raw(opt::SERVERID, SDUID),
                raw(opt::ELAPSED_TIME, &[0, 5]),
            ],
        );
        let m = Message::parse(&b).unwrap_or_else(|e| panic!("type {t}: {e}"));
        assert_eq!(m.msg_type().to_u8(), t);
        assert_eq!(m.msg_type(), MessageType::from_u8(t));
        assert!(!matches!(m.msg_type(), MessageType::Other(_)));
        assert_eq!(m.transaction_id(), 0xabcdef);
        assert_eq!(m.client_id(), Some(DUID));
        assert_eq!(m.server_id(), Some(SDUID));
    }
    // Relay types are not client/server messages; relays parse through unwrap_relays.
    let inner = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
    let forw = relay_forw(0, &[raw(opt::RELAY_MSG, &inner)]);
    assert_eq!(
        Message::parse(&forw),
        Err(WireError::UnexpectedRelay(MessageType::RelayForw))
    );
    let r = unwrap_relays(&forw).unwrap();
    assert_eq!(r.hops()[0].msg_type, MessageType::RelayForw);
    let mut repl = forw.clone();
    repl[0] = 13;
    assert_eq!(
        Message::parse(&repl),
        Err(WireError::UnexpectedRelay(MessageType::RelayRepl))
    );
    assert_eq!(
        unwrap_relay_replies(&repl).unwrap().hops()[0].msg_type,
        MessageType::RelayRepl
    );
    for t in [0u8, 18, 20, 255] {
        assert_eq!(
            Message::parse(&msg(t, 1, &[])),
            Err(WireError::UnknownMessageType(t))
        );
    }
}

#[test]
fn every_option_type_parses() {
    let b = msg(
        7,
        42,
        &[
            raw(opt::CLIENTID, DUID),
            raw(opt::SERVERID, SDUID),
            ia(
                opt::IA_NA,
                1,
                100,
                200,
                &[
                    iaaddr(a("2001:db8::10"), 300, 400, &[status(0, b"fine")]),
                    iaaddr(a("2001:db8::11"), 0, 0, &[raw(999, b"opaque")]),
                    status(0, b""),
                ],
            ),
            raw(opt::IA_TA, &[0, 0, 0, 9]),
            ia(
                opt::IA_PD,
                2,
                1000,
                2000,
                &[
                    iaprefix(a("2001:db8:1::"), 48, 3000, 4000, &[]),
                    iaprefix(a("::"), 0, 1, 2, &[status(6, b"none")]),
                    iaprefix(a("2001:db8::1"), 128, 5, 6, &[]),
                ],
            ),
            raw(opt::ORO, &[0, 23, 0, 24, 0, 82]),
            raw(opt::PREFERENCE, &[200]),
            raw(opt::ELAPSED_TIME, &[0x01, 0x02]),
            raw(opt::AUTH, &[3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            raw(opt::UNICAST, &a("2001:db8::547").octets()),
            status(2, b"no addrs"),
            raw(opt::RAPID_COMMIT, &[]),
            raw(opt::INTERFACE_ID, b"misplaced"),
            raw(opt::RECONF_MSG, &[5]),
            raw(opt::RECONF_ACCEPT, &[]),
            raw(opt::DNS_SERVERS, &a("2001:db8::53").octets()),
            raw(opt::INFORMATION_REFRESH_TIME, &86400u32.to_be_bytes()),
            raw(opt::SOL_MAX_RT, &3600u32.to_be_bytes()),
            raw(opt::INF_MAX_RT, &3600u32.to_be_bytes()),
            raw(opt::RELAY_SOURCE_PORT, &[0, 0]),
            raw(4242, &[]),
        ],
    );
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.options().count(), 21);
    assert_eq!(m.client_id(), Some(DUID));
    assert_eq!(m.server_id(), Some(SDUID));
    assert!(m.has_ia_ta());
    assert_eq!(m.oro().collect::<Vec<_>>(), [23, 24, 82]);
    assert_eq!(m.preference(), Some(200));
    assert_eq!(m.elapsed_time(), Some(0x0102));
    assert_eq!(m.server_unicast(), Some(a("2001:db8::547")));
    let st = m.status().unwrap();
    assert_eq!((st.code, st.message), (2, &b"no addrs"[..]));
    assert_eq!(st.status_code(), Some(StatusCode::NoAddrsAvail));
    assert!(m.rapid_commit());
    assert!(m.reconfigure_accept());
    assert_eq!(m.first(opt::INTERFACE_ID), Some(&b"misplaced"[..]));
    assert_eq!(m.first(4242), Some(&[][..]));

    let na: Vec<_> = m.ia_nas().collect();
    assert_eq!(na.len(), 1);
    assert_eq!((na[0].iaid, na[0].t1, na[0].t2), (1, 100, 200));
    assert_eq!(
        na[0].status().unwrap().status_code(),
        Some(StatusCode::Success)
    );
    assert!(na[0].status().unwrap().message.is_empty());
    let addrs: Vec<_> = na[0].addresses().collect();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].addr, a("2001:db8::10"));
    assert_eq!((addrs[0].preferred_secs, addrs[0].valid_secs), (300, 400));
    assert_eq!(addrs[0].status().unwrap().message, b"fine");
    assert!(addrs[1].status().is_none());
    assert_eq!(addrs[1].options().next().unwrap().code, 999);

    let pd: Vec<_> = m.ia_pds().collect();
    assert_eq!(pd.len(), 1);
    assert_eq!((pd[0].iaid, pd[0].t1, pd[0].t2), (2, 1000, 2000));
    assert!(pd[0].status().is_none());
    let p: Vec<_> = pd[0].prefixes().collect();
    assert_eq!(p.len(), 3);
    assert_eq!((p[0].prefix, p[0].prefix_len), (a("2001:db8:1::"), 48));
    assert_eq!((p[0].preferred_secs, p[0].valid_secs), (3000, 4000));
    assert_eq!(
        p[1].status().unwrap().status_code(),
        Some(StatusCode::NoPrefixAvail)
    );
    assert_eq!(p[2].prefix_len, 128);
}

#[test]
fn every_option_type_emits_expected_bytes() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Reply, 42);
    w.client_id(DUID);
    w.server_id(SDUID);
    w.ia_na(1, 100, 200, |ia| {
        ia.ia_addr(a("2001:db8::10"), 300, 400, |ad| {
            ad.status(StatusCode::Success, "fine")
        });
        ia.ia_addr(a("2001:db8::11"), 0, 0, |ad| ad.option(999, b"opaque"));
        ia.status(StatusCode::Success, "");
    });
    w.ia_ta(9, |_| {});
    w.ia_pd(2, 1000, 2000, |pd| {
        pd.ia_prefix(a("2001:db8:1::"), 48, 3000, 4000, |_| {});
        pd.ia_prefix(a("::"), 0, 1, 2, |p| {
            p.status(StatusCode::NoPrefixAvail, "none")
        });
        pd.ia_prefix(a("2001:db8::1"), 128, 5, 6, |_| {});
    });
    w.oro(&[23, 24, 82]);
    w.preference(200);
    w.elapsed_time(0x0102);
    w.option(opt::AUTH, &[3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    w.server_unicast(a("2001:db8::547"));
    w.status(StatusCode::NoAddrsAvail, "no addrs");
    w.rapid_commit();
    w.option(opt::INTERFACE_ID, b"misplaced");
    w.option_u8(opt::RECONF_MSG, 5);
    w.reconfigure_accept();
    w.option_addrs(opt::DNS_SERVERS, &[a("2001:db8::53")]);
    w.option_u32(opt::INFORMATION_REFRESH_TIME, 86400);
    w.option_u32(opt::SOL_MAX_RT, 3600);
    w.option_u32(opt::INF_MAX_RT, 3600);
    w.option_u16(opt::RELAY_SOURCE_PORT, 0);
    w.empty_option(4242);
    let written = w.len();
    assert!(!w.overflowed());
    let expected = msg(
        7,
        42,
        &[
            raw(opt::CLIENTID, DUID),
            raw(opt::SERVERID, SDUID),
            ia(
                opt::IA_NA,
                1,
                100,
                200,
                &[
                    iaaddr(a("2001:db8::10"), 300, 400, &[status(0, b"fine")]),
                    iaaddr(a("2001:db8::11"), 0, 0, &[raw(999, b"opaque")]),
                    status(0, b""),
                ],
            ),
            raw(opt::IA_TA, &[0, 0, 0, 9]),
            ia(
                opt::IA_PD,
                2,
                1000,
                2000,
                &[
                    iaprefix(a("2001:db8:1::"), 48, 3000, 4000, &[]),
                    iaprefix(a("::"), 0, 1, 2, &[status(6, b"none")]),
                    iaprefix(a("2001:db8::1"), 128, 5, 6, &[]),
                ],
            ),
            raw(opt::ORO, &[0, 23, 0, 24, 0, 82]),
            raw(opt::PREFERENCE, &[200]),
            raw(opt::ELAPSED_TIME, &[0x01, 0x02]),
            raw(opt::AUTH, &[3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            raw(opt::UNICAST, &a("2001:db8::547").octets()),
            status(2, b"no addrs"),
            raw(opt::RAPID_COMMIT, &[]),
            raw(opt::INTERFACE_ID, b"misplaced"),
            raw(opt::RECONF_MSG, &[5]),
            raw(opt::RECONF_ACCEPT, &[]),
            raw(opt::DNS_SERVERS, &a("2001:db8::53").octets()),
            raw(opt::INFORMATION_REFRESH_TIME, &86400u32.to_be_bytes()),
            raw(opt::SOL_MAX_RT, &3600u32.to_be_bytes()),
            raw(opt::INF_MAX_RT, &3600u32.to_be_bytes()),
            raw(opt::RELAY_SOURCE_PORT, &[0, 0]),
            raw(4242, &[]),
        ],
    );
    assert_eq!(written, expected.len());
    assert_eq!(buf, expected);
}

#[test]
fn writer_reuses_buffer_and_clears_it() {
    let mut buf = Vec::with_capacity(512);
    for xid in [1u32, 0xffffff, 0x1_234567] {
        let cap = buf.capacity();
        let mut w = MessageWriter::new(&mut buf, MessageType::Advertise, xid);
        w.client_id(DUID);
        w.preference(255);
        let m = Message::parse(&buf).unwrap();
        assert_eq!(m.transaction_id(), xid & 0xffffff);
        assert_eq!(m.options().count(), 2);
        assert_eq!(buf.capacity(), cap, "no reallocation once warmed up");
    }
    // OptionWriter::new appends without clearing.
    let mut buf = vec![7, 0, 0, 1];
    let mut w = OptionWriter::new(&mut buf);
    w.rapid_commit();
    assert_eq!(buf, [7, 0, 0, 1, 0, 14, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Malformed input.

#[test]
fn truncated_header() {
    for n in 0..4 {
        assert_eq!(
            Message::parse(&[1, 2, 3][..n.min(3)]),
            Err(WireError::Truncated)
        );
    }
    for n in 1..34 {
        let b = relay_forw(0, &[]);
        assert_eq!(unwrap_relays(&b[..n]).unwrap_err(), WireError::Truncated);
    }
    assert_eq!(unwrap_relays(&[]).unwrap_err(), WireError::Truncated);
}

#[test]
fn option_overrunning_the_message() {
    let mut b = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
    b.pop();
    assert_eq!(
        Message::parse(&b),
        Err(WireError::OptionOverrun { code: 1 })
    );
    // Header claims 0xffff bytes.
    let b = msg(1, 1, &[vec![0, 1, 0xff, 0xff, 0, 1, 2]]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::OptionOverrun { code: 1 })
    );
    // Partial option header.
    for extra in 1..4 {
        let mut b = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
        b.extend(&[0, 8, 0][..extra]);
        assert_eq!(Message::parse(&b), Err(WireError::TruncatedOption));
    }
    // A nested option overrunning its IA (but not the message).
    let mut inner = ia_fixed(1, 2, 3);
    inner.extend([0, 5, 0, 30]);
    inner.extend([0u8; 24]);
    let b = msg(3, 1, &[raw(opt::IA_NA, &inner), raw(999, &[0; 10])]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::OptionOverrun { code: 5 })
    );
}

#[test]
fn ia_options_too_short() {
    let b = msg(3, 1, &[raw(opt::IA_NA, &[0; 11])]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 3, len: 11 })
    );
    let b = msg(3, 1, &[raw(opt::IA_PD, &[0; 11])]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 25, len: 11 })
    );
    let b = msg(3, 1, &[raw(opt::IA_TA, &[0; 3])]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 4, len: 3 })
    );
    let b = msg(
        3,
        1,
        &[ia(opt::IA_NA, 1, 0, 0, &[raw(opt::IAADDR, &[0; 23])])],
    );
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 5, len: 23 })
    );
    let b = msg(
        3,
        1,
        &[ia(opt::IA_PD, 1, 0, 0, &[raw(opt::IAPREFIX, &[0; 24])])],
    );
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 26, len: 24 })
    );
    // Exactly the minimum is fine.
    let b = msg(
        3,
        1,
        &[
            raw(opt::IA_NA, &[0; 12]),
            ia(opt::IA_NA, 2, 0, 0, &[raw(opt::IAADDR, &[0; 24])]),
            ia(opt::IA_PD, 3, 0, 0, &[raw(opt::IAPREFIX, &[0; 25])]),
        ],
    );
    let m = Message::parse(&b).unwrap();
    assert_eq!(m.ia_nas().count(), 2);
    assert_eq!(m.ia_pds().next().unwrap().prefixes().count(), 1);
}

#[test]
fn prefix_length_above_128() {
    for len in [129u8, 200, 255] {
        let b = msg(
            3,
            1,
            &[ia(
                opt::IA_PD,
                1,
                0,
                0,
                &[iaprefix(a("2001:db8::"), len, 1, 2, &[])],
            )],
        );
        assert_eq!(Message::parse(&b), Err(WireError::BadPrefixLength(len)));
    }
    let b = msg(
        3,
        1,
        &[ia(
            opt::IA_PD,
            1,
            0,
            0,
            &[iaprefix(a("2001:db8::"), 128, 1, 2, &[])],
        )],
    );
    assert!(Message::parse(&b).is_ok());
}

#[test]
fn zero_length_status_code() {
    // The 16-byte crafted Reply: header, a 4-byte client id, and `00 0d 00 00`.
    let b: [u8; 16] = [
        0x07, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x04, 0x00, 0x03, 0x00, 0x01, 0x00, 0x0d, 0x00,
        0x00,
    ];
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 13, len: 0 })
    );
    // One byte is also too short.
    let b = msg(7, 1, &[raw(opt::STATUS_CODE, &[0])]);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BadOptionLength { code: 13, len: 1 })
    );
    // Two bytes: valid, with an empty message.
    let b = msg(7, 1, &[raw(opt::STATUS_CODE, &[0, 3])]);
    let s = Message::parse(&b).unwrap().status().unwrap();
    assert_eq!(s.code, 3);
    assert_eq!(s.status_code(), Some(StatusCode::NoBinding));
    assert!(s.message.is_empty());
    // Zero-length status nested in an IA_NA, an IAADDR and an IAPREFIX.
    let zero = raw(opt::STATUS_CODE, &[]);
    for b in [
        msg(
            7,
            1,
            &[ia(opt::IA_NA, 1, 0, 0, std::slice::from_ref(&zero))],
        ),
        msg(
            7,
            1,
            &[ia(
                opt::IA_NA,
                1,
                0,
                0,
                &[iaaddr(a("::1"), 0, 0, std::slice::from_ref(&zero))],
            )],
        ),
        msg(
            7,
            1,
            &[ia(
                opt::IA_PD,
                1,
                0,
                0,
                &[iaprefix(a("::"), 0, 0, 0, std::slice::from_ref(&zero))],
            )],
        ),
    ] {
        assert_eq!(
            Message::parse(&b),
            Err(WireError::BadOptionLength { code: 13, len: 0 })
        );
    }
}

#[test]
fn duplicate_single_instance_options() {
    let cases: &[(u16, &[u8])] = &[
        (opt::CLIENTID, DUID),
        (opt::SERVERID, SDUID),
        (opt::ELAPSED_TIME, &[0, 0]),
        (opt::PREFERENCE, &[1]),
        (opt::RAPID_COMMIT, &[]),
        (opt::ORO, &[0, 23]),
        (opt::UNICAST, &[0; 16]),
        (opt::RECONF_ACCEPT, &[]),
        (opt::STATUS_CODE, &[0, 0]),
    ];
    for &(code, data) in cases {
        let b = msg(
            3,
            1,
            &[raw(code, data), raw(opt::IA_NA, &[0; 12]), raw(code, data)],
        );
        assert_eq!(
            Message::parse(&b),
            Err(WireError::DuplicateOption { code }),
            "code {code}"
        );
        // Once is fine.
        assert!(
            Message::parse(&msg(3, 1, &[raw(code, data)])).is_ok(),
            "code {code}"
        );
    }
    // Repeated IAs and unknown options are allowed.
    let b = msg(
        3,
        1,
        &[
            raw(opt::IA_NA, &[0; 12]),
            raw(opt::IA_NA, &[0; 12]),
            raw(opt::IA_PD, &[0; 12]),
            raw(opt::IA_PD, &[0; 12]),
            raw(7777, &[1]),
            raw(7777, &[2]),
        ],
    );
    assert!(Message::parse(&b).is_ok());
}

#[test]
fn fixed_size_options_with_wrong_length() {
    let cases: &[(u16, usize)] = &[
        (opt::ELAPSED_TIME, 1),
        (opt::ELAPSED_TIME, 3),
        (opt::PREFERENCE, 0),
        (opt::PREFERENCE, 2),
        (opt::RAPID_COMMIT, 1),
        (opt::RECONF_ACCEPT, 1),
        (opt::UNICAST, 15),
        (opt::UNICAST, 17),
        (opt::ORO, 3),
        (opt::AUTH, 10),
        (opt::RECONF_MSG, 0),
        (opt::INFORMATION_REFRESH_TIME, 3),
        (opt::CLIENTID, 0),
        (opt::CLIENTID, 2),
        (opt::CLIENTID, 131),
        (opt::SERVERID, 1),
    ];
    for &(code, len) in cases {
        let b = msg(1, 1, &[raw(code, &vec![0; len])]);
        assert_eq!(
            Message::parse(&b),
            Err(WireError::BadOptionLength { code, len }),
            "code {code} len {len}"
        );
    }
    assert!(Message::parse(&msg(1, 1, &[raw(opt::CLIENTID, &[0; 130])])).is_ok());
    assert!(Message::parse(&msg(1, 1, &[raw(opt::ORO, &[])])).is_ok());
}

fn nest_forw(inner: &[u8], levels: usize) -> Vec<u8> {
    let mut m = inner.to_vec();
    for i in 0..levels {
        m = relay_forw(u8::try_from(i % 256).unwrap(), &[raw(opt::RELAY_MSG, &m)]);
    }
    m
}

#[test]
fn relay_nested_beyond_hop_count_limit() {
    let inner = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
    let ok = nest_forw(&inner, usize::from(HOP_COUNT_LIMIT) + 1);
    let r = unwrap_relays(&ok).unwrap();
    assert_eq!(r.hops().len(), MAX_RELAY_DEPTH);
    assert!(r.message().is_ok());
    let too_deep = nest_forw(&inner, usize::from(HOP_COUNT_LIMIT) + 2);
    assert_eq!(
        unwrap_relays(&too_deep).unwrap_err(),
        WireError::RelayTooDeep
    );
    let way_too_deep = nest_forw(&inner, 300);
    assert_eq!(
        unwrap_relays(&way_too_deep).unwrap_err(),
        WireError::RelayTooDeep
    );
}

#[test]
fn relay_without_relay_msg() {
    let b = relay_forw(0, &[raw(opt::INTERFACE_ID, b"eth0")]);
    assert_eq!(
        unwrap_relays(&b).unwrap_err(),
        WireError::MissingRelayMessage
    );
    assert_eq!(
        unwrap_relays(&relay_forw(0, &[])).unwrap_err(),
        WireError::MissingRelayMessage
    );
    // Missing in an inner level.
    let inner = relay_forw(0, &[]);
    let b = relay_forw(1, &[raw(opt::RELAY_MSG, &inner)]);
    assert_eq!(
        unwrap_relays(&b).unwrap_err(),
        WireError::MissingRelayMessage
    );
}

#[test]
fn relay_with_two_relay_msgs() {
    let inner = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
    let b = relay_forw(
        0,
        &[raw(opt::RELAY_MSG, &inner), raw(opt::RELAY_MSG, &inner)],
    );
    assert_eq!(
        unwrap_relays(&b).unwrap_err(),
        WireError::DuplicateOption { code: 9 }
    );
    let b = relay_forw(
        0,
        &[
            raw(opt::INTERFACE_ID, b"a"),
            raw(opt::INTERFACE_ID, b"b"),
            raw(opt::RELAY_MSG, &inner),
        ],
    );
    assert_eq!(
        unwrap_relays(&b).unwrap_err(),
        WireError::DuplicateOption { code: 18 }
    );
}

#[test]
fn relay_msg_containing_garbage() {
    let wrap = |inner: &[u8]| relay_forw(0, &[raw(opt::RELAY_MSG, inner)]);
    // Empty relayed message.
    assert_eq!(unwrap_relays(&wrap(&[])).unwrap_err(), WireError::Truncated);
    // Looks like a Relay-forw but is cut short.
    assert_eq!(
        unwrap_relays(&wrap(&[12, 0xff, 1, 2])).unwrap_err(),
        WireError::Truncated
    );
    // A Relay-repl inside a Relay-forw.
    let mut repl = wrap(&msg(7, 1, &[]));
    repl[0] = 13;
    assert_eq!(
        unwrap_relays(&wrap(&repl)).unwrap_err(),
        WireError::UnexpectedRelay(MessageType::RelayRepl)
    );
    // Client-looking bytes whose options are garbage: relay layer is fine, message is not.
    let g1 = wrap(&[7, 0, 0, 0, 0, 1, 0xff, 0xff, 9]);
    let r = unwrap_relays(&g1).unwrap();
    assert_eq!(
        r.message().unwrap_err(),
        WireError::OptionOverrun { code: 1 }
    );
    let g2 = wrap(&[0xff, 0xee, 0xdd, 0xcc]);
    let r = unwrap_relays(&g2).unwrap();
    assert_eq!(
        r.message().unwrap_err(),
        WireError::UnknownMessageType(0xff)
    );
    let g3 = wrap(&[1, 0]);
    let r = unwrap_relays(&g3).unwrap();
    assert_eq!(r.message().unwrap_err(), WireError::Truncated);
    // Garbage in the relay's own options.
    let mut b = wrap(&msg(1, 1, &[]));
    b.extend([0, 37, 0]);
    assert_eq!(unwrap_relays(&b).unwrap_err(), WireError::TruncatedOption);
    assert_eq!(
        unwrap_relays(&relay_forw(0, &[raw(opt::RELAY_SOURCE_PORT, &[1, 2, 3])])).unwrap_err(),
        WireError::BadOptionLength { code: 135, len: 3 }
    );
    assert_eq!(
        RelayMessage::parse(&msg(1, 1, &[])),
        Err(WireError::NotRelay)
    );
}

#[test]
fn relay_hop_fields_and_options() {
    let inner = msg(3, 9, &[raw(opt::CLIENTID, DUID)]);
    let l1 = relay_forw(
        0,
        &[
            raw(opt::INTERFACE_ID, b"port-7"),
            raw(opt::CLIENT_LINKLAYER_ADDR, &[0, 1, 1, 2, 3, 4, 5, 6]),
            raw(opt::RELAY_MSG, &inner),
        ],
    );
    let mut l2 = relay_forw(
        1,
        &[
            raw(opt::RELAY_SOURCE_PORT, &[0x04, 0x2b]),
            raw(opt::RELAY_MSG, &l1),
        ],
    );
    l2[2..18].copy_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    let r = unwrap_relays(&l2).unwrap();
    let h = r.hops();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].hop_count, 1);
    assert_eq!(h[0].link_address, Ipv6Addr::UNSPECIFIED);
    assert_eq!(h[0].interface_id, None);
    assert_eq!(h[0].relay_source_port, Some(1067));
    assert_eq!(h[1].hop_count, 0);
    assert_eq!(h[1].link_address, a("2001:db8::1"));
    assert_eq!(h[1].peer_address, a("fe80::2"));
    assert_eq!(h[1].interface_id, Some(&b"port-7"[..]));
    assert_eq!(h[1].relay_source_port, None);
    let lla = r
        .hop_options(1)
        .find(|o| o.code == opt::CLIENT_LINKLAYER_ADDR)
        .unwrap();
    assert_eq!(lla.data, [0, 1, 1, 2, 3, 4, 5, 6]);
    assert_eq!(r.inner(), inner);
    assert_eq!(r.message().unwrap().transaction_id(), 9);
}

#[test]
fn relay_reply_echoes_interface_id_and_source_port() {
    let hops = [
        RelayHop {
            msg_type: MessageType::RelayForw,
            hop_count: 1,
            link_address: Ipv6Addr::UNSPECIFIED,
            peer_address: a("2001:db8::2"),
            interface_id: None,
            relay_source_port: Some(1067),
        },
        RelayHop {
            msg_type: MessageType::RelayForw,
            hop_count: 0,
            link_address: a("2001:db8:1::1"),
            peer_address: a("fe80::1234"),
            interface_id: Some(b"eth1"),
            relay_source_port: None,
        },
    ];
    let reply = msg(7, 5, &[raw(opt::CLIENTID, DUID)]);
    let mut out = Vec::new();
    wrap_relay_reply(&hops, &reply, &mut out);
    // Hand-built expectation.
    let mut lvl1 = vec![13, 0];
    lvl1.extend(a("2001:db8:1::1").octets());
    lvl1.extend(a("fe80::1234").octets());
    lvl1.extend(raw(opt::INTERFACE_ID, b"eth1"));
    lvl1.extend(raw(opt::RELAY_MSG, &reply));
    let mut lvl0 = vec![13, 1];
    lvl0.extend(Ipv6Addr::UNSPECIFIED.octets());
    lvl0.extend(a("2001:db8::2").octets());
    lvl0.extend(raw(opt::RELAY_SOURCE_PORT, &1067u16.to_be_bytes()));
    lvl0.extend(raw(opt::RELAY_MSG, &lvl1));
    assert_eq!(out, lvl0);
    assert_eq!(
        unwrap_relays(&out).unwrap_err(),
        WireError::UnexpectedRelay(MessageType::RelayRepl)
    );
}

#[test]
fn wrap_relay_forw_matches_hand_built() {
    let inner = msg(1, 1, &[raw(opt::CLIENTID, DUID)]);
    let mut out = vec![0xff; 3];
    wrap_relay_forw(
        0,
        a("2001:db8::1"),
        a("fe80::2"),
        Some(b"x"),
        Some(547),
        &inner,
        &mut out,
    );
    let expected = relay_forw(
        0,
        &[
            raw(opt::INTERFACE_ID, b"x"),
            raw(opt::RELAY_SOURCE_PORT, &547u16.to_be_bytes()),
            raw(opt::RELAY_MSG, &inner),
        ],
    );
    assert_eq!(out, expected);
}

#[test]
fn error_messages_are_plain_words() {
    assert_eq!(
        WireError::Truncated.to_string(),
        "packet is shorter than its fixed header"
    );
    assert_eq!(
        WireError::DuplicateOption { code: 1 }.to_string(),
        "option 1 appears more than once"
    );
    assert_eq!(WireError::RelayTooDeep.kind(), "relay_too_deep");
    let e: Box<dyn std::error::Error> = Box::new(WireError::NotRelay);
    assert!(e.to_string().contains("not a relay"));
}

// ---------------------------------------------------------------------------------------------
// Structured model for property tests.

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StatusM {
    code: u16,
    msg: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AddrM {
    addr: Ipv6Addr,
    pref: u32,
    valid: u32,
    status: Option<StatusM>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PrefixM {
    prefix: Ipv6Addr,
    len: u8,
    pref: u32,
    valid: u32,
    status: Option<StatusM>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IaM<T> {
    iaid: u32,
    t1: u32,
    t2: u32,
    items: Vec<T>,
    status: Option<StatusM>,
}

#[derive(Debug, Clone)]
enum Top {
    ClientId(Vec<u8>),
    ServerId(Vec<u8>),
    IaNa(IaM<AddrM>),
    IaPd(IaM<PrefixM>),
    Oro(Vec<u16>),
    Elapsed(u16),
    RapidCommit,
    ReconfAccept,
    Status(StatusM),
    Preference(u8),
    Unknown(u16, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Model {
    msg_type: u8,
    xid: u32,
    tops: Vec<Top>,
}

/// Normalised view used to compare the model, our parser and dhcproto (IA lists sorted, since
/// dhcproto does not keep the order of same-code options).
#[derive(Debug, PartialEq, Eq)]
struct Norm {
    msg_type: u8,
    xid: u32,
    client_id: Option<Vec<u8>>,
    server_id: Option<Vec<u8>>,
    ia_nas: Vec<IaM<AddrM>>,
    ia_pds: Vec<IaM<PrefixM>>,
    oro: Option<Vec<u16>>,
    elapsed: Option<u16>,
    rapid_commit: bool,
    reconf_accept: bool,
    status: Option<StatusM>,
    preference: Option<u8>,
    option_count: usize,
}

fn status_s() -> impl Strategy<Value = StatusM> {
    (prop_oneof![0u16..=6, any::<u16>()], "\\PC{0,12}")
        .prop_map(|(code, msg)| StatusM { code, msg })
}

fn addr_s() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn ia_na_s() -> impl Strategy<Value = IaM<AddrM>> {
    let addr = (
        addr_s(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(status_s()),
    )
        .prop_map(|(addr, pref, valid, status)| AddrM {
            addr,
            pref,
            valid,
            status,
        });
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(addr, 0..=3),
        proptest::option::of(status_s()),
    )
        .prop_map(|(iaid, t1, t2, items, status)| IaM {
            iaid,
            t1,
            t2,
            items,
            status,
        })
}

fn ia_pd_s() -> impl Strategy<Value = IaM<PrefixM>> {
    let prefix = (
        addr_s(),
        0u8..=128,
        any::<u32>(),
        any::<u32>(),
        proptest::option::of(status_s()),
    )
        .prop_map(|(prefix, len, pref, valid, status)| PrefixM {
            prefix,
            len,
            pref,
            valid,
            status,
        });
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(prefix, 0..=3),
        proptest::option::of(status_s()),
    )
        .prop_map(|(iaid, t1, t2, items, status)| IaM {
            iaid,
            t1,
            t2,
            items,
            status,
        })
}

fn duid_s() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 3..=130)
}

fn model_s() -> impl Strategy<Value = Model> {
    (
        (
            1u8..=11,
            0u32..=0xff_ffff,
            duid_s(),
            proptest::option::of(duid_s()),
        ),
        proptest::collection::vec(ia_na_s(), 0..=4),
        proptest::collection::vec(ia_pd_s(), 0..=4),
        (
            proptest::option::of(proptest::collection::vec(any::<u16>(), 0..8)),
            proptest::option::of(any::<u16>()),
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(status_s()),
            proptest::option::of(any::<u8>()),
            proptest::collection::vec(
                (1000u16..2000, proptest::collection::vec(any::<u8>(), 0..16)),
                0..=2,
            ),
        ),
    )
        .prop_flat_map(
            |((t, xid, cid, sid), nas, pds, (oro, el, rc, ra, st, pref, unk))| {
                let mut tops = vec![Top::ClientId(cid)];
                tops.extend(sid.map(Top::ServerId));
                tops.extend(nas.into_iter().map(Top::IaNa));
                tops.extend(pds.into_iter().map(Top::IaPd));
                tops.extend(oro.map(Top::Oro));
                tops.extend(el.map(Top::Elapsed));
                if rc {
                    tops.push(Top::RapidCommit);
                }
                if ra {
                    tops.push(Top::ReconfAccept);
                }
                tops.extend(st.map(Top::Status));
                tops.extend(pref.map(Top::Preference));
                tops.extend(unk.into_iter().map(|(c, d)| Top::Unknown(c, d)));
                Just(tops).prop_shuffle().prop_map(move |tops| Model {
                    msg_type: t,
                    xid,
                    tops,
                })
            },
        )
}

fn write_status(w: &mut OptionWriter<'_>, s: &StatusM) {
    match StatusCode::from_u16(s.code) {
        Some(code) => w.status(code, &s.msg),
        None => w.status_raw(s.code, s.msg.as_bytes()),
    }
}

fn emit(m: &Model, buf: &mut Vec<u8>) {
    let mut w = MessageWriter::new(buf, MessageType::from_u8(m.msg_type), m.xid);
    for t in &m.tops {
        match t {
            Top::ClientId(d) => w.client_id(d),
            Top::ServerId(d) => w.server_id(d),
            Top::IaNa(ia) => w.ia_na(ia.iaid, ia.t1, ia.t2, |w| {
                for ad in &ia.items {
                    w.ia_addr(ad.addr, ad.pref, ad.valid, |w| {
                        if let Some(s) = &ad.status {
                            write_status(w, s);
                        }
                    });
                }
                if let Some(s) = &ia.status {
                    write_status(w, s);
                }
            }),
            Top::IaPd(ia) => w.ia_pd(ia.iaid, ia.t1, ia.t2, |w| {
                if let Some(s) = &ia.status {
                    write_status(w, s);
                }
                for p in &ia.items {
                    w.ia_prefix(p.prefix, p.len, p.pref, p.valid, |w| {
                        if let Some(s) = &p.status {
                            write_status(w, s);
                        }
                    });
                }
            }),
            Top::Oro(codes) => w.oro(codes),
            Top::Elapsed(e) => w.elapsed_time(*e),
            Top::RapidCommit => w.rapid_commit(),
            Top::ReconfAccept => w.reconfigure_accept(),
            Top::Status(s) => write_status(&mut w, s),
            Top::Preference(p) => w.preference(*p),
            Top::Unknown(c, d) => w.option(*c, d),
        }
    }
    assert!(!w.overflowed());
}

fn status_of(s: Option<tandem_core::wire::Status<'_>>) -> Option<StatusM> {
    s.map(|s| StatusM {
        code: s.code,
        msg: String::from_utf8(s.message.to_vec()).unwrap(),
    })
}

/// Our parser's view, in wire order.
fn ours(m: &Message<'_>) -> Norm {
    Norm {
        msg_type: m.msg_type().to_u8(),
        xid: m.transaction_id(),
        client_id: m.client_id().map(<[u8]>::to_vec),
        server_id: m.server_id().map(<[u8]>::to_vec),
        ia_nas: m
            .ia_nas()
            .map(|ia| IaM {
                iaid: ia.iaid,
                t1: ia.t1,
                t2: ia.t2,
                items: ia
                    .addresses()
                    .map(|ad| AddrM {
                        addr: ad.addr,
                        pref: ad.preferred_secs,
                        valid: ad.valid_secs,
                        status: status_of(ad.status()),
                    })
                    .collect(),
                status: status_of(ia.status()),
            })
            .collect(),
        ia_pds: m
            .ia_pds()
            .map(|ia| IaM {
                iaid: ia.iaid,
                t1: ia.t1,
                t2: ia.t2,
                items: ia
                    .prefixes()
                    .map(|p| PrefixM {
                        prefix: p.prefix,
                        len: p.prefix_len,
                        pref: p.preferred_secs,
                        valid: p.valid_secs,
                        status: status_of(p.status()),
                    })
                    .collect(),
                status: status_of(ia.status()),
            })
            .collect(),
        oro: m.has_oro().then(|| m.oro().collect()),
        elapsed: m.elapsed_time(),
        rapid_commit: m.rapid_commit(),
        reconf_accept: m.reconfigure_accept(),
        status: status_of(m.status()),
        preference: m.preference(),
        option_count: m.options().count(),
    }
}

/// The model's view, in emission order.
fn expected(m: &Model) -> Norm {
    let mut n = Norm {
        msg_type: m.msg_type,
        xid: m.xid,
        client_id: None,
        server_id: None,
        ia_nas: vec![],
        ia_pds: vec![],
        oro: None,
        elapsed: None,
        rapid_commit: false,
        reconf_accept: false,
        status: None,
        preference: None,
        option_count: m.tops.len(),
    };
    for t in &m.tops {
        match t {
            Top::ClientId(d) => n.client_id = Some(d.clone()),
            Top::ServerId(d) => n.server_id = Some(d.clone()),
            Top::IaNa(ia) => n.ia_nas.push(ia.clone()),
            Top::IaPd(ia) => n.ia_pds.push(ia.clone()),
            Top::Oro(c) => n.oro = Some(c.clone()),
            Top::Elapsed(e) => n.elapsed = Some(*e),
            Top::RapidCommit => n.rapid_commit = true,
            Top::ReconfAccept => n.reconf_accept = true,
            Top::Status(s) => n.status = Some(s.clone()),
            Top::Preference(p) => n.preference = Some(*p),
            Top::Unknown(..) => {}
        }
    }
    n
}

fn sorted(mut n: Norm) -> Norm {
    for ia in &mut n.ia_nas {
        ia.items.sort();
    }
    for ia in &mut n.ia_pds {
        ia.items.sort();
    }
    n.ia_nas.sort();
    n.ia_pds.sort();
    n
}

mod oracle {
    use super::*;
    use dhcproto::v6::{self, DhcpOption, DhcpOptions, OptionCode};

    fn status(opts: &DhcpOptions) -> Option<StatusM> {
        match opts.get(OptionCode::StatusCode) {
            Some(DhcpOption::StatusCode(s)) => Some(StatusM {
                code: u16::from(s.status),
                msg: s.msg.clone(),
            }),
            _ => None,
        }
    }

    fn all(opts: &DhcpOptions, code: OptionCode) -> impl Iterator<Item = &DhcpOption> {
        opts.get_all(code).unwrap_or_default().iter()
    }

    /// dhcproto's view of the message (normalised with [`sorted`]).
    pub fn view(m: &v6::Message) -> Norm {
        let opts = m.opts();
        let n = Norm {
            msg_type: u8::from(m.msg_type()),
            xid: m.xid_num(),
            client_id: match opts.get(OptionCode::ClientId) {
                Some(DhcpOption::ClientId(d)) => Some(d.clone()),
                _ => None,
            },
            server_id: match opts.get(OptionCode::ServerId) {
                Some(DhcpOption::ServerId(d)) => Some(d.clone()),
                _ => None,
            },
            ia_nas: all(opts, OptionCode::IANA)
                .filter_map(|o| match o {
                    DhcpOption::IANA(ia) => Some(IaM {
                        iaid: ia.id,
                        t1: ia.t1,
                        t2: ia.t2,
                        items: all(&ia.opts, OptionCode::IAAddr)
                            .filter_map(|o| match o {
                                DhcpOption::IAAddr(ad) => Some(AddrM {
                                    addr: ad.addr,
                                    pref: ad.preferred_life,
                                    valid: ad.valid_life,
                                    status: status(&ad.opts),
                                }),
                                _ => None,
                            })
                            .collect(),
                        status: status(&ia.opts),
                    }),
                    _ => None,
                })
                .collect(),
            ia_pds: all(opts, OptionCode::IAPD)
                .filter_map(|o| match o {
                    DhcpOption::IAPD(ia) => Some(IaM {
                        iaid: ia.id,
                        t1: ia.t1,
                        t2: ia.t2,
                        items: all(&ia.opts, OptionCode::IAPrefix)
                            .filter_map(|o| match o {
                                DhcpOption::IAPrefix(p) => Some(PrefixM {
                                    prefix: p.prefix_ip,
                                    len: p.prefix_len,
                                    pref: p.preferred_lifetime,
                                    valid: p.valid_lifetime,
                                    status: status(&p.opts),
                                }),
                                _ => None,
                            })
                            .collect(),
                        status: status(&ia.opts),
                    }),
                    _ => None,
                })
                .collect(),
            oro: match opts.get(OptionCode::ORO) {
                Some(DhcpOption::ORO(o)) => Some(o.opts.iter().map(|c| u16::from(*c)).collect()),
                _ => None,
            },
            elapsed: match opts.get(OptionCode::ElapsedTime) {
                Some(DhcpOption::ElapsedTime(e)) => Some(*e),
                _ => None,
            },
            rapid_commit: opts.get(OptionCode::RapidCommit).is_some(),
            reconf_accept: opts.get(OptionCode::ReconfAccept).is_some(),
            status: status(opts),
            preference: match opts.get(OptionCode::Preference) {
                Some(DhcpOption::Preference(p)) => Some(*p),
                _ => None,
            },
            option_count: opts.iter().count(),
        };
        sorted(n)
    }

    pub fn decode(bytes: &[u8]) -> v6::Message {
        use dhcproto::Decodable;
        v6::Message::decode(&mut dhcproto::Decoder::new(bytes)).expect("dhcproto decodes")
    }

    pub fn encode(m: &v6::Message) -> Vec<u8> {
        use dhcproto::Encodable;
        let mut out = Vec::new();
        m.encode(&mut dhcproto::Encoder::new(&mut out))
            .expect("dhcproto encodes");
        out
    }

    pub fn decode_relay(bytes: &[u8]) -> v6::RelayMessage {
        use dhcproto::Decodable;
        v6::RelayMessage::decode(&mut dhcproto::Decoder::new(bytes))
            .expect("dhcproto decodes relay")
    }

    pub fn relay_interface_id(r: &v6::RelayMessage) -> Option<Vec<u8>> {
        match r.opts().get(OptionCode::InterfaceId) {
            Some(DhcpOption::InterfaceId(i)) => Some(i.clone()),
            _ => None,
        }
    }
}

/// Calls every accessor of a parsed message (they must not panic) and checks that the typed
/// accessors agree with the raw option list.
fn exercise_message(m: &Message<'_>) {
    let _ = (
        m.msg_type(),
        m.transaction_id(),
        m.elapsed_time(),
        m.preference(),
    );
    let _ = (
        m.rapid_commit(),
        m.reconfigure_accept(),
        m.has_ia_ta(),
        m.server_unicast(),
    );
    assert_eq!(m.client_id(), m.first(opt::CLIENTID));
    assert_eq!(m.server_id(), m.first(opt::SERVERID));
    assert_eq!(
        m.ia_nas().count(),
        m.options().filter(|o| o.code == opt::IA_NA).count()
    );
    assert_eq!(
        m.ia_pds().count(),
        m.options().filter(|o| o.code == opt::IA_PD).count()
    );
    let _ = m.oro().count();
    let _ = m.status();
    for ia in m.ia_nas() {
        let _ = ia.status();
        for ad in ia.addresses() {
            let _ = (ad.addr, ad.status(), ad.options().count());
        }
    }
    for ia in m.ia_pds() {
        let _ = ia.status();
        for p in ia.prefixes() {
            assert!(p.prefix_len <= 128);
            let _ = (p.prefix, p.status(), p.options().count());
        }
    }
}

/// Feeds arbitrary bytes to every parser entry point; returns nothing, must not panic.
fn exercise(bytes: &[u8]) {
    if let Ok(m) = Message::parse(bytes) {
        exercise_message(&m);
    }
    let _ = RelayMessage::parse(bytes).map(|r| (r.hop(), r.options().count()));
    let _ = unwrap_relay_replies(bytes).map(|r| r.hops().len());
    if let Ok(r) = unwrap_relays(bytes) {
        assert!(r.hops().len() <= MAX_RELAY_DEPTH);
        for i in 0..=r.hops().len() {
            let _ = r.hop_options(i).count();
        }
        if let Ok(m) = r.message() {
            exercise_message(&m);
        }
        // Any accepted Relay-forw chain can be answered with a well-formed Relay-repl chain.
        let mut out = Vec::new();
        try_wrap_relay_reply(r.hops(), r.inner(), &mut out).expect("re-wrap fits");
        let back = unwrap_relay_replies(&out).expect("re-wrapped reply parses");
        assert_eq!(back.hops().len(), r.hops().len());
        assert_eq!(back.inner(), r.inner());
    }
}

fn relay_level_s() -> impl Strategy<Value = (u8, Ipv6Addr, Ipv6Addr, Option<Vec<u8>>, Option<u16>)>
{
    (
        0u8..=HOP_COUNT_LIMIT,
        addr_s(),
        addr_s(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(any::<u16>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// (1a) Arbitrary bytes never panic any entry point.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        exercise(&bytes);
    }

    /// (1b) Arbitrary option areas behind a plausible header never panic.
    #[test]
    fn arbitrary_options_never_panic(
        t in 0u8..=14,
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut b = vec![t, 1, 2, 3];
        if t == 12 || t == 13 {
            b.extend([0u8; 30]);
        }
        b.extend(tail);
        exercise(&b);
    }

    /// (1c) Structured mutations of valid (optionally relayed) messages never panic.
    #[test]
    fn mutated_valid_messages_never_panic(
        m in model_s(),
        levels in proptest::collection::vec(relay_level_s(), 0..3),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut b = Vec::new();
        emit(&m, &mut b);
        let mut tmp = Vec::new();
        for (hc, link, peer, iface, port) in &levels {
            try_wrap_relay_forw(*hc, *link, *peer, iface.as_deref(), *port, &b, &mut tmp).unwrap();
            std::mem::swap(&mut b, &mut tmp);
        }
        exercise(&b);
        for (i, x) in flips {
            let len = b.len().max(1);
            if let Some(byte) = b.get_mut(i % len) {
                *byte ^= x;
            }
        }
        exercise(&b);
        if let Some(c) = cut {
            let keep = c % (b.len() + 1);
            b.truncate(keep);
            exercise(&b);
        }
    }

    /// (2) Emit → parse round-trips every field, in order.
    #[test]
    fn emit_then_parse_round_trips(m in model_s()) {
        let mut b = Vec::new();
        emit(&m, &mut b);
        let parsed = Message::parse(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ours(&parsed), expected(&m));
        exercise_message(&parsed);
    }

    /// (3) Differential against dhcproto: it decodes what we emit to the same fields, and we
    /// parse what it re-encodes to the same fields.
    #[test]
    fn dhcproto_agrees(m in model_s()) {
        let mut b = Vec::new();
        emit(&m, &mut b);
        let theirs = oracle::decode(&b);
        prop_assert_eq!(oracle::view(&theirs), sorted(expected(&m)));

        let reencoded = oracle::encode(&theirs);
        prop_assert_eq!(reencoded.len(), b.len());
        let parsed = Message::parse(&reencoded).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(sorted(ours(&parsed)), sorted(expected(&m)));
    }

    /// (4) Relay-forw wrapping → unwrap gives the same hops and inner message; the Relay-repl
    /// built from those hops parses back with echoed Interface-Id and Relay Source Port.
    #[test]
    fn relay_round_trip(
        m in model_s(),
        levels in proptest::collection::vec(relay_level_s(), 1..=5),
    ) {
        let mut client = Vec::new();
        emit(&m, &mut client);
        // levels[0] is the first-hop relay (innermost).
        let mut b = client.clone();
        let mut tmp = Vec::new();
        for (hc, link, peer, iface, port) in &levels {
            try_wrap_relay_forw(*hc, *link, *peer, iface.as_deref(), *port, &b, &mut tmp).unwrap();
            std::mem::swap(&mut b, &mut tmp);
        }
        let r = unwrap_relays(&b).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(r.hops().len(), levels.len());
        for (hop, (hc, link, peer, iface, port)) in r.hops().iter().zip(levels.iter().rev()) {
            prop_assert_eq!(hop.msg_type, MessageType::RelayForw);
            prop_assert_eq!(hop.hop_count, *hc);
            prop_assert_eq!(hop.link_address, *link);
            prop_assert_eq!(hop.peer_address, *peer);
            prop_assert_eq!(hop.interface_id, iface.as_deref());
            prop_assert_eq!(hop.relay_source_port, *port);
        }
        prop_assert_eq!(r.inner(), &client[..]);
        let inner = r.message().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(ours(&inner), expected(&m));

        // Reply path.
        let mut reply = Vec::new();
        let mut w = MessageWriter::new(&mut reply, MessageType::Reply, m.xid);
        w.status(StatusCode::Success, "ok");
        let mut out = Vec::new();
        wrap_relay_reply(r.hops(), &reply, &mut out);
        let back = unwrap_relay_replies(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.hops().len(), levels.len());
        for (rep, fwd) in back.hops().iter().zip(r.hops()) {
            prop_assert_eq!(rep.msg_type, MessageType::RelayRepl);
            prop_assert_eq!(rep.hop_count, fwd.hop_count);
            prop_assert_eq!(rep.link_address, fwd.link_address);
            prop_assert_eq!(rep.peer_address, fwd.peer_address);
            prop_assert_eq!(rep.interface_id, fwd.interface_id);
            prop_assert_eq!(rep.relay_source_port, fwd.relay_source_port);
        }
        prop_assert_eq!(back.inner(), &reply[..]);

        // dhcproto agrees on every single level, Relay-forw and Relay-repl. dhcproto decodes
        // the Relay Message option as a relay message (and may misread a client message as
        // one), so each level is checked around a bare 34-byte relay header.
        let bare = [12u8; 34];
        for (hop, (hc, link, peer, iface, _)) in r.hops().iter().zip(levels.iter().rev()) {
            wrap_relay_forw(hop.hop_count, hop.link_address, hop.peer_address, hop.interface_id,
                hop.relay_source_port, &bare, &mut tmp);
            let theirs = oracle::decode_relay(&tmp);
            prop_assert_eq!(u8::from(theirs.msg_type()), 12);
            prop_assert_eq!(theirs.hop_count(), *hc);
            prop_assert_eq!(theirs.link_addr(), *link);
            prop_assert_eq!(theirs.peer_addr(), *peer);
            prop_assert_eq!(oracle::relay_interface_id(&theirs), iface.clone());
            try_wrap_relay_reply(std::slice::from_ref(hop), &bare, &mut tmp).unwrap();
            let theirs = oracle::decode_relay(&tmp);
            prop_assert_eq!(u8::from(theirs.msg_type()), 13);
            prop_assert_eq!(theirs.hop_count(), *hc);
            prop_assert_eq!(theirs.link_addr(), *link);
            prop_assert_eq!(theirs.peer_addr(), *peer);
            prop_assert_eq!(oracle::relay_interface_id(&theirs), iface.clone());
        }
    }
}
