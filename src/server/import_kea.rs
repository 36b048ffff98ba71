//! `tandem import-kea`: the leases of an ISC Kea DHCPv6 server, from its memfile
//! (`leases6.csv`), into Tandem's store, so that a customer moving from Kea keeps every client's
//! address and prefix.
//!
//! The file is Kea's append-only log: a header naming the columns, then one line per lease
//! change, a later line for an address superseding earlier ones. Columns are found by name
//! (`address`, `duid`, `valid_lifetime`, `expire`, `pref_lifetime`, `lease_type`, `iaid`,
//! `prefix_len`, `state`; the others are ignored), so the files of Kea 1.x to 2.x all read.
//! Each lease is placed by its address in the configured pool of its kind and length (Kea's
//! subnet ids are not used); what fits no pool is refused with its line number.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use tandem_core::config::{Config, ResourceKind};
use tandem_core::lease::{Lease, LeaseState};

/// A lease line that cannot be imported, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Line in the file.
    pub line: usize,
    /// Why.
    pub why: String,
}

/// What a file holds, ready to store.
#[derive(Debug, Default)]
pub struct Plan {
    /// The leases to store, one per resource (the last line for it wins).
    pub leases: Vec<Lease>,
    /// Lines refused.
    pub refused: Vec<Refusal>,
    /// Lines read (not counting the header).
    pub lines: usize,
}

const REQUIRED: [&str; 8] = [
    "address",
    "duid",
    "valid_lifetime",
    "expire",
    "pref_lifetime",
    "lease_type",
    "iaid",
    "prefix_len",
];

/// Reads `text` (a leases6.csv) against `cfg`'s pools. `now` decides which active leases have
/// run out (imported expired: still remembered for their client). Sequence numbers start at
/// `first_seq`. A header that lacks a required column is an error for the whole file.
pub fn plan(text: &str, cfg: &Config, now: u64, first_seq: u64) -> Result<Plan, String> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or("the file is empty (no header line)")?;
    let cols: HashMap<&str, usize> = header
        .split(',')
        .enumerate()
        .map(|(i, c)| (c.trim(), i))
        .collect();
    for c in REQUIRED {
        if !cols.contains_key(c) {
            return Err(format!(
                "line 1: no `{c}` column; is this a Kea DHCPv6 leases6.csv? (header: {header})"
            ));
        }
    }
    let mut plan = Plan::default();
    // The last line for each resource wins, as in Kea's own reading of the file.
    let mut latest: BTreeMap<(u8, u128), (usize, Lease)> = BTreeMap::new();
    for (i, raw) in lines {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        plan.lines += 1;
        let f: Vec<&str> = raw.split(',').collect();
        match lease_of(&f, &cols, cfg, now) {
            Ok(l) => {
                latest.insert((l.prefix_len, u128::from(l.addr)), (line, l));
            }
            Err(why) => plan.refused.push(Refusal { line, why }),
        }
    }
    // A client IA may have run-out leases beside its active one (Kea keeps several per IA):
    // only the active one is imported, so that the client's next Solicit finds it.
    let active: std::collections::HashSet<(Vec<u8>, u32, u8)> = latest
        .values()
        .filter(|(_, l)| l.state == LeaseState::Active)
        .map(|(_, l)| (l.duid.to_vec(), l.iaid, l.kind.code()))
        .collect();
    let latest: Vec<(usize, Lease)> = latest
        .into_values()
        .filter(|(_, l)| {
            l.state == LeaseState::Active
                || !active.contains(&(l.duid.to_vec(), l.iaid, l.kind.code()))
        })
        .collect();
    for (seq, (_, mut l)) in (first_seq..).zip(latest) {
        l.seq = seq;
        plan.leases.push(l);
    }
    Ok(plan)
}

