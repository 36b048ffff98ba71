//! Live reload (SIGHUP, `tandem ctl reload`): the configuration file is read again and, when
//! only settings that can change under load differ, a new engine with the new configuration
//! replaces the old one between two receive batches. Nothing is dropped: a worker finishes its
//! batch with the engine it started it with, and the lease table, the store and the failover
//! state are the same objects before and after.
//!
//! What can change live: options (global, subnet, pool), `[limits]`, `[leasequery]`,
//! `rapid_commit` (server and subnets), `preference`, and `log_level`. Anything else (subnets,
//! pools, lifetimes, reservations, relay selectors, failover, listeners, data dir, ...) is
//! refused with the fields that differ, and the running configuration stays.
//!
//! With a partner, a link that is up stays up across a reload (a reload changes nothing the
//! partners must agree on for safety: pools, lifetimes and reservations cannot be reloaded);
//! the next CONNECT carries the digest of the configuration in force, so two partners that
//! differ in options then are told so (ConfigurationConflict, naming the difference) and
//! serve apart, each from its own half, until the other is reloaded too.

use std::sync::{Arc, Mutex, RwLock};
use tandem_core::config::Config;
use tandem_core::engine::Engine;
use tandem_core::pool::Allocator;
use tracing::{info, warn};

/// The engine workers use, swapped by a reload; read once per receive batch.
pub struct EngineCell(RwLock<Arc<Engine>>);

impl EngineCell {
    /// A cell holding `e`.
    pub fn new(e: Arc<Engine>) -> EngineCell {
        EngineCell(RwLock::new(e))
    }

