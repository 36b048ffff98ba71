//! Integration tests for the glue between typed partner messages (`PeerMsg`) and the RFC 8156
//! wire codec: round trips of every message through `encode` → `Framer` → `decode`, the
//! nesting of the binding checked with the wire codec's own views, time conversion across the
//! 2000 epoch and the 2136 wrap, malformed and link-layer input, and property tests.

#[path = "fixtures/frames.rs"]
mod fixtures;

use std::net::Ipv6Addr;

use fixtures::first_address;
use proptest::prelude::*;
use tandem_core::config::ResourceKind;
use tandem_core::failover::codec::{
    BndReplyEcho, CodecError, Header, REJECT_STATUS, decode, decode_bndreply, encode,
    encode_bndreply, peek_header,
};
use tandem_core::failover::peer::PeerMsg;
use tandem_core::failover::state::ServerState;
use tandem_core::failover::wire::{
    BindingStatus, ConnectOptions, FAILOVER_EPOCH_UNIX, FailoverMessage, FailoverStatusCode,
    FailoverType, FailoverWireError, FailoverWriter, Framer, LeaseOptionsExt, MAX_TRANSACTION_ID,
    ProtocolVersion, ServerFlags, fopt, to_failover_time,
};
use tandem_core::lease::{Lease, LeaseState};

const NOW: u64 = 1_760_000_000;
/// A little over ten years, in seconds.
const TEN_YEARS: i64 = 10 * 366 * 86_400;
/// Unix time of the failover-time wrap (2000-01-01 + 2^32 s, in 2136).
const WRAP: u64 = FAILOVER_EPOCH_UNIX + (1 << 32);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The caller's subnet lookup used throughout: a function of the address and kind, so a wrong
/// argument shows up as a wrong `subnet_id`.
fn subnet_of(addr: Ipv6Addr, kind: ResourceKind) -> u32 {
    u32::from(addr.segments()[3]) * 2 + u32::from(kind.code())
}

fn lookup(addr: Ipv6Addr, kind: ResourceKind) -> Option<u32> {
    Some(subnet_of(addr, kind))
}

fn active_address() -> Lease {
    let addr: Ipv6Addr = "2001:db8:0:5::1:2".parse().unwrap();
    Lease {
        kind: ResourceKind::Address,
        addr,
        prefix_len: 128,
        subnet_id: subnet_of(addr, ResourceKind::Address),
        state: LeaseState::Active,
        duid: vec![
            0, 1, 0, 1, 0x2a, 0xbc, 0xde, 0xf0, 0, 0x11, 0x22, 0x33, 0x44, 0x55,
        ]
        .into(),
        iaid: 0x0102_0304,
        preferred_secs: 1800,
        valid_secs: 3600,
        cltt: NOW - 40,
        expires_at: NOW - 40 + 3600,
        seq: 77,
        partner_ack_until: NOW + 100,
        partner_lifetime_received: NOW + 200,
        relay: Default::default(),
        partner_seq: 0,
    }
}

fn released_prefix() -> Lease {
    let addr: Ipv6Addr = "2001:db8:1:7f00::".parse().unwrap();
    Lease {
        kind: ResourceKind::Prefix,
        addr,
        prefix_len: 56,
        subnet_id: subnet_of(addr, ResourceKind::Prefix),
        state: LeaseState::Released,
        duid: vec![0, 3, 0, 1, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf].into(),
        iaid: 7,
        preferred_secs: 7200,
        valid_secs: 14_400,
        cltt: NOW - 5,
        expires_at: NOW - 5,
        seq: 3,
        partner_ack_until: 0,
        partner_lifetime_received: 9,
        relay: Default::default(),
        partner_seq: 0,
    }
}

/// What survives the wire: every field but the three that are not on it (decoded as 0).
fn on_wire(l: &Lease) -> Lease {
    Lease {
        seq: 0,
        partner_ack_until: 0,
        partner_lifetime_received: 0,
        partner_seq: 0,
        prefix_len: match l.kind {
            ResourceKind::Address => 128,
            ResourceKind::Prefix => l.prefix_len,
        },
        ..l.clone()
    }
}

/// The message as it should come back from `decode`.
fn expected(msg: &PeerMsg) -> PeerMsg {
    match msg {
        PeerMsg::BndUpd {
            xid,
            lease,
            partner_lifetime,
        } => PeerMsg::BndUpd {
            xid: *xid,
            lease: on_wire(lease),
            partner_lifetime: *partner_lifetime,
        },
        m => m.clone(),
    }
}

fn msg_type_of(msg: &PeerMsg) -> FailoverType {
    match msg {
        PeerMsg::State { .. } => FailoverType::State,
        PeerMsg::BndUpd { .. } => FailoverType::BndUpd,
        PeerMsg::BndReply { .. } | PeerMsg::PdShareAck { .. } => FailoverType::BndReply,
        PeerMsg::PdShare { .. } => FailoverType::BndUpd,
        PeerMsg::UpdReq { .. } => FailoverType::UpdReq,
        PeerMsg::UpdReqAll { .. } => FailoverType::UpdReqAll,
        PeerMsg::UpdDone { .. } => FailoverType::UpdDone,
        PeerMsg::PoolReq => FailoverType::PoolReq,
        PeerMsg::Contact => FailoverType::Contact,
    }
}

/// The transaction id the header must carry.
fn xid_of(msg: &PeerMsg, param: u32) -> u32 {
    match msg {
        PeerMsg::BndUpd { xid, .. }
        | PeerMsg::BndReply { xid, .. }
        | PeerMsg::PdShare { xid, .. }
        | PeerMsg::PdShareAck { xid, .. }
        | PeerMsg::UpdReq { xid }
        | PeerMsg::UpdReqAll { xid }
        | PeerMsg::UpdDone { xid } => *xid,
        _ => param,
    }
}

