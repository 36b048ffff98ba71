//! Integration tests for the sans-IO DHCPv6 engine (RFC 8415 §16, §18.3, §18.4, §19).
//!
//! Client packets are built with the crate's `MessageWriter` (relay levels by hand); replies are
//! parsed with the crate's own codec AND, for every direct reply and every relayed inner
//! message, decoded with `dhcproto` as an independent oracle (see [`view`]).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::Arc;

use dhcproto::Decodable;
use dhcproto::v6::{DhcpOption, OptionCode};
use proptest::prelude::*;
use tandem_core::config::{self, Config, ResourceKind};
use tandem_core::engine::{Dropped, Engine, Outcome, Policy, Received, Scratch};
use tandem_core::lease::{Lease, LeaseState};
use tandem_core::pool::{Allocator, PoolUsage, client_key, spread};
use tandem_core::wire::{
    Message, MessageType, MessageWriter, StatusCode, WireError, opt, unwrap_relay_replies,
};

// ---------------------------------------------------------------------------------------------
// Configuration

const SERVER_DUID: &[u8] = &[0, 4, 1, 2, 3, 4];
const OTHER_SERVER_DUID: &[u8] = &[0, 4, 9, 9, 9, 9];

/// The brief's example configuration; `server_extra` lines go under `[server]` (and may
/// override `rapid_commit = true`).
fn base_conf(server_extra: &str) -> String {
    let rapid = if server_extra.contains("rapid_commit") {
        ""
    } else {
        "rapid_commit = true"
    };
    format!(
        r#"[server]
listen = ["[::1]:5547"]
{rapid}
{server_extra}
[lease]
preferred_lifetime_secs = 100
valid_lifetime_secs = 200
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::100-2001:db8:1::1ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/40", delegated_len = 56 }}]
"#
    )
}

/// Two subnets; the second optionally bound to an interface, with its own lifetimes.
fn two_subnets(subnet2_extra: &str, server_extra: &str) -> String {
    format!(
        r#"{}[[subnet]]
id = 2
prefix = "2001:db8:2::/64"
{subnet2_extra}
pools = [{{ range = "2001:db8:2::100-2001:db8:2::1ff" }}]
lease = {{ preferred_lifetime_secs = 300, valid_lifetime_secs = 600 }}
"#,
        base_conf(server_extra)
    )
}

/// A single small subnet: addresses 2001:db8:1::100 to `last_addr`, plus optional `pd_pools`.
fn small_conf(last_addr: &str, pd: &str) -> String {
    format!(
        r#"[server]
listen = ["[::1]:5547"]
rapid_commit = true
[lease]
preferred_lifetime_secs = 100
valid_lifetime_secs = 200
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::100-{last_addr}" }}]
{pd}
"#
    )
}

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn in_range(a: Ipv6Addr, first: &str, last: &str) -> bool {
    (u128::from(ip(first))..=u128::from(ip(last))).contains(&u128::from(a))
}

fn pool1(a: Ipv6Addr) -> bool {
    in_range(a, "2001:db8:1::100", "2001:db8:1::1ff")
}

fn pool2(a: Ipv6Addr) -> bool {
    in_range(a, "2001:db8:2::100", "2001:db8:2::1ff")
}

/// Client DUID number `n` (DUID-LL style, 10 bytes).
fn duid(n: u16) -> Vec<u8> {
    let [a, b] = n.to_be_bytes();
    vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, a, b]
}

// ---------------------------------------------------------------------------------------------
// Server harness

struct Srv {
    cfg: Arc<Config>,
    alloc: Arc<Allocator>,
    eng: Engine,
    scratch: Scratch,
    /// The failover policy packets are handled under (a server on its own by default).
    policy: Policy,
    /// With several failover relationships: one policy each, used instead of `policy`.
    policies: Vec<Policy>,
}

#[derive(Debug)]
struct Res {
    out: Outcome,
    reply: Vec<u8>,
    writes: Vec<Lease>,
}

fn link_local() -> SocketAddrV6 {
    "[fe80::1%1]:546".parse().unwrap()
}

impl Srv {
    fn new(text: &str) -> Self {
        let cfg = Arc::new(config::parse("t", text).unwrap());
        let alloc = Arc::new(Allocator::new(&cfg.subnets));
        let eng = Engine::new(
            cfg.clone(),
            SERVER_DUID.to_vec().into_boxed_slice(),
            alloc.clone(),
        );
        Srv {
            cfg,
            alloc,
            eng,
            scratch: Scratch::default(),
            policy: Policy::STANDALONE,
            policies: Vec::new(),
        }
    }

    fn rx_full(
        &mut self,
        now: u64,
        src: SocketAddrV6,
        multicast: bool,
        iface: Option<&str>,
        bytes: &[u8],
    ) -> Res {
        let mut reply = vec![0xee; 3]; // stale content must be cleared by the engine
        let mut writes = Vec::new();
        let rx = Received {
            now_secs: now,
            now_ms: now * 1000,
            src,
            multicast,
            interface: iface,
            bytes,
        };
        let policies = if self.policies.is_empty() {
            std::slice::from_ref(&self.policy)
        } else {
            &self.policies[..]
        };
        let out = self
            .eng
            .handle_with(policies, &rx, &mut reply, &mut self.scratch, &mut writes);
        if let Outcome::Dropped(_) = out {
            assert!(reply.is_empty(), "dropped but reply buffer not empty");
            assert!(writes.is_empty(), "dropped but writes: {writes:?}");
        }
        Res { out, reply, writes }
    }

    /// Multicast from a link-local source, no interface name, at t=1000.
    fn send(&mut self, bytes: &[u8]) -> Res {
        self.at(1000, bytes)
    }

    fn at(&mut self, now: u64, bytes: &[u8]) -> Res {
        self.rx_full(now, link_local(), true, None, bytes)
    }

    fn unicast(&mut self, bytes: &[u8]) -> Res {
        self.rx_full(1000, link_local(), false, None, bytes)
    }

    fn on_iface(&mut self, iface: &str, bytes: &[u8]) -> Res {
        self.rx_full(1000, link_local(), true, Some(iface), bytes)
    }

    fn usage(&self) -> Vec<PoolUsage> {
        self.alloc.usage().into_iter().map(|(_, _, u)| u).collect()
    }

    fn lease(&self, a: Ipv6Addr) -> Option<Lease> {
        self.alloc.lookup(ResourceKind::Address, a)
    }

    /// Rapid-commit Solicit for client `n`, IAID 1: returns the granted address.
    fn grant(&mut self, n: u16) -> Ipv6Addr {
        let r = self.send(&P::new(MessageType::Solicit, n).rapid().na(1, &[]).bytes());
        let v = r.view();
        assert_eq!(v.ty, MessageType::Reply);
        v.nas[0].addrs[0].0
    }
}

impl Res {
    fn answered(&self) -> MessageType {
        match self.out {
            Outcome::Reply { answered } => answered,
            Outcome::Dropped(d) => panic!("expected a reply, got Dropped({d:?})"),
        }
    }

    fn dropped(&self) -> Dropped {
        match self.out {
            Outcome::Dropped(d) => d,
            Outcome::Reply { .. } => panic!("expected a drop, got {:?}", self.view_any()),
        }
    }

    /// Direct reply, parsed by both codecs.
    fn view(&self) -> View {
        self.answered();
        view(&self.reply)
    }

    fn view_any(&self) -> Option<View> {
        Message::parse(&self.reply).ok().map(|_| view(&self.reply))
    }
}

// ---------------------------------------------------------------------------------------------
// Client packet builder

#[derive(Clone)]
struct P {
    ty: MessageType,
    xid: u32,
    client: Option<Vec<u8>>,
    server: Option<Vec<u8>>,
    rapid: bool,
    nas: Vec<(u32, Vec<Ipv6Addr>)>,
    pds: Vec<(u32, Vec<(Ipv6Addr, u8)>)>,
    oro: Vec<u16>,
}

impl P {
    fn new(ty: MessageType, client: u16) -> Self {
        P {
            ty,
            xid: 0x00ab_c000 | u32::from(client),
            client: Some(duid(client)),
            server: None,
            rapid: false,
            nas: Vec::new(),
            pds: Vec::new(),
            oro: Vec::new(),
        }
    }
    fn oro(mut self, codes: &[u16]) -> Self {
        self.oro = codes.to_vec();
        self
    }
    fn sid(mut self) -> Self {
        self.server = Some(SERVER_DUID.to_vec());
        self
    }
    fn server(mut self, d: &[u8]) -> Self {
        self.server = Some(d.to_vec());
        self
    }
    fn no_client(mut self) -> Self {
        self.client = None;
        self
    }
    fn xid(mut self, x: u32) -> Self {
        self.xid = x;
        self
    }
    fn rapid(mut self) -> Self {
        self.rapid = true;
        self
    }
    fn na(mut self, iaid: u32, addrs: &[Ipv6Addr]) -> Self {
        self.nas.push((iaid, addrs.to_vec()));
        self
    }
    fn pd(mut self, iaid: u32, prefixes: &[(Ipv6Addr, u8)]) -> Self {
        self.pds.push((iaid, prefixes.to_vec()));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, self.ty, self.xid);
        if let Some(c) = &self.client {
            w.client_id(c);
        }
        if let Some(s) = &self.server {
            w.server_id(s);
        }
        w.elapsed_time(0);
        if !self.oro.is_empty() {
            w.oro(&self.oro);
        }
        if self.rapid {
            w.rapid_commit();
        }
        for (iaid, addrs) in &self.nas {
            w.ia_na(*iaid, 0, 0, |o| {
                for a in addrs {
                    o.ia_addr(*a, 0, 0, |_| {});
                }
            });
        }
        for (iaid, prefixes) in &self.pds {
            w.ia_pd(*iaid, 0, 0, |o| {
                for (p, l) in prefixes {
                    o.ia_prefix(*p, *l, 0, 0, |_| {});
                }
            });
        }
        buf
    }
}

/// Hand-built Relay-forw (RFC 8415 §9), independent of the codec under test.
fn relay_port(
    hop: u8,
    link: &str,
    peer: &str,
    iface: Option<&[u8]>,
    port: Option<u16>,
    inner: &[u8],
) -> Vec<u8> {
    fn option(out: &mut Vec<u8>, code: u16, data: &[u8]) {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut out = vec![12, hop];
    out.extend_from_slice(&ip(link).octets());
    out.extend_from_slice(&ip(peer).octets());
    if let Some(i) = iface {
        option(&mut out, opt::INTERFACE_ID, i);
    }
    if let Some(p) = port {
        option(&mut out, opt::RELAY_SOURCE_PORT, &p.to_be_bytes());
    }
    option(&mut out, opt::RELAY_MSG, inner);
    out
}

fn relay(hop: u8, link: &str, peer: &str, iface: Option<&[u8]>, inner: &[u8]) -> Vec<u8> {
    relay_port(hop, link, peer, iface, None, inner)
}

// ---------------------------------------------------------------------------------------------
// Reply view, cross-checked against dhcproto

#[derive(Debug, Clone, PartialEq, Eq)]
struct Na {
    iaid: u32,
    t1: u32,
    t2: u32,
    addrs: Vec<(Ipv6Addr, u32, u32)>,
    status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pd {
    iaid: u32,
    t1: u32,
    t2: u32,
    prefixes: Vec<(Ipv6Addr, u8, u32, u32)>,
    status: Option<u16>,
}

#[derive(Debug, Clone)]
struct View {
    ty: MessageType,
    xid: u32,
    server_id: Option<Vec<u8>>,
    client_id: Option<Vec<u8>>,
    status: Option<u16>,
    rapid: bool,
    unicast: Option<Ipv6Addr>,
    nas: Vec<Na>,
    pds: Vec<Pd>,
    codes: Vec<u16>,
}

impl View {
    fn na(&self, iaid: u32) -> &Na {
        self.nas
            .iter()
            .find(|n| n.iaid == iaid)
            .unwrap_or_else(|| panic!("no IA_NA {iaid} in {self:?}"))
    }
}

const NO_ADDRS: u16 = StatusCode::NoAddrsAvail as u16;
const NO_BINDING: u16 = StatusCode::NoBinding as u16;
const NO_PREFIX: u16 = StatusCode::NoPrefixAvail as u16;
const SUCCESS: u16 = StatusCode::Success as u16;

/// Parses a client/server message with the crate's codec and with dhcproto, and checks the two
/// agree on everything the tests look at.
fn view(bytes: &[u8]) -> View {
    let m =
        Message::parse(bytes).unwrap_or_else(|e| panic!("reply does not parse: {e}: {bytes:02x?}"));
    let v = View {
        ty: m.msg_type(),
        xid: m.transaction_id(),
        server_id: m.server_id().map(<[u8]>::to_vec),
        client_id: m.client_id().map(<[u8]>::to_vec),
        status: m.status().map(|s| s.code),
        rapid: m.rapid_commit(),
        unicast: m.server_unicast(),
        nas: m
            .ia_nas()
            .map(|ia| Na {
                iaid: ia.iaid,
                t1: ia.t1,
                t2: ia.t2,
                addrs: ia
                    .addresses()
                    .map(|a| (a.addr, a.preferred_secs, a.valid_secs))
                    .collect(),
                status: ia.status().map(|s| s.code),
            })
            .collect(),
        pds: m
            .ia_pds()
            .map(|ia| Pd {
                iaid: ia.iaid,
                t1: ia.t1,
                t2: ia.t2,
                prefixes: ia
                    .prefixes()
                    .map(|p| (p.prefix, p.prefix_len, p.preferred_secs, p.valid_secs))
                    .collect(),
                status: ia.status().map(|s| s.code),
            })
            .collect(),
        codes: m.options().map(|o| o.code).collect(),
    };
    oracle_agrees(bytes, &v);
    v
}

fn status_of(opts: &dhcproto::v6::DhcpOptions) -> Option<u16> {
    match opts.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) => Some(u16::from(s.status)),
        _ => None,
    }
}

