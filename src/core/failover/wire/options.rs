//! Failover option codes, value types, option validation and the decoded option groups.

use std::net::Ipv6Addr;

use crate::wire::{
    OptionIter, RawOption, Status, StatusCode, WireError, check_duid, exact_len, min_len, walk_with,
};

use super::FailoverWireError;

/// Option codes used by RFC 8156: the `OPTION_F_*` codes 114..=134 plus the DHCPv6 and
/// leasequery options a binding travels in (codes from the IANA registry, see the digest).
///
/// DHCPv6 codes already in [`crate::wire::opt`] (CLIENTID, IA_NA, IA_TA, IAADDR, STATUS_CODE,
/// IA_PD, IAPREFIX, CLIENT_FQDN) are repeated here so one import suffices.
pub mod fopt {
    use crate::wire::opt;

    /// Client Identifier (DUID), inside `OPTION_CLIENT_DATA`.
    pub const CLIENTID: u16 = opt::CLIENTID;
    /// IA_NA, inside `OPTION_CLIENT_DATA`.
    pub const IA_NA: u16 = opt::IA_NA;
    /// IA_TA, inside `OPTION_CLIENT_DATA`.
    pub const IA_TA: u16 = opt::IA_TA;
    /// IA Address, inside IA_NA / IA_TA.
    pub const IAADDR: u16 = opt::IAADDR;
    /// Status Code.
    pub const STATUS_CODE: u16 = opt::STATUS_CODE;
    /// IA_PD, inside `OPTION_CLIENT_DATA`.
    pub const IA_PD: u16 = opt::IA_PD;
    /// IA Prefix, inside IA_PD, or top-level for a delegable prefix with no client.
    pub const IAPREFIX: u16 = opt::IAPREFIX;
    /// Client FQDN (RFC 4704), inside IAADDR / IAPREFIX.
    pub const CLIENT_FQDN: u16 = opt::CLIENT_FQDN;
    /// `OPTION_CLIENT_DATA` (RFC 5007): all data about one client.
    pub const CLIENT_DATA: u16 = 45;
    /// `OPTION_CLT_TIME` (RFC 5007): seconds since the last client contact (relative).
    pub const CLT_TIME: u16 = 46;
    /// `OPTION_LQ_RELAY_DATA` (RFC 5007): peer address + the relay message last received.
    pub const LQ_RELAY_DATA: u16 = 47;
    /// `OPTION_VSS` (RFC 6607): virtual subnet selection.
    pub const VSS: u16 = 68;
    /// `OPTION_LQ_BASE_TIME` (RFC 7653): absolute time the enclosing data was built.
    pub const LQ_BASE_TIME: u16 = 100;
    /// `OPTION_F_BINDING_STATUS` (1 octet, [`BindingStatus`](super::BindingStatus)).
    pub const F_BINDING_STATUS: u16 = 114;
    /// `OPTION_F_CONNECT_FLAGS` (2 octets, [`ConnectFlags`](super::ConnectFlags)).
    pub const F_CONNECT_FLAGS: u16 = 115;
    /// `OPTION_F_DNS_REMOVAL_INFO` (encapsulates host name, zone name, DNS flags).
    pub const F_DNS_REMOVAL_INFO: u16 = 116;
    /// `OPTION_F_DNS_HOST_NAME` (RFC 1035 wire-format name).
    pub const F_DNS_HOST_NAME: u16 = 117;
    /// `OPTION_F_DNS_ZONE_NAME` (RFC 1035 wire-format name).
    pub const F_DNS_ZONE_NAME: u16 = 118;
    /// `OPTION_F_DNS_FLAGS` (2 octets, [`DnsFlags`](super::DnsFlags)).
    pub const F_DNS_FLAGS: u16 = 119;
    /// `OPTION_F_EXPIRATION_TIME` (4 octets, absolute).
    pub const F_EXPIRATION_TIME: u16 = 120;
    /// `OPTION_F_MAX_UNACKED_BNDUPD` (4 octets, count).
    pub const F_MAX_UNACKED_BNDUPD: u16 = 121;
    /// `OPTION_F_MCLT` (4 octets, seconds).
    pub const F_MCLT: u16 = 122;
    /// `OPTION_F_PARTNER_LIFETIME` (4 octets, absolute).
    pub const F_PARTNER_LIFETIME: u16 = 123;
    /// `OPTION_F_PARTNER_LIFETIME_SENT` (4 octets, absolute).
    pub const F_PARTNER_LIFETIME_SENT: u16 = 124;
    /// `OPTION_F_PARTNER_DOWN_TIME` (4 octets, absolute).
    pub const F_PARTNER_DOWN_TIME: u16 = 125;
    /// `OPTION_F_PARTNER_RAW_CLT_TIME` (4 octets, absolute).
    pub const F_PARTNER_RAW_CLT_TIME: u16 = 126;
    /// `OPTION_F_PROTOCOL_VERSION` (2 + 2 octets).
    pub const F_PROTOCOL_VERSION: u16 = 127;
    /// `OPTION_F_KEEPALIVE_TIME` (4 octets, seconds).
    pub const F_KEEPALIVE_TIME: u16 = 128;
    /// `OPTION_F_RECONFIGURE_DATA` (4-octet absolute time + key).
    pub const F_RECONFIGURE_DATA: u16 = 129;
    /// `OPTION_F_RELATIONSHIP_NAME` (UTF-8, not NUL-terminated).
    pub const F_RELATIONSHIP_NAME: u16 = 130;
    /// `OPTION_F_SERVER_FLAGS` (1 octet, [`ServerFlags`](super::ServerFlags)).
    pub const F_SERVER_FLAGS: u16 = 131;
    /// `OPTION_F_SERVER_STATE` (1 octet, [`ServerState`](super::ServerState)).
    pub const F_SERVER_STATE: u16 = 132;
    /// `OPTION_F_START_TIME_OF_STATE` (4 octets, absolute).
    pub const F_START_TIME_OF_STATE: u16 = 133;
    /// `OPTION_F_STATE_EXPIRATION_TIME` (4 octets, absolute).
    pub const F_STATE_EXPIRATION_TIME: u16 = 134;
}

