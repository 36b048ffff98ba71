//! Integration tests for the RFC 8156 failover wire codec: hand-assembled vectors checked
//! byte for byte against the digest's layout, round trips of every message type, malformed
//! input, stream framing and property tests.

#[path = "fixtures/frames.rs"]
mod fixtures;
#[path = "fixtures/options.rs"]
mod options;

use std::net::Ipv6Addr;

use fixtures::first_address;
use options::raw;
use proptest::prelude::*;
use tandem_core::failover::wire::{
    Binding, BindingContent, BindingStatus, ConnectFlags, ConnectOptions, DnsFlags, DnsRemovalInfo,
    FAILOVER_EPOCH_UNIX, FAILOVER_HEADER_LEN, FAILOVER_PORT, FRAMER_BUFFER_LEN, FailoverMessage,
    FailoverStatusCode, FailoverType, FailoverWireError, FailoverWriter, Framer, LeaseOptions,
    LeaseOptionsExt, MAX_FRAME_LEN, ProtocolVersion, ServerFlags, ServerState, StateOptions,
    absolute_clt_time, fopt, from_failover_time, to_failover_time, write_frame,
};
use tandem_core::wire::{Status, WireError};

// ---------------------------------------------------------------------------------------------
// Hand-built byte helpers (independent of the writer under test).

fn msg(t: u8, xid: u32, sent: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let x = xid.to_be_bytes();
    let mut v = vec![t, x[1], x[2], x[3]];
    v.extend(sent.to_be_bytes());
    for o in opts {
        v.extend_from_slice(o);
    }
    v
}

fn iaaddr(addr: Ipv6Addr, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = addr.octets().to_vec();
    d.extend(100u32.to_be_bytes());
    d.extend(200u32.to_be_bytes());
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(fopt::IAADDR, &d)
}

fn iaprefix(prefix: Ipv6Addr, len: u8, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = 0u32.to_be_bytes().to_vec();
    d.extend(0u32.to_be_bytes());
    d.push(len);
    d.extend(prefix.octets());
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(fopt::IAPREFIX, &d)
}

fn ia_na(iaid: u32, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut d = iaid.to_be_bytes().to_vec();
    d.extend([0; 8]);
    for o in opts {
        d.extend_from_slice(o);
    }
    raw(fopt::IA_NA, &d)
}

fn bndupd_with_lease(lease: &[Vec<u8>]) -> Vec<u8> {
    let a = iaaddr(Ipv6Addr::LOCALHOST, lease);
    let cd = [raw(fopt::CLIENTID, DUID), ia_na(1, &[a])].concat();
    msg(24, 1, 2, &[raw(fopt::CLIENT_DATA, &cd)])
}

const DUID: &[u8] = &[0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];

// ---------------------------------------------------------------------------------------------
// Byte-exact vectors, assembled by hand from the digest (§1 header, §3 option formats, §4
// nesting).

/// CONNECT: header, then PROTOCOL_VERSION 1.0, MCLT 3600, KEEPALIVE_TIME 60,
/// MAX_UNACKED_BNDUPD 100, CONNECT_FLAGS F, RELATIONSHIP_NAME "dc1".
const CONNECT: &[u8] = &[
    31, 0x00, 0x00, 0x2A, // msg-type CONNECT, transaction-id 42
    0x2E, 0x8A, 0x5B, 0x00, // sent-time
    0x00, 0x7F, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, // OPTION_F_PROTOCOL_VERSION 1.0
    0x00, 0x7A, 0x00, 0x04, 0x00, 0x00, 0x0E, 0x10, // OPTION_F_MCLT 3600
    0x00, 0x80, 0x00, 0x04, 0x00, 0x00, 0x00, 0x3C, // OPTION_F_KEEPALIVE_TIME 60
    0x00, 0x79, 0x00, 0x04, 0x00, 0x00, 0x00, 0x64, // OPTION_F_MAX_UNACKED_BNDUPD 100
    0x00, 0x73, 0x00, 0x02, 0x00, 0x01, // OPTION_F_CONNECT_FLAGS FIXED_PD_LENGTH
    0x00, 0x82, 0x00, 0x03, b'd', b'c', b'1', // OPTION_F_RELATIONSHIP_NAME "dc1"
];

/// BNDUPD for one client: CLIENT_DATA { CLIENTID, LQ_BASE_TIME, IA_NA { IAADDR {
/// BINDING_STATUS ACTIVE, START_TIME_OF_STATE, CLT_TIME, PARTNER_LIFETIME, EXPIRATION_TIME } } }.
const BNDUPD: &[u8] = &[
    24, 0x00, 0x01, 0x00, // msg-type BNDUPD, transaction-id 256
    0x00, 0x00, 0x10, 0x00, // sent-time 4096
    0x00, 0x2D, 0x00, 0x67, // OPTION_CLIENT_DATA, 103 bytes
    0x00, 0x01, 0x00, 0x0A, // . OPTION_CLIENTID, 10 bytes
    0x00, 0x03, 0x00, 0x01, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, // . . DUID-LL
    0x00, 0x64, 0x00, 0x04, 0x00, 0x00, 0x10, 0x00, // . OPTION_LQ_BASE_TIME 4096
    0x00, 0x03, 0x00, 0x4D, // . OPTION_IA_NA, 77 bytes
    0x00, 0x00, 0x00, 0x01, // . . IAID 1
    0x00, 0x00, 0x07, 0x08, // . . T1 1800
    0x00, 0x00, 0x0B, 0xB8, // . . T2 3000
    0x00, 0x05, 0x00, 0x3D, // . . OPTION_IAADDR, 61 bytes
    0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // . . . 2001:db8::10
    0x00, 0x00, 0x0E, 0x10, // . . . preferred 3600
    0x00, 0x00, 0x1C, 0x20, // . . . valid 7200
    0x00, 0x72, 0x00, 0x01, 0x01, // . . . OPTION_F_BINDING_STATUS ACTIVE
    0x00, 0x85, 0x00, 0x04, 0x00, 0x00, 0x0F, 0xF0, // . . . OPTION_F_START_TIME_OF_STATE
    0x00, 0x2E, 0x00, 0x04, 0x00, 0x00, 0x00, 0x10, // . . . OPTION_CLT_TIME 16 s ago
    0x00, 0x7B, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, // . . . OPTION_F_PARTNER_LIFETIME
    0x00, 0x78, 0x00, 0x04, 0x00, 0x00, 0x2D, 0x00, // . . . OPTION_F_EXPIRATION_TIME
];

