//! Leases: what the server remembers about one address or delegated prefix, and the byte
//! layout it is stored in (see `docs/storage.md`).

use crate::config::ResourceKind;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;

/// Longest DUID RFC 8415 §11.1 allows (128 octets plus the 2-octet type).
pub const DUID_LEN_MAX: usize = 130;
/// Store key length: kind (1) + address (16).
pub const KEY_LEN: usize = 17;
/// Version byte at the start of every stored lease value: 2 adds the relay data after the
/// DUID, 3 the partner version's sequence ([`Lease::partner_seq`]) after that; values of
/// versions 1 and 2 are still read.
pub const VALUE_VERSION: u8 = 3;
/// Longest relay data a stored value holds (more is cut: the engine never keeps more than
/// `wire::relay_data::RELAY_DATA_MAX_LEN`).
pub const RELAY_LEN_MAX: usize = 1024;
/// Fixed part of a stored lease value, before the DUID bytes.
pub const VALUE_FIXED_LEN: usize = 1 + 8 + 1 + 1 + 4 + 4 + 4 + 4 + 8 + 8 + 8 + 8 + 2;

/// Lifecycle of a lease (RFC 8415 §18.3, RFC 8156 §5.2 binding states for the part we store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Offered in an Advertise; held in memory only, never stored.
    Offered,
    /// Granted in a Reply; the client may use it until `expires_at`.
    Active,
    /// The valid lifetime ran out; free, but remembered for its last client.
    Expired,
    /// The client released it; free, but remembered for its last client.
    Released,
    /// The client declined it (duplicate on the link); unusable until `expires_at`.
    Declined,
}

impl LeaseState {
    /// Stable byte code used in the store.
    pub fn code(self) -> u8 {
        match self {
            LeaseState::Offered => 0,
            LeaseState::Active => 1,
            LeaseState::Expired => 2,
            LeaseState::Released => 3,
            LeaseState::Declined => 4,
        }
    }
    /// Inverse of [`LeaseState::code`].
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => LeaseState::Offered,
            1 => LeaseState::Active,
            2 => LeaseState::Expired,
            3 => LeaseState::Released,
            4 => LeaseState::Declined,
            _ => return None,
        })
    }
    /// Whether the resource may be given to a new client.
    pub fn is_free(self) -> bool {
        matches!(self, LeaseState::Expired | LeaseState::Released)
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseState::Offered => "offered",
            LeaseState::Active => "active",
            LeaseState::Expired => "expired",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        })
    }
}

/// Bytes a lease holds (its DUID, its relay data), shared by the lease's copies: the copy the
/// allocator hands out for the commit costs no allocation. Empty (a client that came directly
/// has no relay data) is no allocation and no shared counter: `Arc::<[u8]>::default()` is one
/// process-wide value whose counter every thread's clones would contend for.
#[derive(Clone, Default)]
pub struct SharedBytes(Option<Arc<[u8]>>);

/// Compared by content, as the bytes they hold.
impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        **self == **other
    }
}

impl Eq for SharedBytes {}