fn oracle_agrees(bytes: &[u8], v: &View) {
    let m = dhcproto::v6::Message::decode(&mut dhcproto::Decoder::new(bytes))
        .expect("dhcproto decodes the reply");
    assert_eq!(u8::from(m.msg_type()), v.ty.to_u8(), "msg-type");
    assert_eq!(m.xid_num(), v.xid, "transaction-id");
    let mut codes: Vec<u16> = m
        .opts()
        .iter()
        .map(|o| u16::from(OptionCode::from(o)))
        .collect();
    let mut ours = v.codes.clone();
    codes.sort_unstable();
    ours.sort_unstable();
    assert_eq!(codes, ours, "dhcproto sees other top-level options");
    let sid = match m.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(d)) => Some(d.clone()),
        _ => None,
    };
    assert_eq!(sid, v.server_id);
    let cid = match m.opts().get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(d)) => Some(d.clone()),
        _ => None,
    };
    assert_eq!(cid, v.client_id);
    assert_eq!(status_of(m.opts()), v.status);
    assert_eq!(m.opts().get(OptionCode::RapidCommit).is_some(), v.rapid);
    let uni = match m.opts().get(OptionCode::ServerUnicast) {
        Some(DhcpOption::ServerUnicast(a)) => Some(*a),
        _ => None,
    };
    assert_eq!(uni, v.unicast);
    let mut nas: Vec<Na> = m
        .opts()
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .map(|o| match o {
            DhcpOption::IANA(ia) => Na {
                iaid: ia.id,
                t1: ia.t1,
                t2: ia.t2,
                addrs: ia
                    .opts
                    .iter()
                    .filter_map(|o| match o {
                        DhcpOption::IAAddr(a) => Some((a.addr, a.preferred_life, a.valid_life)),
                        _ => None,
                    })
                    .collect(),
                status: status_of(&ia.opts),
            },
            _ => unreachable!(),
        })
        .collect();
    let mut pds: Vec<Pd> = m
        .opts()
        .get_all(OptionCode::IAPD)
        .unwrap_or_default()
        .iter()
        .map(|o| match o {
            DhcpOption::IAPD(ia) => Pd {
                iaid: ia.id,
                t1: ia.t1,
                t2: ia.t2,
                prefixes: ia
                    .opts
                    .iter()
                    .filter_map(|o| match o {
                        DhcpOption::IAPrefix(p) => Some((
                            p.prefix_ip,
                            p.prefix_len,
                            p.preferred_lifetime,
                            p.valid_lifetime,
                        )),
                        _ => None,
                    })
                    .collect(),
                status: status_of(&ia.opts),
            },
            _ => unreachable!(),
        })
        .collect();
    let mut our_nas = v.nas.clone();
    let mut our_pds = v.pds.clone();
    for list in [&mut nas, &mut our_nas] {
        list.sort_by_key(|n| n.iaid);
        list.iter_mut().for_each(|n| n.addrs.sort());
    }
    for list in [&mut pds, &mut our_pds] {
        list.sort_by_key(|n| n.iaid);
        list.iter_mut().for_each(|n| n.prefixes.sort());
    }
    assert_eq!(nas, our_nas, "dhcproto reads other IA_NAs");
    assert_eq!(pds, our_pds, "dhcproto reads other IA_PDs");
}

/// Checks the common reply header rules of RFC 8415 §18.3: our Server Identifier, the
/// client's Client Identifier and transaction-id echoed.
fn assert_header(v: &View, ty: MessageType, p: &P) {
    assert_eq!(v.ty, ty);
    assert_eq!(v.xid, p.xid & 0x00ff_ffff);
    assert_eq!(v.server_id.as_deref(), Some(SERVER_DUID));
    assert_eq!(v.client_id, p.client);
}

// =============================================================================================
// Solicit / Advertise / Rapid Commit

#[test]
fn solicit_gets_advertise_with_offer_from_pool_and_no_store_writes() {
    let mut s = Srv::new(&base_conf("rapid_commit = false"));
    let p = P::new(MessageType::Solicit, 1).xid(0x0123_4567).na(7, &[]);
    let r = s.send(&p.bytes());
    assert_eq!(r.answered(), MessageType::Solicit);
    let v = r.view();
    assert_header(&v, MessageType::Advertise, &p);
    assert_eq!(
        v.xid, 0x23_4567,
        "only the low 24 bits are the transaction-id"
    );
    assert_eq!(v.status, None);
    assert!(!v.rapid);
    assert_eq!(v.nas.len(), 1);
    let na = v.na(7);
    // T1/T2 default to preferred/2 and preferred*4/5 (config.rs), lifetimes from [lease].
    assert_eq!((na.t1, na.t2), (50, 80));
    let lt = s.cfg.subnets[0].lifetimes;
    assert_eq!((lt.t1_secs, lt.t2_secs), (na.t1, na.t2));
    assert_eq!(na.status, None);
    assert_eq!(na.addrs.len(), 1);
    let (a, pref, valid) = na.addrs[0];
    assert!(pool1(a), "{a} not in pool");
    assert_eq!((pref, valid), (100, 200));
    assert!(
        r.writes.is_empty(),
        "an Advertise must not commit anything: {:?}",
        r.writes
    );
    // The offer is held in memory.
    assert_eq!(s.usage()[0].offered, 1);
    assert_eq!(s.usage()[0].active, 0);
    assert_eq!(s.lease(a).unwrap().state, LeaseState::Offered);
}

#[test]
fn advertise_carries_configured_preference() {
    let mut s = Srv::new(&base_conf("rapid_commit = false\npreference = 200"));
    let p = P::new(MessageType::Solicit, 1).na(1, &[]);
    let r = s.send(&p.bytes());
    let m = Message::parse(&r.reply).unwrap();
    assert_eq!(m.preference(), Some(200));
    let d = dhcproto::v6::Message::decode(&mut dhcproto::Decoder::new(&r.reply)).unwrap();
    assert_eq!(
        d.opts().get(OptionCode::Preference),
        Some(&DhcpOption::Preference(200))
    );
}

#[test]
fn solicit_with_rapid_commit_enabled_gets_committed_reply() {
    let mut s = Srv::new(&base_conf(""));
    let p = P::new(MessageType::Solicit, 1).rapid().na(1, &[]);
    let r = s.send(&p.bytes());
    assert_eq!(r.answered(), MessageType::Solicit);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert!(v.rapid, "RFC 8415 §18.3.1: the Reply carries Rapid Commit");
    let (a, pref, valid) = v.na(1).addrs[0];
    assert!(pool1(a));
    assert_eq!((pref, valid), (100, 200));
    assert_eq!(r.writes.len(), 1);
    let l = &r.writes[0];
    assert_eq!(
        (l.addr, l.state, l.kind),
        (a, LeaseState::Active, ResourceKind::Address)
    );
    assert_eq!((&*l.duid, l.iaid, l.subnet_id), (&duid(1)[..], 1, 1));
    assert_eq!(l.expires_at, 1000 + 200);
    assert_eq!(s.lease(a).unwrap().state, LeaseState::Active);
}

#[test]
fn solicit_with_rapid_commit_disabled_gets_advertise() {
    let mut s = Srv::new(&base_conf("rapid_commit = false"));
    let p = P::new(MessageType::Solicit, 1).rapid().na(1, &[]);
    let r = s.send(&p.bytes());
    let v = r.view();
    assert_header(&v, MessageType::Advertise, &p);
    assert!(!v.rapid);
    assert!(r.writes.is_empty());
    assert!(pool1(v.na(1).addrs[0].0));
}

#[test]
fn solicit_hint_in_pool_is_honoured() {
    let mut s = Srv::new(&base_conf(""));
    let want = ip("2001:db8:1::1a0");
    let r = s.send(
        &P::new(MessageType::Solicit, 1)
            .rapid()
            .na(1, &[want])
            .bytes(),
    );
    assert_eq!(r.view().na(1).addrs[0].0, want);
    // A second client asking for the same address gets another one.
    let r = s.send(
        &P::new(MessageType::Solicit, 2)
            .rapid()
            .na(1, &[want])
            .bytes(),
    );
    let got = r.view().na(1).addrs[0].0;
    assert_ne!(got, want);
    assert!(pool1(got));
}

// =============================================================================================
// Request and the Server/Client Identifier rules (RFC 8415 §16)

#[test]
fn request_after_advertise_gets_the_offered_address() {
    let mut s = Srv::new(&base_conf("rapid_commit = false"));
    let adv = s
        .send(&P::new(MessageType::Solicit, 1).na(1, &[]).bytes())
        .view();
    let offered = adv.na(1).addrs[0].0;

    let p = P::new(MessageType::Request, 1).sid().na(1, &[offered]);
    let r = s.send(&p.bytes());
    assert_eq!(r.answered(), MessageType::Request);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.na(1).addrs, vec![(offered, 100, 200)]);
    assert_eq!((v.na(1).t1, v.na(1).t2), (50, 80));
    assert!(
        r.writes
            .iter()
            .any(|l| l.addr == offered && l.state == LeaseState::Active && *l.duid == *duid(1)),
        "{:?}",
        r.writes
    );
    assert_eq!(s.usage()[0].active, 1);
    assert_eq!(s.usage()[0].offered, 0);
}

#[test]
fn request_without_address_in_ia_still_gets_the_offered_address() {
    let mut s = Srv::new(&base_conf("rapid_commit = false"));
    let offered = s
        .send(&P::new(MessageType::Solicit, 1).na(1, &[]).bytes())
        .view()
        .na(1)
        .addrs[0]
        .0;
    let r = s.send(&P::new(MessageType::Request, 1).sid().na(1, &[]).bytes());
    assert_eq!(r.view().na(1).addrs[0].0, offered);
    assert_eq!(r.writes.len(), 1);
}

#[test]
fn request_for_other_server_is_dropped() {
    let mut s = Srv::new(&base_conf(""));
    let r = s.send(
        &P::new(MessageType::Request, 1)
            .server(OTHER_SERVER_DUID)
            .na(1, &[])
            .bytes(),
    );
    assert_eq!(r.dropped(), Dropped::OtherServer);
    assert_eq!(
        s.usage()[0],
        PoolUsage {
            total: 256,
            ..Default::default()
        }
    );
}

#[test]
fn messages_that_must_carry_server_id_are_dropped_without_it() {
    let mut s = Srv::new(&base_conf(""));
    for ty in [
        MessageType::Request,
        MessageType::Renew,
        MessageType::Release,
        MessageType::Decline,
    ] {
        let r = s.send(&P::new(ty, 1).na(1, &[ip("2001:db8:1::100")]).bytes());
        assert_eq!(r.dropped(), Dropped::ServerIdRule, "{ty:?}");
    }
}

#[test]
fn messages_that_must_not_carry_server_id_are_dropped_with_it() {
    let mut s = Srv::new(&base_conf(""));
    // Even our own DUID: RFC 8415 §16.2 (Solicit), §16.5 (Confirm), §16.7 (Rebind).
    for ty in [
        MessageType::Solicit,
        MessageType::Confirm,
        MessageType::Rebind,
    ] {
        let r = s.send(&P::new(ty, 1).sid().na(1, &[ip("2001:db8:1::100")]).bytes());
        assert_eq!(r.dropped(), Dropped::ServerIdRule, "{ty:?}");
        let r = s.send(&P::new(ty, 1).server(OTHER_SERVER_DUID).na(1, &[]).bytes());
        assert_eq!(r.dropped(), Dropped::ServerIdRule, "{ty:?}");
    }
    assert_eq!(s.usage()[0].offered + s.usage()[0].active, 0);
}

#[test]
fn messages_without_client_id_are_dropped() {
    let mut s = Srv::new(&base_conf(""));
    let cases = [
        P::new(MessageType::Solicit, 1)
            .no_client()
            .rapid()
            .na(1, &[]),
        P::new(MessageType::Request, 1).no_client().sid().na(1, &[]),
        P::new(MessageType::Renew, 1).no_client().sid().na(1, &[]),
        P::new(MessageType::Rebind, 1).no_client().na(1, &[]),
        P::new(MessageType::Release, 1).no_client().sid().na(1, &[]),
        P::new(MessageType::Decline, 1).no_client().sid().na(1, &[]),
        P::new(MessageType::Confirm, 1)
            .no_client()
            .na(1, &[ip("2001:db8:1::100")]),
    ];
    for p in cases {
        assert_eq!(
            s.send(&p.bytes()).dropped(),
            Dropped::NoClientId,
            "{:?}",
            p.ty
        );
    }
}

// =============================================================================================
// Several IAs, prefix delegation

#[test]
fn ias_beyond_limits_ias_per_message_max_get_nothing() {
    // The default: 4 IAs per message, IA_NAs first; a fifth is not answered and holds nothing.
    let mut s = Srv::new(&base_conf(""));
    let p = P::new(MessageType::Solicit, 1)
        .rapid()
        .na(1, &[])
        .na(2, &[])
        .na(3, &[])
        .pd(10, &[])
        .pd(11, &[]);
    let v = s.send(&p.bytes()).view();
    assert_eq!((v.nas.len(), v.pds.len()), (3, 1), "{v:?}");
    let held = s
        .alloc
        .usage()
        .iter()
        .map(|(_, _, u)| u.active)
        .sum::<u64>();
    assert_eq!(held, 4);
}

#[test]
fn a_client_over_its_rate_is_dropped_and_another_is_not() {
    let mut s = Srv::new(&format!(
        "{}[limits]\nclient_rate_per_sec = 2\nclient_burst = 3\n",
        base_conf("")
    ));
    let sol = |c: u16| P::new(MessageType::Solicit, c).na(1, &[]);
    for _ in 0..3 {
        assert!(s.send(&sol(1).bytes()).view().nas.len() == 1);
    }
    assert_eq!(
        s.send(&sol(1).bytes()).dropped(),
        Dropped::RateLimitedClient
    );
    assert_eq!(s.send(&sol(2).bytes()).view().nas.len(), 1, "another DUID");
}

#[test]
fn several_ia_na_and_ia_pd_get_distinct_resources() {
    let mut s = Srv::new(&format!(
        "{}[limits]\nias_per_message_max = 8\n",
        base_conf("")
    ));
    let p = P::new(MessageType::Solicit, 1)
        .rapid()
        .na(1, &[])
        .na(2, &[])
        .na(3, &[])
        .pd(10, &[])
        .pd(11, &[]);
    let r = s.send(&p.bytes());
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.nas.len(), 3);
    assert_eq!(v.pds.len(), 2);
    let mut addrs: Vec<_> = v.nas.iter().map(|n| n.addrs[0].0).collect();
    assert!(addrs.iter().all(|a| pool1(*a)));
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "IA_NAs share an address: {v:?}");
    let pd_pool: tandem_core::config::Prefix = "2001:db8:8000::/40".parse().unwrap();
    let mut prefixes = Vec::new();
    for pd in &v.pds {
        assert_eq!(pd.status, None);
        assert_eq!((pd.t1, pd.t2), (50, 80));
        assert_eq!(pd.prefixes.len(), 1);
        let (px, len, pref, valid) = pd.prefixes[0];
        assert_eq!(len, 56, "delegated_len");
        assert!(pd_pool.contains(px), "{px} outside the PD pool");
        assert_eq!(
            u128::from(px) & ((1u128 << 72) - 1),
            0,
            "{px}/56 has host bits set"
        );
        assert_eq!((pref, valid), (100, 200));
        prefixes.push(px);
    }
    assert_ne!(prefixes[0], prefixes[1]);
    assert_eq!(r.writes.len(), 5);
    assert_eq!(
        r.writes
            .iter()
            .filter(|l| l.kind == ResourceKind::Prefix && l.prefix_len == 56)
            .count(),
        2
    );
    // Renew of a delegated prefix extends it.
    let r = s.at(
        1050,
        &P::new(MessageType::Renew, 1)
            .sid()
            .pd(
                10,
                &[(
                    v.pds.iter().find(|p| p.iaid == 10).unwrap().prefixes[0].0,
                    56,
                )],
            )
            .bytes(),
    );
    let rv = r.view();
    assert_eq!(rv.pds[0].prefixes[0].1, 56);
    assert_eq!(rv.pds[0].prefixes[0].3, 200);
    assert_eq!(rv.pds[0].status, None);
    assert_eq!(r.writes.len(), 1);
    assert_eq!(r.writes[0].expires_at, 1250);
}

// =============================================================================================
// Exhaustion

