//! Option codes, the raw option iterator, typed option views and option validation.

use std::net::Ipv6Addr;

use super::{DUID_MAX_LEN, DUID_MIN_LEN, OPTION_HEADER_LEN, WireError};

/// DHCPv6 option codes (RFC 8415 §21, IANA registry).
pub mod opt {
    /// Client Identifier (DUID).
    pub const CLIENTID: u16 = 1;
    /// Server Identifier (DUID).
    pub const SERVERID: u16 = 2;
    /// Identity Association for Non-temporary Addresses.
    pub const IA_NA: u16 = 3;
    /// Identity Association for Temporary Addresses.
    pub const IA_TA: u16 = 4;
    /// IA Address (inside IA_NA / IA_TA).
    pub const IAADDR: u16 = 5;
    /// Option Request Option.
    pub const ORO: u16 = 6;
    /// Server preference (1 byte).
    pub const PREFERENCE: u16 = 7;
    /// Elapsed time in hundredths of a second (2 bytes).
    pub const ELAPSED_TIME: u16 = 8;
    /// Relay Message (the relayed message, inside relay messages).
    pub const RELAY_MSG: u16 = 9;
    /// Authentication.
    pub const AUTH: u16 = 11;
    /// Server Unicast (16-byte address).
    pub const UNICAST: u16 = 12;
    /// Status Code.
    pub const STATUS_CODE: u16 = 13;
    /// Rapid Commit (empty).
    pub const RAPID_COMMIT: u16 = 14;
    /// User Class.
    pub const USER_CLASS: u16 = 15;
    /// Vendor Class.
    pub const VENDOR_CLASS: u16 = 16;
    /// Vendor-specific Information.
    pub const VENDOR_OPTS: u16 = 17;
    /// Interface-Id (inside relay messages).
    pub const INTERFACE_ID: u16 = 18;
    /// Reconfigure Message (1 byte).
    pub const RECONF_MSG: u16 = 19;
    /// Reconfigure Accept (empty).
    pub const RECONF_ACCEPT: u16 = 20;
    /// DNS recursive name servers (RFC 3646).
    pub const DNS_SERVERS: u16 = 23;
    /// Domain search list (RFC 3646).
    pub const DOMAIN_LIST: u16 = 24;
    /// Identity Association for Prefix Delegation.
    pub const IA_PD: u16 = 25;
    /// IA Prefix (inside IA_PD).
    pub const IAPREFIX: u16 = 26;
    /// Information Refresh Time (4 bytes).
    pub const INFORMATION_REFRESH_TIME: u16 = 32;
    /// SNTP Servers (RFC 4075).
    pub const SNTP_SERVERS: u16 = 31;
    /// NTP Server (RFC 5908), with sub-options.
    pub const NTP_SERVER: u16 = 56;
    /// Prefix Exclude (RFC 6603), inside an IA Prefix.
    pub const PD_EXCLUDE: u16 = 67;
    /// Leasequery Query option (RFC 5007): query-type, link-address, query-options.
    pub const LQ_QUERY: u16 = 44;
    /// Leasequery Client Data option: one client's bindings on one link.
    pub const CLIENT_DATA: u16 = 45;
    /// Leasequery Client Last Transaction Time (seconds ago).
    pub const CLT_TIME: u16 = 46;
    /// Leasequery Relay Data option.
    pub const LQ_RELAY_DATA: u16 = 47;
    /// Leasequery Client Link option: the links a client has bindings on.
    pub const LQ_CLIENT_LINK: u16 = 48;
    /// Relay agent Remote-ID (RFC 4649).
    pub const REMOTE_ID: u16 = 37;
    /// Relay agent Subscriber-ID (RFC 4580).
    pub const SUBSCRIBER_ID: u16 = 38;
    /// Client FQDN (RFC 4704).
    pub const CLIENT_FQDN: u16 = 39;
    /// Client link-layer address, added by relays (RFC 6939).
    pub const CLIENT_LINKLAYER_ADDR: u16 = 79;
    /// SOL_MAX_RT (4 bytes).
    pub const SOL_MAX_RT: u16 = 82;
    /// INF_MAX_RT (4 bytes).
    pub const INF_MAX_RT: u16 = 83;
    /// Relay Source Port (RFC 8357), 2-byte downstream source port.
    pub const RELAY_SOURCE_PORT: u16 = 135;
}