impl PartialOrd for SharedBytes {
    fn partial_cmp(&self, other: &SharedBytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedBytes {
    fn cmp(&self, other: &SharedBytes) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl SharedBytes {
    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> SharedBytes {
        SharedBytes((!bytes.is_empty()).then(|| bytes.into()))
    }

    /// `bytes`, sharing the buffer of the first of `held` that holds the same bytes (the
    /// record a renewal replaces, another IA of the same message), else a copy. `held` is
    /// read only as far as the first match.
    pub fn reusing<'a>(
        held: impl IntoIterator<Item = &'a SharedBytes>,
        bytes: &[u8],
    ) -> SharedBytes {
        held.into_iter()
            .find(|h| ***h == *bytes)
            .cloned()
            .unwrap_or_else(|| SharedBytes::new(bytes))
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes::new(bytes)
    }
}

/// A copy, as [`SharedBytes::new`] makes (an `Arc<[u8]>` copies a vector's bytes too).
impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> SharedBytes {
        SharedBytes::new(&bytes)
    }
}

impl From<Arc<[u8]>> for SharedBytes {
    fn from(bytes: Arc<[u8]>) -> SharedBytes {
        SharedBytes((!bytes.is_empty()).then_some(bytes))
    }
}

/// One address or delegated prefix and who holds (or last held) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Address (IA_NA) or prefix (IA_PD).
    pub kind: ResourceKind,
    /// The address, or the prefix's first address.
    pub addr: Ipv6Addr,
    /// 128 for addresses, the delegated length for prefixes.
    pub prefix_len: u8,
    /// Subnet the lease belongs to.
    pub subnet_id: u32,
    /// Where it is in its lifecycle.
    pub state: LeaseState,
    /// Client DUID (of the current or last holder). Shared, so that the copies of a lease the
    /// allocator hands out (for the commit, the partner, the log) cost no allocation.
    pub duid: SharedBytes,
    /// IAID of the IA_NA / IA_PD holding it.
    pub iaid: u32,
    /// Preferred lifetime granted at `cltt`.
    pub preferred_secs: u32,
    /// Valid lifetime granted at `cltt`.
    pub valid_secs: u32,
    /// Client last transaction time (unix seconds).
    pub cltt: u64,
    /// When the current state ends (unix seconds): valid lifetime end, offer hold, decline hold.
    pub expires_at: u64,
    /// Change sequence; the store keeps the highest it has seen for each key, so two workers
    /// committing changes to one lease cannot leave the older change on disk.
    pub seq: u64,
    /// Failover, active lease: the partner lifetime the partner acknowledged for *our* update
    /// of this client's binding (unix secs, 0 = none); our renewals stay within this + MCLT
    /// (RFC 8156 §4.4). Free lease: when the partner acknowledged that it became free (0 =
    /// not yet: PENDING-FREE, no other client may have it).
    pub partner_ack_until: u64,
    /// Failover: the partner lifetime the partner sent with *its* update of this binding: we
    /// keep the lease in use at least until then (unix secs, 0 = none). Never a basis for our
    /// own renewals: the partner records it durably only when our acknowledgement reaches it.
    pub partner_lifetime_received: u64,
    /// What the relays said when the client's last message that granted or renewed this
    /// binding reached us: OPTION_LQ_RELAY_DATA's payload (`wire::relay_data`); empty if it
    /// came directly, or by way of a longer chain than `RELAY_DATA_MAX_LEN`.
    pub relay: SharedBytes,
    /// Failover: the `seq` this record got when it was stored as the partner sent it (0:
    /// never). While it equals `seq`, this version is the partner's own, so the partner knows
    /// it and a restart need not send it back; any change of ours takes a new `seq` and ends
    /// that (issue 10 item 4).
    pub partner_seq: u64,
}

impl Lease {
    /// A binding as the store holds it, for tests (subnet 1, IAID 1, no relay data, nothing
    /// from the partner): `valid_secs` 200 and `preferred_secs` 100, given at `cltt`, ending at
    /// `expires_at`.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stored_for_test(
        kind: ResourceKind,
        addr: Ipv6Addr,
        prefix_len: u8,
        state: LeaseState,
        duid: &[u8],
        cltt: u64,
        expires_at: u64,
    ) -> Lease {
        Lease {
            kind,
            addr,
            prefix_len,
            subnet_id: 1,
            state,
            duid: duid.into(),
            iaid: 1,
            preferred_secs: 100,
            valid_secs: 200,
            cltt,
            expires_at,
            seq: 1,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        }
    }

    /// Whether this version is the one the partner sent (see [`Lease::partner_seq`]).
    pub fn is_partner_version(&self) -> bool {
        self.partner_seq != 0 && self.partner_seq == self.seq
    }
}

