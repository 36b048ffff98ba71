//! Option data: what operators configure at global, subnet, pool and pd-pool level (`[options]`
//! tables), validated and encoded once at load into an [`OptionSet`] the engine copies into
//! replies. Typed names for what is set every day, and any other option by code:
//!
//! | name | option | value |
//! |---|---|---|
//! | `dns_servers` | 23 (RFC 3646) | IPv6 unicast addresses |
//! | `domain_search` | 24 (RFC 3646) | domain names, encoded as RFC 1035 names, no compression |
//! | `sntp_servers` | 31 (RFC 4075) | IPv6 unicast addresses |
//! | `ntp_servers` | 56 (RFC 5908) | per entry: a unicast address (sub-option 1), a multicast address (2) or a name (3) |
//! | `information_refresh_secs` | 32 (RFC 8415 §21.23) | seconds, at least 600 |
//! | `sol_max_rt_secs` | 82 (RFC 8415 §21.24) | seconds, 60..=86400 |
//! | `inf_max_rt_secs` | 83 (RFC 8415 §21.25) | seconds, 60..=86400 |
//! | `vendor` | 17 (RFC 8415 §21.17) | `[{ enterprise = N, suboptions = [{ code, <value> }] }]`, one option per enterprise |
//! | `custom` | any other code | `[{ code, <value> }]` |
//!
//! A `<value>` is exactly one of `hex = "0a0b"`, `text = "..."`, `addresses = [...]`,
//! `domains = [...]`, `u8`, `u16` or `u32`.

use super::defaults;
use super::file::{FileCodedValue, FileOptions};
use crate::wire::opt;
use std::net::Ipv6Addr;
use toml::Spanned;

/// Encoded option data for replies: `(code, value)` pairs sorted by code. A code appears once,
/// except Vendor-specific Information (17), once per enterprise number, and NTP Server (56),
/// once per server (RFC 5908 §4: one time-source sub-option per option).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptionSet {
    entries: Vec<(u16, Box<[u8]>)>,
}

/// An empty set to borrow.
pub static NO_OPTIONS: OptionSet = OptionSet::EMPTY;

impl OptionSet {
    /// No options.
    pub const EMPTY: OptionSet = OptionSet {
        entries: Vec::new(),
    };

    /// Whether the set holds no option.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every `(code, value)`, sorted by code.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> {
        self.entries.iter().map(|(c, v)| (*c, &**v))
    }

    /// The values configured for `code` (empty when none): one, or several for option 17.
    pub fn get(&self, code: u16) -> impl Iterator<Item = &[u8]> {
        let start = self.entries.partition_point(|(c, _)| *c < code);
        self.entries[start..]
            .iter()
            .take_while(move |(c, _)| *c == code)
            .map(|(_, v)| &**v)
    }

    /// Whether `code` is configured.
    pub fn contains(&self, code: u16) -> bool {
        self.get(code).next().is_some()
    }

    /// Bytes all options take on the wire, headers included.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, v)| crate::wire::OPTION_HEADER_LEN + v.len())
            .sum()
    }

    /// `self` with `over` laid on top: a code `over` sets replaces all of ours (the more
    /// specific level wins).
    pub fn overlaid(&self, over: &OptionSet) -> OptionSet {
        let mut entries: Vec<(u16, Box<[u8]>)> = self
            .entries
            .iter()
            .filter(|(c, _)| !over.contains(*c))
            .cloned()
            .collect();
        entries.extend(over.entries.iter().cloned());
        entries.sort_by_key(|(c, _)| *c);
        OptionSet { entries }
    }

    fn push(&mut self, code: u16, value: Vec<u8>) {
        self.entries.push((code, value.into_boxed_slice()));
    }
}