/// Splits a byte stream into messages with the wire codec's framer.
fn frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut f = Framer::new();
    let mut got = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = f.push(rest);
        rest = &rest[n..];
        while let Some(fr) = f.next_frame() {
            got.push(fr.unwrap().to_vec());
        }
    }
    assert_eq!(f.buffered(), 0, "no partial frame left");
    got
}

/// Encodes one message and returns the single message it frames (without the prefix).
fn encode_one(msg: &PeerMsg, xid: u32, now: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, xid, now, &mut out).unwrap();
    let mut f = frames(&out);
    assert_eq!(f.len(), 1);
    f.pop().unwrap()
}

fn roundtrip(msg: &PeerMsg, xid: u32, now: u64) -> (PeerMsg, Header) {
    decode(&encode_one(msg, xid, now), lookup, now).unwrap()
}

fn all_states() -> [ServerState; 10] {
    [
        ServerState::Startup,
        ServerState::Normal,
        ServerState::CommunicationsInterrupted,
        ServerState::PartnerDown,
        ServerState::PotentialConflict,
        ServerState::Recover,
        ServerState::RecoverWait,
        ServerState::RecoverDone,
        ServerState::ResolutionInterrupted,
        ServerState::ConflictDone,
    ]
}

fn sample_msgs() -> Vec<PeerMsg> {
    let mut v = Vec::new();
    for (i, state) in all_states().into_iter().enumerate() {
        v.push(PeerMsg::State {
            state,
            since: NOW - 1000 * i as u64,
            starting: i % 2 == 0,
            communicated: i % 3 == 0,
            partner_down_since: if state == ServerState::PartnerDown {
                NOW - 77
            } else {
                0
            },
        });
    }
    let pool = tandem_core::pool::PdPoolId {
        first: "2001:db8:8000::".parse().unwrap(),
        delegated_len: 56,
        count: 65_536,
    };
    v.push(PeerMsg::PdShare {
        xid: 4242,
        pool,
        share: 6553,
    });
    v.push(PeerMsg::PdShareAck {
        xid: 4242,
        pool,
        share: 6553,
        accepted: false,
    });
    let mut expired = active_address();
    expired.state = LeaseState::Expired;
    let mut declined = released_prefix();
    declined.state = LeaseState::Declined;
    declined.expires_at = NOW + 86_400;
    for (xid, lease) in [
        (1, active_address()),
        (2, released_prefix()),
        (3, expired),
        (MAX_TRANSACTION_ID, declined),
    ] {
        v.push(PeerMsg::BndUpd {
            xid,
            partner_lifetime: lease.expires_at + 3600,
            lease,
        });
    }
    v.push(PeerMsg::BndReply {
        xid: 5,
        accepted: true,
        partner_lifetime_sent: NOW + 7200,
    });
    v.push(PeerMsg::BndReply {
        xid: 6,
        accepted: false,
        partner_lifetime_sent: NOW + 60,
    });
    v.extend([
        PeerMsg::UpdReq { xid: 7 },
        PeerMsg::UpdReqAll { xid: 8 },
        PeerMsg::UpdDone { xid: 9 },
        PeerMsg::PoolReq,
        PeerMsg::Contact,
    ]);
    v
}

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn every_variant_round_trips_through_one_stream() {
    let msgs = sample_msgs();
    let mut stream = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        encode(m, 0x00AB_0000 + i as u32, NOW, &mut stream).unwrap();
    }
    let got = frames(&stream);
    assert_eq!(got.len(), msgs.len());
    let mut seen = std::collections::HashSet::new();
    for (i, (m, fr)) in msgs.iter().zip(&got).enumerate() {
        let (d, h) = decode(fr, lookup, NOW).unwrap();
        assert_eq!(d, expected(m), "message {i}");
        assert_eq!(h.msg_type, msg_type_of(m));
        assert_eq!(h.xid, xid_of(m, 0x00AB_0000 + i as u32));
        assert_eq!(h.sent_time, NOW);
        assert_eq!(peek_header(fr, NOW).unwrap(), h);
        seen.insert(std::mem::discriminant(m));
    }
    assert_eq!(seen.len(), 10, "every PeerMsg variant is covered");
}

#[test]
fn active_address_lease_round_trips() {
    let l = active_address();
    let msg = PeerMsg::BndUpd {
        xid: 0x12_3456,
        lease: l.clone(),
        partner_lifetime: l.expires_at + 1800,
    };
    // The xid parameter is ignored for BNDUPD: the message's own goes on the wire.
    let (d, h) = roundtrip(&msg, 999, NOW);
    assert_eq!(h.xid, 0x12_3456);
    let PeerMsg::BndUpd {
        xid,
        lease,
        partner_lifetime,
    } = d
    else {
        panic!("not a BNDUPD: {d:?}")
    };
    assert_eq!(xid, 0x12_3456);
    assert_eq!(partner_lifetime, l.expires_at + 1800);
    assert_eq!(lease.kind, ResourceKind::Address);
    assert_eq!(lease.addr, l.addr);
    assert_eq!(lease.prefix_len, 128);
    assert_eq!(lease.subnet_id, subnet_of(l.addr, ResourceKind::Address));
    assert_eq!(lease.state, LeaseState::Active);
    assert_eq!(lease.duid, l.duid);
    assert_eq!(lease.iaid, l.iaid);
    assert_eq!((lease.preferred_secs, lease.valid_secs), (1800, 3600));
    assert_eq!((lease.cltt, lease.expires_at), (l.cltt, l.expires_at));
    assert_eq!(
        (
            lease.seq,
            lease.partner_ack_until,
            lease.partner_lifetime_received
        ),
        (0, 0, 0),
        "not on the wire"
    );
}