/// BNDREPLY to [`BNDUPD`] rejecting the address: CLIENT_DATA { CLIENTID, IA_NA { IAADDR {
/// STATUS_CODE 19, BINDING_STATUS ACTIVE, PARTNER_LIFETIME_SENT } } }.
const BNDREPLY: &[u8] = &[
    25, 0x00, 0x01, 0x00, // msg-type BNDREPLY, same transaction-id
    0x00, 0x00, 0x10, 0x05, // sent-time
    0x00, 0x2D, 0x00, 0x4F, // OPTION_CLIENT_DATA, 79 bytes
    0x00, 0x01, 0x00, 0x0A, // . OPTION_CLIENTID
    0x00, 0x03, 0x00, 0x01, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, // . . DUID-LL
    0x00, 0x03, 0x00, 0x3D, // . OPTION_IA_NA, 61 bytes
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x07, 0x08, 0x00, 0x00, 0x0B, 0xB8, // . . IAID T1 T2
    0x00, 0x05, 0x00, 0x2D, // . . OPTION_IAADDR, 45 bytes
    0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // . . . 2001:db8::10
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // . . . lifetimes 0
    0x00, 0x0D, 0x00, 0x04, 0x00, 0x13, b'o', b'd', // . . . OPTION_STATUS_CODE 19 "od"
    0x00, 0x72, 0x00, 0x01, 0x01, // . . . OPTION_F_BINDING_STATUS ACTIVE
    0x00, 0x7C, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, // . . . OPTION_F_PARTNER_LIFETIME_SENT
];

/// BNDUPD moving a delegable prefix to the secondary: top-level IAPREFIX { LQ_BASE_TIME,
/// BINDING_STATUS FREE-BACKUP, START_TIME_OF_STATE }.
const POOL_BNDUPD: &[u8] = &[
    24, 0x00, 0x00, 0x07, // msg-type BNDUPD, transaction-id 7
    0x00, 0x00, 0x00, 0x09, // sent-time 9
    0x00, 0x1A, 0x00, 0x2E, // OPTION_IAPREFIX, 46 bytes
    0, 0, 0, 0, 0, 0, 0, 0,    // . lifetimes 0
    0x38, // . prefix-length 56
    0x20, 0x01, 0x0D, 0xB8, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, // . 2001:db8:1:200::
    0x00, 0x64, 0x00, 0x04, 0x00, 0x00, 0x00, 0x09, // . OPTION_LQ_BASE_TIME
    0x00, 0x72, 0x00, 0x01, 0x06, // . OPTION_F_BINDING_STATUS FREE-BACKUP
    0x00, 0x85, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08, // . OPTION_F_START_TIME_OF_STATE
];

const ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

#[test]
fn connect_is_byte_exact() {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, 42, 0x2E8A_5B00);
    w.protocol_version(ProtocolVersion::V1_0);
    w.mclt(3600);
    w.keepalive_time(60);
    w.max_unacked_bndupd(100);
    w.connect_flags(ConnectFlags::FIXED_PD_LENGTH);
    w.relationship_name("dc1");
    assert_eq!(w.as_bytes(), CONNECT);

    let m = FailoverMessage::parse(CONNECT).unwrap();
    assert_eq!(m.msg_type(), FailoverType::Connect);
    assert_eq!(m.transaction_id(), 42);
    assert_eq!(m.sent_time(), 0x2E8A_5B00);
    let c = m.connect();
    assert_eq!(
        c,
        ConnectOptions {
            protocol_version: Some(ProtocolVersion::V1_0),
            mclt: Some(3600),
            keepalive_time: Some(60),
            max_unacked_bndupd: Some(100),
            connect_flags: Some(ConnectFlags(1)),
            relationship_name: Some("dc1"),
        }
    );
    assert!(c.connect_flags.unwrap().fixed_pd_length());
    assert_eq!(m.state(), StateOptions::default());
    assert!(m.status().is_none() && m.binding().is_none());

    // The same through the group writer.
    let mut buf2 = Vec::new();
    let mut w = FailoverWriter::new(&mut buf2, FailoverType::Connect, 42, 0x2E8A_5B00);
    w.connect_options(&c);
    assert_eq!(w.as_bytes(), CONNECT);
}

#[test]
fn bndupd_is_byte_exact() {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, 256, 4096);
    w.client_data(|b| {
        b.client_id(DUID);
        b.lq_base_time(4096);
        b.ia_na(1, 1800, 3000, |ia| {
            ia.ia_addr(ADDR, 3600, 7200, |l| {
                l.binding_status(BindingStatus::Active);
                l.start_time_of_state(0x0FF0);
                l.clt_time(16);
                l.partner_lifetime(0x0001_0000);
                l.expiration_time(0x2D00);
            })
        });
    });
    assert!(!w.overflowed());
    assert_eq!(w.as_bytes(), BNDUPD);

    let m = FailoverMessage::parse(BNDUPD).unwrap();
    assert_eq!(m.msg_type(), FailoverType::BndUpd);
    assert_eq!(m.transaction_id(), 256);
    assert!(m.pool_prefix().is_none());
    let b = m.client_binding().unwrap();
    assert_eq!(b.client_id(), Some(DUID));
    assert_eq!(b.lq_base_time(), Some(4096));
    assert_eq!(b.clt_time(), None);
    assert!(b.status().is_none() && b.vss().is_none());
    assert_eq!(b.ia_pds().count(), 0);
    assert_eq!(b.ia_tas().count(), 0);
    let ias: Vec<_> = b.ia_nas().collect();
    assert_eq!(ias.len(), 1);
    assert_eq!((ias[0].iaid, ias[0].t1, ias[0].t2), (1, 1800, 3000));
    let addrs: Vec<_> = ias[0].addresses().collect();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].addr, ADDR);
    assert_eq!((addrs[0].preferred_secs, addrs[0].valid_secs), (3600, 7200));
    let l = addrs[0].lease_options();
    assert_eq!(
        l,
        LeaseOptions {
            binding_status: Some(BindingStatus::Active),
            start_time_of_state: Some(0x0FF0),
            clt_time: Some(16),
            partner_lifetime: Some(0x0001_0000),
            expiration_time: Some(0x2D00),
            ..LeaseOptions::default()
        }
    );
    assert_eq!(
        absolute_clt_time(b.lq_base_time().unwrap(), l.clt_time.unwrap()),
        4080
    );

    // Writing the parsed lease back gives the same bytes.
    let mut buf2 = Vec::new();
    let mut w = FailoverWriter::new(&mut buf2, FailoverType::BndUpd, 256, 4096);
    w.client_data(|bw| {
        bw.client_id(DUID);
        bw.lq_base_time(4096);
        bw.ia_na(1, 1800, 3000, |ia| {
            ia.ia_addr(ADDR, 3600, 7200, |lw| lw.lease_options(&l))
        });
    });
    assert_eq!(w.as_bytes(), BNDUPD);
}

#[test]
fn bndreply_is_byte_exact() {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::BndReply, 256, 4101);
    w.client_data(|b| {
        b.client_id(DUID);
        b.ia_na(1, 1800, 3000, |ia| {
            ia.ia_addr(ADDR, 0, 0, |l| {
                l.status_code(FailoverStatusCode::OutdatedBindingInformation, "od");
                l.binding_status(BindingStatus::Active);
                l.partner_lifetime_sent(0x0001_0000);
            })
        });
    });
    assert_eq!(w.as_bytes(), BNDREPLY);

    let m = FailoverMessage::parse(BNDREPLY).unwrap();
    assert_eq!(m.msg_type(), FailoverType::BndReply);
    assert_eq!(
        m.transaction_id(),
        FailoverMessage::parse(BNDUPD).unwrap().transaction_id()
    );
    let b = m.client_binding().unwrap();
    let l = first_address(&b).lease_options();
    let st = l.status.unwrap();
    assert_eq!(
        FailoverStatusCode::of(&st),
        Some(FailoverStatusCode::OutdatedBindingInformation)
    );
    assert_eq!(st.message, b"od");
    assert_eq!(l.partner_lifetime_sent, Some(0x0001_0000));
    assert_eq!(l.binding_status, Some(BindingStatus::Active));
    assert_eq!(l.partner_lifetime, None);
}

