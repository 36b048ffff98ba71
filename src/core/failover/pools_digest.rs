//! The pools digest and summary: a Tandem extension to CONNECT / CONNECTREPLY (see
//! [`super::connect`], "Deviations") by which partners check they configured the same subnets
//! and pools, and name the lines that differ when they did not.

use std::collections::HashSet;

use crate::config::{Config, OptionSet, PoolConfig, Reservation, ResourceKind, SubnetConfig};
use crate::wire::{OPTION_HEADER_LEN, OptionIter, opt};

use super::wire::{FailoverMessage, FailoverWriter};

/// The enterprise number Tandem's vendor option is filed under: 32473, reserved for
/// documentation by RFC 5612. Tandem has no Private Enterprise Number of its own; the
/// documentation number marks the option as Tandem-to-Tandem only. Changing it breaks
/// mixed-version pairs.
pub const TANDEM_ENTERPRISE_NUMBER: u32 = 32473;

/// Vendor sub-option (under [`TANDEM_ENTERPRISE_NUMBER`]) carrying the 32-byte pools digest
/// ([`pools_digest`]).
pub const TANDEM_SUBOPT_POOLS_DIGEST: u16 = 1;

/// Vendor sub-option (under [`TANDEM_ENTERPRISE_NUMBER`]) carrying the pools summary: UTF-8
/// lines ([`pools_summary`]) joined by `'\n'`, at most [`POOLS_SUMMARY_MAX_BYTES`].
pub const TANDEM_SUBOPT_POOLS_SUMMARY: u16 = 2;

/// Vendor sub-option (under [`TANDEM_ENTERPRISE_NUMBER`]) carrying a prefix share in a BNDUPD
/// and its BNDREPLY (`failover::codec`, `failover::pd_share`).
pub const TANDEM_SUBOPT_PD_SHARE: u16 = 3;

/// Most bytes of pools summary sent. When the lines do not fit, as many whole lines as fit are
/// sent, followed by one line saying how many were left out.
pub const POOLS_SUMMARY_MAX_BYTES: usize = 4096;

/// Most differing summary lines named per side in a refusal reason.
pub const MISMATCH_LINES_MAX: usize = 10;

/// Bytes kept free at the end of the summary for the "more lines not listed" line.
const SUMMARY_MARKER_RESERVE: usize = 96;

/// Domain tag at the start of the canonical pools encoding (version 1 of the encoding).
const POOLS_ENCODING_TAG: &[u8] = b"tandem-pools-v1\0";

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Subnets sorted by id, each with its pools sorted by (kind, first, count, resource length):
/// the canonical order of the digest and the summary, so that listing the same subnets or
/// pools in another order does not count as a difference.
fn canonical(config: &Config) -> Vec<(&SubnetConfig, Vec<&PoolConfig>)> {
    let mut subnets: Vec<&SubnetConfig> = config.subnets.iter().collect();
    subnets.sort_by_key(|s| s.id);
    subnets
        .into_iter()
        .map(|s| {
            let mut pools: Vec<&PoolConfig> = s.pools.iter().collect();
            pools.sort_by_key(|p| (p.kind.code(), p.first, p.count, p.resource_len));
            (s, pools)
        })
        .collect()
}

