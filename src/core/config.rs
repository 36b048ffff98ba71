//! Configuration: the TOML file format, the embedded default, and validation into the runtime
//! types the engine uses.
//!
//! Parsing keeps source spans (`toml::Spanned`) for every field that validation may reject, so
//! an error names the file, the line and the field, e.g.
//! `tandem.toml:14: subnet[0].pool[1].range: overlaps subnet[0].pool[0] (line 11)`.

use serde::Deserialize;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::str::FromStr;
use toml::Spanned;

/// The standard DHCPv6 server port (RFC 8415 §7.2).
pub const DHCP6_SERVER_PORT: u16 = 547;
/// The unprivileged port the embedded default listens on.
pub const DEFAULT_LOOPBACK_PORT: u16 = 5547;
/// The most sub-pools one pool is split into; small pools get fewer (one per resource).
pub const SUBPOOLS_PER_POOL_MAX: u32 = 64;

/// The configuration `tandem serve` runs when no file is given: documentation prefixes, LMDB in
/// `./tandem-data`, listening on `[::1]:5547`, no root needed.
pub const EMBEDDED_DEFAULT: &str = r#"# Tandem's embedded default: loopback only, documentation prefixes.
[server]
data_dir = "./tandem-data"
listen = ["[::1]:5547"]
# Clients reach this server by unicast on loopback; say so in the Unicast option.
unicast_address = "::1"
rapid_commit = true

[lease]
preferred_lifetime_secs = 3600
valid_lifetime_secs = 7200

[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::1:0-2001:db8:1::ffff:ffff" }]
pd_pools = [{ prefix = "2001:db8:8000::/33", delegated_len = 56 }]
"#;

/// An IPv6 prefix such as `2001:db8::/32`. Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub addr: Ipv6Addr,
    /// The prefix length, 0..=128.
    pub len: u8,
}

impl Prefix {
    /// First address of the prefix as an integer.
    pub fn first(&self) -> u128 {
        u128::from(self.addr)
    }
    /// Last address of the prefix as an integer.
    pub fn last(&self) -> u128 {
        self.first() | host_mask(self.len)
    }
    /// Whether `addr` lies inside the prefix.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        let a = u128::from(addr);
        a >= self.first() && a <= self.last()
    }
}

/// The mask of host bits for a prefix length (all ones for /0, zero for /128).
pub fn host_mask(len: u8) -> u128 {
    if len >= 128 { 0 } else { u128::MAX >> len }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a prefix (expected address/length)"))?;
        let addr: Ipv6Addr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv6 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("`{l}` is not a prefix length (0..=128)"))?;
        if u128::from(addr) & host_mask(len) != 0 {
            return Err(format!(
                "`{s}` has host bits set (did you mean {}/{len}?)",
                { Ipv6Addr::from(u128::from(addr) & !host_mask(len)) }
            ));
        }
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What a pool hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// Non-temporary addresses (IA_NA).
    Address,
    /// Delegated prefixes (IA_PD).
    Prefix,
}

impl ResourceKind {
    /// Stable one-byte code, used in store keys.
    pub fn code(self) -> u8 {
        match self {
            ResourceKind::Address => 0,
            ResourceKind::Prefix => 1,
        }
    }
    /// Inverse of [`ResourceKind::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(ResourceKind::Address),
            1 => Some(ResourceKind::Prefix),
            _ => None,
        }
    }
}

/// One validated pool: `count` resources starting at `first`, each `1 << shift` addresses wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Addresses or prefixes.
    pub kind: ResourceKind,
    /// First resource, as an integer address.
    pub first: u128,
    /// Number of resources (addresses, or delegated prefixes), at least 1.
    pub count: u128,
    /// log2 of one resource's size in addresses: 0 for addresses, 128 - delegated_len for PD.
    pub shift: u8,
    /// Prefix length of each resource: 128 for addresses, the delegated length for PD.
    pub resource_len: u8,
    /// How many hashed sub-pools the pool is split into.
    pub subpools: u32,
}

