//! The failover message header and top-level options (RFC 8156 §5.2).

use crate::wire::{IaPrefix, OptionIter, RawOption, Status};

use super::binding::{Binding, BindingContent, parse_pool_prefix};
use super::options::{ConnectOptions, Seen, StateOptions, check_option, fopt, walk};
use super::{FAILOVER_HEADER_LEN, FailoverType, FailoverWireError};

/// A failover message, validated at parse. Borrows the input.
///
/// [`FailoverMessage::parse`] checks the 8-octet header and the message type (24..=35), every
/// option length at every nesting level, the fixed sizes and enumerated values of all
/// `OPTION_F_*` options, UTF-8 of the relationship name, that each option this codec interprets
/// appears at most once per scope, and the binding (`OPTION_CLIENT_DATA` or top-level
/// `OPTION_IAPREFIX`, at most one of them) down to the options inside each IAADDR / IAPREFIX.
/// Unknown options are skipped. Which options a message type MUST carry is not checked here:
/// the engine decides (e.g. answering a bare BNDUPD with MissingBindingInformation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverMessage<'a> {
    bytes: &'a [u8],
    msg_type: FailoverType,
    connect: ConnectOptions<'a>,
    state: StateOptions,
    status: Option<Status<'a>>,
    binding: Option<BindingContent<'a>>,
}

impl<'a> FailoverMessage<'a> {
    /// Parses and validates one failover message (without its 2-octet frame length).
    ///
    /// Errors: [`FailoverWireError::Truncated`] below 8 bytes,
    /// [`FailoverWireError::UnknownMessageType`] outside 24..=35, and any option error.
    pub fn parse(bytes: &'a [u8]) -> Result<FailoverMessage<'a>, FailoverWireError> {
        let Some((hdr, options)) = bytes.split_first_chunk::<FAILOVER_HEADER_LEN>() else {
            return Err(FailoverWireError::Truncated);
        };
        let msg_type = FailoverType::try_from(hdr[0])?;
        let mut m = FailoverMessage {
            bytes,
            msg_type,
            connect: ConnectOptions::default(),
            state: StateOptions::default(),
            status: None,
            binding: None,
        };
        let mut seen = Seen::default();
        walk(options, |o: RawOption<'a>| {
            seen.note(o.code)?;
            check_option(o)?;
            m.connect.note(o);
            m.state.note(o);
            let binding = match o.code {
                fopt::STATUS_CODE => {
                    m.status = Status::from_data(o.data);
                    None
                }
                fopt::CLIENT_DATA => Some(BindingContent::Client(Binding::parse(o.data)?)),
                fopt::IAPREFIX => Some(BindingContent::Prefix(parse_pool_prefix(o)?)),
                _ => None,
            };
            if binding.is_some() {
                if m.binding.is_some() {
                    return Err(FailoverWireError::MultipleBindings);
                }
                m.binding = binding;
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Message type.
    pub fn msg_type(&self) -> FailoverType {
        self.msg_type
    }

    /// The 24-bit transaction id.
    pub fn transaction_id(&self) -> u32 {
        match self.bytes.first_chunk::<4>() {
            Some(h) => u32::from_be_bytes([0, h[1], h[2], h[3]]),
            None => 0,
        }
    }

    /// sent-time: seconds since 2000-01-01 UTC, modulo 2^32 (see
    /// [`from_failover_time`](super::from_failover_time)).
    pub fn sent_time(&self) -> u32 {
        match self.bytes.get(4..).and_then(|s| s.first_chunk::<4>()) {
            Some(t) => u32::from_be_bytes(*t),
            None => 0,
        }
    }

    /// CONNECT / CONNECTREPLY options (protocol version, MCLT, keepalive, max unacked BNDUPD,
    /// connect flags, relationship name); all `None` in other messages.
    pub fn connect(&self) -> ConnectOptions<'a> {
        self.connect
    }

    /// STATE options (server state, server flags, start time of state, partner down time).
    pub fn state(&self) -> StateOptions {
        self.state
    }

    /// Top-level `OPTION_STATUS_CODE` (CONNECTREPLY rejection, DISCONNECT reason).
    pub fn status(&self) -> Option<Status<'a>> {
        self.status
    }

    /// The binding of a BNDUPD / BNDREPLY, if the message carries one.
    pub fn binding(&self) -> Option<BindingContent<'a>> {
        self.binding
    }

    /// The `OPTION_CLIENT_DATA` binding, if that is what the message carries.
    pub fn client_binding(&self) -> Option<Binding<'a>> {
        match self.binding {
            Some(BindingContent::Client(b)) => Some(b),
            _ => None,
        }
    }

