//! The CONNECT / CONNECTREPLY handshake (RFC 8156 §6.1–6.2, digest §8), sans-IO: builds both
//! messages and checks what the partner sent. No sockets, no clock: the caller passes the time.
//!
//! The primary opens the connection and sends CONNECT ([`build_connect`]); the secondary checks
//! it ([`check_connect`]) and answers CONNECTREPLY, accepting or refusing
//! ([`build_connectreply`]); the primary checks the reply ([`check_connectreply`]). Each check
//! returns either what the link layer needs from the partner ([`ConnectAccepted`]) or why the
//! partner was refused ([`ConnectRefused`], whose `Display` is the log line).
//!
//! What is checked, on both sides:
//!
//! | check | refused with |
//! |---|---|
//! | the message parses and has the expected type (and, for CONNECTREPLY, echoes our transaction id) | UnspecFail (1) |
//! | protocol version major 1 (any minor) | NotSupported (14) |
//! | the options the RFC requires (version, MCLT, keepalive, max unacked BNDUPD, connect flags) | UnspecFail (1) |
//! | the roles are complementary (a CONNECT reaches a secondary, a CONNECTREPLY a primary) | ConfigurationConflict (17) |
//! | relationship name equal (absent = empty; in CONNECTREPLY only checked when present) | ConfigurationConflict (17) |
//! | MCLT equal | ConfigurationConflict (17) |
//! | \|sent-time − now\| ≤ `skew_max_secs` (5 s by default) | ExcessiveTimeSkew (22) |
//! | pools digest equal (Tandem extension, below) | ConfigurationConflict (17) |
//!
//! A CONNECTREPLY carrying a non-success status code is the secondary's refusal and is reported
//! as such, with its status and text.
//!
//! # Deviations from RFC 8156 (as the digest has it)
//!
//! - **MCLT.** The draft lets the secondary adopt the primary's MCLT. Tandem instead requires
//!   both servers to be configured with the same MCLT and refuses a different one with
//!   ConfigurationConflict: every lifetime cap and the PARTNER-DOWN waits depend on it, and a
//!   silent adoption would hide a configuration mistake. The CONNECTREPLY still carries the
//!   CONNECT's MCLT, as the RFC requires.
//! - **Relationship name.** The status for an unknown relationship name is not specified
//!   (digest §10 item 6); ConfigurationConflict is used.
//! - **Pools digest (an extension, not an RFC 8156 option).** Both partners MUST configure the
//!   same prefixes and pools (digest §7), but RFC 8156 has no way to check it. Tandem carries a
//!   digest of that configuration (and of `failover.skew_max_secs` when it is not the
//!   default: the window within which both judge two times equal), and a human-readable summary
//!   so the refusing side can log *which* pools differ, in an `OPTION_VENDOR_OPTS` (17, RFC 8415 §21.17) with the enterprise
//!   number [`TANDEM_ENTERPRISE_NUMBER`] (32473, the documentation number of RFC 5612) and two
//!   vendor sub-options: [`TANDEM_SUBOPT_POOLS_DIGEST`] (32 bytes) and
//!   [`TANDEM_SUBOPT_POOLS_SUMMARY`] (UTF-8 lines joined by `'\n'`, at most
//!   [`POOLS_SUMMARY_MAX_BYTES`]). No unassigned DHCPv6 option code is used. Receivers that do
//!   not know it skip it (RFC 8415 §21.17 and our own parser). A Tandem server refuses a partner
//!   whose CONNECT / CONNECTREPLY lacks it, so a Tandem server does not pair with another
//!   RFC 8156 implementation.
//!
//! No function here panics on any input; nothing is `unsafe`.

use std::fmt;

use super::pools_digest::*;
use crate::config::{Config, defaults};

use super::wire::{
    ConnectFlags, ConnectOptions, FAILOVER_HEADER_LEN, FRAME_PREFIX_LEN, FailoverMessage,
    FailoverStatusCode, FailoverType, FailoverWireError, FailoverWriter, MAX_TRANSACTION_ID,
    ProtocolVersion, to_failover_time,
};
use crate::config::Role;

