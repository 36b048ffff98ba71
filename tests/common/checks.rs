//! Assertions collected over a test and reported together.

use std::collections::{BTreeMap, BTreeSet};

use super::leases::{Pools, Row};

/// Failed checks, reported all at once so one bug does not hide the next. Failures of one
/// topic (the same check over many leases or clients) are reported as a count and examples.
#[derive(Default)]
pub struct Checks {
    /// (topic, message)
    fails: Vec<(String, String)>,
}

impl Checks {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            self.fails.push((m.clone(), m));
        }
    }

    /// A check repeated over many items; failures are grouped under `topic`.
    pub fn check_in(&mut self, topic: &str, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fails.push((topic.to_string(), msg()));
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        self.check(got == want, || {
            format!("{what}: got {got:?}, want {want:?}")
        });
    }

    /// Panics listing every failure, followed by the context (outputs, logs).
    pub fn finish(self, test: &str, context: &[(&str, String)]) {
        if self.fails.is_empty() {
            return;
        }
        let mut topics: Vec<(&str, Vec<&str>)> = Vec::new();
        for (t, m) in &self.fails {
            match topics.iter_mut().find(|(x, _)| x == t) {
                Some((_, v)) => v.push(m),
                None => topics.push((t, vec![m])),
            }
        }
        let mut m = format!("{test}: {} check(s) failed:\n", self.fails.len());
        for (t, ms) in &topics {
            if ms.len() == 1 {
                m.push_str(&format!("  - {}\n", ms[0]));
            } else {
                m.push_str(&format!("  - {t}: {} cases, e.g.\n", ms.len()));
                for x in ms.iter().take(3) {
                    m.push_str(&format!("      {x}\n"));
                }
            }
        }
        for (name, text) in context {
            m.push_str(&format!("---- {name} ----\n{text}\n"));
        }
        panic!("{m}");
    }
}

/// Store invariants that hold whatever the clients did: leases inside the pools of their
/// subnet, each (kind, address) once, at most one active lease per DUID+IAID and kind.
pub fn check_store_invariants(ck: &mut Checks, rows: &[Row], pools: &[Pools]) {
    let mut seen = BTreeSet::new();
    let mut holders: BTreeMap<(&str, &str, u32), usize> = BTreeMap::new();
    for r in rows {
        ck.check_in(
            "lease listed twice",
            seen.insert((r.kind.as_str(), r.addr)),
            || format!("store lists {} {} twice", r.kind, r.addr),
        );
        let Some(p) = pools.iter().find(|p| p.subnet == r.subnet) else {
            ck.check_in("lease in an unexpected subnet", false, || {
                format!("lease in unexpected subnet {}: {r:?}", r.subnet)
            });
            continue;
        };
        match r.kind.as_str() {
            "na" => ck.check_in(
                "address outside the pool",
                r.len == 128 && p.has_addr(r.addr),
                || {
                    format!(
                        "address {}/{} outside pool {}-{} of subnet {}",
                        r.addr, r.len, p.na_first, p.na_last, p.subnet
                    )
                },
            ),
            "pd" => ck.check_in(
                "prefix not a delegated prefix of the pool",
                p.has_prefix(r.addr, r.len),
                || {
                    format!(
                        "prefix {}/{} is not a /{} of pool {}/{} of subnet {}",
                        r.addr, r.len, p.delegated, p.pd.0, p.pd.1, p.subnet
                    )
                },
            ),
            k => ck.check_in("unknown lease kind", false, || {
                format!("unknown lease kind {k:?}: {r:?}")
            }),
        }
        ck.check_in(
            "unknown lease state",
            ["active", "expired", "released", "declined"].contains(&r.state.as_str()),
            || format!("unknown state: {r:?}"),
        );
        if r.state == "active" {
            *holders
                .entry((r.kind.as_str(), r.duid.as_str(), r.iaid))
                .or_default() += 1;
        }
    }
    for ((kind, duid, iaid), n) in holders {
        ck.check_in(
            "DUID+IAID with several active leases of one kind",
            n <= 1,
            || format!("DUID {duid} IAID {iaid} holds {n} active {kind} leases"),
        );
    }
}
