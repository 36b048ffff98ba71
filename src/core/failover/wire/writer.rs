//! Emission of failover messages into caller-owned, reused buffers.
//!
//! Built on [`OptionWriter`]: [`FailoverWriter`] is one (through `Deref`, as
//! [`MessageWriter`](crate::wire::MessageWriter) is) and the nested writers wrap one, so every
//! option, including `OPTION_CLIENT_DATA` and the IA_NA / IA_TA / IA_PD / IAADDR / IAPREFIX
//! nesting, gets its length back-patched and overflow handled the same way (a `debug_assert!`
//! in debug builds, a saturated length plus [`OptionWriter::overflowed`] in release builds).
//!
//! The writers emit options in the order their methods are called; the digest's order
//! (§4.1–4.3) is the natural one.

use std::net::Ipv6Addr;
use std::ops::{Deref, DerefMut};

use crate::wire::{OptionWriter, Status};

use super::options::{
    BindingStatus, ConnectFlags, ConnectOptions, DnsRemovalInfo, FailoverStatusCode, LeaseOptions,
    ProtocolVersion, ServerFlags, ServerState, StateOptions, fopt,
};
use super::{FailoverType, FailoverWireError, write_frame};

/// Defines setters that write one option through the writer's [`OptionWriter`] `self.w`:
/// `fn name(arg: Type) => option_method(code, value);` becomes a `pub fn name(&mut self, arg:
/// Type)` calling `self.w.option_method(code, value)`.
macro_rules! option_setters {
    ($($(#[$doc:meta])* fn $name:ident($arg:ident: $ty:ty) => $method:ident($code:expr, $value:expr);)+) => {
        $(
            $(#[$doc])*
            pub fn $name(&mut self, $arg: $ty) {
                self.w.$method($code, $value);
            }
        )+
    };
}

/// Writes a failover message into a caller-owned, reused buffer.
///
/// [`FailoverWriter::new`] clears the buffer and writes the 8-octet header; each method appends
/// one option. Every method of [`OptionWriter`] (`len`, `as_bytes`, `overflowed`, `option`,
/// `option_u32`, `status_raw`, …) is available through `Deref`. The message is complete at any
/// point: `as_bytes` holds it.
#[derive(Debug)]
pub struct FailoverWriter<'b> {
    w: OptionWriter<'b>,
}

impl<'b> FailoverWriter<'b> {
    /// Clears `buf` and writes the header. Only the low 24 bits of `transaction_id` are used;
    /// `sent_time` is a failover time (see [`to_failover_time`](super::to_failover_time)).
    pub fn new(
        buf: &'b mut Vec<u8>,
        msg_type: FailoverType,
        transaction_id: u32,
        sent_time: u32,
    ) -> Self {
        buf.clear();
        let [_, a, b, c] = transaction_id.to_be_bytes();
        buf.extend_from_slice(&[msg_type.to_u8(), a, b, c]);
        buf.extend_from_slice(&sent_time.to_be_bytes());
        FailoverWriter {
            w: OptionWriter::new(buf),
        }
    }

    /// Appends this message as one frame to `out` (see [`write_frame`]); errors with
    /// [`FailoverWireError::TooLong`] if the message is over 65535 bytes or overflowed.
    pub fn frame_into(&self, out: &mut Vec<u8>) -> Result<(), FailoverWireError> {
        if self.w.overflowed() {
            return Err(FailoverWireError::TooLong);
        }
        write_frame(self.w.as_bytes(), out)
    }

    /// Runs `body` on the DHCPv6 [`OptionWriter`] appending top-level options (escape hatch
    /// for options without a helper).
    pub fn with_options(&mut self, body: impl FnOnce(&mut OptionWriter<'_>)) {
        body(&mut self.w);
    }

    /// Writes `OPTION_F_PROTOCOL_VERSION`.
    pub fn protocol_version(&mut self, v: ProtocolVersion) {
        self.w.option(fopt::F_PROTOCOL_VERSION, &v.to_bytes());
    }

    option_setters! {
        /// Writes `OPTION_F_MCLT` (seconds).
        fn mclt(secs: u32) => option_u32(fopt::F_MCLT, secs);
        /// Writes `OPTION_F_KEEPALIVE_TIME` (seconds).
        fn keepalive_time(secs: u32) => option_u32(fopt::F_KEEPALIVE_TIME, secs);
        /// Writes `OPTION_F_MAX_UNACKED_BNDUPD`.
        fn max_unacked_bndupd(count: u32) => option_u32(fopt::F_MAX_UNACKED_BNDUPD, count);
        /// Writes `OPTION_F_CONNECT_FLAGS`.
        fn connect_flags(flags: ConnectFlags) => option_u16(fopt::F_CONNECT_FLAGS, flags.0);
        /// Writes `OPTION_F_RELATIONSHIP_NAME` (no NUL terminator is added).
        fn relationship_name(name: &str) => option(fopt::F_RELATIONSHIP_NAME, name.as_bytes());
        /// Writes `OPTION_F_SERVER_STATE`.
        fn server_state(s: ServerState) => option_u8(fopt::F_SERVER_STATE, s.to_u8());
        /// Writes `OPTION_F_SERVER_FLAGS`.
        fn server_flags(f: ServerFlags) => option_u8(fopt::F_SERVER_FLAGS, f.0);
        /// Writes `OPTION_F_START_TIME_OF_STATE` (absolute failover time).
        fn start_time_of_state(t: u32) => option_u32(fopt::F_START_TIME_OF_STATE, t);
        /// Writes `OPTION_F_PARTNER_DOWN_TIME` (absolute failover time).
        fn partner_down_time(t: u32) => option_u32(fopt::F_PARTNER_DOWN_TIME, t);
    }

    /// Writes every present CONNECT / CONNECTREPLY option, in the order protocol version,
    /// MCLT, keepalive time, max unacked BNDUPD, connect flags, relationship name.
    pub fn connect_options(&mut self, c: &ConnectOptions<'_>) {
        if let Some(v) = c.protocol_version {
            self.protocol_version(v);
        }
        if let Some(v) = c.mclt {
            self.mclt(v);
        }
        if let Some(v) = c.keepalive_time {
            self.keepalive_time(v);
        }
        if let Some(v) = c.max_unacked_bndupd {
            self.max_unacked_bndupd(v);
        }
        if let Some(v) = c.connect_flags {
            self.connect_flags(v);
        }
        if let Some(v) = c.relationship_name {
            self.relationship_name(v);
        }
    }

    /// Writes every present STATE option, in the order server state, server flags, start time
    /// of state, partner down time.
    pub fn state_options(&mut self, s: &StateOptions) {
        if let Some(v) = s.server_state {
            self.server_state(v);
        }
        if let Some(v) = s.server_flags {
            self.server_flags(v);
        }
        if let Some(v) = s.start_time_of_state {
            self.start_time_of_state(v);
        }
        if let Some(v) = s.partner_down_time {
            self.partner_down_time(v);
        }
    }

    /// Writes a top-level `OPTION_STATUS_CODE`.
    pub fn status_code(&mut self, code: FailoverStatusCode, message: &str) {
        self.w.status_raw(code.to_u16(), message.as_bytes());
    }

    /// Writes `OPTION_CLIENT_DATA`; `body` writes its contents (client id, base time, IAs, …).
    pub fn client_data(&mut self, body: impl FnOnce(&mut BindingWriter<'_, '_>)) {
        self.w
            .nested(fopt::CLIENT_DATA, &[], |w| body(&mut BindingWriter { w }));
    }

    /// Writes a top-level `OPTION_IAPREFIX` (a delegable prefix with no client); `body` writes
    /// its failover options (VSS, LQ base time, binding status, …).
    ///
    /// UNCONFIRMED (digest §4.2): the lifetimes are not specified for this use; 0 is likely.
    /// `prefix_len` must be at most 128.
    pub fn pool_prefix(
        &mut self,
        prefix: Ipv6Addr,
        prefix_len: u8,
        preferred_secs: u32,
        valid_secs: u32,
        body: impl FnOnce(&mut LeaseWriter<'_, '_>),
    ) {
        self.w
            .ia_prefix(prefix, prefix_len, preferred_secs, valid_secs, |w| {
                body(&mut LeaseWriter { w })
            });
    }
}

impl<'b> Deref for FailoverWriter<'b> {
    type Target = OptionWriter<'b>;
    fn deref(&self) -> &OptionWriter<'b> {
        &self.w
    }
}

impl DerefMut for FailoverWriter<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.w
    }
}