/// Status codes defined by RFC 8415 §21.13.
///
/// Codes from other RFCs (leasequery, failover, …) have no variant: [`StatusCode::from_u16`]
/// returns `None` for them and the raw value stays available in [`Status::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusCode {
    /// Success.
    Success = 0,
    /// Failure, reason unspecified.
    UnspecFail = 1,
    /// The server has no addresses available to assign to the IA(s).
    NoAddrsAvail = 2,
    /// Client record (binding) unavailable.
    NoBinding = 3,
    /// The prefix for the address is not appropriate for the link.
    NotOnLink = 4,
    /// The client must use multicast to talk to the server.
    UseMulticast = 5,
    /// The server has no prefixes available to assign to the IA_PD(s).
    NoPrefixAvail = 6,
    /// Leasequery: the query-type is unknown or not supported (RFC 5007).
    UnknownQueryType = 7,
    /// Leasequery: the query is not valid, e.g. a required query-option is missing.
    MalformedQuery = 8,
    /// Leasequery: the server does not have the target address or link configured.
    NotConfigured = 9,
    /// Leasequery: the requestor may not issue this query.
    NotAllowed = 10,
    /// Bulk Leasequery: the server cannot perform the query or stopped it (RFC 5460 §5.5).
    QueryTerminated = 11,
}

impl StatusCode {
    /// Decodes an RFC 8415 status code; `None` for any other value.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => StatusCode::Success,
            1 => StatusCode::UnspecFail,
            2 => StatusCode::NoAddrsAvail,
            3 => StatusCode::NoBinding,
            4 => StatusCode::NotOnLink,
            5 => StatusCode::UseMulticast,
            6 => StatusCode::NoPrefixAvail,
            7 => StatusCode::UnknownQueryType,
            8 => StatusCode::MalformedQuery,
            9 => StatusCode::NotConfigured,
            10 => StatusCode::NotAllowed,
            11 => StatusCode::QueryTerminated,
            _ => return None,
        })
    }

    /// The numeric value carried on the wire.
    pub fn to_u16(self) -> u16 {
        self as u16
    }
}

/// One option as it appears on the wire: code and data (without the 4-byte header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Option code.
    pub code: u16,
    /// Option data (option-len bytes).
    pub data: &'a [u8],
}

/// Iterator over the options in an options area.
///
/// Infallible on bytes that were validated by a parser in this module. On arbitrary bytes it
/// never panics: it stops at the first malformed option (use it only on validated data).
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> OptionIter<'a> {
    /// Iterates the options in `bytes` (an options area, without any message header).
    pub fn new(bytes: &'a [u8]) -> Self {
        OptionIter { rest: bytes }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = RawOption<'a>;

    fn next(&mut self) -> Option<RawOption<'a>> {
        match split_option(self.rest) {
            Ok(Some((opt, rest))) => {
                self.rest = rest;
                Some(opt)
            }
            _ => {
                self.rest = &[];
                None
            }
        }
    }
}

/// Splits the first option off `bytes`: `Ok(None)` when empty, an error when malformed.
fn split_option(bytes: &[u8]) -> Result<Option<(RawOption<'_>, &[u8])>, WireError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((hdr, rest)) = bytes.split_first_chunk::<OPTION_HEADER_LEN>() else {
        return Err(WireError::TruncatedOption);
    };
    let code = u16::from_be_bytes([hdr[0], hdr[1]]);
    let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if len > rest.len() {
        return Err(WireError::OptionOverrun { code });
    }
    let (data, rest) = rest.split_at(len);
    Ok(Some((RawOption { code, data }, rest)))
}

/// Walks every option in `bytes`, failing on the first malformed option header/length or on
/// the first error returned by `f`.
pub(crate) fn walk<'a>(
    bytes: &'a [u8],
    f: impl FnMut(RawOption<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    walk_with(bytes, f)
}

/// [`walk`] for a codec built on this one (failover) whose callback reports errors of its own:
/// malformed option headers and lengths still surface as [`WireError`]s, converted to `E`.
pub(crate) fn walk_with<'a, E: From<WireError>>(
    mut bytes: &'a [u8],
    mut f: impl FnMut(RawOption<'a>) -> Result<(), E>,
) -> Result<(), E> {
    while let Some((opt, rest)) = split_option(bytes)? {
        f(opt)?;
        bytes = rest;
    }
    Ok(())
}