/// Longest refusal reason (bytes); longer ones are cut at a character boundary.
pub const REASON_MAX_BYTES: usize = 4096;

/// What one end of a relationship needs for the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParams {
    /// Our role: the primary connects and sends CONNECT, the secondary answers.
    pub role: Role,
    /// Relationship name (`OPTION_F_RELATIONSHIP_NAME`); empty means "the only relationship
    /// between this pair" and is not sent.
    pub relationship: String,
    /// Maximum client lead time, seconds. Both partners must be configured with the same.
    pub mclt_secs: u64,
    /// Our keepalive time, seconds: we declare the link dead after this long without hearing
    /// from the partner; it sends CONTACTs often enough.
    pub keepalive_secs: u64,
    /// How many unacknowledged BNDUPDs we can take without our TCP connection blocking.
    pub max_unacked: u32,
    /// Largest accepted clock difference, seconds ([`defaults::SKEW_MAX_SECS`]).
    pub skew_max_secs: u64,
    /// Digest of the pool configuration ([`pools_digest`]).
    pub pools_digest: [u8; 32],
}

impl LinkParams {
    /// Parameters with the default skew bound and the pools digest of `config`.
    pub fn new(
        role: Role,
        relationship: impl Into<String>,
        mclt_secs: u64,
        keepalive_secs: u64,
        max_unacked: u32,
        config: &Config,
    ) -> LinkParams {
        LinkParams {
            role,
            relationship: relationship.into(),
            mclt_secs,
            keepalive_secs,
            max_unacked,
            skew_max_secs: defaults::SKEW_MAX_SECS,
            pools_digest: pools_digest(config),
        }
    }
}

/// The partner passed the checks: what the link layer needs from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectAccepted {
    /// Transaction id of the checked message (a CONNECTREPLY echoes the CONNECT's).
    pub xid: u32,
    /// The protocol version the partner sent (major 1).
    pub partner_version: ProtocolVersion,
    /// The MCLT both sides agreed on, seconds.
    pub mclt_secs: u64,
    /// The partner's keepalive time, seconds: send it a message (CONTACT at the latest) at
    /// least every quarter of this (digest §6.6, FO_SEND_TIME).
    pub partner_keepalive_secs: u64,
    /// Most BNDUPDs we may have outstanding to the partner.
    pub partner_max_unacked: u32,
    /// The partner's connect flags.
    pub partner_flags: ConnectFlags,
    /// The partner's clock minus ours as measured on this message (positive: it is ahead).
    pub skew_secs: i64,
}

/// Why the partner was refused: the status to send (or that the partner sent) and the log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRefused {
    /// Status code: sent in the CONNECTREPLY (secondary) or DISCONNECT (primary).
    pub status: FailoverStatusCode,
    /// What differs, in words, naming both values.
    pub reason: String,
}

impl fmt::Display for ConnectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({}): {}",
            self.status,
            self.status.to_u16(),
            self.reason
        )
    }
}

impl std::error::Error for ConnectRefused {}

fn refuse(status: FailoverStatusCode, reason: impl Into<String>) -> ConnectRefused {
    let mut reason = reason.into();
    cut_at_char_boundary(&mut reason, REASON_MAX_BYTES);
    ConnectRefused { status, reason }
}

fn cut_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while at > 0 && !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Secondary => "secondary",
    }
}

fn other(r: Role) -> Role {
    match r {
        Role::Primary => Role::Secondary,
        Role::Secondary => Role::Primary,
    }
}

fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Building.

/// The options an accepting CONNECT / CONNECTREPLY carries. FIXED_PD_LENGTH is set: every
/// Tandem PD pool delegates at one configured length.
fn link_options(p: &LinkParams, mclt: u64, with_name: bool) -> ConnectOptions<'_> {
    ConnectOptions {
        protocol_version: Some(ProtocolVersion::V1_0),
        mclt: Some(sat_u32(mclt)),
        keepalive_time: Some(sat_u32(p.keepalive_secs)),
        max_unacked_bndupd: Some(p.max_unacked),
        connect_flags: Some(ConnectFlags::FIXED_PD_LENGTH),
        relationship_name: (with_name && !p.relationship.is_empty())
            .then_some(p.relationship.as_str()),
    }
}