/// Codes the server writes itself or that have no place in a server's reply: configuring one
/// is an error.
const RESERVED_CODES: &[(u16, &str)] = &[
    (opt::CLIENTID, "Client Identifier is the client's"),
    (opt::SERVERID, "Server Identifier is the server's DUID"),
    (opt::IA_NA, "IAs are written by the allocator"),
    (opt::IA_TA, "IAs are written by the allocator"),
    (opt::IAADDR, "addresses are written by the allocator"),
    (opt::ORO, "the Option Request option is the client's"),
    (opt::PREFERENCE, "set server.preference instead"),
    (opt::ELAPSED_TIME, "Elapsed Time is the client's"),
    (opt::RELAY_MSG, "relay options belong to relays"),
    (opt::AUTH, "authentication is not configured as option data"),
    (opt::UNICAST, "set server.unicast_address instead"),
    (opt::STATUS_CODE, "status codes are written by the engine"),
    (opt::RAPID_COMMIT, "set server.rapid_commit instead"),
    (opt::USER_CLASS, "User Class is the client's"),
    (opt::VENDOR_CLASS, "Vendor Class is the client's"),
    (opt::INTERFACE_ID, "relay options belong to relays"),
    (opt::RECONF_MSG, "Reconfigure is not supported"),
    (opt::RECONF_ACCEPT, "Reconfigure is not supported"),
    (opt::IA_PD, "IAs are written by the allocator"),
    (opt::IAPREFIX, "prefixes are written by the allocator"),
    (opt::REMOTE_ID, "relay options belong to relays"),
    (opt::SUBSCRIBER_ID, "relay options belong to relays"),
    (opt::CLIENT_LINKLAYER_ADDR, "relay options belong to relays"),
    (opt::RELAY_SOURCE_PORT, "relay options belong to relays"),
    (
        opt::LQ_QUERY,
        "Leasequery options are written by the server",
    ),
    (
        opt::CLIENT_DATA,
        "Leasequery options are written by the server",
    ),
    (
        opt::CLT_TIME,
        "Leasequery options are written by the server",
    ),
    (
        opt::LQ_RELAY_DATA,
        "Leasequery options are written by the server",
    ),
    (
        opt::LQ_CLIENT_LINK,
        "Leasequery options are written by the server",
    ),
    (
        opt::PD_EXCLUDE,
        "set excluded_prefix_len on the pd-pool (it goes inside an IA Prefix)",
    ),
];

/// Codes with a typed name: `custom` must not set them behind the name's back.
const TYPED_CODES: &[(u16, &str)] = &[
    (opt::VENDOR_OPTS, "vendor"),
    (opt::DNS_SERVERS, "dns_servers"),
    (opt::DOMAIN_LIST, "domain_search"),
    (opt::SNTP_SERVERS, "sntp_servers"),
    (opt::INFORMATION_REFRESH_TIME, "information_refresh_secs"),
    (opt::NTP_SERVER, "ntp_servers"),
    (opt::SOL_MAX_RT, "sol_max_rt_secs"),
    (opt::INF_MAX_RT, "inf_max_rt_secs"),
];

/// RFC 5908 NTP server sub-options.
const NTP_SUBOPTION_SRV_ADDR: u16 = 1;
const NTP_SUBOPTION_MC_ADDR: u16 = 2;
const NTP_SUBOPTION_SRV_FQDN: u16 = 3;

/// A rejected option: the field (relative to the `options` table) and why, with the span of
/// the value when known.
pub(super) struct OptionError {
    pub(super) span: Option<std::ops::Range<usize>>,
    pub(super) field: String,
    pub(super) message: String,
}

fn oerr(
    span: Option<std::ops::Range<usize>>,
    field: &str,
    message: impl Into<String>,
) -> OptionError {
    OptionError {
        span,
        field: field.to_string(),
        message: message.into(),
    }
}