#[test]
fn pool_prefix_bndupd_is_byte_exact() {
    let prefix: Ipv6Addr = "2001:db8:1:200::".parse().unwrap();
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, 7, 9);
    w.pool_prefix(prefix, 56, 0, 0, |l| {
        l.lq_base_time(9);
        l.binding_status(BindingStatus::FreeBackup);
        l.start_time_of_state(8);
    });
    assert_eq!(w.as_bytes(), POOL_BNDUPD);

    let m = FailoverMessage::parse(POOL_BNDUPD).unwrap();
    assert!(m.client_binding().is_none());
    let Some(BindingContent::Prefix(p)) = m.binding() else {
        panic!("expected a pool prefix");
    };
    assert_eq!((p.prefix, p.prefix_len), (prefix, 56));
    let l = p.lease_options();
    assert_eq!(l.binding_status, Some(BindingStatus::FreeBackup));
    assert_eq!(l.lq_base_time, Some(9));
    assert_eq!(l.start_time_of_state, Some(8));
    assert_eq!(m.pool_prefix(), Some(p));
}

// ---------------------------------------------------------------------------------------------
// Round trips of every message type.

fn parse_written(
    t: FailoverType,
    body: impl FnOnce(&mut FailoverWriter<'_>),
) -> (Vec<u8>, FailoverType, u32, u32) {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, t, 0x00AB_CDEF, 0xDEAD_BEEF);
    body(&mut w);
    assert!(!w.overflowed());
    let m = FailoverMessage::parse(&buf).unwrap();
    let (ty, xid, sent) = (m.msg_type(), m.transaction_id(), m.sent_time());
    (buf, ty, xid, sent)
}

#[test]
fn every_type_round_trips_its_header() {
    for t in FailoverType::ALL {
        let (buf, ty, xid, sent) = parse_written(t, |_| {});
        assert_eq!(buf.len(), FAILOVER_HEADER_LEN);
        assert_eq!((ty, xid, sent), (t, 0x00AB_CDEF, 0xDEAD_BEEF));
        assert_eq!(buf[0], t.to_u8());
    }
    // The transaction id is 24 bits: higher bits are dropped.
    let mut buf = Vec::new();
    FailoverWriter::new(&mut buf, FailoverType::Contact, 0xFF12_3456, 0);
    assert_eq!(
        FailoverMessage::parse(&buf).unwrap().transaction_id(),
        0x12_3456
    );
}

#[test]
fn connectreply_accept_and_reject_round_trip() {
    let accept = ConnectOptions {
        protocol_version: Some(ProtocolVersion { major: 1, minor: 1 }),
        mclt: Some(1800),
        keepalive_time: Some(30),
        max_unacked_bndupd: Some(10),
        connect_flags: Some(ConnectFlags(0)),
        relationship_name: None,
    };
    let (buf, ..) = parse_written(FailoverType::ConnectReply, |w| w.connect_options(&accept));
    let m = FailoverMessage::parse(&buf).unwrap();
    assert_eq!(m.msg_type(), FailoverType::ConnectReply);
    assert_eq!(m.connect(), accept);
    assert!(m.status().is_none());

    let (buf, ..) = parse_written(FailoverType::ConnectReply, |w| {
        w.status_code(FailoverStatusCode::ExcessiveTimeSkew, "clock off by 9 s")
    });
    let m = FailoverMessage::parse(&buf).unwrap();
    assert_eq!(m.connect(), ConnectOptions::default());
    let st = m.status().unwrap();
    assert_eq!(st.code, 22);
    assert_eq!(st.message_lossy(), "clock off by 9 s");

    let (buf, ..) = parse_written(FailoverType::ConnectReply, |w| {
        w.status_code(FailoverStatusCode::NotSupported, "")
    });
    assert_eq!(
        FailoverMessage::parse(&buf)
            .unwrap()
            .status()
            .and_then(|s| FailoverStatusCode::of(&s)),
        Some(FailoverStatusCode::NotSupported)
    );
}

#[test]
fn disconnect_round_trips() {
    let (buf, ..) = parse_written(FailoverType::Disconnect, |w| {
        w.status_code(FailoverStatusCode::ServerShuttingDown, "maintenance")
    });
    let m = FailoverMessage::parse(&buf).unwrap();
    assert_eq!(m.msg_type(), FailoverType::Disconnect);
    let st = m.status().unwrap();
    assert_eq!(
        FailoverStatusCode::of(&st),
        Some(FailoverStatusCode::ServerShuttingDown)
    );
    assert_eq!(st.message, b"maintenance");
}

#[test]
fn state_round_trips_with_startup_bit() {
    let s = StateOptions {
        server_state: Some(ServerState::PartnerDown),
        server_flags: Some(ServerFlags::STARTUP | ServerFlags::COMMUNICATED),
        start_time_of_state: Some(to_failover_time(1_700_000_000)),
        partner_down_time: Some(to_failover_time(1_700_000_000)),
    };
    let (buf, ..) = parse_written(FailoverType::State, |w| w.state_options(&s));
    let m = FailoverMessage::parse(&buf).unwrap();
    assert_eq!(m.state(), s);
    let flags = m.state().server_flags.unwrap();
    assert!(flags.startup() && flags.communicated() && !flags.ack_startup());
    assert_eq!(
        from_failover_time(m.state().start_time_of_state.unwrap(), 1_700_000_100),
        1_700_000_000
    );
    // Every state value survives.
    for v in 1..=10u8 {
        let st = ServerState::from_u8(v).unwrap();
        let (buf, ..) = parse_written(FailoverType::State, |w| {
            w.server_state(st);
            w.server_flags(ServerFlags::default());
            w.start_time_of_state(5);
        });
        assert_eq!(
            FailoverMessage::parse(&buf).unwrap().state().server_state,
            Some(st)
        );
    }
}

#[test]
fn optionless_messages_round_trip() {
    for t in [
        FailoverType::PoolReq,
        FailoverType::PoolResp,
        FailoverType::UpdReq,
        FailoverType::UpdReqAll,
        FailoverType::UpdDone,
        FailoverType::Contact,
    ] {
        let (buf, ty, ..) = parse_written(t, |_| {});
        let m = FailoverMessage::parse(&buf).unwrap();
        assert_eq!(ty, t);
        assert_eq!(m.options().count(), 0);
        assert!(m.binding().is_none());
    }
}

