//! Reservations: addresses and prefixes kept for one client, found by its DUID, its link-layer
//! address, or its line (the innermost relay's Remote-ID, Subscriber-ID or Interface-ID).
//!
//! Two sources per subnet, merged: `reservations = [{ ... }]` in the TOML (which may carry
//! options of its own), and `reservations_file`, one reservation per line, the form an OSS
//! generates:
//!
//! ```text
//! # kind        value                      resources (addresses and/or prefixes)
//! duid          00:01:00:01:2a:3b:4c:5d:52:54:00:12:34:56   2001:db8:1::10
//! hw-address    52:54:00:12:34:56          2001:db8:1::11 2001:db8:8000:100::/56
//! remote-id     4491:text:line-17          2001:db8:8000:200::/56
//! subscriber-id text:sub-0001              2001:db8:8000:300::/56
//! interface-id  text:eth0/1/2:100          2001:db8:8000:400::/56
//! ```
//!
//! A value is hex (`0a0b`, `0a:0b`) or `text:` followed by its bytes; a Remote-ID is its
//! enterprise number, `:`, then its id. Lookup is one hash probe per identifier kind, however
//! many reservations there are.

use super::file::FileReservation;
use super::options::OptionSet;
use super::{Prefix, ResourceKind};
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;

/// Which client identifier a reservation is keyed on, in the order the engine tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// The client's DUID (Client Identifier option), whole.
    Duid,
    /// The client's link-layer address: the innermost relay's Client Link-Layer Address
    /// option (RFC 6939, without its type), else the one inside a DUID-LL or DUID-LLT.
    HwAddress,
    /// The innermost relay's Remote-ID option (RFC 4649): enterprise number and id.
    RemoteId,
    /// The innermost relay's Subscriber-ID option (RFC 4580).
    SubscriberId,
    /// The innermost relay's Interface-ID option (RFC 8415 §21.18).
    InterfaceId,
}

impl KeyKind {
    /// Every kind, in lookup order.
    pub const ALL: [KeyKind; 5] = [
        KeyKind::Duid,
        KeyKind::HwAddress,
        KeyKind::RemoteId,
        KeyKind::SubscriberId,
        KeyKind::InterfaceId,
    ];

    /// The name used in files and messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Duid => "duid",
            KeyKind::HwAddress => "hw-address",
            KeyKind::RemoteId => "remote-id",
            KeyKind::SubscriberId => "subscriber-id",
            KeyKind::InterfaceId => "interface-id",
        }
    }

    fn from_name(s: &str) -> Option<KeyKind> {
        Some(match s {
            "duid" => KeyKind::Duid,
            "hw-address" | "hw_address" => KeyKind::HwAddress,
            "remote-id" | "remote_id" => KeyKind::RemoteId,
            "subscriber-id" | "subscriber_id" => KeyKind::SubscriberId,
            "interface-id" | "interface_id" => KeyKind::InterfaceId,
            _ => return None,
        })
    }
}

/// A reservation's identifier: its kind and the bytes to match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationKey {
    /// What is matched.
    pub kind: KeyKind,
    /// The bytes it must equal.
    pub value: Box<[u8]>,
}

impl ReservationKey {
    /// A number that stands for this key in the lease table's reserved resources: the same
    /// for the same key in every configuration (a reload that changes other reservations
    /// does not change it), unlike its place in the list. 64-bit FNV-1a of the kind and the
    /// bytes.
    pub fn stable_id(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in std::iter::once(self.kind as u8).chain(self.value.iter().copied()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

impl fmt::Display for ReservationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind.name())?;
        for (i, b) in self.value.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One reservation: what it is keyed on and what it holds. Kept compact (a million of them
/// is an ordinary ISP edge): one allocation for the resources, none for absent options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The identifier that selects it.
    pub key: ReservationKey,
    /// Addresses, then prefixes (`len` 128 marks an address).
    resources: Box<[Prefix]>,
    /// Options of this client (over the subnet's and pools'; none from a file).
    options: Option<Box<OptionSet>>,
    /// Where it was configured: the index of its source in [`Reservations`] and the line.
    source: u16,
    line: u32,
}

impl Reservation {
    /// A reservation of `addresses` and `prefixes` for `key`, configured at `line` of source
    /// `source` (see [`Reservations::source`]).
    pub(super) fn new(
        key: ReservationKey,
        addresses: &[Ipv6Addr],
        prefixes: &[Prefix],
        options: OptionSet,
        source: u16,
        line: u32,
    ) -> Self {
        let resources = addresses
            .iter()
            .map(|a| Prefix { addr: *a, len: 128 })
            .chain(prefixes.iter().copied())
            .collect();
        Reservation {
            key,
            resources,
            options: (!options.is_empty()).then(|| Box::new(options)),
            source,
            line,
        }
    }

    /// The reserved resources of `kind`, as (address, prefix length), in configured order.
    pub fn resources(&self, kind: ResourceKind) -> impl Iterator<Item = (Ipv6Addr, u8)> + '_ {
        let addresses = kind == ResourceKind::Address;
        self.resources
            .iter()
            .filter(move |p| (p.len == 128) == addresses)
            .map(|p| (p.addr, p.len))
    }

    /// Reserved addresses.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.resources(ResourceKind::Address).map(|(a, _)| a)
    }

