//! RFC 8156 (DHCPv6 Failover Protocol) wire codec.
//!
//! Same shape as the DHCPv6 codec in [`crate::wire`], on which it builds: a checked view
//! ([`FailoverMessage::parse`]) validates every length, fixed option size and enumerated value
//! once, after which every accessor is infallible and borrows the input; nothing is allocated
//! while parsing. Option iteration reuses [`OptionIter`]/[`RawOption`], the IA views reuse
//! [`IaNa`](crate::wire::IaNa), [`IaPd`](crate::wire::IaPd), [`IaAddr`] and [`IaPrefix`], and
//! status codes reuse [`Status`](crate::wire::Status). Emission goes through
//! [`FailoverWriter`], which wraps [`OptionWriter`](crate::wire::OptionWriter) and writes into a
//! caller-owned, reused `Vec<u8>` with back-patched lengths.
//!
//! Transport: one TCP connection per relationship on [`FAILOVER_PORT`]; each message is
//! preceded by a 2-octet big-endian length that counts only the message ([`Framer`],
//! [`write_frame`]).
//!
//! Message layout (8-octet header, then DHCPv6-style options):
//!
//! ```text
//! msg-type (1) | transaction-id (3) | sent-time (4) | options ...
//! ```
//!
//! A binding travels in BNDUPD/BNDREPLY as
//! `OPTION_CLIENT_DATA { OPTION_CLIENTID, OPTION_LQ_BASE_TIME, IA_NA|IA_TA|IA_PD { IAADDR|IAPREFIX
//! { OPTION_F_BINDING_STATUS, OPTION_F_START_TIME_OF_STATE, ... } } }`, or, for a delegable
//! prefix with no client, as one top-level `OPTION_IAPREFIX { ... }` (see [`Binding`],
//! [`BindingContent`], [`LeaseOptions`]).
//!
//! No function in this module panics on any input.

mod binding;
mod frame;
mod message;
mod options;
mod writer;

use std::fmt;

#[cfg(doc)]
use crate::wire::{IaAddr, IaPrefix};
pub use crate::wire::{OptionIter, RawOption, WireError};

pub use binding::{Binding, BindingContent, IaTa, IaTaIter, LeaseOptionsExt};
pub use frame::{FRAME_PREFIX_LEN, FRAMER_BUFFER_LEN, Framer, MAX_FRAME_LEN, write_frame};
pub use message::FailoverMessage;
pub use options::{
    BindingStatus, ConnectFlags, ConnectOptions, DnsFlags, DnsRemovalInfo, FailoverStatusCode,
    LeaseOptions, LqRelayData, ProtocolVersion, ReconfigureData, ServerFlags, ServerState,
    StateOptions, fopt,
};
pub use writer::{BindingWriter, FailoverWriter, IaWriter, LeaseWriter};

/// TCP port of the "dhcp-failover" service (RFC 8156 §5.1).
pub const FAILOVER_PORT: u16 = 647;

/// Length of the failover message header: msg-type (1) + transaction-id (3) + sent-time (4).
pub const FAILOVER_HEADER_LEN: usize = 8;

/// The failover epoch, 2000-01-01 00:00:00 UTC, in Unix seconds.
pub const FAILOVER_EPOCH_UNIX: u64 = 946_684_800;

/// Largest transaction id (24 bits).
pub const MAX_TRANSACTION_ID: u32 = 0x00FF_FFFF;

/// Converts Unix seconds to a failover absolute time: seconds since 2000-01-01 UTC, mod 2^32.
///
/// Times before the epoch wrap modulo 2^32 as well.
pub fn to_failover_time(unix_secs: u64) -> u32 {
    // Truncation to 32 bits is the protocol's "modulo 2^32".
    unix_secs.wrapping_sub(FAILOVER_EPOCH_UNIX) as u32
}