    /// The top-level `OPTION_IAPREFIX` (delegable prefix with no client), if that is what the
    /// message carries.
    pub fn pool_prefix(&self) -> Option<IaPrefix<'a>> {
        match self.binding {
            Some(BindingContent::Prefix(p)) => Some(p),
            _ => None,
        }
    }

    /// Data of the first top-level option with `code`.
    pub fn first(&self, code: u16) -> Option<&'a [u8]> {
        self.options().find(|o| o.code == code).map(|o| o.data)
    }

    /// All top-level options, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.bytes.get(FAILOVER_HEADER_LEN..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::wire::{ProtocolVersion, ServerFlags, ServerState};
    use crate::wire::testing::raw;

    fn msg(t: u8, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![t, 0xab, 0xcd, 0xef, 0x11, 0x22, 0x33, 0x44];
        for o in opts {
            v.extend_from_slice(o);
        }
        v
    }

    #[test]
    fn header_and_connect() {
        let b = msg(
            31,
            &[
                raw(fopt::F_PROTOCOL_VERSION, &[0, 1, 0, 2]),
                raw(fopt::F_MCLT, &[0, 0, 0x0e, 0x10]),
                raw(fopt::F_RELATIONSHIP_NAME, b"pair-a"),
                raw(999, &[1, 2]),
            ],
        );
        let m = FailoverMessage::parse(&b).unwrap();
        assert_eq!(m.msg_type(), FailoverType::Connect);
        assert_eq!(m.transaction_id(), 0xabcdef);
        assert_eq!(m.sent_time(), 0x1122_3344);
        let c = m.connect();
        assert_eq!(
            c.protocol_version,
            Some(ProtocolVersion { major: 1, minor: 2 })
        );
        assert_eq!(c.mclt, Some(3600));
        assert_eq!(c.relationship_name, Some("pair-a"));
        assert_eq!(c.keepalive_time, None);
        assert_eq!(m.first(999), Some(&[1u8, 2][..]));
        assert_eq!(m.options().count(), 4);
        assert!(m.binding().is_none());
        assert_eq!(m.as_bytes(), &b[..]);
    }

    #[test]
    fn state_and_errors() {
        let b = msg(
            34,
            &[
                raw(fopt::F_SERVER_STATE, &[4]),
                raw(fopt::F_SERVER_FLAGS, &[0x03]),
                raw(fopt::F_START_TIME_OF_STATE, &[0, 0, 0, 9]),
                raw(fopt::F_PARTNER_DOWN_TIME, &[0, 0, 0, 8]),
            ],
        );
        let s = FailoverMessage::parse(&b).unwrap().state();
        assert_eq!(s.server_state, Some(ServerState::PartnerDown));
        assert_eq!(s.server_flags, Some(ServerFlags(3)));
        assert_eq!(
            (s.start_time_of_state, s.partner_down_time),
            (Some(9), Some(8))
        );

        assert_eq!(
            FailoverMessage::parse(&[34, 0, 0, 0, 0, 0, 0]),
            Err(FailoverWireError::Truncated)
        );
        assert_eq!(
            FailoverMessage::parse(&msg(7, &[])),
            Err(FailoverWireError::UnknownMessageType(7))
        );
        let b = msg(
            34,
            &[
                raw(fopt::F_SERVER_STATE, &[2]),
                raw(fopt::F_SERVER_STATE, &[2]),
            ],
        );
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(crate::wire::WireError::DuplicateOption { code: 132 }.into())
        );
        let mut pfx = vec![0; 25];
        pfx[8] = 64;
        let b = msg(
            24,
            &[raw(fopt::CLIENT_DATA, &[]), raw(fopt::IAPREFIX, &pfx)],
        );
        assert_eq!(
            FailoverMessage::parse(&b),
            Err(FailoverWireError::MultipleBindings)
        );
    }
}
