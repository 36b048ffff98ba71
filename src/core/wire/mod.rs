//! DHCPv6 wire codec (RFC 8415, RFC 8357).
//!
//! Parsing follows the smoltcp style: a checked view validates every length once, at
//! [`Message::parse`] / [`unwrap_relays`], and afterwards all typed access is infallible and
//! borrows the input; nothing is allocated while parsing. Emission writes into a caller-owned,
//! reused `Vec<u8>` through [`MessageWriter`] and [`OptionWriter`], back-patching the length of
//! nested options, so a warmed-up buffer makes emission allocation-free too.
//!
//! No function in this module panics on any input.

mod message;
mod options;
mod relay;
pub mod relay_data;
mod writer;

use std::fmt;

pub use message::Message;
pub use options::{
    IaAddr, IaAddrIter, IaNa, IaNaIter, IaPd, IaPdIter, IaPrefix, IaPrefixIter, OptionIter,
    OroIter, RawOption, Status, StatusCode, opt,
};
// Option validation shared with the failover codec, which uses the same option format.
pub(crate) use options::{
    IA_FIXED_LEN, IA_TA_FIXED_LEN, IAADDR_FIXED_LEN, Seen, check_duid, exact_len, iaprefix_options,
    min_len, nested_options, walk_with,
};
pub use relay::{RelayHop, RelayMessage, Relayed, unwrap_relay_replies, unwrap_relays};
pub use writer::{
    MessageWriter, OptionWriter, try_wrap_relay_forw, try_wrap_relay_reply, wrap_relay_forw,
    wrap_relay_reply,
};

/// Helpers for the unit tests of this codec and of the failover codec built on it.
#[cfg(test)]
pub(crate) mod testing {
    /// One option as bytes (header, then `data`), assembled by hand rather than by a writer.
    pub(crate) fn raw(code: u16, data: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        v.extend_from_slice(data);
        v
    }
}

/// Maximum number of relay agents a message may pass through (RFC 8415 §7.6).
///
/// A Relay-forw chain may therefore be nested at most `HOP_COUNT_LIMIT + 1` levels deep
/// (hop counts 0 through 32).
pub const HOP_COUNT_LIMIT: u8 = 32;

/// Maximum number of relay levels [`unwrap_relays`] accepts (`HOP_COUNT_LIMIT + 1`).
pub const MAX_RELAY_DEPTH: usize = HOP_COUNT_LIMIT as usize + 1;

/// UDP port servers and relay agents listen on (RFC 8415 §7.2).
pub const SERVER_PORT: u16 = 547;

/// UDP port clients listen on (RFC 8415 §7.2).
pub const CLIENT_PORT: u16 = 546;

/// Length of the client/server message header: msg-type (1) + transaction-id (3).
pub const MESSAGE_HEADER_LEN: usize = 4;

/// Length of the relay message header: msg-type, hop-count, link-address, peer-address.
pub const RELAY_HEADER_LEN: usize = 34;

/// Length of an option header: option-code (2) + option-len (2).
pub const OPTION_HEADER_LEN: usize = 4;

/// Shortest DUID accepted in Client/Server Identifier options: 2-octet type + 1 octet.
pub const DUID_MIN_LEN: usize = 3;

/// Longest DUID accepted: 2-octet type + 128 octets (RFC 8415 §11.1).
pub const DUID_MAX_LEN: usize = 130;