#[test]
fn full_client_binding_round_trips() {
    let dns = DnsRemovalInfo {
        host_name: Some(b"\x04host\x00"),
        zone_name: Some(b"\x07example\x00"),
        flags: Some(DnsFlags::USING_REQUESTED_FQDN | DnsFlags::FWD_UPTODATE),
    };
    let expired = LeaseOptions {
        binding_status: Some(BindingStatus::Expired),
        start_time_of_state: Some(10),
        state_expiration_time: Some(20),
        clt_time: Some(30),
        partner_lifetime: Some(40),
        partner_raw_clt_time: Some(50),
        expiration_time: Some(60),
        client_fqdn: Some(b"\x01\x04host\x00"),
        dns_removal_info: Some(dns),
        ..LeaseOptions::default()
    };
    let pd_lease = LeaseOptions {
        binding_status: Some(BindingStatus::Active),
        start_time_of_state: Some(11),
        ..LeaseOptions::default()
    };
    let prefix: Ipv6Addr = "2001:db8:ff00::".parse().unwrap();
    let relay = [12u8, 0, 1, 2];
    for t in [FailoverType::BndUpd, FailoverType::BndReply] {
        let (buf, ..) = parse_written(t, |w| {
            w.client_data(|b| {
                b.client_id(DUID);
                b.lq_base_time(1000);
                b.vss(&[1, 0, 0, 0, 7]);
                b.reconfigure_data(77, &[9; 16]);
                b.lq_relay_data(Ipv6Addr::LOCALHOST, &relay);
                b.ia_na(1, 2, 3, |ia| {
                    ia.ia_addr(ADDR, 4, 5, |l| l.lease_options(&expired));
                    ia.ia_addr(Ipv6Addr::LOCALHOST, 6, 7, |_| {});
                });
                b.ia_ta(9, |ia| ia.ia_addr(ADDR, 1, 1, |_| {}));
                b.ia_pd(8, 0, 0, |ia| {
                    ia.ia_prefix(prefix, 56, 100, 200, |l| l.lease_options(&pd_lease));
                    ia.status_code(FailoverStatusCode::Success, "");
                });
            })
        });
        let m = FailoverMessage::parse(&buf).unwrap();
        assert_eq!(m.msg_type(), t);
        let b = m.client_binding().unwrap();
        assert_eq!(b.vss(), Some(&[1u8, 0, 0, 0, 7][..]));
        let r = b.reconfigure_data().unwrap();
        assert_eq!((r.time, r.key), (77, &[9u8; 16][..]));
        assert_eq!(b.lq_relay_data().unwrap().relay_message, relay);
        let na = b.ia_nas().next().unwrap();
        let addrs: Vec<_> = na.addresses().collect();
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[0].lease_options(), expired);
        assert_eq!(addrs[1].lease_options(), LeaseOptions::default());
        let ta = b.ia_tas().next().unwrap();
        assert_eq!(ta.iaid, 9);
        assert_eq!(ta.addresses().next().unwrap().addr, ADDR);
        let pd = b.ia_pds().next().unwrap();
        assert_eq!(pd.status().unwrap().code, 0);
        let p = pd.prefixes().next().unwrap();
        assert_eq!((p.prefix, p.prefix_len), (prefix, 56));
        assert_eq!(p.lease_options(), pd_lease);
    }
}

#[test]
fn client_data_level_status_and_leasequery_clt_time() {
    // BNDREPLY rejecting a whole update at the CLIENT_DATA level.
    let (buf, ..) = parse_written(FailoverType::BndReply, |w| {
        w.client_data(|b| {
            b.client_id(DUID);
            b.status_code(FailoverStatusCode::MissingBindingInformation, "no IA");
        })
    });
    let b = FailoverMessage::parse(&buf)
        .unwrap()
        .client_binding()
        .unwrap();
    assert_eq!(b.status().unwrap().code, 18);
    // A peer using the RFC 5007 placement of CLT_TIME is tolerated.
    let cd = [
        raw(fopt::CLIENTID, DUID),
        raw(fopt::CLT_TIME, &[0, 0, 0, 3]),
    ]
    .concat();
    let b = msg(24, 1, 1, &[raw(fopt::CLIENT_DATA, &cd)]);
    let m = FailoverMessage::parse(&b).unwrap();
    assert_eq!(m.client_binding().unwrap().clt_time(), Some(3));
}

#[test]
fn every_binding_status_round_trips() {
    for v in 1..=8u8 {
        let s = BindingStatus::from_u8(v).unwrap();
        let (buf, ..) = parse_written(FailoverType::BndUpd, |w| {
            w.pool_prefix(Ipv6Addr::UNSPECIFIED, 64, 0, 0, |l| l.binding_status(s))
        });
        let p = FailoverMessage::parse(&buf).unwrap().pool_prefix().unwrap();
        assert_eq!(p.lease_options().binding_status, Some(s));
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed input.

#[test]
fn truncated_header() {
    for n in 0..FAILOVER_HEADER_LEN {
        assert_eq!(
            FailoverMessage::parse(&CONNECT[..n]),
            Err(FailoverWireError::Truncated),
            "{n} bytes"
        );
    }
    assert!(FailoverMessage::parse(&CONNECT[..FAILOVER_HEADER_LEN]).is_ok());
}

#[test]
fn unknown_message_types() {
    for t in [0u8, 1, 7, 12, 13, 22, 23, 36, 255] {
        assert_eq!(
            FailoverMessage::parse(&msg(t, 0, 0, &[])),
            Err(FailoverWireError::UnknownMessageType(t))
        );
    }
}

#[test]
fn option_overruns_and_truncated_options() {
    // Top level: the last option's length runs past the end.
    for cut in 1..=3 {
        let b = &CONNECT[..CONNECT.len() - cut];
        assert_eq!(
            FailoverMessage::parse(b),
            Err(FailoverWireError::Option(WireError::OptionOverrun {
                code: 130
            }))
        );
    }
    // Fewer than 4 bytes of option header.
    let mut b = CONNECT.to_vec();
    b.extend([0, 1, 0]);
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::TruncatedOption))
    );
    // Every truncation of the BNDUPD fails (the outer CLIENT_DATA length is then wrong).
    for n in FAILOVER_HEADER_LEN + 1..BNDUPD.len() {
        assert!(FailoverMessage::parse(&BNDUPD[..n]).is_err(), "{n} bytes");
    }
    // Nested: the IAADDR claims one byte more than the IA_NA holds.
    let mut b = BNDUPD.to_vec();
    let at = BNDUPD.len() - 61 - 1; // low byte of the IAADDR length
    b[at] += 1;
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::OptionOverrun {
            code: 5
        }))
    );
    // Deepest level: a failover option inside the IAADDR overruns it.
    let mut b = BNDUPD.to_vec();
    let at = BNDUPD.len() - 8 + 3; // low byte of the EXPIRATION_TIME length
    b[at] = 5;
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::OptionOverrun {
            code: 120
        }))
    );
}

#[test]
fn bad_binding_status_and_server_state_values() {
    for v in [0u8, 9, 200] {
        assert_eq!(
            FailoverMessage::parse(&bndupd_with_lease(&[raw(fopt::F_BINDING_STATUS, &[v])])),
            Err(FailoverWireError::BadBindingStatus(v))
        );
        let mut b = POOL_BNDUPD.to_vec();
        let at = POOL_BNDUPD.len() - 8 - 1; // the FREE-BACKUP octet
        b[at] = v;
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(FailoverWireError::BadBindingStatus(v))
        );
    }
    for v in [0u8, 11, 255] {
        let b = msg(34, 1, 1, &[raw(fopt::F_SERVER_STATE, &[v])]);
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(FailoverWireError::BadServerState(v))
        );
    }
}