/// Returns the first option with `code` in a (validated) options area.
pub(crate) fn find(bytes: &[u8], code: u16) -> Option<&[u8]> {
    OptionIter::new(bytes)
        .find(|o| o.code == code)
        .map(|o| o.data)
}

/// Tracks which single-instance options were already seen in one scope.
#[derive(Default)]
pub(crate) struct Seen(u32);

impl Seen {
    /// Records `code`; errors if it is a single-instance option already seen in this scope.
    pub(crate) fn note(&mut self, code: u16) -> Result<(), WireError> {
        let bit = match code {
            opt::CLIENTID => 0,
            opt::SERVERID => 1,
            opt::ORO => 2,
            opt::PREFERENCE => 3,
            opt::ELAPSED_TIME => 4,
            opt::RELAY_MSG => 5,
            opt::AUTH => 6,
            opt::UNICAST => 7,
            opt::STATUS_CODE => 8,
            opt::RAPID_COMMIT => 9,
            opt::INTERFACE_ID => 10,
            opt::RECONF_MSG => 11,
            opt::RECONF_ACCEPT => 12,
            opt::INFORMATION_REFRESH_TIME => 13,
            opt::SOL_MAX_RT => 14,
            opt::INF_MAX_RT => 15,
            opt::RELAY_SOURCE_PORT => 16,
            _ => return Ok(()),
        };
        self.note_as(code, bit)
    }

    /// Records `code` under `bit` (0..32, the caller's numbering of its single-instance
    /// options); errors if that bit was already recorded in this scope.
    pub(crate) fn note_as(&mut self, code: u16, bit: u32) -> Result<(), WireError> {
        let mask = 1u32.checked_shl(bit).unwrap_or(0);
        if self.0 & mask != 0 {
            return Err(WireError::DuplicateOption { code });
        }
        self.0 |= mask;
        Ok(())
    }
}

/// Errors unless `data.len() == want`.
pub(crate) fn exact_len(o: RawOption<'_>, want: usize) -> Result<(), WireError> {
    if o.data.len() == want {
        Ok(())
    } else {
        Err(bad_len(o))
    }
}

/// Errors unless `data.len() >= min`.
pub(crate) fn min_len(o: RawOption<'_>, min: usize) -> Result<(), WireError> {
    if o.data.len() >= min {
        Ok(())
    } else {
        Err(bad_len(o))
    }
}

fn bad_len(o: RawOption<'_>) -> WireError {
    WireError::BadOptionLength {
        code: o.code,
        len: o.data.len(),
    }
}

/// Validates a DUID-carrying option (Client / Server Identifier): 3..=130 bytes.
pub(crate) fn check_duid(o: RawOption<'_>) -> Result<(), WireError> {
    if (DUID_MIN_LEN..=DUID_MAX_LEN).contains(&o.data.len()) {
        Ok(())
    } else {
        Err(bad_len(o))
    }
}

/// Fixed part of an IA_NA / IA_PD option: IAID, T1, T2.
pub(crate) const IA_FIXED_LEN: usize = 12;
/// Fixed part of an IA_TA option: IAID.
pub(crate) const IA_TA_FIXED_LEN: usize = 4;
/// Fixed part of an IA Address option: address, preferred and valid lifetimes.
pub(crate) const IAADDR_FIXED_LEN: usize = 24;
/// Fixed part of an IA Prefix option: lifetimes, prefix-length, prefix.
pub(crate) const IAPREFIX_FIXED_LEN: usize = 25;

/// Checks that an option holds at least its `fixed` part; returns the options area after it.
pub(crate) fn nested_options(o: RawOption<'_>, fixed: usize) -> Result<&[u8], WireError> {
    min_len(o, fixed)?;
    Ok(o.data.get(fixed..).unwrap_or_default())
}

/// Checks the fixed part of an IA Prefix option (prefix length at most 128); returns the
/// options area after it.
pub(crate) fn iaprefix_options(o: RawOption<'_>) -> Result<&[u8], WireError> {
    let nested = nested_options(o, IAPREFIX_FIXED_LEN)?;
    let plen = o.data.get(8).copied().unwrap_or(0);
    if plen > 128 {
        return Err(WireError::BadPrefixLength(plen));
    }
    Ok(nested)
}