#[test]
fn released_prefix_lease_round_trips() {
    let l = released_prefix();
    let msg = PeerMsg::BndUpd {
        xid: 2,
        lease: l.clone(),
        partner_lifetime: NOW,
    };
    let (d, _) = roundtrip(&msg, 0, NOW);
    assert_eq!(d, expected(&msg));
    let PeerMsg::BndUpd { lease, .. } = d else {
        panic!()
    };
    assert_eq!(
        (lease.kind, lease.prefix_len, lease.state),
        (ResourceKind::Prefix, 56, LeaseState::Released)
    );
    assert_eq!(lease.subnet_id, subnet_of(l.addr, ResourceKind::Prefix));

    // On the wire: IA_PD { IAPREFIX /56 { BINDING_STATUS RELEASED, ... } }.
    let bytes = encode_one(&msg, 0, NOW);
    let m = FailoverMessage::parse(&bytes).unwrap();
    let b = m.client_binding().unwrap();
    assert_eq!(b.ia_nas().count(), 0);
    let pd = b.ia_pds().next().unwrap();
    assert_eq!(pd.iaid, 7);
    let p = pd.prefixes().next().unwrap();
    assert_eq!((p.prefix, p.prefix_len), (l.addr, 56));
    assert_eq!((p.preferred_secs, p.valid_secs), (7200, 14_400));
    assert_eq!(
        p.lease_options().binding_status,
        Some(BindingStatus::Released)
    );
}

#[test]
fn state_round_trips_with_flags() {
    for state in all_states() {
        for (starting, communicated) in [(false, false), (true, false), (false, true), (true, true)]
        {
            let msg = PeerMsg::State {
                state,
                since: NOW - 3600,
                starting,
                communicated,
                partner_down_since: 0,
            };
            let (d, h) = roundtrip(&msg, 42, NOW);
            assert_eq!((d, h.xid), (msg, 42));
        }
    }
    let bytes = encode_one(
        &PeerMsg::State {
            state: ServerState::PartnerDown,
            since: NOW - 10,
            starting: true,
            communicated: true,
            partner_down_since: 0,
        },
        1,
        NOW,
    );
    let s = FailoverMessage::parse(&bytes).unwrap().state();
    assert_eq!(s.server_state, Some(ServerState::PartnerDown));
    assert_eq!(
        s.server_flags,
        Some(ServerFlags::STARTUP | ServerFlags::COMMUNICATED)
    );
    assert_eq!(s.start_time_of_state, Some(to_failover_time(NOW - 10)));
    assert_eq!(
        s.partner_down_time, None,
        "PeerMsg::State has no PARTNER-DOWN time"
    );
}

// ---------------------------------------------------------------------------------------------
// Byte-level layout, checked with the wire codec's views.

#[test]
fn bndupd_binding_status_is_nested_inside_iaaddr() {
    let l = active_address();
    let msg = PeerMsg::BndUpd {
        xid: 0x00_0102,
        lease: l.clone(),
        partner_lifetime: l.expires_at + 600,
    };
    let mut out = Vec::new();
    encode(&msg, 0, NOW, &mut out).unwrap();
    // Frame: 2-octet big-endian length of the message that follows.
    assert_eq!(
        usize::from(u16::from_be_bytes([out[0], out[1]])),
        out.len() - 2
    );
    let bytes = &out[2..];
    assert_eq!(bytes[..4], [24, 0x00, 0x01, 0x02], "BNDUPD, transaction id");
    assert_eq!(
        bytes[4..8],
        to_failover_time(NOW).to_be_bytes(),
        "sent-time"
    );

    let m = FailoverMessage::parse(bytes).unwrap();
    assert_eq!(m.msg_type(), FailoverType::BndUpd);
    // Exactly one top-level option: OPTION_CLIENT_DATA.
    let top: Vec<u16> = m.options().map(|o| o.code).collect();
    assert_eq!(top, [fopt::CLIENT_DATA]);
    let b = m.client_binding().unwrap();
    let inner: Vec<u16> = b.options().map(|o| o.code).collect();
    assert_eq!(inner, [fopt::CLIENTID, fopt::LQ_BASE_TIME, fopt::IA_NA]);
    assert_eq!(b.client_id(), Some(&l.duid[..]));
    assert_eq!(b.lq_base_time(), Some(to_failover_time(NOW)));

    let ia = b.ia_nas().next().unwrap();
    assert_eq!((ia.iaid, ia.t1, ia.t2), (l.iaid, 0, 0));
    let ia_codes: Vec<u16> = ia.options().map(|o| o.code).collect();
    assert_eq!(
        ia_codes,
        [fopt::IAADDR],
        "nothing but the IAADDR at IA level"
    );
    let a = ia.addresses().next().unwrap();
    assert_eq!(a.addr, l.addr);
    assert_eq!((a.preferred_secs, a.valid_secs), (1800, 3600));

    // OPTION_F_BINDING_STATUS (114), length 1, value ACTIVE (1), inside the IAADDR.
    let st = a
        .options()
        .find(|o| o.code == fopt::F_BINDING_STATUS)
        .expect("binding status inside IAADDR");
    assert_eq!(st.data, [1]);
    let codes: Vec<u16> = a.options().map(|o| o.code).collect();
    assert_eq!(
        codes,
        [
            fopt::F_BINDING_STATUS,
            fopt::F_START_TIME_OF_STATE,
            fopt::F_STATE_EXPIRATION_TIME,
            fopt::CLT_TIME,
            fopt::F_PARTNER_LIFETIME,
            fopt::F_EXPIRATION_TIME,
        ],
        "digest §4.1 order"
    );
    let o = a.lease_options();
    assert_eq!(o.binding_status, Some(BindingStatus::Active));
    assert_eq!(o.start_time_of_state, Some(to_failover_time(l.cltt)));
    assert_eq!(
        o.state_expiration_time,
        Some(to_failover_time(l.expires_at))
    );
    assert_eq!(o.clt_time, Some(40), "seconds before LQ_BASE_TIME");
    assert_eq!(
        o.partner_lifetime,
        Some(to_failover_time(l.expires_at + 600))
    );
    assert_eq!(o.expiration_time, Some(to_failover_time(l.expires_at)));
    assert_eq!(o.partner_lifetime_sent, None);
}

