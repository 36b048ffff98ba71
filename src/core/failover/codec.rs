//! Glue between the typed partner messages ([`PeerMsg`]) and the RFC 8156 wire codec
//! ([`super::wire`]): [`encode`] turns one message into one length-prefixed frame, [`decode`]
//! turns one frame's message (what [`Framer::next_frame`](super::wire::Framer::next_frame)
//! yields) back into a [`PeerMsg`] and its [`Header`].
//!
//! # Mapping
//!
//! | `PeerMsg` | Wire message and options |
//! |---|---|
//! | `State` | STATE: `OPTION_F_SERVER_STATE` (`state`), `OPTION_F_SERVER_FLAGS` (STARTUP if `starting`, COMMUNICATED if `communicated`), `OPTION_F_START_TIME_OF_STATE` (`since`) |
//! | `BndUpd` | BNDUPD carrying one client binding (below); transaction id = the message's `xid` |
//! | `BndReply` | BNDREPLY, transaction id = the message's `xid`; see *Deviations* |
//! | `UpdReq`, `UpdReqAll`, `UpdDone`, `PoolReq`, `Contact` | UPDREQ, UPDREQALL, UPDDONE, POOLREQ, CONTACT: header only |
//! | `PdShare` | BNDUPD with no binding and one top-level `OPTION_VENDOR_OPTS` holding the share (below) |
//! | `PdShareAck` | BNDREPLY with the same option (the share in force) and, if refused, the reject status |
//!
//! The share option (Tandem's; see *Deviations*):
//!
//! ```text
//! OPTION_VENDOR_OPTS (17) { enterprise-number = TANDEM_ENTERPRISE_NUMBER (32473),
//!   sub-option 3 (PD share, 41 octets): first delegated prefix (16) | delegated length (1)
//!                 | prefixes in the pool (u128) | the secondary's share in prefixes (u64;
//!                 u64::MAX asks for the secondary's share instead of setting it) }
//! ```
//!
//! A BNDUPD's binding follows digest §4.1:
//!
//! ```text
//! OPTION_CLIENT_DATA {
//!   OPTION_CLIENTID                 lease.duid
//!   OPTION_LQ_BASE_TIME             sent-time (now)
//!   OPTION_LQ_RELAY_DATA            lease.relay, if it has any (RFC 5007 §4.1.2.4)
//!   IA_NA (iaid, T1 = T2 = 0) { IAADDR (addr, preferred, valid) { ... } }        Address
//!   IA_PD (iaid, T1 = T2 = 0) { IAPREFIX (preferred, valid, len, addr) { ... } } Prefix
//! }
//! inside IAADDR / IAPREFIX:
//!   OPTION_F_BINDING_STATUS         Active → ACTIVE, Expired → EXPIRED,
//!                                   Released → RELEASED, Declined → ABANDONED
//!   OPTION_F_START_TIME_OF_STATE    Expired: lease.expires_at (when it expired); else lease.cltt
//!   OPTION_F_STATE_EXPIRATION_TIME  lease.expires_at
//!   OPTION_CLT_TIME                 lease.cltt, relative to OPTION_LQ_BASE_TIME
//!   OPTION_F_PARTNER_LIFETIME       the message's partner_lifetime
//!   OPTION_F_EXPIRATION_TIME        lease.expires_at (the client's expiration)
//! ```
//!
//! Times are Unix seconds in [`Lease`] and [`PeerMsg`], failover times on the wire
//! ([`to_failover_time`]); the decoder resolves every time to the value nearest `now_unix`
//! ([`from_failover_time`]), so times within about 68 years of the receiver's clock come back
//! exactly. In a binding a time of **0 means "none"**: its option is left out, and an absent
//! option decodes as 0 (this keeps a 0 from turning into a date in 2106 once the clock passes
//! 2038). STATE always carries its three options.
//!
//! On decode, fields that are not on the wire come back as 0: [`Lease::seq`],
//! [`Lease::partner_ack_until`] and [`Lease::partner_lifetime_received`] (the caller sets them:
//! the node stores the BNDUPD's `partner_lifetime` into `partner_lifetime_received`).
//! [`Lease::subnet_id`] is not on the wire either: the caller's `subnet_id_for(addr, kind)`
//! supplies it, and an address that belongs to no subnet is an error
//! ([`CodecError::UnknownSubnet`]; RFC 8156 answers that with ConfigurationConflict). An
//! address lease decodes with `prefix_len` 128 whatever the encoded lease held.
//!
//! # Deviations from RFC 8156 (digest §2–§4)
//!
//! - **BNDREPLY from [`encode`]**: RFC 8156 mirrors the binding in the reply and puts
//!   `OPTION_F_PARTNER_LIFETIME_SENT` (and a rejection's `OPTION_STATUS_CODE`) inside the echoed
//!   IAADDR / IAPREFIX (§4.3). [`PeerMsg::BndReply`] has no lease to echo, so [`encode`] writes
//!   both as **top-level** options of the BNDREPLY. [`decode`] reads them there or, from a
//!   conforming peer, inside the binding. [`encode_bndreply`] writes the conforming form when
//!   the caller has the lease, and [`decode_bndreply`] returns the echoed lease too.
//! - **Rejections** carry OutdatedBindingInformation (19) ([`REJECT_STATUS`]): `accepted:
//!   false` does not say why, and 19 is the code for "the receiver's data is more recent",
//!   the usual reason. Any non-success status at any level decodes as `accepted: false`.
//! - **Timeouts**: every binding status Tandem sends has a timeout in its model
//!   (`Lease::expires_at`), so the options that RFC 8156 sends only for statuses with a timeout
//!   (STATE_EXPIRATION_TIME, PARTNER_LIFETIME, EXPIRATION_TIME) go with every status, EXPIRED
//!   and RELEASED included. The partner lifetime must travel with them anyway: the BNDREPLY's
//!   echo of it is what acknowledges a free lease
//!   ([`Peer::on_reply`](super::peer::Peer::on_reply)).
//! - **START_TIME_OF_STATE** is approximated: leases do not record when their status began, so
//!   the client's last transaction time stands in for it (the time of the grant, release or
//!   decline), and `expires_at` for an EXPIRED lease.
//! - **T1 / T2** are sent as 0: leases do not store what the client was given.
//! - **STATE**: `OPTION_F_PARTNER_DOWN_TIME` goes with a STATE sent in PARTNER-DOWN
//!   (`partner_down_since`) and is decoded, but the receiver acts on nothing in it (it shows in
//!   `tandem ctl status`); the ACK_STARTUP flag is ignored. The state is sent as given: the
//!   node announces its resumed state with `starting` set, never STARTUP itself (§0.1 item 9),
//!   but a `state: Startup` would go out as value 1 (the parser accepts it).
//! - **Prefix shares**: RFC 8156 §5.2.2 moves delegable prefixes one by one, as BNDUPDs of a
//!   top-level IAPREFIX with status FREE or FREE-BACKUP. Tandem splits each pool by one number
//!   (`pool::share`), so a move is one BNDUPD carrying that number in a vendor option, and
//!   its acknowledgement a BNDREPLY carrying it back. Only a Tandem partner understands it;
//!   the partners of a pair are both Tandem.
//! - **Not supported** (decode errors, not silently dropped): a BNDUPD for a delegable prefix
//!   with no client (top-level IAPREFIX), IA_TA, more than one IA or address in a binding,
//!   and the binding statuses PENDING-FREE, FREE, FREE-BACKUP and RESET, which Tandem's leases
//!   cannot represent. POOLRESP, CONNECT, CONNECTREPLY and DISCONNECT belong to the link layer
//!   ([`CodecError::LinkLayer`]).
//!
//! No function in this module panics on any input.