/// (code, correct length) of every fixed-size option.
const FIXED: &[(u16, usize)] = &[
    (fopt::F_BINDING_STATUS, 1),
    (fopt::F_CONNECT_FLAGS, 2),
    (fopt::F_DNS_FLAGS, 2),
    (fopt::F_EXPIRATION_TIME, 4),
    (fopt::F_MAX_UNACKED_BNDUPD, 4),
    (fopt::F_MCLT, 4),
    (fopt::F_PARTNER_LIFETIME, 4),
    (fopt::F_PARTNER_LIFETIME_SENT, 4),
    (fopt::F_PARTNER_DOWN_TIME, 4),
    (fopt::F_PARTNER_RAW_CLT_TIME, 4),
    (fopt::F_PROTOCOL_VERSION, 4),
    (fopt::F_KEEPALIVE_TIME, 4),
    (fopt::F_SERVER_FLAGS, 1),
    (fopt::F_SERVER_STATE, 1),
    (fopt::F_START_TIME_OF_STATE, 4),
    (fopt::F_STATE_EXPIRATION_TIME, 4),
    (fopt::CLT_TIME, 4),
    (fopt::LQ_BASE_TIME, 4),
];

#[test]
fn wrong_fixed_option_lengths() {
    for &(code, len) in FIXED {
        for bad in [0, len - 1, len + 1, len + 3] {
            if bad == len {
                continue;
            }
            let data = vec![1u8; bad];
            let want = Err(FailoverWireError::Option(WireError::BadOptionLength {
                code,
                len: bad,
            }));
            // At the top level.
            let b = msg(31, 1, 1, &[raw(code, &data)]);
            assert_eq!(FailoverMessage::parse(&b), want, "top-level {code}/{bad}");
            // Inside an IAADDR of a binding.
            let b = bndupd_with_lease(&[raw(code, &data)]);
            assert_eq!(FailoverMessage::parse(&b), want, "in IAADDR {code}/{bad}");
        }
        // The correct length is accepted (value 1 is valid for the enumerated ones).
        let b = msg(31, 1, 1, &[raw(code, &vec![1u8; len])]);
        assert!(FailoverMessage::parse(&b).is_ok(), "{code}");
    }
    // Minimum sizes.
    let cases: &[(u16, usize)] = &[
        (fopt::STATUS_CODE, 1),
        (fopt::F_RECONFIGURE_DATA, 3),
        (fopt::CLIENT_FQDN, 0),
        (fopt::VSS, 0),
        (fopt::LQ_RELAY_DATA, 15),
    ];
    for &(code, bad) in cases {
        let b = bndupd_with_lease(&[raw(code, &vec![0; bad])]);
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(FailoverWireError::Option(WireError::BadOptionLength {
                code,
                len: bad
            }))
        );
    }
    // DUIDs: 3..=130 bytes.
    for bad in [0usize, 2, 131] {
        let cd = raw(fopt::CLIENTID, &vec![0; bad]);
        let b = msg(24, 1, 1, &[raw(fopt::CLIENT_DATA, &cd)]);
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(FailoverWireError::Option(WireError::BadOptionLength {
                code: 1,
                len: bad
            }))
        );
    }
    // IA and IAADDR / IAPREFIX fixed parts.
    let cd = raw(fopt::IA_NA, &[0; 11]);
    assert_eq!(
        FailoverMessage::parse(&msg(24, 1, 1, &[raw(fopt::CLIENT_DATA, &cd)])),
        Err(FailoverWireError::Option(WireError::BadOptionLength {
            code: 3,
            len: 11
        }))
    );
    let cd = ia_na(1, &[raw(fopt::IAADDR, &[0; 23])]);
    assert_eq!(
        FailoverMessage::parse(&msg(24, 1, 1, &[raw(fopt::CLIENT_DATA, &cd)])),
        Err(FailoverWireError::Option(WireError::BadOptionLength {
            code: 5,
            len: 23
        }))
    );
    assert_eq!(
        FailoverMessage::parse(&msg(24, 1, 1, &[raw(fopt::IAPREFIX, &[0; 24])])),
        Err(FailoverWireError::Option(WireError::BadOptionLength {
            code: 26,
            len: 24
        }))
    );
    assert_eq!(
        FailoverMessage::parse(&msg(24, 1, 1, &[iaprefix(Ipv6Addr::UNSPECIFIED, 129, &[])])),
        Err(FailoverWireError::Option(WireError::BadPrefixLength(129)))
    );
}

#[test]
fn duplicates_bindings_and_text() {
    let b = msg(
        31,
        1,
        1,
        &[raw(fopt::F_MCLT, &[0; 4]), raw(fopt::F_MCLT, &[0; 4])],
    );
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::DuplicateOption {
            code: 122
        }))
    );
    let b = bndupd_with_lease(&[
        raw(fopt::F_BINDING_STATUS, &[1]),
        raw(fopt::F_BINDING_STATUS, &[2]),
    ]);
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::DuplicateOption {
            code: 114
        }))
    );
    let cd = raw(fopt::CLIENTID, DUID);
    let b = msg(
        24,
        1,
        1,
        &[raw(fopt::CLIENT_DATA, &cd), raw(fopt::CLIENT_DATA, &cd)],
    );
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::Option(WireError::DuplicateOption {
            code: 45
        }))
    );
    let p = iaprefix(Ipv6Addr::UNSPECIFIED, 64, &[]);
    let b = msg(24, 1, 1, &[p.clone(), p.clone()]);
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::MultipleBindings)
    );
    let b = msg(24, 1, 1, &[raw(fopt::CLIENT_DATA, &cd), p]);
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::MultipleBindings)
    );
    let b = msg(31, 1, 1, &[raw(fopt::F_RELATIONSHIP_NAME, &[b'a', 0xC3])]);
    assert_eq!(
        FailoverMessage::parse(&b),
        Err(FailoverWireError::BadText { code: 130 })
    );
    // Unknown options are skipped, at every level.
    let b = bndupd_with_lease(&[raw(999, &[1, 2, 3]), raw(fopt::F_BINDING_STATUS, &[3])]);
    let m = FailoverMessage::parse(&b).unwrap();
    let a = first_address(&m.client_binding().unwrap());
    assert_eq!(
        a.lease_options().binding_status,
        Some(BindingStatus::Released)
    );
}

// ---------------------------------------------------------------------------------------------
// Framing.

fn framed(msgs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        write_frame(m, &mut out).unwrap();
    }
    out
}

fn drain(f: &mut Framer, got: &mut Vec<Vec<u8>>) {
    while let Some(fr) = f.next_frame() {
        got.push(fr.unwrap().to_vec());
    }
}