fn put_count(b: &mut Vec<u8>, n: usize) {
    b.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// The canonical byte encoding the pools digest is taken over (version 1). Big-endian
/// throughout:
///
/// ```text
/// "tandem-pools-v1\0"
/// subnet count (u32)
/// per subnet, by id:  id (u32) | prefix address (16) | prefix length (u8)
///                     | preferred, valid, T1, T2 (u32 each) | pool count (u32)
///   per pool, sorted: kind (u8: 0 address, 1 prefix) | first (u128) | count (u128)
///                     | resource length (u8)
/// ```
///
/// When any subnet has options or reservations, their section follows (so configurations
/// without either keep the digest they always had):
///
/// ```text
/// "tandem-client-data\0"
/// per subnet, by id:  id (u32) | options (u32 count, then code u16 | len u32 | value each,
///                     the subnet's merged set) | per pool, sorted: the pool's own, same form,
///                     then its Prefix Exclude length (u8, 0: none) and subnet id (u64)
///                     | reservations: count (u32) | digest of their encoding (32)
/// ```
///
/// Two more sections come before that one, each only where it applies: extra prefixes on a
/// subnet's link (`"tandem-extra-prefixes\0"`, per subnet by id: id (u32) | count (u32) | per
/// prefix its address (16) and length (u8)), and a relationship's `failover.skew_max_secs` that
/// is not the default (`"tandem-merge-skew\0"` | seconds (u64)).
///
/// Server-local settings (listen addresses, interfaces, data dir, workers, log level, sub-pool
/// count, ...) are not part of it.
pub fn pools_canonical_bytes(config: &Config) -> Vec<u8> {
    let canon = canonical(config);
    let mut b = Vec::with_capacity(64 + canon.len() * 80);
    b.extend_from_slice(POOLS_ENCODING_TAG);
    put_count(&mut b, canon.len());
    for (s, pools) in &canon {
        b.extend_from_slice(&s.id.to_be_bytes());
        b.extend_from_slice(&s.prefix.addr.octets());
        b.push(s.prefix.len);
        let lt = s.lifetimes;
        for v in [lt.preferred_secs, lt.valid_secs, lt.t1_secs, lt.t2_secs] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        put_count(&mut b, pools.len());
        for p in pools {
            b.push(p.kind.code());
            b.extend_from_slice(&p.first.to_be_bytes());
            b.extend_from_slice(&p.count.to_be_bytes());
            b.push(p.resource_len);
        }
    }
    let client_data = canon.iter().any(|(s, pools)| {
        !s.options.is_empty()
            || !s.reservations.is_empty()
            || pools
                .iter()
                .any(|p| !p.options.is_empty() || p.excluded.is_some())
    });
    // Extra prefixes on a subnet's link (a configuration without them keeps its digest).
    if canon.iter().any(|(s, _)| !s.extra_prefixes.is_empty()) {
        b.extend_from_slice(EXTRA_PREFIXES_TAG);
        for (s, _) in &canon {
            b.extend_from_slice(&s.id.to_be_bytes());
            put_count(&mut b, s.extra_prefixes.len());
            for p in &s.extra_prefixes {
                b.extend_from_slice(&p.addr.octets());
                b.push(p.len);
            }
        }
    }
    // The merge's skew window, which both partners must share (a configuration with the
    // default keeps its digest).
    if let Some(skew) = merge_skew_secs(config) {
        b.extend_from_slice(MERGE_SKEW_TAG);
        b.extend_from_slice(&skew.to_be_bytes());
    }
    if client_data {
        b.extend_from_slice(CLIENT_DATA_TAG);
        for (s, pools) in &canon {
            b.extend_from_slice(&s.id.to_be_bytes());
            put_options(&mut b, &s.options);
            for p in pools {
                put_options(&mut b, &p.options);
                let (len, id) = p.excluded.map_or((0, 0), |x| (x.len, x.subnet_id));
                b.push(len);
                b.extend_from_slice(&id.to_be_bytes());
            }
            put_count(&mut b, s.reservations.len());
            b.extend_from_slice(&reservations_digest(s));
        }
    }
    b
}

/// Tag of the extra-prefixes section of the canonical encoding.
const EXTRA_PREFIXES_TAG: &[u8] = b"tandem-extra-prefixes\0";

/// Tag of the merge skew section of the canonical encoding.
const MERGE_SKEW_TAG: &[u8] = b"tandem-merge-skew\0";

/// The relationship's `failover.skew_max_secs` when it is not the default, for a configuration
/// of one relationship (the partner thread's view of its own). Both partners judge a binding
/// update with it: two times closer than this count as equal (docs/failover.md). Partners that
/// disagree would each refuse the other's record where one thinks the times equal and the
/// other does not, and send their own back, again and again.
fn merge_skew_secs(config: &Config) -> Option<u64> {
    match config.relationships.as_slice() {
        [r] if r.skew_max_secs != crate::config::defaults::SKEW_MAX_SECS => Some(r.skew_max_secs),
        _ => None,
    }
}

/// Tag of the options-and-reservations section of the canonical encoding.
const CLIENT_DATA_TAG: &[u8] = b"tandem-client-data\0";

fn put_options(b: &mut Vec<u8>, set: &OptionSet) {
    put_count(b, set.iter().count());
    for (code, v) in set.iter() {
        b.extend_from_slice(&code.to_be_bytes());
        put_count(b, v.len());
        b.extend_from_slice(v);
    }
}

/// Digest of a subnet's reservations in a canonical order (by key), each as its key kind,
/// key, addresses, prefixes and options; the order they were configured in does not count.
fn reservations_digest(s: &SubnetConfig) -> [u8; 32] {
    let mut list: Vec<&Reservation> = s.reservations.list().iter().collect();
    list.sort_by(|a, b| (a.key.kind, &a.key.value).cmp(&(b.key.kind, &b.key.value)));
    let mut b = Vec::with_capacity(list.len() * 48);
    for r in list {
        b.push(r.key.kind as u8);
        put_count(&mut b, r.key.value.len());
        b.extend_from_slice(&r.key.value);
        put_count(&mut b, r.addresses().count());
        for a in r.addresses() {
            b.extend_from_slice(&a.octets());
        }
        put_count(&mut b, r.prefixes().count());
        for p in r.prefixes() {
            b.extend_from_slice(&p.addr.octets());
            b.push(p.len);
        }
        put_options(&mut b, r.options());
    }
    digest256(&b)
}

fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A stable 256-bit digest of `bytes`: four FNV-1a-64 lanes, lane `i` (0..=3) absorbing first
/// the single byte `i`, then `bytes`, then `bytes.len()` as a big-endian u64; the result is the
/// four lane values, big-endian, lane 0 first.
///
/// It is defined here bit for bit, so it does not depend on a crate version, the platform or the
/// Rust release. It detects configuration mismatches between honest partners (each lane is a
/// bijection of its state per input byte, so two inputs of the same length differing in one
/// byte always differ); it is **not** a cryptographic hash and gives no protection against a
/// forger. The partner is authenticated by TLS, not by this.
pub fn digest256(bytes: &[u8]) -> [u8; 32] {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes();
    let mut out = [0u8; 32];
    for (lane, chunk) in (0u8..).zip(out.chunks_exact_mut(8)) {
        let h = fnv1a64(FNV_OFFSET, &[lane]);
        let h = fnv1a64(h, bytes);
        let h = fnv1a64(h, &len);
        chunk.copy_from_slice(&h.to_be_bytes());
    }
    out
}

/// Digest of what both partners MUST configure identically (digest §7): every subnet's id,
/// prefix and lifetimes (preferred, valid, T1, T2) and every pool's kind, first resource, count
/// and resource length ([`pools_canonical_bytes`], hashed with [`digest256`]).
///
/// Not covered: listen addresses, interfaces, data dir, workers, log level and anything else
/// only one server cares about. Changing the encoding or the hash breaks mixed-version pairs.
pub fn pools_digest(config: &Config) -> [u8; 32] {
    digest256(&pools_canonical_bytes(config))
}

/// Hex of the first 8 bytes of a digest, for logs.
pub fn digest_short_hex(d: &[u8; 32]) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn pool_line(s: &SubnetConfig, p: &PoolConfig) -> String {
    let first = std::net::Ipv6Addr::from(p.first);
    // Last resource: first + (count - 1) << (128 - resource_len), if representable.
    let last = 128u32
        .checked_sub(u32::from(p.resource_len))
        .and_then(|shift| 1u128.checked_shl(shift))
        .and_then(|step| p.count.checked_sub(1)?.checked_mul(step))
        .and_then(|off| p.first.checked_add(off))
        .map(|l| std::net::Ipv6Addr::from(l).to_string())
        .unwrap_or_else(|| "?".to_string());
    let what = match p.kind {
        ResourceKind::Address if p.resource_len == 128 => {
            format!("addresses {first}-{last} ({})", p.count)
        }
        ResourceKind::Address => {
            format!("addresses /{} {first}-{last} ({})", p.resource_len, p.count)
        }
        ResourceKind::Prefix => {
            format!("prefixes /{} {first}-{last} ({})", p.resource_len, p.count)
        }
    };
    let lt = s.lifetimes;
    let prefixes = s
        .prefixes()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("+");
    format!(
        "subnet {} {prefixes}: {what}; preferred {} s, valid {} s, T1 {} s, T2 {} s",
        s.id, lt.preferred_secs, lt.valid_secs, lt.t1_secs, lt.t2_secs
    )
}

/// One human-readable line per pool, in the digest's canonical order, naming everything the
/// digest covers, e.g.
/// `subnet 1 2001:db8:1::/64: addresses 2001:db8:1::1:0-2001:db8:1::ffff:ffff (4294901760);
/// preferred 3600 s, valid 7200 s, T1 1800 s, T2 2880 s`.
///
/// Two configurations with the same digest have the same lines; a difference shows up as lines
/// only one side has.
///
/// Options (the subnet's merged set, each pool's own) and reservations add a line each where
/// configured: `subnet 1 options: 23 #1f2e3d4c, 24 #...` (a short digest per value) and
/// `subnet 1 reservations: 100000 #0a1b2c3d...`. A `failover.skew_max_secs` other than the
/// default comes first: `failover.skew_max_secs 30`.
pub fn pools_summary(config: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(skew) = merge_skew_secs(config) {
        lines.push(format!("failover.skew_max_secs {skew}"));
    }
    for (s, pools) in canonical(config) {
        for p in &pools {
            lines.push(pool_line(s, p));
        }
        if !s.options.is_empty() {
            lines.push(format!(
                "subnet {} options: {}",
                s.id,
                options_line(&s.options)
            ));
        }
        for p in &pools {
            if let Some(x) = p.excluded {
                lines.push(format!(
                    "subnet {} pool {} excludes /{} number {} of each prefix",
                    s.id,
                    std::net::Ipv6Addr::from(p.first),
                    x.len,
                    x.subnet_id
                ));
            }
            if !p.options.is_empty() {
                lines.push(format!(
                    "subnet {} pool {} options: {}",
                    s.id,
                    std::net::Ipv6Addr::from(p.first),
                    options_line(&p.options)
                ));
            }
        }
        if !s.reservations.is_empty() {
            lines.push(format!(
                "subnet {} reservations: {} #{}",
                s.id,
                s.reservations.len(),
                digest_short_hex(&reservations_digest(s))
            ));
        }
    }
    lines
}

fn options_line(set: &OptionSet) -> String {
    set.iter()
        .map(|(code, v)| format!("{code} #{}", &digest_short_hex(&digest256(v))[..8]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary lines as sent: newlines inside a line replaced by spaces, and cut to
/// [`POOLS_SUMMARY_MAX_BYTES`] when joined, the last line then saying how many were left out.
pub(crate) fn cut_summary(lines: &[String]) -> Vec<String> {
    let clean: Vec<String> = lines.iter().map(|l| l.replace(['\n', '\r'], " ")).collect();
    let joined_len = clean
        .iter()
        .map(|l| l.len().saturating_add(1))
        .sum::<usize>()
        .saturating_sub(1);
    if joined_len <= POOLS_SUMMARY_MAX_BYTES {
        return clean;
    }
    let budget = POOLS_SUMMARY_MAX_BYTES - SUMMARY_MARKER_RESERVE;
    let mut kept = Vec::new();
    let mut used = 0usize;
    for l in &clean {
        let add = l.len().saturating_add(usize::from(!kept.is_empty()));
        if used.saturating_add(add) > budget {
            break;
        }
        used = used.saturating_add(add);
        kept.push(l.clone());
    }
    let left = clean.len().saturating_sub(kept.len());
    kept.push(format!(
        "... {left} more pool line(s) not listed (summary limited to {POOLS_SUMMARY_MAX_BYTES} bytes)"
    ));
    kept
}

/// Appends Tandem's vendor option to a CONNECT / CONNECTREPLY: `OPTION_VENDOR_OPTS` with
/// enterprise number [`TANDEM_ENTERPRISE_NUMBER`], holding sub-option
/// [`TANDEM_SUBOPT_POOLS_DIGEST`] (`digest`) and sub-option [`TANDEM_SUBOPT_POOLS_SUMMARY`]
/// (`summary` joined by `'\n'`, cut to [`POOLS_SUMMARY_MAX_BYTES`]).
pub fn write_tandem_pools(w: &mut FailoverWriter<'_>, digest: &[u8; 32], summary: &[String]) {
    let text = cut_summary(summary).join("\n");
    w.with_options(|o| {
        o.nested(
            opt::VENDOR_OPTS,
            &TANDEM_ENTERPRISE_NUMBER.to_be_bytes(),
            |o| {
                o.option(TANDEM_SUBOPT_POOLS_DIGEST, digest);
                o.option(TANDEM_SUBOPT_POOLS_SUMMARY, text.as_bytes());
            },
        );
    });
}

/// Tandem's pools digest and summary lines from a parsed message: the first
/// `OPTION_VENDOR_OPTS` with enterprise number [`TANDEM_ENTERPRISE_NUMBER`].
///
/// `None` if there is none, or if it is malformed (sub-options overrunning it, a digest that is
/// not 32 bytes, a summary that is not UTF-8, no digest). A missing summary gives no lines.
/// Vendor options of other enterprises are ignored.
pub fn read_tandem_pools(msg: &FailoverMessage<'_>) -> Option<([u8; 32], Vec<String>)> {
    let data = msg.options().find_map(|o| {
        if o.code != opt::VENDOR_OPTS {
            return None;
        }
        let (ent, rest) = o.data.split_first_chunk::<4>()?;
        (u32::from_be_bytes(*ent) == TANDEM_ENTERPRISE_NUMBER).then_some(rest)
    })?;
    let mut digest: Option<[u8; 32]> = None;
    let mut summary: Option<&str> = None;
    let mut used = 0usize;
    for so in OptionIter::new(data) {
        used = used
            .saturating_add(OPTION_HEADER_LEN)
            .saturating_add(so.data.len());
        match so.code {
            TANDEM_SUBOPT_POOLS_DIGEST if digest.is_none() => {
                digest = Some(so.data.try_into().ok()?);
            }
            TANDEM_SUBOPT_POOLS_SUMMARY if summary.is_none() => {
                summary = Some(std::str::from_utf8(so.data).ok()?);
            }
            _ => {}
        }
    }
    if used != data.len() {
        return None;
    }
    let lines = match summary {
        None | Some("") => Vec::new(),
        Some(s) => s.split('\n').map(str::to_string).collect(),
    };
    Some((digest?, lines))
}

/// Lines only in `a` and only in `b` (each in its own order, without repeats).
pub(crate) fn diff_lines<'x>(a: &'x [String], b: &'x [String]) -> (Vec<&'x str>, Vec<&'x str>) {
    let sa: HashSet<&str> = a.iter().map(String::as_str).collect();
    let sb: HashSet<&str> = b.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let only_a = a
        .iter()
        .map(String::as_str)
        .filter(|l| !sb.contains(l) && seen.insert(*l))
        .collect();
    let mut seen = HashSet::new();
    let only_b = b
        .iter()
        .map(String::as_str)
        .filter(|l| !sa.contains(l) && seen.insert(*l))
        .collect();
    (only_a, only_b)
}

/// What differs between our summary `ours` (cut as sent) and the partner's lines, each side's
/// own lines after its label (`{here}: …; {there}: …`), or a note that the listed lines agree
/// (the lists are cut at [`POOLS_SUMMARY_MAX_BYTES`]) when the digests differ nonetheless.
pub(crate) fn describe_difference(
    ours: &[String],
    theirs: &[String],
    here: &str,
    there: &str,
) -> String {
    let ours_cut = cut_summary(ours);
    let (only_ours, only_theirs) = diff_lines(&ours_cut, theirs);
    if only_ours.is_empty() && only_theirs.is_empty() {
        "the listed summary lines agree (the lists are cut at 4096 bytes, or the summaries were not built from the same configuration as the digests)".to_string()
    } else {
        format!(
            "{here}: {}; {there}: {}",
            list_lines(&only_ours),
            list_lines(&only_theirs)
        )
    }
}

pub(crate) fn list_lines(lines: &[&str]) -> String {
    if lines.is_empty() {
        return "none".to_string();
    }
    let mut s = lines
        .iter()
        .take(MISMATCH_LINES_MAX)
        .map(|l| format!("[{l}]"))
        .collect::<Vec<_>>()
        .join(" ");
    if lines.len() > MISMATCH_LINES_MAX {
        s.push_str(&format!(
            " and {} more",
            lines.len().saturating_sub(MISMATCH_LINES_MAX)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::failover::wire::FailoverType;

    fn cfg() -> Config {
        config::parse("<d>", config::EMBEDDED_DEFAULT).unwrap()
    }

    #[test]
    fn the_merge_skew_counts_only_when_not_the_default_and_is_named() {
        let with_skew = |line: &str| {
            let t = format!(
                "{}\n[failover]\nca=\"ca.pem\"\ncert=\"a.pem\"\nkey=\"a.key\"\nrole=\"primary\"\npartner=\"2001:db8::b\"\npartner_name=\"b\"\n{line}",
                config::EMBEDDED_DEFAULT
            );
            config::parse("<t>", &t).unwrap()
        };
        let plain = cfg();
        let default = with_skew("");
        let five = with_skew(&format!(
            "skew_max_secs={}\n",
            config::defaults::SKEW_MAX_SECS
        ));
        let thirty = with_skew("skew_max_secs=30\n");
        // A pair on the default keeps the digest it had before the skew counted.
        assert_eq!(pools_digest(&default), pools_digest(&plain));
        assert_eq!(pools_digest(&five), pools_digest(&plain));
        assert_eq!(pools_summary(&five), pools_summary(&plain));
        // Partners set apart disagree, and the refusal names the line.
        assert_ne!(pools_digest(&thirty), pools_digest(&five));
        assert_eq!(pools_summary(&thirty)[0], "failover.skew_max_secs 30");
        let why = describe_difference(
            &pools_summary(&five),
            &pools_summary(&thirty),
            "here",
            "there",
        );
        assert!(why.contains("[failover.skew_max_secs 30]"), "{why}");
    }

    #[test]
    fn options_and_reservations_count_only_when_configured() {
        let plain = cfg();
        let base = pools_canonical_bytes(&plain);
        assert!(
            !base
                .windows(CLIENT_DATA_TAG.len())
                .any(|w| w == CLIENT_DATA_TAG),
            "a configuration without them keeps its old encoding"
        );
        let with = |extra: &str| {
            let t = config::EMBEDDED_DEFAULT.replace("[[subnet]]", &format!("{extra}\n[[subnet]]"));
            config::parse("<t>", &t).unwrap()
        };
        let a = with("[options]\ndns_servers = [\"2001:db8::53\"]");
        let b = with("[options]\ndns_servers = [\"2001:db8::54\"]");
        assert_ne!(pools_digest(&a), pools_digest(&plain));
        assert_ne!(pools_digest(&a), pools_digest(&b));
        let (sa, sb) = (pools_summary(&a), pools_summary(&b));
        let (only_a, only_b) = diff_lines(&sa, &sb);
        assert_eq!(
            (only_a.len(), only_b.len()),
            (1, 1),
            "{only_a:?} {only_b:?}"
        );
        assert!(
            only_a[0].starts_with("subnet 1 options: 23 #"),
            "{only_a:?}"
        );
        let r = |order: &str| {
            let t = format!("{}reservations = [{order}]\n", config::EMBEDDED_DEFAULT);
            config::parse("<t>", &t).unwrap()
        };
        let x = r(
            "{ duid = \"00:01:02:03\", addresses = [\"2001:db8:1::1:10\"] }, { duid = \"00:01:02:04\", addresses = [\"2001:db8:1::1:11\"] }",
        );
        let y = r(
            "{ duid = \"00:01:02:04\", addresses = [\"2001:db8:1::1:11\"] }, { duid = \"00:01:02:03\", addresses = [\"2001:db8:1::1:10\"] }",
        );
        let z = r(
            "{ duid = \"00:01:02:04\", addresses = [\"2001:db8:1::1:12\"] }, { duid = \"00:01:02:03\", addresses = [\"2001:db8:1::1:10\"] }",
        );
        assert_eq!(pools_digest(&x), pools_digest(&y), "order does not count");
        assert_ne!(pools_digest(&x), pools_digest(&z));
        let (sx, sz) = (pools_summary(&x), pools_summary(&z));
        let (only_x, _) = diff_lines(&sx, &sz);
        assert!(
            only_x[0].starts_with("subnet 1 reservations: 2 #"),
            "{only_x:?}"
        );
    }

    #[test]
    fn extra_prefixes_count_only_when_configured() {
        let plain = cfg();
        assert!(
            !pools_canonical_bytes(&plain)
                .windows(EXTRA_PREFIXES_TAG.len())
                .any(|w| w == EXTRA_PREFIXES_TAG),
            "a configuration without them keeps its old encoding"
        );
        let t = config::EMBEDDED_DEFAULT.replace(
            "prefix = \"2001:db8:1::/64\"",
            "prefix = \"2001:db8:1::/64\"\nextra_prefixes = [\"2001:db8:2::/64\"]",
        );
        assert_ne!(t, config::EMBEDDED_DEFAULT);
        let extra = config::parse("<t>", &t).unwrap();
        assert_ne!(pools_digest(&extra), pools_digest(&plain));
        let (se, sp) = (pools_summary(&extra), pools_summary(&plain));
        let (only_extra, _) = diff_lines(&se, &sp);
        assert!(
            only_extra[0].starts_with("subnet 1 2001:db8:1::/64+2001:db8:2::/64:"),
            "{only_extra:?}"
        );
    }

    #[test]
    fn digest256_is_fnv1a_lanes() {
        // Lane 0 over the empty input: FNV-1a of [0] then of eight zero length bytes.
        let d = digest256(&[]);
        let lane0 = fnv1a64(fnv1a64(FNV_OFFSET, &[0]), &[0; 8]);
        assert_eq!(d[..8], lane0.to_be_bytes());
        // Lanes differ from each other, and one changed byte changes every lane.
        let a = digest256(b"abcdef");
        let b = digest256(b"abcdeg");
        for (x, y) in a.chunks(8).zip(b.chunks(8)) {
            assert_ne!(x, y);
        }
        assert_ne!(a[..8], a[8..16]);
        // FNV-1a-64 test vector ("a" → af63dc4c8601ec8c).
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pool_order_does_not_matter() {
        let text = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=2\nprefix=\"2001:db8:2::/64\"\npools=[{range=\"2001:db8:2::10-2001:db8:2::20\"},{range=\"2001:db8:2::30-2001:db8:2::40\"}]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{prefix=\"2001:db8:1::/64\"}]\n";
        let swapped = "[server]\nlisten=[\"[::1]:5547\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{prefix=\"2001:db8:1::/64\"}]\n[[subnet]]\nid=2\nprefix=\"2001:db8:2::/64\"\npools=[{range=\"2001:db8:2::30-2001:db8:2::40\"},{range=\"2001:db8:2::10-2001:db8:2::20\"}]\n";
        let a = config::parse("a", text).unwrap();
        let b = config::parse("b", swapped).unwrap();
        assert_eq!(pools_digest(&a), pools_digest(&b));
        assert_eq!(pools_summary(&a), pools_summary(&b));
        assert_eq!(pools_summary(&a).len(), 3);
        assert!(pools_summary(&a)[0].starts_with("subnet 1 2001:db8:1::/64: addresses"));
    }

    #[test]
    fn summary_lines_name_everything() {
        let s = pools_summary(&cfg());
        assert_eq!(
            s,
            [
                "subnet 1 2001:db8:1::/64: addresses 2001:db8:1::1:0-2001:db8:1::ffff:ffff (4294901760); preferred 3600 s, valid 7200 s, T1 1800 s, T2 2880 s",
                "subnet 1 2001:db8:1::/64: prefixes /56 2001:db8:8000::-2001:db8:ffff:ff00:: (8388608); preferred 3600 s, valid 7200 s, T1 1800 s, T2 2880 s",
            ]
        );
    }

    #[test]
    fn long_summary_is_cut_with_a_marker() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("line {i:03} {}", "x".repeat(40)))
            .collect();
        let cut = cut_summary(&lines);
        let joined = cut.join("\n");
        assert!(joined.len() <= POOLS_SUMMARY_MAX_BYTES, "{}", joined.len());
        let last = cut.last().unwrap();
        assert!(last.contains("more pool line(s) not listed"), "{last}");
        assert!(last.contains(&format!("{} more", 200 - (cut.len() - 1))));
        // Short lists pass unchanged; embedded newlines are flattened.
        assert_eq!(cut_summary(&["a\nb".to_string()]), ["a b"]);
        // Round trip through the vendor option.
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, 1, 2);
        write_tandem_pools(&mut w, &[7; 32], &lines);
        let m = FailoverMessage::parse(&buf).unwrap();
        let (d, got) = read_tandem_pools(&m).unwrap();
        assert_eq!(d, [7; 32]);
        assert_eq!(got, cut);
    }

    #[test]
    fn vendor_option_of_another_enterprise_is_ignored() {
        let mut buf = Vec::new();
        let mut w = FailoverWriter::new(&mut buf, FailoverType::Connect, 1, 2);
        w.with_options(|o| {
            o.nested(opt::VENDOR_OPTS, &9u32.to_be_bytes(), |o| {
                o.option(TANDEM_SUBOPT_POOLS_DIGEST, &[1; 32])
            })
        });
        write_tandem_pools(&mut w, &[2; 32], &[]);
        let m = FailoverMessage::parse(&buf).unwrap();
        assert_eq!(read_tandem_pools(&m), Some(([2; 32], vec![])));

        // Malformed: wrong digest size, bad UTF-8, trailing bytes, no digest.
        for body in [
            vec![0, 1, 0, 31, 0],
            [vec![0, 1, 0, 32], vec![0; 32], vec![0, 2, 0, 1, 0xff]].concat(),
            [vec![0, 1, 0, 32], vec![0; 32], vec![0, 9, 0]].concat(),
            vec![0, 2, 0, 1, b'a'],
        ] {
            let mut buf = vec![31, 0, 0, 1, 0, 0, 0, 2];
            let data = [TANDEM_ENTERPRISE_NUMBER.to_be_bytes().to_vec(), body].concat();
            buf.extend_from_slice(&opt::VENDOR_OPTS.to_be_bytes());
            buf.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            buf.extend_from_slice(&data);
            let m = FailoverMessage::parse(&buf).unwrap();
            assert_eq!(read_tandem_pools(&m), None, "{data:?}");
        }
    }
}