#[test]
fn address_pool_exhaustion_gives_no_addrs_avail() {
    let mut s = Srv::new(&small_conf("2001:db8:1::101", ""));
    let a = s.grant(1);
    let b = s.grant(2);
    assert_ne!(a, b);
    // Third client, Request: the IA comes back empty with NoAddrsAvail (RFC 8415 §18.3.2).
    let r = s.send(&P::new(MessageType::Request, 3).sid().na(1, &[]).bytes());
    let v = r.view();
    assert_eq!(v.ty, MessageType::Reply);
    assert_eq!(v.na(1).status, Some(NO_ADDRS));
    assert!(v.na(1).addrs.is_empty());
    assert!(r.writes.is_empty());
    // Third client, Solicit: top-level NoAddrsAvail (RFC 8415 §18.3.9).
    let r = s.send(&P::new(MessageType::Solicit, 3).na(1, &[]).bytes());
    let v = r.view();
    assert_eq!(v.ty, MessageType::Advertise);
    assert_eq!(v.status, Some(NO_ADDRS));
    assert!(v.nas.iter().all(|n| n.addrs.is_empty()));
    assert!(r.writes.is_empty());
    // The holders still get their own addresses.
    assert_eq!(s.grant(1), a);
}

#[test]
fn advertise_with_nothing_to_assign_carries_only_status_and_identifiers() {
    let mut s = Srv::new(&small_conf("2001:db8:1::100", ""));
    s.grant(1);
    let p = P::new(MessageType::Solicit, 2).na(1, &[]).na(2, &[]);
    let v = s.send(&p.bytes()).view();
    assert_header(&v, MessageType::Advertise, &p);
    assert_eq!(v.status, Some(NO_ADDRS));
    let mut codes = v.codes.clone();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [opt::CLIENTID, opt::SERVERID, opt::STATUS_CODE],
        "{v:?}"
    );
}

#[test]
fn prefix_pool_exhaustion_gives_no_prefix_avail() {
    // A /56 split into /57: two prefixes.
    let pd = r#"pd_pools = [{ prefix = "2001:db8:8000::/56", delegated_len = 57 }]"#;
    let mut s = Srv::new(&small_conf("2001:db8:1::1ff", pd));
    let mut got = Vec::new();
    for n in 1..=2 {
        let v = s
            .send(&P::new(MessageType::Solicit, n).rapid().pd(1, &[]).bytes())
            .view();
        assert_eq!(v.pds[0].prefixes[0].1, 57);
        got.push(v.pds[0].prefixes[0].0);
    }
    assert_ne!(got[0], got[1]);
    let r = s.send(&P::new(MessageType::Request, 3).sid().pd(1, &[]).bytes());
    let v = r.view();
    assert_eq!(v.pds[0].status, Some(NO_PREFIX));
    assert!(v.pds[0].prefixes.is_empty());
    assert!(r.writes.is_empty());
    // With an IA_NA that can be served, the IA_PD alone says NoPrefixAvail and there is no
    // top-level status (something will be assigned).
    let v = s
        .send(
            &P::new(MessageType::Solicit, 3)
                .na(1, &[])
                .pd(1, &[])
                .bytes(),
        )
        .view();
    assert_eq!(v.ty, MessageType::Advertise);
    assert_eq!(v.status, None);
    assert!(pool1(v.na(1).addrs[0].0));
    assert_eq!(v.pds[0].status, Some(NO_PREFIX));
}

// =============================================================================================
// Renew / Rebind

#[test]
fn renew_of_own_lease_extends_it() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let p = P::new(MessageType::Renew, 1).sid().na(1, &[a]);
    let r = s.at(1060, &p.bytes());
    assert_eq!(r.answered(), MessageType::Renew);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.na(1).addrs, vec![(a, 100, 200)]);
    assert_eq!(v.na(1).status, None);
    assert_eq!((v.na(1).t1, v.na(1).t2), (50, 80));
    assert_eq!(r.writes.len(), 1);
    assert_eq!(
        (r.writes[0].addr, r.writes[0].state, r.writes[0].expires_at),
        (a, LeaseState::Active, 1260)
    );
}

#[test]
fn renew_of_address_held_by_another_client_gets_zero_lifetimes_and_no_binding() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let r = s.send(&P::new(MessageType::Renew, 2).sid().na(1, &[a]).bytes());
    let v = r.view();
    assert_eq!(v.na(1).addrs, vec![(a, 0, 0)]);
    assert_eq!(v.na(1).status, Some(NO_BINDING));
    assert!(r.writes.is_empty());
    let l = s.lease(a).unwrap();
    assert_eq!(
        (l.state, &*l.duid),
        (LeaseState::Active, &duid(1)[..]),
        "client 1 keeps it"
    );
}

#[test]
fn renew_of_address_outside_every_pool_gets_zero_lifetimes() {
    let mut s = Srv::new(&base_conf(""));
    let off = ip("2001:db8:99::5");
    let r = s.send(&P::new(MessageType::Renew, 2).sid().na(1, &[off]).bytes());
    let v = r.view();
    assert_eq!(v.na(1).addrs, vec![(off, 0, 0)]);
    assert_eq!(v.na(1).status, Some(NO_BINDING));
    assert!(r.writes.is_empty());
    // A client that does hold a lease for the IA gets the stale address zeroed and its real
    // lease extended (RFC 8415 §18.3.4).
    let a = s.grant(1);
    let r = s.at(
        1010,
        &P::new(MessageType::Renew, 1).sid().na(1, &[off]).bytes(),
    );
    let v = r.view();
    let mut addrs = v.na(1).addrs.clone();
    addrs.sort();
    let mut want = vec![(off, 0, 0), (a, 100, 200)];
    want.sort();
    assert_eq!(addrs, want);
    assert_eq!(v.na(1).status, None);
    assert_eq!(r.writes.len(), 1);
}

#[test]
fn rebind_works_without_server_id() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let p = P::new(MessageType::Rebind, 1).na(1, &[a]);
    let r = s.at(1100, &p.bytes());
    assert_eq!(r.answered(), MessageType::Rebind);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.na(1).addrs, vec![(a, 100, 200)]);
    assert_eq!(r.writes.len(), 1);
    assert_eq!(r.writes[0].expires_at, 1300);
    // With a Server Identifier (ours): dropped (RFC 8415 §16.7).
    let r = s.send(&P::new(MessageType::Rebind, 1).sid().na(1, &[a]).bytes());
    assert_eq!(r.dropped(), Dropped::ServerIdRule);
}

#[test]
fn catching_up_stays_silent_on_bindings_it_does_not_hold_and_answers_the_rest() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    // An address of the pool this server never bound: the partner may have, and its update
    // may still be on the way.
    let unknown = ip("2001:db8:1::1f0");
    assert!(s.lease(unknown).is_none());
    s.policy = Policy {
        catching_up: true,
        ..Policy::STANDALONE
    };
    for ty in [MessageType::Rebind, MessageType::Renew] {
        let p = |c, addrs: &[Ipv6Addr]| {
            let p = P::new(ty, c).na(1, addrs);
            if ty == MessageType::Renew { p.sid() } else { p }
        };
        let r = s.at(1100, &p(2, &[unknown]).bytes());
        assert_eq!(
            r.dropped(),
            Dropped::CatchingUp,
            "{ty:?} of an unknown binding"
        );
        // Its own binding is renewed as ever.
        let r = s.at(1100, &p(1, &[a]).bytes());
        assert_eq!(
            r.view().na(1).addrs,
            vec![(a, 100, 200)],
            "{ty:?} of a held binding"
        );
        // Another client naming the held address: not its binding, so silence too.
        let r = s.at(1100, &p(3, &[a]).bytes());
        assert_eq!(r.dropped(), Dropped::CatchingUp);
        // One unknown IA among known ones: the whole message waits (nothing half-done).
        let two = P::new(ty, 1).na(1, &[a]).na(2, &[unknown]);
        let two = if ty == MessageType::Renew {
            two.sid()
        } else {
            two
        };
        let r = s.at(1100, &two.bytes());
        assert_eq!(r.dropped(), Dropped::CatchingUp);
        // An address outside every pool is not a binding anyone holds: answered as ever.
        let r = s.at(1100, &p(2, &[ip("2001:db8:9::1")]).bytes());
        r.answered();
    }
    assert!(s.lease(unknown).is_none(), "silence binds nothing");
    // Caught up: the unknown binding is answered under the ordinary rules (here, a server on
    // its own gives the free address back to the client that names it).
    s.policy = Policy::STANDALONE;
    let r = s.at(
        1100,
        &P::new(MessageType::Rebind, 2).na(1, &[unknown]).bytes(),
    );
    assert_eq!(r.view().na(1).addrs, vec![(unknown, 100, 200)]);
}

// =============================================================================================
// Release / Decline

#[test]
fn release_frees_the_lease_and_says_success() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let p = P::new(MessageType::Release, 1).sid().na(1, &[a]);
    let r = s.at(1010, &p.bytes());
    assert_eq!(r.answered(), MessageType::Release);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.status, Some(SUCCESS));
    assert!(v.nas.is_empty(), "nothing to report per IA: {v:?}");
    assert_eq!(r.writes.len(), 1);
    assert_eq!(
        (r.writes[0].addr, r.writes[0].state),
        (a, LeaseState::Released)
    );
    assert_eq!(s.lease(a).unwrap().state, LeaseState::Released);
    assert_eq!(s.usage()[0].active, 0);
}

#[test]
fn release_of_address_not_held_reports_no_binding() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    // Client 2 tries to release client 1's address; client 1 an address it never had.
    for (n, addr) in [(2, a), (1, ip("2001:db8:1::1fe"))] {
        let r = s.send(&P::new(MessageType::Release, n).sid().na(1, &[addr]).bytes());
        let v = r.view();
        assert_eq!(v.status, Some(SUCCESS));
        assert_eq!(v.na(1).status, Some(NO_BINDING));
        assert!(v.na(1).addrs.is_empty());
        assert!(r.writes.is_empty());
    }
    assert_eq!(s.lease(a).unwrap().state, LeaseState::Active);
}

#[test]
fn decline_marks_address_declined_and_it_is_not_handed_out_again() {
    // One address only: after the Decline nobody may get it.
    let text = small_conf("2001:db8:1::100", "").replace(
        "rapid_commit = true",
        "rapid_commit = true\ndecline_hold_secs = 500",
    );
    let mut s = Srv::new(&text);
    let a = s.grant(1);
    let p = P::new(MessageType::Decline, 1).sid().na(1, &[a]);
    let r = s.at(1010, &p.bytes());
    assert_eq!(r.answered(), MessageType::Decline);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.status, Some(SUCCESS));
    assert_eq!(r.writes.len(), 1);
    assert_eq!(
        (r.writes[0].addr, r.writes[0].state, r.writes[0].expires_at),
        (a, LeaseState::Declined, 1510)
    );
    assert_eq!(s.usage()[0].declined, 1);
    // Neither another client (even hinting at it) nor the decliner gets it back.
    for n in [2, 1] {
        let v = s
            .at(1020, &P::new(MessageType::Solicit, n).na(1, &[a]).bytes())
            .view();
        assert_eq!(v.status, Some(NO_ADDRS), "client {n}: {v:?}");
        assert!(v.nas.iter().all(|n| n.addrs.is_empty()));
    }
}

#[test]
fn declined_address_is_skipped_in_a_larger_pool() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    s.send(&P::new(MessageType::Decline, 1).sid().na(1, &[a]).bytes())
        .view();
    for n in 2..40 {
        assert_ne!(s.grant(n), a);
    }
    assert_ne!(s.grant(1), a, "the decliner gets another address");
}

// =============================================================================================
// Confirm

#[test]
fn confirm_checks_addresses_are_on_link() {
    let mut s = Srv::new(&base_conf(""));
    let p = P::new(MessageType::Confirm, 1).na(1, &[ip("2001:db8:1::100"), ip("2001:db8:1::abcd")]);
    let r = s.send(&p.bytes());
    assert_eq!(r.answered(), MessageType::Confirm);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.status, Some(SUCCESS));
    assert!(r.writes.is_empty());

    let p = P::new(MessageType::Confirm, 1)
        .na(1, &[ip("2001:db8:1::100")])
        .na(2, &[ip("2001:db8:2::1")]);
    let v = s.send(&p.bytes()).view();
    assert_eq!(v.status, Some(StatusCode::NotOnLink as u16));
}

/// Issue 9 item 3: several prefixes on one link (a shared network). A subnet with an extra
/// prefix is selected by a relay whose link-address is in either; when the first prefix's
/// pool is used up, clients get addresses from the second; Confirm counts both as on-link;
/// Renew and Release work for either.
#[test]
fn a_subnet_with_two_prefixes_serves_both_on_one_link() {
    let text = small_conf("2001:db8:1::101", "").replace(
        "pools = [{ range = \"2001:db8:1::100-2001:db8:1::101\" }]",
        "extra_prefixes = [\"2001:db8:2::/64\"]\npools = [{ range = \"2001:db8:1::100-2001:db8:1::101\" }, { range = \"2001:db8:2::100-2001:db8:2::1ff\" }]",
    );
    let mut s = Srv::new(&text);
    let mut got = Vec::new();
    for n in 1..=4u16 {
        let inner = P::new(MessageType::Solicit, n).rapid().na(1, &[]).bytes();
        // Relays on the link number it by either prefix.
        let link = if n % 2 == 0 {
            "2001:db8:2::1"
        } else {
            "2001:db8:1::1"
        };
        let r = s.send(&relay(0, link, "fe80::99", None, &inner));
        assert_eq!(r.answered(), MessageType::Solicit, "client {n}");
        let back = unwrap_relay_replies(&r.reply).unwrap();
        got.push(view(back.inner()).na(1).addrs[0].0);
    }
    // Four clients, two addresses in the first prefix's pool: the others come from the
    // second's, whichever prefix their relay named.
    let first = |a: &Ipv6Addr| in_range(*a, "2001:db8:1::100", "2001:db8:1::101");
    let second = |a: &Ipv6Addr| in_range(*a, "2001:db8:2::100", "2001:db8:2::1ff");
    assert!(got.iter().all(|a| first(a) || second(a)), "{got:?}");
    assert!(got.iter().filter(|a| second(a)).count() >= 2, "{got:?}");
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{got:?}");
    let (in_second, _) = got.iter().enumerate().find(|(_, a)| second(a)).unwrap();
    let client = in_second as u16 + 1;
    // Confirm: both prefixes are on the link; another is not.
    let p = P::new(MessageType::Confirm, 3).na(1, &[ip("2001:db8:2::1"), ip("2001:db8:1::5")]);
    assert_eq!(s.send(&p.bytes()).view().status, Some(SUCCESS));
    let p = P::new(MessageType::Confirm, 3).na(1, &[ip("2001:db8:3::1")]);
    assert_eq!(
        s.send(&p.bytes()).view().status,
        Some(StatusCode::NotOnLink as u16)
    );
    // A Renew of an address in the second prefix, relayed from the first.
    let a = got[in_second];
    let renew = P::new(MessageType::Renew, client).sid().na(1, &[a]);
    let r = s.at(
        1060,
        &relay(0, "2001:db8:1::1", "fe80::99", None, &renew.bytes()),
    );
    assert_eq!(r.writes.len(), 1);
    assert_eq!(
        (r.writes[0].addr, r.writes[0].state),
        (a, LeaseState::Active)
    );
}