#[test]
fn framing_constants_and_layout() {
    assert_eq!(FAILOVER_PORT, 647);
    assert_eq!(MAX_FRAME_LEN, 65535);
    assert_eq!(FRAMER_BUFFER_LEN, 65537);
    let out = framed(&[CONNECT]);
    assert_eq!(
        out[..2],
        u16::try_from(CONNECT.len()).unwrap().to_be_bytes()
    );
    assert_eq!(&out[2..], CONNECT);
    // write_frame appends; the writer's frame_into does the same.
    let mut buf = Vec::new();
    let w = FailoverWriter::new(&mut buf, FailoverType::Contact, 1, 2);
    let mut out2 = vec![0xEE];
    w.frame_into(&mut out2).unwrap();
    assert_eq!(out2, [0xEE, 0, 8, 35, 0, 0, 1, 0, 0, 0, 2]);
}

#[test]
fn framer_handles_every_split_point() {
    let msgs: [&[u8]; 4] = [CONNECT, BNDUPD, BNDREPLY, POOL_BNDUPD];
    let stream = framed(&msgs);
    for split in 0..=stream.len() {
        let mut f = Framer::new();
        let mut got = Vec::new();
        for part in [&stream[..split], &stream[split..]] {
            assert_eq!(f.push(part), part.len());
            drain(&mut f, &mut got);
        }
        assert_eq!(got, msgs.map(<[u8]>::to_vec), "split at {split}");
        assert_eq!(f.buffered(), 0);
    }
    // One byte at a time.
    let mut f = Framer::new();
    let mut got = Vec::new();
    for b in &stream {
        assert_eq!(f.push(std::slice::from_ref(b)), 1);
        drain(&mut f, &mut got);
    }
    assert_eq!(got, msgs.map(<[u8]>::to_vec));
    // Everything in one push.
    let mut f = Framer::default();
    assert_eq!(f.push(&stream), stream.len());
    let mut got = Vec::new();
    drain(&mut f, &mut got);
    assert_eq!(got.len(), 4);
    for (g, m) in got.iter().zip(msgs) {
        assert_eq!(FailoverMessage::parse(g).unwrap().as_bytes(), m);
    }
}

#[test]
fn framer_buffer_is_bounded_and_makes_progress() {
    // Two maximum-size frames: the first push takes exactly one.
    let big = {
        let mut m = vec![35, 0, 0, 1, 0, 0, 0, 0];
        m.resize(MAX_FRAME_LEN, 0);
        m
    };
    let stream = framed(&[&big, &big, CONNECT]);
    let mut f = Framer::new();
    let mut rest = &stream[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        let n = f.push(rest);
        assert!(n > 0);
        assert!(f.buffered() <= FRAMER_BUFFER_LEN);
        rest = &rest[n..];
        drain(&mut f, &mut got);
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].len(), MAX_FRAME_LEN);
    assert_eq!(got[2], CONNECT);
}

#[test]
fn framer_rejects_short_and_long_frames() {
    let mut f = Framer::new();
    f.push(&[0, 0]);
    assert_eq!(
        f.next_frame(),
        Some(Err(FailoverWireError::FrameTooShort { len: 0 }))
    );
    assert_eq!(f.push(CONNECT), 0);
    assert!(f.next_frame().unwrap().is_err());

    let mut f = Framer::with_max_frame_len(CONNECT.len() - 1);
    f.push(&framed(&[CONNECT]));
    assert_eq!(
        f.next_frame(),
        Some(Err(FailoverWireError::FrameTooLong { len: CONNECT.len() }))
    );
    assert_eq!(
        f.error(),
        Some(FailoverWireError::FrameTooLong { len: CONNECT.len() })
    );

    let mut out = Vec::new();
    assert_eq!(
        write_frame(&vec![0; MAX_FRAME_LEN + 1], &mut out),
        Err(FailoverWireError::TooLong)
    );
    assert!(out.is_empty());
}