/// Converts a failover absolute time back to Unix seconds, picking the value congruent to `t`
/// (mod 2^32) that is nearest to `near_unix_secs` (within -2^31..2^31 seconds of it).
///
/// Use the local clock (or the message's receive time) as the reference. The result saturates
/// at 0 and `u64::MAX` instead of wrapping.
pub fn from_failover_time(t: u32, near_unix_secs: u64) -> u64 {
    let near = to_failover_time(near_unix_secs);
    // Signed distance from the reference, in -2^31..2^31: reinterpreting the wrapped difference
    // as i32 is exactly the "nearest representative" choice.
    let delta = t.wrapping_sub(near) as i32;
    near_unix_secs.saturating_add_signed(i64::from(delta))
}

/// Absolute client-last-transaction time from the relative `OPTION_CLT_TIME` (seconds since the
/// last contact) and the `OPTION_LQ_BASE_TIME` it is relative to (both failover times).
pub fn absolute_clt_time(lq_base_time: u32, clt_time: u32) -> u32 {
    lq_base_time.wrapping_sub(clt_time)
}

/// Why a received failover message or stream was rejected.
///
/// Options have the DHCPv6 format, so a malformed option is reported as the DHCPv6 codec
/// reports it: [`FailoverWireError::Option`] wraps the [`WireError`].
/// [`Display`](fmt::Display) gives a plain-words description for logs;
/// [`FailoverWireError::kind`] a short stable label for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverWireError {
    /// The message is shorter than the 8-octet failover header.
    Truncated,
    /// A malformed option, at any nesting level: only the option-level [`WireError`]s
    /// ([`TruncatedOption`](WireError::TruncatedOption),
    /// [`OptionOverrun`](WireError::OptionOverrun),
    /// [`BadOptionLength`](WireError::BadOptionLength),
    /// [`DuplicateOption`](WireError::DuplicateOption),
    /// [`BadPrefixLength`](WireError::BadPrefixLength)) occur here.
    Option(WireError),
    /// The message type is not one of the failover types 24..=35.
    UnknownMessageType(u8),
    /// `OPTION_F_BINDING_STATUS` holds a value outside 1..=8.
    BadBindingStatus(u8),
    /// `OPTION_F_SERVER_STATE` holds a value outside 1..=10.
    BadServerState(u8),
    /// A text option (e.g. `OPTION_F_RELATIONSHIP_NAME`) is not valid UTF-8.
    BadText {
        /// Option code of the offending option.
        code: u16,
    },
    /// The message carries more than one binding (`OPTION_CLIENT_DATA` and/or top-level
    /// `OPTION_IAPREFIX`); BNDUPD/BNDREPLY carry exactly one.
    MultipleBindings,
    /// Framing: the length prefix announces fewer bytes than a failover header.
    FrameTooShort {
        /// The announced length.
        len: usize,
    },
    /// Framing: the length prefix announces more than the framer's maximum frame length.
    FrameTooLong {
        /// The announced length.
        len: usize,
    },
    /// Emission only: a message longer than 65535 bytes cannot be framed.
    TooLong,
}

impl FailoverWireError {
    /// Short, stable label for metrics and drop counters.
    pub fn kind(&self) -> &'static str {
        match self {
            FailoverWireError::Truncated => "truncated",
            FailoverWireError::Option(e) => e.kind(),
            FailoverWireError::UnknownMessageType(_) => "unknown_msg_type",
            FailoverWireError::BadBindingStatus(_) => "bad_binding_status",
            FailoverWireError::BadServerState(_) => "bad_server_state",
            FailoverWireError::BadText { .. } => "bad_text",
            FailoverWireError::MultipleBindings => "multiple_bindings",
            FailoverWireError::FrameTooShort { .. } => "frame_too_short",
            FailoverWireError::FrameTooLong { .. } => "frame_too_long",
            FailoverWireError::TooLong => "too_long",
        }
    }
}