// ---------------------------------------------------------------------------------------------
// Enumerated values and flags.

/// Declares a fieldless enum with explicit wire values together with its decoder `$from`
/// (`None` for a value without a variant) and encoder `$to`, from one list of variants, so
/// that the decoding table cannot drift from the declaration.
macro_rules! wire_enum {
    (
        $(#[$attr:meta])*
        pub enum $name:ident: $repr:ident, $from:ident, $to:ident {
            $($(#[$vattr:meta])* $variant:ident = $value:literal,)+
        }
    ) => {
        $(#[$attr])*
        #[repr($repr)]
        pub enum $name {
            $($(#[$vattr])* $variant = $value,)+
        }

        impl $name {
            /// Decodes a wire value; `None` for a value without a variant.
            pub fn $from(v: $repr) -> Option<Self> {
                match v {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The wire value.
            pub fn $to(self) -> $repr {
                self as $repr
            }
        }
    };
}
pub(super) use wire_enum;

wire_enum! {
    /// Binding status of a lease (`OPTION_F_BINDING_STATUS`, RFC 8156 §5.5.1); 0 is reserved.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum BindingStatus: u8, from_u8, to_u8 {
        /// ACTIVE (1): leased to a client.
        Active = 1,
        /// EXPIRED (2): the client's lease ran out.
        Expired = 2,
        /// RELEASED (3): the client released it.
        Released = 3,
        /// PENDING-FREE (4): passing state on the way to FREE / FREE-BACKUP.
        PendingFree = 4,
        /// FREE (5): available to the primary.
        Free = 5,
        /// FREE-BACKUP (6): available to the secondary.
        FreeBackup = 6,
        /// ABANDONED (7): unusable (e.g. after DECLINE).
        Abandoned = 7,
        /// RESET (8): freed by an operator.
        Reset = 8,
    }
}

wire_enum! {
    /// Endpoint state (`OPTION_F_SERVER_STATE`); 0 is reserved.
    ///
    /// UNCONFIRMED (digest §0.1/§10): values follow Wireshark and the IANA-citing header, where
    /// 7 is RECOVER-WAIT; draft -06 had SHUTDOWN there. STARTUP (1) is never *sent* as a state
    /// (the STARTUP server flag is), but it decodes so that a partner that sends it is not
    /// dropped.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ServerState: u8, from_u8, to_u8 {
        /// STARTUP (1).
        Startup = 1,
        /// NORMAL (2).
        Normal = 2,
        /// COMMUNICATIONS-INTERRUPTED (3).
        CommunicationsInterrupted = 3,
        /// PARTNER-DOWN (4).
        PartnerDown = 4,
        /// POTENTIAL-CONFLICT (5).
        PotentialConflict = 5,
        /// RECOVER (6).
        Recover = 6,
        /// RECOVER-WAIT (7).
        RecoverWait = 7,
        /// RECOVER-DONE (8).
        RecoverDone = 8,
        /// RESOLUTION-INTERRUPTED (9).
        ResolutionInterrupted = 9,
        /// CONFLICT-DONE (10).
        ConflictDone = 10,
    }
}

wire_enum! {
    /// Status codes a failover peer uses in `OPTION_STATUS_CODE`: the RFC 8415 ones,
    /// NotSupported from RFC 7653 and the RFC 8156 codes 16..=22.
    ///
    /// The raw value stays available in [`Status::code`]; other values decode to `None`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum FailoverStatusCode: u16, from_u16, to_u16 {
        /// Success (0).
        Success = 0,
        /// UnspecFail (1).
        UnspecFail = 1,
        /// NoAddrsAvail (2).
        NoAddrsAvail = 2,
        /// NoBinding (3).
        NoBinding = 3,
        /// NotOnLink (4).
        NotOnLink = 4,
        /// UseMulticast (5).
        UseMulticast = 5,
        /// NoPrefixAvail (6).
        NoPrefixAvail = 6,
        /// NotSupported (14, RFC 7653): e.g. unsupported protocol version in CONNECTREPLY.
        NotSupported = 14,
        /// AddressInUse (16): the lease is bound to a different client on each server.
        AddressInUse = 16,
        /// ConfigurationConflict (17): the update conflicts with local configuration.
        ConfigurationConflict = 17,
        /// MissingBindingInformation (18): the BNDUPD lacks what is needed to process it.
        MissingBindingInformation = 18,
        /// OutdatedBindingInformation (19): the receiver's data is more recent.
        OutdatedBindingInformation = 19,
        /// ServerShuttingDown (20): planned shutdown, typically in DISCONNECT.
        ServerShuttingDown = 20,
        /// DNSUpdateNotSupported (21): the receiver refuses BNDUPDs carrying DNS-update data.
        DnsUpdateNotSupported = 21,
        /// ExcessiveTimeSkew (22): the sender's clock is more than 5 s off.
        ExcessiveTimeSkew = 22,
    }
}

impl FailoverStatusCode {
    /// The code of a received [`Status`], if it has a variant.
    pub fn of(status: &Status<'_>) -> Option<Self> {
        Self::from_u16(status.code)
    }

    /// True for [`FailoverStatusCode::Success`].
    pub fn is_success(self) -> bool {
        self == FailoverStatusCode::Success
    }
}

impl From<StatusCode> for FailoverStatusCode {
    fn from(c: StatusCode) -> Self {
        // Every RFC 8415 code has a variant here with the same value.
        FailoverStatusCode::from_u16(c.to_u16()).unwrap_or(FailoverStatusCode::UnspecFail)
    }
}

/// `OPTION_F_PROTOCOL_VERSION`: major and minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolVersion {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version RFC 8156 defines: 1.0.
    pub const V1_0: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

    /// The 4-octet wire form.
    pub fn to_bytes(self) -> [u8; 4] {
        let [a, b] = self.major.to_be_bytes();
        let [c, d] = self.minor.to_be_bytes();
        [a, b, c, d]
    }
}

/// `OPTION_F_SERVER_FLAGS` (bit masks from Wireshark; other bits must be zero and are kept
/// as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ServerFlags(pub u8);

impl ServerFlags {
    /// C, COMMUNICATED (0x01): the sender has communicated with its partner.
    pub const COMMUNICATED: ServerFlags = ServerFlags(0x01);
    /// S, STARTUP (0x02): set while the sender is in STARTUP.
    pub const STARTUP: ServerFlags = ServerFlags(0x02);
    /// A, ACK_STARTUP (0x04): the last flags received from the partner had STARTUP set.
    pub const ACK_STARTUP: ServerFlags = ServerFlags(0x04);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: ServerFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The STARTUP bit.
    pub fn startup(self) -> bool {
        self.contains(Self::STARTUP)
    }

    /// The ACK_STARTUP bit.
    pub fn ack_startup(self) -> bool {
        self.contains(Self::ACK_STARTUP)
    }

    /// The COMMUNICATED bit.
    pub fn communicated(self) -> bool {
        self.contains(Self::COMMUNICATED)
    }
}

impl std::ops::BitOr for ServerFlags {
    type Output = ServerFlags;
    fn bitor(self, rhs: ServerFlags) -> ServerFlags {
        ServerFlags(self.0 | rhs.0)
    }
}

/// `OPTION_F_CONNECT_FLAGS` (other bits must be zero and are kept as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnectFlags(pub u16);

impl ConnectFlags {
    /// F, FIXED_PD_LENGTH (0x0001): each delegable prefix delegates at one fixed length.
    pub const FIXED_PD_LENGTH: ConnectFlags = ConnectFlags(0x0001);

    /// The FIXED_PD_LENGTH bit.
    pub fn fixed_pd_length(self) -> bool {
        self.0 & Self::FIXED_PD_LENGTH.0 != 0
    }
}

/// `OPTION_F_DNS_FLAGS` (other bits must be zero and are kept as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DnsFlags(pub u16);

impl DnsFlags {
    /// F, FWD_UPTODATE (0x0001): the forward zone is up to date.
    pub const FWD_UPTODATE: DnsFlags = DnsFlags(0x0001);
    /// R, REV_UPTODATE (0x0002): the reverse zone is up to date.
    pub const REV_UPTODATE: DnsFlags = DnsFlags(0x0002);
    /// S, SYNTHESIZED_NAME (0x0004): the name was synthesized.
    pub const SYNTHESIZED_NAME: DnsFlags = DnsFlags(0x0004);
    /// U, USING_REQUESTED_FQDN (0x0008): the name came from the client's FQDN option.
    pub const USING_REQUESTED_FQDN: DnsFlags = DnsFlags(0x0008);

    /// True if every bit of `other` is set.
    pub fn contains(self, other: DnsFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for DnsFlags {
    type Output = DnsFlags;
    fn bitor(self, rhs: DnsFlags) -> DnsFlags {
        DnsFlags(self.0 | rhs.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoded option groups.

/// The CONNECT / CONNECTREPLY options of a message (each `None` when absent).
///
/// Presence rules (which options a CONNECT MUST carry, etc.) are the engine's business: the
/// parser only checks formats, so that a CONNECT lacking something can still be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectOptions<'a> {
    /// `OPTION_F_PROTOCOL_VERSION`.
    pub protocol_version: Option<ProtocolVersion>,
    /// `OPTION_F_MCLT`, seconds.
    pub mclt: Option<u32>,
    /// `OPTION_F_KEEPALIVE_TIME`, seconds.
    pub keepalive_time: Option<u32>,
    /// `OPTION_F_MAX_UNACKED_BNDUPD`.
    pub max_unacked_bndupd: Option<u32>,
    /// `OPTION_F_CONNECT_FLAGS`.
    pub connect_flags: Option<ConnectFlags>,
    /// `OPTION_F_RELATIONSHIP_NAME` (validated UTF-8, as received).
    pub relationship_name: Option<&'a str>,
}

/// The STATE options of a message (each `None` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateOptions {
    /// `OPTION_F_SERVER_STATE`.
    pub server_state: Option<ServerState>,
    /// `OPTION_F_SERVER_FLAGS`.
    pub server_flags: Option<ServerFlags>,
    /// `OPTION_F_START_TIME_OF_STATE` (absolute failover time).
    pub start_time_of_state: Option<u32>,
    /// `OPTION_F_PARTNER_DOWN_TIME` (absolute; only sent in PARTNER-DOWN).
    pub partner_down_time: Option<u32>,
}

/// `OPTION_F_RECONFIGURE_DATA`: the Reconfigure key and when it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconfigureData<'a> {
    /// reconfigure-time (absolute failover time).
    pub time: u32,
    /// reconfigure-key.
    pub key: &'a [u8],
}

/// `OPTION_LQ_RELAY_DATA` (RFC 5007): the relay information last received with the client's
/// message. The relay message itself is not validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LqRelayData<'a> {
    /// peer-address.
    pub peer_address: Ipv6Addr,
    /// The relay message (outermost Relay-forw) as received.
    pub relay_message: &'a [u8],
}

/// `OPTION_F_DNS_REMOVAL_INFO`: what the partner needs to remove a DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsRemovalInfo<'a> {
    /// `OPTION_F_DNS_HOST_NAME` (RFC 1035 wire format).
    pub host_name: Option<&'a [u8]>,
    /// `OPTION_F_DNS_ZONE_NAME` (RFC 1035 wire format).
    pub zone_name: Option<&'a [u8]>,
    /// `OPTION_F_DNS_FLAGS`.
    pub flags: Option<DnsFlags>,
}

/// The failover options of one address or prefix (inside IAADDR / IAPREFIX), each `None`
/// when absent.
///
/// In a BNDUPD (digest §4.1/§4.2): binding status, start time of state, and, only if the status
/// has a timeout, state expiration time, partner lifetime and expiration time; CLT_TIME,
/// partner raw CLT time and the client FQDN when known. In a BNDREPLY (§4.3): status code,
/// binding status, state expiration time and partner lifetime sent. [`LeaseOptions::vss`] and
/// [`LeaseOptions::lq_base_time`] are only used on a top-level IAPREFIX (§4.2); in a client
/// binding they live in `OPTION_CLIENT_DATA` ([`Binding`](super::Binding)).
///
/// UNCONFIRMED (digest §4.1): `OPTION_F_DNS_REMOVAL_INFO` is placed here, next to
/// `OPTION_CLIENT_FQDN`; the draft does not say where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseOptions<'a> {
    /// `OPTION_F_BINDING_STATUS`.
    pub binding_status: Option<BindingStatus>,
    /// `OPTION_F_START_TIME_OF_STATE` (absolute): when the binding status began.
    pub start_time_of_state: Option<u32>,
    /// `OPTION_F_STATE_EXPIRATION_TIME` (absolute): when the current status ends.
    pub state_expiration_time: Option<u32>,
    /// `OPTION_CLT_TIME`: seconds since the last real client contact, relative to the
    /// `OPTION_LQ_BASE_TIME` (see [`absolute_clt_time`](super::absolute_clt_time)).
    pub clt_time: Option<u32>,
    /// `OPTION_F_PARTNER_LIFETIME` (absolute).
    pub partner_lifetime: Option<u32>,
    /// `OPTION_F_PARTNER_LIFETIME_SENT` (absolute; exact echo, BNDREPLY).
    pub partner_lifetime_sent: Option<u32>,
    /// `OPTION_F_PARTNER_RAW_CLT_TIME` (absolute, unadjusted).
    pub partner_raw_clt_time: Option<u32>,
    /// `OPTION_F_EXPIRATION_TIME` (absolute).
    pub expiration_time: Option<u32>,
    /// `OPTION_STATUS_CODE` (BNDREPLY: rejection of just this address / prefix).
    pub status: Option<Status<'a>>,
    /// `OPTION_CLIENT_FQDN` data (flags octet + name), as received.
    pub client_fqdn: Option<&'a [u8]>,
    /// `OPTION_F_DNS_REMOVAL_INFO`.
    pub dns_removal_info: Option<DnsRemovalInfo<'a>>,
    /// `OPTION_LQ_BASE_TIME` (absolute; top-level IAPREFIX only).
    pub lq_base_time: Option<u32>,
    /// `OPTION_VSS` data (top-level IAPREFIX only).
    pub vss: Option<&'a [u8]>,
}

impl<'a> LeaseOptions<'a> {
    /// Decodes the failover options in an IAADDR / IAPREFIX options area.
    ///
    /// Infallible: on data validated by [`FailoverMessage::parse`](super::FailoverMessage::parse)
    /// every field is exact; on anything else, options of the wrong size or with invalid values
    /// are skipped (never a panic). If an option repeats, the first one wins.
    pub fn decode(options: OptionIter<'a>) -> Self {
        let mut l = LeaseOptions::default();
        for o in options {
            match o.code {
                fopt::F_BINDING_STATUS => set_once(
                    &mut l.binding_status,
                    u8_of(o).and_then(BindingStatus::from_u8),
                ),
                fopt::F_START_TIME_OF_STATE => set_once(&mut l.start_time_of_state, u32_of(o)),
                fopt::F_STATE_EXPIRATION_TIME => set_once(&mut l.state_expiration_time, u32_of(o)),
                fopt::CLT_TIME => set_once(&mut l.clt_time, u32_of(o)),
                fopt::F_PARTNER_LIFETIME => set_once(&mut l.partner_lifetime, u32_of(o)),
                fopt::F_PARTNER_LIFETIME_SENT => set_once(&mut l.partner_lifetime_sent, u32_of(o)),
                fopt::F_PARTNER_RAW_CLT_TIME => set_once(&mut l.partner_raw_clt_time, u32_of(o)),
                fopt::F_EXPIRATION_TIME => set_once(&mut l.expiration_time, u32_of(o)),
                fopt::STATUS_CODE => set_once(&mut l.status, Status::from_data(o.data)),
                fopt::CLIENT_FQDN => set_once(&mut l.client_fqdn, non_empty(o)),
                fopt::F_DNS_REMOVAL_INFO => set_once(
                    &mut l.dns_removal_info,
                    Some(DnsRemovalInfo::decode(o.data)),
                ),
                fopt::LQ_BASE_TIME => set_once(&mut l.lq_base_time, u32_of(o)),
                fopt::VSS => set_once(&mut l.vss, non_empty(o)),
                _ => {}
            }
        }
        l
    }
}

impl<'a> DnsRemovalInfo<'a> {
    /// Decodes the options inside `OPTION_F_DNS_REMOVAL_INFO` (tolerant like
    /// [`LeaseOptions::decode`]).
    pub fn decode(data: &'a [u8]) -> Self {
        let mut d = DnsRemovalInfo::default();
        for o in OptionIter::new(data) {
            match o.code {
                fopt::F_DNS_HOST_NAME => set_once(&mut d.host_name, Some(o.data)),
                fopt::F_DNS_ZONE_NAME => set_once(&mut d.zone_name, Some(o.data)),
                fopt::F_DNS_FLAGS => set_once(&mut d.flags, u16_of(o).map(DnsFlags)),
                _ => {}
            }
        }
        d
    }
}

impl<'a> ConnectOptions<'a> {
    /// Records one top-level option if it is a CONNECT option (validated data).
    pub(super) fn note(&mut self, o: RawOption<'a>) {
        match o.code {
            fopt::F_PROTOCOL_VERSION => set_once(
                &mut self.protocol_version,
                u32_of(o).map(|v| ProtocolVersion {
                    major: (v >> 16) as u16,
                    minor: v as u16,
                }),
            ),
            fopt::F_MCLT => set_once(&mut self.mclt, u32_of(o)),
            fopt::F_KEEPALIVE_TIME => set_once(&mut self.keepalive_time, u32_of(o)),
            fopt::F_MAX_UNACKED_BNDUPD => set_once(&mut self.max_unacked_bndupd, u32_of(o)),
            fopt::F_CONNECT_FLAGS => set_once(&mut self.connect_flags, u16_of(o).map(ConnectFlags)),
            fopt::F_RELATIONSHIP_NAME => set_once(
                &mut self.relationship_name,
                std::str::from_utf8(o.data).ok(),
            ),
            _ => {}
        }
    }
}

impl StateOptions {
    /// Records one top-level option if it is a STATE option (validated data).
    pub(super) fn note(&mut self, o: RawOption<'_>) {
        match o.code {
            fopt::F_SERVER_STATE => set_once(
                &mut self.server_state,
                u8_of(o).and_then(ServerState::from_u8),
            ),
            fopt::F_SERVER_FLAGS => set_once(&mut self.server_flags, u8_of(o).map(ServerFlags)),
            fopt::F_START_TIME_OF_STATE => set_once(&mut self.start_time_of_state, u32_of(o)),
            fopt::F_PARTNER_DOWN_TIME => set_once(&mut self.partner_down_time, u32_of(o)),
            _ => {}
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, v: Option<T>) {
    if slot.is_none() {
        *slot = v;
    }
}

fn non_empty<'a>(o: RawOption<'a>) -> Option<&'a [u8]> {
    (!o.data.is_empty()).then_some(o.data)
}

pub(super) fn u8_of(o: RawOption<'_>) -> Option<u8> {
    match o.data {
        [v] => Some(*v),
        _ => None,
    }
}

pub(super) fn u16_of(o: RawOption<'_>) -> Option<u16> {
    let b: [u8; 2] = o.data.try_into().ok()?;
    Some(u16::from_be_bytes(b))
}

pub(super) fn u32_of(o: RawOption<'_>) -> Option<u32> {
    let b: [u8; 4] = o.data.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Walks every option in `bytes` ([`crate::wire`]'s walk), failing on the first error from
/// `f` or malformed option header or length, in option order.
pub(super) fn walk<'a>(
    bytes: &'a [u8],
    f: impl FnMut(RawOption<'a>) -> Result<(), FailoverWireError>,
) -> Result<(), FailoverWireError> {
    walk_with(bytes, f)
}

/// Tracks which single-instance options were already seen in one scope.
#[derive(Default)]
pub(super) struct Seen(crate::wire::Seen);

impl Seen {
    /// Records `code`; errors if it is a single-instance option already seen in this scope.
    /// Every option this codec interprets is single-instance, except the IAs, IAADDR and
    /// IAPREFIX inside a binding.
    pub(super) fn note(&mut self, code: u16) -> Result<(), WireError> {
        let bit = match code {
            fopt::F_BINDING_STATUS..=fopt::F_STATE_EXPIRATION_TIME => code - fopt::F_BINDING_STATUS,
            fopt::CLIENTID => 21,
            fopt::STATUS_CODE => 22,
            fopt::CLIENT_FQDN => 23,
            fopt::CLIENT_DATA => 24,
            fopt::CLT_TIME => 25,
            fopt::LQ_RELAY_DATA => 26,
            fopt::VSS => 27,
            fopt::LQ_BASE_TIME => 28,
            _ => return Ok(()),
        };
        self.0.note_as(code, u32::from(bit))
    }
}

/// Checks the format of any non-container option this codec interprets, wherever it appears:
/// fixed sizes, minimum sizes, enumerated values, UTF-8 text, and the contents of
/// `OPTION_F_DNS_REMOVAL_INFO`. Other options (including IA containers, which the scopes check
/// themselves) pass.
pub(super) fn check_option(o: RawOption<'_>) -> Result<(), FailoverWireError> {
    check_len(o)?;
    match o.code {
        fopt::F_BINDING_STATUS => {
            let v = u8_of(o).unwrap_or(0);
            BindingStatus::from_u8(v)
                .map(|_| ())
                .ok_or(FailoverWireError::BadBindingStatus(v))
        }
        fopt::F_SERVER_STATE => {
            let v = u8_of(o).unwrap_or(0);
            ServerState::from_u8(v)
                .map(|_| ())
                .ok_or(FailoverWireError::BadServerState(v))
        }
        fopt::F_RELATIONSHIP_NAME => std::str::from_utf8(o.data)
            .map(|_| ())
            .map_err(|_| FailoverWireError::BadText { code: o.code }),
        fopt::F_DNS_REMOVAL_INFO => {
            let mut seen = Seen::default();
            walk(o.data, |n| {
                seen.note(n.code)?;
                check_option(n)
            })
        }
        _ => Ok(()),
    }
}

/// The length rules of [`check_option`]: fixed and minimum sizes, DUID length.
fn check_len(o: RawOption<'_>) -> Result<(), WireError> {
    match o.code {
        fopt::F_BINDING_STATUS | fopt::F_SERVER_STATE | fopt::F_SERVER_FLAGS => exact_len(o, 1),
        fopt::F_CONNECT_FLAGS | fopt::F_DNS_FLAGS => exact_len(o, 2),
        fopt::F_EXPIRATION_TIME
        | fopt::F_MAX_UNACKED_BNDUPD
        | fopt::F_MCLT
        | fopt::F_PARTNER_LIFETIME
        | fopt::F_PARTNER_LIFETIME_SENT
        | fopt::F_PARTNER_DOWN_TIME
        | fopt::F_PARTNER_RAW_CLT_TIME
        | fopt::F_PROTOCOL_VERSION
        | fopt::F_KEEPALIVE_TIME
        | fopt::F_START_TIME_OF_STATE
        | fopt::F_STATE_EXPIRATION_TIME
        | fopt::CLT_TIME
        | fopt::LQ_BASE_TIME => exact_len(o, 4),
        fopt::F_RECONFIGURE_DATA => min_len(o, 4),
        fopt::STATUS_CODE => min_len(o, 2),
        fopt::CLIENTID => check_duid(o),
        fopt::CLIENT_FQDN | fopt::VSS => min_len(o, 1),
        fopt::LQ_RELAY_DATA => min_len(o, 16),
        _ => Ok(()),
    }
}

/// `OPTION_F_RECONFIGURE_DATA` from validated data.
pub(super) fn reconfigure_data(data: &[u8]) -> Option<ReconfigureData<'_>> {
    let (t, key) = data.split_first_chunk::<4>()?;
    Some(ReconfigureData {
        time: u32::from_be_bytes(*t),
        key,
    })
}

/// `OPTION_LQ_RELAY_DATA` from validated data.
pub(super) fn lq_relay_data(data: &[u8]) -> Option<LqRelayData<'_>> {
    let (a, msg) = data.split_first_chunk::<16>()?;
    Some(LqRelayData {
        peer_address: Ipv6Addr::from(*a),
        relay_message: msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::raw;

    #[test]
    fn value_tables_match_the_digest() {
        for v in 0..=255u8 {
            let b = BindingStatus::from_u8(v);
            assert_eq!(b.is_some(), (1..=8).contains(&v));
            if let Some(b) = b {
                assert_eq!(b.to_u8(), v);
            }
            let s = ServerState::from_u8(v);
            assert_eq!(s.is_some(), (1..=10).contains(&v));
            if let Some(s) = s {
                assert_eq!(s.to_u8(), v);
            }
        }
        assert_eq!(BindingStatus::PendingFree.to_u8(), 4);
        assert_eq!(BindingStatus::Reset.to_u8(), 8);
        assert_eq!(ServerState::RecoverWait.to_u8(), 7);
        assert_eq!(ServerState::ConflictDone.to_u8(), 10);
        for v in 0..=u16::MAX {
            if let Some(c) = FailoverStatusCode::from_u16(v) {
                assert_eq!(c.to_u16(), v);
            }
        }
        assert_eq!(FailoverStatusCode::AddressInUse.to_u16(), 16);
        assert_eq!(FailoverStatusCode::ExcessiveTimeSkew.to_u16(), 22);
        assert_eq!(FailoverStatusCode::NotSupported.to_u16(), 14);
        assert_eq!(FailoverStatusCode::from_u16(15), None);
        assert_eq!(
            FailoverStatusCode::from(StatusCode::NoBinding),
            FailoverStatusCode::NoBinding
        );
        let st = Status::from_data(&[0, 19, b'x']).unwrap();
        assert_eq!(
            FailoverStatusCode::of(&st),
            Some(FailoverStatusCode::OutdatedBindingInformation)
        );
    }

    #[test]
    fn flags() {
        let f = ServerFlags::STARTUP | ServerFlags::COMMUNICATED;
        assert_eq!(f.0, 0x03);
        assert!(f.startup() && f.communicated() && !f.ack_startup());
        assert!(ConnectFlags(0x8001).fixed_pd_length());
        assert!(!ConnectFlags(0x8000).fixed_pd_length());
        let d = DnsFlags::USING_REQUESTED_FQDN | DnsFlags::FWD_UPTODATE;
        assert_eq!(d.0, 0x0009);
        assert!(d.contains(DnsFlags::FWD_UPTODATE) && !d.contains(DnsFlags::REV_UPTODATE));
        assert_eq!(ProtocolVersion::V1_0.to_bytes(), [0, 1, 0, 0]);
    }

    #[test]
    fn walk_reports_overrun_and_truncation() {
        let mut b = raw(122, &[0, 0, 0, 1]);
        b.extend([0, 7, 0, 9, 1]);
        assert_eq!(
            walk(&b, |_| Ok(())),
            Err(WireError::OptionOverrun { code: 7 }.into())
        );
        assert_eq!(
            walk(&[0, 1, 0], |_| Ok(())),
            Err(WireError::TruncatedOption.into())
        );
        assert_eq!(walk(&[], |_| Ok(())), Ok(()));
        // Callback errors come first, in option order.
        let b = [raw(1, &[]), vec![0, 9]].concat();
        assert_eq!(
            walk(&b, |o| Err(FailoverWireError::BadText { code: o.code })),
            Err(FailoverWireError::BadText { code: 1 })
        );
    }

    #[test]
    fn option_checks() {
        let o = |code, data: &'static [u8]| RawOption { code, data };
        assert!(check_option(o(fopt::F_BINDING_STATUS, &[8])).is_ok());
        assert_eq!(
            check_option(o(fopt::F_BINDING_STATUS, &[9])),
            Err(FailoverWireError::BadBindingStatus(9))
        );
        assert_eq!(
            check_option(o(fopt::F_BINDING_STATUS, &[1, 0])),
            Err(WireError::BadOptionLength { code: 114, len: 2 }.into())
        );
        assert_eq!(
            check_option(o(fopt::F_SERVER_STATE, &[0])),
            Err(FailoverWireError::BadServerState(0))
        );
        assert!(check_option(o(fopt::F_MCLT, &[0, 0, 0])).is_err());
        assert!(check_option(o(fopt::F_CONNECT_FLAGS, &[0, 0, 0, 0])).is_err());
        assert!(check_option(o(fopt::F_RECONFIGURE_DATA, &[0, 0, 0])).is_err());
        assert!(check_option(o(fopt::F_RECONFIGURE_DATA, &[0, 0, 0, 0])).is_ok());
        assert_eq!(
            check_option(o(fopt::F_RELATIONSHIP_NAME, &[0xff])),
            Err(FailoverWireError::BadText { code: 130 })
        );
        assert!(check_option(o(fopt::CLIENTID, &[0, 1])).is_err());
        assert!(check_option(o(999, &[1])).is_ok());
        let dns = [
            raw(fopt::F_DNS_FLAGS, &[0, 1]),
            raw(fopt::F_DNS_FLAGS, &[0, 1]),
        ]
        .concat();
        assert_eq!(
            check_option(RawOption {
                code: fopt::F_DNS_REMOVAL_INFO,
                data: &dns
            }),
            Err(WireError::DuplicateOption { code: 119 }.into())
        );
    }

    #[test]
    fn lease_decode_is_tolerant() {
        let b = [
            raw(fopt::F_BINDING_STATUS, &[0]),
            raw(fopt::F_EXPIRATION_TIME, &[1, 2, 3]),
            raw(fopt::F_PARTNER_LIFETIME, &[0, 0, 0, 9]),
            raw(fopt::F_PARTNER_LIFETIME, &[0, 0, 0, 8]),
            vec![0, 1],
        ]
        .concat();
        let l = LeaseOptions::decode(OptionIter::new(&b));
        assert_eq!(l.binding_status, None);
        assert_eq!(l.expiration_time, None);
        assert_eq!(l.partner_lifetime, Some(9));
    }
}