    /// Reserved prefixes.
    pub fn prefixes(&self) -> impl Iterator<Item = Prefix> + '_ {
        self.resources(ResourceKind::Prefix)
            .map(|(addr, len)| Prefix { addr, len })
    }

    /// This client's options (empty when it has none of its own).
    pub fn options(&self) -> &OptionSet {
        self.options
            .as_deref()
            .unwrap_or(&super::options::NO_OPTIONS)
    }
}

/// A subnet's reservations with their index by key: one map per identifier kind, so a lookup
/// borrows the packet's bytes and allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reservations {
    list: Vec<Reservation>,
    by_kind: [HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>; 5],
    /// Names of the places reservations came from (the config file, a reservations file).
    sources: Vec<String>,
}

impl Reservations {
    /// Number of reservations.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every reservation; its position is its id.
    pub fn list(&self) -> &[Reservation] {
        &self.list
    }

    /// The reservation with id `id`.
    pub fn get(&self, id: u32) -> &Reservation {
        &self.list[id as usize]
    }

    /// Where reservation `id` was configured: `file:line`.
    pub fn origin(&self, id: u32) -> String {
        let r = &self.list[id as usize];
        let src = self
            .sources
            .get(r.source as usize)
            .map_or("?", String::as_str);
        format!("{src}:{}", r.line)
    }

    /// Room for `n` more reservations.
    pub(super) fn reserve(&mut self, n: usize) {
        self.list.reserve(n);
    }

    /// Registers a source name; reservations from it carry the returned index.
    pub(super) fn source(&mut self, name: &str) -> u16 {
        self.sources.push(name.to_string());
        u16::try_from(self.sources.len() - 1).unwrap_or(u16::MAX)
    }

    /// Whether any reservation is keyed on `kind` (so the engine skips kinds nobody uses).
    pub fn uses(&self, kind: KeyKind) -> bool {
        !self.by_kind[kind as usize].is_empty()
    }

    /// The id of the reservation keyed on exactly (`kind`, `value`).
    pub fn find(&self, kind: KeyKind, value: &[u8]) -> Option<u32> {
        self.by_kind[kind as usize].get(value).copied()
    }

    /// Adds `r`; `Err` names the reservation already keyed the same way.
    pub(super) fn push(&mut self, r: Reservation) -> Result<(), String> {
        let id = u32::try_from(self.list.len()).map_err(|_| "too many reservations".to_string())?;
        if let Some(prev) = self.by_kind[r.key.kind as usize].get(&r.key.value).copied() {
            return Err(format!(
                "{} is reserved twice (also at {})",
                r.key,
                self.origin(prev)
            ));
        }
        let map = &mut self.by_kind[r.key.kind as usize];
        if map.is_empty() {
            // Sources are usually of one kind: size the first map for what was announced.
            map.reserve(self.list.capacity().saturating_sub(self.list.len()));
        }
        map.insert(r.key.value.clone(), id);
        self.list.push(r);
        Ok(())
    }
}

/// Hex digits, optionally separated by `:` (`0a0b`, `0a:0b`), or `text:` and the bytes.
pub(crate) fn value_bytes(s: &str) -> Result<Vec<u8>, String> {
    if let Some(t) = s.strip_prefix("text:") {
        if t.is_empty() {
            return Err("empty `text:` value".into());
        }
        return Ok(t.as_bytes().to_vec());
    }
    match super::options::hex(&s.replace('-', ":")) {
        Ok(b) if !b.is_empty() => Ok(b),
        _ => Err(format!("`{s}` is neither hex bytes (0a:0b) nor text:...")),
    }
}

/// The key bytes for `kind` from the operator's `value`.
pub(super) fn key(kind: KeyKind, value: &str) -> Result<ReservationKey, String> {
    let bytes = match kind {
        KeyKind::RemoteId => {
            let (ent, id) = value.split_once(':').ok_or_else(|| {
                format!("remote-id `{value}`: give enterprise-number:id, e.g. 4491:text:line-17")
            })?;
            let ent: u32 = ent
                .parse()
                .map_err(|_| format!("remote-id `{value}`: `{ent}` is not an enterprise number"))?;
            let mut b = ent.to_be_bytes().to_vec();
            b.extend(value_bytes(id)?);
            b
        }
        KeyKind::Duid => {
            let b = value_bytes(value)?;
            if !(crate::wire::DUID_MIN_LEN..=crate::wire::DUID_MAX_LEN).contains(&b.len()) {
                return Err(format!(
                    "duid `{value}` is {} bytes; a DUID has {} to {}",
                    b.len(),
                    crate::wire::DUID_MIN_LEN,
                    crate::wire::DUID_MAX_LEN
                ));
            }
            b
        }
        _ => value_bytes(value)?,
    };
    Ok(ReservationKey {
        kind,
        value: bytes.into(),
    })
}