/// Why a received packet was rejected.
///
/// [`Display`](fmt::Display) gives a plain-words description for logs; [`WireError::kind`] gives
/// a short stable label for drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The packet is shorter than its fixed header (4 bytes for a client/server message,
    /// 34 for a relay message), or a relay message carries an empty message.
    Truncated,
    /// Fewer than 4 bytes remain where an option header should start.
    TruncatedOption,
    /// The option's length field runs past the end of the message or enclosing option.
    OptionOverrun {
        /// Option code of the offending option.
        code: u16,
    },
    /// The option's length is invalid for its type (wrong fixed size or below the minimum).
    BadOptionLength {
        /// Option code of the offending option.
        code: u16,
        /// The length found in the option header.
        len: usize,
    },
    /// An option that may appear only once in its scope appears more than once.
    DuplicateOption {
        /// Option code of the repeated option.
        code: u16,
    },
    /// An IA Prefix option has a prefix length above 128.
    BadPrefixLength(u8),
    /// Relay messages are nested deeper than `HOP_COUNT_LIMIT + 1` levels.
    RelayTooDeep,
    /// A relay message was expected but the message type is not Relay-forw or Relay-repl.
    NotRelay,
    /// A relay message appeared where it is not allowed: given to [`Message::parse`], a
    /// Relay-repl given to [`unwrap_relays`] (or a Relay-forw to [`unwrap_relay_replies`]), or
    /// Relay-forw and Relay-repl levels mixed in one chain.
    UnexpectedRelay(MessageType),
    /// A relay message has no Relay Message option.
    MissingRelayMessage,
    /// The message type is reserved (0) or not one of the client/server types 1..=11.
    UnknownMessageType(u8),
    /// Emission only: an option (Relay Message or Interface-Id) would be longer than 65535
    /// bytes.
    TooLong,
}

impl WireError {
    /// Short, stable label for metrics and drop counters.
    pub fn kind(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::TruncatedOption => "truncated_option",
            WireError::OptionOverrun { .. } => "option_overrun",
            WireError::BadOptionLength { .. } => "bad_option_length",
            WireError::DuplicateOption { .. } => "duplicate_option",
            WireError::BadPrefixLength(_) => "bad_prefix_length",
            WireError::RelayTooDeep => "relay_too_deep",
            WireError::NotRelay => "not_relay",
            WireError::UnexpectedRelay(_) => "unexpected_relay",
            WireError::MissingRelayMessage => "missing_relay_msg",
            WireError::UnknownMessageType(_) => "unknown_msg_type",
            WireError::TooLong => "too_long",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated => f.write_str("packet is shorter than its fixed header"),
            WireError::TruncatedOption => {
                f.write_str("fewer than 4 bytes left where an option header should start")
            }
            WireError::OptionOverrun { code } => {
                write!(f, "option {code} runs past the end of its container")
            }
            WireError::BadOptionLength { code, len } => {
                write!(f, "option {code} has invalid length {len}")
            }
            WireError::DuplicateOption { code } => {
                write!(f, "option {code} appears more than once")
            }
            WireError::BadPrefixLength(len) => {
                write!(f, "IA prefix length {len} is greater than 128")
            }
            WireError::RelayTooDeep => write!(
                f,
                "relay messages nested deeper than {MAX_RELAY_DEPTH} levels"
            ),
            WireError::NotRelay => f.write_str("message is not a relay message"),
            WireError::UnexpectedRelay(t) => {
                write!(f, "unexpected relay message (type {})", t.to_u8())
            }
            WireError::MissingRelayMessage => {
                f.write_str("relay message has no Relay Message option")
            }
            WireError::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            WireError::TooLong => f.write_str("an option would be longer than 65535 bytes"),
        }
    }
}

impl std::error::Error for WireError {}

/// DHCPv6 message type (RFC 8415 §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// SOLICIT (1).
    Solicit,
    /// ADVERTISE (2).
    Advertise,
    /// REQUEST (3).
    Request,
    /// CONFIRM (4).
    Confirm,
    /// RENEW (5).
    Renew,
    /// REBIND (6).
    Rebind,
    /// REPLY (7).
    Reply,
    /// RELEASE (8).
    Release,
    /// DECLINE (9).
    Decline,
    /// RECONFIGURE (10).
    Reconfigure,
    /// INFORMATION-REQUEST (11).
    InformationRequest,
    /// RELAY-FORW (12).
    RelayForw,
    /// RELAY-REPL (13).
    RelayRepl,
    /// LEASEQUERY (14, RFC 5007).
    Leasequery,
    /// LEASEQUERY-REPLY (15, RFC 5007).
    LeasequeryReply,
    /// LEASEQUERY-DONE (16, RFC 5460): the end of a Bulk Leasequery answer.
    LeasequeryDone,
    /// LEASEQUERY-DATA (17, RFC 5460): one more client's data in a Bulk Leasequery answer.
    LeasequeryData,
    /// Any other value (0 or 18..=255).
    Other(u8),
}