use std::fmt;
use std::net::Ipv6Addr;

use crate::config::ResourceKind;
use crate::lease::{Lease, LeaseState, SharedBytes};
use crate::pool::PdPoolId;
use crate::wire::relay_data::RELAY_DATA_MAX_LEN;
use crate::wire::{DUID_MAX_LEN, DUID_MIN_LEN, Status};

use super::peer::PeerMsg;
use super::pools_digest::{TANDEM_ENTERPRISE_NUMBER, TANDEM_SUBOPT_PD_SHARE as SUBOPT_PD_SHARE};
use super::wire::{
    Binding, BindingContent, BindingStatus, BindingWriter, FAILOVER_HEADER_LEN, FailoverMessage,
    FailoverStatusCode, FailoverType, FailoverWireError, FailoverWriter, LeaseOptions,
    LeaseOptionsExt, LeaseWriter, MAX_TRANSACTION_ID, ServerFlags, absolute_clt_time, fopt,
    from_failover_time, to_failover_time,
};

/// Status code of a rejected binding update (`PeerMsg::BndReply { accepted: false, .. }`):
/// OutdatedBindingInformation (19).
pub const REJECT_STATUS: FailoverStatusCode = FailoverStatusCode::OutdatedBindingInformation;

/// Length of the share sub-option's data.
const PD_SHARE_LEN: usize = 16 + 1 + 16 + 8;

/// The vendor option body for a share of `pool`.
fn share_option(pool: &PdPoolId, share: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + 4 + PD_SHARE_LEN);
    b.extend_from_slice(&TANDEM_ENTERPRISE_NUMBER.to_be_bytes());
    b.extend_from_slice(&SUBOPT_PD_SHARE.to_be_bytes());
    b.extend_from_slice(&(PD_SHARE_LEN as u16).to_be_bytes());
    b.extend_from_slice(&pool.first.octets());
    b.push(pool.delegated_len);
    b.extend_from_slice(&pool.count.to_be_bytes());
    b.extend_from_slice(&share.to_be_bytes());
    b
}

/// The share a message's top-level vendor option carries: `Ok(None)` if it has no vendor
/// option of ours, an error if ours is malformed.
fn share_of(m: &FailoverMessage<'_>) -> Result<Option<(PdPoolId, u64)>, CodecError> {
    let Some(body) = m.first(crate::wire::opt::VENDOR_OPTS) else {
        return Ok(None);
    };
    let Some((pen, rest)) = body.split_first_chunk::<4>() else {
        return Err(CodecError::Malformed(
            "vendor option shorter than its enterprise number",
        ));
    };
    if u32::from_be_bytes(*pen) != TANDEM_ENTERPRISE_NUMBER {
        return Ok(None);
    }
    let Some((head, data)) = rest.split_first_chunk::<4>() else {
        return Err(CodecError::Malformed("share option without its sub-option"));
    };
    let (code, len) = (
        u16::from_be_bytes([head[0], head[1]]),
        u16::from_be_bytes([head[2], head[3]]) as usize,
    );
    if code != SUBOPT_PD_SHARE || len != PD_SHARE_LEN || data.len() != PD_SHARE_LEN {
        return Err(CodecError::Malformed(
            "share sub-option of the wrong code or length",
        ));
    }
    let (addr, rest) = data
        .split_first_chunk::<16>()
        .ok_or(CodecError::Malformed("share"))?;
    let (&[len], rest) = rest
        .split_first_chunk::<1>()
        .ok_or(CodecError::Malformed("share"))?;
    let (count, rest) = rest
        .split_first_chunk::<16>()
        .ok_or(CodecError::Malformed("share"))?;
    let share: &[u8; 8] = rest
        .try_into()
        .map_err(|_| CodecError::Malformed("share"))?;
    if len > 128 {
        return Err(CodecError::Malformed("share of a prefix length above 128"));
    }
    Ok(Some((
        PdPoolId {
            first: Ipv6Addr::from(*addr),
            delegated_len: len,
            count: u128::from_be_bytes(*count),
        },
        u64::from_be_bytes(*share),
    )))
}

/// Status message sent with [`REJECT_STATUS`].
const REJECT_MESSAGE: &str = "binding update refused";

/// The header of a decoded failover message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub msg_type: FailoverType,
    /// The 24-bit transaction id.
    pub xid: u32,
    /// sent-time as Unix seconds, resolved to the value nearest the receiver's clock.
    pub sent_time: u64,
}