impl PoolConfig {
    /// The resource at `index` (no bounds check; callers keep index < count).
    pub fn resource(&self, index: u128) -> Ipv6Addr {
        Ipv6Addr::from(self.first + (index << self.shift))
    }
    /// The index of `addr` if it is exactly one of this pool's resources (aligned, in range).
    pub fn index_of(&self, addr: Ipv6Addr) -> Option<u128> {
        let a = u128::from(addr);
        if a < self.first {
            return None;
        }
        let off = a - self.first;
        if off & host_mask(128 - self.shift) != 0 && self.shift > 0 {
            return None;
        }
        let idx = off >> self.shift;
        (idx < self.count).then_some(idx)
    }
    /// Last address covered by the pool.
    pub fn last_addr(&self) -> u128 {
        self.first + ((self.count - 1) << self.shift) + (host_mask(128 - self.shift))
    }
}

/// One validated subnet (a link): its on-link prefix and its pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// Operator-chosen identifier, unique, stored with every lease.
    pub id: u32,
    /// The on-link prefix; relayed messages are matched by link-address against it.
    pub prefix: Prefix,
    /// Interface that directly attached clients of this subnet arrive on (none: any).
    pub interface: Option<String>,
    /// Address and prefix pools.
    pub pools: Vec<PoolConfig>,
    /// Lifetimes handed out in this subnet.
    pub lifetimes: Lifetimes,
}

/// Lifetimes and renewal timers, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Preferred lifetime of addresses and prefixes.
    pub preferred_secs: u32,
    /// Valid lifetime of addresses and prefixes.
    pub valid_secs: u32,
    /// T1: when the client renews.
    pub t1_secs: u32,
    /// T2: when the client rebinds.
    pub t2_secs: u32,
}

/// Server-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where LMDB keeps its files.
    pub data_dir: PathBuf,
    /// Unicast addresses to listen on (each with its port).
    pub listen: Vec<SocketAddrV6>,
    /// Interfaces to join ff02::1:2 on (listening on `[::]:port`).
    pub interfaces: Vec<String>,
    /// Port used with `interfaces`.
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Log filter, e.g. `info` or `tandem=debug`.
    pub log_level: String,
    /// Answer a Solicit carrying Rapid Commit with a Reply (RFC 8415 §18.3.1).
    pub rapid_commit: bool,
    /// Value of the Preference option in Advertise, if any.
    pub preference: Option<u8>,
    /// Address sent in the Unicast option; when set, unicast messages are accepted.
    pub unicast_address: Option<Ipv6Addr>,
    /// fsync every commit (off only for benchmarks that want to see the cost).
    pub sync: bool,
    /// How long a Solicit's offer is held for the client, in seconds.
    pub offer_hold_secs: u32,
    /// How long a declined address is kept out of use, in seconds.
    pub decline_hold_secs: u32,
    /// How often expired leases are reclaimed, in milliseconds.
    pub reclaim_interval_ms: u64,
    /// LMDB map size in MiB (the most the database may grow to).
    pub map_size_mib: usize,
    /// Unix socket for `tandem ctl`; `None` means `<data_dir>/control.sock`.
    pub control_socket: Option<PathBuf>,
}

impl ServerConfig {
    /// Where the control socket is: `control_socket`, else `<data_dir>/control.sock`.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("control.sock"))
    }
}

/// Default TCP port of the partner link (RFC 8156 §10: 647).
pub const FAILOVER_PORT: u16 = 647;

/// Our role in the relationship. The primary connects; in NORMAL it serves (hot standby).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Connects to the secondary; serves clients in NORMAL.
    Primary,
    /// Listens; in NORMAL answers only Renews addressed to it.
    Secondary,
}

/// One failover relationship: the `[failover]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Primary (connects, serves in NORMAL) or secondary (listens, stands by).
    pub role: Role,
    /// Relationship name, the same on both partners ("" when not set).
    pub relationship: String,
    /// The partner's link address: where the primary connects. Required for the primary.
    pub partner: Option<SocketAddr>,
    /// Where the secondary accepts its primary (default `[::]:647`).
    pub listen: SocketAddr,
    /// The DNS name the partner's certificate must carry.
    pub partner_name: String,
    /// PEM file with the CA certificate(s) both partners' certificates chain to.
    pub ca: PathBuf,
    /// PEM file with our certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with our private key.
    pub key: PathBuf,
    /// Maximum client lead time in seconds; both partners must agree.
    pub mclt_secs: u64,
    /// The link is declared dead after this long without a message from the partner.
    pub keepalive_secs: u64,
    /// Enter PARTNER-DOWN by ourselves after this long in COMMUNICATIONS-INTERRUPTED (off when
    /// `None`; then only `tandem ctl partner-down` does it).
    pub auto_partner_down_secs: Option<u64>,
    /// How long STARTUP waits for the partner before resuming the stored state.
    pub startup_secs: u64,
    /// Most binding updates we take unacknowledged (announced in CONNECT).
    pub max_unacked: u32,
    /// Largest accepted clock difference with the partner, seconds.
    pub skew_max_secs: u64,
    /// Longest wait between reconnection attempts, milliseconds (it doubles from 100 ms).
    pub reconnect_max_ms: u64,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Server-wide settings.
    pub server: ServerConfig,
    /// Subnets with their pools.
    pub subnets: Vec<SubnetConfig>,
    /// The failover relationship, if this server has a partner.
    pub failover: Option<FailoverConfig>,
}