#[test]
fn declined_is_abandoned_and_offered_is_never_encoded() {
    let mut l = active_address();
    l.state = LeaseState::Declined;
    let bytes = encode_one(
        &PeerMsg::BndUpd {
            xid: 1,
            lease: l.clone(),
            partner_lifetime: NOW,
        },
        0,
        NOW,
    );
    let m = FailoverMessage::parse(&bytes).unwrap();
    let a = first_address(&m.client_binding().unwrap());
    assert_eq!(
        a.lease_options().binding_status,
        Some(BindingStatus::Abandoned)
    );

    l.state = LeaseState::Offered;
    let mut out = vec![0xEE];
    let upd = PeerMsg::BndUpd {
        xid: 1,
        lease: l.clone(),
        partner_lifetime: NOW,
    };
    assert_eq!(
        encode(&upd, 0, NOW, &mut out),
        Err(CodecError::OfferedLease)
    );
    assert_eq!(
        encode_bndreply(1, true, NOW, &l, NOW, &mut out),
        Err(CodecError::OfferedLease)
    );
    assert_eq!(out, [0xEE], "nothing appended on error");
}

// ---------------------------------------------------------------------------------------------
// BNDREPLY: both forms.

#[test]
fn bndreply_from_encode_is_top_level() {
    let rejected = PeerMsg::BndReply {
        xid: 0x00_7777,
        accepted: false,
        partner_lifetime_sent: NOW + 900,
    };
    let bytes = encode_one(&rejected, 1, NOW);
    let m = FailoverMessage::parse(&bytes).unwrap();
    assert_eq!(
        m.transaction_id(),
        0x00_7777,
        "echoes the BNDUPD's id, not the parameter"
    );
    assert!(m.binding().is_none());
    let st = m.status().unwrap();
    assert_eq!(st.code, 19);
    assert_eq!(
        REJECT_STATUS,
        FailoverStatusCode::OutdatedBindingInformation
    );
    assert_eq!(
        m.first(fopt::F_PARTNER_LIFETIME_SENT),
        Some(&to_failover_time(NOW + 900).to_be_bytes()[..])
    );
    assert_eq!(decode(&bytes, lookup, NOW).unwrap().0, rejected);

    let accepted = PeerMsg::BndReply {
        xid: 3,
        accepted: true,
        partner_lifetime_sent: NOW + 900,
    };
    let bytes = encode_one(&accepted, 1, NOW);
    assert!(FailoverMessage::parse(&bytes).unwrap().status().is_none());
    assert_eq!(decode(&bytes, lookup, NOW).unwrap().0, accepted);
    let (echo, _) = decode_bndreply(&bytes, lookup, NOW).unwrap();
    assert_eq!(echo.lease, None);
    assert_eq!(echo.to_msg(), accepted);
}

#[test]
fn bndreply_with_echoed_binding_follows_the_digest() {
    for l in [active_address(), released_prefix()] {
        for accepted in [true, false] {
            let mut out = Vec::new();
            encode_bndreply(0x00_0A0B, accepted, NOW + 4000, &l, NOW, &mut out).unwrap();
            let fr = frames(&out).pop().unwrap();
            let m = FailoverMessage::parse(&fr).unwrap();
            assert_eq!(m.msg_type(), FailoverType::BndReply);
            assert!(m.status().is_none(), "nothing at top level");
            assert!(m.first(fopt::F_PARTNER_LIFETIME_SENT).is_none());
            let b = m.client_binding().unwrap();
            assert_eq!(b.client_id(), Some(&l.duid[..]));
            let o = match l.kind {
                ResourceKind::Address => {
                    let a = first_address(&b);
                    assert_eq!((a.addr, a.preferred_secs, a.valid_secs), (l.addr, 0, 0));
                    a.lease_options()
                }
                ResourceKind::Prefix => {
                    let p = b.ia_pds().next().unwrap().prefixes().next().unwrap();
                    assert_eq!((p.prefix, p.prefix_len), (l.addr, l.prefix_len));
                    p.lease_options()
                }
            };
            assert_eq!(o.partner_lifetime_sent, Some(to_failover_time(NOW + 4000)));
            assert_eq!(
                o.state_expiration_time,
                Some(to_failover_time(l.expires_at))
            );
            assert_eq!(o.status.map(|s| s.code), (!accepted).then_some(19));
            assert!(o.partner_lifetime.is_none() && o.clt_time.is_none());

            let want = PeerMsg::BndReply {
                xid: 0x00_0A0B,
                accepted,
                partner_lifetime_sent: NOW + 4000,
            };
            assert_eq!(
                decode(&fr, |_, _| None, NOW).unwrap().0,
                want,
                "no lookup needed"
            );
            let (echo, h) = decode_bndreply(&fr, lookup, NOW).unwrap();
            assert_eq!(h.msg_type, FailoverType::BndReply);
            assert_eq!(echo.to_msg(), want);
            let mut echoed = on_wire(&l);
            (echoed.preferred_secs, echoed.valid_secs, echoed.cltt) = (0, 0, 0);
            assert_eq!(
                echo,
                BndReplyEcho {
                    xid: 0x00_0A0B,
                    accepted,
                    partner_lifetime_sent: NOW + 4000,
                    lease: Some(echoed),
                }
            );
        }
    }
}

