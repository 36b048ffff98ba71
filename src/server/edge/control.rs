//! The control socket of `tandem ctl`, for every server: a Unix socket (mode 0600), one request
//! per connection, one answer.
//!
//! A request is one line. A line that starts with `{` is a JSON object with a `command` and
//! its arguments, answered by one JSON object with `"result": "ok"` or `"result": "error"` and
//! an `error` saying why; this is the interface for scripts (docs/operations.md, "Control
//! socket"). The words `status` and `partner-down` alone are answered in text, for people.
//!
//! Without a partner this module's thread serves the socket ([`run_control`]); with one, the
//! partner thread does, and hands the commands that do not concern failover to
//! [`handle_json`], telling the partner of every lease the command changed.

use super::metrics::MetricsHub;
use super::now_secs;
use crate::store::Store;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::Ipv6Addr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tandem_core::config::{Config, ResourceKind};
use tandem_core::lease::Lease;
use tandem_core::pool::Allocator;
use tandem_core::wire::relay_data::RelayData;
use tracing::{info, warn};

/// Longest request accepted, bytes.
pub const CONTROL_REQUEST_MAX_BYTES: usize = 4096;
/// How long a control client may take to send its request or read the answer.
pub const CONTROL_IO_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the control thread sleeps when no one connects.
pub const CONTROL_POLL: Duration = Duration::from_millis(100);
/// Connections served per turn before the thread checks whether to stop.
pub const CONTROL_ACCEPTS_PER_TURN_MAX: usize = 16;
/// Leases a `lease-get` by DUID returns at most.
pub const LEASES_PER_ANSWER_MAX: usize = 1024;

/// What the JSON commands work on.
#[derive(Clone)]
pub struct ControlCtx {
    /// The running configuration.
    pub cfg: Arc<Config>,
    /// The lease table.
    pub alloc: Arc<Allocator>,
    /// The store: changes are made durable before the answer.
    pub store: Arc<Store>,
    /// Counters for `statistics`.
    pub hub: Arc<MetricsHub>,
    /// What `reload` calls.
    pub reloader: Arc<super::reload::Reloader>,
    /// What the failover state of each relationship allows now, in configuration order (a
    /// server on its own: one, everything): `lease-add` obeys its subnet's as a client's new
    /// lease does.
    pub policies: Vec<tandem_core::engine::Policy>,
}

/// Binds the control socket, replacing a stale socket file that nobody listens on.
pub fn bind_control(path: &std::path::Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server answers on it",
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    use std::os::unix::fs::PermissionsExt;
    // Deleting leases and partner-down are dangerous: only the server's own user may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Reads one request line from a control client (at most [`CONTROL_REQUEST_MAX_BYTES`]).
pub fn read_request(s: &mut UnixStream) -> String {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(CONTROL_IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(CONTROL_IO_TIMEOUT));
    let mut req = Vec::new();
    let mut buf = [0u8; 512];
    while req.len() < CONTROL_REQUEST_MAX_BYTES && !req.contains(&b'\n') {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&req).trim().to_string()
}

/// An error answer.
pub fn error(why: impl std::fmt::Display) -> Value {
    json!({"result": "error", "error": why.to_string()})
}

fn lease_json(l: &Lease) -> Value {
    json!({
        "kind": match l.kind { ResourceKind::Address => "address", ResourceKind::Prefix => "prefix" },
        "lease": format!("{}/{}", l.addr, l.prefix_len),
        "state": l.state.to_string(),
        "duid": super::hex(&l.duid),
        "iaid": l.iaid,
        "subnet": l.subnet_id,
        "preferred_secs": l.preferred_secs,
        "valid_secs": l.valid_secs,
        "cltt": l.cltt,
        "expires_at": l.expires_at,
        "relay": super::audit::RelayInfo::from_relay_data(&l.relay)
            .fields()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect::<serde_json::Map<String, Value>>(),
    })
}

/// `2001:db8::5` (an address), `2001:db8::5/128` (the same) or `2001:db8:8000:100::/56` (a
/// delegated prefix).
fn resource(v: &Value) -> Result<(ResourceKind, Ipv6Addr, u8), String> {
    let s = v
        .as_str()
        .ok_or("`lease` must be a string: an address or a prefix/length")?;
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (
            a,
            l.parse::<u8>()
                .ok()
                .filter(|l| *l <= 128)
                .ok_or_else(|| format!("`{s}`: bad prefix length"))?,
        ),
        None => (s, 128),
    };
    let addr: Ipv6Addr = a
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv6 address or prefix"))?;
    let kind = if len == 128 {
        ResourceKind::Address
    } else {
        ResourceKind::Prefix
    };
    Ok((kind, addr, len))
}

fn unhex(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("`{what}` must be a hex string"))?;
    let b = tandem_core::config::parse_hex(s).map_err(|e| format!("`{what}`: {e}"))?;
    if b.is_empty() || b.len() > 130 {
        return Err(format!("`{what}`: 1 to 130 bytes in hex"));
    }
    Ok(b)
}

