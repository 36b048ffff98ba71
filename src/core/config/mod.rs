//! Configuration: the TOML file format, the embedded default, and validation into the runtime
//! types the engine uses.
//!
//! Parsing keeps source spans (`toml::Spanned`) for every field that validation may reject, so
//! an error names the file, the line and the field, e.g.
//! `tandem.toml:14: subnet[0].pool[1].range: overlaps subnet[0].pool[0] (line 11)`.
//!
//! Files: this one holds the runtime model; `file` the TOML's serde structs, `validate` the
//! checks (one function per section), [`defaults`] every default and limit.

pub mod defaults;
mod file;
pub mod links;
mod options;
mod reservations;
#[cfg(test)]
mod tests;
mod validate;

pub use options::{OptionSet, hex as parse_hex};
pub use reservations::{KeyKind, Reservation, ReservationKey, Reservations};
pub use validate::{parse, parse_with};

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Options set on this pool itself (the subnet's apply underneath): for clients given a
    /// resource from it.
    pub options: OptionSet,
    /// Prefix pools: the part of every delegated prefix to exclude (RFC 6603), if any.
    pub excluded: Option<PdExclude>,
}

/// RFC 6603 Prefix Exclude for a prefix pool: in every delegated prefix, the sub-prefix of
/// length `len` numbered `subnet_id` (e.g. the first /64 of each /56, for the CE router's
/// link to the ISP) is not the client's to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdExclude {
    /// Length of the excluded prefix, longer than the delegated length.
    pub len: u8,
    /// Which sub-prefix of that length inside the delegated prefix.
    pub subnet_id: u64,
}

impl PdExclude {
    /// OPTION_PD_EXCLUDE's data for a prefix delegated with length `delegated_len`: the
    /// excluded length, then the subnet ID bits left-aligned in whole bytes (RFC 6603 §4.2).
    /// Returns the buffer and how many of its bytes are used.
    pub fn encode(&self, delegated_len: u8) -> ([u8; 17], usize) {
        let bits = u32::from(self.len.saturating_sub(delegated_len));
        let bytes = bits.div_ceil(8) as usize;
        let mut out = [0u8; 17];
        out[0] = self.len;
        // Left-align the `bits` subnet ID bits into `bytes` bytes.
        let value = u128::from(self.subnet_id) << (bytes as u32 * 8 - bits);
        let be = value.to_be_bytes();
        out[1..=bytes].copy_from_slice(&be[16 - bytes..]);
        (out, 1 + bytes)
    }
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
    /// More prefixes on the same link (a shared network): pools may lie in any of them, and
    /// they select this subnet as [`SubnetConfig::prefix`] does.
    pub extra_prefixes: Vec<Prefix>,
    /// Interface that directly attached clients of this subnet arrive on (none: any).
    pub interface: Option<String>,
    /// Address and prefix pools.
    pub pools: Vec<PoolConfig>,
    /// Lifetimes handed out in this subnet.
    pub lifetimes: Lifetimes,
    /// The options of this subnet's clients: the global ones with the subnet's laid on top.
    pub options: OptionSet,
    /// Addresses and prefixes kept for particular clients (inside this subnet's pools).
    pub reservations: Reservations,
    /// Interface-ID values of the relay closest to the client that select this subnet.
    pub relay_interface_ids: Vec<Box<[u8]>>,
    /// Relay addresses that select this subnet: the closest relay's link-address, or, when
    /// that is zero, the address the relayed message came from.
    pub relay_addresses: Vec<Ipv6Addr>,
    /// Answer a Solicit carrying Rapid Commit with a Reply (the subnet's `rapid_commit`, else
    /// the server's).
    pub rapid_commit: bool,
}

impl SubnetConfig {
    /// Whether `addr` is on this subnet's link: inside its prefix or one of its extra ones.
    pub fn on_link(&self, addr: Ipv6Addr) -> bool {
        self.prefix.contains(addr) || self.extra_prefixes.iter().any(|p| p.contains(addr))
    }