/// Appends a framed CONNECT (primary → secondary) to `out`: protocol version 1.0, MCLT,
/// keepalive time, max unacked BNDUPD, connect flags, the relationship name (unless empty) and
/// Tandem's pools option ([`write_tandem_pools`] with `p.pools_digest` and `summary`, normally
/// [`pools_summary`] of the same configuration). Only the low 24 bits of `xid` are used; the
/// sent-time is `now_unix`.
///
/// Errors with [`FailoverWireError::TooLong`], leaving `out` unchanged, if the relationship name
/// is longer than [`defaults::RELATIONSHIP_NAME_LEN_MAX`] (or the message would not fit in a frame).
pub fn build_connect(
    p: &LinkParams,
    summary: &[String],
    xid: u32,
    now_unix: u64,
    out: &mut Vec<u8>,
) -> Result<(), FailoverWireError> {
    if p.relationship.len() > defaults::RELATIONSHIP_NAME_LEN_MAX {
        return Err(FailoverWireError::TooLong);
    }
    let mut buf = Vec::with_capacity(256);
    let mut w = FailoverWriter::new(
        &mut buf,
        FailoverType::Connect,
        xid & MAX_TRANSACTION_ID,
        to_failover_time(now_unix),
    );
    w.connect_options(&link_options(p, p.mclt_secs, true));
    write_tandem_pools(&mut w, &p.pools_digest, summary);
    w.frame_into(out)
}

/// Appends a framed CONNECTREPLY (secondary → primary) to `out`, echoing `xid` (the CONNECT's;
/// low 24 bits), sent-time `now_unix`.
///
/// - `Ok(accepted)`: protocol version 1.0, MCLT (the CONNECT's, `accepted.mclt_secs`),
///   keepalive time, max unacked BNDUPD, connect flags, and Tandem's pools option (`summary`,
///   normally [`pools_summary`]) so the primary can check the pools too. After sending it the
///   secondary MUST send STATE.
/// - `Err(refused)`: only `OPTION_STATUS_CODE` with the refusal's status and reason (a
///   "success" status is sent as UnspecFail, so a refusal never reads as acceptance).
///
/// Errors with [`FailoverWireError::TooLong`], leaving `out` unchanged, if the message would not
/// fit in a frame.
pub fn build_connectreply(
    p: &LinkParams,
    summary: &[String],
    accepted: Result<&ConnectAccepted, &ConnectRefused>,
    xid: u32,
    now_unix: u64,
    out: &mut Vec<u8>,
) -> Result<(), FailoverWireError> {
    let mut buf = Vec::with_capacity(256);
    let mut w = FailoverWriter::new(
        &mut buf,
        FailoverType::ConnectReply,
        xid & MAX_TRANSACTION_ID,
        to_failover_time(now_unix),
    );
    match accepted {
        Ok(a) => {
            w.connect_options(&link_options(p, a.mclt_secs, false));
            write_tandem_pools(&mut w, &p.pools_digest, summary);
        }
        Err(r) => {
            let status = if r.status.is_success() {
                FailoverStatusCode::UnspecFail
            } else {
                r.status
            };
            let mut reason = r.reason.clone();
            cut_at_char_boundary(&mut reason, REASON_MAX_BYTES);
            w.status_code(status, &reason);
        }
    }
    w.frame_into(out)
}

// ---------------------------------------------------------------------------------------------
// Checking.

/// The message inside one frame: the 2-byte length must match the rest exactly.
fn unframe(frame: &[u8]) -> Result<&[u8], ConnectRefused> {
    let Some((len, msg)) = frame.split_first_chunk::<FRAME_PREFIX_LEN>() else {
        return Err(refuse(
            FailoverStatusCode::UnspecFail,
            format!(
                "malformed frame: {} byte(s), shorter than the length prefix",
                frame.len()
            ),
        ));
    };
    let len = usize::from(u16::from_be_bytes(*len));
    if len < FAILOVER_HEADER_LEN || len != msg.len() {
        return Err(refuse(
            FailoverStatusCode::UnspecFail,
            format!(
                "malformed frame: length prefix says {len} byte(s), {} follow",
                msg.len()
            ),
        ));
    }
    Ok(msg)
}