    /// The current engine.
    pub fn get(&self) -> Arc<Engine> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, e: Arc<Engine>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Changes the log filter (tracing's reload handle, wrapped by the command line).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Everything a reload needs.
pub struct Reloader {
    /// Reads and validates the file (the embedded default when the server runs without one).
    read: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
    running: Mutex<Arc<Config>>,
    engines: Arc<EngineCell>,
    /// The lease table in force (a reload that adds pools replaces it).
    alloc: Mutex<Arc<Allocator>>,
    /// Where leases kept for pools a reload adds back are read from.
    store: std::sync::OnceLock<Arc<crate::store::Store>>,
    /// Told of a new lease table.
    hub: std::sync::OnceLock<Arc<super::metrics::MetricsHub>>,
    duid: Box<[u8]>,
    set_log_level: Option<SetLogLevel>,
    /// Files reopened at every reload (the audit log, for logrotate).
    reopen: Mutex<Vec<Arc<super::audit::AuditLog>>>,
}

impl Reloader {
    /// Reopens `log` at every reload, whatever the configuration says.
    pub fn reopen_on_reload(&self, log: Arc<super::audit::AuditLog>) {
        self.reopen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log);
    }

    /// A reloader for a server running `running` through `engines`.
    pub fn new(
        read: Box<dyn Fn() -> Result<Config, String> + Send + Sync>,
        running: Arc<Config>,
        engines: Arc<EngineCell>,
        alloc: Arc<Allocator>,
        duid: Box<[u8]>,
        set_log_level: Option<SetLogLevel>,
    ) -> Reloader {
        Reloader {
            read,
            running: Mutex::new(running),
            engines,
            alloc: Mutex::new(alloc),
            store: std::sync::OnceLock::new(),
            hub: std::sync::OnceLock::new(),
            duid,
            set_log_level,
            reopen: Mutex::new(Vec::new()),
        }
    }

    /// The store to read leases of added pools from, and the metrics to tell of a new table.
    pub fn keep_store_and_metrics(
        &self,
        store: Arc<crate::store::Store>,
        hub: Arc<super::metrics::MetricsHub>,
    ) {
        let _ = self.store.set(store);
        let _ = self.hub.set(hub);
    }

    /// The lease table in force.
    pub fn allocator(&self) -> Arc<Allocator> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The configuration in force.
    pub fn running(&self) -> Arc<Config> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file and says what a reload would do, applying nothing.
    pub fn check(&self) -> Result<String, String> {
        let new = (self.read)()?;
        let running = self.running();
        match live_changes(&running, &new)? {
            c if c.is_empty() => Ok("valid; same as the running configuration".to_string()),
            c => Ok(format!("valid; a reload would apply: {}", c.join(", "))),
        }
    }

    /// Reads the file again and applies it if only live settings changed. Returns what
    /// changed, or why nothing was applied. Logged either way.
    pub fn reload(&self) -> Result<String, String> {
        for log in self.reopen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Err(e) = log.reopen() {
                warn!(error = %e, "cannot reopen the audit log; still writing to the old file");
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let result = (self.read)().and_then(|new| {
            let changed = live_changes(&running, &new)?;
            if changed.is_empty() {
                return Ok("no change".to_string());
            }
            // Everything that can fail comes before anything is applied.
            let table = if new.has_failover() {
                // The pools and lifetimes are the partners' to agree on: unchanged here.
                None
            } else {
                Some(self.table_for(&new)?)
            };
            if new.server.log_level != running.server.log_level
                && let Some(set) = &self.set_log_level
            {
                set(&new.server.log_level).map_err(|e| format!("log_level: {e}"))?;
            }
            let reservations_changed = new.subnets.iter().any(|s| {
                running
                    .subnets
                    .iter()
                    .find(|o| o.id == s.id)
                    .is_some_and(|o| o.reservations != s.reservations)
            });
            let alloc = match table {
                Some(t) => {
                    // The reserved sets first, so nothing uses the new table with the old ones.
                    if reservations_changed {
                        t.set_reservations(&new.subnets);
                    }
                    self.publish_table(t)
                }
                None => self.allocator(),
            };
            let new = Arc::new(new);
            self.engines
                .set(Arc::new(Engine::new(new.clone(), self.duid.clone(), alloc)));
            *running = new;
            Ok(format!("applied: {}", changed.join(", ")))
        });
        match &result {
            Ok(what) => info!(result = %what, "configuration reloaded"),
            Err(why) => warn!(error = %why, "reload refused; the running configuration stays"),
        }
        result
    }
}

impl Reloader {
    /// The lease table for `new` (a server without a partner): the running one's pools,
    /// shared, with the pools `new` adds (and what the store kept for them). Nothing uses it
    /// until [`Reloader::publish_table`].
    fn table_for(&self, new: &Config) -> Result<Allocator, String> {
        let (alloc, added) = self.allocator().reconfigured(&new.subnets)?;
        if !added.is_empty()
            && let Some(store) = self.store.get()
        {
            // Leases kept on disk while their pool was not configured (no one else can touch
            // the added pools until the new engine is in force).
            let mut back = 0u64;
            store
                .load_leases(
                    |l| back += u64::from(alloc.restore_added(&added, l)),
                    |_, _| {},
                )
                .map_err(|e| format!("reading the store for the added pools: {e}"))?;
            alloc.finish_restore_added(&added);
            info!(
                pools = added.len(),
                leases = back,
                "pools added by the reload"
            );
        }
        Ok(alloc)
    }

    /// Makes `table` the one in force for the reclaimer, the control socket and the metrics
    /// (the workers' engine moves to it next).
    fn publish_table(&self, table: Allocator) -> Arc<Allocator> {
        let alloc = Arc::new(table);
        *self.alloc.lock().unwrap_or_else(|e| e.into_inner()) = alloc.clone();
        if let Some(hub) = self.hub.get() {
            hub.set_allocator(alloc.clone());
        }
        alloc
    }
}

/// The live settings that differ between `old` and `new`, or an error naming what differs
/// that cannot change without a restart.
pub fn live_changes(old: &Config, new: &Config) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    // `probe`: the new configuration with every live setting taken from the old one. If it
    // still differs, something that needs a restart changed.
    let mut probe = new.clone();
    if probe.options != old.options {
        changed.push("options".to_string());
    }
    probe.options = old.options.clone();
    if probe.limits != old.limits {
        changed.push("limits".to_string());
    }
    probe.limits = old.limits;
    if probe.leasequery.requestors != old.leasequery.requestors {
        changed.push("leasequery".to_string());
    }
    probe.leasequery.requestors = old.leasequery.requestors.clone();
    for (name, differs) in [
        ("log_level", probe.server.log_level != old.server.log_level),
        (
            "rapid_commit",
            probe.server.rapid_commit != old.server.rapid_commit,
        ),
        (
            "preference",
            probe.server.preference != old.server.preference,
        ),
    ] {
        if differs {
            changed.push(format!("server.{name}"));
        }
    }
    probe.server.log_level = old.server.log_level.clone();
    probe.server.rapid_commit = old.server.rapid_commit;
    probe.server.preference = old.server.preference;
    let mut refused = Vec::new();
    // Without a partner, subnets and pools may be added and lifetimes changed (the lease
    // table grows, `Allocator::reconfigured`); with one, the partners must agree on them.
    let standalone = !old.has_failover() && !new.has_failover();
    let same_list = probe.subnets.len() == old.subnets.len()
        && probe
            .subnets
            .iter()
            .zip(&old.subnets)
            .all(|(a, b)| a.id == b.id);
    if !standalone && !same_list {
        refused.push("the list of subnets (added, removed or renumbered)".to_string());
    } else {
        if standalone {
            // Directly attached clients on no known interface go to the first subnet tied to
            // no interface: a change of it would leave its clients' bindings behind.
            let fallback = |c: &Config| {
                c.subnets
                    .iter()
                    .find(|s| s.interface.is_none())
                    .map(|s| s.id)
            };
            if let (Some(was), Some(now)) = (fallback(old), fallback(&probe))
                && was != now
            {
                refused.push(format!(
                    "the subnet of directly attached clients (the first with no interface: {was}, now {now}; add new subnets after it)"
                ));
            }
            if let Some(gone) = old
                .subnets
                .iter()
                .find(|o| !probe.subnets.iter().any(|p| p.id == o.id))
            {
                refused.push(format!("subnet {} (removed)", gone.id));
            }
            for p in probe
                .subnets
                .iter()
                .filter(|p| !old.subnets.iter().any(|o| o.id == p.id))
            {
                changed.push(format!("subnet {} added", p.id));
            }
        }
        for p in probe.subnets.iter_mut() {
            let Some(o) = old.subnets.iter().find(|o| o.id == p.id) else {
                continue;
            };
            if p.options != o.options {
                changed.push(format!("subnet {} options", o.id));
            }
            p.options = o.options.clone();
            if p.rapid_commit != o.rapid_commit {
                changed.push(format!("subnet {} rapid_commit", o.id));
            }
            p.rapid_commit = o.rapid_commit;
            if p.pools.len() >= o.pools.len() {
                for (pp, op) in p.pools.iter_mut().zip(&o.pools) {
                    if pp.options != op.options {
                        changed.push(format!("subnet {} pool options", o.id));
                    }
                    pp.options = op.options.clone();
                }
            }
            if standalone {
                if p.pools.len() > o.pools.len() && p.pools[..o.pools.len()] == o.pools[..] {
                    changed.push(format!(
                        "subnet {} pools added ({})",
                        o.id,
                        p.pools.len() - o.pools.len()
                    ));
                    p.pools.truncate(o.pools.len());
                }
                if p.lifetimes != o.lifetimes {
                    changed.push(format!("subnet {} lifetimes", o.id));
                }
                p.lifetimes = o.lifetimes;
                if p.reservations != o.reservations {
                    changed.push(format!("subnet {} reservations", o.id));
                    p.reservations = o.reservations.clone();
                }
            }
            let id = o.id;
            for (what, differs) in [
                (
                    "prefix",
                    p.prefix != o.prefix || p.extra_prefixes != o.extra_prefixes,
                ),
                ("interface", p.interface != o.interface),
                (
                    if standalone {
                        "pools (removed, changed or reordered; new pools go after the existing ones)"
                    } else {
                        "pools"
                    },
                    p.pools != o.pools,
                ),
                ("lifetimes", p.lifetimes != o.lifetimes),
                ("reservations", p.reservations != o.reservations),
                (
                    "relay selectors",
                    p.relay_interface_ids != o.relay_interface_ids
                        || p.relay_addresses != o.relay_addresses,
                ),
            ] {
                if differs {
                    refused.push(format!("subnet {id} {what}"));
                }
            }
        }
    }
    if probe.relationships != old.relationships {
        refused.push("[failover]".to_string());
    }
    if probe.leasequery != old.leasequery {
        refused.push("leasequery.bulk_listen or bulk_connections_max".to_string());
    }
    if probe.server != old.server {
        refused.push(
            "[server] settings other than log_level, rapid_commit and preference (listeners, data_dir, workers, duid, map size, sockets, timers)"
                .to_string(),
        );
    }
    if !refused.is_empty() {
        return Err(format!(
            "needs a restart: {} changed (live: options, limits, leasequery.requestors, rapid_commit, preference, log_level; without a partner also added subnets, pools added after a subnet's existing ones, lifetimes, reservations)",
            refused.join(", ")
        ));
    }
    changed.dedup();
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = ["[::1]:5547"]
[options]
dns_servers = ["2001:db8::53"]
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{ range = "2001:db8:1::100-2001:db8:1::1ff" }]
"#;

