//! Where an AF_XDP reply to a routed sender goes: the next hop the kernel's routing table names
//! for its destination, at the MAC address the kernel's neighbour table gives for that hop.
//!
//! A reply frame leaves the NIC without the kernel's output path, so nothing would consult the
//! routing table for it. To a link-local sender (a client on the link) the request's source
//! MAC is right by definition. A relay's address is global, and the router that delivered its
//! message need not be the one the routing table picks for the answer (asymmetric routing,
//! policy routing, a router that drops what it did not route out, a route via another
//! interface). So the workers look each such destination up in a table the `xdp-routes` thread
//! fills from the kernel (an RTM_GETROUTE per destination, one neighbour dump per round):
//!
//! - next hop on the receiving interface with a usable neighbour entry: the frame goes to that
//!   MAC;
//! - anything else (a route out of another interface, an unreachable or local route, a next
//!   hop the kernel has not resolved yet, a destination not looked up yet, a failed lookup):
//!   the reply goes through the UDP socket, and the kernel routes and resolves it.
//!
//! The thread looks a new destination up as soon as a worker asks, looks every known one up
//! again every [`REFRESH`] (and the unresolved ones every [`RETRY`]), and forgets those no
//! reply used for [`IDLE_ROUNDS_MAX`] rounds. The table holds at most [`DESTINATIONS_MAX`]
//! destinations (relays are few); replies to others go through the kernel.

use super::neighbour;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::io;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Most destinations the table keeps.
pub const DESTINATIONS_MAX: usize = 4096;
/// Destinations the workers may have asked for that the thread has not looked up yet; more
/// asks are dropped (the worker asks again with its next reply there).
pub const ASK_QUEUE_MAX: usize = 1024;
/// How often every known destination is looked up again.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How often destinations whose next hop the kernel had not resolved are looked up again.
pub const RETRY: Duration = Duration::from_millis(100);
/// Refresh rounds a destination may go unused before it is forgotten.
pub const IDLE_ROUNDS_MAX: u32 = 30;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTN_UNICAST: u8 = 1;
const AF_INET6: u8 = 10;
const NLMSG_HEADER_LEN: usize = 16;

/// What the kernel's routing table says of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The interface it leaves by.
    pub oif: u32,
    /// The router it goes through; None when the destination is on that link.
    pub gateway: Option<Ipv6Addr>,
}

impl Route {
    /// The address whose MAC the frame carries: the router, or the destination itself.
    pub fn hop(&self, dst: Ipv6Addr) -> Ipv6Addr {
        self.gateway.unwrap_or(dst)
    }
}

/// How a reply to one destination leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// As a frame out of interface `ifindex` to `mac`.
    Frame {
        /// The interface.
        ifindex: u32,
        /// The next hop's MAC address.
        mac: [u8; 6],
    },
    /// Through the kernel: the route leaves by interface `oif` (0: no usable route), and
    /// whether the next hop was unresolved.
    Kernel {
        /// The interface the route leaves by (0: none).
        oif: u32,
        /// The next hop has no usable neighbour entry yet.
        unresolved: bool,
    },
}

impl NextHop {
    /// Whether the kernel had not resolved the next hop's MAC (looked up again every [`RETRY`]).
    pub fn unresolved(&self) -> bool {
        matches!(
            self,
            NextHop::Kernel {
                unresolved: true,
                ..
            }
        )
    }
}

/// Decides a destination's [`NextHop`] from its route (None: unreachable, not unicast, or the
/// lookup failed) and the neighbour table.
pub fn decide(
    dst: Ipv6Addr,
    route: Option<Route>,
    neighbours: &HashMap<(u32, Ipv6Addr), [u8; 6]>,
) -> NextHop {
    match route {
        None => NextHop::Kernel {
            oif: 0,
            unresolved: false,
        },
        Some(r) => match neighbours.get(&(r.oif, r.hop(dst))) {
            Some(&mac) => NextHop::Frame {
                ifindex: r.oif,
                mac,
            },
            None => NextHop::Kernel {
                oif: r.oif,
                unresolved: true,
            },
        },
    }
}

/// The labels of [`ThroughKernel`], in its order, as `tandem_xdp_kernel_routed_total` names
/// them.
pub const KERNEL_REASONS: [&str; 5] = [
    "next_hop_not_looked_up",
    "next_hop_unresolved",
    "next_hop_on_other_interface",
    "no_route",
    "site_scope_multicast",
];