/// Resources from their text: `2001:db8::10` is an address, `2001:db8:8000:100::/56` a prefix.
pub(super) fn resource(s: &str) -> Result<(Option<Ipv6Addr>, Option<Prefix>), String> {
    if s.contains('/') {
        Ok((None, Some(s.parse::<Prefix>()?)))
    } else {
        let a: Ipv6Addr = s
            .parse()
            .map_err(|_| format!("`{s}` is neither an IPv6 address nor a prefix"))?;
        Ok((Some(a), None))
    }
}

/// A reservations-file line: the key, the reserved addresses and prefixes.
pub(super) type Line = (ReservationKey, Vec<Ipv6Addr>, Vec<Prefix>);

/// One line of a reservations file (already stripped of comments); `None` for a blank line.
pub(super) fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let mut words = line.split_whitespace();
    let Some(kind) = words.next() else {
        return Ok(None);
    };
    let kind = KeyKind::from_name(kind).ok_or_else(|| {
        format!("`{kind}` is not a reservation kind (duid, hw-address, remote-id, subscriber-id, interface-id)")
    })?;
    let value = words
        .next()
        .ok_or_else(|| format!("{} without a value", kind.name()))?;
    let key = key(kind, value)?;
    let (mut addresses, mut prefixes) = (Vec::new(), Vec::new());
    for w in words {
        match resource(w)? {
            (Some(a), _) => addresses.push(a),
            (_, Some(p)) => prefixes.push(p),
            _ => {}
        }
    }
    if addresses.is_empty() && prefixes.is_empty() {
        return Err(format!(
            "{key} reserves nothing (list addresses and/or prefixes after the value)"
        ));
    }
    Ok(Some((key, addresses, prefixes)))
}

/// The key of a TOML reservation: exactly one identifier field.
pub(super) fn toml_key(r: &FileReservation) -> Result<ReservationKey, String> {
    let given: Vec<(KeyKind, &String)> = [
        (KeyKind::Duid, &r.duid),
        (KeyKind::HwAddress, &r.hw_address),
        (KeyKind::RemoteId, &r.remote_id),
        (KeyKind::SubscriberId, &r.subscriber_id),
        (KeyKind::InterfaceId, &r.interface_id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    match given.as_slice() {
        [(k, v)] => key(*k, v),
        _ => Err(format!(
            "give exactly one of duid, hw_address, remote_id, subscriber_id, interface_id ({} given)",
            given.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_keys_and_resources() {
        let (k, a, p) =
            parse_line("remote-id 4491:text:line-17 2001:db8::10 2001:db8:8000:100::/56")
                .unwrap()
                .unwrap();
        assert_eq!(k.kind, KeyKind::RemoteId);
        assert_eq!(&k.value[..4], &4491u32.to_be_bytes());
        assert_eq!(&k.value[4..], b"line-17");
        assert_eq!(a, vec!["2001:db8::10".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(p[0].len, 56);
        let (k, ..) = parse_line("duid 00:01:00:01:aa:bb 2001:db8::11")
            .unwrap()
            .unwrap();
        assert_eq!(&*k.value, &[0, 1, 0, 1, 0xaa, 0xbb]);
        assert!(parse_line("   ").unwrap().is_none());
        for bad in [
            "mac 52:54 2001:db8::1",
            "duid 0102 2001:db8::1",
            "duid zz:zz:zz 2001:db8::1",
            "interface-id text:eth0",
            "remote-id line-17 2001:db8::1",
            "hw-address 52:54:00:00:00:01 2001:db8::/129",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_reserved_twice_names_the_first() {
        let mut rs = Reservations::default();
        let src = rs.source("a");
        let r = |line: u32| {
            Reservation::new(
                key(KeyKind::InterfaceId, "text:eth0").unwrap(),
                &["2001:db8::1".parse().unwrap()],
                &[],
                OptionSet::default(),
                src,
                line,
            )
        };
        rs.push(r(1)).unwrap();
        let e = rs.push(r(2)).unwrap_err();
        assert!(e.contains("a:1"), "{e}");
        assert_eq!(rs.find(KeyKind::InterfaceId, b"eth0"), Some(0));
        assert_eq!(rs.find(KeyKind::Duid, b"eth0"), None);
    }
}
