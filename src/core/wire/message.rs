//! Client/server messages (RFC 8415 §8).

use std::net::Ipv6Addr;

use super::options::{
    IaNaIter, IaPdIter, OptionIter, OroIter, RawOption, Seen, Status, check_top_level, find, walk,
};
use super::{MESSAGE_HEADER_LEN, MessageType, WireError, opt};

/// A client/server message (not a relay), validated at parse. Borrows the input.
///
/// [`Message::parse`] checks the header, every option length, the contents of IA_NA, IA_TA,
/// IA_PD, IA Address, IA Prefix and Status Code options (recursively), the sizes of
/// fixed-size options, DUID lengths (3..=130 bytes) and that single-instance options
/// (Client/Server Identifier, ORO, Preference, Elapsed Time, Auth, Server Unicast, Status
/// Code, Rapid Commit, Reconfigure Message, Reconfigure Accept, Information Refresh Time,
/// SOL_MAX_RT, INF_MAX_RT) appear at most once per scope. All accessors are then infallible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    bytes: &'a [u8],
    msg_type: MessageType,
    client_id: Option<&'a [u8]>,
    server_id: Option<&'a [u8]>,
    oro: &'a [u8],
    elapsed_time: Option<u16>,
    rapid_commit: bool,
    reconfigure_accept: bool,
    has_ia_ta: bool,
}

impl<'a> Message<'a> {
    /// Parses and validates a client/server message.
    ///
    /// Errors: [`WireError::Truncated`] below 4 bytes, [`WireError::UnexpectedRelay`] for
    /// Relay-forw/Relay-repl (use [`unwrap_relays`](super::unwrap_relays) first),
    /// [`WireError::UnknownMessageType`] for type 0 or 14..=255 (RFC 8415 §16: servers discard
    /// unknown message types), and any option error.
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, WireError> {
        let Some((hdr, options)) = bytes.split_first_chunk::<MESSAGE_HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        let msg_type = MessageType::from_u8(hdr[0]);
        match msg_type {
            MessageType::RelayForw | MessageType::RelayRepl => {
                return Err(WireError::UnexpectedRelay(msg_type));
            }
            MessageType::Other(t) => return Err(WireError::UnknownMessageType(t)),
            _ => {}
        }
        let mut m = Message {
            bytes,
            msg_type,
            client_id: None,
            server_id: None,
            oro: &[],
            elapsed_time: None,
            rapid_commit: false,
            reconfigure_accept: false,
            has_ia_ta: false,
        };
        let mut seen = Seen::default();
        walk(options, |o: RawOption<'a>| {
            seen.note(o.code)?;
            check_top_level(o)?;
            match o.code {
                opt::CLIENTID => m.client_id = Some(o.data),
                opt::SERVERID => m.server_id = Some(o.data),
                opt::ORO => m.oro = o.data,
                opt::ELAPSED_TIME => {
                    if let Some(v) = o.data.first_chunk::<2>() {
                        m.elapsed_time = Some(u16::from_be_bytes(*v));
                    }
                }
                opt::RAPID_COMMIT => m.rapid_commit = true,
                opt::RECONF_ACCEPT => m.reconfigure_accept = true,
                opt::IA_TA => m.has_ia_ta = true,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Message type (never a relay type or [`MessageType::Other`]).
    pub fn msg_type(&self) -> MessageType {
        self.msg_type
    }

    /// The 24-bit transaction id.
    pub fn transaction_id(&self) -> u32 {
        match self.bytes.first_chunk::<4>() {
            Some(h) => u32::from_be_bytes([0, h[1], h[2], h[3]]),
            None => 0,
        }
    }

    /// Client Identifier option data (the client's DUID).
    pub fn client_id(&self) -> Option<&'a [u8]> {
        self.client_id
    }

    /// Server Identifier option data (a server DUID).
    pub fn server_id(&self) -> Option<&'a [u8]> {
        self.server_id
    }

    /// True if a Rapid Commit option is present.
    pub fn rapid_commit(&self) -> bool {
        self.rapid_commit
    }

    /// True if a Reconfigure Accept option is present.
    pub fn reconfigure_accept(&self) -> bool {
        self.reconfigure_accept
    }

    /// Elapsed Time in hundredths of a second, if present.
    pub fn elapsed_time(&self) -> Option<u16> {
        self.elapsed_time
    }

    /// Option codes requested in the Option Request Option (empty if absent).
    pub fn oro(&self) -> OroIter<'a> {
        OroIter::new(self.oro)
    }

    /// True if an Option Request Option is present (even an empty one).
    pub fn has_oro(&self) -> bool {
        self.first(opt::ORO).is_some()
    }