/// Why a reply leaves through the kernel's UDP socket instead of as a frame (`as usize`
/// indexes [`KERNEL_REASONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThroughKernel {
    /// The sender is routed and its next hop not looked up yet.
    NotLookedUp,
    /// The kernel has not resolved the next hop's MAC yet.
    Unresolved,
    /// The route leaves by another interface than the one the request came in on.
    OtherInterface,
    /// No unicast route.
    NoRoute,
    /// The request went to All_DHCP_Servers (ff05::1:3), from a relay that may be routers away.
    SiteScopeMulticast,
}

impl ThroughKernel {
    /// Its metric label.
    pub fn label(self) -> &'static str {
        KERNEL_REASONS[self as usize]
    }
}

/// Where a reply to a routed sender whose next hop is `hop` (None: not looked up yet) goes
/// from interface `ifindex`: as a frame to the MAC returned, or through the kernel, and why.
pub fn frame_mac(hop: Option<NextHop>, ifindex: u32) -> Result<[u8; 6], ThroughKernel> {
    match hop {
        None => Err(ThroughKernel::NotLookedUp),
        Some(NextHop::Frame { ifindex: i, mac }) if i == ifindex => Ok(mac),
        Some(NextHop::Kernel {
            unresolved: true,
            oif,
        }) if oif == ifindex => Err(ThroughKernel::Unresolved),
        Some(NextHop::Kernel { oif: 0, .. }) => Err(ThroughKernel::NoRoute),
        Some(NextHop::Frame { .. } | NextHop::Kernel { .. }) => Err(ThroughKernel::OtherInterface),
    }
}

/// One destination's entry: its next hop and whether a reply used it since the last round.
#[derive(Debug)]
pub struct Entry {
    /// How replies to it leave.
    pub hop: NextHop,
    used: AtomicBool,
}

/// The table the workers read and the `xdp-routes` thread writes: a snapshot replaced whole,
/// with a version the workers compare once per batch.
pub struct NextHops {
    snapshot: RwLock<Arc<HashMap<Ipv6Addr, Entry>>>,
    version: AtomicU64,
    ask: Sender<(Ipv6Addr, Ipv6Addr)>,
}

impl NextHops {
    /// An empty table and the receiving end of the workers' asks (for [`run`]).
    pub fn new() -> (Arc<NextHops>, Receiver<(Ipv6Addr, Ipv6Addr)>) {
        let (ask, asked) = crossbeam_channel::bounded(ASK_QUEUE_MAX);
        (
            Arc::new(NextHops {
                snapshot: RwLock::new(Arc::new(HashMap::new())),
                version: AtomicU64::new(0),
                ask,
            }),
            asked,
        )
    }

    fn publish(&self, table: HashMap<Ipv6Addr, Entry>) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// A worker's view of the table: the snapshot it read last, taken again when the version moves.
pub struct Reader {
    shared: Arc<NextHops>,
    version: u64,
    table: Arc<HashMap<Ipv6Addr, Entry>>,
    /// Destinations asked for since the snapshot was taken (each is asked once per snapshot).
    asked: Vec<Ipv6Addr>,
}

/// Most destinations a worker remembers having asked for within one snapshot.
const ASKED_MAX: usize = 64;

impl Reader {
    /// A reader of `shared`.
    pub fn new(shared: Arc<NextHops>) -> Reader {
        let table = shared
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Reader {
            version: shared.version.load(Ordering::Acquire),
            shared,
            table,
            asked: Vec::new(),
        }
    }

    /// Takes the newest snapshot if there is one (once per batch).
    pub fn refresh(&mut self) {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.version {
            self.version = v;
            self.table = self
                .shared
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            self.asked.clear();
        }
    }