/// Validates options that may appear anywhere and have a fixed format, for a top-level scope
/// (client/server message). Structured options are validated recursively with a bounded depth.
pub(crate) fn check_top_level(o: RawOption<'_>) -> Result<(), WireError> {
    match o.code {
        opt::CLIENTID | opt::SERVERID => check_duid(o),
        opt::IA_NA => check_ia(o, IA_FIXED_LEN, opt::IAADDR),
        opt::IA_TA => check_ia(o, IA_TA_FIXED_LEN, opt::IAADDR),
        opt::IA_PD => check_ia(o, IA_FIXED_LEN, opt::IAPREFIX),
        opt::IAADDR => check_iaaddr(o),
        opt::IAPREFIX => check_iaprefix(o),
        opt::ORO => {
            if o.data.len().is_multiple_of(2) {
                Ok(())
            } else {
                Err(bad_len(o))
            }
        }
        opt::PREFERENCE | opt::RECONF_MSG => exact_len(o, 1),
        opt::ELAPSED_TIME | opt::RELAY_SOURCE_PORT => exact_len(o, 2),
        opt::AUTH => min_len(o, 11),
        opt::UNICAST => exact_len(o, 16),
        opt::STATUS_CODE => min_len(o, 2),
        opt::RAPID_COMMIT | opt::RECONF_ACCEPT => exact_len(o, 0),
        opt::INFORMATION_REFRESH_TIME | opt::SOL_MAX_RT | opt::INF_MAX_RT => exact_len(o, 4),
        _ => Ok(()),
    }
}

/// Validates an IA option: fixed part, then its options (Status Code once, `child` options).
fn check_ia(o: RawOption<'_>, fixed: usize, child: u16) -> Result<(), WireError> {
    let nested = nested_options(o, fixed)?;
    let mut seen = Seen::default();
    walk(nested, |n| {
        if n.code == opt::STATUS_CODE {
            seen.note(n.code)?;
            min_len(n, 2)
        } else if n.code == child && child == opt::IAADDR {
            check_iaaddr(n)
        } else if n.code == child && child == opt::IAPREFIX {
            check_iaprefix(n)
        } else {
            Ok(())
        }
    })
}

/// Validates an IA Address option and its Status Code.
fn check_iaaddr(o: RawOption<'_>) -> Result<(), WireError> {
    check_leaf_options(nested_options(o, IAADDR_FIXED_LEN)?)
}

/// Validates an IA Prefix option (prefix length at most 128) and its Status Code.
fn check_iaprefix(o: RawOption<'_>) -> Result<(), WireError> {
    check_leaf_options(iaprefix_options(o)?)
}

/// Options inside IA Address / IA Prefix: only Status Code is interpreted.
fn check_leaf_options(bytes: &[u8]) -> Result<(), WireError> {
    let mut seen = Seen::default();
    walk(bytes, |n| {
        if n.code == opt::STATUS_CODE {
            seen.note(n.code)?;
            min_len(n, 2)
        } else {
            Ok(())
        }
    })
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..).and_then(|s| s.first_chunk::<4>()) {
        Some(c) => u32::from_be_bytes(*c),
        None => 0,
    }
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..).and_then(|s| s.first_chunk::<2>()) {
        Some(c) => u16::from_be_bytes(*c),
        None => 0,
    }
}

fn ipv6(b: &[u8], at: usize) -> Ipv6Addr {
    match b.get(at..).and_then(|s| s.first_chunk::<16>()) {
        Some(c) => Ipv6Addr::from(*c),
        None => Ipv6Addr::UNSPECIFIED,
    }
}

/// Status Code option contents. The message is UTF-8 per RFC 8415 but any bytes are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status<'a> {
    /// Raw status code (see [`StatusCode`]).
    pub code: u16,
    /// Status message bytes (may be empty).
    pub message: &'a [u8],
}

impl<'a> Status<'a> {
    /// Decodes validated Status Code data (at least 2 bytes); `None` if too short.
    pub(crate) fn from_data(data: &'a [u8]) -> Option<Self> {
        let (code, message) = data.split_first_chunk::<2>()?;
        Some(Status {
            code: u16::from_be_bytes(*code),
            message,
        })
    }

    /// The code as an RFC 8415 [`StatusCode`], if it is one.
    pub fn status_code(&self) -> Option<StatusCode> {
        StatusCode::from_u16(self.code)
    }

    /// The message as text, with invalid UTF-8 replaced.
    pub fn message_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.message)
    }
}

/// First Status Code in a validated options area.
pub(crate) fn find_status(bytes: &[u8]) -> Option<Status<'_>> {
    find(bytes, opt::STATUS_CODE).and_then(Status::from_data)
}