/// Validates and encodes one `options` table.
pub(super) fn encode(f: &FileOptions) -> Result<OptionSet, OptionError> {
    let mut set = OptionSet::default();
    if let Some(v) = &f.dns_servers {
        set.push(opt::DNS_SERVERS, unicast_list(v, "dns_servers")?);
    }
    if let Some(v) = &f.domain_search {
        let mut b = Vec::new();
        for name in v.get_ref() {
            domain_name(name, &mut b).map_err(|m| oerr(Some(v.span()), "domain_search", m))?;
        }
        if v.get_ref().is_empty() {
            return Err(oerr(
                Some(v.span()),
                "domain_search",
                "empty list: leave it out instead",
            ));
        }
        set.push(opt::DOMAIN_LIST, b);
    }
    if let Some(v) = &f.sntp_servers {
        set.push(opt::SNTP_SERVERS, unicast_list(v, "sntp_servers")?);
    }
    if let Some(v) = &f.ntp_servers {
        for one in ntp_servers(v)? {
            set.push(opt::NTP_SERVER, one);
        }
    }
    if let Some(v) = &f.information_refresh_secs {
        let s = *v.get_ref();
        if s < defaults::INFORMATION_REFRESH_SECS_MIN {
            return Err(oerr(
                Some(v.span()),
                "information_refresh_secs",
                format!(
                    "{s} is below RFC 8415's IRT_MINIMUM ({}); clients would use that instead",
                    defaults::INFORMATION_REFRESH_SECS_MIN
                ),
            ));
        }
        set.push(opt::INFORMATION_REFRESH_TIME, s.to_be_bytes().to_vec());
    }
    for (name, code, v) in [
        ("sol_max_rt_secs", opt::SOL_MAX_RT, &f.sol_max_rt_secs),
        ("inf_max_rt_secs", opt::INF_MAX_RT, &f.inf_max_rt_secs),
    ] {
        if let Some(v) = v {
            let s = *v.get_ref();
            if !(defaults::MAX_RT_SECS_MIN..=defaults::MAX_RT_SECS_MAX).contains(&s) {
                return Err(oerr(
                    Some(v.span()),
                    name,
                    format!(
                        "{s} is outside {}..={} (RFC 8415 §21.24/§21.25: clients ignore it)",
                        defaults::MAX_RT_SECS_MIN,
                        defaults::MAX_RT_SECS_MAX
                    ),
                ));
            }
            set.push(code, s.to_be_bytes().to_vec());
        }
    }
    let mut enterprises: Vec<u32> = Vec::new();
    for (i, v) in f.vendor.iter().enumerate() {
        let field = format!("vendor[{i}]");
        let vendor = v.get_ref();
        if enterprises.contains(&vendor.enterprise) {
            return Err(oerr(
                Some(v.span()),
                &field,
                format!(
                    "enterprise {} is given twice; put all its sub-options in one entry",
                    vendor.enterprise
                ),
            ));
        }
        enterprises.push(vendor.enterprise);
        let mut b = vendor.enterprise.to_be_bytes().to_vec();
        for (j, s) in vendor.suboptions.iter().enumerate() {
            let sf = format!("{field}.suboptions[{j}]");
            let data = value(s.get_ref()).map_err(|m| oerr(Some(s.span()), &sf, m))?;
            put_tlv(&mut b, s.get_ref().code, &data).map_err(|m| oerr(Some(s.span()), &sf, m))?;
        }
        set.push(opt::VENDOR_OPTS, b);
    }
    for (i, c) in f.custom.iter().enumerate() {
        let field = format!("custom[{i}]");
        let code = c.get_ref().code;
        if let Some((_, why)) = RESERVED_CODES.iter().find(|(r, _)| *r == code) {
            return Err(oerr(
                Some(c.span()),
                &field,
                format!("option {code} cannot be configured: {why}"),
            ));
        }
        if let Some((_, name)) = TYPED_CODES.iter().find(|(t, _)| *t == code) {
            return Err(oerr(
                Some(c.span()),
                &field,
                format!("option {code} has a typed name: set `{name}` instead"),
            ));
        }
        if code == 0 {
            return Err(oerr(Some(c.span()), &field, "option code 0 is reserved"));
        }
        // (Not yet sorted: a linear look.)
        if set.entries.iter().any(|(c, _)| *c == code) {
            return Err(oerr(
                Some(c.span()),
                &field,
                format!("option {code} is given twice"),
            ));
        }
        let data = value(c.get_ref()).map_err(|m| oerr(Some(c.span()), &field, m))?;
        if data.len() > usize::from(u16::MAX) {
            return Err(oerr(
                Some(c.span()),
                &field,
                "value longer than 65535 bytes",
            ));
        }
        set.push(code, data);
    }
    set.entries.sort_by_key(|(c, _)| *c);
    for (code, v) in &set.entries {
        if v.len() > usize::from(u16::MAX) {
            return Err(oerr(
                None,
                "",
                format!(
                    "option {code} would be {} bytes, more than an option holds",
                    v.len()
                ),
            ));
        }
    }
    Ok(set)
}

fn unicast_list(v: &Spanned<Vec<String>>, field: &str) -> Result<Vec<u8>, OptionError> {
    if v.get_ref().is_empty() {
        return Err(oerr(
            Some(v.span()),
            field,
            "empty list: leave it out instead",
        ));
    }
    let mut b = Vec::with_capacity(16 * v.get_ref().len());
    for s in v.get_ref() {
        let a = unicast(s).map_err(|m| oerr(Some(v.span()), field, m))?;
        b.extend_from_slice(&a.octets());
    }
    Ok(b)
}

fn unicast(s: &str) -> Result<Ipv6Addr, String> {
    let a: Ipv6Addr = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv6 address"))?;
    if a.is_unspecified() || a.is_multicast() {
        return Err(format!("`{s}` is not a unicast address"));
    }
    Ok(a)
}

/// One option-56 value per server, each with its one time-source sub-option.
fn ntp_servers(v: &Spanned<Vec<String>>) -> Result<Vec<Vec<u8>>, OptionError> {
    if v.get_ref().is_empty() {
        return Err(oerr(
            Some(v.span()),
            "ntp_servers",
            "empty list: leave it out instead",
        ));
    }
    let mut all = Vec::new();
    for s in v.get_ref() {
        let mut b = Vec::new();
        let r = match s.trim().parse::<Ipv6Addr>() {
            Ok(a) if a.is_unspecified() => Err(format!("`{s}` is not a server address")),
            Ok(a) if a.is_multicast() => put_tlv(&mut b, NTP_SUBOPTION_MC_ADDR, &a.octets()),
            Ok(a) => put_tlv(&mut b, NTP_SUBOPTION_SRV_ADDR, &a.octets()),
            Err(_) => {
                let mut n = Vec::new();
                domain_name(s, &mut n).and_then(|()| put_tlv(&mut b, NTP_SUBOPTION_SRV_FQDN, &n))
            }
        };
        r.map_err(|m| oerr(Some(v.span()), "ntp_servers", m))?;
        all.push(b);
    }
    Ok(all)
}

