//! Interop tests against real DHCPv6 clients, and a kill -9 durability test.
//!
//! * perfdhcp (ISC Kea) over a veth pair between two network namespaces, by multicast to
//!   ff02::1:2: 4-way exchanges for addresses, prefixes and both; relayed (`-A 1`); with Renew
//!   and Release phases (`-f`, `-F`). perfdhcp's counters are parsed, and the lease store is read
//!   back with `tandem leases` and cross-checked against the leases perfdhcp reports (`-x l`).
//! * ISC dhclient (`-6`, `-6 -P`) with the hook script `tests/interop/dhclient-hook.sh`: it
//!   binds, renews at T1 keeping the same address or prefix, and releases (`-r`).
//! * A loaded server on loopback is killed with SIGKILL: every lease a client was told about
//!   is in the store afterwards, and the restarted server gives it to the same client again.
//!
//! Topology of a namespace test with tag `<tag>`: namespace `tdm<tag>s` runs the server on its
//! end of the veth pair (also named `tdm<tag>s`), namespace `tdm<tag>c` runs the clients on
//! `tdm<tag>c`. DAD is off in both so addresses are usable at once. The `Topo` guard deletes
//! both namespaces when the test ends, also on failure, and leftovers of a killed earlier run are
//! deleted before creating them. Every tag is distinct, so the tests run in parallel.
//!
//! The namespace tests need root, iproute2, perfdhcp and dhclient. When something is missing
//! they fail and say what, unless `TANDEM_SKIP_NETNS=1`, in which case they print
//! `skipped: ...` and pass (they also skip with that variable when nothing is missing). The
//! crash test needs neither root nor tools and always runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_core::wire::{Message, MessageType, MessageWriter};

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
/// The dhclient `-sf` hook; written into each test's temp dir with mode 0755.
const HOOK: &str = include_str!("interop/dhclient-hook.sh");

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// Full paths of the external tools a namespace test runs.
struct Tools {
    ip: String,
    timeout: String,
    sysctl: String,
    perfdhcp: String,
    dhclient: String,
}

fn find_tool(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The tools for a namespace test, or `None` when the test is to be skipped. Panics with what
/// is missing unless `TANDEM_SKIP_NETNS=1`.
fn prerequisites(test: &str) -> Option<Tools> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces and veth pairs need CAP_NET_ADMIN)".to_string());
    }
    let mut tool = |name: &str, package: &str| {
        find_tool(name).unwrap_or_else(|| {
            missing.push(format!("{name} (Debian package {package})"));
            String::new()
        })
    };
    let tools = Tools {
        ip: tool("ip", "iproute2"),
        timeout: tool("timeout", "coreutils"),
        sysctl: tool("sysctl", "procps"),
        perfdhcp: tool("perfdhcp", "kea-admin"),
        dhclient: tool("dhclient", "isc-dhcp-client"),
    };
    let skip = std::env::var("TANDEM_SKIP_NETNS").as_deref() == Ok("1");
    if skip {
        let why = if missing.is_empty() {
            "TANDEM_SKIP_NETNS=1".to_string()
        } else {
            format!("TANDEM_SKIP_NETNS=1 and missing: {}", missing.join(", "))
        };
        // Straight to the process's stderr, past libtest's output capture, so the skip shows.
        let _ = writeln!(std::io::stderr().lock(), "skipped: {test}: {why}");
        return None;
    }
    assert!(
        missing.is_empty(),
        "{test}: cannot run the interop tests, missing: {}. Run as root with perfdhcp (kea-admin) \
         and dhclient (isc-dhcp-client) installed (tools/test.sh installs them), or set \
         TANDEM_SKIP_NETNS=1 to skip these tests.",
        missing.join(", ")
    );
    Some(tools)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Output of a finished command, stdout and stderr together.
struct Ran {
    ok: bool,
    code: Option<i32>,
    out: String,
}