#[test]
fn failover_time_conversion() {
    assert_eq!(FAILOVER_EPOCH_UNIX, 946_684_800);
    // 2024-01-01T00:00:00Z is 1704067200.
    assert_eq!(to_failover_time(1_704_067_200), 757_382_400);
    assert_eq!(
        from_failover_time(757_382_400, 1_704_067_000),
        1_704_067_200
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// Walks everything a parsed message exposes (must not panic).
fn touch_all(m: &FailoverMessage<'_>) -> usize {
    let mut n = m.options().count();
    let _ = (m.msg_type(), m.transaction_id(), m.sent_time(), m.status());
    let _ = (m.connect(), m.state(), m.first(fopt::F_MCLT));
    match m.binding() {
        Some(BindingContent::Client(b)) => n += touch_binding(&b),
        Some(BindingContent::Prefix(p)) => {
            n += usize::from(p.lease_options() != LeaseOptions::default())
        }
        None => {}
    }
    n
}

fn touch_binding(b: &Binding<'_>) -> usize {
    let mut n = b.options().count();
    let _ = (
        b.client_id(),
        b.lq_base_time(),
        b.clt_time(),
        b.vss(),
        b.status(),
    );
    let _ = (b.reconfigure_data(), b.lq_relay_data(), b.as_bytes());
    for ia in b.ia_nas() {
        let _ = ia.status();
        for a in ia.addresses() {
            n += usize::from(a.lease_options().binding_status.is_some());
        }
    }
    for ia in b.ia_tas() {
        let _ = ia.status();
        for a in ia.addresses() {
            n += usize::from(a.lease_options().clt_time.is_some());
        }
    }
    for ia in b.ia_pds() {
        for p in ia.prefixes() {
            n += usize::from(p.lease_options().status.is_some());
        }
    }
    n
}

/// Host name, zone name and flags of a DNS removal info.
type DnsM = (Option<Vec<u8>>, Option<Vec<u8>>, Option<u16>);

#[derive(Debug, Clone)]
struct LeaseM {
    status: Option<(u16, Vec<u8>)>,
    binding_status: Option<u8>,
    times: [Option<u32>; 7],
    fqdn: Option<Vec<u8>>,
    dns: Option<DnsM>,
    base: Option<u32>,
    vss: Option<Vec<u8>>,
}

impl LeaseM {
    fn opts(&self) -> LeaseOptions<'_> {
        let [a, b, c, d, e, f, g] = self.times;
        LeaseOptions {
            binding_status: self.binding_status.and_then(BindingStatus::from_u8),
            start_time_of_state: a,
            state_expiration_time: b,
            clt_time: c,
            partner_lifetime: d,
            partner_lifetime_sent: e,
            partner_raw_clt_time: f,
            expiration_time: g,
            status: self.status.as_ref().map(|(code, m)| Status {
                code: *code,
                message: m,
            }),
            client_fqdn: self.fqdn.as_deref(),
            dns_removal_info: self.dns.as_ref().map(|(h, z, f)| DnsRemovalInfo {
                host_name: h.as_deref(),
                zone_name: z.as_deref(),
                flags: f.map(DnsFlags),
            }),
            lq_base_time: self.base,
            vss: self.vss.as_deref(),
        }
    }
}

#[derive(Debug, Clone)]
enum IaM {
    Na(
        u32,
        u32,
        u32,
        Option<u16>,
        Vec<(Ipv6Addr, u32, u32, LeaseM)>,
    ),
    Ta(u32, Vec<(Ipv6Addr, u32, u32, LeaseM)>),
    Pd(u32, u32, u32, Vec<(Ipv6Addr, u8, u32, u32, LeaseM)>),
}

#[derive(Debug, Clone)]
struct ClientM {
    duid: Vec<u8>,
    base: Option<u32>,
    vss: Option<Vec<u8>>,
    reconf: Option<(u32, Vec<u8>)>,
    relay: Option<(Ipv6Addr, Vec<u8>)>,
    status: Option<(u16, Vec<u8>)>,
    ias: Vec<IaM>,
}

#[derive(Debug, Clone)]
enum BindingM {
    Client(ClientM),
    Prefix(Ipv6Addr, u8, u32, u32, LeaseM),
}

#[derive(Debug, Clone)]
struct MsgM {
    ty: FailoverType,
    xid: u32,
    sent: u32,
    version: Option<(u16, u16)>,
    u32s: [Option<u32>; 3],
    flags: Option<u16>,
    name: Option<String>,
    state: Option<u8>,
    server_flags: Option<u8>,
    state_times: [Option<u32>; 2],
    status: Option<(u16, Vec<u8>)>,
    binding: Option<BindingM>,
}

impl MsgM {
    fn connect(&self) -> ConnectOptions<'_> {
        ConnectOptions {
            protocol_version: self
                .version
                .map(|(major, minor)| ProtocolVersion { major, minor }),
            mclt: self.u32s[0],
            keepalive_time: self.u32s[1],
            max_unacked_bndupd: self.u32s[2],
            connect_flags: self.flags.map(ConnectFlags),
            relationship_name: self.name.as_deref(),
        }
    }

    fn state(&self) -> StateOptions {
        StateOptions {
            server_state: self.state.and_then(ServerState::from_u8),
            server_flags: self.server_flags.map(ServerFlags),
            start_time_of_state: self.state_times[0],
            partner_down_time: self.state_times[1],
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        let mut w = FailoverWriter::new(buf, self.ty, self.xid, self.sent);
        w.connect_options(&self.connect());
        w.state_options(&self.state());
        if let Some((code, m)) = &self.status {
            w.status_raw(*code, m);
        }
        match &self.binding {
            None => {}
            Some(BindingM::Prefix(p, len, pref, valid, l)) => {
                w.pool_prefix(*p, *len, *pref, *valid, |lw| lw.lease_options(&l.opts()))
            }
            Some(BindingM::Client(c)) => w.client_data(|b| {
                b.client_id(&c.duid);
                if let Some(t) = c.base {
                    b.lq_base_time(t);
                }
                if let Some(v) = &c.vss {
                    b.vss(v);
                }
                if let Some((t, k)) = &c.reconf {
                    b.reconfigure_data(*t, k);
                }
                if let Some((a, r)) = &c.relay {
                    b.lq_relay_data(*a, r);
                }
                if let Some((code, m)) = &c.status {
                    b.status_raw(*code, m);
                }
                for ia in &c.ias {
                    match ia {
                        IaM::Na(iaid, t1, t2, st, addrs) => b.ia_na(*iaid, *t1, *t2, |w| {
                            for (a, p, v, l) in addrs {
                                w.ia_addr(*a, *p, *v, |lw| lw.lease_options(&l.opts()));
                            }
                            if let Some(code) = st {
                                w.status_raw(*code, b"");
                            }
                        }),
                        IaM::Ta(iaid, addrs) => b.ia_ta(*iaid, |w| {
                            for (a, p, v, l) in addrs {
                                w.ia_addr(*a, *p, *v, |lw| lw.lease_options(&l.opts()));
                            }
                        }),
                        IaM::Pd(iaid, t1, t2, pfx) => b.ia_pd(*iaid, *t1, *t2, |w| {
                            for (a, len, p, v, l) in pfx {
                                w.ia_prefix(*a, *len, *p, *v, |lw| lw.lease_options(&l.opts()));
                            }
                        }),
                    }
                }
            }),
        }
        assert!(!w.overflowed());
    }

    fn check(&self, m: &FailoverMessage<'_>) {
        assert_eq!(m.msg_type(), self.ty);
        assert_eq!(m.transaction_id(), self.xid & 0x00FF_FFFF);
        assert_eq!(m.sent_time(), self.sent);
        assert_eq!(m.connect(), self.connect());
        assert_eq!(m.state(), self.state());
        assert_eq!(
            m.status().map(|s| (s.code, s.message.to_vec())),
            self.status.clone()
        );
        match (&self.binding, m.binding()) {
            (None, None) => {}
            (Some(BindingM::Prefix(p, len, pref, valid, l)), Some(BindingContent::Prefix(v))) => {
                assert_eq!(
                    (v.prefix, v.prefix_len, v.preferred_secs, v.valid_secs),
                    (*p, *len, *pref, *valid)
                );
                assert_eq!(v.lease_options(), l.opts());
            }
            (Some(BindingM::Client(c)), Some(BindingContent::Client(b))) => check_client(c, &b),
            (want, got) => panic!("binding mismatch: {want:?} vs {got:?}"),
        }
    }
}

fn check_client(c: &ClientM, b: &Binding<'_>) {
    assert_eq!(b.client_id(), Some(&c.duid[..]));
    assert_eq!(b.lq_base_time(), c.base);
    assert_eq!(b.vss(), c.vss.as_deref());
    assert_eq!(
        b.reconfigure_data().map(|r| (r.time, r.key.to_vec())),
        c.reconf.clone()
    );
    assert_eq!(
        b.lq_relay_data()
            .map(|r| (r.peer_address, r.relay_message.to_vec())),
        c.relay.clone()
    );
    assert_eq!(
        b.status().map(|s| (s.code, s.message.to_vec())),
        c.status.clone()
    );
    let (mut nas, mut tas, mut pds) = (b.ia_nas(), b.ia_tas(), b.ia_pds());
    for ia in &c.ias {
        match ia {
            IaM::Na(iaid, t1, t2, st, addrs) => {
                let v = nas.next().unwrap();
                assert_eq!((v.iaid, v.t1, v.t2), (*iaid, *t1, *t2));
                assert_eq!(v.status().map(|s| s.code), *st);
                let got: Vec<_> = v.addresses().collect();
                assert_eq!(got.len(), addrs.len());
                for (g, (a, p, vl, l)) in got.iter().zip(addrs) {
                    assert_eq!((g.addr, g.preferred_secs, g.valid_secs), (*a, *p, *vl));
                    assert_eq!(g.lease_options(), l.opts());
                }
            }
            IaM::Ta(iaid, addrs) => {
                let v = tas.next().unwrap();
                assert_eq!(v.iaid, *iaid);
                let got: Vec<_> = v.addresses().collect();
                assert_eq!(got.len(), addrs.len());
                for (g, (a, _, _, l)) in got.iter().zip(addrs) {
                    assert_eq!(g.addr, *a);
                    assert_eq!(g.lease_options(), l.opts());
                }
            }
            IaM::Pd(iaid, t1, t2, pfx) => {
                let v = pds.next().unwrap();
                assert_eq!((v.iaid, v.t1, v.t2), (*iaid, *t1, *t2));
                let got: Vec<_> = v.prefixes().collect();
                assert_eq!(got.len(), pfx.len());
                for (g, (a, len, p, vl, l)) in got.iter().zip(pfx) {
                    assert_eq!(
                        (g.prefix, g.prefix_len, g.preferred_secs, g.valid_secs),
                        (*a, *len, *p, *vl)
                    );
                    assert_eq!(g.lease_options(), l.opts());
                }
            }
        }
    }
    assert!(nas.next().is_none() && tas.next().is_none() && pds.next().is_none());
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), min..=max)
}

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn status() -> impl Strategy<Value = Option<(u16, Vec<u8>)>> {
    proptest::option::of((any::<u16>(), bytes(0, 12)))
}