/// Why bytes read from the store are not a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt lease record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Lease {
    /// The store key: kind then address, so one kind's leases sort by address.
    pub fn key(&self) -> [u8; KEY_LEN] {
        key(self.kind, self.addr)
    }

    /// Appends the stored value to `out`.
    pub fn encode_value(&self, out: &mut Vec<u8>) {
        let duid_len = self.duid.len().min(DUID_LEN_MAX);
        out.reserve(VALUE_FIXED_LEN + duid_len + 2 + self.relay.len() + 8);
        out.push(VALUE_VERSION);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.state.code());
        out.push(self.prefix_len);
        out.extend_from_slice(&self.subnet_id.to_le_bytes());
        out.extend_from_slice(&self.iaid.to_le_bytes());
        out.extend_from_slice(&self.preferred_secs.to_le_bytes());
        out.extend_from_slice(&self.valid_secs.to_le_bytes());
        out.extend_from_slice(&self.cltt.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.partner_ack_until.to_le_bytes());
        out.extend_from_slice(&self.partner_lifetime_received.to_le_bytes());
        out.extend_from_slice(&(duid_len as u16).to_le_bytes());
        out.extend_from_slice(&self.duid[..duid_len]);
        let relay_len = self.relay.len().min(RELAY_LEN_MAX);
        out.extend_from_slice(&(relay_len as u16).to_le_bytes());
        out.extend_from_slice(&self.relay[..relay_len]);
        out.extend_from_slice(&self.partner_seq.to_le_bytes());
    }

    /// Decodes a stored key and value.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Lease, DecodeError> {
        if key.len() != KEY_LEN {
            return Err(DecodeError("key length"));
        }
        let kind = ResourceKind::from_code(key[0]).ok_or(DecodeError("kind"))?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&key[1..]);
        if value.len() < VALUE_FIXED_LEN {
            return Err(DecodeError("value too short"));
        }
        let version = value[0];
        if !(1..=VALUE_VERSION).contains(&version) {
            return Err(DecodeError("unknown value version"));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([value[o], value[o + 1], value[o + 2], value[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&value[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let seq = u64_at(1);
        let state = LeaseState::from_code(value[9]).ok_or(DecodeError("state"))?;
        let prefix_len = value[10];
        if prefix_len > 128 {
            return Err(DecodeError("prefix length"));
        }
        let duid_len =
            u16::from_le_bytes([value[VALUE_FIXED_LEN - 2], value[VALUE_FIXED_LEN - 1]]) as usize;
        let Some(after_duid) = value.get(VALUE_FIXED_LEN + duid_len..) else {
            return Err(DecodeError("duid length"));
        };
        // Version 1 ends with the DUID, version 2 with the relay data, version 3 with the
        // partner version's sequence after it.
        let tail = if version == 3 { 8 } else { 0 };
        let (relay, partner_seq): (&[u8], u64) = match (version, after_duid) {
            (1, []) => (&[], 0),
            (1, _) => return Err(DecodeError("duid length")),
            (_, [a, b, rest @ ..])
                if usize::from(u16::from_le_bytes([*a, *b])) + tail == rest.len() =>
            {
                let (relay, seq) = rest.split_at(rest.len() - tail);
                let partner_seq = seq.try_into().map_or(0, u64::from_le_bytes);
                (relay, partner_seq)
            }
            _ => return Err(DecodeError("relay data length")),
        };
        Ok(Lease {
            kind,
            addr: Ipv6Addr::from(a),
            prefix_len,
            subnet_id: u32_at(11),
            state,
            duid: SharedBytes::new(&value[VALUE_FIXED_LEN..VALUE_FIXED_LEN + duid_len]),
            iaid: u32_at(15),
            preferred_secs: u32_at(19),
            valid_secs: u32_at(23),
            cltt: u64_at(27),
            expires_at: u64_at(35),
            seq,
            partner_ack_until: u64_at(43),
            partner_lifetime_received: u64_at(51),
            relay: SharedBytes::new(relay),
            partner_seq,
        })
    }
}

/// Store key of a resource.
pub fn key(kind: ResourceKind, addr: Ipv6Addr) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[0] = kind.code();
    k[1..].copy_from_slice(&addr.octets());
    k
}

/// Reads the change sequence out of a stored value without decoding the rest.
pub fn value_seq(value: &[u8]) -> Option<u64> {
    let b: [u8; 8] = value.get(1..9)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Whether a write of `incoming` may replace the stored version of its lease, whose change
/// sequence is `stored_seq` (`None`: nothing stored). The store's one ordering rule: an older
/// change never replaces a newer one, whatever order workers handed them in.
pub fn supersedes(stored_seq: Option<u64>, incoming: &Lease) -> bool {
    supersedes_seq(stored_seq, incoming.seq)
}

/// [`supersedes`] for a write known by its change sequence `incoming_seq` alone (a stored
/// record being folded in, say).
pub fn supersedes_seq(stored_seq: Option<u64>, incoming_seq: u64) -> bool {
    stored_seq.is_none_or(|s| s <= incoming_seq)
}

/// Where lease records become durable: the server's LMDB store, the simulator's disk. Every
/// implementation keeps [`supersedes`] and stores a batch all or nothing.
pub trait LeaseStore {
    /// Why a commit failed.
    type Error;
    /// Makes `writes` durable together; a write that an already stored newer change supersedes
    /// never replaces it (skipped now, or when the store later orders what it holds). Returns
    /// how many writes it took.
    fn commit_leases(
        &mut self,
        writes: &mut dyn Iterator<Item = &Lease>,
    ) -> Result<usize, Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lease {
        Lease {
            kind: ResourceKind::Prefix,
            addr: "2001:db8:8000:100::".parse().unwrap(),
            prefix_len: 56,
            subnet_id: 7,
            state: LeaseState::Active,
            duid: vec![0, 4, 1, 2, 3].into(),
            iaid: 0xdead_beef,
            preferred_secs: 100,
            valid_secs: 200,
            cltt: 1_700_000_000,
            expires_at: 1_700_000_200,
            seq: 42,
            partner_ack_until: 1_700_000_900,
            partner_lifetime_received: 1_700_000_950,
            relay: vec![9; 60].into(),
            partner_seq: 42,
        }
    }

    /// Shared bytes read, compare and order as the bytes they hold, whichever way they were
    /// made; empty ones hold nothing shared.
    #[test]
    fn shared_bytes_are_their_content() {
        let a = SharedBytes::new(&[1, 2, 3]);
        let b: SharedBytes = vec![1, 2, 3].into();
        let c: SharedBytes = Arc::<[u8]>::from(&[1, 2, 3][..]).into();
        assert_eq!(&*a, &[1, 2, 3]);
        assert!(a == b && b == c);
        assert!(SharedBytes::new(&[1, 2]) < a && a < SharedBytes::new(&[1, 3]));
        assert!(SharedBytes::default() < SharedBytes::new(&[0]));
        for empty in [
            SharedBytes::new(&[]),
            Vec::new().into(),
            Arc::<[u8]>::from(&[][..]).into(),
            SharedBytes::default(),
        ] {
            assert!(empty.0.is_none());
            assert!(empty.is_empty());
            assert_eq!(empty, SharedBytes::default());
        }
        let copy = a.clone();
        assert!(Arc::ptr_eq(copy.0.as_ref().unwrap(), a.0.as_ref().unwrap()));
        let same = SharedBytes::reusing(Some(&a), &[1, 2, 3]);
        assert!(Arc::ptr_eq(same.0.as_ref().unwrap(), a.0.as_ref().unwrap()));
        let other = SharedBytes::reusing(Some(&a), &[1, 2]);
        assert_eq!(&*other, &[1, 2]);
        assert_eq!(&*SharedBytes::reusing(None, &[4]), &[4]);
        assert_eq!(format!("{a:?}"), "[1, 2, 3]");
    }

    #[test]
    fn round_trips() {
        let l = sample();
        let mut v = Vec::new();
        l.encode_value(&mut v);
        assert_eq!(value_seq(&v), Some(42));
        assert_eq!(Lease::decode(&l.key(), &v).unwrap(), l);
    }

    #[test]
    fn version_1_values_read_with_no_relay_data() {
        let mut l = sample();
        l.relay = Default::default();
        l.partner_seq = 0;
        let mut v = Vec::new();
        l.encode_value(&mut v);
        // Version 1: the same without the relay length and the partner version's sequence.
        v[0] = 1;
        v.truncate(v.len() - 2 - 8);
        assert_eq!(Lease::decode(&l.key(), &v).unwrap(), l);
        v.push(0);
        assert!(Lease::decode(&l.key(), &v).is_err());
    }

    #[test]
    fn version_2_values_read_with_no_partner_version() {
        let mut l = sample();
        let mut v = Vec::new();
        l.encode_value(&mut v);
        v[0] = 2;
        v.truncate(v.len() - 8);
        l.partner_seq = 0;
        assert_eq!(Lease::decode(&l.key(), &v).unwrap(), l);
        assert!(!l.is_partner_version());
    }

    #[test]
    fn the_partner_version_is_the_one_stored_as_sent() {
        let mut l = sample();
        assert!(l.is_partner_version(), "stored as the partner sent it");
        l.seq += 1;
        assert!(!l.is_partner_version(), "changed here since");
        l.seq = 0;
        l.partner_seq = 0;
        assert!(!l.is_partner_version(), "0 marks nothing");
    }

    #[test]
    fn rejects_damage() {
        let l = sample();
        let mut v = Vec::new();
        l.encode_value(&mut v);
        for cut in 0..v.len() {
            assert!(Lease::decode(&l.key(), &v[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = v.clone();
        bad[9] = 99;
        assert!(Lease::decode(&l.key(), &bad).is_err());
        assert!(Lease::decode(&l.key()[..5], &v).is_err());
    }
}