#[test]
fn bndreply_status_at_any_level_rejects() {
    let l = active_address();
    let lt = to_failover_time(NOW + 50);
    // Status at OPTION_CLIENT_DATA level (rejects the whole update), lifetime sent inside.
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::BndReply, 9, to_failover_time(NOW));
    w.client_data(|b| {
        b.client_id(&l.duid);
        b.status_code(FailoverStatusCode::AddressInUse, "in use");
        b.ia_na(1, 0, 0, |ia| {
            ia.ia_addr(l.addr, 0, 0, |o| {
                o.binding_status(BindingStatus::Active);
                o.partner_lifetime_sent(lt);
            })
        });
    });
    let (d, _) = decode(&buf, lookup, NOW).unwrap();
    assert_eq!(
        d,
        PeerMsg::BndReply {
            xid: 9,
            accepted: false,
            partner_lifetime_sent: NOW + 50
        }
    );
    // A Success status is no rejection; an IA-level error is.
    for (code, accepted) in [(0u16, true), (16, false)] {
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::BndReply, 9, 0);
        w.client_data(|b| {
            b.client_id(&l.duid);
            b.ia_na(1, 0, 0, |ia| {
                ia.status_raw(code, b"");
                ia.ia_addr(l.addr, 0, 0, |o| o.binding_status(BindingStatus::Active));
            });
        });
        let (d, _) = decode(&buf, lookup, NOW).unwrap();
        assert_eq!(
            d,
            PeerMsg::BndReply {
                xid: 9,
                accepted,
                partner_lifetime_sent: 0
            }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Times.

#[test]
fn times_survive_the_2000_epoch_conversion() {
    let l = active_address();
    let msg = PeerMsg::BndUpd {
        xid: 1,
        lease: l.clone(),
        partner_lifetime: l.expires_at + 10,
    };
    let bytes = encode_one(&msg, 0, NOW);
    let m = FailoverMessage::parse(&bytes).unwrap();
    assert_eq!(u64::from(m.sent_time()), NOW - FAILOVER_EPOCH_UNIX);
    let o = first_address(&m.client_binding().unwrap()).lease_options();
    assert_eq!(
        u64::from(o.expiration_time.unwrap()),
        l.expires_at - FAILOVER_EPOCH_UNIX
    );
    assert_eq!(
        u64::from(o.partner_lifetime.unwrap()),
        l.expires_at + 10 - FAILOVER_EPOCH_UNIX
    );
    // The receiver's clock may differ from the sender's: times still resolve exactly.
    for skew in [-3600i64, -5, 0, 5, 86_400] {
        let (d, h) = decode(&bytes, lookup, NOW.saturating_add_signed(skew)).unwrap();
        assert_eq!(d, expected(&msg));
        assert_eq!(h.sent_time, NOW);
    }
}

#[test]
fn times_survive_the_2136_wrap() {
    // Sender just before the wrap, lease times on both sides of it, receiver just after it.
    let now = WRAP - 30;
    let mut l = active_address();
    l.cltt = WRAP - 100;
    l.expires_at = WRAP + 3500;
    let msg = PeerMsg::BndUpd {
        xid: 4,
        lease: l.clone(),
        partner_lifetime: WRAP + 7100,
    };
    let bytes = encode_one(&msg, 0, now);
    let m = FailoverMessage::parse(&bytes).unwrap();
    assert_eq!(m.sent_time(), u32::MAX - 29);
    let (d, h) = decode(&bytes, lookup, WRAP + 30).unwrap();
    assert_eq!(d, expected(&msg));
    assert_eq!(h.sent_time, now);
    let state = PeerMsg::State {
        state: ServerState::Normal,
        since: WRAP - 10,
        starting: false,
        communicated: true,
        partner_down_since: 0,
    };
    assert_eq!(roundtrip(&state, 1, WRAP + 10).0, state);
}

/// A BNDUPD of `l` with no client-transaction, expiry or partner-lifetime time (all 0).
fn update_without_times(mut l: Lease) -> PeerMsg {
    l.cltt = 0;
    l.expires_at = 0;
    PeerMsg::BndUpd {
        xid: 1,
        lease: l,
        partner_lifetime: 0,
    }
}

#[test]
fn zero_binding_times_are_absent() {
    // Even far from 1970 (after 2038), a 0 comes back as 0, not as a date near the wrap.
    let msg = update_without_times(released_prefix());
    let (d, _) = roundtrip(&msg, 0, WRAP - 1_000_000);
    assert_eq!(d, expected(&msg));

    // On the wire the zero times are left out of the IAADDR, not sent as the epoch.
    let msg = update_without_times(active_address());
    let bytes = encode_one(&msg, 0, NOW);
    let m = FailoverMessage::parse(&bytes).unwrap();
    let o = first_address(&m.client_binding().unwrap()).lease_options();
    assert_eq!(o.binding_status, Some(BindingStatus::Active));
    assert!(o.start_time_of_state.is_none() && o.clt_time.is_none());
    assert!(o.partner_lifetime.is_none() && o.expiration_time.is_none());
    assert_eq!(roundtrip(&msg, 0, NOW).0, expected(&msg));
}

#[test]
fn expired_start_time_is_its_expiry() {
    let mut l = active_address();
    l.state = LeaseState::Expired;
    let msg = PeerMsg::BndUpd {
        xid: 2,
        lease: l.clone(),
        partner_lifetime: NOW,
    };
    let bytes = encode_one(&msg, 0, NOW);
    let m = FailoverMessage::parse(&bytes).unwrap();
    let b = m.client_binding().unwrap();
    let o = first_address(&b).lease_options();
    assert_eq!(o.start_time_of_state, Some(to_failover_time(l.expires_at)));
    assert_eq!(o.clt_time, Some(40));
    assert_eq!(b.lq_base_time(), Some(to_failover_time(NOW)));
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn garbage_and_truncated_frames_are_errors() {
    assert_eq!(
        decode(&[], lookup, NOW),
        Err(CodecError::Wire(FailoverWireError::Truncated))
    );
    assert_eq!(
        decode(&[7, 0, 0, 1, 0, 0, 0, 0], lookup, NOW),
        Err(CodecError::Wire(FailoverWireError::UnknownMessageType(7)))
    );
    assert!(matches!(
        decode(&[24, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff], lookup, NOW),
        Err(CodecError::Wire(_))
    ));
    assert!(peek_header(&[35, 0, 0], NOW).is_err());

    let l = active_address();
    let upd = encode_one(
        &PeerMsg::BndUpd {
            xid: 1,
            lease: l.clone(),
            partner_lifetime: NOW,
        },
        0,
        NOW,
    );
    let state = encode_one(
        &PeerMsg::State {
            state: ServerState::Normal,
            since: NOW,
            starting: false,
            communicated: true,
            partner_down_since: 0,
        },
        1,
        NOW,
    );
    for full in [&upd, &state] {
        for cut in 0..full.len() {
            let r = decode(&full[..cut], lookup, NOW);
            assert!(r.is_err(), "prefix of {cut} bytes decoded: {r:?}");
            assert!(decode_bndreply(&full[..cut], lookup, NOW).is_err());
        }
    }
    // A header-only message cut to its header is still complete; any shorter is not.
    let contact = encode_one(&PeerMsg::Contact, 1, NOW);
    assert_eq!(contact.len(), 8);
    for cut in 0..8 {
        assert!(decode(&contact[..cut], lookup, NOW).is_err());
    }
}

#[test]
fn link_layer_messages_are_a_clear_error() {
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, 42, to_failover_time(NOW));
    w.connect_options(&ConnectOptions {
        protocol_version: Some(ProtocolVersion::V1_0),
        mclt: Some(3600),
        keepalive_time: Some(60),
        max_unacked_bndupd: Some(128),
        relationship_name: Some("pair"),
        ..ConnectOptions::default()
    });
    let mut stream = Vec::new();
    w.frame_into(&mut stream).unwrap();
    let fr = frames(&stream).pop().unwrap();
    let e = decode(&fr, lookup, NOW).unwrap_err();
    assert_eq!(e, CodecError::LinkLayer(FailoverType::Connect));
    assert!(e.to_string().contains("CONNECT"), "{e}");
    assert_eq!(peek_header(&fr, NOW).unwrap().xid, 42);

    for t in [
        FailoverType::PoolResp,
        FailoverType::ConnectReply,
        FailoverType::Disconnect,
    ] {
        let mut buf = Vec::new();
        let w = FailoverWriter::new(&mut buf, t, 1, 0);
        assert_eq!(
            decode(w.as_bytes(), lookup, NOW),
            Err(CodecError::LinkLayer(t))
        );
    }
    let contact = encode_one(&PeerMsg::Contact, 1, NOW);
    assert_eq!(
        decode_bndreply(&contact, lookup, NOW),
        Err(CodecError::UnexpectedType {
            expected: FailoverType::BndReply,
            found: FailoverType::Contact
        })
    );
}

#[test]
fn unsupported_or_incomplete_bindings_are_errors() {
    let l = active_address();
    let t = to_failover_time(NOW);
    let bndupd = |body: &dyn Fn(&mut FailoverWriter<'_>)| {
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, 5, t);
        body(&mut w);
        buf
    };
    let with_status = |s: BindingStatus| {
        bndupd(&|w| {
            w.client_data(|b| {
                b.client_id(&l.duid);
                b.lq_base_time(t);
                b.ia_na(1, 0, 0, |ia| {
                    ia.ia_addr(l.addr, 0, 0, |o| {
                        o.binding_status(s);
                        o.start_time_of_state(t);
                    })
                });
            })
        })
    };
    for s in [
        BindingStatus::PendingFree,
        BindingStatus::Free,
        BindingStatus::FreeBackup,
        BindingStatus::Reset,
    ] {
        assert_eq!(
            decode(&with_status(s), lookup, NOW),
            Err(CodecError::UnsupportedBindingStatus(s))
        );
    }
    // A minimal foreign BNDUPD without CLT_TIME: the start time of state stands in for CLTT.
    let (d, _) = decode(&with_status(BindingStatus::Active), lookup, NOW).unwrap();
    let PeerMsg::BndUpd { lease, .. } = d else {
        panic!()
    };
    assert_eq!((lease.cltt, lease.expires_at), (NOW, 0));

    // No subnet for the address; peek_header still gives the xid to answer with.
    let msg = with_status(BindingStatus::Active);
    assert_eq!(
        decode(&msg, |_, _| None, NOW),
        Err(CodecError::UnknownSubnet {
            addr: l.addr,
            kind: ResourceKind::Address
        })
    );
    assert_eq!(peek_header(&msg, NOW).unwrap().xid, 5);

    let missing = [
        (bndupd(&|_| {}), "OPTION_CLIENT_DATA"),
        (
            bndupd(&|w| {
                w.client_data(|b| {
                    b.ia_na(1, 0, 0, |ia| {
                        ia.ia_addr(l.addr, 0, 0, |o| o.binding_status(BindingStatus::Active))
                    })
                })
            }),
            "OPTION_CLIENTID",
        ),
        (
            bndupd(&|w| w.client_data(|b| b.client_id(&l.duid))),
            "IA_NA or IA_PD",
        ),
        (
            bndupd(&|w| {
                w.client_data(|b| {
                    b.client_id(&l.duid);
                    b.ia_na(1, 0, 0, |_| {});
                })
            }),
            "OPTION_IAADDR",
        ),
        (
            bndupd(&|w| {
                w.client_data(|b| {
                    b.client_id(&l.duid);
                    b.ia_na(1, 0, 0, |ia| ia.ia_addr(l.addr, 0, 0, |_| {}));
                })
            }),
            "OPTION_F_BINDING_STATUS",
        ),
    ];
    for (m, what) in missing {
        assert_eq!(decode(&m, lookup, NOW), Err(CodecError::Missing(what)));
    }

    let unsupported = [
        bndupd(&|w| {
            w.pool_prefix(l.addr, 48, 0, 0, |o| {
                o.lq_base_time(t);
                o.binding_status(BindingStatus::FreeBackup);
            })
        }),
        bndupd(&|w| {
            w.client_data(|b| {
                b.client_id(&l.duid);
                b.ia_ta(1, |ia| {
                    ia.ia_addr(l.addr, 0, 0, |o| o.binding_status(BindingStatus::Active))
                });
            })
        }),
        bndupd(&|w| {
            w.client_data(|b| {
                b.client_id(&l.duid);
                for iaid in [1, 2] {
                    b.ia_na(iaid, 0, 0, |ia| {
                        ia.ia_addr(l.addr, 0, 0, |o| o.binding_status(BindingStatus::Active))
                    });
                }
            })
        }),
        bndupd(&|w| {
            w.client_data(|b| {
                b.client_id(&l.duid);
                b.ia_na(1, 0, 0, |ia| {
                    for a in [l.addr, Ipv6Addr::LOCALHOST] {
                        ia.ia_addr(a, 0, 0, |o| o.binding_status(BindingStatus::Active));
                    }
                });
            })
        }),
    ];
    for m in unsupported {
        assert!(
            matches!(
                decode(&m, lookup, NOW),
                Err(CodecError::UnsupportedBinding(_))
            ),
            "{:?}",
            decode(&m, lookup, NOW)
        );
    }

    // STATE without each of its three options.
    for skip in 0..3 {
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::State, 1, t);
        if skip != 0 {
            w.server_state(ServerState::Normal);
        }
        if skip != 1 {
            w.server_flags(ServerFlags::COMMUNICATED);
        }
        if skip != 2 {
            w.start_time_of_state(t);
        }
        assert!(matches!(
            decode(&buf, lookup, NOW),
            Err(CodecError::Missing(_))
        ));
    }
}