/// Appends `code`, length, `data`.
fn put_tlv(b: &mut Vec<u8>, code: u16, data: &[u8]) -> Result<(), String> {
    let len = u16::try_from(data.len()).map_err(|_| "value longer than 65535 bytes".to_string())?;
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(data);
    Ok(())
}

/// Appends `name` in RFC 1035 §3.1 wire form (labels, a zero byte at the end; no compression,
/// RFC 8415 §10). Host-name rules (letters, digits, hyphens, underscores) keep typos out.
pub(super) fn domain_name(name: &str, b: &mut Vec<u8>) -> Result<(), String> {
    let n = name.trim().strip_suffix('.').unwrap_or(name.trim());
    if n.is_empty() {
        return Err("an empty domain name".to_string());
    }
    let start = b.len();
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{name}`: every label must be 1 to 63 characters long"
            ));
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "`{name}`: a label holds letters, digits, `-` (not first or last) and `_`"
            ));
        }
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
    if b.len() - start > 255 {
        return Err(format!("`{name}` is longer than 255 bytes encoded"));
    }
    Ok(())
}

/// The bytes of one `<value>`: exactly one representation.
fn value(v: &FileCodedValue) -> Result<Vec<u8>, String> {
    let given = [
        v.hex.is_some(),
        v.text.is_some(),
        v.addresses.is_some(),
        v.domains.is_some(),
        v.u8.is_some(),
        v.u16.is_some(),
        v.u32.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(format!(
            "give exactly one of hex, text, addresses, domains, u8, u16, u32 ({given} given)"
        ));
    }
    if let Some(h) = &v.hex {
        return hex(h);
    }
    if let Some(t) = &v.text {
        return Ok(t.as_bytes().to_vec());
    }
    if let Some(list) = &v.addresses {
        let mut b = Vec::new();
        for s in list {
            let a: Ipv6Addr = s
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not an IPv6 address"))?;
            b.extend_from_slice(&a.octets());
        }
        return Ok(b);
    }
    if let Some(list) = &v.domains {
        let mut b = Vec::new();
        for s in list {
            domain_name(s, &mut b)?;
        }
        return Ok(b);
    }
    if let Some(x) = v.u8 {
        return Ok(vec![x]);
    }
    if let Some(x) = v.u16 {
        return Ok(x.to_be_bytes().to_vec());
    }
    Ok(v.u32.unwrap_or_default().to_be_bytes().to_vec())
}

/// Hex digits, optionally separated by `:` or spaces (`0a0b`, `0a:0b`).
pub fn hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|c| *c != b':' && *c != b' ').collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("`{s}`: an odd number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok())
                .ok_or_else(|| format!("`{s}` is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_encode_as_labels_without_compression() {
        let mut b = Vec::new();
        domain_name("example.net.", &mut b).unwrap();
        domain_name("lab.example.net", &mut b).unwrap();
        assert_eq!(
            b,
            b"\x07example\x03net\x00\x03lab\x07example\x03net\x00".to_vec()
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.net",
            "a-.net",
            "exa mple.net",
            &"a".repeat(64),
        ] {
            assert!(domain_name(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(
            domain_name(&long, &mut Vec::new()).is_err(),
            "over 255 bytes"
        );
    }

    #[test]
    fn overlay_replaces_whole_codes_and_keeps_order() {
        let mut base = OptionSet::default();
        base.push(23, vec![1; 16]);
        base.push(17, vec![0, 0, 0, 1]);
        base.push(17, vec![0, 0, 0, 2]);
        base.entries.sort_by_key(|e| e.0);
        let mut over = OptionSet::default();
        over.push(17, vec![0, 0, 0, 9]);
        over.push(24, vec![0]);
        let m = base.overlaid(&over);
        let got: Vec<(u16, Vec<u8>)> = m.iter().map(|(c, v)| (c, v.to_vec())).collect();
        assert_eq!(
            got,
            vec![(17, vec![0, 0, 0, 9]), (23, vec![1; 16]), (24, vec![0])]
        );
        assert_eq!(base.get(17).count(), 2);
        assert_eq!(m.get(99).count(), 0);
        assert_eq!(m.encoded_len(), 4 + 4 + 4 + 16 + 4 + 1);
    }

    #[test]
    fn hex_accepts_separators_and_refuses_odd_or_bad_digits() {
        assert_eq!(hex("0a0B").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(hex("0a:0b ff").unwrap(), vec![0x0a, 0x0b, 0xff]);
        assert!(hex("abc").is_err());
        assert!(hex("zz").is_err());
    }
}
