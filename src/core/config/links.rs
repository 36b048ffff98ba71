//! Link selection's lookups without a scan of the subnets (RFC 8415 §13.1): which subnet a
//! link-address or source address is on, which one a relay address, an Interface-ID or a
//! receiving interface names. Built once per configuration; each answer is the first subnet in
//! configuration order that matches, exactly as a scan would give, so overlapping prefixes and
//! repeated names keep their meaning. An ISP's server may hold thousands of relayed links; a
//! scan cost thousands of comparisons per relayed message, this a hash probe per distinct
//! prefix length (typically one or two).

use super::{SubnetConfig, host_mask};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::Ipv6Addr;

type Map<K> = HashMap<K, usize, foldhash::fast::RandomState>;

/// The subnets of a configuration indexed by what selects them.
#[derive(Debug, Clone, Default)]
pub struct LinkIndex {
    /// For each distinct prefix length, the subnets by their masked prefix (the lowest index
    /// when several subnets hold the same prefix).
    by_prefix: Vec<(u8, Map<u128>)>,
    by_relay_address: Map<Ipv6Addr>,
    by_interface_id: Map<Box<[u8]>>,
    by_interface: Map<String>,
    /// The first subnet tied to no interface.
    untied: Option<usize>,
}

/// Keeps the lowest index per key: the first subnet in configuration order wins.
fn first<K: std::hash::Hash + Eq>(m: &mut Map<K>, k: K, i: usize) {
    if let Entry::Vacant(v) = m.entry(k) {
        v.insert(i);
    }
}

impl LinkIndex {
    /// The index of `subnets`.
    pub fn new(subnets: &[SubnetConfig]) -> LinkIndex {
        let mut ix = LinkIndex::default();
        for (i, s) in subnets.iter().enumerate() {
            for p in s.prefixes() {
                let slot = match ix.by_prefix.iter().position(|(len, _)| *len == p.len) {
                    Some(k) => k,
                    None => {
                        ix.by_prefix.push((p.len, Map::default()));
                        ix.by_prefix.len() - 1
                    }
                };
                first(&mut ix.by_prefix[slot].1, masked(p.addr, p.len), i);
            }
            for a in &s.relay_addresses {
                first(&mut ix.by_relay_address, *a, i);
            }
            for id in &s.relay_interface_ids {
                first(&mut ix.by_interface_id, id.clone(), i);
            }
            if let Some(name) = &s.interface {
                first(&mut ix.by_interface, name.clone(), i);
            } else if ix.untied.is_none() {
                ix.untied = Some(i);
            }
        }
        ix
    }

    /// The first subnet `addr` is on (in its prefix or one of its extra ones).
    pub fn on_link(&self, addr: Ipv6Addr) -> Option<usize> {
        self.by_prefix
            .iter()
            .filter_map(|(len, m)| m.get(&masked(addr, *len)).copied())
            .min()
    }

    /// The first subnet listing `addr` in its relay addresses.
    pub fn relay_address(&self, addr: &Ipv6Addr) -> Option<usize> {
        self.by_relay_address.get(addr).copied()
    }

    /// The first subnet listing `id` in its relay Interface-IDs.
    pub fn interface_id(&self, id: &[u8]) -> Option<usize> {
        self.by_interface_id.get(id).copied()
    }

    /// The first subnet tied to interface `name`.
    pub fn interface(&self, name: &str) -> Option<usize> {
        self.by_interface.get(name).copied()
    }

    /// The first subnet tied to no interface.
    pub fn untied(&self) -> Option<usize> {
        self.untied
    }
}

/// `addr` with the host bits of a /`len` cleared, as an integer.
fn masked(addr: Ipv6Addr, len: u8) -> u128 {
    u128::from(addr) & !host_mask(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Lifetimes, Prefix};
    use proptest::prelude::*;

    /// A subnet with just what link selection reads.
    fn subnet(
        prefixes: Vec<Prefix>,
        relays: Vec<Ipv6Addr>,
        ids: Vec<Box<[u8]>>,
        interface: Option<String>,
    ) -> SubnetConfig {
        SubnetConfig {
            id: 1,
            prefix: prefixes[0],
            extra_prefixes: prefixes[1..].to_vec(),
            interface,
            pools: Vec::new(),
            lifetimes: Lifetimes {
                preferred_secs: 1,
                valid_secs: 2,
                t1_secs: 0,
                t2_secs: 0,
            },
            options: Default::default(),
            reservations: Default::default(),
            relay_interface_ids: ids,
            relay_addresses: relays,
            rapid_commit: false,
        }
    }

    /// Addresses from a small space (2001:db8::/120 with a few high bits varied), so prefixes,
    /// probes and relay addresses collide often.
    fn addr() -> impl Strategy<Value = Ipv6Addr> {
        (0u8..4, any::<u8>()).prop_map(|(hi, lo)| {
            Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0))
                    | (u128::from(hi) << 64)
                    | u128::from(lo),
            )
        })
    }

    fn prefix() -> impl Strategy<Value = Prefix> {
        (
            addr(),
            prop::sample::select(vec![62u8, 63, 64, 120, 124, 128]),
        )
            .prop_map(|(a, len)| Prefix {
                addr: Ipv6Addr::from(masked(a, len)),
                len,
            })
    }

    fn subnet_strategy() -> impl Strategy<Value = SubnetConfig> {
        (
            prop::collection::vec(prefix(), 1..3),
            prop::collection::vec(addr(), 0..3),
            prop::collection::vec(prop::collection::vec(0u8..3, 1..3), 0..2),
            prop::option::of(prop::sample::select(vec!["eth0", "eth1"])),
        )
            .prop_map(|(p, r, ids, i)| {
                subnet(
                    p,
                    r,
                    ids.into_iter().map(Vec::into_boxed_slice).collect(),
                    i.map(str::to_string),
                )
            })
    }

    proptest! {
        /// Every lookup gives what the scan it replaces gives: the first subnet in
        /// configuration order, or none.
        #[test]
        fn the_index_answers_as_the_scan_does(
            subnets in prop::collection::vec(subnet_strategy(), 0..12),
            probes in prop::collection::vec(addr(), 1..16),
            ids in prop::collection::vec(prop::collection::vec(0u8..3, 1..3), 1..4),
        ) {
            let ix = LinkIndex::new(&subnets);
            for a in &probes {
                let scan = subnets.iter().position(|s| s.prefixes().any(|p| p.contains(*a)));
                prop_assert_eq!(ix.on_link(*a), scan);
                prop_assert_eq!(ix.on_link(*a), subnets.iter().position(|s| s.on_link(*a)));
                prop_assert_eq!(
                    ix.relay_address(a),
                    subnets.iter().position(|s| s.relay_addresses.contains(a))
                );
            }
            for id in &ids {
                prop_assert_eq!(
                    ix.interface_id(id),
                    subnets.iter().position(|s| s.relay_interface_ids.iter().any(|i| **i == **id))
                );
            }
            for name in ["eth0", "eth1", "eth2"] {
                prop_assert_eq!(
                    ix.interface(name),
                    subnets.iter().position(|s| s.interface.as_deref() == Some(name))
                );
            }
            prop_assert_eq!(ix.untied(), subnets.iter().position(|s| s.interface.is_none()));
        }
    }
}