    /// The subnet's prefixes: its prefix, then the extra ones.
    pub fn prefixes(&self) -> impl Iterator<Item = &Prefix> {
        std::iter::once(&self.prefix).chain(&self.extra_prefixes)
    }
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
    /// How long the record of a lease that ended (expired or released) is kept, in seconds,
    /// before it is deleted (0: kept for ever). Until then a returning client gets the same
    /// address or prefix back.
    pub keep_ended_secs: u64,
    /// How often expired leases are reclaimed, in milliseconds.
    pub reclaim_interval_ms: u64,
    /// LMDB map size in MiB (the most the database may grow to).
    pub map_size_mib: usize,
    /// Shortest time between the starts of two group commits (each one fsync), in
    /// microseconds: a change that arrives sooner after the last commit started waits for
    /// the next, with the others that arrive meanwhile (0: commit as soon as the last ends).
    pub commit_interval_us: u64,
    /// Unix socket for `tandem ctl`; `None` means `<data_dir>/control.sock`.
    pub control_socket: Option<PathBuf>,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None`: no listener.
    pub metrics_listen: Option<SocketAddr>,
    /// The server DUID to use instead of the one the store made (e.g. the DUID of the server
    /// this one replaces, so its clients' Renews addressed to it are answered).
    pub duid: Option<Vec<u8>>,
    /// Where to append the audit log (one JSON line per lease change); `None`: no audit log.
    pub audit_log: Option<PathBuf>,
}

impl ServerConfig {
    /// Where the control socket is: `control_socket`, else `<data_dir>/control.sock`.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("control.sock"))
    }
}

/// Our role in the relationship. The primary connects; in NORMAL it serves (hot standby).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Connects to the secondary; serves clients in NORMAL.
    Primary,
    /// Listens; in NORMAL answers only Renews addressed to it.
    Secondary,
}

/// One failover relationship: a `[failover]` section (or one of several `[[failover]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Primary (connects, serves in NORMAL) or secondary (listens, stands by).
    pub role: Role,
    /// Relationship name, the same on both partners ("" when not set; required, and unique,
    /// when the server has several relationships).
    pub relationship: String,
    /// Ids of the subnets whose pools this relationship shares with its partner, in the
    /// order of the configuration (every subnet when the server has one relationship).
    pub subnets: Vec<u32>,
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
    /// Largest accepted clock difference with the partner, seconds; also how close two times of
    /// the two servers must be to count as equal when their updates are compared.
    pub skew_max_secs: u64,
    /// Longest wait between reconnection attempts, milliseconds (it doubles from 100 ms).
    pub reconnect_max_ms: u64,
    /// Per prefix pool, the part of its free prefixes the primary keeps lent to the
    /// secondary (percent), for the secondary to delegate on its own while the two cannot
    /// talk; the primary rebalances toward it as prefixes are used and freed.
    pub pd_backup_percent: u8,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Server-wide settings.
    pub server: ServerConfig,
    /// Subnets with their pools.
    pub subnets: Vec<SubnetConfig>,
    /// The failover relationships: none for a server on its own, one per partner otherwise
    /// (m-to-1: each covers its own subnets, every subnet is covered by exactly one).
    pub relationships: Vec<FailoverConfig>,
    /// The global `[options]`: for an Information-request from a link no subnet covers.
    pub options: OptionSet,
    /// Leasequery (RFC 5007): who may ask.
    pub leasequery: LeasequeryConfig,
    /// Limits against abuse.
    pub limits: LimitsConfig,
}

/// `[limits]`: how much one client, one relay or one message may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// IAs (IA_NA and IA_PD together) answered per message; later ones are ignored.
    pub ias_per_message_max: u16,
    /// Messages per second one client DUID may send (token bucket; 0: no limit).
    pub client_rate_per_sec: u32,
    /// Messages a client may send at once beyond its rate.
    pub client_burst: u32,
    /// Messages per second from one source address: a relay agent, or a client on a directly
    /// attached link (0: no limit).
    pub source_rate_per_sec: u32,
    /// Messages one source may send at once beyond its rate.
    pub source_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ias_per_message_max: defaults::IAS_PER_MESSAGE_MAX,
            client_rate_per_sec: defaults::CLIENT_RATE_PER_SEC,
            client_burst: defaults::CLIENT_BURST,
            source_rate_per_sec: 0,
            source_burst: 0,
        }
    }
}

/// `[leasequery]`: who may ask this server about its bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasequeryConfig {
    /// Source prefixes allowed to send LEASEQUERY; everyone else is told NotAllowed. Empty:
    /// nobody (the default).
    pub requestors: Vec<Prefix>,
    /// TCP addresses where Bulk Leasequery (RFC 5460) is served; empty: not served (the
    /// default).
    pub bulk_listen: Vec<SocketAddrV6>,
    /// Bulk Leasequery connections served at once; more are closed at once.
    pub bulk_connections_max: u32,
}

impl Default for LeasequeryConfig {
    fn default() -> Self {
        LeasequeryConfig {
            requestors: Vec::new(),
            bulk_listen: Vec::new(),
            bulk_connections_max: defaults::BULK_LQ_CONNECTIONS_MAX,
        }
    }
}

impl LeasequeryConfig {
    /// Whether `addr` may send LEASEQUERY.
    pub fn allows(&self, addr: &Ipv6Addr) -> bool {
        self.requestors.iter().any(|p| p.contains(*addr))
    }
}

impl Config {
    /// Whether this server has a partner (at least one failover relationship).
    pub fn has_failover(&self) -> bool {
        !self.relationships.is_empty()
    }

    /// For each subnet (by index), the index of the relationship that covers it; empty for a
    /// server on its own.
    pub fn relationship_of_subnets(&self) -> Vec<usize> {
        if self.relationships.is_empty() {
            return Vec::new();
        }
        self.subnets
            .iter()
            .map(|s| {
                self.relationships
                    .iter()
                    .position(|r| r.subnets.contains(&s.id))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The configuration as relationship `i` sees it: only the subnets it covers, and only
    /// itself as relationship (what its CONNECT, pools digest and lifetimes are made of).
    pub fn relationship_view(&self, i: usize) -> Config {
        let r = &self.relationships[i];
        Config {
            subnets: self
                .subnets
                .iter()
                .filter(|s| r.subnets.contains(&s.id))
                .cloned()
                .collect(),
            relationships: vec![r.clone()],
            ..self.clone()
        }
    }

    /// The id of the subnet with a pool of `kind` holding `addr` (where a partner's binding
    /// belongs).
    pub fn subnet_of(&self, addr: Ipv6Addr, kind: ResourceKind) -> Option<u32> {
        self.subnets
            .iter()
            .find(|s| {
                s.pools
                    .iter()
                    .any(|p| p.kind == kind && p.index_of(addr).is_some())
            })
            .map(|s| s.id)
    }
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
