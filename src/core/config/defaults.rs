//! One home for the configuration's defaults and limits: what a field is when the file does
//! not set it, and the bounds validation holds it to. `docs/operations.md` lists the same.

/// The standard DHCPv6 server port (RFC 8415 §7.2), for `server.port`.
pub const DHCP6_SERVER_PORT: u16 = 547;
/// The unprivileged port the embedded default listens on.
pub const LOOPBACK_PORT: u16 = 5547;
/// `server.data_dir`.
pub const DATA_DIR: &str = "./tandem-data";
/// `server.log_level`.
pub const LOG_LEVEL: &str = "info";
/// `server.offer_hold_secs`: how long a Solicit's offer is held.
pub const OFFER_HOLD_SECS: u32 = 60;
/// `server.decline_hold_secs`: how long a declined address is kept out of use.
pub const DECLINE_HOLD_SECS: u32 = 86_400;
/// `server.keep_ended_secs`: how long the record of an ended lease is kept (one day).
pub const KEEP_ENDED_SECS: u64 = 86_400;
/// `server.reclaim_interval_ms`.
pub const RECLAIM_INTERVAL_MS: u64 = 1000;
/// Shortest `server.reclaim_interval_ms` taken; smaller values are raised to it.
pub const RECLAIM_INTERVAL_MS_MIN: u64 = 10;
/// `server.map_size_mib`: the most the LMDB database may grow to.
pub const MAP_SIZE_MIB: usize = 4096;
/// Smallest `server.map_size_mib` accepted.
pub const MAP_SIZE_MIB_MIN: usize = 16;
/// `server.commit_interval_us`: at most 200 group commits (fsyncs) a second. Under a steady
/// load a commit then holds the changes of 5 ms, not of one fsync's time: fewer, larger
/// commits for less CPU per exchange (27 % less at 20,000 exchanges/s on AF_XDP,
/// `docs/performance.md`); a Reply waits at most this much longer.
pub const COMMIT_INTERVAL_US: u64 = 5_000;
/// Largest `server.commit_interval_us` accepted: a client retransmits after 1 s (RFC 8415
/// §7.6, REQ_TIMEOUT), and a Reply should reach it long before.
pub const COMMIT_INTERVAL_US_MAX: u64 = 100_000;

/// `leasequery.bulk_connections_max`: Bulk Leasequery connections served at once
/// (RFC 5460 §5.6 BULK_LQ_MAX_CONNS).
pub const BULK_LQ_CONNECTIONS_MAX: u32 = 10;
/// The most `leasequery.bulk_connections_max` may be set to (one thread each).
pub const BULK_LQ_CONNECTIONS_LIMIT: u32 = 256;

/// `lease.preferred_lifetime_secs`.
pub const PREFERRED_LIFETIME_SECS: u32 = 3600;
/// `lease.valid_lifetime_secs`.
pub const VALID_LIFETIME_SECS: u32 = 7200;

/// `failover.mclt_secs`: maximum client lead time.
pub const MCLT_SECS: u64 = 3600;
/// `failover.keepalive_secs`: the link is dropped after this long without a message.
pub const KEEPALIVE_SECS: u64 = 5;
/// Largest `failover.keepalive_secs` accepted.
pub const KEEPALIVE_SECS_MAX: u64 = 3600;
/// `failover.max_unacked`: binding updates we take unacknowledged (announced in CONNECT).
pub const MAX_UNACKED: u32 = 4096;
/// `failover.startup_secs`: how long STARTUP waits for the partner.
pub const STARTUP_SECS: u64 = 5;
/// `failover.skew_max_secs`: largest clock difference accepted in CONNECT (RFC 8156 §6.1.2).
pub const SKEW_MAX_SECS: u64 = 5;
/// Largest `failover.skew_max_secs` accepted: the partners' times within it count as equal
/// when their updates cross, so a larger one would hold released leases and refuse the
/// partner's expiries for as long (Kea's HA gives up at a 60 s skew too).
pub const SKEW_MAX_SECS_MAX: u64 = 60;
/// Shortest valid lifetime a subnet may have under failover (RFC 8156 §1).
pub const FAILOVER_VALID_LIFETIME_MIN_SECS: u64 = 30;
/// `failover.mclt_secs` below this is accepted (tests use a few seconds) but logged at start:
/// a client's first lease lasts at most MCLT.
pub const MCLT_SECS_ADVISED_MIN: u64 = 30;
/// `failover.pd_backup_percent`: the secondary's share of each prefix pool's free prefixes.
pub const PD_BACKUP_PERCENT: u8 = 10;
/// `failover.reconnect_max_ms`: longest wait between reconnection attempts.
pub const RECONNECT_MAX_MS: u64 = 2000;
/// First reconnection delay (it doubles up to `failover.reconnect_max_ms`), and the smallest
/// `reconnect_max_ms` taken.
pub const RECONNECT_MIN_MS: u64 = 100;
/// Longest relationship name with several `[[failover]]` sections: it is part of LMDB keys
/// (at most 511 bytes each).
pub const RELATIONSHIP_NAME_LEN_MAX_SEVERAL: usize = 255;
/// Longest `failover.relationship` name, bytes of UTF-8, so a CONNECT always fits one frame.
pub const RELATIONSHIP_NAME_LEN_MAX: usize = 1024;

/// Smallest `information_refresh_secs` (RFC 8415 §21.23: IRT_MINIMUM).
pub const INFORMATION_REFRESH_SECS_MIN: u32 = 600;
/// Range of `sol_max_rt_secs` and `inf_max_rt_secs` (RFC 8415 §21.24, §21.25).
pub const MAX_RT_SECS_MIN: u32 = 60;
/// See [`MAX_RT_SECS_MIN`].
pub const MAX_RT_SECS_MAX: u32 = 86_400;
/// Most bytes of configured options one reply may carry (all levels together). With the
/// identifiers and a few IAs, a reply then still fits the IPv6 minimum MTU (1280 bytes) and is
/// never fragmented; a configuration that could exceed it is refused at load.
pub const REPLY_OPTIONS_BYTES_MAX: usize = 1024;

/// IAs answered per message (`limits.ias_per_message_max`): a home router asks for one IA_NA
/// and one IA_PD; more than a few from one message is a way to drain pools.
pub const IAS_PER_MESSAGE_MAX: u16 = 4;
/// The most `limits.ias_per_message_max` may be (the engine's fixed bound).
pub const IAS_PER_MESSAGE_CEILING: u16 = 16;
/// Messages per second one client DUID may send (`limits.client_rate_per_sec`): a client
/// retransmitting at RFC 8415's fastest sends about 1 a second per exchange.
pub const CLIENT_RATE_PER_SEC: u32 = 10;
/// Messages a client may send at once beyond its rate (`limits.client_burst`).
pub const CLIENT_BURST: u32 = 20;