/// A configuration error that names where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or `<embedded default>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path such as `subnet[0].pools[1].range`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: ", self.file, l)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---- file format (serde) ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    lease: FileLease,
    #[serde(default)]
    subnet: Vec<Spanned<FileSubnet>>,
    failover: Option<Spanned<FileFailover>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFailover {
    role: Spanned<String>,
    relationship: Option<String>,
    partner: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    partner_name: Spanned<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    mclt_secs: Option<u64>,
    keepalive_secs: Option<u64>,
    auto_partner_down_secs: Option<u64>,
    startup_secs: Option<u64>,
    max_unacked: Option<u32>,
    skew_max_secs: Option<u64>,
    reconnect_max_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileServer {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    interfaces: Vec<String>,
    port: Option<u16>,
    workers: Option<usize>,
    log_level: Option<String>,
    rapid_commit: Option<bool>,
    preference: Option<u8>,
    unicast_address: Option<Spanned<String>>,
    sync: Option<bool>,
    offer_hold_secs: Option<u32>,
    decline_hold_secs: Option<u32>,
    reclaim_interval_ms: Option<u64>,
    map_size_mib: Option<usize>,
    control_socket: Option<PathBuf>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct FileLease {
    preferred_lifetime_secs: Option<u32>,
    valid_lifetime_secs: Option<u32>,
    t1_secs: Option<u32>,
    t2_secs: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubnet {
    id: Spanned<u32>,
    prefix: Spanned<String>,
    interface: Option<String>,
    #[serde(default)]
    lease: Option<FileLease>,
    #[serde(default)]
    pools: Vec<Spanned<FileAddrPool>>,
    #[serde(default)]
    pd_pools: Vec<Spanned<FilePdPool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAddrPool {
    range: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePdPool {
    prefix: Spanned<String>,
    delegated_len: Spanned<u8>,
}

/// Parses and validates config text; `file` names it in errors. The syntax of
/// `server.log_level` belongs to the logging backend, so the server checks that one.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let ctx = Ctx { file, text };
    let raw: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_string(),
        line: e.span().map(|s| ctx.line(s.start)),
        field: String::new(),
        message: e.message().trim().to_string(),
    })?;
    validate(&ctx, raw)
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: span.map(|s| self.line(s.start)),
            field: field.to_string(),
            message: msg.into(),
        }
    }
}

fn lifetimes(
    ctx: &Ctx,
    base: FileLease,
    over: Option<FileLease>,
    field: &str,
) -> Result<Lifetimes, ConfigError> {
    let o = over.unwrap_or_default();
    let preferred = o
        .preferred_lifetime_secs
        .or(base.preferred_lifetime_secs)
        .unwrap_or(3600);
    let valid = o
        .valid_lifetime_secs
        .or(base.valid_lifetime_secs)
        .unwrap_or(7200);
    let t1 = o.t1_secs.or(base.t1_secs).unwrap_or(preferred / 2);
    let t2 = o
        .t2_secs
        .or(base.t2_secs)
        .unwrap_or((preferred as u64 * 4 / 5) as u32);
    if valid == 0 {
        return Err(ctx.err(None, field, "valid_lifetime_secs must be greater than 0"));
    }
    if preferred > valid {
        return Err(ctx.err(
            None,
            field,
            format!(
                "preferred_lifetime_secs ({preferred}) is longer than valid_lifetime_secs ({valid})"
            ),
        ));
    }
    if t1 > t2 {
        return Err(ctx.err(
            None,
            field,
            format!("t1_secs ({t1}) is later than t2_secs ({t2})"),
        ));
    }
    if t2 > preferred {
        return Err(ctx.err(
            None,
            field,
            format!("t2_secs ({t2}) is later than preferred_lifetime_secs ({preferred})"),
        ));
    }
    Ok(Lifetimes {
        preferred_secs: preferred,
        valid_secs: valid,
        t1_secs: t1,
        t2_secs: t2,
    })
}

