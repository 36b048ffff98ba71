//! The configuration file's format: serde structs mirroring the TOML, with spans for errors.

use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: FileServer,
    #[serde(default)]
    pub(super) lease: FileLease,
    #[serde(default)]
    pub(super) subnet: Vec<Spanned<FileSubnet>>,
    /// `[failover]` (one relationship) or `[[failover]]` (one per relationship, m-to-1).
    pub(super) failover: Option<FileFailovers>,
    #[serde(default)]
    pub(super) options: FileOptions,
    #[serde(default)]
    pub(super) leasequery: FileLeasequery,
    #[serde(default)]
    pub(super) limits: FileLimits,
}

/// `[limits]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    pub(super) ias_per_message_max: Option<Spanned<u16>>,
    pub(super) client_rate_per_sec: Option<u32>,
    pub(super) client_burst: Option<u32>,
    pub(super) source_rate_per_sec: Option<u32>,
    pub(super) source_burst: Option<u32>,
}

/// `[leasequery]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLeasequery {
    #[serde(default)]
    pub(super) requestors: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) bulk_listen: Vec<Spanned<String>>,
    pub(super) bulk_connections_max: Option<Spanned<u32>>,
}

/// An `options` table (global `[options]`, `[subnet.options]`, or `options = {...}` in a pool).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOptions {
    pub(super) dns_servers: Option<Spanned<Vec<String>>>,
    pub(super) domain_search: Option<Spanned<Vec<String>>>,
    pub(super) sntp_servers: Option<Spanned<Vec<String>>>,
    pub(super) ntp_servers: Option<Spanned<Vec<String>>>,
    pub(super) information_refresh_secs: Option<Spanned<u32>>,
    pub(super) sol_max_rt_secs: Option<Spanned<u32>>,
    pub(super) inf_max_rt_secs: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) vendor: Vec<Spanned<FileVendor>>,
    #[serde(default)]
    pub(super) custom: Vec<Spanned<FileCodedValue>>,
}

/// One Vendor-specific Information option: an enterprise number and its sub-options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileVendor {
    pub(super) enterprise: u32,
    #[serde(default)]
    pub(super) suboptions: Vec<Spanned<FileCodedValue>>,
}

/// A code with exactly one value representation (a custom option, or a vendor sub-option).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCodedValue {
    pub(super) code: u16,
    pub(super) hex: Option<String>,
    pub(super) text: Option<String>,
    pub(super) addresses: Option<Vec<String>>,
    pub(super) domains: Option<Vec<String>>,
    pub(super) u8: Option<u8>,
    pub(super) u16: Option<u16>,
    pub(super) u32: Option<u32>,
}

/// `failover`: one table (`[failover]`) or an array of them (`[[failover]]`).
pub(super) enum FileFailovers {
    One(Box<FileFailover>),
    Many(Vec<Spanned<FileFailover>>),
}

impl<'de> Deserialize<'de> for FileFailovers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FileFailovers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [failover] table or [[failover]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                FileFailover::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|f| FileFailovers::One(Box::new(f)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                s: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(s))
                    .map(FileFailovers::Many)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFailover {
    pub(super) role: Spanned<String>,
    pub(super) relationship: Option<String>,
    /// Ids of the subnets this relationship covers (all, when the only one and not set).
    pub(super) subnets: Option<Spanned<Vec<u32>>>,
    pub(super) partner: Option<Spanned<String>>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) partner_name: Spanned<String>,
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) mclt_secs: Option<u64>,
    pub(super) keepalive_secs: Option<u64>,
    pub(super) auto_partner_down_secs: Option<u64>,
    pub(super) startup_secs: Option<u64>,
    pub(super) max_unacked: Option<u32>,
    pub(super) skew_max_secs: Option<u64>,
    pub(super) reconnect_max_ms: Option<u64>,
    pub(super) pd_backup_percent: Option<u8>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServer {
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) interfaces: Vec<String>,
    pub(super) port: Option<u16>,
    pub(super) workers: Option<usize>,
    pub(super) log_level: Option<String>,
    pub(super) rapid_commit: Option<bool>,
    pub(super) preference: Option<u8>,
    pub(super) unicast_address: Option<Spanned<String>>,
    pub(super) sync: Option<bool>,
    pub(super) offer_hold_secs: Option<u32>,
    pub(super) decline_hold_secs: Option<u32>,
    pub(super) keep_ended_secs: Option<u64>,
    pub(super) reclaim_interval_ms: Option<u64>,
    pub(super) map_size_mib: Option<usize>,
    pub(super) commit_interval_us: Option<u64>,
    pub(super) control_socket: Option<PathBuf>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    pub(super) duid: Option<Spanned<String>>,
    pub(super) audit_log: Option<PathBuf>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLease {
    pub(super) preferred_lifetime_secs: Option<u32>,
    pub(super) valid_lifetime_secs: Option<u32>,
    pub(super) t1_secs: Option<u32>,
    pub(super) t2_secs: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSubnet {
    pub(super) id: Spanned<u32>,
    pub(super) prefix: Spanned<String>,
    #[serde(default)]
    pub(super) extra_prefixes: Vec<Spanned<String>>,
    pub(super) interface: Option<String>,
    #[serde(default)]
    pub(super) lease: Option<FileLease>,
    #[serde(default)]
    pub(super) pools: Vec<Spanned<FileAddrPool>>,
    #[serde(default)]
    pub(super) pd_pools: Vec<Spanned<FilePdPool>>,
    #[serde(default)]
    pub(super) options: FileOptions,
    #[serde(default)]
    pub(super) reservations: Vec<Spanned<FileReservation>>,
    pub(super) reservations_file: Option<Spanned<PathBuf>>,
    pub(super) relay: Option<Spanned<FileRelay>>,
    pub(super) rapid_commit: Option<bool>,
}

/// `relay = { ... }` in a subnet: what relays send that selects it, for relays whose
/// link-address is zero or outside the subnet's prefix.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRelay {
    #[serde(default)]
    pub(super) interface_ids: Vec<String>,
    #[serde(default)]
    pub(super) addresses: Vec<String>,
}

/// One reservation in the TOML: exactly one identifier, the resources, optional options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileReservation {
    pub(super) duid: Option<String>,
    pub(super) hw_address: Option<String>,
    pub(super) remote_id: Option<String>,
    pub(super) subscriber_id: Option<String>,
    pub(super) interface_id: Option<String>,
    #[serde(default)]
    pub(super) addresses: Vec<String>,
    #[serde(default)]
    pub(super) prefixes: Vec<String>,
    #[serde(default)]
    pub(super) options: FileOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAddrPool {
    pub(super) range: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) options: FileOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePdPool {
    pub(super) prefix: Spanned<String>,
    pub(super) delegated_len: Spanned<u8>,
    #[serde(default)]
    pub(super) options: FileOptions,
    pub(super) excluded_prefix_len: Option<Spanned<u8>>,
    pub(super) excluded_subnet_id: Option<Spanned<u64>>,
}