#[test]
fn encode_rejects_what_the_wire_cannot_carry() {
    let mut out = Vec::new();
    for xid in [MAX_TRANSACTION_ID + 1, u32::MAX] {
        assert_eq!(
            encode(&PeerMsg::UpdReq { xid }, 1, NOW, &mut out),
            Err(CodecError::XidOutOfRange(xid))
        );
        let reply = PeerMsg::BndReply {
            xid,
            accepted: true,
            partner_lifetime_sent: NOW,
        };
        assert_eq!(
            encode(&reply, 1, NOW, &mut out),
            Err(CodecError::XidOutOfRange(xid))
        );
    }
    let mut l = released_prefix();
    l.prefix_len = 129;
    assert!(matches!(
        encode_bndreply(1, true, NOW, &l, NOW, &mut out),
        Err(CodecError::InvalidLease(_))
    ));
    l.prefix_len = 64;
    l.duid = vec![0; 2].into();
    assert!(matches!(
        encode_bndreply(1, true, NOW, &l, NOW, &mut out),
        Err(CodecError::InvalidLease(_))
    ));
    assert!(out.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn time_near(now: u64) -> impl Strategy<Value = u64> {
    (-TEN_YEARS..=TEN_YEARS).prop_map(move |d| now.saturating_add_signed(d))
}

/// A binding time: usually within ten years of now, sometimes 0 ("none").
fn lease_time(now: u64) -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 9 => time_near(now)]
}

