//! Network namespaces and veth pairs for the tests that need real interfaces. Every name
//! starts with `tdm` (so nothing here can touch what others own); leftovers of the same names
//! from an earlier run that was killed are deleted first, and the guards delete what they made
//! when dropped, also when the test fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::proc::{must, run};
use super::tools::{Tools, tool_or_name};

/// Linux interface names (the veth ends carry their namespace's name) have at most 15 chars.
const IFNAMSIZ_MAX: usize = 15;

/// A network namespace with loopback up; deleted, with anything still running in it, on drop.
pub struct Netns {
    pub name: String,
    ip: String,
    timeout: String,
}

impl Netns {
    /// Creates namespace `name` (which must start with `tdm`), after deleting a leftover of
    /// that name.
    pub fn new(name: &str) -> Netns {
        assert!(
            name.starts_with("tdm"),
            "test namespaces are named tdm*: {name}"
        );
        assert!(
            name.len() <= IFNAMSIZ_MAX,
            "namespace {name}: its veth end would need a name of at most 15 chars"
        );
        let ns = Netns {
            name: name.to_string(),
            ip: tool_or_name("ip"),
            timeout: tool_or_name("timeout"),
        };
        ns.remove(); // leftovers of an earlier run that was killed
        let (ip, to) = (ns.ip.as_str(), ns.timeout.as_str());
        must(to, 10, &[ip, "netns", "add", &ns.name]);
        must(to, 10, &[ip, "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec <ns>` as an argument prefix (it execs the program, so a process spawned
    /// through it has the PID that was spawned).
    pub fn exec(&self) -> Vec<String> {
        vec![
            self.ip.clone(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// A command that runs `program` in the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Reads `path` (a /proc or /sys file) as this namespace sees it; empty if it cannot.
    pub fn read(&self, path: &str) -> String {
        let mut args = self.exec();
        args.extend(["cat".to_string(), path.to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&self.timeout, 10, &refs).out
    }

    /// Where this namespace's kernel lost datagrams it was asked to send: `dev`'s transmit
    /// drops (veth drops a frame when its peer's XDP ring of 256 is full) and UDP's send
    /// buffer errors (which is how such a drop reaches a UDP sender, who is not told), for a
    /// test's failure message.
    pub fn send_losses(&self, dev: &str) -> String {
        let tx_dropped = self.read(&format!("/sys/class/net/{dev}/statistics/tx_dropped"));
        let snmp = self.read("/proc/net/snmp6");
        let sndbuf = snmp
            .lines()
            .find_map(|l| l.strip_prefix("Udp6SndbufErrors"))
            .map(str::trim)
            .unwrap_or("?");
        format!(
            "{dev} tx_dropped {}, Udp6SndbufErrors {sndbuf}",
            tx_dropped.trim()
        )
    }

    /// Runs `ip -n <ns> args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec![self.ip.as_str(), "-n", self.name.as_str()];
        full.extend_from_slice(args);
        must(&self.timeout, 10, &full)
    }

    /// Waits (at most 10 s) until interface `dev` has a usable (non-tentative) link-local
    /// address: until then the kernel cannot send neighbour solicitations from it.
    pub fn wait_link_local(&self, dev: &str) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.ip(&["-6", "addr", "show", "dev", dev, "scope", "link"]);
            if out.contains("fe80") && !out.contains("tentative") {
                return;
            }
            assert!(
                Instant::now() < end,
                "no usable link-local address on {dev} in {}:\n{out}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Deletes the namespace and a veth end of the same name left in the root namespace.
    pub fn remove(&self) {
        let (ip, to) = (self.ip.as_str(), self.timeout.as_str());
        // Anything still running in the namespace was started by this test (or by an earlier
        // run of it): kill it by PID, or the namespace and its veth outlive the deletion.
        let pids = run(to, 10, &[ip, "netns", "pids", &self.name]);
        if pids.ok {
            for pid in pids.out.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = run(to, 10, &[ip, "netns", "delete", &self.name]);
        // A veth end left in the root namespace by some manual run.
        let _ = Command::new(ip)
            .args(["link", "delete", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Namespaces on one Ethernet segment, as separate hosts would be: `hub` (`tdm<tag>r`) holds
/// a bridge named like itself, and each member (`tdm<tag><suffix>`) joins it through a veth
/// whose end in the member is named like the member, and whose end on the bridge is that name
/// plus `p`. Global addresses are added without DAD, so they are usable at once. Everything is
/// deleted on drop (members first, then the hub).
pub struct Lan {
    /// Member namespaces, in the order given.
    pub members: Vec<Netns>,
    /// The bridge's namespace (the relay side in the tests).
    pub hub: Netns,
}

impl Lan {
    /// Creates the hub with `hub_addr` (`addr/len`) on its bridge, and one member per
    /// `(suffix, addr/len)`.
    pub fn new(tag: &str, hub_addr: &str, members: &[(&str, &str)]) -> Lan {
        let hub = Netns::new(&format!("tdm{tag}r"));
        let br = hub.name.clone();
        hub.ip(&["link", "add", &br, "type", "bridge"]);
        hub.ip(&["addr", "add", hub_addr, "dev", &br, "nodad"]);
        hub.ip(&["link", "set", &br, "up"]);
        let mut lan = Lan {
            members: Vec::new(),
            hub,
        };
        for (suffix, addr) in members {
            let m = Netns::new(&format!("tdm{tag}{suffix}"));
            let port = format!("{}p", m.name);
            assert!(port.len() <= IFNAMSIZ_MAX, "{port}: longer than 15 chars");
            must(
                &m.timeout,
                10,
                &[
                    &m.ip,
                    "link",
                    "add",
                    &m.name,
                    "netns",
                    &m.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &lan.hub.name,
                ],
            );
            lan.hub.ip(&["link", "set", &port, "master", &br, "up"]);
            m.ip(&["addr", "add", addr, "dev", &m.name, "nodad"]);
            m.ip(&["link", "set", &m.name, "up"]);
            lan.members.push(m);
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // The members' veths go with their namespaces; then the bridge's.
        for m in &self.members {
            m.remove();
        }
        self.hub.remove();
    }
}

/// `ethtool -K <veth end> tx off` in `ns` (its veth end has the namespace's name).
fn checksum_offload_off(ns: &Netns, t: &Tools) {
    ns.checksum_offload_off(t, &ns.name);
}

impl Netns {
    /// `ethtool -K <dev> tx off` in this namespace: a local sender's UDP checksums are then
    /// filled in before the frame leaves (an AF_XDP receiver refuses them otherwise).
    pub fn checksum_offload_off(&self, t: &Tools, dev: &str) {
        let ethtool = super::tools::find_tool("ethtool").expect("ethtool (Debian package ethtool)");
        let mut args = self.exec();
        args.extend([ethtool, "-K".into(), dev.into(), "tx".into(), "off".into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&t.timeout, 10, &refs);
        assert!(
            r.ok,
            "ethtool -K {dev} tx off in {} failed: {}",
            self.name, r.out
        );
    }
}

/// A veth pair from `a` (end `a_end`, address `a_addr`, `addr/len`) to `b` (`b_end`,
/// `b_addr`), both up with their addresses added without DAD; `b`'s end has its tx checksum
/// offload off (`b` sends to an AF_XDP receiver); returns once both ends have usable
/// link-local addresses (neighbour discovery needs them). Deleted with the namespaces.
pub fn veth(t: &Tools, a: (&Netns, &str, &str), b: (&Netns, &str, &str)) {
    let ((a, a_end, a_addr), (b, b_end, b_addr)) = (a, b);
    a.ip(&[
        "link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", &b.name,
    ]);
    for (ns, end, addr) in [(a, a_end, a_addr), (b, b_end, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", end, "nodad"]);
        ns.ip(&["link", "set", end, "up"]);
    }
    b.checksum_offload_off(t, b_end);
    a.wait_link_local(a_end);
    b.wait_link_local(b_end);
}

/// Two namespaces joined by a veth pair: `tdm<tag>s` runs the server on its end of the pair
/// (also named `tdm<tag>s`), `tdm<tag>c` runs the clients on `tdm<tag>c`. DAD is off in both,
/// so addresses are usable at once. Both are deleted on drop.
pub struct Topo {
    /// Server namespace and its veth end.
    pub s: Netns,
    /// Client namespace and its veth end.
    pub c: Netns,
}

impl Topo {
    /// Turns the client end's tx checksum offload off (`ethtool -K <c> tx off`): veth hands a
    /// local sender's frames to XDP with the UDP checksum not yet filled in, which the AF_XDP
    /// datapath (like a real NIC's receiver) refuses.
    pub fn client_checksum_offload_off(&self, t: &Tools) {
        checksum_offload_off(&self.c, t);
    }

    /// Creates `tdm<tag>s` and `tdm<tag>c`, link-local on both ends plus the given global
    /// addresses (`addr/len`), DAD off, links up.
    pub fn new(t: &Tools, tag: &str, server_addrs: &[&str], client_addrs: &[&str]) -> Topo {
        Topo::with_queues(t, tag, server_addrs, client_addrs, 1)
    }

    /// Turns the server end's tx checksum offload off too: a kernel sender there (the UDP
    /// datapath) otherwise leaves its checksums to an offload veth never does, and an AF_XDP
    /// receiver at the client end (tandem-gen --datapath xdp) refuses them.
    pub fn server_checksum_offload_off(&self, t: &Tools) {
        checksum_offload_off(&self.s, t);
    }

    /// Gives the client namespace a permanent neighbour entry for `server_addr` (no prefix
    /// length) on the server end's link-layer address. A burst sent before neighbour discovery
    /// has answered waits in the kernel's queue for an unresolved neighbour, which holds about
    /// 200 datagrams and drops the oldest beyond that; a relay that has been forwarding knows
    /// its server's address already.
    pub fn client_knows_server_address(&self, server_addr: &str) {
        let brief = self.s.ip(&["-br", "link", "show", "dev", &self.s.name]);
        let mac = brief
            .split_whitespace()
            .nth(2)
            .filter(|m| m.len() == 17 && m.matches(':').count() == 5)
            .unwrap_or_else(|| panic!("no link-layer address in `ip -br link`: {brief}"))
            .to_string();
        self.c.ip(&[
            "-6",
            "neigh",
            "replace",
            server_addr,
            "lladdr",
            &mac,
            "dev",
            &self.c.name,
            "nud",
            "permanent",
        ]);
    }

    /// [`Topo::new`] with `queues` receive and transmit queues on each veth end.
    pub fn with_queues(
        t: &Tools,
        tag: &str,
        server_addrs: &[&str],
        client_addrs: &[&str],
        queues: u32,
    ) -> Topo {
        let topo = Topo {
            s: Netns::new(&format!("tdm{tag}s")),
            c: Netns::new(&format!("tdm{tag}c")),
        };
        for ns in [&topo.s, &topo.c] {
            // Before any interface but loopback exists in it, so the veth end inherits the
            // default too.
            must(
                &ns.timeout,
                10,
                &[
                    &ns.ip,
                    "netns",
                    "exec",
                    &ns.name,
                    &t.sysctl,
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            );
        }
        let (s, c) = (topo.s.name.as_str(), topo.c.name.as_str());
        let q = queues.to_string();
        must(
            &topo.s.timeout,
            10,
            &[
                &topo.s.ip,
                "link",
                "add",
                s,
                "netns",
                s,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                c,
                "netns",
                c,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ],
        );
        for (ns, addrs) in [(&topo.s, server_addrs), (&topo.c, client_addrs)] {
            for a in addrs {
                ns.ip(&["addr", "add", a, "dev", &ns.name, "nodad"]);
            }
            ns.ip(&["link", "set", &ns.name, "up"]);
        }
        // Wait for usable (non-tentative) link-local addresses on both ends.
        for ns in [&topo.s, &topo.c] {
            ns.wait_link_local(&ns.name);
        }
        topo
    }
}