fn lease_of(
    f: &[&str],
    cols: &HashMap<&str, usize>,
    cfg: &Config,
    now: u64,
) -> Result<Lease, String> {
    let get = |name: &str| -> Result<&str, String> {
        f.get(cols[name])
            .map(|s| s.trim())
            .ok_or_else(|| format!("no `{name}` field (the line has {} fields)", f.len()))
    };
    let num = |name: &str| -> Result<u64, String> {
        let v = get(name)?;
        v.parse::<u64>()
            .map_err(|_| format!("`{name}` is `{v}`, not a number"))
    };
    let addr: Ipv6Addr = get("address")?
        .parse()
        .map_err(|_| format!("`{}` is not an IPv6 address", f[cols["address"]]))?;
    let kind = match get("lease_type")? {
        "0" | "IA_NA" => ResourceKind::Address,
        "2" | "IA_PD" => ResourceKind::Prefix,
        "1" | "IA_TA" => return Err("temporary addresses (IA_TA) are not supported".into()),
        other => return Err(format!("unknown lease_type `{other}`")),
    };
    let prefix_len = match kind {
        ResourceKind::Address => 128,
        ResourceKind::Prefix => {
            let l = num("prefix_len")?;
            u8::try_from(l)
                .ok()
                .filter(|l| (1..=128).contains(l))
                .ok_or_else(|| format!("prefix_len {l} is not 1 to 128"))?
        }
    };
    let duid = tandem_core::config::parse_hex(get("duid")?).map_err(|e| format!("duid {e}"))?;
    if duid.is_empty() {
        return Err("empty DUID".into());
    }
    let iaid = u32::try_from(num("iaid")?).map_err(|_| "iaid above 2^32".to_string())?;
    let valid = u32::try_from(num("valid_lifetime")?).unwrap_or(u32::MAX);
    let preferred = u32::try_from(num("pref_lifetime")?).unwrap_or(u32::MAX);
    let expire = num("expire")?;
    let state_code = match cols.get("state") {
        Some(_) => get("state")?,
        None => "0",
    };
    let state = match state_code {
        "0" if expire > now => LeaseState::Active,
        "0" | "2" => LeaseState::Expired,
        "1" => LeaseState::Declined,
        other => return Err(format!("unknown state `{other}`")),
    };
    // The pool that holds it decides the subnet.
    let subnet = cfg
        .subnets
        .iter()
        .find(|s| {
            s.pools.iter().any(|p| {
                p.kind == kind
                    && p.resource_len == prefix_len
                    && p.index_of(addr).is_some_and(|i| p.resource(i) == addr)
            })
        })
        .ok_or_else(|| {
            format!(
                "{addr}/{prefix_len} ({}) is in no configured pool of that kind and length",
                match kind {
                    ResourceKind::Address => "address",
                    ResourceKind::Prefix => "prefix",
                }
            )
        })?;
    Ok(Lease {
        kind,
        addr,
        prefix_len,
        subnet_id: subnet.id,
        state,
        duid: duid.into(),
        iaid,
        preferred_secs: preferred.min(valid),
        valid_secs: valid,
        cltt: expire.saturating_sub(valid as u64),
        expires_at: expire,
        seq: 0,
        partner_ack_until: 0,
        partner_lifetime_received: 0,
        relay: Default::default(),
        partner_seq: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[server]
listen = ["[::1]:5547"]
[[subnet]]
id = 7
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::100-2001:db8:1::1ff" }]
pd_pools = [{ prefix = "2001:db8:8000::/40", delegated_len = 56 }]
"#;

    const HEADER: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source";

    #[test]
    fn reads_kea_lines_the_last_one_for_a_resource_winning() {
        let cfg = tandem_core::config::parse("t", CFG).unwrap();
        let text = format!(
            "{HEADER}\n\
             2001:db8:1::100,00:03:00:01:aa:bb:cc:dd:ee:01,4000,2000,1,3000,0,1,128,0,0,,aa:bb:cc:dd:ee:01,0,,1,0\n\
             2001:db8:8000:100::,00:03:00:01:aa:bb:cc:dd:ee:01,4000,2000,1,3000,2,2,56,0,0,,,0,,1,0\n\
             2001:db8:1::100,00:03:00:01:aa:bb:cc:dd:ee:01,4000,5000,1,3000,0,1,128,0,0,,,0,,1,0\n\
             2001:db8:1::101,00:03:00:01:aa:bb:cc:dd:ee:02,4000,900,1,3000,0,1,128,0,0,,,1,,1,0\n\
             2001:db8:9::1,00:03:00:01:aa:bb:cc:dd:ee:03,4000,5000,1,3000,0,1,128,0,0,,,0,,1,0\n\
             2001:db8:8000:200::,00:03:00:01:aa:bb:cc:dd:ee:04,4000,5000,1,3000,2,2,64,0,0,,,0,,1,0\n\
             2001:db8:1::102,00:03,4000,5000,1,3000,1,1,128,0,0,,,0,,1,0\n"
        );
        let p = plan(&text, &cfg, 3000, 10).unwrap();
        assert_eq!(p.lines, 7);
        let refused: Vec<usize> = p.refused.iter().map(|r| r.line).collect();
        assert_eq!(refused, vec![6, 7, 8], "{:?}", p.refused);
        assert!(p.refused[0].why.contains("no configured pool"));
        assert!(
            p.refused[1].why.contains("/64"),
            "a /64 is not one of the pool's /56s"
        );
        assert!(p.refused[2].why.contains("IA_TA"));
        assert_eq!(p.leases.len(), 3);
        let a = p
            .leases
            .iter()
            .find(|l| l.addr == "2001:db8:1::100".parse::<Ipv6Addr>().unwrap())
            .unwrap();
        // The later line (expire 5000) wins; cltt = expire - valid.
        assert_eq!(
            (a.state, a.expires_at, a.cltt, a.subnet_id, a.iaid),
            (LeaseState::Active, 5000, 1000, 7, 1)
        );
        assert_eq!(&a.duid[..], &[0, 3, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1]);
        let pd = p
            .leases
            .iter()
            .find(|l| l.kind == ResourceKind::Prefix)
            .unwrap();
        assert_eq!(
            (pd.prefix_len, pd.state),
            (56, LeaseState::Expired),
            "expire 2000 < now 3000"
        );
        let declined = p
            .leases
            .iter()
            .find(|l| l.addr == "2001:db8:1::101".parse::<Ipv6Addr>().unwrap())
            .unwrap();
        assert_eq!(declined.state, LeaseState::Declined);
        let seqs: Vec<u64> = p.leases.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![10, 11, 12]);
    }

    #[test]
    fn a_run_out_lease_beside_the_same_ias_active_one_is_left_out() {
        let cfg = tandem_core::config::parse("t", CFG).unwrap();
        let text = format!(
            "{HEADER}\n\
             2001:db8:1::1ff,00:03:00:01:aa:bb:cc:dd:ee:01,4000,2000,1,3000,0,1,128,0,0,,,2,,1,0\n\
             2001:db8:1::100,00:03:00:01:aa:bb:cc:dd:ee:01,4000,9000,1,3000,0,1,128,0,0,,,0,,1,0\n\
             2001:db8:1::1fe,00:03:00:01:aa:bb:cc:dd:ee:02,4000,2000,1,3000,0,1,128,0,0,,,2,,1,0\n"
        );
        let p = plan(&text, &cfg, 3000, 1).unwrap();
        let kept: Vec<String> = p.leases.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(
            kept,
            vec!["2001:db8:1::100", "2001:db8:1::1fe"],
            "{:?}",
            p.leases
        );
    }

    #[test]
    fn a_file_without_kea_columns_is_refused_whole() {
        let cfg = tandem_core::config::parse("t", CFG).unwrap();
        let e = plan("address,hwaddr\n2001:db8:1::100,aa\n", &cfg, 0, 1).unwrap_err();
        assert!(e.contains("no `duid` column"), "{e}");
        assert!(plan("", &cfg, 0, 1).is_err());
    }
}