fn lease() -> impl Strategy<Value = LeaseM> {
    (
        status(),
        proptest::option::of(1u8..=8),
        proptest::array::uniform7(proptest::option::of(any::<u32>())),
        proptest::option::of(bytes(1, 20)),
        proptest::option::of((
            proptest::option::of(bytes(0, 10)),
            proptest::option::of(bytes(0, 10)),
            proptest::option::of(any::<u16>()),
        )),
        proptest::option::of(any::<u32>()),
        proptest::option::of(bytes(1, 8)),
    )
        .prop_map(
            |(status, binding_status, times, fqdn, dns, base, vss)| LeaseM {
                status,
                binding_status,
                times,
                fqdn,
                dns,
                base,
                vss,
            },
        )
}

fn ia() -> impl Strategy<Value = IaM> {
    let addrs = || proptest::collection::vec((addr(), any::<u32>(), any::<u32>(), lease()), 0..3);
    let pfx = proptest::collection::vec(
        (addr(), 0u8..=128, any::<u32>(), any::<u32>(), lease()),
        0..3,
    );
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(any::<u16>()),
            addrs()
        )
            .prop_map(|(i, a, b, s, v)| IaM::Na(i, a, b, s, v)),
        (any::<u32>(), addrs()).prop_map(|(i, v)| IaM::Ta(i, v)),
        (any::<u32>(), any::<u32>(), any::<u32>(), pfx)
            .prop_map(|(i, a, b, v)| IaM::Pd(i, a, b, v)),
    ]
}

fn binding() -> impl Strategy<Value = BindingM> {
    let client = (
        bytes(3, 130),
        proptest::option::of(any::<u32>()),
        proptest::option::of(bytes(1, 8)),
        proptest::option::of((any::<u32>(), bytes(0, 16))),
        proptest::option::of((addr(), bytes(0, 40))),
        status(),
        proptest::collection::vec(ia(), 0..4),
    )
        .prop_map(|(duid, base, vss, reconf, relay, status, ias)| {
            BindingM::Client(ClientM {
                duid,
                base,
                vss,
                reconf,
                relay,
                status,
                ias,
            })
        });
    let prefix = (addr(), 0u8..=128, any::<u32>(), any::<u32>(), lease())
        .prop_map(|(a, l, p, v, lm)| BindingM::Prefix(a, l, p, v, lm));
    prop_oneof![client, prefix]
}

fn message() -> impl Strategy<Value = MsgM> {
    (
        (
            proptest::sample::select(FailoverType::ALL.to_vec()),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((any::<u16>(), any::<u16>())),
            proptest::array::uniform3(proptest::option::of(any::<u32>())),
            proptest::option::of(any::<u16>()),
            proptest::option::of("\\PC{0,12}"),
        ),
        (
            proptest::option::of(1u8..=10),
            proptest::option::of(any::<u8>()),
            proptest::array::uniform2(proptest::option::of(any::<u32>())),
            status(),
            proptest::option::of(binding()),
        ),
    )
        .prop_map(
            |(
                (ty, xid, sent, version, u32s, flags, name),
                (state, server_flags, state_times, status, binding),
            )| MsgM {
                ty,
                xid,
                sent,
                version,
                u32s,
                flags,
                name,
                state,
                server_flags,
                state_times,
                status,
                binding,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(b in bytes(0, 300)) {
        if let Ok(m) = FailoverMessage::parse(&b) {
            touch_all(&m);
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(t in 24u8..=35, body in bytes(0, 300)) {
        let b = msg(t, 1, 2, &[body]);
        if let Ok(m) = FailoverMessage::parse(&b) {
            touch_all(&m);
        }
    }

    #[test]
    fn mutated_bindings_never_panic(
        which in 0usize..4,
        muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut b = [CONNECT, BNDUPD, BNDREPLY, POOL_BNDUPD][which].to_vec();
        for (i, v) in muts {
            let n = b.len();
            b[i % n] = v;
        }
        if let Some(c) = cut {
            let n = b.len();
            b.truncate(c % (n + 1));
        }
        if let Ok(m) = FailoverMessage::parse(&b) {
            touch_all(&m);
        }
    }

    #[test]
    fn framer_never_panics(
        chunks in proptest::collection::vec(bytes(0, 64), 0..12),
        max in 0usize..200,
    ) {
        let mut f = Framer::with_max_frame_len(max);
        let limit = f.max_frame_len();
        for c in &chunks {
            let mut rest = &c[..];
            loop {
                let n = f.push(rest);
                rest = &rest[n..];
                let mut stop = false;
                while let Some(fr) = f.next_frame() {
                    match fr {
                        Ok(m) => {
                            prop_assert!(m.len() >= FAILOVER_HEADER_LEN && m.len() <= limit);
                            if let Ok(p) = FailoverMessage::parse(m) {
                                touch_all(&p);
                            }
                        }
                        Err(_) => { stop = true; break; }
                    }
                }
                if stop || rest.is_empty() || n == 0 {
                    break;
                }
            }
        }
    }

    #[test]
    fn generated_messages_round_trip(m in message()) {
        let mut buf = Vec::new();
        m.write(&mut buf);
        let parsed = FailoverMessage::parse(&buf);
        prop_assert!(parsed.is_ok(), "{:?}", parsed);
        let parsed = parsed.unwrap();
        m.check(&parsed);
        prop_assert_eq!(parsed.as_bytes(), &buf[..]);
    }

    #[test]
    fn generated_streams_reframe(
        ms in proptest::collection::vec(message(), 1..5),
        splits in proptest::collection::vec(1usize..200, 1..20),
    ) {
        let mut stream = Vec::new();
        let mut bufs = Vec::new();
        for m in &ms {
            let mut buf = Vec::new();
            m.write(&mut buf);
            write_frame(&buf, &mut stream).unwrap();
            bufs.push(buf);
        }
        let mut f = Framer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let take = splits[i % splits.len()].min(rest.len());
            i += 1;
            prop_assert_eq!(f.push(&rest[..take]), take);
            rest = &rest[take..];
            while let Some(fr) = f.next_frame() {
                got.push(fr.unwrap().to_vec());
            }
        }
        prop_assert_eq!(&got, &bufs);
        for (g, m) in got.iter().zip(&ms) {
            m.check(&FailoverMessage::parse(g).unwrap());
        }
    }

    #[test]
    fn failover_time_resolves_near_reference(
        unix in FAILOVER_EPOCH_UNIX..4_000_000_000_000u64,
        off in -(1i64 << 31) + 1..(1i64 << 31),
    ) {
        let near = unix.saturating_add_signed(off);
        prop_assume!(near.abs_diff(unix) < (1 << 31));
        prop_assert_eq!(from_failover_time(to_failover_time(unix), near), unix);
    }
}