fn parse_as<'m>(msg: &'m [u8], want: FailoverType) -> Result<FailoverMessage<'m>, ConnectRefused> {
    let m = FailoverMessage::parse(msg).map_err(|e| {
        refuse(
            FailoverStatusCode::UnspecFail,
            format!("malformed {want}: {e}"),
        )
    })?;
    if m.msg_type() != want {
        return Err(refuse(
            FailoverStatusCode::UnspecFail,
            format!("expected {want}, got {}", m.msg_type()),
        ));
    }
    Ok(m)
}

/// The checks common to CONNECT and CONNECTREPLY, after the message type (and, for the reply,
/// the status and transaction id). `name_required`: an absent relationship name counts as the
/// empty name (CONNECT); otherwise it is only compared when present (CONNECTREPLY).
fn check_link(
    p: &LinkParams,
    ours_summary: &[String],
    m: &FailoverMessage<'_>,
    now_unix: u64,
    name_required: bool,
) -> Result<ConnectAccepted, ConnectRefused> {
    let t = m.msg_type();
    let from = role_name(other(p.role));
    let us = role_name(p.role);
    let c = m.connect();
    let missing = |what: &str| {
        refuse(
            FailoverStatusCode::UnspecFail,
            format!("{t} lacks {what}, which RFC 8156 requires"),
        )
    };

    let version = c
        .protocol_version
        .ok_or_else(|| missing("OPTION_F_PROTOCOL_VERSION"))?;
    if version.major != ProtocolVersion::V1_0.major {
        return Err(refuse(
            FailoverStatusCode::NotSupported,
            format!(
                "the {from} speaks failover protocol {}.{}; this {us} supports {}.x",
                version.major,
                version.minor,
                ProtocolVersion::V1_0.major
            ),
        ));
    }
    let mclt = c.mclt.ok_or_else(|| missing("OPTION_F_MCLT"))?;
    let keepalive = c
        .keepalive_time
        .ok_or_else(|| missing("OPTION_F_KEEPALIVE_TIME"))?;
    let max_unacked = c
        .max_unacked_bndupd
        .ok_or_else(|| missing("OPTION_F_MAX_UNACKED_BNDUPD"))?;
    let flags = c
        .connect_flags
        .ok_or_else(|| missing("OPTION_F_CONNECT_FLAGS"))?;

    if name_required || c.relationship_name.is_some() {
        let theirs = c.relationship_name.unwrap_or("");
        if theirs != p.relationship {
            return Err(refuse(
                FailoverStatusCode::ConfigurationConflict,
                format!(
                    "relationship name differs: the {from} says {theirs:?}, this {us} is configured with {:?}",
                    p.relationship
                ),
            ));
        }
    }

    if u64::from(mclt) != p.mclt_secs {
        return Err(refuse(
            FailoverStatusCode::ConfigurationConflict,
            format!(
                "MCLT differs: the {from}'s {t} says {mclt} s, this {us} is configured with {} s; both servers must be configured with the same MCLT",
                p.mclt_secs
            ),
        ));
    }

    // Partner's clock minus ours: the wrapped difference of two failover times, read as i32,
    // is the signed distance (|skew| < 2^31 s).
    let skew = i64::from(m.sent_time().wrapping_sub(to_failover_time(now_unix)) as i32);
    if skew.unsigned_abs() > p.skew_max_secs {
        let dir = if skew > 0 { "ahead of" } else { "behind" };
        return Err(refuse(
            FailoverStatusCode::ExcessiveTimeSkew,
            format!(
                "clock skew: the {from}'s clock is {} s {dir} this {us}'s (limit {} s); synchronise both clocks (NTP)",
                skew.unsigned_abs(),
                p.skew_max_secs
            ),
        ));
    }

    let Some((their_digest, their_lines)) = read_tandem_pools(m) else {
        return Err(refuse(
            FailoverStatusCode::ConfigurationConflict,
            format!(
                "the {from}'s {t} carries no valid Tandem pools digest (vendor option, enterprise {TANDEM_ENTERPRISE_NUMBER}): it is not Tandem or too old, and identical pools cannot be verified"
            ),
        ));
    };
    if their_digest != p.pools_digest {
        let detail = describe_difference(
            ours_summary,
            &their_lines,
            &format!("only on this {us}"),
            &format!("only on the {from}"),
        );
        return Err(refuse(
            FailoverStatusCode::ConfigurationConflict,
            format!(
                "pools differ from the {from}'s (digest here {}, there {}): {detail}",
                digest_short_hex(&p.pools_digest),
                digest_short_hex(&their_digest)
            ),
        ));
    }

    Ok(ConnectAccepted {
        xid: m.transaction_id(),
        partner_version: version,
        mclt_secs: u64::from(mclt),
        partner_keepalive_secs: u64::from(keepalive),
        partner_max_unacked: max_unacked,
        partner_flags: flags,
        skew_secs: skew,
    })
}