impl MessageType {
    /// Decodes a msg-type octet.
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => MessageType::Solicit,
            2 => MessageType::Advertise,
            3 => MessageType::Request,
            4 => MessageType::Confirm,
            5 => MessageType::Renew,
            6 => MessageType::Rebind,
            7 => MessageType::Reply,
            8 => MessageType::Release,
            9 => MessageType::Decline,
            10 => MessageType::Reconfigure,
            11 => MessageType::InformationRequest,
            12 => MessageType::RelayForw,
            13 => MessageType::RelayRepl,
            14 => MessageType::Leasequery,
            15 => MessageType::LeasequeryReply,
            16 => MessageType::LeasequeryDone,
            17 => MessageType::LeasequeryData,
            other => MessageType::Other(other),
        }
    }

    /// Encodes as a msg-type octet.
    pub fn to_u8(self) -> u8 {
        match self {
            MessageType::Solicit => 1,
            MessageType::Advertise => 2,
            MessageType::Request => 3,
            MessageType::Confirm => 4,
            MessageType::Renew => 5,
            MessageType::Rebind => 6,
            MessageType::Reply => 7,
            MessageType::Release => 8,
            MessageType::Decline => 9,
            MessageType::Reconfigure => 10,
            MessageType::InformationRequest => 11,
            MessageType::RelayForw => 12,
            MessageType::RelayRepl => 13,
            MessageType::Leasequery => 14,
            MessageType::LeasequeryReply => 15,
            MessageType::LeasequeryDone => 16,
            MessageType::LeasequeryData => 17,
            MessageType::Other(v) => v,
        }
    }

    /// True for Relay-forw and Relay-repl.
    pub fn is_relay(self) -> bool {
        matches!(self, MessageType::RelayForw | MessageType::RelayRepl)
    }
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        MessageType::from_u8(v)
    }
}

impl From<MessageType> for u8 {
    fn from(t: MessageType) -> Self {
        t.to_u8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_every_octet() {
        for v in 0..=u8::MAX {
            assert_eq!(MessageType::from_u8(v).to_u8(), v);
        }
        assert_eq!(MessageType::from_u8(12), MessageType::RelayForw);
        assert_eq!(MessageType::from_u8(0), MessageType::Other(0));
        assert!(MessageType::RelayRepl.is_relay());
        assert!(!MessageType::Reply.is_relay());
    }

    #[test]
    fn error_display_and_kind_are_distinct() {
        let all = [
            WireError::Truncated,
            WireError::TruncatedOption,
            WireError::OptionOverrun { code: 3 },
            WireError::BadOptionLength { code: 13, len: 0 },
            WireError::DuplicateOption { code: 1 },
            WireError::BadPrefixLength(129),
            WireError::RelayTooDeep,
            WireError::NotRelay,
            WireError::UnexpectedRelay(MessageType::RelayRepl),
            WireError::MissingRelayMessage,
            WireError::UnknownMessageType(0),
            WireError::TooLong,
        ];
        let mut kinds: Vec<_> = all.iter().map(|e| e.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), all.len());
        assert_eq!(
            WireError::BadOptionLength { code: 13, len: 0 }.to_string(),
            "option 13 has invalid length 0"
        );
        for e in all {
            assert!(!e.to_string().is_empty());
        }
    }
}