/// Identity Association for Non-temporary Addresses (validated view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IaNa<'a> {
    /// Identity Association identifier.
    pub iaid: u32,
    /// T1 (seconds).
    pub t1: u32,
    /// T2 (seconds).
    pub t2: u32,
    options: &'a [u8],
}

impl<'a> IaNa<'a> {
    pub(crate) fn from_data(data: &'a [u8]) -> Option<Self> {
        Some(IaNa {
            iaid: be_u32(data, 0),
            t1: be_u32(data, 4),
            t2: be_u32(data, 8),
            options: data.get(IA_FIXED_LEN..)?,
        })
    }

    /// IA Address options, in order.
    pub fn addresses(&self) -> IaAddrIter<'a> {
        IaAddrIter(OptionIter::new(self.options))
    }

    /// The IA's Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        find_status(self.options)
    }

    /// All options inside this IA, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// Identity Association for Prefix Delegation (validated view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IaPd<'a> {
    /// Identity Association identifier.
    pub iaid: u32,
    /// T1 (seconds).
    pub t1: u32,
    /// T2 (seconds).
    pub t2: u32,
    options: &'a [u8],
}

impl<'a> IaPd<'a> {
    pub(crate) fn from_data(data: &'a [u8]) -> Option<Self> {
        Some(IaPd {
            iaid: be_u32(data, 0),
            t1: be_u32(data, 4),
            t2: be_u32(data, 8),
            options: data.get(IA_FIXED_LEN..)?,
        })
    }

    /// IA Prefix options, in order.
    pub fn prefixes(&self) -> IaPrefixIter<'a> {
        IaPrefixIter(OptionIter::new(self.options))
    }

    /// The IA's Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        find_status(self.options)
    }

    /// All options inside this IA, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// IA Address option (validated view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IaAddr<'a> {
    /// The IPv6 address.
    pub addr: Ipv6Addr,
    /// Preferred lifetime (seconds).
    pub preferred_secs: u32,
    /// Valid lifetime (seconds).
    pub valid_secs: u32,
    options: &'a [u8],
}

impl<'a> IaAddr<'a> {
    pub(crate) fn from_data(data: &'a [u8]) -> Option<Self> {
        Some(IaAddr {
            addr: ipv6(data, 0),
            preferred_secs: be_u32(data, 16),
            valid_secs: be_u32(data, 20),
            options: data.get(IAADDR_FIXED_LEN..)?,
        })
    }

    /// The address's Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        find_status(self.options)
    }

    /// All options inside this IA Address, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// IA Prefix option (validated view; `prefix_len` is at most 128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IaPrefix<'a> {
    /// The prefix (as sent; bits beyond `prefix_len` are not masked).
    pub prefix: Ipv6Addr,
    /// Prefix length in bits (0..=128).
    pub prefix_len: u8,
    /// Preferred lifetime (seconds).
    pub preferred_secs: u32,
    /// Valid lifetime (seconds).
    pub valid_secs: u32,
    options: &'a [u8],
}

impl<'a> IaPrefix<'a> {
    pub(crate) fn from_data(data: &'a [u8]) -> Option<Self> {
        let prefix_len = *data.get(8)?;
        if prefix_len > 128 {
            return None;
        }
        Some(IaPrefix {
            preferred_secs: be_u32(data, 0),
            valid_secs: be_u32(data, 4),
            prefix_len,
            prefix: ipv6(data, 9),
            options: data.get(IAPREFIX_FIXED_LEN..)?,
        })
    }

    /// The prefix's Status Code option, if present.
    pub fn status(&self) -> Option<Status<'a>> {
        find_status(self.options)
    }

    /// All options inside this IA Prefix, in order.
    pub fn options(&self) -> OptionIter<'a> {
        OptionIter::new(self.options)
    }
}

/// Iterator over the IA_NA options of a message.
#[derive(Clone, Debug)]
pub struct IaNaIter<'a>(pub(crate) OptionIter<'a>);

impl<'a> Iterator for IaNaIter<'a> {
    type Item = IaNa<'a>;
    fn next(&mut self) -> Option<IaNa<'a>> {
        self.0
            .by_ref()
            .filter(|o| o.code == opt::IA_NA)
            .find_map(|o| IaNa::from_data(o.data))
    }
}

/// Iterator over the IA_PD options of a message.
#[derive(Clone, Debug)]
pub struct IaPdIter<'a>(pub(crate) OptionIter<'a>);