impl fmt::Display for FailoverWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FailoverWireError::Truncated => {
                f.write_str("message is shorter than the 8-byte failover header")
            }
            FailoverWireError::Option(e) => fmt::Display::fmt(&e, f),
            FailoverWireError::UnknownMessageType(t) => {
                write!(f, "unknown failover message type {t}")
            }
            FailoverWireError::BadBindingStatus(v) => write!(f, "invalid binding-status {v}"),
            FailoverWireError::BadServerState(v) => write!(f, "invalid server-state {v}"),
            FailoverWireError::BadText { code } => {
                write!(f, "option {code} is not valid UTF-8")
            }
            FailoverWireError::MultipleBindings => {
                f.write_str("message carries more than one binding")
            }
            FailoverWireError::FrameTooShort { len } => {
                write!(f, "frame length {len} is shorter than a failover header")
            }
            FailoverWireError::FrameTooLong { len } => {
                write!(f, "frame length {len} exceeds the maximum frame length")
            }
            FailoverWireError::TooLong => {
                f.write_str("a failover message would be longer than 65535 bytes")
            }
        }
    }
}

impl std::error::Error for FailoverWireError {}

impl From<WireError> for FailoverWireError {
    fn from(e: WireError) -> Self {
        FailoverWireError::Option(e)
    }
}

options::wire_enum! {
    /// Failover message type (RFC 8156 §5.3; codes from the DHCPv6 Message Types registry,
    /// 24..=35).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum FailoverType: u8, from_u8, to_u8 {
        /// BNDUPD (24): a binding update.
        BndUpd = 24,
        /// BNDREPLY (25): the answer to a BNDUPD (same transaction id).
        BndReply = 25,
        /// POOLREQ (26): secondary asks the primary to rebalance delegable prefixes.
        PoolReq = 26,
        /// POOLRESP (27): the primary accepted a POOLREQ.
        PoolResp = 27,
        /// UPDREQ (28): send every binding change not yet acknowledged.
        UpdReq = 28,
        /// UPDREQALL (29): send the whole binding database.
        UpdReqAll = 29,
        /// UPDDONE (30): every BNDUPD answering an UPDREQ/UPDREQALL has been acknowledged.
        UpdDone = 30,
        /// CONNECT (31): primary → secondary, opens the relationship.
        Connect = 31,
        /// CONNECTREPLY (32): secondary → primary, accepts or rejects a CONNECT.
        ConnectReply = 32,
        /// DISCONNECT (33): closing the connection, with a reason.
        Disconnect = 33,
        /// STATE (34): the sender's endpoint state.
        State = 34,
        /// CONTACT (35): keepalive.
        Contact = 35,
    }
}

impl FailoverType {
    /// All failover message types, in code order.
    pub const ALL: [FailoverType; 12] = [
        FailoverType::BndUpd,
        FailoverType::BndReply,
        FailoverType::PoolReq,
        FailoverType::PoolResp,
        FailoverType::UpdReq,
        FailoverType::UpdReqAll,
        FailoverType::UpdDone,
        FailoverType::Connect,
        FailoverType::ConnectReply,
        FailoverType::Disconnect,
        FailoverType::State,
        FailoverType::Contact,
    ];

    /// The name the RFC uses (e.g. `"BNDUPD"`).
    pub fn name(self) -> &'static str {
        match self {
            FailoverType::BndUpd => "BNDUPD",
            FailoverType::BndReply => "BNDREPLY",
            FailoverType::PoolReq => "POOLREQ",
            FailoverType::PoolResp => "POOLRESP",
            FailoverType::UpdReq => "UPDREQ",
            FailoverType::UpdReqAll => "UPDREQALL",
            FailoverType::UpdDone => "UPDDONE",
            FailoverType::Connect => "CONNECT",
            FailoverType::ConnectReply => "CONNECTREPLY",
            FailoverType::Disconnect => "DISCONNECT",
            FailoverType::State => "STATE",
            FailoverType::Contact => "CONTACT",
        }
    }
}