    /// The next hop of `dst`, marking it used; None (and the thread asked to look it up for
    /// replies from `src`) when the table does not have it.
    pub fn get(&mut self, dst: Ipv6Addr, src: Ipv6Addr) -> Option<NextHop> {
        let Some(e) = self.table.get(&dst) else {
            if !self.asked.contains(&dst) && self.asked.len() < ASKED_MAX {
                self.asked.push(dst);
                let _ = self.shared.ask.try_send((dst, src));
            }
            return None;
        };
        if !e.used.load(Ordering::Relaxed) {
            e.used.store(true, Ordering::Relaxed);
        }
        Some(e.hop)
    }
}

/// Asks the kernel for its route to `dst` for a packet from `src`: the output interface and
/// the gateway, or None when the route is not a unicast one (unreachable, prohibited,
/// blackhole, local) or the kernel has none.
pub(super) fn route(
    nl: &mut neighbour::Netlink,
    dst: Ipv6Addr,
    src: Option<Ipv6Addr>,
) -> io::Result<Option<Route>> {
    let attrs = 4 + 16 + src.map_or(0, |_| 4 + 16);
    let mut req = vec![0u8; NLMSG_HEADER_LEN + RTMSG_LEN + attrs];
    let rt = NLMSG_HEADER_LEN;
    req[rt] = AF_INET6;
    req[rt + 1] = 128; // dst_len
    req[rt + 2] = if src.is_some() { 128 } else { 0 }; // src_len
    let mut at = rt + RTMSG_LEN;
    for (kind, a) in [(RTA_DST, Some(dst)), (RTA_SRC, src)] {
        if let Some(a) = a {
            req[at..at + 2].copy_from_slice(&20u16.to_ne_bytes());
            req[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
            req[at + 4..at + 20].copy_from_slice(&a.octets());
            at += 20;
        }
    }
    let mut found = None;
    let r = nl.request(RTM_GETROUTE, 0, &mut req, &mut |msg| {
        found = parse_route(msg);
    });
    match r {
        Ok(()) => Ok(found.flatten()),
        // No route at all: the kernel answers with an error.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads an RTM_NEWROUTE answer: Some(None) for a route that is not unicast, None for another
/// message.
fn parse_route(msg: &[u8]) -> Option<Option<Route>> {
    if u16::from_ne_bytes([msg[4], msg[5]]) != RTM_NEWROUTE
        || msg.len() < NLMSG_HEADER_LEN + RTMSG_LEN
    {
        return None;
    }
    let rt = &msg[NLMSG_HEADER_LEN..];
    if rt[0] != AF_INET6 || rt[7] != RTN_UNICAST {
        return Some(None);
    }
    let (mut oif, mut gateway) = (None, None);
    neighbour::attributes(
        msg,
        NLMSG_HEADER_LEN + RTMSG_LEN,
        &mut |kind, v| match kind {
            RTA_OIF if v.len() == 4 => oif = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
            RTA_GATEWAY if v.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(v);
                gateway = Some(Ipv6Addr::from(o));
            }
            _ => {}
        },
    );
    Some(oif.map(|oif| Route { oif, gateway }))
}

/// What the thread keeps of a destination besides its entry.
struct Known {
    hop: NextHop,
    /// The address our replies to it come from (the route may depend on it).
    src: Ipv6Addr,
    idle_rounds: u32,
}

/// The `xdp-routes` thread: looks up what the workers ask for at once, everything every
/// [`REFRESH`], the unresolved every [`RETRY`]; publishes a new snapshot when anything changed;
/// returns when `stop` is set (checked at least every [`RETRY`]).
pub fn run(shared: Arc<NextHops>, asked: Receiver<(Ipv6Addr, Ipv6Addr)>, stop: &AtomicBool) {
    let mut known: HashMap<Ipv6Addr, Known> = HashMap::new();
    let mut last_refresh = Instant::now();
    let mut last_retry = Instant::now();
    let mut neighbours = HashMap::new();
    // Whether the last read of the neighbour table failed (logged once until it works again).
    let mut neighbours_failed = false;
    while !stop.load(Ordering::Relaxed) {
        let mut new = Vec::new();
        if let Ok(d) = asked.recv_timeout(RETRY) {
            new.push(d);
            new.extend(asked.try_iter().take(ASK_QUEUE_MAX));
        }
        new.retain(|(d, _)| !known.contains_key(d));
        new.sort();
        new.dedup_by_key(|(d, _)| *d);
        let refresh = last_refresh.elapsed() >= REFRESH;
        let retry = last_retry.elapsed() >= RETRY && known.values().any(|k| k.hop.unresolved());
        if new.is_empty() && !refresh && !retry {
            continue;
        }
        // One socket for this round's neighbour dump and route lookups.
        let mut netlink = neighbour::Netlink::open();
        let table = match &mut netlink {
            Ok(nl) => nl.table(),
            Err(e) => Err(io::Error::new(e.kind(), format!("no netlink socket: {e}"))),
        };
        let neighbours_read = match table {
            Ok(t) => {
                if neighbours_failed {
                    tracing::info!("the neighbour table can be read again");
                }
                neighbours_failed = false;
                neighbours = t;
                true
            }
            Err(e) => {
                if !neighbours_failed {
                    tracing::warn!(error = %e, "reading the neighbour table failed; AF_XDP replies to routed senders go through the kernel until it works");
                }
                neighbours_failed = true;
                false
            }
        };
        let mut changed = false;
        if refresh {
            last_refresh = Instant::now();
            let snapshot = shared
                .snapshot
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            known.retain(|dst, k| {
                // Cleared for the next round: a worker that replies there sets it again.
                let used = snapshot
                    .get(dst)
                    .is_some_and(|e| e.used.swap(false, Ordering::Relaxed));
                k.idle_rounds = if used { 0 } else { k.idle_rounds + 1 };
                if k.idle_rounds > IDLE_ROUNDS_MAX {
                    tracing::debug!(destination = %dst, "AF_XDP next hop forgotten (unused)");
                    changed = true;
                }
                k.idle_rounds <= IDLE_ROUNDS_MAX
            });
        }
        if retry {
            last_retry = Instant::now();
        }
        let look_again: Vec<(Ipv6Addr, Ipv6Addr)> = known
            .iter()
            .filter(|(_, k)| refresh || k.hop.unresolved())
            .map(|(d, k)| (*d, k.src))
            .collect();
        for (dst, src) in new.into_iter().chain(look_again) {
            let fresh = !known.contains_key(&dst);
            if fresh && known.len() >= DESTINATIONS_MAX {
                continue;
            }
            let looked_up = match &mut netlink {
                Ok(nl) => route(nl, dst, Some(src)),
                Err(e) => Err(io::Error::from(e.kind())),
            };
            let hop = match looked_up {
                Ok(r) if neighbours_read => decide(dst, r, &neighbours),
                Ok(_) => NextHop::Kernel {
                    oif: 0,
                    unresolved: false,
                },
                Err(e) => {
                    tracing::debug!(destination = %dst, error = %e, "route lookup failed");
                    NextHop::Kernel {
                        oif: 0,
                        unresolved: false,
                    }
                }
            };
            let before = known.get(&dst).map(|k| k.hop);
            if before != Some(hop) {
                changed = true;
                log_change(dst, before, hop);
            }
            let k = known.entry(dst).or_insert(Known {
                hop,
                src,
                idle_rounds: 0,
            });
            k.hop = hop;
        }
        if changed {
            shared.publish(
                known
                    .iter()
                    .map(|(d, k)| {
                        (
                            *d,
                            Entry {
                                hop: k.hop,
                                used: AtomicBool::new(false),
                            },
                        )
                    })
                    .collect(),
            );
        }
    }
}

fn log_change(dst: Ipv6Addr, before: Option<NextHop>, hop: NextHop) {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    match hop {
        NextHop::Frame { ifindex, mac: m } => tracing::info!(
            destination = %dst,
            ifindex,
            mac = %mac(m),
            first = before.is_none(),
            "AF_XDP replies to this destination go to its next hop's MAC (kernel route and neighbour table)"
        ),
        NextHop::Kernel { oif, unresolved } => tracing::info!(
            destination = %dst,
            oif,
            unresolved,
            first = before.is_none(),
            "AF_XDP replies to this destination go through the kernel (route via another interface, no route, or next hop not resolved yet)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_reply_goes_as_a_frame_only_to_a_resolved_hop_on_its_own_interface() {
        for (why, label) in [
            (ThroughKernel::NotLookedUp, "next_hop_not_looked_up"),
            (ThroughKernel::Unresolved, "next_hop_unresolved"),
            (ThroughKernel::OtherInterface, "next_hop_on_other_interface"),
            (ThroughKernel::NoRoute, "no_route"),
            (ThroughKernel::SiteScopeMulticast, "site_scope_multicast"),
        ] {
            assert_eq!(why.label(), label);
        }
        let relay = a("2001:db8:9::1");
        let (gw, mac) = (a("2001:db8:5::b"), [2, 0, 0, 0, 0, 0xb]);
        let neighbours = HashMap::from([((3, gw), mac), ((3, relay), [2, 0, 0, 0, 0, 1])]);
        let via = |oif, gateway| {
            Some(Route {
                oif,
                gateway: Some(gateway),
            })
        };
        // Through the gateway the route names, not the destination's own entry.
        let hop = decide(relay, via(3, gw), &neighbours);
        assert_eq!(hop, NextHop::Frame { ifindex: 3, mac });
        assert_eq!(frame_mac(Some(hop), 3), Ok(mac));
        // The same hop seen from a worker on another interface.
        assert_eq!(frame_mac(Some(hop), 4), Err(ThroughKernel::OtherInterface));
        // On-link destination: its own entry.
        let on_link = Some(Route {
            oif: 3,
            gateway: None,
        });
        assert_eq!(
            decide(relay, on_link, &neighbours),
            NextHop::Frame {
                ifindex: 3,
                mac: [2, 0, 0, 0, 0, 1]
            }
        );
        // A gateway the kernel has not resolved.
        let hop = decide(relay, via(3, a("2001:db8:5::c")), &neighbours);
        assert_eq!(
            hop,
            NextHop::Kernel {
                oif: 3,
                unresolved: true
            }
        );
        assert_eq!(frame_mac(Some(hop), 3), Err(ThroughKernel::Unresolved));
        // Resolved, but on another interface than the gateway's entry.
        let hop = decide(relay, via(4, gw), &neighbours);
        assert_eq!(frame_mac(Some(hop), 3), Err(ThroughKernel::OtherInterface));
        // No unicast route.
        let hop = decide(relay, None, &neighbours);
        assert_eq!(frame_mac(Some(hop), 3), Err(ThroughKernel::NoRoute));
        assert_eq!(frame_mac(None, 3), Err(ThroughKernel::NotLookedUp));
    }

    /// An RTM_NEWROUTE answer of type `kind` with the given attributes.
    fn answer(kind: u8, oif: Option<u32>, gateway: Option<Ipv6Addr>) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HEADER_LEN + RTMSG_LEN];
        m[4..6].copy_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        m[NLMSG_HEADER_LEN] = AF_INET6;
        m[NLMSG_HEADER_LEN + 7] = kind;
        if let Some(o) = oif {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&RTA_OIF.to_ne_bytes());
            m.extend_from_slice(&o.to_ne_bytes());
        }
        if let Some(g) = gateway {
            m.extend_from_slice(&20u16.to_ne_bytes());
            m.extend_from_slice(&RTA_GATEWAY.to_ne_bytes());
            m.extend_from_slice(&g.octets());
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn route_answers_are_read_for_interface_and_gateway_and_only_when_unicast() {
        let gw = a("fe80::1");
        assert_eq!(
            parse_route(&answer(RTN_UNICAST, Some(7), Some(gw))),
            Some(Some(Route {
                oif: 7,
                gateway: Some(gw)
            }))
        );
        assert_eq!(
            parse_route(&answer(RTN_UNICAST, Some(7), None)),
            Some(Some(Route {
                oif: 7,
                gateway: None
            }))
        );
        // Unreachable (7), and a unicast answer without an interface.
        assert_eq!(parse_route(&answer(7, Some(7), None)), Some(None));
        assert_eq!(parse_route(&answer(RTN_UNICAST, None, None)), Some(None));
        // Truncated attributes end the read without a panic.
        let full = answer(RTN_UNICAST, Some(7), Some(gw));
        for cut in NLMSG_HEADER_LEN..full.len() {
            let _ = parse_route(&full[..cut]);
        }
    }

    #[test]
    fn a_reader_asks_once_per_snapshot_and_sees_what_is_published() {
        let (shared, asked) = NextHops::new();
        let mut r = Reader::new(shared.clone());
        let dst = a("2001:db8:9::1");
        let ours = a("2001:db8:5::1");
        assert!(r.get(dst, ours).is_none());
        assert!(r.get(dst, ours).is_none());
        assert_eq!(asked.try_iter().collect::<Vec<_>>(), vec![(dst, ours)]);
        let hop = NextHop::Frame {
            ifindex: 3,
            mac: [2, 0, 0, 0, 0, 7],
        };
        shared.publish(HashMap::from([(
            dst,
            Entry {
                hop,
                used: AtomicBool::new(false),
            },
        )]));
        assert!(
            r.get(dst, ours).is_none(),
            "the snapshot is taken per batch"
        );
        r.refresh();
        assert_eq!(r.get(dst, ours), Some(hop));
        assert_eq!(r.get(dst, ours), Some(hop));
        let snap = shared.snapshot.read().unwrap().clone();
        assert!(snap[&dst].used.load(Ordering::Relaxed));
    }
}