#[test]
fn confirm_without_addresses_is_not_answered() {
    let mut s = Srv::new(&base_conf(""));
    assert_eq!(
        s.send(&P::new(MessageType::Confirm, 1).bytes()).dropped(),
        Dropped::NothingToAnswer
    );
    assert_eq!(
        s.send(&P::new(MessageType::Confirm, 1).na(1, &[]).bytes())
            .dropped(),
        Dropped::NothingToAnswer
    );
}

// =============================================================================================
// Information-request

#[test]
fn information_request_gets_reply_without_ias() {
    let mut s = Srv::new(&base_conf(""));
    let p = P::new(MessageType::InformationRequest, 1);
    let r = s.send(&p.bytes());
    assert_eq!(r.answered(), MessageType::InformationRequest);
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert!(v.nas.is_empty() && v.pds.is_empty());
    assert!(r.writes.is_empty());
    // Client Identifier is optional in Information-request.
    let p = P::new(MessageType::InformationRequest, 1).no_client();
    let v = s.send(&p.bytes()).view();
    assert_header(&v, MessageType::Reply, &p);
    // Our own Server Identifier is allowed; another server's is not (RFC 8415 §16.12).
    assert_eq!(
        s.send(&P::new(MessageType::InformationRequest, 1).sid().bytes())
            .view()
            .ty,
        MessageType::Reply
    );
    assert_eq!(
        s.send(
            &P::new(MessageType::InformationRequest, 1)
                .server(OTHER_SERVER_DUID)
                .bytes()
        )
        .dropped(),
        Dropped::OtherServer
    );
}

#[test]
fn information_request_with_ia_is_dropped() {
    let mut s = Srv::new(&base_conf(""));
    let r = s.send(
        &P::new(MessageType::InformationRequest, 1)
            .na(1, &[])
            .bytes(),
    );
    assert_eq!(r.dropped(), Dropped::NothingToAnswer);
    let r = s.send(
        &P::new(MessageType::InformationRequest, 1)
            .pd(1, &[])
            .bytes(),
    );
    assert_eq!(r.dropped(), Dropped::NothingToAnswer);
    assert_eq!(s.usage()[0].offered + s.usage()[1].offered, 0);
}

// =============================================================================================
// Unicast (RFC 8415 §18.4, §21.12)

#[test]
fn unicast_without_server_unicast_option_gets_use_multicast() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let cases = [
        P::new(MessageType::Request, 2).sid().na(1, &[]),
        P::new(MessageType::Renew, 1).sid().na(1, &[a]),
        P::new(MessageType::Release, 1).sid().na(1, &[a]),
        P::new(MessageType::Decline, 1).sid().na(1, &[a]),
    ];
    for p in cases {
        let r = s.unicast(&p.bytes());
        let v = r.view();
        assert_header(&v, MessageType::Reply, &p);
        assert_eq!(
            v.status,
            Some(StatusCode::UseMulticast as u16),
            "{:?}",
            p.ty
        );
        // "...and no other options".
        let mut codes = v.codes.clone();
        codes.sort_unstable();
        assert_eq!(
            codes,
            [opt::CLIENTID, opt::SERVERID, opt::STATUS_CODE],
            "{:?}",
            p.ty
        );
        assert!(r.writes.is_empty(), "{:?}: {:?}", p.ty, r.writes);
    }
    let l = s.lease(a).unwrap();
    assert_eq!(
        (l.state, l.expires_at),
        (LeaseState::Active, 1200),
        "the unicast Release/Decline did nothing"
    );
    assert_eq!(s.usage()[0].active, 1);
}

#[test]
fn unicast_accepted_and_advertised_when_configured() {
    let mut s = Srv::new(&base_conf("unicast_address = \"2001:db8:1::53\""));
    let p = P::new(MessageType::Request, 1).sid().na(1, &[]);
    let r = s.unicast(&p.bytes());
    let v = r.view();
    assert_header(&v, MessageType::Reply, &p);
    assert_eq!(v.status, None);
    assert!(pool1(v.na(1).addrs[0].0));
    assert_eq!(v.unicast, Some(ip("2001:db8:1::53")));
    assert_eq!(
        Message::parse(&r.reply).unwrap().first(opt::UNICAST),
        Some(&ip("2001:db8:1::53").octets()[..])
    );
    assert_eq!(r.writes.len(), 1);
    // The Advertise carries it too, so the client learns it may unicast.
    let v = s
        .send(&P::new(MessageType::Solicit, 2).na(1, &[]).bytes())
        .view();
    assert_eq!(v.unicast, Some(ip("2001:db8:1::53")));
}

#[test]
fn relayed_messages_are_never_told_to_use_multicast() {
    let mut s = Srv::new(&base_conf(""));
    let inner = P::new(MessageType::Request, 1).sid().na(1, &[]).bytes();
    let fwd = relay(0, "2001:db8:1::1", "fe80::99", None, &inner);
    let r = s.unicast(&fwd);
    let back = unwrap_relay_replies(&r.reply).unwrap();
    let v = view(back.inner());
    assert_eq!(v.status, None);
    assert!(pool1(v.na(1).addrs[0].0));
    assert_eq!(r.writes.len(), 1);
}

// =============================================================================================
// Relays (RFC 8415 §13.1, §19)

#[test]
fn relayed_solicit_gets_relay_reply_echoing_the_relay_fields() {
    let mut s = Srv::new(&base_conf("rapid_commit = false"));
    let p = P::new(MessageType::Solicit, 1).na(1, &[]);
    let fwd = relay(0, "2001:db8:1::1", "fe80::99", Some(b"eth7"), &p.bytes());
    let r = s.send(&fwd);
    assert_eq!(r.answered(), MessageType::Solicit);
    assert!(r.writes.is_empty());
    assert_eq!(r.reply[0], 13, "Relay-repl");
    assert_eq!(r.reply[1], 0, "hop-count copied");
    assert_eq!(&r.reply[2..18], &ip("2001:db8:1::1").octets());
    assert_eq!(&r.reply[18..34], &ip("fe80::99").octets());
    let back = unwrap_relay_replies(&r.reply).unwrap();
    assert_eq!(back.hops().len(), 1);
    let h = back.hops()[0];
    assert_eq!(h.msg_type, MessageType::RelayRepl);
    assert_eq!(
        (h.hop_count, h.link_address, h.peer_address),
        (0, ip("2001:db8:1::1"), ip("fe80::99"))
    );
    assert_eq!(h.interface_id, Some(&b"eth7"[..]));
    let v = view(back.inner());
    assert_header(&v, MessageType::Advertise, &p);
    assert!(pool1(v.na(1).addrs[0].0));
    assert_eq!(v.unicast, None);
    // Independent check of the relay level with dhcproto (header and Interface-Id only: its
    // Relay Message decoder expects a nested relay header).
    let d = dhcproto::v6::RelayMessage::decode(&mut dhcproto::Decoder::new(&r.reply)).unwrap();
    assert_eq!(u8::from(d.msg_type()), 13);
    assert_eq!(
        (d.hop_count(), d.link_addr(), d.peer_addr()),
        (0, ip("2001:db8:1::1"), ip("fe80::99"))
    );
    assert_eq!(
        d.opts().get(OptionCode::InterfaceId),
        Some(&DhcpOption::InterfaceId(b"eth7".to_vec()))
    );
}

/// Issue 9 item 4: what the relays said is kept with the lease it granted or renewed, in
/// OPTION_LQ_RELAY_DATA's form (the relay the datagram came from, then the chain without the
/// client's message); a later Renew through another line replaces it, a direct one clears it.
#[test]
fn a_relayed_grant_keeps_the_relay_data_and_a_renew_replaces_it() {
    use tandem_core::wire::relay_data::RelayData;
    let mut s = Srv::new(&base_conf(""));
    let p = P::new(MessageType::Solicit, 1).rapid().na(1, &[]);
    let mut fwd = relay(0, "2001:db8:1::1", "fe80::99", Some(b"eth7"), &p.bytes());
    // Remote-ID (enterprise 9, "line-1") after the Relay Message option.
    fwd.extend_from_slice(&opt::REMOTE_ID.to_be_bytes());
    fwd.extend_from_slice(&10u16.to_be_bytes());
    fwd.extend_from_slice(&[0, 0, 0, 9]);
    fwd.extend_from_slice(b"line-1");
    let r = s.send(&fwd);
    assert_eq!(r.writes.len(), 1);
    let l = &r.writes[0];
    let d = RelayData::new(&l.relay).expect("relay data kept");
    assert_eq!(d.relay_address(), *link_local().ip());
    let c = d.closest_to_client().unwrap();
    assert_eq!(
        (c.link_address, c.peer_address),
        (ip("2001:db8:1::1"), ip("fe80::99"))
    );
    assert_eq!(c.find(opt::INTERFACE_ID), Some(&b"eth7"[..]));
    assert_eq!(c.find(opt::REMOTE_ID), Some(&b"\0\0\0\x09line-1"[..]));
    assert_eq!(c.find(opt::RELAY_MSG), None);
    assert_eq!(l.relay.len(), 16 + fwd.len() - p.bytes().len() - 4);
    // The table holds it too (what Leasequery and the partner read).
    assert_eq!(s.lease(l.addr).unwrap().relay, l.relay);
    // A Renew through another interface of the relay replaces it.
    let a = l.addr;
    let renew = P::new(MessageType::Renew, 1).sid().na(1, &[a]);
    let r = s.at(
        1060,
        &relay(
            0,
            "2001:db8:1::1",
            "fe80::99",
            Some(b"eth8"),
            &renew.bytes(),
        ),
    );
    let d = RelayData::new(&r.writes[0].relay).unwrap();
    assert_eq!(
        d.closest_to_client().unwrap().find(opt::INTERFACE_ID),
        Some(&b"eth8"[..])
    );
    assert_eq!(d.closest_to_client().unwrap().find(opt::REMOTE_ID), None);
    // A direct Renew: not relayed any more.
    let r = s.at(1120, &renew.bytes());
    assert_eq!(r.writes.len(), 1);
    assert!(r.writes[0].relay.is_empty());
    assert!(s.lease(a).unwrap().relay.is_empty());
}

#[test]
fn relay_source_port_is_echoed() {
    let mut s = Srv::new(&base_conf(""));
    let inner = P::new(MessageType::Solicit, 1).na(1, &[]).bytes();
    let fwd = relay_port(0, "2001:db8:1::1", "fe80::99", None, Some(1067), &inner);
    let r = s.send(&fwd);
    let back = unwrap_relay_replies(&r.reply).unwrap();
    assert_eq!(back.hops()[0].relay_source_port, Some(1067));
    assert_eq!(back.hops()[0].interface_id, None);
}

#[test]
fn two_nested_relays_are_mirrored_and_innermost_link_selects_the_subnet() {
    let mut s = Srv::new(&two_subnets("", ""));
    let p = P::new(MessageType::Solicit, 1).rapid().na(1, &[]);
    // Relay closest to the client sits on subnet 2; the outer one on subnet 1.
    let l1 = relay(0, "2001:db8:2::1", "fe80::99", Some(b"port-3"), &p.bytes());
    let l0 = relay(1, "2001:db8:1::1", "fe80::1:1", Some(b"uplink"), &l1);
    let r = s.send(&l0);
    assert_eq!(r.answered(), MessageType::Solicit);
    let back = unwrap_relay_replies(&r.reply).unwrap();
    let hops: Vec<_> = back
        .hops()
        .iter()
        .map(|h| {
            (
                h.msg_type,
                h.hop_count,
                h.link_address,
                h.peer_address,
                h.interface_id.map(<[u8]>::to_vec),
            )
        })
        .collect();
    assert_eq!(
        hops,
        vec![
            (
                MessageType::RelayRepl,
                1,
                ip("2001:db8:1::1"),
                ip("fe80::1:1"),
                Some(b"uplink".to_vec())
            ),
            (
                MessageType::RelayRepl,
                0,
                ip("2001:db8:2::1"),
                ip("fe80::99"),
                Some(b"port-3".to_vec())
            ),
        ]
    );
    let v = view(back.inner());
    assert_header(&v, MessageType::Reply, &p);
    let (a, pref, valid) = v.na(1).addrs[0];
    assert!(pool2(a), "{a} should come from subnet 2");
    assert_eq!((pref, valid), (300, 600), "subnet 2 lifetimes");
    assert_eq!(r.writes[0].subnet_id, 2);
    // An inner relay with an unspecified link-address (e.g. an LDRA) defers to the next one out.
    let l1 = relay(
        0,
        "::",
        "fe80::99",
        None,
        &P::new(MessageType::Solicit, 2).rapid().na(1, &[]).bytes(),
    );
    let l0 = relay(1, "2001:db8:2::1", "fe80::1:1", None, &l1);
    let r = s.send(&l0);
    let v = view(unwrap_relay_replies(&r.reply).unwrap().inner());
    assert!(pool2(v.na(1).addrs[0].0));
}

#[test]
fn relay_from_unknown_link_is_dropped() {
    let mut s = Srv::new(&base_conf(""));
    let fwd = relay(
        0,
        "2001:db8:77::1",
        "fe80::99",
        Some(b"eth7"),
        &P::new(MessageType::Solicit, 1).rapid().na(1, &[]).bytes(),
    );
    assert_eq!(s.send(&fwd).dropped(), Dropped::NoSubnet);
    assert_eq!(s.usage()[0].active + s.usage()[0].offered, 0);
}

#[test]
fn relay_link_address_selects_second_subnet() {
    let mut s = Srv::new(&two_subnets("", ""));
    let fwd = relay(
        0,
        "2001:db8:2::1",
        "fe80::99",
        None,
        &P::new(MessageType::Solicit, 1).na(1, &[]).bytes(),
    );
    let v = view(unwrap_relay_replies(&s.send(&fwd).reply).unwrap().inner());
    let (a, pref, valid) = v.na(1).addrs[0];
    assert!(pool2(a), "{a}");
    assert_eq!((v.na(1).t1, v.na(1).t2, pref, valid), (150, 240, 300, 600));
    // The same client directly (no interface) lands on the first subnet.
    let v = s
        .send(&P::new(MessageType::Solicit, 1).na(1, &[]).bytes())
        .view();
    assert!(pool1(v.na(1).addrs[0].0));
}

#[test]
fn direct_message_on_bound_interface_selects_that_subnet() {
    let mut s = Srv::new(&two_subnets("interface = \"eth1\"", ""));
    let v = s
        .on_iface("eth1", &P::new(MessageType::Solicit, 1).na(1, &[]).bytes())
        .view();
    assert!(pool2(v.na(1).addrs[0].0), "{v:?}");
    // Another interface, or none: the first subnet not tied to an interface.
    let v = s
        .on_iface("eth0", &P::new(MessageType::Solicit, 2).na(1, &[]).bytes())
        .view();
    assert!(pool1(v.na(1).addrs[0].0));
    let v = s
        .send(&P::new(MessageType::Solicit, 3).na(1, &[]).bytes())
        .view();
    assert!(pool1(v.na(1).addrs[0].0));
}