/// Writes the contents of `OPTION_CLIENT_DATA` (see [`FailoverWriter::client_data`]).
///
/// Digest §4.1 order: client id, LQ base time, VSS, reconfigure data, LQ relay data, then the
/// IAs; in a BNDREPLY a status code may reject the whole update.
#[derive(Debug)]
pub struct BindingWriter<'w, 'b> {
    w: &'w mut OptionWriter<'b>,
}

impl BindingWriter<'_, '_> {
    /// Runs `body` on the DHCPv6 [`OptionWriter`] appending options inside
    /// `OPTION_CLIENT_DATA` (escape hatch).
    pub fn with_options(&mut self, body: impl FnOnce(&mut OptionWriter<'_>)) {
        body(self.w);
    }

    option_setters! {
        /// Writes `OPTION_CLIENTID` (the client's DUID).
        fn client_id(duid: &[u8]) => option(fopt::CLIENTID, duid);
        /// Writes `OPTION_LQ_BASE_TIME` (absolute failover time this data was built).
        fn lq_base_time(t: u32) => option_u32(fopt::LQ_BASE_TIME, t);
        /// Writes `OPTION_VSS` (only for a non-default VPN).
        fn vss(data: &[u8]) => option(fopt::VSS, data);
    }

    /// Writes `OPTION_F_RECONFIGURE_DATA`: reconfigure-time (absolute) then the key.
    pub fn reconfigure_data(&mut self, time: u32, key: &[u8]) {
        self.w
            .option_parts(fopt::F_RECONFIGURE_DATA, &[&time.to_be_bytes(), key]);
    }

    /// Writes `OPTION_LQ_RELAY_DATA`: peer address then the relay message.
    pub fn lq_relay_data(&mut self, peer_address: Ipv6Addr, relay_message: &[u8]) {
        self.w.option_parts(
            fopt::LQ_RELAY_DATA,
            &[&peer_address.octets(), relay_message],
        );
    }

    /// Writes `OPTION_STATUS_CODE` at the `OPTION_CLIENT_DATA` level (BNDREPLY: rejects the
    /// whole update).
    pub fn status_code(&mut self, code: FailoverStatusCode, message: &str) {
        self.status_raw(code.to_u16(), message.as_bytes());
    }

    /// Writes `OPTION_STATUS_CODE` with any numeric code and message bytes.
    pub fn status_raw(&mut self, code: u16, message: &[u8]) {
        self.w.status_raw(code, message);
    }

    /// Writes an IA_NA; `body` writes its IAADDRs.
    pub fn ia_na(&mut self, iaid: u32, t1: u32, t2: u32, body: impl FnOnce(&mut IaWriter<'_, '_>)) {
        self.w.ia_na(iaid, t1, t2, |w| body(&mut IaWriter { w }));
    }

    /// Writes an IA_TA; `body` writes its IAADDRs.
    pub fn ia_ta(&mut self, iaid: u32, body: impl FnOnce(&mut IaWriter<'_, '_>)) {
        self.w.ia_ta(iaid, |w| body(&mut IaWriter { w }));
    }

    /// Writes an IA_PD; `body` writes its IAPREFIXes.
    pub fn ia_pd(&mut self, iaid: u32, t1: u32, t2: u32, body: impl FnOnce(&mut IaWriter<'_, '_>)) {
        self.w.ia_pd(iaid, t1, t2, |w| body(&mut IaWriter { w }));
    }
}

/// Writes the contents of an IA_NA / IA_TA / IA_PD inside a binding.
#[derive(Debug)]
pub struct IaWriter<'w, 'b> {
    w: &'w mut OptionWriter<'b>,
}

impl<'b> IaWriter<'_, 'b> {
    /// The underlying DHCPv6 [`OptionWriter`] (escape hatch).
    pub fn options(&mut self) -> &mut OptionWriter<'b> {
        self.w
    }

    /// Writes an IAADDR (address and the lifetimes sent to the client); `body` writes its
    /// failover options.
    pub fn ia_addr(
        &mut self,
        addr: Ipv6Addr,
        preferred_secs: u32,
        valid_secs: u32,
        body: impl FnOnce(&mut LeaseWriter<'_, '_>),
    ) {
        self.w.ia_addr(addr, preferred_secs, valid_secs, |w| {
            body(&mut LeaseWriter { w })
        });
    }

    /// Writes an IAPREFIX (prefix, length at most 128, lifetimes sent to the client); `body`
    /// writes its failover options.
    pub fn ia_prefix(
        &mut self,
        prefix: Ipv6Addr,
        prefix_len: u8,
        preferred_secs: u32,
        valid_secs: u32,
        body: impl FnOnce(&mut LeaseWriter<'_, '_>),
    ) {
        self.w
            .ia_prefix(prefix, prefix_len, preferred_secs, valid_secs, |w| {
                body(&mut LeaseWriter { w })
            });
    }

    /// Writes `OPTION_STATUS_CODE` at the IA level (BNDREPLY: rejects everything in the IA).
    pub fn status_code(&mut self, code: FailoverStatusCode, message: &str) {
        self.w.status_raw(code.to_u16(), message.as_bytes());
    }

    /// Writes an IA-level `OPTION_STATUS_CODE` with any numeric code and message bytes.
    pub fn status_raw(&mut self, code: u16, message: &[u8]) {
        self.w.status_raw(code, message);
    }
}