/// Runs a command under `timeout` (SIGTERM after `secs`, SIGKILL 2 s later).
fn run(timeout: &str, secs: u32, args: &[&str]) -> Ran {
    let out = Command::new(timeout)
        .args(["-k", "2", &secs.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ran {
        ok: out.status.success(),
        code: out.status.code(),
        out: text,
    }
}

/// Runs a command that must succeed.
fn must(timeout: &str, secs: u32, args: &[&str]) -> String {
    let r = run(timeout, secs, args);
    assert!(r.ok, "{args:?} failed (exit {:?}):\n{}", r.code, r.out);
    r.out
}

/// A process this test started; killed (SIGKILL, by its PID) and reaped when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        let f =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let f2 = f.try_clone().expect("dup log file");
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({args:?}): {e}"));
        Proc { child }
    }

    /// Exit status if it has exited.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `d` for the process to exit on its own.
    fn wait_exit(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + d;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of a file.
fn tail(p: &Path, n: usize) -> String {
    let t = read_lossy(p);
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `tandem serve`, with its log file.
struct Server {
    proc: Proc,
    log: PathBuf,
}

impl Server {
    /// The server must still be running at the end of a test (no crash, no early exit).
    fn check_alive(&mut self, ck: &mut Checks) {
        let st = self.proc.exited();
        ck.check(st.is_none(), || {
            format!(
                "the server exited during the test ({st:?}); log:\n{}",
                tail(&self.log, 30)
            )
        });
    }
}

/// Starts `prefix... tandem serve --config config extra...` and waits until it serves.
fn start_server(prefix: &[String], config: &Path, extra: &[&str], log: &Path) -> Server {
    let mut args: Vec<String> = prefix.to_vec();
    args.extend([TANDEM, "serve", "--config"].map(String::from));
    args.push(config.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut proc = Proc::spawn("tandem serve", &args, log);
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if read_lossy(log).contains("serving; stop with") {
            return Server {
                proc,
                log: log.to_path_buf(),
            };
        }
        if let Some(st) = proc.exited() {
            panic!(
                "tandem serve exited ({st}) before serving; {args:?}; log:\n{}",
                tail(log, 40)
            );
        }
        assert!(
            Instant::now() < end,
            "tandem serve not serving after 15 s; log:\n{}",
            tail(log, 40)
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The server DUID the log reports at `store open`.
fn server_duid(log: &Path) -> Vec<u8> {
    let text = read_lossy(log);
    let hex = text
        .lines()
        .find(|l| l.contains("store open"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("duid=")))
        .unwrap_or_else(|| panic!("no `store open ... duid=` line in the server log:\n{text}"));
    unhex(hex).unwrap_or_else(|| panic!("bad duid `{hex}` in server log"))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Colon-separated hex as perfdhcp and dhclient print DUIDs (`0:1:0:1:32:99:da:ca` or
/// `00:01:...`) to the plain lowercase hex `tandem leases` prints.
fn colon_hex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    bytes.filter(|b| !b.is_empty()).map(|b| hex(&b))
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Two namespaces joined by a veth pair; deleted (with any process left in them) on drop.
struct Topo {
    ip: String,
    timeout: String,
    /// Server namespace and its veth end.
    s: String,
    /// Client namespace and its veth end.
    c: String,
}

impl Topo {
    /// Creates `tdm<tag>s` and `tdm<tag>c`, link-local on both ends plus the given global
    /// addresses (`addr/len`), DAD off, links up.
    fn new(t: &Tools, tag: &str, server_addrs: &[&str], client_addrs: &[&str]) -> Topo {
        let topo = Topo {
            ip: t.ip.clone(),
            timeout: t.timeout.clone(),
            s: format!("tdm{tag}s"),
            c: format!("tdm{tag}c"),
        };
        assert!(
            topo.s.len() <= 15 && topo.c.len() <= 15,
            "interface names are at most 15 chars"
        );
        topo.remove(); // leftovers of an earlier run that was killed
        let (ip, to) = (topo.ip.as_str(), topo.timeout.as_str());
        for ns in [&topo.s, &topo.c] {
            must(to, 10, &[ip, "netns", "add", ns]);
            // Before any interface exists in it, so the veth end inherits the default too.
            must(
                to,
                10,
                &[
                    ip,
                    "netns",
                    "exec",
                    ns,
                    &t.sysctl,
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            );
            must(to, 10, &[ip, "-n", ns, "link", "set", "lo", "up"]);
        }
        must(
            to,
            10,
            &[
                ip, "link", "add", &topo.s, "netns", &topo.s, "type", "veth", "peer", "name",
                &topo.c, "netns", &topo.c,
            ],
        );
        for (ns, addrs) in [(&topo.s, server_addrs), (&topo.c, client_addrs)] {
            for a in addrs {
                must(
                    to,
                    10,
                    &[ip, "-n", ns, "addr", "add", a, "dev", ns, "nodad"],
                );
            }
            must(to, 10, &[ip, "-n", ns, "link", "set", ns, "up"]);
        }
        // Wait for usable (non-tentative) link-local addresses on both ends.
        let end = Instant::now() + Duration::from_secs(10);
        for ns in [&topo.s, &topo.c] {
            loop {
                let out = must(
                    to,
                    10,
                    &[
                        ip, "-n", ns, "-6", "addr", "show", "dev", ns, "scope", "link",
                    ],
                );
                if out.contains("fe80") && !out.contains("tentative") {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "no usable link-local address on {ns}:\n{out}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        topo
    }

    /// `ip netns exec <ns>` as an argument prefix.
    fn exec(&self, ns: &str) -> Vec<String> {
        vec![self.ip.clone(), "netns".into(), "exec".into(), ns.into()]
    }

    fn remove(&self) {
        let (ip, to) = (self.ip.as_str(), self.timeout.as_str());
        for ns in [&self.s, &self.c] {
            // Anything still running in the namespace was started by this test (or by an earlier
            // run of it): kill it by PID, or the namespace and its veth outlive the deletion.
            let pids = run(to, 10, &[ip, "netns", "pids", ns]);
            if pids.ok {
                for pid in pids
                    .out
                    .split_whitespace()
                    .filter(|p| p.parse::<u32>().is_ok())
                {
                    let _ = Command::new("kill")
                        .args(["-9", pid])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = run(to, 10, &[ip, "netns", "delete", ns]);
            // A veth end left in the root namespace by some manual run.
            let _ = run(to, 10, &[ip, "link", "delete", ns]);
        }
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.remove();
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and the lease store

/// One subnet's pools, as configured and as checked.
#[derive(Clone, Copy, Debug)]
struct Pools {
    subnet: u32,
    prefix: (Ipv6Addr, u8),
    na_first: Ipv6Addr,
    na_last: Ipv6Addr,
    pd: (Ipv6Addr, u8),
    delegated: u8,
}

/// The subnet of directly attached clients (the veth link has 2001:db8:1::/64).
const LINK1: Pools = Pools {
    subnet: 1,
    prefix: (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
    na_first: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0),
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0xffff),
    pd: (Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 0), 40),
    delegated: 56,
};

/// The subnet perfdhcp's simulated relay sits on (its link-address is in 2001:db8:2::/64).
const LINK2: Pools = Pools {
    subnet: 2,
    prefix: (Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0), 64),
    na_first: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 2, 0),
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 2, 0xffff),
    pd: (Ipv6Addr::new(0x2001, 0xdb8, 0x9000, 0, 0, 0, 0, 0), 40),
    delegated: 56,
};

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Pools {
    fn has_addr(&self, a: Ipv6Addr) -> bool {
        (u128::from(self.na_first)..=u128::from(self.na_last)).contains(&u128::from(a))
    }

    /// A delegated prefix of this pool: the delegated length, inside the pool, no host bits.
    fn has_prefix(&self, p: Ipv6Addr, len: u8) -> bool {
        let (pool, plen) = self.pd;
        let v = u128::from(p);
        len == self.delegated && v & mask(plen) == u128::from(pool) && v & !mask(len) == 0
    }

    /// The `[[subnet]]` block; `interface` ties it to directly attached clients of one link.
    fn toml(&self, interface: Option<&str>) -> String {
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
const LEASE_TOML: &str =
    "[lease]\npreferred_lifetime_secs = 20\nvalid_lifetime_secs = 40\nt1_secs = 5\nt2_secs = 8\n";

/// A config serving multicast on `iface` (port 547).
fn netns_config(data: &Path, iface: &str, subnets: &[(Pools, Option<&str>)]) -> String {
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
struct Row {
    kind: String,
    addr: Ipv6Addr,
    len: u8,
    state: String,
    duid: String,
    iaid: u32,
    subnet: u32,
    expires: u64,
    cltt: u64,
    seq: u64,
}

fn parse_row(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != 9 {
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
    })
}

/// Every lease in the store, read with `tandem leases` (read-only, fine beside a running
/// server).
fn store_rows(data: &Path) -> Vec<Row> {
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

// ---------------------------------------------------------------------------------------------
// Collected assertions

/// Failed checks, reported all at once so one bug does not hide the next. Failures of one
/// topic (the same check over many leases or clients) are reported as a count and examples.
#[derive(Default)]
struct Checks {
    /// (topic, message)
    fails: Vec<(String, String)>,
}

impl Checks {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            self.fails.push((m.clone(), m));
        }
    }

    /// A check repeated over many items; failures are grouped under `topic`.
    fn check_in(&mut self, topic: &str, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fails.push((topic.to_string(), msg()));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        self.check(got == want, || {
            format!("{what}: got {got:?}, want {want:?}")
        });
    }

    /// Panics listing every failure, followed by the context (outputs, logs).
    fn finish(self, test: &str, context: &[(&str, String)]) {
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
fn check_store_invariants(ck: &mut Checks, rows: &[Row], pools: &[Pools]) {
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

/// The active leases of one kind must be exactly `want` (DUID hex -> address or prefix).
fn check_active(ck: &mut Checks, rows: &[Row], kind: &str, want: &BTreeMap<String, Ipv6Addr>) {
    let got: BTreeMap<String, Vec<Ipv6Addr>> = rows
        .iter()
        .filter(|r| r.kind == kind && r.state == "active")
        .fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.duid.clone())
                .or_insert_with(Vec::new)
                .push(r.addr);
            m
        });
    let n_active: usize = got.values().map(Vec::len).sum();
    ck.eq(
        &format!("active {kind} leases in the store (one per client served)"),
        n_active,
        want.len(),
    );
    let mut wrong = Vec::new();
    for (duid, addr) in want {
        match got.get(duid) {
            Some(v) if v == &vec![*addr] => {}
            other => wrong.push(format!(
                "client {duid}: perfdhcp got {addr}, store has active {other:?}"
            )),
        }
    }
    for (duid, v) in &got {
        if !want.contains_key(duid) {
            wrong.push(format!(
                "store has active {kind} {v:?} for {duid}, which no client was given"
            ));
        }
    }
    let topic =
        format!("{kind} leases of the clients and active {kind} leases in the store differ");
    for w in wrong {
        ck.check_in(&topic, false, || w);
    }
}

// ---------------------------------------------------------------------------------------------
// perfdhcp

/// One "Statistics for" block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct XStats {
    sent: u64,
    received: u64,
    drops: u64,
    orphans: u64,
    rejected: u64,
    non_unique: u64,
}

/// A lease as `perfdhcp -x l` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PLease {
    /// DUID, lowercase hex.
    client: String,
    addr: Option<Ipv6Addr>,
    prefix: Option<Ipv6Addr>,
}

struct Perf {
    code: Option<i32>,
    /// The output without the lease lists and the "Reached max requests limit." flood.
    summary: String,
    stats: BTreeMap<String, XStats>,
    leases: BTreeMap<String, Vec<PLease>>,
}

impl Perf {
    fn x(&self, exchange: &str) -> XStats {
        self.stats.get(exchange).copied().unwrap_or_default()
    }

    fn leases(&self, exchange: &str) -> &[PLease] {
        self.leases.get(exchange).map_or(&[], Vec::as_slice)
    }
}

fn parse_perfdhcp(code: Option<i32>, out: &str) -> Perf {
    let mut p = Perf {
        code,
        summary: String::new(),
        stats: BTreeMap::new(),
        leases: BTreeMap::new(),
    };
    let mut stats_of: Option<String> = None;
    let mut leases_of: Option<String> = None;
    for line in out.lines() {
        let l = line.trim();
        if l == "Reached max requests limit." {
            continue;
        }
        if let Some(name) = l
            .strip_prefix("***Statistics for: ")
            .and_then(|r| r.strip_suffix("***"))
        {
            stats_of = Some(name.to_string());
            leases_of = None;
            p.stats.entry(name.to_string()).or_default();
        } else if let Some(name) = l
            .strip_prefix("***Leases for ")
            .and_then(|r| r.strip_suffix("***"))
        {
            leases_of = Some(name.to_string());
            stats_of = None;
            p.leases.entry(name.to_string()).or_default();
            continue;
        } else if l.starts_with("***") {
            stats_of = None;
            leases_of = None;
        }
        if let Some(x) = &leases_of {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() == 3
                && f[0] != "client_id"
                && let Some(client) = colon_hex(f[0])
            {
                p.leases.get_mut(x).expect("section").push(PLease {
                    client,
                    addr: f[1].parse().ok(),
                    prefix: f[2].parse().ok(),
                });
            }
            continue;
        }
        p.summary.push_str(line);
        p.summary.push('\n');
        if let (Some(x), Some((k, v))) = (&stats_of, l.split_once(": ")) {
            let v: u64 = match v.trim().parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let s = p.stats.get_mut(x).expect("section");
            match k {
                "sent packets" => s.sent = v,
                "received packets" => s.received = v,
                "drops" => s.drops = v,
                "orphans" => s.orphans = v,
                "rejected leases" => s.rejected = v,
                "non unique addresses" => s.non_unique = v,
                _ => {}
            }
        }
    }
    p
}

/// Runs perfdhcp in the client namespace (bounded by `timeout` at 50 s and by `-p`).
fn perfdhcp(t: &Tools, topo: &Topo, args: &[&str]) -> Perf {
    let mut full: Vec<String> = topo.exec(&topo.c);
    full.extend([t.perfdhcp.as_str(), "-6", "-l", topo.c.as_str()].map(String::from));
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    let r = run(&t.timeout, 50, &refs);
    let p = parse_perfdhcp(r.code, &r.out);
    assert!(
        p.stats.contains_key("SOLICIT-ADVERTISE"),
        "perfdhcp printed no statistics (exit {:?}); {full:?}:\n{}",
        r.code,
        p.summary
    );
    p
}

/// Exchanges each perfdhcp run starts (one per distinct client: `-R` = `-n`).
const PERF_CLIENTS: u64 = 300;

/// perfdhcp arguments for a bounded run of `PERF_CLIENTS` distinct clients at 100 exchanges/s.
/// `-d 3`: a reply later than 3 s counts as a drop; `-W 3000000`: after the last exchange is
/// started, wait 3 s for its replies (without it, perfdhcp stops at once and counts the last
/// exchange as dropped, which is perfdhcp's doing, not the server's). `-u`: count any address
/// or prefix handed to two clients. `-x l`: list the leases received.
fn perf_args(mode: &str, mac_base: &str) -> Vec<String> {
    let n = PERF_CLIENTS.to_string();
    [
        "-e",
        mode,
        "-r",
        "100",
        "-R",
        &n,
        "-n",
        &n,
        "-p",
        "20",
        "-d",
        "3",
        "-W",
        "3000000",
        "-u",
        "-x",
        "l",
        "-b",
        &format!("mac={mac_base}"),
    ]
    .map(String::from)
    .to_vec()
}

/// perfdhcp's view of a 4-way run: every Solicit answered, every Request answered, nothing
/// rejected or handed out twice, no stray replies. `rr_orphans` is the number of Replies
/// perfdhcp cannot match to a Request by design: it tries every Reply against the Requests
/// first, so each Reply to a Renew or Release also counts as a REQUEST-REPLY orphan.
fn check_four_way(ck: &mut Checks, run: &str, p: &Perf, rr_orphans: u64) {
    let sa = p.x("SOLICIT-ADVERTISE");
    let rr = p.x("REQUEST-REPLY");
    ck.eq(&format!("{run}: perfdhcp exit code"), p.code, Some(0));
    ck.eq(
        &format!("{run}: SOLICIT-ADVERTISE sent"),
        sa.sent,
        PERF_CLIENTS,
    );
    ck.eq(
        &format!("{run}: SOLICIT-ADVERTISE received (== sent)"),
        sa.received,
        sa.sent,
    );
    ck.eq(
        &format!("{run}: REQUEST-REPLY sent (== advertises received)"),
        rr.sent,
        sa.received,
    );
    ck.eq(
        &format!("{run}: REQUEST-REPLY received (== sent)"),
        rr.received,
        rr.sent,
    );
    for (name, x) in [("SOLICIT-ADVERTISE", sa), ("REQUEST-REPLY", rr)] {
        ck.eq(&format!("{run}: {name} drops"), x.drops, 0);
        ck.eq(&format!("{run}: {name} rejected leases"), x.rejected, 0);
        ck.eq(
            &format!("{run}: {name} non unique addresses"),
            x.non_unique,
            0,
        );
    }
    ck.check(sa.orphans == 0, || {
        format!(
            "{run}: SOLICIT-ADVERTISE orphans: {} (want 0): the client got Advertises that match no \
             Solicit it has outstanding, e.g. a second Advertise for the same Solicit",
            sa.orphans
        )
    });
    ck.check(rr.orphans == rr_orphans, || {
        format!(
            "{run}: REQUEST-REPLY orphans: {} (want {rr_orphans}): the client got Replies that match no \
             exchange, e.g. a second Reply for the same Request",
            rr.orphans
        )
    });
}

/// The leases of the REQUEST-REPLY list by client, checked for the lease type asked for.
fn granted_by_client(ck: &mut Checks, run: &str, p: &Perf, mode: &str) -> BTreeMap<String, PLease> {
    let list = p.leases("REQUEST-REPLY");
    let mut by: BTreeMap<String, PLease> = BTreeMap::new();
    for l in list {
        let want = match mode {
            "address-only" => l.addr.is_some() && l.prefix.is_none(),
            "prefix-only" => l.addr.is_none() && l.prefix.is_some(),
            _ => l.addr.is_some() && l.prefix.is_some(),
        };
        ck.check_in("lease does not match the -e lease type", want, || {
            format!("{run}: perfdhcp lease {l:?} does not match -e {mode}")
        });
        if let Some(prev) = by.insert(l.client.clone(), l.clone()) {
            ck.check_in(
                "client listed with two different leases",
                prev == *l,
                || format!("{run}: client {} got {prev:?} and {l:?}", l.client),
            );
        }
    }
    ck.eq(
        &format!("{run}: distinct clients with a lease (perfdhcp -x l)"),
        by.len() as u64,
        PERF_CLIENTS,
    );
    by
}

// ---------------------------------------------------------------------------------------------
// 1. perfdhcp, direct, multicast over the veth

#[test]
fn perfdhcp_direct_address_prefix_and_both() {
    let test = "perfdhcp_direct_address_prefix_and_both";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipa", &["2001:db8:1::1/64"], &["2001:db8:1::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, netns_config(&data, &topo.s, &[(LINK1, None)])).expect("write config");
    let mut server = start_server(
        &topo.exec(&topo.s),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    let mut summaries = Vec::new();
    // Distinct base MACs make the three runs' DUIDs (DUID-LLT from the MAC) disjoint.
    for (mode, mac) in [
        ("address-only", "00:0c:01:01:00:00"),
        ("prefix-only", "00:0c:01:02:00:00"),
        ("address-and-prefix", "00:0c:01:03:00:00"),
    ] {
        let args = perf_args(mode, mac);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = perfdhcp(&t, &topo, &refs);
        check_four_way(&mut ck, mode, &p, 0);
        for (client, l) in granted_by_client(&mut ck, mode, &p, mode) {
            if let Some(a) = l.addr {
                ck.check_in(
                    "client in two perfdhcp runs",
                    want_na.insert(client.clone(), a).is_none(),
                    || format!("{mode}: client {client} seen in two runs"),
                );
            }
            if let Some(a) = l.prefix {
                ck.check_in(
                    "client in two perfdhcp runs",
                    want_pd.insert(client.clone(), a).is_none(),
                    || format!("{mode}: client {client} seen in two runs"),
                );
            }
        }
        summaries.push((mode, p.summary));
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    ck.eq("active na leases", want_na.len() as u64, 2 * PERF_CLIENTS);
    ck.eq("active pd leases", want_pd.len() as u64, 2 * PERF_CLIENTS);

    let mut ctx: Vec<(&str, String)> = summaries.into_iter().collect();
    ctx.push(("server log (tail)", tail(&server.log, 15)));
    server.check_alive(&mut ck);
    ck.finish(test, &ctx);
    drop(server);
    drop(topo);
}

// ---------------------------------------------------------------------------------------------
// 2. perfdhcp through a simulated relay

/// perfdhcp -A 1 sends Relay-forw from port 547 to ff02::1:2 with link-address and
/// peer-address both set to its own global address on the interface (here 2001:db8:2::2), and
/// takes the Relay-repl on port 547. The server has two subnets: 2001:db8:1::/64 tied to the
/// server's interface and 2001:db8:2::/64, so every lease must come from subnet 2, chosen by the
/// relay's link-address and not by the interface the packet arrived on.
#[test]
fn perfdhcp_relayed_selects_subnet_by_link_address() {
    let test = "perfdhcp_relayed_selects_subnet_by_link_address";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipr", &["2001:db8:2::1/64"], &["2001:db8:2::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    let subnets = [(LINK1, Some(topo.s.as_str())), (LINK2, None)];
    std::fs::write(&cfg, netns_config(&data, &topo.s, &subnets)).expect("write config");
    let mut server = start_server(
        &topo.exec(&topo.s),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mode = "address-and-prefix";
    let mut args = perf_args(mode, "00:0c:02:01:00:00");
    args.extend(["-A", "1"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = perfdhcp(&t, &topo, &refs);
    check_four_way(&mut ck, "relayed", &p, 0);
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    for (client, l) in granted_by_client(&mut ck, "relayed", &p, mode) {
        if let Some(a) = l.addr {
            ck.check_in(
                "relayed client got an address outside subnet 2",
                LINK2.has_addr(a),
                || format!("relayed client {client} got {a}, outside subnet 2's pool"),
            );
            want_na.insert(client.clone(), a);
        }
        if let Some(a) = l.prefix {
            want_pd.insert(client, a);
        }
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK2]);
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    server.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("perfdhcp -A 1", p.summary),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 3. perfdhcp with Renew and Release phases

#[test]
fn perfdhcp_renew_and_release() {
    let test = "perfdhcp_renew_and_release";
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, "ipf", &["2001:db8:1::1/64"], &["2001:db8:1::2/64"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, netns_config(&data, &topo.s, &[(LINK1, None)])).expect("write config");
    let mut server = start_server(
        &topo.exec(&topo.s),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let mut ck = Checks::default();
    let mode = "address-and-prefix";
    let mut args = perf_args(mode, "00:0c:03:01:00:00");
    // Of the 100 exchanges per second, 30 are Renews and 20 Releases of leases already granted.
    args.extend(["-f", "30", "-F", "20"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = perfdhcp(&t, &topo, &refs);
    let rn = p.x("RENEW-REPLY");
    let rl = p.x("RELEASE-REPLY");
    // perfdhcp matches a Reply against Requests, then Renews, then Releases, counting an orphan
    // at each level it fails: Replies to Renews are REQUEST-REPLY orphans, Replies to Releases
    // are REQUEST-REPLY and RENEW-REPLY orphans.
    check_four_way(&mut ck, "renew+release", &p, rn.received + rl.received);
    ck.check(rn.sent > 0, || "no Renew was sent".into());
    ck.check(rl.sent > 0, || "no Release was sent".into());
    ck.eq("RENEW-REPLY received (== sent)", rn.received, rn.sent);
    ck.eq("RELEASE-REPLY received (== sent)", rl.received, rl.sent);
    ck.eq("RENEW-REPLY drops", rn.drops, 0);
    ck.eq("RELEASE-REPLY drops", rl.drops, 0);
    ck.eq(
        "RENEW-REPLY orphans (Replies to Releases, see above)",
        rn.orphans,
        rl.received,
    );
    ck.eq("RELEASE-REPLY orphans", rl.orphans, 0);

    let granted = granted_by_client(&mut ck, "renew+release", &p, mode);
    // A Renew must keep the lease: same address and prefix as granted.
    let renewed = p.leases("RENEW-REPLY");
    ck.eq(
        "renewed leases listed (perfdhcp -x l)",
        renewed.len() as u64,
        rn.received,
    );
    for l in renewed {
        match granted.get(&l.client) {
            Some(g) => ck.check_in(
                "Renew changed the lease",
                g.addr == l.addr && g.prefix == l.prefix,
                || {
                    format!(
                        "Renew changed client {}'s lease: granted {g:?}, renewed {l:?}",
                        l.client
                    )
                },
            ),
            None => ck.check_in("renewed lease of a client never granted one", false, || {
                format!("renewed lease of a client never granted one: {l:?}")
            }),
        }
    }
    let released: BTreeSet<String> = p
        .leases("RELEASE-REPLY")
        .iter()
        .map(|l| l.client.clone())
        .collect();
    ck.eq(
        "released clients listed (perfdhcp -x l)",
        released.len() as u64,
        rl.received,
    );

    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    let mut want_na = BTreeMap::new();
    let mut want_pd = BTreeMap::new();
    for (client, g) in &granted {
        if released.contains(client) {
            // Released: the store keeps the lease, in state `released`, for its last client.
            for (kind, a) in [("na", g.addr), ("pd", g.prefix)] {
                let Some(a) = a else { continue }; // already reported by granted_by_client
                let row = rows.iter().find(|r| r.kind == kind && r.addr == a);
                ck.check_in(
                    "released lease not in state released in the store",
                    row.is_some_and(|r| r.state == "released" && r.duid == *client),
                    || format!("client {client} released {kind} {a}, but the store has {row:?}"),
                );
            }
        } else if let (Some(a), Some(p)) = (g.addr, g.prefix) {
            want_na.insert(client.clone(), a);
            want_pd.insert(client.clone(), p);
        }
    }
    check_active(&mut ck, &rows, "na", &want_na);
    check_active(&mut ck, &rows, "pd", &want_pd);
    let n_released = rows.iter().filter(|r| r.state == "released").count() as u64;
    ck.eq(
        "leases in state released (na + pd)",
        n_released,
        2 * rl.received,
    );
    server.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("perfdhcp -f 30 -F 20", p.summary),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. ISC dhclient: bind, renew at T1, release

/// One line the hook script wrote.
type Event = HashMap<String, String>;

fn read_events(path: &Path) -> Vec<Event> {
    read_lossy(path)
        .split("\n\n")
        .filter(|rec| !rec.trim().is_empty())
        .map(|rec| {
            rec.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits for the `nth` (0-based) event with `reason`; fails early if `client` exits.
fn wait_event(
    path: &Path,
    reason: &str,
    nth: usize,
    within: Duration,
    client: &mut Proc,
    log: &Path,
) -> Event {
    let end = Instant::now() + within;
    loop {
        let evs: Vec<Event> = read_events(path)
            .into_iter()
            .filter(|e| e.get("reason").map(String::as_str) == Some(reason))
            .collect();
        if let Some(e) = evs.into_iter().nth(nth) {
            return e;
        }
        if let Some(st) = client.exited() {
            panic!(
                "dhclient exited ({st}) before {reason} #{nth}; events:\n{}\ndhclient log:\n{}",
                read_lossy(path),
                tail(log, 60)
            );
        }
        assert!(
            Instant::now() < end,
            "no {reason} #{nth} from dhclient within {within:?}; events:\n{}\ndhclient log:\n{}",
            read_lossy(path),
            tail(log, 60)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ev<'a>(e: &'a Event, k: &str) -> &'a str {
    e.get(k).map_or("", String::as_str)
}

/// Bytes as dhclient prints them: colon-separated hex (`0:1:0:1:32:99`, `88:bb:f6:06`), or a
/// quoted string when every byte is printable (`"g@? "`, with `\"`, `\\` and `\ooo` escapes).
fn dhclient_bytes(s: &str) -> Option<Vec<u8>> {
    let Some(q) = s.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else {
        return unhex(&colon_hex(s)?);
    };
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.len() >= i + 4 && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).ok()?, 8).ok()?);
            i += 4;
        } else {
            out.push(*b.get(i + 1)?);
            i += 2;
        }
    }
    Some(out)
}

/// dhclient's IAID as the number the store prints.
fn iaid_of(s: &str) -> Option<u32> {
    Some(u32::from_be_bytes(dhclient_bytes(s)?.try_into().ok()?))
}

/// Runs one dhclient through bind, one renewal at T1 and release. `pd`: `-P` (prefix
/// delegation only) instead of an address.
fn dhclient_cycle(test: &str, tag: &str, pd: bool) {
    let Some(t) = prerequisites(test) else { return };
    let topo = Topo::new(&t, tag, &[], &[]); // dhclient talks link-local to ff02::1:2
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    std::fs::write(&cfg, netns_config(&data, &topo.s, &[(LINK1, None)])).expect("write config");
    let mut server = start_server(
        &topo.exec(&topo.s),
        &cfg,
        &["--workers", "2"],
        &dir.path().join("server.log"),
    );

    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, HOOK).expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod hook");
    let events = dir.path().join("events");
    let conf = dir.path().join("dhclient.conf");
    std::fs::write(&conf, "# empty: no site configuration\n").expect("write dhclient.conf");
    let p = |name: &str| dir.path().join(name).display().to_string();
    let common: Vec<String> = {
        let mut v = vec!["-6".to_string()];
        if pd {
            v.push("-P".into());
        }
        v.extend([
            "-v".to_string(),
            "-sf".into(),
            hook.display().to_string(),
            "-lf".into(),
            p("dhclient.leases"),
            "-pf".into(),
            p("dhclient.pid"),
            "-cf".into(),
            conf.display().to_string(),
            "-e".into(),
            format!("TDM_EVENTS={}", events.display()),
        ]);
        v
    };
    // -d: stay in the foreground, so the PID is the one spawned (ip netns exec execs dhclient);
    // -1: try once and exit if no server answers.
    let mut args = topo.exec(&topo.c);
    args.push(t.dhclient.clone());
    args.extend(common.iter().cloned());
    args.extend(["-d".to_string(), "-1".into(), topo.c.clone()]);
    let dlog = dir.path().join("dhclient.log");
    let mut client = Proc::spawn("dhclient", &args, &dlog);

    let kind = if pd { "pd" } else { "na" };
    let what = |e: &Event| -> String {
        if pd {
            ev(e, "new_ip6_prefix").to_string()
        } else {
            ev(e, "new_ip6_address").to_string()
        }
    };
    let mut ck = Checks::default();
    let bound = wait_event(
        &events,
        "BOUND6",
        0,
        Duration::from_secs(20),
        &mut client,
        &dlog,
    );
    let lease = what(&bound);
    let (addr, len): (Ipv6Addr, u8) = if pd {
        let (a, l) = lease
            .split_once('/')
            .unwrap_or_else(|| panic!("BOUND6 without a prefix: {bound:?}"));
        (
            a.parse().expect("prefix address"),
            l.parse().expect("prefix length"),
        )
    } else {
        (
            lease
                .parse()
                .unwrap_or_else(|_| panic!("BOUND6 without an address: {bound:?}")),
            128,
        )
    };
    if pd {
        ck.check(LINK1.has_prefix(addr, len), || {
            format!("delegated {addr}/{len} is not a /56 of {:?}", LINK1.pd)
        });
        ck.eq(
            "BOUND6 new_ip6_address with -P (prefix only)",
            ev(&bound, "new_ip6_address"),
            "",
        );
    } else {
        ck.check(LINK1.has_addr(addr), || {
            format!("address {addr} outside the pool")
        });
        ck.eq(
            "BOUND6 new_ip6_prefix without -P",
            ev(&bound, "new_ip6_prefix"),
            "",
        );
    }
    for (k, v) in [
        ("new_renew", "5"),
        ("new_rebind", "8"),
        ("new_preferred_life", "20"),
        ("new_max_life", "40"),
    ] {
        ck.eq(&format!("BOUND6 {k}"), ev(&bound, k), v);
    }
    let duid = dhclient_bytes(ev(&bound, "client_id"))
        .map(|d| hex(&d))
        .unwrap_or_else(|| panic!("BOUND6 without client id: {bound:?}"));
    let iaid =
        iaid_of(ev(&bound, "new_iaid")).unwrap_or_else(|| panic!("BOUND6 without IAID: {bound:?}"));
    let row_of = |rows: &[Row]| {
        rows.iter()
            .find(|r| r.kind == kind && r.addr == addr)
            .cloned()
    };
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[LINK1]);
    ck.eq("leases in the store after BOUND6", rows.len(), 1);
    let at_bind = row_of(&rows);
    ck.check(
        at_bind.as_ref().is_some_and(|r| {
            r.state == "active" && r.duid == duid && r.iaid == iaid && r.len == len
        }),
        || format!("after BOUND6 of {lease} (DUID {duid}, IAID {iaid}) the store has {at_bind:?}"),
    );

    // T1 = 5 s: dhclient renews and must keep the same lease.
    let renew = wait_event(
        &events,
        "RENEW6",
        0,
        Duration::from_secs(15),
        &mut client,
        &dlog,
    );
    ck.eq("RENEW6 lease (same as BOUND6)", what(&renew), lease.clone());
    ck.eq("RENEW6 new_max_life", ev(&renew, "new_max_life"), "40");
    let rows = store_rows(&data);
    let at_renew = row_of(&rows);
    ck.check(
        at_renew
            .as_ref()
            .is_some_and(|r| r.state == "active" && r.duid == duid),
        || format!("after RENEW6 the store has {at_renew:?}"),
    );
    if let (Some(b), Some(r)) = (&at_bind, &at_renew) {
        ck.check(r.expires >= b.expires + 3 && r.cltt >= b.cltt + 3 && r.seq > b.seq, || {
            format!("the Renew ~5 s after binding did not move the stored lease on: at bind {b:?}, after renew {r:?}")
        });
    }

    // Release: dhclient -r stops the running client (SIGTERM to the PID in its pid file, which
    // is the one started above) and sends a Release for the lease in the lease file.
    let mut rargs = topo.exec(&topo.c);
    rargs.push(t.dhclient.clone());
    rargs.extend(common.iter().cloned());
    rargs.extend(["-r".to_string(), topo.c.clone()]);
    let rrefs: Vec<&str> = rargs.iter().map(String::as_str).collect();
    let r = run(&t.timeout, 20, &rrefs);
    ck.check(r.ok, || {
        format!("dhclient -r failed ({:?}):\n{}", r.code, r.out)
    });
    let released = read_events(&events)
        .into_iter()
        .find(|e| ev(e, "reason") == "RELEASE6");
    let old_key = if pd {
        "old_ip6_prefix"
    } else {
        "old_ip6_address"
    };
    ck.check(
        released.as_ref().is_some_and(|e| ev(e, old_key) == lease),
        || {
            format!(
                "no RELEASE6 of {lease} after dhclient -r; events:\n{}\ndhclient -r output:\n{}",
                read_lossy(&events),
                r.out
            )
        },
    );
    let end = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let row = row_of(&store_rows(&data));
        if row.as_ref().is_some_and(|r| r.state == "released") || Instant::now() >= end {
            break row;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ck.check(
        after
            .as_ref()
            .is_some_and(|r| r.state == "released" && r.duid == duid),
        || format!("after RELEASE6 the store has {after:?}, want state released"),
    );
    if client.wait_exit(Duration::from_secs(3)).is_none() {
        client.kill9();
    }
    server.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("events", read_lossy(&events)),
            ("dhclient log (tail)", tail(&dlog, 40)),
            ("server log (tail)", tail(&server.log, 15)),
        ],
    );
}

#[test]
fn dhclient_address_bind_renew_release() {
    dhclient_cycle("dhclient_address_bind_renew_release", "idn", false);
}

#[test]
fn dhclient_prefix_bind_renew_release() {
    dhclient_cycle("dhclient_prefix_bind_renew_release", "idp", true);
}

// ---------------------------------------------------------------------------------------------
// 5. kill -9 under load: every acknowledged lease survives

/// A lease the server told a client it has (a Reply with an address in the IA_NA).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    duid: Vec<u8>,
    iaid: u32,
    addr: Ipv6Addr,
}

fn solicit(buf: &mut Vec<u8>, xid: u32, duid: &[u8], iaid: u32) {
    let mut w = MessageWriter::new(buf, MessageType::Solicit, xid);
    w.client_id(duid);
    w.elapsed_time(0);
    w.rapid_commit();
    w.ia_na(iaid, 0, 0, |_| {});
}

/// The address a rapid-commit Reply grants to `duid`/`iaid`, or what is wrong with it.
fn reply_addr(
    bytes: &[u8],
    xid: u32,
    duid: &[u8],
    iaid: u32,
    server: &[u8],
) -> Result<Ipv6Addr, String> {
    let m = Message::parse(bytes).map_err(|e| format!("unparsable reply: {e}"))?;
    if m.msg_type() != MessageType::Reply {
        return Err(format!(
            "{:?} to a rapid-commit Solicit, want Reply",
            m.msg_type()
        ));
    }
    if m.transaction_id() != xid || m.client_id() != Some(duid) {
        return Err("reply for another transaction or client".into());
    }
    if !m.rapid_commit() {
        return Err("Reply without Rapid Commit".into());
    }
    if m.server_id() != Some(server) {
        return Err(format!(
            "Server Identifier {:?} is not the server's {}",
            m.server_id().map(hex),
            hex(server)
        ));
    }
    let ia = m
        .ia_nas()
        .find(|ia| ia.iaid == iaid)
        .ok_or("no IA_NA with our IAID")?;
    if let Some(s) = ia.status().filter(|s| s.code != 0) {
        return Err(format!("IA_NA status {} {}", s.code, s.message_lossy()));
    }
    let a = ia.addresses().next().ok_or("IA_NA without an address")?;
    if a.valid_secs == 0 {
        return Err(format!("address {} with valid lifetime 0", a.addr));
    }
    Ok(a.addr)
}

/// Client DUID (DUID-LL, locally administered 6-byte link-layer address) for thread `t`,
/// request `n`.
fn crash_duid(t: u8, n: u16) -> Vec<u8> {
    let [hi, lo] = n.to_be_bytes();
    vec![0, 3, 0, 1, 0x02, 0x7a, 0x4e, t, hi, lo]
}

const CRASH_THREADS: u8 = 8;
/// Solicits each thread keeps outstanding.
const CRASH_WINDOW: usize = 16;
/// Solicits each thread sends at most (far more than one second of load needs, so the load
/// is still running when the server is killed).
const CRASH_MAX_PER_THREAD: u16 = 50_000;

/// The crash test's subnet: LINK1 with an address pool large enough for any load.
const CRASH_POOL: Pools = Pools {
    na_last: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0xff, 0xffff),
    ..LINK1
};

/// One load thread: keeps `CRASH_WINDOW` rapid-commit Solicits for new DUIDs in flight until
/// `stop`, then drains what already arrived. Returns the acknowledged leases and any protocol
/// errors.
fn crash_load(
    t: u8,
    server: SocketAddr,
    server_duid: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
    sent_count: Arc<AtomicUsize>,
) -> (Vec<Acked>, Vec<String>) {
    let sock = UdpSocket::bind("[::1]:0").expect("bind client socket");
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let hard_end = Instant::now() + Duration::from_secs(20);
    let mut outstanding: HashMap<u32, (Vec<u8>, u32)> = HashMap::new();
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let mut buf = Vec::with_capacity(256);
    let mut rx = [0u8; 2048];
    let mut n: u16 = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed) || Instant::now() >= hard_end;
        while !stopping && outstanding.len() < CRASH_WINDOW && n < CRASH_MAX_PER_THREAD {
            let xid = (u32::from(t) << 16) | u32::from(n);
            let duid = crash_duid(t, n);
            let iaid = 0x1000_0000 | xid;
            solicit(&mut buf, xid, &duid, iaid);
            if sock.send_to(&buf, server).is_ok() {
                outstanding.insert(xid, (duid, iaid));
                sent_count.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        match sock.recv_from(&mut rx) {
            Ok((len, from)) => {
                if from != server {
                    continue;
                }
                let bytes = &rx[..len];
                let xid = u32::from_be_bytes([
                    0,
                    bytes.get(1).copied().unwrap_or(0),
                    bytes.get(2).copied().unwrap_or(0),
                    bytes.get(3).copied().unwrap_or(0),
                ]);
                let Some((duid, iaid)) = outstanding.remove(&xid) else {
                    errors.push(format!(
                        "reply for unknown or answered transaction {xid:#x}"
                    ));
                    continue;
                };
                match reply_addr(bytes, xid, &duid, iaid, &server_duid) {
                    Ok(addr) => {
                        acked.push(Acked { duid, iaid, addr });
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(format!("client {}: {e}", hex(&duid))),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stopping {
                    break;
                }
            }
            Err(e) => {
                if stopping {
                    break;
                }
                errors.push(format!("recv: {e}"));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    (acked, errors)
}

/// Sends one rapid-commit Solicit and waits for its Reply (3 tries, 1 s each).
fn solicit_once(
    sock: &UdpSocket,
    server: SocketAddr,
    xid: u32,
    duid: &[u8],
    iaid: u32,
    server_duid: &[u8],
) -> Result<Ipv6Addr, String> {
    let mut buf = Vec::new();
    let mut rx = [0u8; 2048];
    solicit(&mut buf, xid, duid, iaid);
    for _ in 0..3 {
        sock.send_to(&buf, server)
            .map_err(|e| format!("send: {e}"))?;
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            match sock.recv_from(&mut rx) {
                Ok((len, from))
                    if from == server && len >= 4 && rx[1..4] == xid.to_be_bytes()[1..4] =>
                {
                    return reply_addr(&rx[..len], xid, duid, iaid, server_duid);
                }
                Ok(_) => {}
                Err(_) => {}
            }
        }
    }
    Err("no reply after 3 tries".into())
}

/// A free UDP port on ::1 (a unique port matters: the server's SO_REUSEPORT sockets would
/// silently share a port with another tandem listening on it).
fn free_port() -> u16 {
    UdpSocket::bind("[::1]:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn crash_kill9_keeps_every_acknowledged_lease() {
    let test = "crash_kill9_keeps_every_acknowledged_lease";
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg = dir.path().join("tandem.toml");
    let port = free_port();
    let server_addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0));
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndata_dir = \"{}\"\nlisten = [\"[::1]:{port}\"]\nrapid_commit = true\n\
             [lease]\npreferred_lifetime_secs = 3600\nvalid_lifetime_secs = 7200\n{}",
            data.display(),
            CRASH_POOL.toml(None)
        ),
    )
    .expect("write config");
    let log1 = dir.path().join("server1.log");
    let mut server = start_server(&[], &cfg, &["--workers", "4"], &log1);
    let duid = Arc::new(server_duid(&log1));

    // Load from several threads, then SIGKILL the server while Solicits are in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CRASH_THREADS)
        .map(|t| {
            let (duid, stop) = (duid.clone(), stop.clone());
            let (count, sent) = (count.clone(), sent.clone());
            std::thread::spawn(move || crash_load(t, server_addr, duid, stop, count, sent))
        })
        .collect();
    let t0 = Instant::now();
    // About one second of load (at least 200 leases, at most 8 s), but kill before the threads
    // run out of Solicits, so that some are always in flight.
    let cap = usize::from(CRASH_THREADS) * usize::from(CRASH_MAX_PER_THREAD);
    while (t0.elapsed() < Duration::from_secs(1)
        || (count.load(Ordering::Relaxed) < 200 && t0.elapsed() < Duration::from_secs(8)))
        && sent.load(Ordering::Relaxed) < cap * 3 / 5
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent_before = sent.load(Ordering::Relaxed);
    server.proc.kill9(); // SIGKILL: no shutdown, no final commit
    let at_kill = count.load(Ordering::Relaxed);
    let load_time = t0.elapsed();
    stop.store(true, Ordering::Relaxed); // threads drain replies already in their sockets
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for h in threads {
        let (a, e) = h.join().expect("load thread");
        acked.extend(a);
        errors.extend(e);
    }
    let mut ck = Checks::default();
    ck.check(sent_before < cap, || {
        "the load ran out before the kill: nothing was in flight when the server died".into()
    });
    ck.check(errors.is_empty(), || {
        format!(
            "{} protocol errors under load, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        )
    });
    ck.check(acked.len() >= 100, || {
        format!(
            "only {} leases acknowledged in {:?} of load: too few for the test to mean anything",
            acked.len(),
            t0.elapsed()
        )
    });
    let mut by_addr: HashMap<Ipv6Addr, &Acked> = HashMap::new();
    for a in &acked {
        if let Some(prev) = by_addr.insert(a.addr, a) {
            ck.check_in("address acknowledged to two clients", false, || {
                format!(
                    "{} given to both {} and {}",
                    a.addr,
                    hex(&prev.duid),
                    hex(&a.duid)
                )
            });
        }
    }

    // The store as the crash left it.
    let check_acked = |ck: &mut Checks, rows: &[Row], when: &str| {
        let by: HashMap<Ipv6Addr, &Row> = rows
            .iter()
            .filter(|r| r.kind == "na")
            .map(|r| (r.addr, r))
            .collect();
        let mut lost = Vec::new();
        for a in &acked {
            match by.get(&a.addr) {
                Some(r) if r.state == "active" && r.duid == hex(&a.duid) && r.iaid == a.iaid => {}
                other => lost.push(format!(
                    "{} for {} iaid {}: store has {:?}",
                    a.addr,
                    hex(&a.duid),
                    a.iaid,
                    other
                )),
            }
        }
        ck.check(lost.is_empty(), || {
            format!(
                "{when}: {} of {} acknowledged leases are not active in the store for their client; first: {:#?}",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(5)]
            )
        });
    };
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[CRASH_POOL]);
    check_acked(&mut ck, &rows, "after kill -9");
    let stored_active = rows.iter().filter(|r| r.state == "active").count();

    // Restart on the same store: the leases are back in memory too.
    let log2 = dir.path().join("server2.log");
    let mut server2 = start_server(&[], &cfg, &["--workers", "4"], &log2);
    ck.eq(
        "server DUID after restart",
        server_duid(&log2),
        duid.to_vec(),
    );
    let restored = read_lossy(&log2)
        .lines()
        .find(|l| l.contains("leases restored"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("loaded="))
                .and_then(|v| v.parse::<usize>().ok())
        });
    ck.check(restored.is_some_and(|n| n >= acked.len()), || {
        format!(
            "restarted server restored {restored:?} leases, fewer than the {} acknowledged",
            acked.len()
        )
    });
    let sock = UdpSocket::bind("[::1]:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let step = (acked.len() / 64).max(1);
    let mut xid = 0x00f0_0000u32;
    for a in acked.iter().step_by(step).take(64) {
        xid += 1;
        let got = solicit_once(&sock, server_addr, xid, &a.duid, a.iaid, &duid);
        ck.check_in(
            "after restart a client did not get its lease back",
            got == Ok(a.addr),
            || {
                format!(
                    "after restart {} (iaid {}) got {got:?}, want its lease {}",
                    hex(&a.duid),
                    a.iaid,
                    a.addr
                )
            },
        );
    }
    // New clients must not be given a surviving lease.
    for n in 0..32u16 {
        xid += 1;
        let d = crash_duid(0xee, n);
        match solicit_once(&sock, server_addr, xid, &d, 1, &duid) {
            Ok(addr) => ck.check_in(
                "after restart a new client got a surviving lease",
                !by_addr.contains_key(&addr),
                || {
                    format!(
                        "after restart new client {} got {addr}, which {} holds",
                        hex(&d),
                        hex(&by_addr[&addr].duid)
                    )
                },
            ),
            Err(e) => ck.check_in("after restart a new client got no lease", false, || {
                format!("after restart new client {}: {e}", hex(&d))
            }),
        }
    }
    let rows = store_rows(&data);
    check_store_invariants(&mut ck, &rows, &[CRASH_POOL]);
    check_acked(&mut ck, &rows, "after restart");
    println!(
        "{test}: {load_time:?} of load: {sent_before} Solicits sent, {} leases acknowledged \
         ({at_kill} when the kill returned, {} drained after), {} in flight at the kill, \
         {stored_active} active in the store after kill -9",
        acked.len(),
        acked.len().saturating_sub(at_kill),
        sent_before.saturating_sub(at_kill)
    );
    server2.check_alive(&mut ck);
    ck.finish(
        test,
        &[
            ("server log before kill (tail)", tail(&log1, 10)),
            ("server log after restart (tail)", tail(&log2, 10)),
        ],
    );
    drop(server2);
}

// ---------------------------------------------------------------------------------------------
// The parsers above, on recorded output (no root or tools needed)

#[test]
fn output_parsers_read_recorded_tool_output() {
    let out = "Running: perfdhcp -6 ...\nReached max requests limit.\n\
        ***Statistics for: SOLICIT-ADVERTISE***\nsent packets: 300\nreceived packets: 299\n\
        drops: 1\ndrops ratio: 0.33 %\norphans: 2\nrejected leases: 3\nnon unique addresses: 4\n\n\
        min delay: 0.1 ms\n***Statistics for: RELEASE-REPLY***\nsent packets: 0\ndrops ratio: -nan %\n\
        Interrupted\n***Leases for REQUEST-REPLY***\nclient_id,adrress,prefix\n\
        00:01:00:01:32:99:da:80:00:0c:01:02:03:07,2001:db8:1::1:5000,2001:db8:80f8::\n\
        00:01:00:01:32:99:da:80:00:0c:01:02:03:08,,2001:db8:80f9::\n\n\
        ***Leases for RELEASE-REPLY***\nclient_id,adrress,prefix\n00:01:00:01:32:99:da:80:00:0c:01:02:03:07,,\n";
    let p = parse_perfdhcp(Some(0), out);
    assert_eq!(
        p.x("SOLICIT-ADVERTISE"),
        XStats {
            sent: 300,
            received: 299,
            drops: 1,
            orphans: 2,
            rejected: 3,
            non_unique: 4
        }
    );
    assert_eq!(p.x("RELEASE-REPLY"), XStats::default());
    assert!(!p.summary.contains("Reached max") && !p.summary.contains("2001:db8:80f8"));
    assert_eq!(
        p.leases("REQUEST-REPLY"),
        [
            PLease {
                client: "000100013299da80000c01020307".into(),
                addr: Some("2001:db8:1::1:5000".parse().unwrap()),
                prefix: Some("2001:db8:80f8::".parse().unwrap()),
            },
            PLease {
                client: "000100013299da80000c01020308".into(),
                addr: None,
                prefix: Some("2001:db8:80f9::".parse().unwrap()),
            },
        ]
    );
    assert_eq!(p.leases("RELEASE-REPLY").len(), 1);

    assert_eq!(iaid_of("88:bb:f6:06"), Some(0x88bb_f606));
    assert_eq!(iaid_of("\"g@? \""), Some(0x6740_3f20));
    assert_eq!(
        dhclient_bytes("\"a\\\"\\\\\\001\""),
        Some(b"a\"\\\x01".to_vec())
    );
    assert_eq!(
        dhclient_bytes("0:1:0:1:32:99:da:ca:9a:c3:88:bb:f6:6")
            .map(|b| hex(&b))
            .as_deref(),
        Some("000100013299daca9ac388bbf606")
    );

    let row = parse_row(
        "pd\t2001:db8:8010::/56\treleased\t000100013299\t2294019590\t1\t1795628643\t1795628603\t7",
    )
    .unwrap();
    assert_eq!(
        (
            row.kind.as_str(),
            row.len,
            row.state.as_str(),
            row.iaid,
            row.seq
        ),
        ("pd", 56, "released", 2294019590, 7)
    );
    assert!(LINK1.has_prefix(row.addr, row.len));
    assert!(!LINK1.has_prefix("2001:db8:8010:1::".parse().unwrap(), 56)); // host bits
    assert!(!LINK1.has_prefix("2001:db8:8100::".parse().unwrap(), 56)); // outside the /40
    assert!(!LINK1.has_prefix("2001:db8:8010::".parse().unwrap(), 64)); // wrong length
    assert!(LINK1.has_addr("2001:db8:1::1:ffff".parse().unwrap()));
    assert!(!LINK1.has_addr("2001:db8:1::2:0".parse().unwrap()));
}