#[test]
fn direct_unicast_from_global_address_selects_the_subnet_of_the_source() {
    let mut s = Srv::new(&two_subnets("", "unicast_address = \"2001:db8:1::53\""));
    // The client got 2001:db8:2::x through a relay on subnet 2 ...
    let fwd = relay(
        0,
        "2001:db8:2::1",
        "fe80::99",
        None,
        &P::new(MessageType::Solicit, 1).rapid().na(1, &[]).bytes(),
    );
    let a = view(unwrap_relay_replies(&s.send(&fwd).reply).unwrap().inner())
        .na(1)
        .addrs[0]
        .0;
    assert!(pool2(a));
    // ... and renews it by unicast straight from that address.
    let src = SocketAddrV6::new(a, 546, 0, 0);
    let r = s.rx_full(
        1100,
        src,
        false,
        None,
        &P::new(MessageType::Renew, 1).sid().na(1, &[a]).bytes(),
    );
    let v = r.view();
    assert_eq!(v.na(1).addrs, vec![(a, 300, 600)], "{v:?}");
    assert_eq!(v.na(1).status, None);
    assert_eq!(r.writes.len(), 1);
}

// =============================================================================================
// Messages a server never answers

#[test]
fn server_messages_are_not_for_the_server() {
    let mut s = Srv::new(&base_conf(""));
    for ty in [
        MessageType::Advertise,
        MessageType::Reply,
        MessageType::Reconfigure,
    ] {
        let r = s.send(&P::new(ty, 1).sid().na(1, &[]).bytes());
        assert_eq!(r.dropped(), Dropped::NotForServer(ty));
        // Relayed too.
        let r = s.send(&relay(
            0,
            "2001:db8:1::1",
            "fe80::99",
            None,
            &P::new(ty, 1).sid().bytes(),
        ));
        assert_eq!(r.dropped(), Dropped::NotForServer(ty));
    }
}

#[test]
fn relay_reply_received_is_dropped_without_side_effects() {
    let mut s = Srv::new(&base_conf(""));
    let mut repl = relay(
        0,
        "2001:db8:1::1",
        "fe80::99",
        None,
        &P::new(MessageType::Solicit, 1).rapid().na(1, &[]).bytes(),
    );
    repl[0] = 13;
    let r = s.send(&repl);
    assert!(matches!(r.out, Outcome::Dropped(_)));
    assert_eq!(s.usage()[0].active, 0);
}

#[test]
fn relay_reply_received_is_not_for_server() {
    let mut s = Srv::new(&base_conf(""));
    let mut repl = relay(
        0,
        "2001:db8:1::1",
        "fe80::99",
        None,
        &P::new(MessageType::Solicit, 1).na(1, &[]).bytes(),
    );
    repl[0] = 13;
    assert_eq!(
        s.send(&repl).dropped(),
        Dropped::NotForServer(MessageType::RelayRepl)
    );
}

// =============================================================================================
// Malformed input

#[test]
fn malformed_packets_are_dropped_and_change_nothing() {
    let mut s = Srv::new(&base_conf(""));
    let a = s.grant(1);
    let before = s.usage();
    let lease_before = s.lease(a).unwrap();

    // A valid Release of `a`, which would change the table if it were processed.
    let release = P::new(MessageType::Release, 1).sid().na(1, &[a]).bytes();
    let mut overrun = release.clone();
    overrun.extend_from_slice(&[0, 99, 0, 10, 1, 2]); // option 99 claims 10 bytes, has 2
    let mut short_ia = release.clone();
    short_ia.extend_from_slice(&[0, 3, 0, 5, 0, 0, 0, 1, 0]); // IA_NA of 5 bytes
    // 16-byte Reply: header, Client Identifier (4-byte DUID), Status Code of length 0.
    let bad_reply = [7, 1, 2, 3, 0, 1, 0, 4, 0, 3, 0, 1, 0, 13, 0, 0];
    assert_eq!(bad_reply.len(), 16);
    let mut deep = release.clone();
    for i in 0..40u8 {
        deep = relay(i, "2001:db8:1::1", "fe80::99", None, &deep);
    }
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        ("empty", vec![], WireError::Truncated),
        ("truncated header", vec![3, 0, 0], WireError::Truncated),
        (
            "option overrun",
            overrun,
            WireError::OptionOverrun { code: 99 },
        ),
        (
            "zero-length status",
            bad_reply.to_vec(),
            WireError::BadOptionLength { code: 13, len: 0 },
        ),
        (
            "IA_NA of 5 bytes",
            short_ia,
            WireError::BadOptionLength { code: 3, len: 5 },
        ),
        ("relay 40 deep", deep, WireError::RelayTooDeep),
        (
            "truncated relay",
            relay(0, "2001:db8:1::1", "fe80::99", None, &release)[..30].to_vec(),
            WireError::Truncated,
        ),
    ];
    for (name, bytes, err) in cases {
        let r = s.at(1010, &bytes);
        assert_eq!(r.dropped(), Dropped::Malformed(err), "{name}");
        assert!(r.writes.is_empty() && r.reply.is_empty(), "{name}");
    }
    assert_eq!(s.usage(), before);
    assert_eq!(s.lease(a).unwrap(), lease_before);
    // And the intact Release still works.
    assert_eq!(s.at(1010, &release).view().status, Some(SUCCESS));
    assert_eq!(s.lease(a).unwrap().state, LeaseState::Released);
}

// =============================================================================================
// Lease stability

#[test]
fn released_address_comes_back_to_its_last_holder() {
    let mut s = Srv::new(&base_conf(""));
    let x = s.grant(1);
    s.send(&P::new(MessageType::Release, 1).sid().na(1, &[x]).bytes())
        .view();
    for n in 2..60 {
        assert_ne!(
            s.grant(n),
            x,
            "client {n} took the freed address while never-used ones remain"
        );
    }
    let v = s
        .send(&P::new(MessageType::Solicit, 1).na(1, &[]).bytes())
        .view();
    assert_eq!(v.ty, MessageType::Advertise);
    assert_eq!(v.na(1).addrs[0].0, x);
    assert_eq!(s.grant(1), x);
}

/// Clients whose IA hashes to the same sub-pool as client 1's.
fn same_home_clients(count: usize) -> Vec<u16> {
    let home = |n: u16| spread(client_key(1, ResourceKind::Address, &duid(n), 1)) % 64;
    let h1 = home(1);
    (2..u16::MAX)
        .filter(|n| home(*n) == h1)
        .take(count)
        .collect()
}

#[test]
fn released_address_is_kept_while_never_used_addresses_remain_even_in_a_busy_sub_pool() {
    // 256 addresses → 64 sub-pools of 4. Fill client 1's home sub-pool with other clients.
    let mut s = Srv::new(&base_conf(""));
    let x = s.grant(1);
    s.send(&P::new(MessageType::Release, 1).sid().na(1, &[x]).bytes())
        .view();
    for n in same_home_clients(4) {
        assert_ne!(
            s.grant(n),
            x,
            "client {n} took the freed address while 250+ never-used remain"
        );
    }
    assert_eq!(s.grant(1), x);
}

// =============================================================================================
// Relay-repl that cannot be built

#[test]
fn relay_reply_too_long_is_not_reported_as_a_reply() {
    let mut s = Srv::new(&base_conf(""));
    let inner = P::new(MessageType::Solicit, 1)
        .rapid()
        .na(1, &[])
        .na(2, &[])
        .na(3, &[])
        .na(4, &[])
        .bytes();
    // Inner relay level sized so the whole datagram is 65527 bytes (the IPv6 UDP maximum):
    // the Relay-forw fits, the (larger) Relay-repl does not.
    let iface_len = 65_489 - 42 - inner.len();
    let big = vec![b'x'; iface_len];
    let l1 = relay(0, "2001:db8:1::1", "fe80::99", Some(&big[..]), &inner);
    assert_eq!(l1.len(), 65_489);
    let l0 = relay(1, "2001:db8:1::2", "fe80::98", None, &l1);
    assert_eq!(l0.len(), 65_527);
    let r = s.send(&l0);
    match r.out {
        Outcome::Reply { .. } => {
            assert!(
                unwrap_relay_replies(&r.reply).is_ok(),
                "Outcome::Reply with an unusable reply ({} bytes)",
                r.reply.len()
            )
        }
        Outcome::Dropped(_) => assert!(r.writes.is_empty()),
    }
}

// =============================================================================================
// Robustness: random and mutated input

fn seeds() -> Vec<Vec<u8>> {
    let solicit = P::new(MessageType::Solicit, 1)
        .rapid()
        .na(1, &[ip("2001:db8:1::120")])
        .pd(2, &[])
        .bytes();
    let request = P::new(MessageType::Request, 2)
        .sid()
        .na(1, &[ip("2001:db8:1::121")])
        .bytes();
    let renew = P::new(MessageType::Renew, 3)
        .sid()
        .na(1, &[ip("2001:db8:1::100")])
        .pd(2, &[(ip("2001:db8:8000::"), 56)])
        .bytes();
    let release = P::new(MessageType::Release, 3)
        .sid()
        .na(1, &[ip("2001:db8:1::100")])
        .bytes();
    let confirm = P::new(MessageType::Confirm, 4)
        .na(1, &[ip("2001:db8:1::100")])
        .bytes();
    let fwd = relay(0, "2001:db8:1::1", "fe80::99", Some(b"eth7"), &solicit);
    let fwd2 = relay(
        1,
        "::",
        "fe80::98",
        None,
        &relay(0, "2001:db8:1::1", "fe80::99", Some(b"eth7"), &request),
    );
    vec![solicit, request, renew, release, confirm, fwd, fwd2]
}