impl<'a> Iterator for IaPdIter<'a> {
    type Item = IaPd<'a>;
    fn next(&mut self) -> Option<IaPd<'a>> {
        self.0
            .by_ref()
            .filter(|o| o.code == opt::IA_PD)
            .find_map(|o| IaPd::from_data(o.data))
    }
}

/// Iterator over the IA Address options of an IA_NA.
#[derive(Clone, Debug)]
pub struct IaAddrIter<'a>(OptionIter<'a>);

impl<'a> Iterator for IaAddrIter<'a> {
    type Item = IaAddr<'a>;
    fn next(&mut self) -> Option<IaAddr<'a>> {
        self.0
            .by_ref()
            .filter(|o| o.code == opt::IAADDR)
            .find_map(|o| IaAddr::from_data(o.data))
    }
}

/// Iterator over the IA Prefix options of an IA_PD.
#[derive(Clone, Debug)]
pub struct IaPrefixIter<'a>(OptionIter<'a>);

impl<'a> Iterator for IaPrefixIter<'a> {
    type Item = IaPrefix<'a>;
    fn next(&mut self) -> Option<IaPrefix<'a>> {
        self.0
            .by_ref()
            .filter(|o| o.code == opt::IAPREFIX)
            .find_map(|o| IaPrefix::from_data(o.data))
    }
}

/// Iterator over the option codes in an Option Request Option.
#[derive(Clone, Debug)]
pub struct OroIter<'a>(std::slice::ChunksExact<'a, u8>);

impl<'a> OroIter<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        OroIter(data.chunks_exact(2))
    }
}