impl fmt::Display for FailoverType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<u8> for FailoverType {
    type Error = FailoverWireError;
    fn try_from(v: u8) -> Result<Self, FailoverWireError> {
        FailoverType::from_u8(v).ok_or(FailoverWireError::UnknownMessageType(v))
    }
}

impl From<FailoverType> for u8 {
    fn from(t: FailoverType) -> Self {
        t.to_u8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_type_codes() {
        for (i, t) in FailoverType::ALL.iter().enumerate() {
            assert_eq!(usize::from(t.to_u8()), 24 + i);
            assert_eq!(FailoverType::from_u8(t.to_u8()), Some(*t));
            assert_eq!(FailoverType::try_from(t.to_u8()), Ok(*t));
        }
        for v in (0..24).chain(36..=255) {
            assert_eq!(FailoverType::from_u8(v), None);
            assert_eq!(
                FailoverType::try_from(v),
                Err(FailoverWireError::UnknownMessageType(v))
            );
        }
        assert_eq!(FailoverType::UpdReqAll.to_string(), "UPDREQALL");
    }

    #[test]
    fn failover_time_epoch_and_wrap() {
        assert_eq!(to_failover_time(FAILOVER_EPOCH_UNIX), 0);
        assert_eq!(to_failover_time(FAILOVER_EPOCH_UNIX + 5), 5);
        assert_eq!(to_failover_time(FAILOVER_EPOCH_UNIX - 1), u32::MAX);
        let wrap = FAILOVER_EPOCH_UNIX + (1u64 << 32);
        assert_eq!(to_failover_time(wrap + 7), 7);
        // Near the 2136 wrap, small values resolve after it and large ones before it.
        assert_eq!(from_failover_time(7, wrap - 100), wrap + 7);
        assert_eq!(from_failover_time(u32::MAX, wrap + 100), wrap - 1);
        // Ordinary case.
        let now = 1_700_000_000;
        assert_eq!(
            from_failover_time(to_failover_time(now + 30), now),
            now + 30
        );
        assert_eq!(
            from_failover_time(to_failover_time(now - 30), now),
            now - 30
        );
        // Saturation instead of wrapping.
        assert_eq!(
            from_failover_time(to_failover_time(0).wrapping_sub(100), 5),
            0
        );
        assert_eq!(from_failover_time(5, u64::MAX), u64::MAX);
        assert_eq!(absolute_clt_time(1000, 30), 970);
        assert_eq!(absolute_clt_time(10, 30), u32::MAX - 19);
    }

    #[test]
    fn error_kinds_are_distinct() {
        let all = [
            FailoverWireError::Truncated,
            WireError::TruncatedOption.into(),
            WireError::OptionOverrun { code: 1 }.into(),
            WireError::BadOptionLength { code: 1, len: 0 }.into(),
            WireError::DuplicateOption { code: 1 }.into(),
            WireError::BadPrefixLength(129).into(),
            FailoverWireError::UnknownMessageType(1),
            FailoverWireError::BadBindingStatus(0),
            FailoverWireError::BadServerState(0),
            FailoverWireError::BadText { code: 130 },
            FailoverWireError::MultipleBindings,
            FailoverWireError::FrameTooShort { len: 0 },
            FailoverWireError::FrameTooLong { len: 70_000 },
            FailoverWireError::TooLong,
        ];
        let mut kinds: Vec<_> = all.iter().map(|e| e.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
        for e in all {
            assert!(!e.to_string().is_empty());
        }
        // The option-level labels are the DHCPv6 codec's, which counters already use.
        let e = FailoverWireError::from(WireError::OptionOverrun { code: 7 });
        assert_eq!(e.kind(), "option_overrun");
        assert_eq!(e.to_string(), "option 7 runs past the end of its container");
    }
}