/// Feeds `bytes` to a fresh server that already holds a lease (so Renew/Release paths run)
/// and checks the outcome contract.
fn check_contract(bytes: &[u8], multicast: bool) {
    let mut s = Srv::new(&base_conf(""));
    s.grant(3);
    let r = s.rx_full(1000, link_local(), multicast, Some("eth0"), bytes);
    match r.out {
        Outcome::Dropped(_) => {
            assert!(r.writes.is_empty());
            assert!(r.reply.is_empty());
        }
        Outcome::Reply { .. } => {
            let back = unwrap_relay_replies(&r.reply).expect("reply parses");
            let m = Message::parse(back.inner()).expect("inner reply parses");
            assert!(matches!(
                m.msg_type(),
                MessageType::Advertise | MessageType::Reply
            ));
            assert_eq!(m.server_id(), Some(SERVER_DUID));
            for l in &r.writes {
                assert!(l.state != LeaseState::Offered, "offers are never stored");
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match *m {
            Mutation::Truncate(i) => b.truncate(i % (n + 1)),
            Mutation::Flip(i, x) if n > 0 => b[i % n] ^= x,
            Mutation::Set(i, x) if n > 0 => b[i % n] = x,
            Mutation::Insert(i, x) => b.insert(i % (n + 1), x),
            Mutation::Remove(i) if n > 0 => {
                b.remove(i % n);
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), multicast in any::<bool>()) {
        check_contract(&bytes, multicast);
    }

    #[test]
    fn random_bytes_with_valid_type_never_panic(
        ty in 1u8..=13,
        body in proptest::collection::vec(any::<u8>(), 0..200),
        multicast in any::<bool>(),
    ) {
        let mut bytes = vec![ty];
        bytes.extend(body);
        check_contract(&bytes, multicast);
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        seed in 0usize..7,
        muts in proptest::collection::vec(mutation(), 1..6),
        multicast in any::<bool>(),
    ) {
        let bytes = apply(seeds()[seed].clone(), &muts);
        check_contract(&bytes, multicast);
    }
}

// =============================================================================================
// Options (RFC 8415 §18.3, §21.7; RFC 3646, 4075, 5908)

/// Global, subnet and pd-pool options on subnet 1; subnet 2 sets its own DNS servers.
fn options_conf(extra_global: &str) -> String {
    format!(
        r#"[server]
listen = ["[::1]:5547"]
rapid_commit = true
[lease]
preferred_lifetime_secs = 100
valid_lifetime_secs = 200
[options]
dns_servers = ["2001:db8::53"]
domain_search = ["example.net", "lab.example.net"]
information_refresh_secs = 7200
sol_max_rt_secs = 3600
inf_max_rt_secs = 1800
ntp_servers = ["2001:db8::123", "ff05::101", "ntp.example.net"]
vendor = [{{ enterprise = 4491, suboptions = [{{ code = 1, hex = "0a0b" }}] }}]
{extra_global}
[[subnet]]
id = 1
prefix = "2001:db8:1::/64"
pools = [{{ range = "2001:db8:1::100-2001:db8:1::1ff" }}]
pd_pools = [{{ prefix = "2001:db8:8000::/40", delegated_len = 56, options = {{ dns_servers = ["2001:db8:8::53"] }} }}]
[subnet.options]
dns_servers = ["2001:db8:1::53", "2001:db8:1::54"]
[[subnet]]
id = 2
prefix = "2001:db8:2::/64"
pools = [{{ range = "2001:db8:2::100-2001:db8:2::1ff" }}]
options = {{ dns_servers = ["2001:db8:2::53"] }}
"#
    )
}

/// The client message inside a Relay-reply.
fn relayed_inner(r: &Res) -> Vec<u8> {
    unwrap_relay_replies(&r.reply).unwrap().inner().to_vec()
}

/// Every top-level option of a message, decoded by dhcproto (the independent oracle).
fn oracle_options(bytes: &[u8]) -> Vec<DhcpOption> {
    let m = dhcproto::v6::Message::decode(&mut dhcproto::Decoder::new(bytes))
        .expect("dhcproto decodes the reply");
    m.opts().iter().cloned().collect()
}

fn dns_of(opts: &[DhcpOption]) -> Vec<Vec<Ipv6Addr>> {
    opts.iter()
        .filter_map(|o| match o {
            DhcpOption::DomainNameServers(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The bytes of option `code` that dhcproto has no type for.
fn unknown_data(opts: &[DhcpOption], code: u16) -> Option<Vec<u8>> {
    opts.iter().find_map(|o| match o {
        DhcpOption::Unknown(u) if u16::from(u.code()) == code => Some(u.data().to_vec()),
        _ => None,
    })
}

fn code_count(v: &View, code: u16) -> usize {
    v.codes.iter().filter(|c| **c == code).count()
}

#[test]
fn requested_options_come_from_the_most_specific_level() {
    let mut s = Srv::new(&options_conf(""));
    let oro = [23, 24, 82, 32, 83, 17, 56];
    // An address only: the subnet's DNS servers, the global search list, SOL_MAX_RT; not the
    // Information-request-only options.
    let r = s.send(
        &P::new(MessageType::Solicit, 1)
            .rapid()
            .na(1, &[])
            .oro(&oro)
            .bytes(),
    );
    let v = r.view();
    assert!(pool1(v.na(1).addrs[0].0));
    let opts = oracle_options(&r.reply);
    assert_eq!(
        dns_of(&opts),
        vec![vec![ip("2001:db8:1::53"), ip("2001:db8:1::54")]]
    );
    let search: Vec<String> = opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::DomainSearchList(names) => {
                Some(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(search, ["example.net.", "lab.example.net."]);
    assert_eq!(code_count(&v, opt::SOL_MAX_RT), 1);
    assert_eq!(
        code_count(&v, opt::INFORMATION_REFRESH_TIME),
        0,
        "§21.23: Information-request only"
    );
    assert_eq!(
        code_count(&v, opt::INF_MAX_RT),
        0,
        "§21.25: Information-request only"
    );
    assert_eq!(code_count(&v, opt::VENDOR_OPTS), 1);
    assert_eq!(code_count(&v, opt::NTP_SERVER), 3, "one per server");
    // A prefix too: the pd-pool's own DNS servers win over the subnet's.
    let r = s.send(
        &P::new(MessageType::Solicit, 2)
            .rapid()
            .na(1, &[])
            .pd(2, &[])
            .oro(&[23])
            .bytes(),
    );
    assert_eq!(
        dns_of(&oracle_options(&r.reply)),
        vec![vec![ip("2001:db8:8::53")]]
    );
    // Subnet 2 has its own list; relayed from its link.
    let inner = P::new(MessageType::Solicit, 3)
        .rapid()
        .na(1, &[])
        .oro(&[23, 24])
        .bytes();
    let r = s.send(&relay(0, "2001:db8:2::1", "fe80::99", None, &inner));
    let back = relayed_inner(&r);
    let opts = oracle_options(&back);
    assert_eq!(dns_of(&opts), vec![vec![ip("2001:db8:2::53")]]);
    assert!(
        opts.iter()
            .any(|o| matches!(o, DhcpOption::DomainSearchList(_)))
    );
}

#[test]
fn only_requested_options_are_sent_each_once() {
    let mut s = Srv::new(&options_conf(""));
    let r = s.send(&P::new(MessageType::Solicit, 1).rapid().na(1, &[]).bytes());
    let v = r.view();
    for code in [23, 24, 17, 31, 32, 56, 82, 83] {
        assert_eq!(code_count(&v, code), 0, "option {code} was not requested");
    }
    let r = s.send(
        &P::new(MessageType::Solicit, 2)
            .na(1, &[])
            .oro(&[23, 23, 24, 23, 999])
            .bytes(),
    );
    let v = r.view();
    assert_eq!(v.ty, MessageType::Advertise);
    assert_eq!((code_count(&v, 23), code_count(&v, 24)), (1, 1));
    assert_eq!(code_count(&v, 999), 0, "not configured");
}

#[test]
fn renew_reply_carries_requested_options() {
    let mut s = Srv::new(&options_conf(""));
    let a = s.grant(1);
    let r = s.send(
        &P::new(MessageType::Renew, 1)
            .sid()
            .na(1, &[a])
            .oro(&[23, 32])
            .bytes(),
    );
    let v = r.view();
    assert_eq!(v.na(1).addrs[0].0, a);
    assert_eq!(
        dns_of(&oracle_options(&r.reply)),
        vec![vec![ip("2001:db8:1::53"), ip("2001:db8:1::54")]]
    );
    assert_eq!(code_count(&v, 32), 0);
}

#[test]
fn information_request_gets_the_options_of_its_link() {
    let mut s = Srv::new(&options_conf("custom = [{ code = 100, text = \"hello\" }]"));
    let oro = [23, 24, 32, 82, 83, 100];
    let r = s.send(&P::new(MessageType::InformationRequest, 1).oro(&oro).bytes());
    let v = r.view();
    assert_eq!(v.ty, MessageType::Reply);
    let opts = oracle_options(&r.reply);
    // Direct, no interface: the first subnet not tied to an interface (subnet 1).
    assert_eq!(
        dns_of(&opts),
        vec![vec![ip("2001:db8:1::53"), ip("2001:db8:1::54")]]
    );
    assert_eq!(code_count(&v, 32), 1, "{:?}", v.codes);
    // dhcproto 0.15 reads option 32 as an unknown option: compare its bytes.
    assert_eq!(
        unknown_data(&opts, 32),
        Some(7200u32.to_be_bytes().to_vec())
    );
    assert_eq!(code_count(&v, opt::INF_MAX_RT), 1);
    assert_eq!(
        code_count(&v, opt::SOL_MAX_RT),
        0,
        "SOL_MAX_RT is for Solicit's clients"
    );
    assert_eq!(code_count(&v, 100), 1);
    assert!(v.nas.is_empty() && v.pds.is_empty());
    // Relayed from subnet 2's link: its DNS servers.
    let inner = P::new(MessageType::InformationRequest, 2)
        .oro(&[23])
        .bytes();
    let r = s.send(&relay(0, "2001:db8:2::1", "fe80::99", None, &inner));
    let back = relayed_inner(&r);
    assert_eq!(
        dns_of(&oracle_options(&back)),
        vec![vec![ip("2001:db8:2::53")]]
    );
    // From a link no subnet covers: the global options (stateless service needs no pool).
    let inner = P::new(MessageType::InformationRequest, 3)
        .oro(&[23])
        .bytes();
    let r = s.send(&relay(0, "2001:db8:77::1", "fe80::99", None, &inner));
    let back = relayed_inner(&r);
    assert_eq!(
        dns_of(&oracle_options(&back)),
        vec![vec![ip("2001:db8::53")]]
    );
}

#[test]
fn advertise_with_nothing_to_assign_still_carries_requested_sol_max_rt() {
    let mut s = Srv::new(&small_conf("2001:db8:1::100", "").replace(
        "[[subnet]]",
        "[options]\nsol_max_rt_secs = 3600\n[[subnet]]",
    ));
    s.grant(1);
    let r = s.send(
        &P::new(MessageType::Solicit, 2)
            .na(1, &[])
            .oro(&[82])
            .bytes(),
    );
    let v = r.view();
    assert_eq!(v.ty, MessageType::Advertise);
    assert_eq!(v.status, Some(NO_ADDRS));
    assert!(v.nas.is_empty(), "no empty IAs in such an Advertise");
    let opts = oracle_options(&r.reply);
    assert_eq!(
        unknown_data(&opts, 82),
        Some(3600u32.to_be_bytes().to_vec())
    );
}

#[test]
fn ntp_and_vendor_options_decode_as_their_rfcs_say() {
    let mut s = Srv::new(&options_conf(""));
    let r = s.send(
        &P::new(MessageType::InformationRequest, 1)
            .oro(&[56, 17])
            .bytes(),
    );
    let opts = oracle_options(&r.reply);
    let ntp: Vec<Vec<dhcproto::v6::NtpSuboption>> = opts
        .iter()
        .filter_map(|o| match o {
            DhcpOption::NtpServer(subs) => Some(subs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ntp.len(), 3, "{ntp:?}");
    assert!(
        ntp.iter().all(|subs| subs.len() == 1),
        "one time source per option"
    );
    assert!(
        matches!(ntp[0][0], dhcproto::v6::NtpSuboption::ServerAddress(a) if a == ip("2001:db8::123"))
    );
    assert!(
        matches!(ntp[1][0], dhcproto::v6::NtpSuboption::MulticastAddress(a) if a == ip("ff05::101"))
    );
    assert!(
        matches!(&ntp[2][0], dhcproto::v6::NtpSuboption::FQDN(n) if n.to_string() == "ntp.example.net.")
    );
    let vendor = opts.iter().find_map(|o| match o {
        DhcpOption::VendorOpts(v) => Some(v.clone()),
        _ => None,
    });
    let vendor = vendor.expect("vendor option");
    assert_eq!(vendor.num, 4491);
}

// =============================================================================================
// Reservations (by DUID, link-layer address, Remote-ID, Subscriber-ID, Interface-ID)

/// A Relay-forw from link 2001:db8:1::1 carrying `opts` (code, data) before the Relay Message.
fn relay_opts(opts: &[(u16, &[u8])], inner: &[u8]) -> Vec<u8> {
    let mut out = vec![12, 0];
    out.extend_from_slice(&ip("2001:db8:1::1").octets());
    out.extend_from_slice(&ip("fe80::99").octets());
    for (code, data) in opts.iter().chain([(opt::RELAY_MSG, inner)].iter()) {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn reservations_conf() -> String {
    small_conf(
        "2001:db8:1::1ff",
        r#"pd_pools = [{ prefix = "2001:db8:8000::/40", delegated_len = 56 }]
[options]
dns_servers = ["2001:db8::53"]
[[subnet.reservations]]
duid = "00:03:00:01:52:54:00:00:00:07"
addresses = ["2001:db8:1::1f0"]
options = { dns_servers = ["2001:db8:7::53"] }
[[subnet.reservations]]
remote_id = "4491:text:line-17"
prefixes = ["2001:db8:8000:1700::/56"]
[[subnet.reservations]]
subscriber_id = "text:sub-0001"
prefixes = ["2001:db8:8000:1800::/56"]
[[subnet.reservations]]
interface_id = "text:ge-0/0/1.100"
prefixes = ["2001:db8:8000:1900::/56"]
[[subnet.reservations]]
hw_address = "52:54:00:aa:bb:cc"
addresses = ["2001:db8:1::1f1"]
"#,
    )
}

/// A DUID-LL for MAC 52:54:00:aa:bb:cc (type 3, hardware type 1).
const DUID_LL_RESERVED: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];

#[test]
fn a_client_reserved_by_duid_gets_its_address_and_its_options() {
    let mut s = Srv::new(&reservations_conf());
    let p = P::new(MessageType::Solicit, 7)
        .rapid()
        .na(1, &[])
        .oro(&[23]);
    assert_eq!(duid(7), vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 7]);
    let r = s.send(&p.bytes());
    assert_eq!(r.view().na(1).addrs[0].0, ip("2001:db8:1::1f0"));
    assert_eq!(
        dns_of(&oracle_options(&r.reply)),
        vec![vec![ip("2001:db8:7::53")]]
    );
    // Another client never gets it, not even by asking for it.
    let q = P::new(MessageType::Solicit, 8)
        .rapid()
        .na(1, &[ip("2001:db8:1::1f0")])
        .oro(&[23]);
    let r = s.send(&q.bytes());
    let v = r.view();
    assert_ne!(v.na(1).addrs[0].0, ip("2001:db8:1::1f0"));
    assert_eq!(
        dns_of(&oracle_options(&r.reply)),
        vec![vec![ip("2001:db8::53")]]
    );
}

#[test]
fn a_new_cpe_on_the_same_line_gets_the_line_s_prefix() {
    let mut s = Srv::new(&reservations_conf());
    let line: &[u8] = &[0, 0, 0x11, 0x8b, b'l', b'i', b'n', b'e', b'-', b'1', b'7'];
    for (cpe, at) in [(21u16, 1000u64), (22, 1010)] {
        let inner = P::new(MessageType::Solicit, cpe).rapid().pd(1, &[]).bytes();
        let fwd = relay_opts(&[(opt::REMOTE_ID, line)], &inner);
        let r = s.at(at, &fwd);
        let back = relayed_inner(&r);
        let v = view(&back);
        assert_eq!(
            (v.pds[0].prefixes[0].0, v.pds[0].prefixes[0].1),
            (ip("2001:db8:8000:1700::"), 56),
            "CPE {cpe} on line-17"
        );
    }
    // The CPE that was swapped out learns it on its Renew.
    let inner = P::new(MessageType::Renew, 21)
        .sid()
        .pd(1, &[(ip("2001:db8:8000:1700::"), 56)])
        .bytes();
    let r = s.at(1020, &relay_opts(&[(opt::REMOTE_ID, line)], &inner));
    let back = relayed_inner(&r);
    let v = view(&back);
    assert_eq!(v.pds[0].prefixes[0].3, 0, "valid lifetime 0: no longer its");
    // Subscriber-ID and Interface-ID lines, and no identifier at all.
    for (code, id, want) in [
        (
            opt::SUBSCRIBER_ID,
            &b"sub-0001"[..],
            Some("2001:db8:8000:1800::"),
        ),
        (
            opt::INTERFACE_ID,
            &b"ge-0/0/1.100"[..],
            Some("2001:db8:8000:1900::"),
        ),
        (opt::INTERFACE_ID, &b"ge-0/0/2.100"[..], None),
    ] {
        let inner = P::new(MessageType::Solicit, 30).rapid().pd(1, &[]).bytes();
        let r = s.send(&relay_opts(&[(code, id)], &inner));
        let back = relayed_inner(&r);
        let got = view(&back).pds[0].prefixes[0].0;
        match want {
            Some(w) => assert_eq!(got, ip(w)),
            None => assert!(
                ![
                    ip("2001:db8:8000:1700::"),
                    ip("2001:db8:8000:1800::"),
                    ip("2001:db8:8000:1900::")
                ]
                .contains(&got),
                "an unreserved line gets a dynamic prefix, not {got}"
            ),
        }
        // Release so the same DUID starts afresh for the next line.
        let rel = P::new(MessageType::Release, 30)
            .sid()
            .pd(1, &[(got, 56)])
            .bytes();
        s.send(&relay_opts(&[(code, id)], &rel));
    }
}

#[test]
fn link_layer_reservations_match_duid_ll_and_the_relay_s_option_79() {
    let mut s = Srv::new(&reservations_conf());
    let mut p = P::new(MessageType::Solicit, 40).rapid().na(1, &[]);
    p.client = Some(DUID_LL_RESERVED.to_vec());
    let r = s.send(&p.bytes());
    assert_eq!(
        r.view().na(1).addrs[0].0,
        ip("2001:db8:1::1f1"),
        "MAC inside a DUID-LL"
    );
    // Released, then asked for by a client whose DUID carries no MAC (DUID-EN) but whose
    // relay says which MAC it has (RFC 6939: link-layer type 1, then the address).
    let mut rel = P::new(MessageType::Release, 40)
        .sid()
        .na(1, &[ip("2001:db8:1::1f1")]);
    rel.client = Some(DUID_LL_RESERVED.to_vec());
    s.send(&rel.bytes());
    let mut q = P::new(MessageType::Solicit, 41).rapid().na(1, &[]);
    q.client = Some(vec![0, 2, 0, 0, 0x11, 0x8b, 1, 2, 3]);
    let mac79: &[u8] = &[0, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 0xcc];
    let r = s.send(&relay_opts(
        &[(opt::CLIENT_LINKLAYER_ADDR, mac79)],
        &q.bytes(),
    ));
    let back = relayed_inner(&r);
    assert_eq!(view(&back).na(1).addrs[0].0, ip("2001:db8:1::1f1"));
}

// =============================================================================================
// Link selection by what relays send (RFC 8415 §13.1)

#[test]
fn relays_outside_every_prefix_select_by_address_or_interface_id() {
    let mut s = Srv::new(&two_subnets(
        r#"relay = { interface_ids = ["text:ge-0/0/2.200"], addresses = ["2001:db8:ff::2"] }"#,
        "",
    ));
    let inner = || P::new(MessageType::Solicit, 1).rapid().na(1, &[]).bytes();
    let got = |s: &mut Srv, fwd: &[u8], src: &str| -> Option<Ipv6Addr> {
        let src: SocketAddrV6 = format!("[{src}]:547").parse().unwrap();
        let r = s.rx_full(1000, src, false, None, fwd);
        match r.out {
            Outcome::Dropped(d) => {
                assert_eq!(d, Dropped::NoSubnet);
                None
            }
            Outcome::Reply { .. } => {
                let back = relayed_inner(&r);
                Some(view(&back).na(1).addrs[0].0)
            }
        }
    };
    // A link-address in a prefix wins, whatever else the relay says.
    let a = got(
        &mut s,
        &relay(
            0,
            "2001:db8:1::1",
            "fe80::99",
            Some(b"ge-0/0/2.200"),
            &inner(),
        ),
        "2001:db8:ff::2",
    );
    assert!(a.is_some_and(pool1), "{a:?}");
    // A link-address outside every prefix, named by subnet 2.
    let a = got(
        &mut s,
        &relay(0, "2001:db8:ff::2", "fe80::99", None, &inner()),
        "2001:db8:ff::7",
    );
    assert!(a.is_some_and(pool2), "{a:?}");
    // Link-address zero: the Interface-ID, then the relay's own (source) address.
    let a = got(
        &mut s,
        &relay(0, "::", "fe80::99", Some(b"ge-0/0/2.200"), &inner()),
        "2001:db8:ff::7",
    );
    assert!(a.is_some_and(pool2), "{a:?}");
    let a = got(
        &mut s,
        &relay(0, "::", "fe80::99", Some(b"ge-0/0/9.900"), &inner()),
        "2001:db8:ff::2",
    );
    assert!(a.is_some_and(pool2), "{a:?}");
    // Nothing matches: no subnet, no reply.
    assert_eq!(
        got(
            &mut s,
            &relay(0, "::", "fe80::99", Some(b"ge-0/0/9.900"), &inner()),
            "2001:db8:ff::7"
        ),
        None
    );
    assert_eq!(
        got(
            &mut s,
            &relay(0, "2001:db8:ee::1", "fe80::99", None, &inner()),
            "2001:db8:ff::2"
        ),
        None
    );
}

// =============================================================================================
// Leasequery (RFC 5007)

fn lq_conf() -> String {
    format!(
        "{}[leasequery]\nrequestors = [\"2001:db8:ff::/64\", \"::1\"]\n",
        two_subnets("", "")
    )
    .replace(
        "pd_pools = [{ prefix = \"2001:db8:8000::/40\", delegated_len = 56 }]",
        "pd_pools = [{ prefix = \"2001:db8:8000::/40\", delegated_len = 56 }]",
    )
}

/// A LEASEQUERY from requestor DUID `0:4:9:9` with one query.
fn lq(query_type: u8, link: &str, query_options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut q = vec![query_type];
    q.extend_from_slice(&ip(link).octets());
    for (code, data) in query_options {
        q.extend_from_slice(&code.to_be_bytes());
        q.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        q.extend_from_slice(data);
    }
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Leasequery, 0x42);
    w.client_id(&[0, 4, 9, 9]);
    w.option(opt::LQ_QUERY, &q);
    buf
}

fn iaaddr(a: &str) -> (u16, Vec<u8>) {
    let mut d = ip(a).octets().to_vec();
    d.extend_from_slice(&[0; 8]);
    (opt::IAADDR, d)
}

/// The reply's top-level options as (code, data).
fn lq_reply(s: &mut Srv, from: &str, q: &[u8]) -> (u16, Vec<(u16, Vec<u8>)>) {
    let src: SocketAddrV6 = format!("[{from}]:546").parse().unwrap();
    let r = s.rx_full(1100, src, false, None, q);
    assert_eq!(r.answered(), MessageType::Leasequery);
    assert!(r.writes.is_empty(), "a Leasequery changes nothing");
    let m = Message::parse(&r.reply).unwrap();
    assert_eq!(m.msg_type(), MessageType::LeasequeryReply);
    assert_eq!(m.transaction_id(), 0x42);
    assert_eq!(m.server_id(), Some(SERVER_DUID));
    assert_eq!(m.client_id(), Some(&[0u8, 4, 9, 9][..]));
    let status = m.status().map_or(0, |s| s.code);
    (
        status,
        m.options().map(|o| (o.code, o.data.to_vec())).collect(),
    )
}

fn client_data(opts: &[(u16, Vec<u8>)]) -> Option<Vec<(u16, Vec<u8>)>> {
    let d = &opts.iter().find(|(c, _)| *c == opt::CLIENT_DATA)?.1;
    Some(
        tandem_core::wire::OptionIter::new(d)
            .map(|o| (o.code, o.data.to_vec()))
            .collect(),
    )
}

#[test]
fn leasequery_by_address_and_prefix_names_the_client_and_its_bindings() {
    let mut s = Srv::new(&lq_conf());
    // Client 5 takes an address and a prefix at t=1000.
    let r = s.send(
        &P::new(MessageType::Solicit, 5)
            .rapid()
            .na(1, &[])
            .pd(2, &[])
            .bytes(),
    );
    let v = r.view();
    let (addr, prefix) = (v.na(1).addrs[0].0, v.pds[0].prefixes[0].0);
    // By the address: the client's identifier, both bindings, CLT 100 s ago (asked at 1100).
    let (st, opts) = lq_reply(
        &mut s,
        "2001:db8:ff::9",
        &lq(1, "::", &[iaaddr(&addr.to_string())]),
    );
    assert_eq!(st, 0);
    let cd = client_data(&opts).expect("client data");
    assert_eq!(cd[0], (opt::CLIENTID, duid(5)));
    assert!(
        cd.iter()
            .any(|(c, d)| *c == opt::IAADDR && d[..16] == addr.octets())
    );
    assert!(
        cd.iter()
            .any(|(c, d)| *c == opt::IAPREFIX && d[9..25] == prefix.octets())
    );
    let clt = cd.iter().find(|(c, _)| *c == opt::CLT_TIME).unwrap();
    assert_eq!(clt.1, 100u32.to_be_bytes().to_vec());
    let lifetimes = |d: &[u8]| {
        (
            u32::from_be_bytes(d[16..20].try_into().unwrap()),
            u32::from_be_bytes(d[20..24].try_into().unwrap()),
        )
    };
    let a = cd.iter().find(|(c, _)| *c == opt::IAADDR).unwrap();
    assert_eq!(
        lifetimes(&a.1),
        (0, 100),
        "what is left of preferred 100 s and valid 200 s"
    );
    // By an address inside the delegated prefix (what a router sees in traffic).
    let inside = Ipv6Addr::from(u128::from(prefix) | 0x1234);
    let (_, opts) = lq_reply(&mut s, "::1", &lq(1, "::", &[iaaddr(&inside.to_string())]));
    assert_eq!(client_data(&opts).unwrap()[0], (opt::CLIENTID, duid(5)));
    // A free address in a pool: no client data, no error.
    let (st, opts) = lq_reply(&mut s, "::1", &lq(1, "::", &[iaaddr("2001:db8:1::1ff")]));
    assert_eq!((st, client_data(&opts)), (0, None));
    // Unless the server is catching up with its failover partner: then "none" may be wrong
    // (the binding may be on its way) and the requestor gets no answer, and asks again. What
    // it knows it still answers.
    s.policy = Policy {
        catching_up: true,
        ..Policy::STANDALONE
    };
    let src: SocketAddrV6 = "[::1]:546".parse().unwrap();
    let r = s.rx_full(
        1100,
        src,
        false,
        None,
        &lq(1, "::", &[iaaddr("2001:db8:1::1ff")]),
    );
    assert_eq!(r.dropped(), Dropped::CatchingUp);
    let r = s.rx_full(
        1100,
        src,
        false,
        None,
        &lq(2, "::", &[(opt::CLIENTID, duid(77))]),
    );
    assert_eq!(r.dropped(), Dropped::CatchingUp);
    let (_, opts) = lq_reply(&mut s, "::1", &lq(1, "::", &[iaaddr(&addr.to_string())]));
    assert_eq!(client_data(&opts).unwrap()[0], (opt::CLIENTID, duid(5)));
    s.policy = Policy::STANDALONE;
    // Outside everything: NotConfigured.
    let (st, _) = lq_reply(&mut s, "::1", &lq(1, "::", &[iaaddr("2001:db8:99::1")]));
    assert_eq!(st, StatusCode::NotConfigured as u16);
}

#[test]
fn leasequery_by_client_id_lists_links_when_the_client_is_on_several() {
    let mut s = Srv::new(&lq_conf());
    s.send(&P::new(MessageType::Solicit, 6).rapid().na(1, &[]).bytes());
    let (st, opts) = lq_reply(&mut s, "::1", &lq(2, "::", &[(opt::CLIENTID, duid(6))]));
    assert_eq!(st, 0);
    assert!(client_data(&opts).is_some(), "one link: its data");
    // The same client on subnet 2's link too: the links, and no data.
    let inner = P::new(MessageType::Solicit, 6).rapid().na(1, &[]).bytes();
    s.send(&relay(0, "2001:db8:2::1", "fe80::99", None, &inner));
    let (_, opts) = lq_reply(&mut s, "::1", &lq(2, "::", &[(opt::CLIENTID, duid(6))]));
    assert!(client_data(&opts).is_none());
    let links = &opts
        .iter()
        .find(|(c, _)| *c == opt::LQ_CLIENT_LINK)
        .unwrap()
        .1;
    assert_eq!(links.len(), 32);
    // Naming a link narrows it to that one.
    let (_, opts) = lq_reply(
        &mut s,
        "::1",
        &lq(2, "2001:db8:2::", &[(opt::CLIENTID, duid(6))]),
    );
    let cd = client_data(&opts).unwrap();
    assert!(cd.iter().any(|(c, d)| *c == opt::IAADDR
        && pool2(Ipv6Addr::from(<[u8; 16]>::try_from(&d[..16]).unwrap()))));
    // An unknown client: nothing.
    let (st, opts) = lq_reply(&mut s, "::1", &lq(2, "::", &[(opt::CLIENTID, duid(77))]));
    assert_eq!((st, client_data(&opts)), (0, None));
}

/// RFC 5007 §4.1.2.4: the relay data of the client's last relayed grant or renewal, inside
/// its OPTION_CLIENT_DATA, when the query's ORO asks for it, and only then.
#[test]
fn leasequery_returns_the_relay_data_when_the_query_asks_for_it() {
    let mut s = Srv::new(&lq_conf());
    let inner = P::new(MessageType::Solicit, 8).rapid().pd(1, &[]).bytes();
    let mut fwd = relay(0, "2001:db8:1::1", "fe80::8", Some(b"port-8"), &inner);
    fwd.extend_from_slice(&opt::REMOTE_ID.to_be_bytes());
    fwd.extend_from_slice(&9u16.to_be_bytes());
    fwd.extend_from_slice(&[0, 0, 0, 9, b'l', b'-', b'8', b'x', b'y']);
    let r = s.send(&fwd);
    let kept = r.writes[0].relay.clone();
    assert!(!kept.is_empty());
    let by_client = |oro: &[u16]| {
        let mut q = vec![(opt::CLIENTID, duid(8))];
        if !oro.is_empty() {
            q.push((opt::ORO, oro.iter().flat_map(|c| c.to_be_bytes()).collect()));
        }
        lq(2, "::", &q)
    };
    let (st, opts) = lq_reply(&mut s, "::1", &by_client(&[opt::LQ_RELAY_DATA]));
    assert_eq!(st, 0);
    let cd = client_data(&opts).unwrap();
    let rd = &cd
        .iter()
        .find(|(c, _)| *c == opt::LQ_RELAY_DATA)
        .expect("relay data asked for")
        .1;
    assert_eq!(&rd[..], &kept[..]);
    // peer-address: the relay we heard it from; then the Relay-forw without the Solicit.
    assert_eq!(&rd[..16], &link_local().ip().octets());
    assert_eq!(rd[16], 12);
    assert_eq!(rd.len(), 16 + fwd.len() - inner.len() - 4);
    // Not asked for: not sent.
    let (_, opts) = lq_reply(&mut s, "::1", &by_client(&[]));
    let cd = client_data(&opts).unwrap();
    assert!(!cd.iter().any(|(c, _)| *c == opt::LQ_RELAY_DATA));
}

/// One Bulk Leasequery answer message: its type, status, and each Client Data's options.
type LqMsg = (MessageType, Option<u16>, Vec<Vec<(u16, Vec<u8>)>>);

/// RFC 5460 Bulk Leasequery, sans-IO: by Remote-ID, Relay-ID, link address and client, each
/// client's bindings on a link in one Client Data, a LEASEQUERY-REPLY first, a
/// LEASEQUERY-DATA per further client and a LEASEQUERY-DONE after them; refusals and "none"
/// are a REPLY alone.
#[test]
fn bulk_leasequery_answers_by_line_relay_link_and_client() {
    use tandem_core::leasequery::{Ctx, answer_bulk};
    let mut s = Srv::new(&lq_conf());
    let with_opts = |mut v: Vec<u8>, opts: &[(u16, &[u8])]| {
        for (code, data) in opts {
            v.extend_from_slice(&code.to_be_bytes());
            v.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            v.extend_from_slice(data);
        }
        v
    };
    const RELAY_ID: &[u8] = &[0, 3, 0, 1, 0xaa, 0, 0, 0, 0, 1];
    // Clients 8 (address and prefix) and 9 (address) behind access relays with their
    // Remote-IDs, behind one aggregation relay with a Relay-ID; client 10 direct; client 11
    // relayed on subnet 2 with neither.
    let behind = |rid: &[u8], ias: P| {
        let access = with_opts(
            relay(0, "2001:db8:1::1", "fe80::8", None, &ias.bytes()),
            &[(opt::REMOTE_ID, rid)],
        );
        with_opts(
            relay(1, "::", "2001:db8:ff::1", None, &access),
            &[(53, RELAY_ID)],
        )
    };
    let line8: &[u8] = b"\0\0\0\x09line-8";
    let line9: &[u8] = b"\0\0\0\x09line-9";
    for m in [
        behind(
            line8,
            P::new(MessageType::Solicit, 8)
                .rapid()
                .na(1, &[])
                .pd(2, &[]),
        ),
        behind(line9, P::new(MessageType::Solicit, 9).rapid().na(1, &[])),
        P::new(MessageType::Solicit, 10).rapid().na(1, &[]).bytes(),
        relay(
            0,
            "2001:db8:2::1",
            "fe80::b",
            None,
            &P::new(MessageType::Solicit, 11).rapid().na(1, &[]).bytes(),
        ),
    ] {
        assert!(!s.send(&m).writes.is_empty());
    }
    let run = |s: &Srv, catching_up: bool, q: &[u8]| -> Vec<LqMsg> {
        let cx = Ctx {
            config: &s.cfg,
            alloc: &s.alloc,
            server_duid: SERVER_DUID,
            now_secs: 1100,
            requestor: ip("::1"),
            catching_up,
        };
        let mut a = answer_bulk(&cx, &Message::parse(q).unwrap()).unwrap();
        let mut out = Vec::new();
        let mut msgs = Vec::new();
        while a.next_message(&mut out) {
            let m = Message::parse(&out).unwrap();
            assert_eq!(m.transaction_id(), 0x42);
            let first = msgs.is_empty();
            assert_eq!(
                m.server_id().is_some(),
                first,
                "server id in the REPLY only"
            );
            let data: Vec<Vec<(u16, Vec<u8>)>> = m
                .options()
                .filter(|o| o.code == opt::CLIENT_DATA)
                .map(|o| {
                    tandem_core::wire::OptionIter::new(o.data)
                        .map(|o| (o.code, o.data.to_vec()))
                        .collect()
                })
                .collect();
            msgs.push((m.msg_type(), m.status().map(|s| s.code), data));
        }
        msgs
    };
    let clients_in = |msgs: &[LqMsg]| {
        let mut c: Vec<Vec<u8>> = msgs
            .iter()
            .flat_map(|(_, _, d)| d.iter().map(|cd| cd[0].1.clone()))
            .collect();
        c.sort();
        c
    };
    let shape = |msgs: &[LqMsg]| {
        msgs.iter()
            .map(|(t, st, d)| (*t, *st, d.len()))
            .collect::<Vec<_>>()
    };
    use MessageType::{LeasequeryData as Data, LeasequeryDone as Done, LeasequeryReply as Reply};
    // By Remote-ID: client 8, its address and prefix in one Client Data.
    let m = run(&s, false, &lq(5, "::", &[(opt::REMOTE_ID, line8.to_vec())]));
    assert_eq!(shape(&m), vec![(Reply, None, 1), (Done, None, 0)]);
    assert_eq!(clients_in(&m), vec![duid(8)]);
    let cd = &m[0].2[0];
    assert!(
        cd.iter().any(|(c, _)| *c == opt::IAADDR) && cd.iter().any(|(c, _)| *c == opt::IAPREFIX)
    );
    assert!(
        !cd.iter().any(|(c, _)| *c == opt::LQ_RELAY_DATA),
        "not asked for"
    );
    // By Relay-ID, with the relay data asked for: clients 8 and 9.
    let oro = opt::LQ_RELAY_DATA.to_be_bytes().to_vec();
    let m = run(
        &s,
        false,
        &lq(3, "::", &[(53, RELAY_ID.to_vec()), (opt::ORO, oro)]),
    );
    assert_eq!(
        shape(&m),
        vec![(Reply, None, 1), (Data, None, 1), (Done, None, 0)]
    );
    assert_eq!(clients_in(&m), vec![duid(8), duid(9)]);
    assert!(
        m.iter()
            .flat_map(|x| &x.2)
            .all(|cd| cd.iter().any(|(c, _)| *c == opt::LQ_RELAY_DATA))
    );
    // By link address: subnet 1's clients 8, 9 and 10; subnet 2's client 11.
    let m = run(&s, false, &lq(4, "2001:db8:1::", &[]));
    assert_eq!(clients_in(&m), vec![duid(8), duid(9), duid(10)]);
    assert_eq!(m.last().unwrap().0, Done);
    let m = run(&s, false, &lq(4, "2001:db8:2::1", &[]));
    assert_eq!(clients_in(&m), vec![duid(11)]);
    // By Relay-ID narrowed to subnet 2: nobody there came through that relay.
    let m = run(
        &s,
        false,
        &lq(3, "2001:db8:2::", &[(53, RELAY_ID.to_vec())]),
    );
    assert_eq!(shape(&m), vec![(Reply, None, 0)]);
    // The UDP query types work over TCP too; with several links, one Client Data each.
    s.send(&relay(
        0,
        "2001:db8:2::1",
        "fe80::8",
        None,
        &P::new(MessageType::Solicit, 8).rapid().na(7, &[]).bytes(),
    ));
    let m = run(&s, false, &lq(2, "::", &[(opt::CLIENTID, duid(8))]));
    assert_eq!(
        shape(&m),
        vec![(Reply, None, 1), (Data, None, 1), (Done, None, 0)]
    );
    assert_eq!(clients_in(&m), vec![duid(8), duid(8)]);
    // Nothing found: a REPLY alone, no status; while catching up: QueryTerminated.
    let nobody = lq(5, "::", &[(opt::REMOTE_ID, b"\0\0\0\x09nobody".to_vec())]);
    assert_eq!(shape(&run(&s, false, &nobody)), vec![(Reply, None, 0)]);
    assert_eq!(
        shape(&run(&s, true, &nobody)),
        vec![(Reply, Some(StatusCode::QueryTerminated as u16), 0)]
    );
    // While catching up, a query that walks the table is terminated even when it finds
    // bindings (they may not be all); one for a client it knows is answered.
    assert_eq!(
        shape(&run(&s, true, &lq(4, "2001:db8:1::", &[]))),
        vec![(Reply, Some(StatusCode::QueryTerminated as u16), 0)]
    );
    let m = run(
        &s,
        true,
        &lq(2, "2001:db8:1::", &[(opt::CLIENTID, duid(9))]),
    );
    assert_eq!(clients_in(&m), vec![duid(9)]);
    // Refusals: a link in no subnet, a missing option, a link query without a link.
    for (q, want) in [
        (lq(4, "2001:db8:77::", &[]), StatusCode::NotConfigured),
        (lq(3, "::", &[]), StatusCode::MalformedQuery),
        (
            lq(5, "::", &[(opt::REMOTE_ID, vec![0, 0, 0, 9])]),
            StatusCode::MalformedQuery,
        ),
        (lq(4, "::", &[]), StatusCode::MalformedQuery),
    ] {
        assert_eq!(
            shape(&run(&s, false, &q)),
            vec![(Reply, Some(want as u16), 0)]
        );
    }
}

#[test]
fn leasequery_refuses_strangers_and_bad_queries() {
    let mut s = Srv::new(&lq_conf());
    let q = lq(1, "::", &[iaaddr("2001:db8:1::100")]);
    let (st, _) = lq_reply(&mut s, "2001:db8:fe::1", &q);
    assert_eq!(st, StatusCode::NotAllowed as u16);
    for (bad, want) in [
        (lq(9, "::", &[]), StatusCode::UnknownQueryType),
        (lq(1, "::", &[]), StatusCode::MalformedQuery),
        (
            lq(2, "::", &[iaaddr("2001:db8:1::100")]),
            StatusCode::MalformedQuery,
        ),
        (
            lq(1, "2001:db8:77::1", &[iaaddr("2001:db8:1::100")]),
            StatusCode::NotConfigured,
        ),
        (lq(9, "2001:db8:77::1", &[]), StatusCode::UnknownQueryType),
        // Bulk Leasequery's query types are for TCP only (RFC 5460 §4).
        (lq(3, "::", &[]), StatusCode::NotAllowed),
        (lq(4, "2001:db8:1::", &[]), StatusCode::NotAllowed),
        (lq(5, "::", &[]), StatusCode::NotAllowed),
        // An IA Address without its lifetimes, and one whose length overruns the query.
        (
            lq(
                1,
                "::",
                &[(opt::IAADDR, ip("2001:db8:1::100").octets().to_vec())],
            ),
            StatusCode::MalformedQuery,
        ),
        (
            {
                let mut q = lq(1, "::", &[iaaddr("2001:db8:1::100")]);
                let n = q.len();
                q[n - 25] = 0xff; // the IA Address's length: longer than what is left
                q
            },
            StatusCode::MalformedQuery,
        ),
    ] {
        assert_eq!(lq_reply(&mut s, "::1", &bad).0, want as u16);
    }
    // Without a requestor identifier or a query option: discarded (§4.2.1).
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, MessageType::Leasequery, 1).client_id(&[0, 4, 9, 9]);
    let src: SocketAddrV6 = "[::1]:546".parse().unwrap();
    assert_eq!(
        s.rx_full(1100, src, false, None, &buf).dropped(),
        Dropped::NothingToAnswer
    );
    // With nobody allowed (the default), everyone is told NotAllowed.
    let mut d = Srv::new(&two_subnets("", ""));
    assert_eq!(lq_reply(&mut d, "::1", &q).0, StatusCode::NotAllowed as u16);
}

// =============================================================================================
// Prefix Exclude (RFC 6603) and Rapid Commit per subnet

#[test]
fn prefix_exclude_goes_to_clients_that_ask_for_it() {
    let conf = small_conf(
        "2001:db8:1::1ff",
        r#"pd_pools = [{ prefix = "2001:db8:8000::/40", delegated_len = 56, excluded_prefix_len = 64 }]"#,
    );
    let mut s = Srv::new(&conf);
    // The PD_EXCLUDE option inside the IA Prefix, as bytes: code 67, length 2, /64, subnet 0.
    let has_exclude = |reply: &[u8]| reply.windows(6).any(|w| w == [0, 67, 0, 2, 64, 0]);
    let r = s.send(
        &P::new(MessageType::Solicit, 1)
            .rapid()
            .pd(1, &[])
            .oro(&[67])
            .bytes(),
    );
    let v = r.view();
    assert_eq!(v.pds[0].prefixes[0].1, 56);
    assert!(has_exclude(&r.reply), "asked: {:02x?}", r.reply);
    let p = v.pds[0].prefixes[0].0;
    // And on Renew.
    let r = s.send(
        &P::new(MessageType::Renew, 1)
            .sid()
            .pd(1, &[(p, 56)])
            .oro(&[67])
            .bytes(),
    );
    assert!(has_exclude(&r.reply));
    // Not asked: not sent (§4.2: only to a client that requested it).
    let r = s.send(&P::new(MessageType::Solicit, 2).rapid().pd(1, &[]).bytes());
    assert!(!has_exclude(&r.reply));
}

#[test]
fn rapid_commit_can_be_set_per_subnet() {
    // The server allows it, subnet 2 does not.
    let mut s = Srv::new(&two_subnets("rapid_commit = false", ""));
    let p = P::new(MessageType::Solicit, 1).rapid().na(1, &[]);
    assert_eq!(s.send(&p.bytes()).view().ty, MessageType::Reply);
    let r = s.send(&relay(0, "2001:db8:2::1", "fe80::99", None, &p.bytes()));
    let back = relayed_inner(&r);
    assert_eq!(view(&back).ty, MessageType::Advertise);
}

/// Issue 9: no resource is ever bound to two clients with reservations and pools mixed.
/// Eight addresses, three of them reserved (two by DUID for clients 1 and 2, one by MAC for a
/// DUID-LL client 9 whose MAC it is); ten clients Solicit (Rapid Commit), Renew, Release and
/// Decline in random order over time. After every message: no address is active for two
/// clients, a reserved address is active only for its own client, and every client holds at
/// most its one IA's address.
fn reserved_mix_conf() -> String {
    small_conf(
        "2001:db8:1::107",
        r#"[[subnet.reservations]]
duid = "00:03:00:01:52:54:00:00:00:01"
addresses = ["2001:db8:1::100"]
[[subnet.reservations]]
duid = "00:03:00:01:52:54:00:00:00:02"
addresses = ["2001:db8:1::103"]
[[subnet.reservations]]
hw_address = "52:54:00:00:00:09"
addresses = ["2001:db8:1::106"]
"#,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reservations_and_pools_never_bind_one_address_twice(
        steps in proptest::collection::vec((0u16..10, 0u8..4, 0u64..400), 1..60)
    ) {
        let mut s = Srv::new(&reserved_mix_conf());
        let reserved_for = |a: Ipv6Addr| -> Option<u16> {
            match a.segments()[7] {
                0x100 => Some(1),
                0x103 => Some(2),
                0x106 => Some(9),
                _ => None,
            }
        };
        // Client n's DUID (client 9's is the DUID-LL of the reserved MAC).
        let duid_of = |n: u16| duid(n);
        let mut now = 1000u64;
        let mut held: std::collections::HashMap<u16, Ipv6Addr> = Default::default();
        for (client, op, dt) in steps {
            now += dt;
            let p = match (op, held.get(&client)) {
                (0, _) | (_, None) => P::new(MessageType::Solicit, client).rapid().na(1, &[]),
                (1, Some(a)) => P::new(MessageType::Renew, client).sid().na(1, &[*a]),
                (2, Some(a)) => P::new(MessageType::Release, client).sid().na(1, &[*a]),
                (_, Some(a)) => P::new(MessageType::Decline, client).sid().na(1, &[*a]),
            };
            let ty = p.ty;
            let r = s.at(now, &p.bytes());
            if let Outcome::Reply { .. } = r.out {
                let v = r.view();
                let got = v.nas.first().and_then(|na| {
                    na.addrs.iter().find(|(_, _, valid)| *valid > 0).map(|(a, _, _)| *a)
                });
                match ty {
                    MessageType::Release | MessageType::Decline => {
                        held.remove(&client);
                    }
                    _ => match got {
                        Some(a) => {
                            held.insert(client, a);
                        }
                        None => {
                            held.remove(&client);
                        }
                    },
                }
            }
            // The table: one client per active address, reserved ones only for their own.
            let mut owner: std::collections::HashMap<Ipv6Addr, Vec<u8>> = Default::default();
            s.alloc.for_each_lease(|l| {
                if l.state == LeaseState::Active && l.expires_at > now {
                    let prev = owner.insert(l.addr, l.duid.to_vec());
                    assert!(prev.is_none(), "{} active twice", l.addr);
                    if let Some(c) = reserved_for(l.addr) {
                        assert_eq!(&*l.duid, &duid_of(c)[..], "{} reserved for client {c}", l.addr);
                    }
                }
            });
            // What clients were told they hold is theirs in the table.
            for (c, a) in &held {
                if let Some(d) = owner.get(a) {
                    prop_assert_eq!(d, &duid_of(*c), "{} told to client {}", a, c);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Several failover relationships (m-to-1)

#[test]
fn each_subnet_is_served_under_its_own_relationships_policy() {
    // Subnet 1 (any interface) is shared with partner a, subnet 2 (eth1) with partner b.
    let text = format!(
        "{}{}",
        lq_conf().replace(
            "[[subnet]]\nid = 2\n",
            "[[subnet]]\nid = 2\ninterface = \"eth1\"\n"
        ),
        "[[failover]]\nrole=\"secondary\"\nrelationship=\"a\"\nsubnets=[1]\npartner_name=\"a\"\nca=\"c\"\ncert=\"c\"\nkey=\"k\"\n\
         [[failover]]\nrole=\"secondary\"\nrelationship=\"b\"\nlisten=\"[::1]:648\"\nsubnets=[2]\npartner_name=\"b\"\nca=\"c\"\ncert=\"c\"\nkey=\"k\"\n"
    );
    let mut s = Srv::new(&text);
    assert_eq!(s.cfg.relationships.len(), 2);
    let silent = Policy {
        answering: tandem_core::engine::Answering::Nobody,
        ..Policy::STANDALONE
    };
    let solicit = |c: u16| P::new(MessageType::Solicit, c).na(1, &[]).bytes();
    // Relationship b recovers (answers nobody): its subnet is silent, a's is served.
    s.policies = vec![Policy::STANDALONE, silent];
    assert!(pool1(
        s.on_iface("eth0", &solicit(1)).view().na(1).addrs[0].0
    ));
    assert_eq!(
        s.on_iface("eth1", &solicit(2)).dropped(),
        Dropped::NotServing
    );
    // The other way round.
    s.policies = vec![silent, Policy::STANDALONE];
    assert_eq!(
        s.on_iface("eth0", &solicit(3)).dropped(),
        Dropped::NotServing
    );
    assert!(pool2(
        s.on_iface("eth1", &solicit(4)).view().na(1).addrs[0].0
    ));
    // A Leasequery may be about any subnet: while one relationship answers nobody (it does
    // not know its bindings yet), nobody is answered.
    let q = lq(1, "::", &[iaaddr("2001:db8:2::100")]);
    let src: SocketAddrV6 = "[::1]:546".parse().unwrap();
    assert_eq!(
        s.rx_full(1100, src, false, None, &q).dropped(),
        Dropped::NotServing
    );
    s.policies = vec![Policy::STANDALONE, Policy::STANDALONE];
    assert_eq!(
        s.rx_full(1100, src, false, None, &q).answered(),
        MessageType::Leasequery
    );
}