fn u32_arg(req: &Value, name: &str, default: Option<u32>) -> Result<u32, String> {
    match req.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| format!("`{name}` is missing")),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("`{name}` must be a whole number below 2^32")),
    }
}

/// Answers a JSON command that does not concern failover. `announce` hears of every lease the
/// command changed, after it is durable (the partner thread passes them to the partner).
pub fn handle_json(ctx: &ControlCtx, req: &Value, announce: &mut dyn FnMut(&[Lease])) -> Value {
    match run(ctx, req, announce) {
        Ok(v) => v,
        Err(e) => error(e),
    }
}

fn run(ctx: &ControlCtx, req: &Value, announce: &mut dyn FnMut(&[Lease])) -> Result<Value, String> {
    let cmd = req
        .get("command")
        .and_then(Value::as_str)
        .ok_or("the request has no \"command\"")?;
    let now = now_secs();
    match cmd {
        // With a partner the partner thread answers this one itself.
        "status" => {
            let pools: Vec<String> = status_text(ctx)
                .lines()
                .filter_map(|l| l.strip_prefix("pool: ").map(String::from))
                .collect();
            Ok(json!({"result": "ok", "role": "standalone", "pools": pools}))
        }
        "statistics" => {
            let mut v = ctx.hub.statistics_json();
            v["result"] = json!("ok");
            Ok(v)
        }
        "lease-get" => {
            let leases: Vec<Value> = if let Some(r) = req.get("lease") {
                let (kind, addr, len) = resource(r)?;
                ctx.alloc
                    .lookup(kind, addr)
                    .filter(|l| l.prefix_len == len && l.addr == addr)
                    .filter(|l| l.state != tandem_core::lease::LeaseState::Offered)
                    .iter()
                    .map(lease_json)
                    .collect()
            } else if let Some(d) = req.get("duid") {
                let duid = unhex(d, "duid")?;
                ctx.alloc
                    .leases_of(&duid, None)
                    .iter()
                    .take(LEASES_PER_ANSWER_MAX)
                    .map(|(_, l)| lease_json(l))
                    .collect()
            } else if let Some(r) = req.get("remote_id") {
                // The relay's Remote-ID option as sent (enterprise number first), matched
                // against what each lease keeps from the relay closest to the client: a walk
                // of the lease table (there is no Remote-ID index yet).
                let want = unhex(r, "remote_id")?;
                let mut found = Vec::new();
                ctx.alloc.for_each_lease(|l| {
                    if found.len() < LEASES_PER_ANSWER_MAX
                        && l.state != tandem_core::lease::LeaseState::Offered
                        && RelayData::new(&l.relay).and_then(|d| d.remote_id()) == Some(&want[..])
                    {
                        found.push(lease_json(l));
                    }
                });
                found
            } else {
                return Err(
                    "lease-get needs \"lease\" (address or prefix), \"duid\" or \"remote_id\""
                        .into(),
                );
            };
            Ok(json!({"result": "ok", "leases": leases}))
        }
        "lease-add" => {
            let (kind, addr, len) = resource(req.get("lease").unwrap_or(&Value::Null))?;
            let policy = ctx
                .cfg
                .subnets
                .iter()
                .position(|s| {
                    s.pools
                        .iter()
                        .any(|p| p.kind == kind && p.index_of(addr).is_some())
                })
                .and_then(|i| ctx.cfg.relationship_of_subnets().get(i).copied())
                .and_then(|r| ctx.policies.get(r))
                .or(ctx.policies.first())
                .copied()
                .unwrap_or(tandem_core::engine::Policy::STANDALONE);
            if policy.answering == tandem_core::engine::Answering::Nobody {
                return Err("lease-add refused: in its current failover state (see status) this server serves no client, so it may not make a lease either".into());
            }
            let duid = unhex(req.get("duid").unwrap_or(&Value::Null), "duid")?;
            if duid.len() < tandem_core::wire::DUID_MIN_LEN {
                return Err(format!(
                    "`duid`: a DUID is at least {} bytes (RFC 8415 §11: a 2-byte type and its data)",
                    tandem_core::wire::DUID_MIN_LEN
                ));
            }
            let iaid = u32_arg(req, "iaid", None)?;
            let subnet = ctx.cfg.subnets.iter().find(|s| {
                s.pools
                    .iter()
                    .any(|p| p.kind == kind && p.index_of(addr).is_some())
            });
            let lt = subnet
                .ok_or_else(|| format!("{addr}/{len} is in no configured pool of that kind"))?
                .lifetimes;
            let valid = u32_arg(req, "valid_secs", Some(lt.valid_secs))?;
            let preferred = u32_arg(req, "preferred_secs", Some(lt.preferred_secs))?;
            if valid == 0 {
                return Err("`valid_secs` must be at least 1".into());
            }
            let l = ctx
                .alloc
                .operator_add(
                    &policy.rules,
                    now,
                    kind,
                    addr,
                    len,
                    &duid,
                    iaid,
                    preferred,
                    valid,
                )
                .map_err(|e| e.to_string())?;
            commit(ctx, &l, announce)?;
            info!(lease = %format_args!("{}/{}", l.addr, l.prefix_len), duid = %super::hex(&l.duid), iaid = l.iaid, valid_secs = l.valid_secs, "lease added by the operator");
            Ok(json!({"result": "ok", "added": lease_json(&l)}))
        }
        "lease-delete" => {
            let (kind, addr, len) = resource(req.get("lease").unwrap_or(&Value::Null))?;
            let l = ctx
                .alloc
                .operator_delete(now, kind, addr, len)
                .map_err(|e| e.to_string())?;
            commit(ctx, &l, announce)?;
            info!(lease = %format_args!("{}/{}", l.addr, l.prefix_len), duid = %super::hex(&l.duid), iaid = l.iaid, "lease deleted by the operator");
            Ok(json!({"result": "ok", "deleted": lease_json(&l)}))
        }
        "reclaim" => {
            if ctx.cfg.has_failover() {
                return Err("with a partner, the partner thread reclaims (every server.reclaim_interval_ms) so that the partner hears of it".into());
            }
            let mut writes = Vec::new();
            let changed = ctx.alloc.reclaim(now, &mut writes);
            ctx.store
                .commit(writes.iter())
                .map_err(|e| format!("store: {e}"))?;
            Ok(json!({"result": "ok", "reclaimed": changed, "stored": writes.len()}))
        }
        "reload" => ctx
            .reloader
            .reload()
            .map(|what| json!({"result": "ok", "reload": what})),
        "config-test" => ctx
            .reloader
            .check()
            .map(|what| json!({"result": "ok", "config": what})),
        other => Err(format!(
            "unknown command `{other}` (status, statistics, lease-get, lease-add, lease-delete, reclaim, reload, config-test{})",
            if ctx.cfg.has_failover() {
                ", partner-down"
            } else {
                ""
            }
        )),
    }
}