/// The secondary's checks on a framed CONNECT (2-byte length prefix + message, exactly one
/// frame); see [`check_connect_message`].
pub fn check_connect(
    p: &LinkParams,
    ours_summary: &[String],
    frame: &[u8],
    now_unix: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    check_connect_message(p, ours_summary, unframe(frame)?, now_unix)
}

/// The secondary's checks on a CONNECT message (without its length prefix, as
/// [`Framer`](super::wire::Framer) returns it), received at `now_unix`: it parses and is a
/// CONNECT, we are the secondary, protocol version major 1 (else NotSupported), the required
/// options are present, relationship name and MCLT equal ours (else ConfigurationConflict),
/// sent-time within `skew_max_secs` of `now_unix` (else ExcessiveTimeSkew, naming the measured
/// skew), and the pools digest equals ours (else ConfigurationConflict naming the summary lines
/// only we have and only the primary has, at most [`MISMATCH_LINES_MAX`] of each).
///
/// `ours_summary` is [`pools_summary`] of the configuration `p.pools_digest` was taken from.
/// On `Err`, answer with [`build_connectreply`] carrying the refusal and log it.
pub fn check_connect_message(
    p: &LinkParams,
    ours_summary: &[String],
    msg: &[u8],
    now_unix: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    let m = parse_as(msg, FailoverType::Connect)?;
    if p.role != Role::Secondary {
        return Err(refuse(
            FailoverStatusCode::ConfigurationConflict,
            "a CONNECT arrived, but this server is the primary of the relationship: both servers are configured as primary",
        ));
    }
    check_link(p, ours_summary, &m, now_unix, true)
}

/// The primary's checks on a framed CONNECTREPLY (2-byte length prefix + message, exactly one
/// frame); see [`check_connectreply_message`].
pub fn check_connectreply(
    p: &LinkParams,
    ours_summary: &[String],
    frame: &[u8],
    xid: u32,
    now_unix: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    check_connectreply_message(p, ours_summary, unframe(frame)?, xid, now_unix)
}