    /// IA_NA options, in order.
    pub fn ia_nas(&self) -> IaNaIter<'a> {
        IaNaIter(self.options())
    }

    /// IA_PD options, in order.
    pub fn ia_pds(&self) -> IaPdIter<'a> {
        IaPdIter(self.options())
    }

    /// True if any IA_TA option is present.
    pub fn has_ia_ta(&self) -> bool {
        self.has_ia_ta
    }

    /// Preference value, if present.
    pub fn preference(&self) -> Option<u8> {
        self.first(opt::PREFERENCE).and_then(|d| d.first().copied())
    }

    /// Server Unicast address, if present.
    pub fn server_unicast(&self) -> Option<Ipv6Addr> {
        self.first(opt::UNICAST)
            .and_then(|d| d.first_chunk::<16>())
            .map(|a| Ipv6Addr::from(*a))
    }

    /// Top-level Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        self.first(opt::STATUS_CODE).and_then(Status::from_data)
    }

    /// Data of the first top-level option with `code`.
    pub fn first(&self, code: u16) -> Option<&'a [u8]> {
        find(self.options_bytes(), code)
    }

    /// All top-level options, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options_bytes())
    }

    fn options_bytes(&self) -> &'a [u8] {
        self.bytes.get(MESSAGE_HEADER_LEN..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::raw;

    fn msg(t: u8, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![t, 0x12, 0x34, 0x56];
        for o in opts {
            v.extend_from_slice(o);
        }
        v
    }

    const DUID: &[u8] = &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6];

    #[test]
    fn parses_header_and_singletons() {
        let b = msg(
            1,
            &[
                raw(opt::CLIENTID, DUID),
                raw(opt::ELAPSED_TIME, &[0, 100]),
                raw(opt::ORO, &[0, 23, 0, 24]),
                raw(opt::RAPID_COMMIT, &[]),
                raw(opt::RECONF_ACCEPT, &[]),
                raw(opt::IA_TA, &[0, 0, 0, 1]),
                raw(opt::PREFERENCE, &[255]),
                raw(opt::UNICAST, &Ipv6Addr::LOCALHOST.octets()),
                raw(opt::STATUS_CODE, &[0, 0]),
            ],
        );
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.msg_type(), MessageType::Solicit);
        assert_eq!(m.transaction_id(), 0x123456);
        assert_eq!(m.client_id(), Some(DUID));
        assert_eq!(m.server_id(), None);
        assert_eq!(m.elapsed_time(), Some(100));
        assert_eq!(m.oro().collect::<Vec<_>>(), [23, 24]);
        assert!(m.has_oro());
        assert!(m.rapid_commit());
        assert!(m.reconfigure_accept());
        assert!(m.has_ia_ta());
        assert_eq!(m.preference(), Some(255));
        assert_eq!(m.server_unicast(), Some(Ipv6Addr::LOCALHOST));
        assert_eq!(m.status().unwrap().code, 0);
        assert_eq!(m.options().count(), 9);
        assert_eq!(m.ia_nas().count(), 0);
        assert_eq!(m.as_bytes(), &b[..]);
    }

    #[test]
    fn empty_message_has_defaults() {
        let b = msg(11, &[]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.msg_type(), MessageType::InformationRequest);
        assert!(m.client_id().is_none());
        assert!(!m.rapid_commit());
        assert!(!m.has_oro());
        assert_eq!(m.oro().count(), 0);
        assert_eq!(m.elapsed_time(), None);
    }

    #[test]
    fn rejects_bad_types_and_headers() {
        assert_eq!(Message::parse(&[]), Err(WireError::Truncated));
        assert_eq!(Message::parse(&[1, 0, 0]), Err(WireError::Truncated));
        assert_eq!(
            Message::parse(&[12, 0, 0, 0]),
            Err(WireError::UnexpectedRelay(MessageType::RelayForw))
        );
        assert_eq!(
            Message::parse(&[13, 0, 0, 0]),
            Err(WireError::UnexpectedRelay(MessageType::RelayRepl))
        );
        assert_eq!(
            Message::parse(&[0, 0, 0, 0]),
            Err(WireError::UnknownMessageType(0))
        );
        assert_eq!(
            Message::parse(&[18, 0, 0, 0]),
            Err(WireError::UnknownMessageType(18))
        );
    }

    #[test]
    fn rejects_duplicates_and_bad_options() {
        let b = msg(3, &[raw(opt::CLIENTID, DUID), raw(opt::CLIENTID, DUID)]);
        assert_eq!(
            Message::parse(&b),
            Err(WireError::DuplicateOption { code: 1 })
        );
        let b = msg(7, &[raw(opt::STATUS_CODE, &[])]);
        assert_eq!(
            Message::parse(&b),
            Err(WireError::BadOptionLength { code: 13, len: 0 })
        );
        let mut b = msg(7, &[raw(opt::CLIENTID, DUID)]);
        b.truncate(b.len() - 1);
        assert_eq!(
            Message::parse(&b),
            Err(WireError::OptionOverrun { code: 1 })
        );
        // Multiple IA_NA and unknown options are fine.
        let b = msg(
            3,
            &[
                raw(opt::IA_NA, &[0; 12]),
                raw(opt::IA_NA, &[0; 12]),
                raw(999, &[1]),
                raw(999, &[2]),
            ],
        );
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.ia_nas().count(), 2);
        assert_eq!(m.first(999), Some(&[1u8][..]));
    }
}