/// Makes `l` durable, then announces it. A failed commit is reported; the table keeps the
/// change in memory (a restart brings back what the store holds).
fn commit(ctx: &ControlCtx, l: &Lease, announce: &mut dyn FnMut(&[Lease])) -> Result<(), String> {
    let one = std::slice::from_ref(l);
    ctx.store
        .commit(one.iter())
        .map_err(|e| format!("store: {e} (the change is in memory only)"))?;
    announce(one);
    Ok(())
}

/// The server's status without a partner, in text.
fn status_text(ctx: &ControlCtx) -> String {
    let mut t = String::from("role: standalone (no failover partner)\n");
    pool_lines(&ctx.alloc, &mut t);
    t
}

/// The `pool: ...` lines of `status`, one per pool, appended to `t`.
pub fn pool_lines(alloc: &Allocator, t: &mut String) {
    use std::fmt::Write as _;
    for (subnet, pool, u) in alloc.usage() {
        let _ = writeln!(
            t,
            "pool: subnet {} {}/{} {:?} total {} active {} declined {} offered {}",
            subnet,
            Ipv6Addr::from(pool.first),
            pool.resource_len,
            pool.kind,
            u.total,
            u.active,
            u.declined,
            u.offered
        );
    }
}

/// The control thread of a server without a partner: serves the socket until `stop`.
pub fn run_control(
    listener: UnixListener,
    path: std::path::PathBuf,
    ctx: ControlCtx,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut served = 0;
        while served < CONTROL_ACCEPTS_PER_TURN_MAX {
            match listener.accept() {
                Ok((mut s, _)) => {
                    served += 1;
                    // The configuration and lease table in force (a reload may have added
                    // pools since).
                    let ctx = ControlCtx {
                        cfg: ctx.reloader.running(),
                        alloc: ctx.reloader.allocator(),
                        ..ctx.clone()
                    };
                    let line = read_request(&mut s);
                    let answer = if line.starts_with('{') {
                        let v = match serde_json::from_str::<Value>(&line) {
                            Ok(req) => handle_json(&ctx, &req, &mut |_| {}),
                            Err(e) => error(format!("the request is not JSON: {e}")),
                        };
                        format!("{v}\n")
                    } else {
                        match line.as_str() {
                            "status" => status_text(&ctx),
                            "partner-down" => "error: this server has no failover partner\n".into(),
                            other => format!(
                                "error: unknown command `{other}` (status, or a JSON request: see docs/operations.md)\n"
                            ),
                        }
                    };
                    let _ = s.write_all(answer.as_bytes());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
        if served == 0 {
            std::thread::sleep(CONTROL_POLL);
        }
    }
    let _ = std::fs::remove_file(&path);
}