/// A decoded BNDREPLY with the binding it echoes (see [`decode_bndreply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BndReplyEcho {
    /// The BNDUPD's transaction id.
    pub xid: u32,
    /// No error status anywhere in the reply.
    pub accepted: bool,
    /// `OPTION_F_PARTNER_LIFETIME_SENT` as Unix seconds (0 if absent).
    pub partner_lifetime_sent: u64,
    /// The echoed binding, if the reply carries `OPTION_CLIENT_DATA`: kind, address, prefix
    /// length, subnet (from the caller's lookup), DUID, IAID, binding status and, if echoed,
    /// the state expiration time as `expires_at`; everything else 0 (a conforming echo carries
    /// no lifetimes, §4.3).
    pub lease: Option<Lease>,
}

impl BndReplyEcho {
    /// The reply as a [`PeerMsg::BndReply`] (the echoed lease is dropped).
    pub fn to_msg(&self) -> PeerMsg {
        PeerMsg::BndReply {
            xid: self.xid,
            accepted: self.accepted,
            partner_lifetime_sent: self.partner_lifetime_sent,
        }
    }
}

/// Why a [`PeerMsg`] could not be encoded or a failover message could not be decoded into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes are not a valid failover message, or the message is too long to frame.
    Wire(FailoverWireError),
    /// A message the link layer handles (POOLRESP, CONNECT, CONNECTREPLY, DISCONNECT), not a
    /// [`PeerMsg`].
    LinkLayer(FailoverType),
    /// [`decode_bndreply`] was given another message type.
    UnexpectedType {
        /// The type wanted.
        expected: FailoverType,
        /// The type found.
        found: FailoverType,
    },
    /// A transaction id does not fit in 24 bits.
    XidOutOfRange(u32),
    /// Offers are never sent to the partner.
    OfferedLease,
    /// The lease cannot be put on the wire (DUID length, prefix length).
    InvalidLease(&'static str),
    /// A required option is absent (named).
    Missing(&'static str),
    /// The message carries a binding shape this codec does not map to a [`Lease`].
    UnsupportedBinding(&'static str),
    /// A binding status Tandem's leases cannot represent (PENDING-FREE, FREE, FREE-BACKUP,
    /// RESET).
    UnsupportedBindingStatus(BindingStatus),
    /// An option of ours is malformed (named).
    Malformed(&'static str),
    /// The caller's lookup found no subnet for the binding's address or prefix.
    UnknownSubnet {
        /// The address or prefix.
        addr: Ipv6Addr,
        /// Address or prefix.
        kind: ResourceKind,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Wire(e) => write!(f, "failover wire error: {e}"),
            CodecError::LinkLayer(t) => {
                write!(
                    f,
                    "{t} is a link-layer message, not a partner-session message"
                )
            }
            CodecError::UnexpectedType { expected, found } => {
                write!(f, "expected a {expected} message, got {found}")
            }
            CodecError::XidOutOfRange(x) => {
                write!(f, "transaction id {x:#x} does not fit in 24 bits")
            }
            CodecError::OfferedLease => {
                f.write_str("an offered lease is never sent to the partner")
            }
            CodecError::InvalidLease(why) => write!(f, "lease cannot be encoded: {why}"),
            CodecError::Missing(what) => write!(f, "required {what} is missing"),
            CodecError::Malformed(what) => write!(f, "malformed: {what}"),
            CodecError::UnsupportedBinding(what) => write!(f, "unsupported binding: {what}"),
            CodecError::UnsupportedBindingStatus(s) => {
                write!(f, "unsupported binding status {} ({s:?})", s.to_u8())
            }
            CodecError::UnknownSubnet { addr, kind } => {
                write!(f, "no subnet for {kind:?} {addr}")
            }
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FailoverWireError> for CodecError {
    fn from(e: FailoverWireError) -> Self {
        CodecError::Wire(e)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// Appends `msg` to `out` as one frame (2-octet length prefix + failover message) with
/// sent-time `now_unix`.
///
/// The transaction id is the message's own for [`PeerMsg::BndUpd`] and [`PeerMsg::BndReply`]
/// (a reply echoes its update's), and `xid` for every other message. See the
/// [module docs](self) for the option mapping and the deviations from RFC 8156, notably that a
/// [`PeerMsg::BndReply`] carries `OPTION_F_PARTNER_LIFETIME_SENT` at top level (use
/// [`encode_bndreply`] for the conforming, binding-echoing form).
///
/// Errors, leaving `out` unchanged: a transaction id above 24 bits, an
/// [`Offered`](LeaseState::Offered) lease, a DUID outside 3..=130 bytes or a prefix length above
/// 128.
pub fn encode(msg: &PeerMsg, xid: u32, now_unix: u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let sent = to_failover_time(now_unix);
    let mut buf = Vec::new();
    // The update requests and their answer carry their own transaction ids (the session's);
    // the other header-only messages take `xid`.
    let header_only = match msg {
        PeerMsg::UpdReq { xid } => Some((FailoverType::UpdReq, *xid)),
        PeerMsg::UpdReqAll { xid } => Some((FailoverType::UpdReqAll, *xid)),
        PeerMsg::UpdDone { xid } => Some((FailoverType::UpdDone, *xid)),
        PeerMsg::PoolReq => Some((FailoverType::PoolReq, xid)),
        PeerMsg::Contact => Some((FailoverType::Contact, xid)),
        PeerMsg::State { .. }
        | PeerMsg::BndUpd { .. }
        | PeerMsg::BndReply { .. }
        | PeerMsg::PdShare { .. }
        | PeerMsg::PdShareAck { .. } => None,
    };
    if let Some((t, xid)) = header_only {
        FailoverWriter::new(&mut buf, t, check_xid(xid)?, sent).frame_into(out)?;
        return Ok(());
    }
    match msg {
        PeerMsg::State {
            state,
            since,
            starting,
            communicated,
            partner_down_since,
        } => {
            let mut flags = ServerFlags::default();
            if *starting {
                flags = flags | ServerFlags::STARTUP;
            }
            if *communicated {
                flags = flags | ServerFlags::COMMUNICATED;
            }
            let mut w = FailoverWriter::new(&mut buf, FailoverType::State, check_xid(xid)?, sent);
            w.server_state(*state);
            w.server_flags(flags);
            w.start_time_of_state(to_failover_time(*since));
            if let Some(t) = wire_time(*partner_down_since) {
                w.partner_down_time(t);
            }
            w.frame_into(out)?;
        }
        PeerMsg::BndUpd {
            xid,
            lease,
            partner_lifetime,
        } => {
            let xid = check_xid(*xid)?;
            let status = binding_status_of(lease)?;
            let start = match lease.state {
                LeaseState::Expired => lease.expires_at,
                _ => lease.cltt,
            };
            let opts = LeaseOptions {
                binding_status: Some(status),
                start_time_of_state: wire_time(start),
                state_expiration_time: wire_time(lease.expires_at),
                // Relative to OPTION_LQ_BASE_TIME (= sent); wraps like the times themselves.
                clt_time: wire_time(lease.cltt).map(|t| sent.wrapping_sub(t)),
                partner_lifetime: wire_time(*partner_lifetime),
                expiration_time: wire_time(lease.expires_at),
                ..LeaseOptions::default()
            };
            let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, xid, sent);
            w.client_data(|b| {
                b.client_id(&lease.duid);
                b.lq_base_time(sent);
                if let Some((peer, chain)) = lease.relay.split_first_chunk::<16>() {
                    b.lq_relay_data(Ipv6Addr::from(*peer), chain);
                }
                write_resource(b, lease, lease.preferred_secs, lease.valid_secs, |l| {
                    l.lease_options(&opts)
                });
            });
            w.frame_into(out)?;
        }
        PeerMsg::BndReply {
            xid,
            accepted,
            partner_lifetime_sent,
        } => {
            let mut w =
                FailoverWriter::new(&mut buf, FailoverType::BndReply, check_xid(*xid)?, sent);
            if !*accepted {
                w.status_code(REJECT_STATUS, REJECT_MESSAGE);
            }
            if let Some(t) = wire_time(*partner_lifetime_sent) {
                // Deviation: top level, not inside an echoed IAADDR / IAPREFIX (module docs).
                w.option(fopt::F_PARTNER_LIFETIME_SENT, &t.to_be_bytes());
            }
            w.frame_into(out)?;
        }
        PeerMsg::PdShare { xid, pool, share } => {
            let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, check_xid(*xid)?, sent);
            w.option(crate::wire::opt::VENDOR_OPTS, &share_option(pool, *share));
            w.frame_into(out)?;
        }
        PeerMsg::PdShareAck {
            xid,
            pool,
            share,
            accepted,
        } => {
            let mut w =
                FailoverWriter::new(&mut buf, FailoverType::BndReply, check_xid(*xid)?, sent);
            if !*accepted {
                w.status_code(REJECT_STATUS, REJECT_MESSAGE);
            }
            w.option(crate::wire::opt::VENDOR_OPTS, &share_option(pool, *share));
            w.frame_into(out)?;
        }
        // Written above.
        PeerMsg::UpdReq { .. }
        | PeerMsg::UpdReqAll { .. }
        | PeerMsg::UpdDone { .. }
        | PeerMsg::PoolReq
        | PeerMsg::Contact => {}
    }
    Ok(())
}

/// Appends a BNDREPLY in RFC 8156 form (digest §4.3) to `out` as one frame: transaction id
/// `xid`, sent-time `now_unix`, and the binding of `lease` echoed as
///
/// ```text
/// OPTION_CLIENT_DATA { OPTION_CLIENTID, IA_NA | IA_PD (iaid, T1 = T2 = 0) {
///   IAADDR | IAPREFIX (address or prefix, lifetimes 0) {
///     [OPTION_STATUS_CODE 19 if !accepted], OPTION_F_BINDING_STATUS,
///     [OPTION_F_STATE_EXPIRATION_TIME = expires_at], [OPTION_F_PARTNER_LIFETIME_SENT] } } }
/// ```
///
/// `lease` is the binding as received in the BNDUPD being answered. Times of 0 are left out.
/// Same errors as [`encode`]. [`decode`] reads this form as a [`PeerMsg::BndReply`];
/// [`decode_bndreply`] also returns the echoed lease.
pub fn encode_bndreply(
    xid: u32,
    accepted: bool,
    partner_lifetime_sent: u64,
    lease: &Lease,
    now_unix: u64,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let xid = check_xid(xid)?;
    let status = binding_status_of(lease)?;
    let sent = to_failover_time(now_unix);
    let opts = LeaseOptions {
        status: (!accepted).then_some(Status {
            code: REJECT_STATUS.to_u16(),
            message: REJECT_MESSAGE.as_bytes(),
        }),
        binding_status: Some(status),
        state_expiration_time: wire_time(lease.expires_at),
        partner_lifetime_sent: wire_time(partner_lifetime_sent),
        ..LeaseOptions::default()
    };
    let mut buf = Vec::new();
    let mut w = FailoverWriter::new(&mut buf, FailoverType::BndReply, xid, sent);
    w.client_data(|b| {
        b.client_id(&lease.duid);
        write_resource(b, lease, 0, 0, |l| l.lease_options(&opts));
    });
    w.frame_into(out)?;
    Ok(())
}

/// Writes the IA_NA { IAADDR } or IA_PD { IAPREFIX } of `lease` (validated by
/// [`binding_status_of`]); `body` writes the options inside the IAADDR / IAPREFIX.
fn write_resource(
    b: &mut BindingWriter<'_, '_>,
    lease: &Lease,
    preferred_secs: u32,
    valid_secs: u32,
    body: impl FnOnce(&mut LeaseWriter<'_, '_>),
) {
    match lease.kind {
        ResourceKind::Address => b.ia_na(lease.iaid, 0, 0, |ia| {
            ia.ia_addr(lease.addr, preferred_secs, valid_secs, body)
        }),
        ResourceKind::Prefix => b.ia_pd(lease.iaid, 0, 0, |ia| {
            ia.ia_prefix(
                lease.addr,
                lease.prefix_len,
                preferred_secs,
                valid_secs,
                body,
            )
        }),
    }
}

/// Whether `lease` can be put on the wire in a BNDUPD (a DUID of 3..=130 bytes, a prefix
/// length up to 128, not an offer); the reason if not.
pub fn check_sendable(lease: &Lease) -> Result<(), CodecError> {
    binding_status_of(lease).map(|_| ())
}

/// The binding status to send for `lease`, after checking that it can be put on the wire.
fn binding_status_of(lease: &Lease) -> Result<BindingStatus, CodecError> {
    if !(DUID_MIN_LEN..=DUID_MAX_LEN).contains(&lease.duid.len()) {
        return Err(CodecError::InvalidLease("DUID must be 3..=130 bytes"));
    }
    if lease.kind == ResourceKind::Prefix && lease.prefix_len > 128 {
        return Err(CodecError::InvalidLease("prefix length above 128"));
    }
    Ok(match lease.state {
        LeaseState::Active => BindingStatus::Active,
        LeaseState::Expired => BindingStatus::Expired,
        LeaseState::Released => BindingStatus::Released,
        LeaseState::Declined => BindingStatus::Abandoned,
        LeaseState::Offered => return Err(CodecError::OfferedLease),
    })
}

/// The lease state for a received binding status.
fn lease_state_of(s: BindingStatus) -> Result<LeaseState, CodecError> {
    Ok(match s {
        BindingStatus::Active => LeaseState::Active,
        BindingStatus::Expired => LeaseState::Expired,
        BindingStatus::Released => LeaseState::Released,
        BindingStatus::Abandoned => LeaseState::Declined,
        BindingStatus::PendingFree
        | BindingStatus::Free
        | BindingStatus::FreeBackup
        | BindingStatus::Reset => return Err(CodecError::UnsupportedBindingStatus(s)),
    })
}

fn check_xid(xid: u32) -> Result<u32, CodecError> {
    if xid <= MAX_TRANSACTION_ID {
        Ok(xid)
    } else {
        Err(CodecError::XidOutOfRange(xid))
    }
}

/// A binding time for the wire: 0 ("none") is left out.
fn wire_time(unix: u64) -> Option<u32> {
    (unix != 0).then(|| to_failover_time(unix))
}

/// A binding time from the wire: absent is 0.
fn unix_time(t: Option<u32>, now_unix: u64) -> u64 {
    t.map_or(0, |t| from_failover_time(t, now_unix))
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// Reads just the 8-octet header of a failover message (without its frame length prefix),
/// without validating the options: for answering a message [`decode`] rejected (e.g. a
/// BNDREPLY with ConfigurationConflict for a BNDUPD whose address has no subnet).
pub fn peek_header(frame: &[u8], now_unix: u64) -> Result<Header, CodecError> {
    let Some(h) = frame.first_chunk::<FAILOVER_HEADER_LEN>() else {
        return Err(CodecError::Wire(FailoverWireError::Truncated));
    };
    let [t, x1, x2, x3, s0, s1, s2, s3] = *h;
    Ok(Header {
        msg_type: FailoverType::try_from(t)?,
        xid: u32::from_be_bytes([0, x1, x2, x3]),
        sent_time: from_failover_time(u32::from_be_bytes([s0, s1, s2, s3]), now_unix),
    })
}

/// Decodes one failover message (without its 2-octet length prefix, as
/// [`Framer::next_frame`](super::wire::Framer::next_frame) yields it) into a [`PeerMsg`] and
/// its [`Header`]; times resolve to the values nearest `now_unix`.
///
/// `subnet_id_for(addr, kind)` supplies a BNDUPD lease's [`Lease::subnet_id`], which is not on
/// the wire; `None` fails with [`CodecError::UnknownSubnet`]. It is not called for other
/// messages. Lease fields that are not on the wire decode as 0 (see the [module docs](self)).
///
/// A BNDREPLY decodes from either form: the top-level options [`encode`] writes or the echoed
/// binding of [`encode_bndreply`] / RFC 8156. It is `accepted` unless some
/// `OPTION_STATUS_CODE` in it, at any level, is not Success.
///
/// Errors: any wire error; POOLRESP, CONNECT, CONNECTREPLY and DISCONNECT
/// ([`CodecError::LinkLayer`]); a STATE without server state, flags or start time; a BNDUPD
/// whose binding is missing or of an unsupported shape or status (see the module docs).
pub fn decode(
    frame: &[u8],
    subnet_id_for: impl Fn(Ipv6Addr, ResourceKind) -> Option<u32>,
    now_unix: u64,
) -> Result<(PeerMsg, Header), CodecError> {
    let m = FailoverMessage::parse(frame)?;
    let h = header_of(&m, now_unix);
    // A BNDUPD or BNDREPLY without a binding may carry a prefix share instead.
    let share = match m.msg_type() {
        FailoverType::BndUpd | FailoverType::BndReply if m.binding().is_none() => share_of(&m)?,
        _ => None,
    };
    if let Some((pool, share)) = share {
        let msg = if m.msg_type() == FailoverType::BndUpd {
            PeerMsg::PdShare {
                xid: h.xid,
                pool,
                share,
            }
        } else {
            PeerMsg::PdShareAck {
                xid: h.xid,
                pool,
                share,
                accepted: reply_outcome(&m, now_unix).0,
            }
        };
        return Ok((msg, h));
    }
    let msg = match m.msg_type() {
        FailoverType::State => {
            let s = m.state();
            let state = s
                .server_state
                .ok_or(CodecError::Missing("OPTION_F_SERVER_STATE"))?;
            let flags = s
                .server_flags
                .ok_or(CodecError::Missing("OPTION_F_SERVER_FLAGS"))?;
            let since = s
                .start_time_of_state
                .ok_or(CodecError::Missing("OPTION_F_START_TIME_OF_STATE"))?;
            PeerMsg::State {
                state,
                since: from_failover_time(since, now_unix),
                starting: flags.startup(),
                communicated: flags.communicated(),
                partner_down_since: unix_time(s.partner_down_time, now_unix),
            }
        }
        FailoverType::BndUpd => {
            let b = match m.binding() {
                Some(BindingContent::Client(b)) => b,
                Some(BindingContent::Prefix(_)) => {
                    return Err(CodecError::UnsupportedBinding(
                        "top-level IAPREFIX (delegable prefix without a client)",
                    ));
                }
                None => return Err(CodecError::Missing("OPTION_CLIENT_DATA")),
            };
            let (lease, partner_lifetime) = lease_of(&b, m.sent_time(), &subnet_id_for, now_unix)?;
            PeerMsg::BndUpd {
                xid: h.xid,
                lease,
                partner_lifetime,
            }
        }
        FailoverType::BndReply => {
            let (accepted, partner_lifetime_sent) = reply_outcome(&m, now_unix);
            PeerMsg::BndReply {
                xid: h.xid,
                accepted,
                partner_lifetime_sent,
            }
        }
        FailoverType::UpdReq => PeerMsg::UpdReq { xid: h.xid },
        FailoverType::UpdReqAll => PeerMsg::UpdReqAll { xid: h.xid },
        FailoverType::UpdDone => PeerMsg::UpdDone { xid: h.xid },
        FailoverType::PoolReq => PeerMsg::PoolReq,
        FailoverType::Contact => PeerMsg::Contact,
        t @ (FailoverType::PoolResp
        | FailoverType::Connect
        | FailoverType::ConnectReply
        | FailoverType::Disconnect) => return Err(CodecError::LinkLayer(t)),
    };
    Ok((msg, h))
}

/// Decodes a BNDREPLY like [`decode`] and also returns the binding it echoes, if it carries
/// `OPTION_CLIENT_DATA` (as [`encode_bndreply`] and RFC 8156 peers write it; [`encode`]'s form
/// has none). The echoed lease is decoded like a BNDUPD's (`subnet_id_for` as in [`decode`]).
///
/// Errors: as [`decode`], [`CodecError::UnexpectedType`] for any other message type, and
/// [`CodecError::UnsupportedBinding`] for an echoed top-level IAPREFIX.
pub fn decode_bndreply(
    frame: &[u8],
    subnet_id_for: impl Fn(Ipv6Addr, ResourceKind) -> Option<u32>,
    now_unix: u64,
) -> Result<(BndReplyEcho, Header), CodecError> {
    let m = FailoverMessage::parse(frame)?;
    let h = header_of(&m, now_unix);
    if h.msg_type != FailoverType::BndReply {
        return Err(CodecError::UnexpectedType {
            expected: FailoverType::BndReply,
            found: h.msg_type,
        });
    }
    let (accepted, partner_lifetime_sent) = reply_outcome(&m, now_unix);
    let lease = match m.binding() {
        Some(BindingContent::Client(b)) => {
            Some(lease_of(&b, m.sent_time(), &subnet_id_for, now_unix)?.0)
        }
        Some(BindingContent::Prefix(_)) => {
            return Err(CodecError::UnsupportedBinding(
                "top-level IAPREFIX (delegable prefix without a client)",
            ));
        }
        None => None,
    };
    Ok((
        BndReplyEcho {
            xid: h.xid,
            accepted,
            partner_lifetime_sent,
            lease,
        },
        h,
    ))
}

fn header_of(m: &FailoverMessage<'_>, now_unix: u64) -> Header {
    Header {
        msg_type: m.msg_type(),
        xid: m.transaction_id(),
        sent_time: from_failover_time(m.sent_time(), now_unix),
    }
}

/// The one address or prefix of a binding, with its failover options.
struct Resource<'a> {
    kind: ResourceKind,
    iaid: u32,
    addr: Ipv6Addr,
    prefix_len: u8,
    preferred_secs: u32,
    valid_secs: u32,
    opts: LeaseOptions<'a>,
}

/// Finds the single IA_NA { IAADDR } or IA_PD { IAPREFIX } of a binding.
fn resource<'a>(b: &Binding<'a>) -> Result<Resource<'a>, CodecError> {
    if b.ia_tas().next().is_some() {
        return Err(CodecError::UnsupportedBinding("IA_TA"));
    }
    let (nas, pds) = (b.ia_nas().count(), b.ia_pds().count());
    if nas + pds > 1 {
        return Err(CodecError::UnsupportedBinding(
            "more than one IA in a binding",
        ));
    }
    if let Some(na) = b.ia_nas().next() {
        let mut it = na.addresses();
        let a = it.next().ok_or(CodecError::Missing("OPTION_IAADDR"))?;
        if it.next().is_some() {
            return Err(CodecError::UnsupportedBinding(
                "more than one IAADDR in an IA_NA",
            ));
        }
        return Ok(Resource {
            kind: ResourceKind::Address,
            iaid: na.iaid,
            addr: a.addr,
            prefix_len: 128,
            preferred_secs: a.preferred_secs,
            valid_secs: a.valid_secs,
            opts: a.lease_options(),
        });
    }
    if let Some(pd) = b.ia_pds().next() {
        let mut it = pd.prefixes();
        let p = it.next().ok_or(CodecError::Missing("OPTION_IAPREFIX"))?;
        if it.next().is_some() {
            return Err(CodecError::UnsupportedBinding(
                "more than one IAPREFIX in an IA_PD",
            ));
        }
        return Ok(Resource {
            kind: ResourceKind::Prefix,
            iaid: pd.iaid,
            addr: p.prefix,
            prefix_len: p.prefix_len,
            preferred_secs: p.preferred_secs,
            valid_secs: p.valid_secs,
            opts: p.lease_options(),
        });
    }
    Err(CodecError::Missing("IA_NA or IA_PD"))
}

/// The lease of a binding and its partner lifetime (Unix seconds, 0 if absent).
///
/// `sent_time` stands in for a missing `OPTION_LQ_BASE_TIME`. The last client transaction
/// time comes from `OPTION_CLT_TIME` (inside the IAADDR / IAPREFIX, or at the
/// `OPTION_CLIENT_DATA` level as leasequery places it), else from START_TIME_OF_STATE unless
/// the status is EXPIRED (digest §4.5 uses it the same way); `expires_at` from
/// STATE_EXPIRATION_TIME, else EXPIRATION_TIME.
fn lease_of(
    b: &Binding<'_>,
    sent_time: u32,
    subnet_id_for: &impl Fn(Ipv6Addr, ResourceKind) -> Option<u32>,
    now_unix: u64,
) -> Result<(Lease, u64), CodecError> {
    let duid = b
        .client_id()
        .ok_or(CodecError::Missing("OPTION_CLIENTID"))?;
    let r = resource(b)?;
    let status = r
        .opts
        .binding_status
        .ok_or(CodecError::Missing("OPTION_F_BINDING_STATUS"))?;
    let state = lease_state_of(status)?;
    let subnet_id = subnet_id_for(r.addr, r.kind).ok_or(CodecError::UnknownSubnet {
        addr: r.addr,
        kind: r.kind,
    })?;
    let base = b.lq_base_time().unwrap_or(sent_time);
    let cltt = match r.opts.clt_time.or(b.clt_time()) {
        Some(ago) => Some(absolute_clt_time(base, ago)),
        None if state != LeaseState::Expired => r.opts.start_time_of_state,
        None => None,
    };
    let expires_at = r.opts.state_expiration_time.or(r.opts.expiration_time);
    let lease = Lease {
        kind: r.kind,
        addr: r.addr,
        prefix_len: r.prefix_len,
        subnet_id,
        state,
        duid: duid.into(),
        iaid: r.iaid,
        preferred_secs: r.preferred_secs,
        valid_secs: r.valid_secs,
        cltt: unix_time(cltt, now_unix),
        expires_at: unix_time(expires_at, now_unix),
        seq: 0,
        partner_ack_until: 0,
        partner_lifetime_received: 0,
        relay: relay_data_of(b),
        partner_seq: 0,
    };
    Ok((lease, unix_time(r.opts.partner_lifetime, now_unix)))
}

/// The binding's OPTION_LQ_RELAY_DATA as a lease keeps it (its payload), or nothing if it has
/// none or more than a lease keeps.
fn relay_data_of(b: &Binding<'_>) -> SharedBytes {
    match b.lq_relay_data() {
        Some(d) if 16 + d.relay_message.len() <= RELAY_DATA_MAX_LEN => {
            // Collected straight into the shared buffer: one allocation, one copy.
            let bytes: std::sync::Arc<[u8]> = d
                .peer_address
                .octets()
                .iter()
                .chain(d.relay_message)
                .copied()
                .collect();
            bytes.into()
        }
        _ => SharedBytes::default(),
    }
}

/// A BNDREPLY's outcome: accepted (no error status at any level) and the partner lifetime
/// echoed (from the binding if there, else top level; 0 if absent).
fn reply_outcome(m: &FailoverMessage<'_>, now_unix: u64) -> (bool, u64) {
    let is_error = |s: Option<Status<'_>>| s.is_some_and(|s| s.code != 0);
    let mut rejected = is_error(m.status());
    let mut sent: Option<u32> = None;
    let mut note = |o: LeaseOptions<'_>, rejected: &mut bool| {
        *rejected |= is_error(o.status);
        sent = sent.or(o.partner_lifetime_sent);
    };
    match m.binding() {
        Some(BindingContent::Client(b)) => {
            rejected |= is_error(b.status());
            for na in b.ia_nas() {
                rejected |= is_error(na.status());
                na.addresses()
                    .for_each(|a| note(a.lease_options(), &mut rejected));
            }
            for ta in b.ia_tas() {
                rejected |= is_error(ta.status());
                ta.addresses()
                    .for_each(|a| note(a.lease_options(), &mut rejected));
            }
            for pd in b.ia_pds() {
                rejected |= is_error(pd.status());
                pd.prefixes()
                    .for_each(|p| note(p.lease_options(), &mut rejected));
            }
        }
        Some(BindingContent::Prefix(p)) => note(p.lease_options(), &mut rejected),
        None => {}
    }
    let top = m
        .first(fopt::F_PARTNER_LIFETIME_SENT)
        .and_then(|d| <[u8; 4]>::try_from(d).ok())
        .map(u32::from_be_bytes);
    (!rejected, unix_time(sent.or(top), now_unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_760_000_000;

    fn lease(state: LeaseState) -> Lease {
        Lease {
            kind: ResourceKind::Address,
            addr: "2001:db8::7".parse().unwrap(),
            prefix_len: 128,
            subnet_id: 3,
            state,
            duid: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6].into(),
            iaid: 9,
            preferred_secs: 300,
            valid_secs: 600,
            cltt: NOW - 20,
            expires_at: NOW + 580,
            seq: 0,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        }
    }

    fn roundtrip(msg: &PeerMsg, xid: u32) -> (PeerMsg, Header) {
        let mut out = Vec::new();
        encode(msg, xid, NOW, &mut out).unwrap();
        let len = usize::from(u16::from_be_bytes([out[0], out[1]]));
        assert_eq!(len + 2, out.len());
        decode(&out[2..], |_, _| Some(3), NOW).unwrap()
    }

    #[test]
    fn status_mapping_is_a_bijection_on_stored_states() {
        for s in [
            LeaseState::Active,
            LeaseState::Expired,
            LeaseState::Released,
            LeaseState::Declined,
        ] {
            let b = binding_status_of(&lease(s)).unwrap();
            assert_eq!(lease_state_of(b), Ok(s));
        }
        assert_eq!(
            binding_status_of(&lease(LeaseState::Declined)),
            Ok(BindingStatus::Abandoned)
        );
        assert_eq!(
            binding_status_of(&lease(LeaseState::Offered)),
            Err(CodecError::OfferedLease)
        );
        for b in [
            BindingStatus::PendingFree,
            BindingStatus::Free,
            BindingStatus::FreeBackup,
            BindingStatus::Reset,
        ] {
            assert_eq!(
                lease_state_of(b),
                Err(CodecError::UnsupportedBindingStatus(b))
            );
        }
    }

    #[test]
    fn relay_data_travels_with_the_binding_and_an_oversized_one_is_dropped() {
        let mut l = lease(LeaseState::Active);
        // peer-address, then one Relay-forw level holding a Remote-ID.
        let mut relay = vec![0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        relay.extend([12, 0]);
        relay.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        relay.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]);
        relay.extend([0, 37, 0, 6, 0, 0, 0, 9, b'l', b'1']);
        l.relay = relay.clone().into();
        let msg = PeerMsg::BndUpd {
            xid: 5,
            lease: l.clone(),
            partner_lifetime: NOW + 900,
        };
        let (PeerMsg::BndUpd { lease: back, .. }, _) = roundtrip(&msg, 5) else {
            panic!("not a BNDUPD");
        };
        assert_eq!(&*back.relay, &relay[..]);
        // More than a lease keeps: the binding goes through without it.
        l.relay = vec![7; RELAY_DATA_MAX_LEN + 1].into();
        let msg = PeerMsg::BndUpd {
            xid: 6,
            lease: l,
            partner_lifetime: NOW + 900,
        };
        let (PeerMsg::BndUpd { lease: back, .. }, _) = roundtrip(&msg, 6) else {
            panic!("not a BNDUPD");
        };
        assert!(back.relay.is_empty());
    }

    #[test]
    fn zero_times_are_left_out() {
        // What this means for encoded frames is checked in tests/failover_codec.rs
        // (zero_binding_times_are_absent).
        assert_eq!(wire_time(0), None);
        assert_eq!(unix_time(None, NOW), 0);
        assert_eq!(unix_time(wire_time(NOW + 5), NOW), NOW + 5);
    }

    #[test]
    fn xid_and_lease_checks() {
        let mut out = vec![7];
        assert_eq!(
            encode(&PeerMsg::Contact, 0x0100_0000, NOW, &mut out),
            Err(CodecError::XidOutOfRange(0x0100_0000))
        );
        let mut l = lease(LeaseState::Active);
        l.duid = vec![1, 2].into();
        let upd = |lease| PeerMsg::BndUpd {
            xid: 1,
            lease,
            partner_lifetime: NOW,
        };
        assert!(matches!(
            encode(&upd(l.clone()), 0, NOW, &mut out),
            Err(CodecError::InvalidLease(_))
        ));
        l.duid = vec![0; 131].into();
        assert!(encode(&upd(l.clone()), 0, NOW, &mut out).is_err());
        let mut p = lease(LeaseState::Active);
        p.kind = ResourceKind::Prefix;
        p.prefix_len = 129;
        assert!(encode(&upd(p), 0, NOW, &mut out).is_err());
        assert_eq!(out, [7], "out untouched on error");
        // The update requests and UPDDONE carry their own ids, whatever `xid` says.
        let done = PeerMsg::UpdDone {
            xid: MAX_TRANSACTION_ID,
        };
        let (m, h) = roundtrip(&done, 5);
        assert_eq!((&m, h.xid), (&done, MAX_TRANSACTION_ID));
        let req = PeerMsg::UpdReqAll { xid: 42 };
        let (m, h) = roundtrip(&req, 5);
        assert_eq!((&m, h.xid), (&req, 42));
    }

    #[test]
    fn prefix_shares_round_trip_and_malformed_ones_are_refused() {
        let pool = PdPoolId {
            first: "2001:db8:8000::".parse().unwrap(),
            delegated_len: 56,
            count: 65_536,
        };
        let share = PeerMsg::PdShare {
            xid: 77,
            pool,
            share: 6553,
        };
        let (m, h) = roundtrip(&share, 0);
        assert_eq!(
            (m, h.msg_type, h.xid),
            (share.clone(), FailoverType::BndUpd, 77)
        );
        for accepted in [true, false] {
            let ack = PeerMsg::PdShareAck {
                xid: 77,
                pool,
                share: u64::MAX,
                accepted,
            };
            let (m, h) = roundtrip(&ack, 0);
            assert_eq!((m, h.msg_type), (ack.clone(), FailoverType::BndReply));
        }
        // A BNDUPD with neither a binding nor our option is still refused as before, and so
        // is ours with a sub-option cut short.
        let mut out = Vec::new();
        encode(&share, 0, NOW, &mut out).unwrap();
        let mut buf = Vec::new();
        FailoverWriter::new(&mut buf, FailoverType::BndUpd, 1, 0)
            .frame_into(&mut out)
            .unwrap();
        let bare = out.split_off(out.len() - FAILOVER_HEADER_LEN - 2);
        assert_eq!(
            decode(&bare[2..], |_, _| Some(3), NOW),
            Err(CodecError::Missing("OPTION_CLIENT_DATA"))
        );
        let mut body = share_option(&pool, 5);
        body.truncate(body.len() - 1);
        let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, 1, 0);
        w.option(crate::wire::opt::VENDOR_OPTS, &body);
        let mut short = Vec::new();
        w.frame_into(&mut short).unwrap();
        assert!(matches!(
            decode(&short[2..], |_, _| Some(3), NOW),
            Err(CodecError::Malformed(_))
        ));
        // Another enterprise's vendor option is not ours.
        let mut other = share_option(&pool, 5);
        other[..4].copy_from_slice(&9u32.to_be_bytes());
        let mut buf2 = Vec::new();
        let mut w = FailoverWriter::new(&mut buf2, FailoverType::BndUpd, 1, 0);
        w.option(crate::wire::opt::VENDOR_OPTS, &other);
        let mut theirs = Vec::new();
        w.frame_into(&mut theirs).unwrap();
        assert_eq!(
            decode(&theirs[2..], |_, _| Some(3), NOW),
            Err(CodecError::Missing("OPTION_CLIENT_DATA"))
        );
    }

    #[test]
    fn errors_display() {
        let all = [
            CodecError::Wire(FailoverWireError::Truncated),
            CodecError::LinkLayer(FailoverType::Connect),
            CodecError::UnexpectedType {
                expected: FailoverType::BndReply,
                found: FailoverType::State,
            },
            CodecError::XidOutOfRange(1 << 24),
            CodecError::OfferedLease,
            CodecError::InvalidLease("x"),
            CodecError::Missing("x"),
            CodecError::UnsupportedBinding("x"),
            CodecError::UnsupportedBindingStatus(BindingStatus::Free),
            CodecError::UnknownSubnet {
                addr: Ipv6Addr::LOCALHOST,
                kind: ResourceKind::Address,
            },
        ];
        for e in all {
            assert!(!e.to_string().is_empty());
        }
        assert!(
            CodecError::LinkLayer(FailoverType::Connect)
                .to_string()
                .contains("CONNECT")
        );
    }
}