/// The primary's checks on a CONNECTREPLY message (without its length prefix), received at
/// `now_unix` in answer to our CONNECT with transaction id `xid`: it parses and is a
/// CONNECTREPLY; a non-success status code is the secondary's refusal and is returned with the
/// secondary's status and text; it echoes `xid`; we are the primary; then the same checks as
/// [`check_connect_message`] (the relationship name only if the reply carries one).
///
/// On `Err`, send DISCONNECT with the refusal's status (unless the secondary refused) and retry
/// later, less often (RFC 8156 §6.1).
pub fn check_connectreply_message(
    p: &LinkParams,
    ours_summary: &[String],
    msg: &[u8],
    xid: u32,
    now_unix: u64,
) -> Result<ConnectAccepted, ConnectRefused> {
    let m = parse_as(msg, FailoverType::ConnectReply)?;
    if let Some(st) = m.status()
        && st.code != FailoverStatusCode::Success.to_u16()
    {
        let status = FailoverStatusCode::of(&st).unwrap_or(FailoverStatusCode::UnspecFail);
        return Err(refuse(
            status,
            format!(
                "the {} refused our CONNECT with status {}: {}",
                role_name(other(p.role)),
                st.code,
                st.message_lossy()
            ),
        ));
    }
    let want = xid & MAX_TRANSACTION_ID;
    if m.transaction_id() != want {
        return Err(refuse(
            FailoverStatusCode::UnspecFail,
            format!(
                "CONNECTREPLY transaction id {:#08x} does not echo our CONNECT's {want:#08x}",
                m.transaction_id()
            ),
        ));
    }
    if p.role != Role::Primary {
        return Err(refuse(
            FailoverStatusCode::ConfigurationConflict,
            "a CONNECTREPLY arrived, but this server is the secondary of the relationship: both servers are configured as secondary",
        ));
    }
    check_link(p, ours_summary, &m, now_unix, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const NOW: u64 = 1_760_000_000;

    fn cfg() -> Config {
        config::parse("<d>", config::EMBEDDED_DEFAULT).unwrap()
    }

    fn params(role: Role, c: &Config) -> LinkParams {
        LinkParams::new(role, "pair-a", 3600, 60, 32, c)
    }

    #[test]
    fn handshake_and_role_checks() {
        let c = cfg();
        let sum = pools_summary(&c);
        let pri = params(Role::Primary, &c);
        let sec = params(Role::Secondary, &c);
        let mut f = Vec::new();
        build_connect(&pri, &sum, 0x0102_0304, NOW, &mut f).unwrap();
        let a = check_connect(&sec, &sum, &f, NOW + 2).unwrap();
        assert_eq!(a.xid, 0x02_0304);
        assert_eq!(a.skew_secs, -2);
        assert_eq!((a.partner_keepalive_secs, a.partner_max_unacked), (60, 32));
        assert!(a.partner_flags.fixed_pd_length());
        // A primary receiving a CONNECT: both are primaries.
        let e = check_connect(&pri, &sum, &f, NOW).unwrap_err();
        assert_eq!(e.status, FailoverStatusCode::ConfigurationConflict);
        assert!(
            e.reason.contains("both servers are configured as primary"),
            "{e}"
        );

        let mut r = Vec::new();
        build_connectreply(&sec, &sum, Ok(&a), a.xid, NOW, &mut r).unwrap();
        let b = check_connectreply(&pri, &sum, &r, 0x0102_0304, NOW).unwrap();
        assert_eq!(b.mclt_secs, 3600);
        let e = check_connectreply(&sec, &sum, &r, 0x0102_0304, NOW).unwrap_err();
        assert!(
            e.reason
                .contains("both servers are configured as secondary"),
            "{e}"
        );
        // Wrong message type both ways.
        let e = check_connect(&sec, &sum, &r, NOW).unwrap_err();
        assert_eq!(e.status, FailoverStatusCode::UnspecFail);
        assert!(
            e.reason.contains("expected CONNECT, got CONNECTREPLY"),
            "{e}"
        );
        // Display is the log line.
        assert!(
            e.to_string()
                .starts_with("UnspecFail (1): expected CONNECT"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_option_is_refused() {
        let c = cfg();
        let sum = pools_summary(&c);
        let sec = params(Role::Secondary, &c);
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, 1, to_failover_time(NOW));
        w.protocol_version(ProtocolVersion::V1_0);
        w.mclt(3600);
        w.relationship_name("pair-a");
        write_tandem_pools(&mut w, &sec.pools_digest, &sum);
        let e = check_connect_message(&sec, &sum, &buf, NOW).unwrap_err();
        assert_eq!(e.status, FailoverStatusCode::UnspecFail);
        assert!(e.reason.contains("OPTION_F_KEEPALIVE_TIME"), "{e}");
    }

    #[test]
    fn overlong_relationship_name_is_an_error_not_a_panic() {
        let c = cfg();
        let mut p = params(Role::Primary, &c);
        p.relationship = "x".repeat(defaults::RELATIONSHIP_NAME_LEN_MAX + 1);
        let mut out = vec![9];
        assert_eq!(
            build_connect(&p, &[], 1, NOW, &mut out),
            Err(FailoverWireError::TooLong)
        );
        assert_eq!(out, [9]);
    }
}