fn lease_strategy(now: u64) -> impl Strategy<Value = Lease> {
    let kind = prop_oneof![Just(ResourceKind::Address), Just(ResourceKind::Prefix)];
    let state = prop_oneof![
        Just(LeaseState::Active),
        Just(LeaseState::Expired),
        Just(LeaseState::Released),
        Just(LeaseState::Declined),
    ];
    (
        (kind, any::<u128>(), 0u8..=128, state),
        proptest::collection::vec(any::<u8>(), 3..=130),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (lease_time(now), lease_time(now)),
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (kind, addr, plen, state),
                duid,
                (iaid, preferred_secs, valid_secs),
                (cltt, expires_at),
                (seq, ack, plr),
            )| {
                let addr = Ipv6Addr::from(addr);
                Lease {
                    kind,
                    addr,
                    prefix_len: if kind == ResourceKind::Address {
                        128
                    } else {
                        plen
                    },
                    subnet_id: subnet_of(addr, kind),
                    state,
                    duid: duid.into(),
                    iaid,
                    preferred_secs,
                    valid_secs,
                    cltt,
                    expires_at,
                    seq,
                    partner_ack_until: ack,
                    partner_lifetime_received: plr,
                    relay: Default::default(),
                    partner_seq: 0,
                }
            },
        )
}