fn subpools_for(count: u128) -> u32 {
    count.min(SUBPOOLS_PER_POOL_MAX as u128) as u32
}

fn validate(ctx: &Ctx, raw: FileConfig) -> Result<Config, ConfigError> {
    let s = raw.server;
    let mut listen = Vec::new();
    for (i, l) in s.listen.iter().enumerate() {
        let a: SocketAddrV6 = l.get_ref().parse().map_err(|_| {
            ctx.err(
                Some(l.span()),
                &format!("server.listen[{i}]"),
                format!(
                    "`{}` is not an IPv6 socket address like [::1]:5547",
                    l.get_ref()
                ),
            )
        })?;
        listen.push(a);
    }
    if listen.is_empty() && s.interfaces.is_empty() {
        return Err(ctx.err(
            None,
            "server",
            "nothing to listen on: set server.listen (unicast addresses) or server.interfaces",
        ));
    }
    let unicast_address = match &s.unicast_address {
        None => None,
        Some(u) => Some(u.get_ref().parse::<Ipv6Addr>().map_err(|_| {
            ctx.err(
                Some(u.span()),
                "server.unicast_address",
                format!("`{}` is not an IPv6 address", u.get_ref()),
            )
        })?),
    };
    let log_level = s.log_level.unwrap_or_else(|| "info".into());
    let server = ServerConfig {
        data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("./tandem-data")),
        listen,
        interfaces: s.interfaces,
        port: s.port.unwrap_or(DHCP6_SERVER_PORT),
        workers: s.workers.unwrap_or(0),
        log_level,
        rapid_commit: s.rapid_commit.unwrap_or(false),
        preference: s.preference,
        unicast_address,
        sync: s.sync.unwrap_or(true),
        offer_hold_secs: s.offer_hold_secs.unwrap_or(60),
        decline_hold_secs: s.decline_hold_secs.unwrap_or(86_400),
        reclaim_interval_ms: s.reclaim_interval_ms.unwrap_or(1000).max(10),
        map_size_mib: s.map_size_mib.unwrap_or(4096),
        control_socket: s.control_socket,
    };
    if server.map_size_mib < 16 {
        return Err(ctx.err(None, "server.map_size_mib", "must be at least 16"));
    }

    if raw.subnet.is_empty() {
        return Err(ctx.err(
            None,
            "subnet",
            "no [[subnet]] configured: there is nothing to hand out",
        ));
    }
    let mut subnets: Vec<SubnetConfig> = Vec::new();
    // (first, last, field, line) of every pool, to find overlaps.
    let mut spans: Vec<(u128, u128, String, usize)> = Vec::new();
    for (si, sub) in raw.subnet.iter().enumerate() {
        let sub = sub.get_ref();
        let sf = format!("subnet[{si}]");
        let id = *sub.id.get_ref();
        if let Some(prev) = subnets.iter().position(|p| p.id == id) {
            return Err(ctx.err(
                Some(sub.id.span()),
                &format!("{sf}.id"),
                format!("id {id} is already used by subnet[{prev}]"),
            ));
        }
        let prefix: Prefix = sub
            .prefix
            .get_ref()
            .parse()
            .map_err(|e| ctx.err(Some(sub.prefix.span()), &format!("{sf}.prefix"), e))?;
        for other in &subnets {
            if other.prefix.first() <= prefix.last() && prefix.first() <= other.prefix.last() {
                return Err(ctx.err(
                    Some(sub.prefix.span()),
                    &format!("{sf}.prefix"),
                    format!("{prefix} overlaps subnet {} ({})", other.id, other.prefix),
                ));
            }
        }
        let lt = lifetimes(ctx, raw.lease, sub.lease, &format!("{sf}.lease"))?;
        let mut pools = Vec::new();
        for (pi, p) in sub.pools.iter().enumerate() {
            let pf = format!("{sf}.pools[{pi}]");
            let (first, last, span) = match (&p.get_ref().range, &p.get_ref().prefix) {
                (Some(r), None) => {
                    let (a, b) = r.get_ref().split_once('-').ok_or_else(|| {
                        ctx.err(
                            Some(r.span()),
                            &format!("{pf}.range"),
                            "expected `first-last`, e.g. 2001:db8::100-2001:db8::1ff",
                        )
                    })?;
                    let pa = |t: &str| -> Result<u128, ConfigError> {
                        t.trim().parse::<Ipv6Addr>().map(u128::from).map_err(|_| {
                            ctx.err(
                                Some(r.span()),
                                &format!("{pf}.range"),
                                format!("`{}` is not an IPv6 address", t.trim()),
                            )
                        })
                    };
                    let (a, b) = (pa(a)?, pa(b)?);
                    if a > b {
                        return Err(ctx.err(
                            Some(r.span()),
                            &format!("{pf}.range"),
                            "first address is after the last",
                        ));
                    }
                    (a, b, r.span())
                }
                (None, Some(px)) => {
                    let pr: Prefix = px
                        .get_ref()
                        .parse()
                        .map_err(|e| ctx.err(Some(px.span()), &format!("{pf}.prefix"), e))?;
                    (pr.first(), pr.last(), px.span())
                }
                _ => {
                    return Err(ctx.err(
                        Some(p.span()),
                        &pf,
                        "give exactly one of `range` or `prefix`",
                    ));
                }
            };
            if !prefix.contains(Ipv6Addr::from(first)) || !prefix.contains(Ipv6Addr::from(last)) {
                return Err(ctx.err(
                    Some(span),
                    &pf,
                    format!(
                        "addresses {}-{} are not all inside the subnet prefix {prefix}",
                        Ipv6Addr::from(first),
                        Ipv6Addr::from(last)
                    ),
                ));
            }
            // count = last - first + 1, which overflows for ::/0 only; cap it.
            let count = (last - first).saturating_add(1);
            pools.push(PoolConfig {
                kind: ResourceKind::Address,
                first,
                count,
                shift: 0,
                resource_len: 128,
                subpools: subpools_for(count),
            });
            spans.push((first, last, pf, ctx.line(span.start)));
        }
        for (pi, p) in sub.pd_pools.iter().enumerate() {
            let pf = format!("{sf}.pd_pools[{pi}]");
            let p = p.get_ref();
            let pr: Prefix = p
                .prefix
                .get_ref()
                .parse()
                .map_err(|e| ctx.err(Some(p.prefix.span()), &format!("{pf}.prefix"), e))?;
            let dl = *p.delegated_len.get_ref();
            if dl > 128 || dl < pr.len {
                return Err(ctx.err(
                    Some(p.delegated_len.span()),
                    &format!("{pf}.delegated_len"),
                    format!(
                        "delegated_len {dl} must be between the pool's prefix length {} and 128",
                        pr.len
                    ),
                ));
            }
            if dl - pr.len > 64 {
                return Err(ctx.err(
                    Some(p.delegated_len.span()),
                    &format!("{pf}.delegated_len"),
                    format!(
                        "/{} split into /{dl} gives 2^{} prefixes; at most 2^64 are supported",
                        pr.len,
                        dl - pr.len
                    ),
                ));
            }
            let count = 1u128 << (dl - pr.len);
            pools.push(PoolConfig {
                kind: ResourceKind::Prefix,
                first: pr.first(),
                count,
                shift: 128 - dl,
                resource_len: dl,
                subpools: subpools_for(count),
            });
            spans.push((pr.first(), pr.last(), pf, ctx.line(p.prefix.span().start)));
        }
        if pools.is_empty() {
            return Err(ctx.err(
                Some(sub.prefix.span()),
                &sf,
                "subnet has no pools and no pd_pools",
            ));
        }
        subnets.push(SubnetConfig {
            id,
            prefix,
            interface: sub.interface.clone(),
            pools,
            lifetimes: lt,
        });
    }
    // Any two pools (of either kind, in any subnet) must not overlap.
    let mut sorted: Vec<_> = spans.iter().collect();
    sorted.sort_by_key(|s| s.0);
    for w in sorted.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: Some(w[1].3),
                field: w[1].2.clone(),
                message: format!("overlaps {} (line {})", w[0].2, w[0].3),
            });
        }
    }
    let failover = match raw.failover {
        None => None,
        Some(f) => Some(failover(ctx, f)?),
    };
    Ok(Config {
        server,
        subnets,
        failover,
    })
}

