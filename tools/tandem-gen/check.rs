//! What tandem-gen checks while it runs: no address or prefix held by two clients at once
//! (across every thread and every server it talks to), and every lease inside the expected pools.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards of the lease registry.
pub const REGISTRY_SHARDS: usize = 64;
/// Violations kept with their text (all are counted).
pub const VIOLATIONS_KEPT_MAX: usize = 100;

/// Who holds which address (kind 0) or prefix (kind 1) right now, by client number.
pub struct Registry {
    shards: Vec<Mutex<HashMap<(u8, u128), u32>>>,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            violations: Mutex::new(Vec::new()),
            violation_count: AtomicU64::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, kind: u8, addr: Ipv6Addr) -> &Mutex<HashMap<(u8, u128), u32>> {
        let a = u128::from(addr);
        let h = (a ^ (a >> 64)) as u64 ^ kind as u64;
        &self.shards[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % REGISTRY_SHARDS]
    }

    /// Records a violation.
    pub fn violation(&self, text: String) {
        self.violation_count.fetch_add(1, Ordering::Relaxed);
        let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < VIOLATIONS_KEPT_MAX {
            v.push(text);
        }
    }

    /// `client` now holds `addr`; a violation if another client holds it.
    pub fn claim(&self, kind: u8, addr: Ipv6Addr, client: u32) {
        let mut m = self
            .shard(kind, addr)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match m.insert((kind, u128::from(addr)), client) {
            Some(other) if other != client => {
                drop(m);
                let what = if kind == 0 { "address" } else { "prefix" };
                self.violation(format!(
                    "{what} {addr} handed to client {client} while client {other} holds it"
                ));
            }
            _ => {}
        }
    }

    /// `client` gave `addr` up.
    pub fn release(&self, kind: u8, addr: Ipv6Addr, client: u32) {
        let mut m = self
            .shard(kind, addr)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if m.get(&(kind, u128::from(addr))) == Some(&client) {
            m.remove(&(kind, u128::from(addr)));
        }
    }

    /// Number of violations so far.
    pub fn violation_count(&self) -> u64 {
        self.violation_count.load(Ordering::Relaxed)
    }

    /// The first violations' texts.
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where leases may come from; empty lists mean "not checked".
#[derive(Debug, Clone, Default)]
pub struct Pools {
    /// Address ranges (first, last).
    pub addresses: Vec<(u128, u128)>,
    /// Prefix pools: (first, last, delegated length).
    pub prefixes: Vec<(u128, u128, u8)>,
}

impl Pools {
    /// From a Tandem configuration file.
    pub fn from_config(c: &tandem_core::config::Config) -> Pools {
        let mut p = Pools::default();
        for s in &c.subnets {
            for pool in &s.pools {
                match pool.kind {
                    tandem_core::config::ResourceKind::Address => {
                        p.addresses.push((pool.first, pool.last_addr()))
                    }
                    tandem_core::config::ResourceKind::Prefix => {
                        p.prefixes
                            .push((pool.first, pool.last_addr(), pool.resource_len))
                    }
                }
            }
        }
        p
    }

    /// Whether an address is inside an expected range (true when unchecked).
    pub fn address_ok(&self, a: Ipv6Addr) -> bool {
        let a = u128::from(a);
        self.addresses.is_empty() || self.addresses.iter().any(|(f, l)| a >= *f && a <= *l)
    }

    /// Whether a prefix is one of an expected pool's delegated prefixes (true when unchecked).
    pub fn prefix_ok(&self, p: Ipv6Addr, len: u8) -> bool {
        let a = u128::from(p);
        self.prefixes.is_empty()
            || self.prefixes.iter().any(|(f, l, dl)| {
                let host = if *dl >= 128 { 0 } else { u128::MAX >> dl };
                a >= *f && a <= *l && len == *dl && a & host == 0
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_flags_double_holding_only() {
        let r = Registry::default();
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        r.claim(0, a, 1);
        r.claim(0, a, 1);
        assert_eq!(r.violation_count(), 0);
        r.claim(1, a, 2); // a prefix with the same first address is another resource
        assert_eq!(r.violation_count(), 0);
        r.claim(0, a, 2);
        assert_eq!(r.violation_count(), 1);
        r.release(0, a, 2);
        r.claim(0, a, 3);
        assert_eq!(r.violation_count(), 1);
        assert!(r.violations()[0].contains("2001:db8::1"));
    }

    #[test]
    fn pool_checks() {
        let p = Pools {
            addresses: vec![(10, 20)],
            prefixes: vec![(0x100, 0x1ff, 120)],
        };
        assert!(p.address_ok(Ipv6Addr::from(15u128)));
        assert!(!p.address_ok(Ipv6Addr::from(21u128)));
        assert!(p.prefix_ok(Ipv6Addr::from(0x100u128), 120));
        assert!(!p.prefix_ok(Ipv6Addr::from(0x101u128), 120));
        assert!(!p.prefix_ok(Ipv6Addr::from(0x100u128), 64));
    }
}
