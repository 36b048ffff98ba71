//! The pools the tests configure and the lease store as `tandem leases` lists it.

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::TANDEM;

/// One subnet's pools, as configured and as checked.
#[derive(Clone, Copy, Debug)]
pub struct Pools {
    pub subnet: u32,
    pub prefix: (Ipv6Addr, u8),
    pub na_first: Ipv6Addr,
    pub na_last: Ipv6Addr,
    pub pd: (Ipv6Addr, u8),
    pub delegated: u8,
}

/// The subnet of directly attached clients (the veth link has 2001:db8:1::/64).
pub const LINK1: Pools = Pools {
    subnet: 1,
    prefix: (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
    na_first: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0),
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0xffff),
    pd: (Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 0), 40),
    delegated: 56,
};

/// The subnet perfdhcp's simulated relay sits on (its link-address is in 2001:db8:2::/64).
pub const LINK2: Pools = Pools {
    subnet: 2,
    prefix: (Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0), 64),
    na_first: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 2, 0),
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 2, 0xffff),
    pd: (Ipv6Addr::new(0x2001, 0xdb8, 0x9000, 0, 0, 0, 0, 0), 40),
    delegated: 56,
};

pub fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Pools {
    pub fn has_addr(&self, a: Ipv6Addr) -> bool {
        (u128::from(self.na_first)..=u128::from(self.na_last)).contains(&u128::from(a))
    }

    /// A delegated prefix of this pool: the delegated length, inside the pool, no host bits.
    pub fn has_prefix(&self, p: Ipv6Addr, len: u8) -> bool {
        let (pool, plen) = self.pd;
        let v = u128::from(p);
        len == self.delegated && v & mask(plen) == u128::from(pool) && v & !mask(len) == 0
    }

    /// The `[[subnet]]` block; `interface` ties it to directly attached clients of one link.
    pub fn toml(&self, interface: Option<&str>) -> String {
        let iface = interface
            .map(|i| format!("interface = \"{i}\"\n"))
            .unwrap_or_default();
        format!(
            "[[subnet]]\nid = {}\nprefix = \"{}/{}\"\n{iface}pools = [{{ range = \"{}-{}\" }}]\n\
             pd_pools = [{{ prefix = \"{}/{}\", delegated_len = {} }}]\n",
            self.subnet,
            self.prefix.0,
            self.prefix.1,
            self.na_first,
            self.na_last,
            self.pd.0,
            self.pd.1,
            self.delegated
        )
    }
}

/// Lifetimes used by the namespace tests: preferred 20 s, valid 40 s, T1 5 s, T2 8 s.
pub const LEASE_TOML: &str =
    "[lease]\npreferred_lifetime_secs = 20\nvalid_lifetime_secs = 40\nt1_secs = 5\nt2_secs = 8\n";

/// A config serving multicast on `iface` (port 547).
pub fn netns_config(data: &Path, iface: &str, subnets: &[(Pools, Option<&str>)]) -> String {
    let mut c = format!(
        "[server]\ndata_dir = \"{}\"\ninterfaces = [\"{iface}\"]\nrapid_commit = true\n{LEASE_TOML}",
        data.display()
    );
    for (p, i) in subnets {
        c.push_str(&p.toml(*i));
    }
    c
}

/// One line of `tandem leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub kind: String,
    pub addr: Ipv6Addr,
    pub len: u8,
    pub state: String,
    pub duid: String,
    pub iaid: u32,
    pub subnet: u32,
    pub expires: u64,
    pub cltt: u64,
    pub seq: u64,
    /// What the relays said (`relay=…,remote_id=…`), `-` if the client came directly.
    pub relay: String,
}

pub fn parse_row(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 10 {
        return None;
    }
    let (addr, len) = f[1].split_once('/')?;
    Some(Row {
        kind: f[0].to_string(),
        addr: addr.parse().ok()?,
        len: len.parse().ok()?,
        state: f[2].to_string(),
        duid: f[3].to_string(),
        iaid: f[4].parse().ok()?,
        subnet: f[5].parse().ok()?,
        expires: f[6].parse().ok()?,
        cltt: f[7].parse().ok()?,
        seq: f[8].parse().ok()?,
        relay: f[9].to_string(),
    })
}

/// Every lease in the store, read with `tandem leases` (read-only, fine beside a running
/// server).
pub fn store_rows(data: &Path) -> Vec<Row> {
    let out = Command::new(TANDEM)
        .args(["leases", "--data-dir"])
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run tandem leases");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tandem leases --data-dir {} failed ({}): {}",
        data.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_row(l).unwrap_or_else(|| panic!("unparsable `tandem leases` line: {l:?}")))
        .collect()
}