fn socket_addr(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
    let text = v.get_ref();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    // A bare address takes the failover port.
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, FAILOVER_PORT));
    }
    Err(ctx.err(
        Some(v.span()),
        field,
        format!(
            "`{text}` is not a socket address like [2001:db8::2]:647 (or an address, port 647)"
        ),
    ))
}

fn failover(ctx: &Ctx, f: Spanned<FileFailover>) -> Result<FailoverConfig, ConfigError> {
    let span = f.span();
    let f = f.into_inner();
    let role = match f.role.get_ref().as_str() {
        "primary" => Role::Primary,
        "secondary" => Role::Secondary,
        other => {
            return Err(ctx.err(
                Some(f.role.span()),
                "failover.role",
                format!("`{other}` is not a role: use \"primary\" or \"secondary\""),
            ));
        }
    };
    let partner = match &f.partner {
        Some(p) => Some(socket_addr(ctx, p, "failover.partner")?),
        None => None,
    };
    if role == Role::Primary && partner.is_none() {
        return Err(ctx.err(
            Some(span),
            "failover.partner",
            "the primary connects to its secondary: set partner to the secondary's address, e.g. \"[2001:db8::2]:647\"",
        ));
    }
    let listen = match &f.listen {
        Some(l) => socket_addr(ctx, l, "failover.listen")?,
        None => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), FAILOVER_PORT),
    };
    let name = f.partner_name.get_ref();
    if rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return Err(ctx.err(
            Some(f.partner_name.span()),
            "failover.partner_name",
            format!("`{name}` is not a DNS name (the name in the partner's certificate)"),
        ));
    }
    let mclt_secs = f.mclt_secs.unwrap_or(3600);
    if mclt_secs == 0 {
        return Err(ctx.err(Some(span), "failover.mclt_secs", "must be greater than 0"));
    }
    let keepalive_secs = f.keepalive_secs.unwrap_or(5);
    if !(1..=3600).contains(&keepalive_secs) {
        return Err(ctx.err(
            Some(span),
            "failover.keepalive_secs",
            "must be between 1 and 3600",
        ));
    }
    let max_unacked = f.max_unacked.unwrap_or(4096);
    if max_unacked == 0 {
        return Err(ctx.err(Some(span), "failover.max_unacked", "must be at least 1"));
    }
    let relationship = f.relationship.unwrap_or_default();
    if relationship.len() > 1024 {
        return Err(ctx.err(
            Some(span),
            "failover.relationship",
            "longer than 1024 bytes",
        ));
    }
    Ok(FailoverConfig {
        role,
        relationship,
        partner,
        listen,
        partner_name: name.clone(),
        ca: f.ca,
        cert: f.cert,
        key: f.key,
        mclt_secs,
        keepalive_secs,
        auto_partner_down_secs: f.auto_partner_down_secs.filter(|s| *s > 0),
        startup_secs: f.startup_secs.unwrap_or(5),
        max_unacked,
        skew_max_secs: f.skew_max_secs.unwrap_or(5),
        reconnect_max_ms: f.reconnect_max_ms.unwrap_or(2000).max(100),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = parse("<embedded default>", EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.subnets.len(), 1);
        assert_eq!(c.server.listen[0].port(), DEFAULT_LOOPBACK_PORT);
        let pd = &c.subnets[0].pools[1];
        assert_eq!(pd.kind, ResourceKind::Prefix);
        assert_eq!(pd.count, 1 << 23);
        assert_eq!(
            pd.resource(1),
            "2001:db8:8000:100::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(pd.index_of("2001:db8:8000:100::".parse().unwrap()), Some(1));
        assert_eq!(pd.index_of("2001:db8:8000:101::".parse().unwrap()), None);
    }

    fn err(text: &str) -> ConfigError {
        parse("t.toml", text).unwrap_err()
    }

    const HEAD: &str = "[server]\nlisten=[\"[::1]:5547\"]\n";

    const SUBNET: &str =
        "[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{prefix=\"2001:db8::/64\"}]\n";

    fn failover_cfg(body: &str) -> Result<Config, ConfigError> {
        parse(
            "t.toml",
            &format!(
                "{HEAD}{SUBNET}[failover]\nca=\"ca.pem\"\ncert=\"a.pem\"\nkey=\"a.key\"\n{body}"
            ),
        )
    }

    #[test]
    fn failover_section_defaults_and_errors() {
        let c =
            failover_cfg("role=\"primary\"\npartner=\"2001:db8::b\"\npartner_name=\"tandem-b\"\n")
                .unwrap();
        let f = c.failover.unwrap();
        assert_eq!(f.role, Role::Primary);
        assert_eq!(
            f.partner,
            Some("[2001:db8::b]:647".parse().unwrap()),
            "a bare address takes port 647"
        );
        assert_eq!(
            (f.mclt_secs, f.keepalive_secs, f.max_unacked),
            (3600, 5, 4096)
        );
        assert_eq!(f.auto_partner_down_secs, None);
        assert_eq!(
            c.server.control_socket_path(),
            c.server.data_dir.join("control.sock")
        );

        let e = failover_cfg("role=\"primary\"\npartner_name=\"tandem-b\"\n").unwrap_err();
        assert_eq!(e.field, "failover.partner");
        let e = failover_cfg("role=\"leader\"\npartner_name=\"tandem-b\"\n").unwrap_err();
        assert_eq!(e.field, "failover.role");
        assert!(e.message.contains("leader"), "{e}");
        assert!(e.line.is_some());
        let e = failover_cfg("role=\"secondary\"\npartner_name=\"2001:db8::a\"\n").unwrap_err();
        assert_eq!(e.field, "failover.partner_name");
        let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nmclt_secs=0\n").unwrap_err();
        assert_eq!(e.field, "failover.mclt_secs");
        let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nlisten=\"nowhere\"\n")
            .unwrap_err();
        assert_eq!(e.field, "failover.listen");
        let e = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\nmclt=5\n").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        let s = failover_cfg("role=\"secondary\"\npartner_name=\"a\"\n").unwrap();
        assert_eq!(
            s.failover.unwrap().listen,
            "[::]:647".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn overlap_names_both_pools_and_line() {
        let e = err(&format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{range=\"2001:db8::10-2001:db8::20\"}},\n {{range=\"2001:db8::20-2001:db8::30\"}}]\n"
        ));
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.to_string().contains("overlaps subnet[0].pools[0]"), "{e}");
    }

    #[test]
    fn prefix_longer_than_delegated_len_is_refused() {
        let e = err(&format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npd_pools=[{{prefix=\"2001:db8:1::/60\", delegated_len=56}}]\n"
        ));
        assert!(e.field.ends_with("delegated_len"), "{e}");
        assert_eq!(e.line, Some(6));
    }

    #[test]
    fn unknown_field_and_bad_types_name_the_line() {
        let e = err(&format!("{HEAD}bogus = 1\n"));
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = err(
            "[server]\nlisten=[\"nope\"]\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{prefix=\"2001:db8::/64\"}]\n",
        );
        assert_eq!(e.field, "server.listen[0]");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn pool_outside_subnet_and_host_bits() {
        let e = err(&format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db9::/64\"}}]\n"
        ));
        assert!(e.message.contains("not all inside"), "{e}");
        let e = err(&format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::1/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n"
        ));
        assert!(e.message.contains("host bits"), "{e}");
    }

    #[test]
    fn duplicate_subnet_id_and_bad_lifetimes() {
        let e = err(&format!(
            "{HEAD}[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n[[subnet]]\nid=1\nprefix=\"2001:db8:1::/64\"\npools=[{{prefix=\"2001:db8:1::/64\"}}]\n"
        ));
        assert!(e.message.contains("already used"), "{e}");
        let e = err(&format!(
            "{HEAD}[lease]\npreferred_lifetime_secs=100\nvalid_lifetime_secs=50\n[[subnet]]\nid=1\nprefix=\"2001:db8::/64\"\npools=[{{prefix=\"2001:db8::/64\"}}]\n"
        ));
        assert!(e.message.contains("longer than valid"), "{e}");
    }

    #[test]
    fn no_subnet_is_an_error() {
        let e = err(HEAD);
        assert_eq!(e.field, "subnet");
    }
}