/// Writes the failover options inside an IAADDR / IAPREFIX (digest §4.1–4.3).
#[derive(Debug)]
pub struct LeaseWriter<'w, 'b> {
    w: &'w mut OptionWriter<'b>,
}

impl<'b> LeaseWriter<'_, 'b> {
    /// The underlying DHCPv6 [`OptionWriter`] (escape hatch).
    pub fn options(&mut self) -> &mut OptionWriter<'b> {
        self.w
    }

    option_setters! {
        /// Writes `OPTION_F_BINDING_STATUS`.
        fn binding_status(s: BindingStatus) => option_u8(fopt::F_BINDING_STATUS, s.to_u8());
        /// Writes `OPTION_F_START_TIME_OF_STATE` (absolute).
        fn start_time_of_state(t: u32) => option_u32(fopt::F_START_TIME_OF_STATE, t);
        /// Writes `OPTION_F_STATE_EXPIRATION_TIME` (absolute; only if the status has a
        /// timeout).
        fn state_expiration_time(t: u32) => option_u32(fopt::F_STATE_EXPIRATION_TIME, t);
        /// Writes `OPTION_CLT_TIME` (seconds since the last client contact, relative to the
        /// `OPTION_LQ_BASE_TIME`).
        fn clt_time(secs_ago: u32) => option_u32(fopt::CLT_TIME, secs_ago);
        /// Writes `OPTION_F_PARTNER_LIFETIME` (absolute).
        fn partner_lifetime(t: u32) => option_u32(fopt::F_PARTNER_LIFETIME, t);
        /// Writes `OPTION_F_PARTNER_LIFETIME_SENT` (absolute; the exact value received).
        fn partner_lifetime_sent(t: u32) => option_u32(fopt::F_PARTNER_LIFETIME_SENT, t);
        /// Writes `OPTION_F_PARTNER_RAW_CLT_TIME` (absolute, unadjusted).
        fn partner_raw_clt_time(t: u32) => option_u32(fopt::F_PARTNER_RAW_CLT_TIME, t);
        /// Writes `OPTION_F_EXPIRATION_TIME` (absolute).
        fn expiration_time(t: u32) => option_u32(fopt::F_EXPIRATION_TIME, t);
        /// Writes `OPTION_CLIENT_FQDN` data (flags octet + name) as given.
        fn client_fqdn(data: &[u8]) => option(fopt::CLIENT_FQDN, data);
        /// Writes `OPTION_LQ_BASE_TIME` (top-level IAPREFIX only).
        fn lq_base_time(t: u32) => option_u32(fopt::LQ_BASE_TIME, t);
        /// Writes `OPTION_VSS` (top-level IAPREFIX only, non-default VPN).
        fn vss(data: &[u8]) => option(fopt::VSS, data);
    }

    /// Writes `OPTION_STATUS_CODE` (BNDREPLY: rejects just this address / prefix).
    pub fn status_code(&mut self, code: FailoverStatusCode, message: &str) {
        self.w.status_raw(code.to_u16(), message.as_bytes());
    }

    /// Writes `OPTION_STATUS_CODE` with any numeric code and message bytes.
    pub fn status_raw(&mut self, code: u16, message: &[u8]) {
        self.w.status_raw(code, message);
    }

    /// Writes `OPTION_F_DNS_REMOVAL_INFO` with its present parts (host name, zone name,
    /// flags). Placement next to the client FQDN is UNCONFIRMED (see [`LeaseOptions`]).
    pub fn dns_removal_info(&mut self, info: &DnsRemovalInfo<'_>) {
        self.w.nested(fopt::F_DNS_REMOVAL_INFO, &[], |w| {
            if let Some(h) = info.host_name {
                w.option(fopt::F_DNS_HOST_NAME, h);
            }
            if let Some(z) = info.zone_name {
                w.option(fopt::F_DNS_ZONE_NAME, z);
            }
            if let Some(f) = info.flags {
                w.option_u16(fopt::F_DNS_FLAGS, f.0);
            }
        });
    }

    /// Writes every present field of `l`, in the order VSS, LQ base time, status code,
    /// binding status, start time of state, state expiration time, CLT time, partner
    /// lifetime, partner lifetime sent, partner raw CLT time, expiration time, client FQDN,
    /// DNS removal info.
    pub fn lease_options(&mut self, l: &LeaseOptions<'_>) {
        if let Some(v) = l.vss {
            self.vss(v);
        }
        if let Some(v) = l.lq_base_time {
            self.lq_base_time(v);
        }
        if let Some(Status { code, message }) = l.status {
            self.status_raw(code, message);
        }
        if let Some(v) = l.binding_status {
            self.binding_status(v);
        }
        let times = [
            (fopt::F_START_TIME_OF_STATE, l.start_time_of_state),
            (fopt::F_STATE_EXPIRATION_TIME, l.state_expiration_time),
            (fopt::CLT_TIME, l.clt_time),
            (fopt::F_PARTNER_LIFETIME, l.partner_lifetime),
            (fopt::F_PARTNER_LIFETIME_SENT, l.partner_lifetime_sent),
            (fopt::F_PARTNER_RAW_CLT_TIME, l.partner_raw_clt_time),
            (fopt::F_EXPIRATION_TIME, l.expiration_time),
        ];
        for (code, v) in times {
            if let Some(v) = v {
                self.w.option_u32(code, v);
            }
        }
        if let Some(v) = l.client_fqdn {
            self.client_fqdn(v);
        }
        if let Some(v) = l.dns_removal_info {
            self.dns_removal_info(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::wire::{FailoverMessage, LeaseOptionsExt};

    #[test]
    fn header_layout() {
        let mut buf = vec![0xAA; 3];
        let w = FailoverWriter::new(&mut buf, FailoverType::Contact, 0x0102_0304, 0x0A0B_0C0D);
        assert_eq!(w.len(), 8);
        assert!(!w.is_empty() && !w.overflowed());
        assert_eq!(w.as_bytes(), [35, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D]);
        let mut out = vec![1];
        w.frame_into(&mut out).unwrap();
        assert_eq!(out, [1, 0, 8, 35, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D]);
    }

    #[test]
    fn client_data_length_is_back_patched() {
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::BndUpd, 1, 2);
        w.client_data(|b| {
            b.client_id(&[0, 3, 0, 1, 7]);
            b.reconfigure_data(9, &[1, 2, 3]);
            b.lq_relay_data(Ipv6Addr::LOCALHOST, &[12, 0]);
            b.ia_na(1, 0, 0, |ia| {
                ia.ia_addr(Ipv6Addr::LOCALHOST, 0, 0, |l| {
                    l.binding_status(BindingStatus::Expired)
                })
            });
        });
        assert!(!w.overflowed());
        // 9 (client id) + 11 (reconfigure data) + 22 (relay data) + 4+12+4+24+5 (IA_NA).
        assert_eq!(buf[8..12], [0, 45, 0, 91]);
        let m = FailoverMessage::parse(&buf).unwrap();
        let b = m.client_binding().unwrap();
        let r = b.reconfigure_data().unwrap();
        assert_eq!((r.time, r.key), (9, &[1u8, 2, 3][..]));
        let rd = b.lq_relay_data().unwrap();
        assert_eq!(rd.peer_address, Ipv6Addr::LOCALHOST);
        assert_eq!(rd.relay_message, [12, 0]);
        let a = b.ia_nas().next().unwrap().addresses().next().unwrap();
        assert_eq!(
            a.lease_options().binding_status,
            Some(BindingStatus::Expired)
        );
    }
}