fn msg_strategy(now: u64) -> impl Strategy<Value = PeerMsg> {
    let xid = 0..=MAX_TRANSACTION_ID;
    prop_oneof![
        2 => (0..10usize, time_near(now), any::<bool>(), any::<bool>()).prop_map(
            |(i, since, starting, communicated)| PeerMsg::State {
                state: all_states()[i],
                since,
                starting,
                communicated,
                partner_down_since: 0,
            }
        ),
        4 => (xid.clone(), lease_strategy(now), lease_time(now)).prop_map(
            |(xid, lease, partner_lifetime)| PeerMsg::BndUpd {
                xid,
                lease,
                partner_lifetime,
            }
        ),
        2 => (xid.clone(), any::<bool>(), lease_time(now)).prop_map(
            |(xid, accepted, partner_lifetime_sent)| PeerMsg::BndReply {
                xid,
                accepted,
                partner_lifetime_sent,
            }
        ),
        1 => xid.clone().prop_map(|xid| PeerMsg::UpdReq { xid }),
        1 => xid.clone().prop_map(|xid| PeerMsg::UpdReqAll { xid }),
        1 => xid.prop_map(|xid| PeerMsg::UpdDone { xid }),
        1 => Just(PeerMsg::PoolReq),
        1 => Just(PeerMsg::Contact),
    ]
}

/// A sender clock from 2010 to 2186 (across the 2136 wrap) and a batch of messages near it.
fn batch() -> impl Strategy<Value = (u64, i64, Vec<(PeerMsg, u32)>)> {
    (1_262_304_000u64..=6_800_000_000).prop_flat_map(|now| {
        (
            Just(now),
            -120i64..=120,
            proptest::collection::vec((msg_strategy(now), 0..=MAX_TRANSACTION_ID), 1..8),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_messages_round_trip((now, skew, msgs) in batch(), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for (m, xid) in &msgs {
            encode(m, *xid, now, &mut stream).unwrap();
        }
        // Feed the stream in small pieces, as TCP would.
        let mut f = Framer::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            prop_assert_eq!(f.push(piece), piece.len());
            while let Some(fr) = f.next_frame() {
                got.push(fr.unwrap().to_vec());
            }
        }
        prop_assert_eq!(got.len(), msgs.len());
        let rx_now = now.saturating_add_signed(skew);
        for ((m, xid), fr) in msgs.iter().zip(&got) {
            let (d, h) = decode(fr, lookup, rx_now).unwrap();
            prop_assert_eq!(&d, &expected(m));
            prop_assert_eq!(h.msg_type, msg_type_of(m));
            prop_assert_eq!(h.xid, xid_of(m, *xid));
            prop_assert_eq!(h.sent_time, now);
        }
    }

    #[test]
    fn random_leases_round_trip_in_both_binding_messages(
        (now, lease, pl, xid) in (1_262_304_000u64..=6_800_000_000).prop_flat_map(|now| {
            (Just(now), lease_strategy(now), lease_time(now), 0..=MAX_TRANSACTION_ID)
        }),
        accepted in any::<bool>(),
    ) {
        let upd = PeerMsg::BndUpd { xid, lease: lease.clone(), partner_lifetime: pl };
        prop_assert_eq!(roundtrip(&upd, 0, now).0, expected(&upd));

        let mut out = Vec::new();
        encode_bndreply(xid, accepted, pl, &lease, now, &mut out).unwrap();
        let fr = frames(&out).pop().unwrap();
        let (echo, h) = decode_bndreply(&fr, lookup, now).unwrap();
        prop_assert_eq!(h.xid, xid);
        let mut echoed = on_wire(&lease);
        (echoed.preferred_secs, echoed.valid_secs, echoed.cltt) = (0, 0, 0);
        let want = BndReplyEcho { xid, accepted, partner_lifetime_sent: pl, lease: Some(echoed) };
        prop_assert_eq!(echo, want);
        prop_assert_eq!(
            decode(&fr, lookup, now).unwrap().0,
            PeerMsg::BndReply { xid, accepted, partner_lifetime_sent: pl }
        );
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        now in any::<u64>(),
    ) {
        let _ = decode(&bytes, lookup, now);
        let _ = decode(&bytes, |_, _| None, now);
        let _ = decode_bndreply(&bytes, lookup, now);
        let _ = peek_header(&bytes, now);
        // Give random bytes a valid failover message type too.
        let mut typed = bytes.clone();
        if let Some(b) = typed.first_mut() {
            *b = 24 + *b % 12;
        }
        let _ = decode(&typed, lookup, now);
        let _ = decode_bndreply(&typed, lookup, now);
    }

    #[test]
    fn mutated_frames_never_panic(
        (now, msg) in (1_262_304_000u64..=6_800_000_000)
            .prop_flat_map(|now| (Just(now), msg_strategy(now))),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut fr = encode_one(&msg, 1, now);
        for (i, v) in edits {
            let i = i.index(fr.len());
            fr[i] = v;
        }
        let _ = decode(&fr, lookup, now);
        let _ = decode_bndreply(&fr, lookup, now);
        let short = &fr[..cut.index(fr.len() + 1)];
        let _ = decode(short, lookup, now);
        let _ = decode_bndreply(short, lookup, now);
    }
}