    fn cfg(text: &str) -> Config {
        tandem_core::config::parse("t", text).unwrap()
    }

    #[test]
    fn options_limits_and_log_level_are_live() {
        let old = cfg(BASE);
        let new = cfg(&BASE
            .replace("2001:db8::53", "2001:db8::54")
            .replace(
                "[[subnet]]",
                "[limits]\nclient_rate_per_sec = 3\n[[subnet]]",
            )
            .replace("listen = [", "log_level = \"debug\"\nlisten = ["));
        let c = live_changes(&old, &new).unwrap();
        assert!(c.contains(&"options".to_string()), "{c:?}");
        assert!(c.contains(&"limits".to_string()), "{c:?}");
        assert!(c.contains(&"server.log_level".to_string()), "{c:?}");
        assert!(live_changes(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn pools_lifetimes_and_listeners_need_a_restart() {
        let old = cfg(BASE);
        let e = live_changes(&old, &cfg(&BASE.replace("::1ff", "::2ff"))).unwrap_err();
        assert!(e.contains("subnet 1 pools"), "{e}");
        let e = live_changes(&old, &cfg(&BASE.replace("5547", "5548"))).unwrap_err();
        assert!(e.contains("[server]"), "{e}");
        // With a partner, the subnets, pools and lifetimes are the pair's to agree on.
        let fo = "[failover]\nrole = \"secondary\"\npartner_name = \"p\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";
        let old_pair = cfg(&format!("{BASE}{fo}"));
        let e = live_changes(
            &old_pair,
            &cfg(&format!(
                "{}{fo}",
                BASE.replace(
                    "[[subnet]]",
                    "[lease]\nvalid_lifetime_secs = 99999\n[[subnet]]"
                )
            )),
        )
        .unwrap_err();
        assert!(e.contains("subnet 1 lifetimes"), "{e}");
        let two = format!(
            "{BASE}[[subnet]]\nid = 2\nprefix = \"2001:db8:2::/64\"\npools = [{{ range = \"2001:db8:2::100-2001:db8:2::1ff\" }}]\n{fo}"
        );
        let e = live_changes(&old_pair, &cfg(&two)).unwrap_err();
        assert!(e.contains("list of subnets"), "{e}");
        // Leasequery's requestors are live; its TCP listener is not.
        let lq = |body: &str| cfg(&format!("{BASE}[leasequery]\n{body}"));
        let c = live_changes(&old, &lq("requestors = [\"::1\"]\n")).unwrap();
        assert_eq!(c, vec!["leasequery".to_string()]);
        let e = live_changes(&old, &lq("bulk_listen = [\"[::1]:547\"]\n")).unwrap_err();
        assert!(e.contains("leasequery.bulk_listen"), "{e}");
    }

    #[test]
    fn without_a_partner_subnets_and_pools_may_be_added_and_lifetimes_changed() {
        let old = cfg(BASE);
        let subnet2 = "[[subnet]]\nid = 2\nprefix = \"2001:db8:2::/64\"\npools = [{ range = \"2001:db8:2::100-2001:db8:2::1ff\" }]\n";
        // A subnet added, before or after the existing one.
        let c = live_changes(&old, &cfg(&format!("{BASE}{subnet2}"))).unwrap();
        assert_eq!(c, vec!["subnet 2 added".to_string()]);
        // Before the existing one, it would take over directly attached clients: refused,
        // unless it is tied to an interface.
        let first = BASE.replace("[[subnet]]", &format!("{subnet2}[[subnet]]"));
        let e = live_changes(&old, &cfg(&first)).unwrap_err();
        assert!(e.contains("the first with no interface: 1, now 2"), "{e}");
        let tied = BASE.replace(
            "[[subnet]]",
            &format!(
                "{}[[subnet]]",
                subnet2.replace("id = 2\n", "id = 2\ninterface = \"eth7\"\n")
            ),
        );
        assert_eq!(
            live_changes(&old, &cfg(&tied)).unwrap(),
            vec!["subnet 2 added".to_string()]
        );
        // A pool added after the existing ones, and new lifetimes.
        let more = BASE
            .replace(
                "pools = [{ range = \"2001:db8:1::100-2001:db8:1::1ff\" }]",
                "pools = [{ range = \"2001:db8:1::100-2001:db8:1::1ff\" }, { range = \"2001:db8:1::300-2001:db8:1::3ff\" }]",
            )
            .replace("[[subnet]]", "[lease]\nvalid_lifetime_secs = 9999\n[[subnet]]");
        let c = live_changes(&old, &cfg(&more)).unwrap();
        assert!(c.contains(&"subnet 1 pools added (1)".to_string()), "{c:?}");
        assert!(c.contains(&"subnet 1 lifetimes".to_string()), "{c:?}");
        // Added before the existing pool: indices would move; refused.
        let before = BASE.replace(
            "pools = [{ range = \"2001:db8:1::100-2001:db8:1::1ff\" }]",
            "pools = [{ range = \"2001:db8:1::300-2001:db8:1::3ff\" }, { range = \"2001:db8:1::100-2001:db8:1::1ff\" }]",
        );
        let e = live_changes(&old, &cfg(&before)).unwrap_err();
        assert!(
            e.contains("subnet 1 pools (removed, changed or reordered"),
            "{e}"
        );
        // Reservations change live too.
        let res = format!(
            "{BASE}reservations = [{{ duid = \"00:01:02\", addresses = [\"2001:db8:1::150\"] }}]\n"
        );
        assert_eq!(
            live_changes(&old, &cfg(&res)).unwrap(),
            vec!["subnet 1 reservations".to_string()]
        );
        // A subnet removed: its leases would be lost from the table.
        let e = live_changes(&cfg(&format!("{BASE}{subnet2}")), &old).unwrap_err();
        assert!(e.contains("subnet 2 (removed)"), "{e}");
    }
}