impl Iterator for OroIter<'_> {
    type Item = u16;
    fn next(&mut self) -> Option<u16> {
        self.0.next().map(|c| be_u16(c, 0))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for OroIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::raw;

    #[test]
    fn option_iter_yields_in_order_and_stops_on_garbage() {
        let mut bytes = raw(1, &[1, 2, 3]);
        bytes.extend(raw(14, &[]));
        bytes.extend([0, 7, 0, 9, 1]); // overruns
        let got: Vec<_> = OptionIter::new(&bytes).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            RawOption {
                code: 1,
                data: &[1, 2, 3]
            }
        );
        assert_eq!(
            got[1],
            RawOption {
                code: 14,
                data: &[]
            }
        );
        assert_eq!(
            walk(&bytes, |_| Ok(())),
            Err(WireError::OptionOverrun { code: 7 })
        );
        assert_eq!(
            walk(&[0, 1, 0], |_| Ok(())),
            Err(WireError::TruncatedOption)
        );
        assert_eq!(walk(&[], |_| Ok(())), Ok(()));
    }

    #[test]
    fn seen_rejects_only_singletons() {
        let mut s = Seen::default();
        s.note(opt::IA_NA).unwrap();
        s.note(opt::IA_NA).unwrap();
        s.note(opt::CLIENTID).unwrap();
        assert_eq!(
            s.note(opt::CLIENTID),
            Err(WireError::DuplicateOption { code: 1 })
        );
        s.note(opt::RELAY_SOURCE_PORT).unwrap();
        assert!(s.note(opt::RELAY_SOURCE_PORT).is_err());
    }

    #[test]
    fn status_code_values() {
        // RFC 8415's 0..=6, RFC 5007's Leasequery codes 7..=10 and RFC 5460's 11.
        for v in 0..=11u16 {
            assert_eq!(StatusCode::from_u16(v).map(StatusCode::to_u16), Some(v));
        }
        assert_eq!(StatusCode::from_u16(12), None);
        assert_eq!(StatusCode::NoPrefixAvail.to_u16(), 6);
        let s = Status::from_data(&[0, 2, b'h', b'i']).unwrap();
        assert_eq!(s.status_code(), Some(StatusCode::NoAddrsAvail));
        assert_eq!(s.message_lossy(), "hi");
        assert!(Status::from_data(&[0]).is_none());
    }

    #[test]
    fn fixed_lengths_are_checked() {
        let o = |code, data: &'static [u8]| RawOption { code, data };
        assert!(check_top_level(o(opt::ELAPSED_TIME, &[0, 1])).is_ok());
        assert_eq!(
            check_top_level(o(opt::ELAPSED_TIME, &[0])),
            Err(WireError::BadOptionLength { code: 8, len: 1 })
        );
        assert!(check_top_level(o(opt::RAPID_COMMIT, &[1])).is_err());
        assert!(check_top_level(o(opt::ORO, &[0, 23, 0])).is_err());
        assert!(check_top_level(o(opt::UNICAST, &[0; 15])).is_err());
        assert!(check_top_level(o(opt::CLIENTID, &[0, 1])).is_err());
        assert!(check_top_level(o(opt::CLIENTID, &[0, 1, 2])).is_ok());
        assert!(check_top_level(o(opt::CLIENTID, &[0; 131])).is_err());
        assert!(check_top_level(o(opt::STATUS_CODE, &[])).is_err());
        assert!(check_top_level(o(opt::STATUS_CODE, &[0, 0])).is_ok());
        assert!(check_top_level(o(999, &[1, 2, 3])).is_ok());
    }

    #[test]
    fn nested_ia_validation() {
        // IA_NA: 12 fixed bytes + IAADDR with 23 bytes → error on the IAADDR.
        let mut ia = vec![0u8; 12];
        ia.extend(raw(opt::IAADDR, &[0; 23]));
        assert_eq!(
            check_top_level(RawOption {
                code: opt::IA_NA,
                data: &ia
            }),
            Err(WireError::BadOptionLength { code: 5, len: 23 })
        );
        // IA_PD with IAPREFIX of prefix length 129.
        let mut pfx = vec![0u8; 25];
        pfx[8] = 129;
        let mut pd = vec![0u8; 12];
        pd.extend(raw(opt::IAPREFIX, &pfx));
        assert_eq!(
            check_top_level(RawOption {
                code: opt::IA_PD,
                data: &pd
            }),
            Err(WireError::BadPrefixLength(129))
        );
        // Duplicate status code inside an IA.
        let mut ia = vec![0u8; 12];
        ia.extend(raw(opt::STATUS_CODE, &[0, 0]));
        ia.extend(raw(opt::STATUS_CODE, &[0, 1]));
        assert_eq!(
            check_top_level(RawOption {
                code: opt::IA_NA,
                data: &ia
            }),
            Err(WireError::DuplicateOption { code: 13 })
        );
        // IAPREFIX inside IA_NA is not interpreted (left opaque).
        let mut ia = vec![0u8; 12];
        ia.extend(raw(opt::IAPREFIX, &[0; 3]));
        assert!(
            check_top_level(RawOption {
                code: opt::IA_NA,
                data: &ia
            })
            .is_ok()
        );
    }

    #[test]
    fn typed_views_decode_fields() {
        let mut data = vec![];
        data.extend(7u32.to_be_bytes());
        data.extend(100u32.to_be_bytes());
        data.extend(200u32.to_be_bytes());
        let mut addr = Ipv6Addr::LOCALHOST.octets().to_vec();
        addr.extend(300u32.to_be_bytes());
        addr.extend(400u32.to_be_bytes());
        addr.extend(raw(opt::STATUS_CODE, &[0, 0, b'o', b'k']));
        data.extend(raw(opt::IAADDR, &addr));
        let ia = IaNa::from_data(&data).unwrap();
        assert_eq!((ia.iaid, ia.t1, ia.t2), (7, 100, 200));
        assert!(ia.status().is_none());
        let a: Vec<_> = ia.addresses().collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].addr, Ipv6Addr::LOCALHOST);
        assert_eq!((a[0].preferred_secs, a[0].valid_secs), (300, 400));
        assert_eq!(a[0].status().unwrap().message, b"ok");

        let mut p = vec![];
        p.extend(1u32.to_be_bytes());
        p.extend(2u32.to_be_bytes());
        p.push(48);
        p.extend("2001:db8::".parse::<Ipv6Addr>().unwrap().octets());
        let pfx = IaPrefix::from_data(&p).unwrap();
        assert_eq!(pfx.prefix_len, 48);
        assert_eq!(pfx.prefix, "2001:db8::".parse::<Ipv6Addr>().unwrap());
        assert_eq!((pfx.preferred_secs, pfx.valid_secs), (1, 2));
        assert!(IaPrefix::from_data(&p[..24]).is_none());
    }

    #[test]
    fn oro_iter() {
        let v: Vec<u16> = OroIter::new(&[0, 23, 0, 24]).collect();
        assert_eq!(v, [23, 24]);
        assert_eq!(OroIter::new(&[0, 23, 0, 24]).len(), 2);
    }
}
