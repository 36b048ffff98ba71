//! The endpoint's durable state ([`Persisted`]) as bytes, for the store's meta database under
//! [`META_FAILOVER_STATE`] (the server's `Store::put_meta`).
//!
//! Layout, version 1 (28 bytes, little-endian):
//!
//! ```text
//! version (u8 = 1) | state (u8, RFC 8156 server-state value) | state_since (u64)
//! | last_operated (u64) | partner_down_since (u64) | communicated (u8: 0/1)
//! | store_was_empty (u8: 0/1)
//! ```
//!
//! [`decode`] accepts exactly that and nothing else; no function here panics.

use super::state::{Persisted, ServerState};
use crate::config::Role;
use crate::pool::PdPoolId;

/// Meta key under which the endpoint state is stored.
pub const META_FAILOVER_STATE: &[u8] = b"failover_state";

/// Version byte of the encoding [`encode`] writes and [`decode`] reads.
pub const PERSIST_VERSION: u8 = 1;

/// Length of an encoded [`Persisted`].
pub const PERSISTED_LEN: usize = 28;

/// Meta key under which the relationship the stored state belongs to is described
/// ([`scope_fingerprint`]): a state stored for other subnets, another partner or another role
/// is not resumed.
pub const META_FAILOVER_SCOPE: &[u8] = b"failover_scope";

/// What [`META_FAILOVER_SCOPE`] holds for relationship `fo`: its name, role, partner's name and
/// subnets, as text.
pub fn scope_fingerprint(fo: &crate::config::FailoverConfig) -> Vec<u8> {
    let mut ids = fo.subnets.clone();
    ids.sort_unstable();
    format!(
        "relationship={};role={};partner_name={};subnets={}",
        fo.relationship,
        match fo.role {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        },
        fo.partner_name,
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    )
    .into_bytes()
}

/// Meta key under which the prefix shares are stored ([`encode_shares`]).
pub const META_PD_SHARES: &[u8] = b"pd_shares";

/// Version byte of the share list encoding.
pub const SHARES_VERSION: u8 = 2;

/// Length of one share entry: first prefix (16), delegated length (1), prefixes in the pool
/// (u128 LE, 16), share (u128 LE, 16).
const SHARE_ENTRY_LEN: usize = 16 + 1 + 16 + 16;

/// Encodes the prefix shares of a server of role `role`: version (u8 = 2), role (u8: 1
/// primary, 2 secondary), then per pool its first delegated prefix (16 octets), their length
/// (u8), how many there are (u128 LE) and the secondary's share (u128 LE).
pub fn encode_shares(role: Role, shares: &[(PdPoolId, u128)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + shares.len() * SHARE_ENTRY_LEN);
    b.push(SHARES_VERSION);
    b.push(match role {
        Role::Primary => 1,
        Role::Secondary => 2,
    });
    for (id, share) in shares {
        b.extend_from_slice(&id.first.octets());
        b.push(id.delegated_len);
        b.extend_from_slice(&id.count.to_le_bytes());
        b.extend_from_slice(&share.to_le_bytes());
    }
    b
}

/// Decodes what [`encode_shares`] wrote, for a server of role `role`: `None` on an unknown
/// version or role byte, or a length that is not a whole number of entries; an empty list if
/// the shares were stored by a server of the other role (a swapped configuration: the numbers
/// would mean the opposite, so each pool starts safe instead).
pub fn decode_shares(role: Role, b: &[u8]) -> Option<Vec<(PdPoolId, u128)>> {
    let (&[version, stored_role], rest) = b.split_first_chunk::<2>()?;
    if version != SHARES_VERSION || rest.len() % SHARE_ENTRY_LEN != 0 {
        return None;
    }
    let stored_role = match stored_role {
        1 => Role::Primary,
        2 => Role::Secondary,
        _ => return None,
    };
    if stored_role != role {
        return Some(Vec::new());
    }
    rest.chunks_exact(SHARE_ENTRY_LEN)
        .map(|e| {
            let first: [u8; 16] = e[..16].try_into().ok()?;
            let count: [u8; 16] = e[17..33].try_into().ok()?;
            let share: [u8; 16] = e[33..].try_into().ok()?;
            Some((
                PdPoolId {
                    first: first.into(),
                    delegated_len: e[16],
                    count: u128::from_le_bytes(count),
                },
                u128::from_le_bytes(share),
            ))
        })
        .collect()
}

/// Encodes `p` (layout in the module docs).
pub fn encode(p: &Persisted) -> Vec<u8> {
    let mut b = Vec::with_capacity(PERSISTED_LEN);
    b.push(PERSIST_VERSION);
    b.push(p.state.to_u8());
    b.extend_from_slice(&p.state_since.to_le_bytes());
    b.extend_from_slice(&p.last_operated.to_le_bytes());
    b.extend_from_slice(&p.partner_down_since.to_le_bytes());
    b.push(u8::from(p.communicated));
    b.push(u8::from(p.store_was_empty));
    b
}

fn flag(v: u8) -> Option<bool> {
    match v {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Decodes what [`encode`] wrote; `None` on a wrong length, an unknown version, a server-state
/// value outside 1..=10 or a flag byte other than 0 or 1.
pub fn decode(b: &[u8]) -> Option<Persisted> {
    let b: &[u8; PERSISTED_LEN] = b.try_into().ok()?;
    let (&[version, state], rest) = b.split_first_chunk::<2>()?;
    if version != PERSIST_VERSION {
        return None;
    }
    let (since, rest) = rest.split_first_chunk::<8>()?;
    let (alive, rest) = rest.split_first_chunk::<8>()?;
    let (pd, rest) = rest.split_first_chunk::<8>()?;
    let &[communicated, store_was_empty] = rest else {
        return None;
    };
    Some(Persisted {
        state: ServerState::from_u8(state)?,
        state_since: u64::from_le_bytes(*since),
        last_operated: u64::from_le_bytes(*alive),
        partner_down_since: u64::from_le_bytes(*pd),
        communicated: flag(communicated)?,
        store_was_empty: flag(store_was_empty)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(state: ServerState) -> Persisted {
        Persisted {
            state,
            state_since: 1_760_000_000,
            last_operated: 1_760_000_123,
            partner_down_since: 0x0102_0304_0506_0708,
            communicated: true,
            store_was_empty: false,
        }
    }

    #[test]
    fn round_trip_every_state() {
        for v in 1..=10u8 {
            let s = ServerState::from_u8(v).unwrap();
            for (communicated, store_was_empty) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let p = Persisted {
                    communicated,
                    store_was_empty,
                    ..sample(s)
                };
                let b = encode(&p);
                assert_eq!(b.len(), PERSISTED_LEN);
                assert_eq!(decode(&b), Some(p));
            }
        }
        // Extremes survive too.
        let p = Persisted {
            state_since: u64::MAX,
            last_operated: 0,
            partner_down_since: u64::MAX,
            ..sample(ServerState::PartnerDown)
        };
        assert_eq!(decode(&encode(&p)), Some(p));
    }

    #[test]
    fn shares_round_trip_and_bad_bytes_are_refused() {
        let shares = vec![
            (
                PdPoolId {
                    first: "2001:db8:8000::".parse().unwrap(),
                    delegated_len: 56,
                    count: 65_536,
                },
                6553,
            ),
            (
                PdPoolId {
                    first: "2001:db8:9000::".parse().unwrap(),
                    delegated_len: 60,
                    count: 16,
                },
                u128::MAX,
            ),
        ];
        let b = encode_shares(Role::Primary, &shares);
        assert_eq!(b.len(), 2 + 2 * 49);
        assert_eq!(decode_shares(Role::Primary, &b), Some(shares));
        assert_eq!(
            decode_shares(Role::Secondary, &b),
            Some(vec![]),
            "stored by the other role: not used"
        );
        assert_eq!(decode_shares(Role::Secondary, &[2, 2]), Some(vec![]));
        assert_eq!(decode_shares(Role::Primary, &b[..b.len() - 1]), None);
        assert_eq!(decode_shares(Role::Primary, &[1, 1]), None, "version 1");
        assert_eq!(decode_shares(Role::Primary, &[2, 3]), None);
        assert_eq!(decode_shares(Role::Primary, &[]), None);
    }

    #[test]
    fn layout_is_fixed() {
        let b = encode(&sample(ServerState::Normal));
        assert_eq!(b[..2], [1, 2]);
        assert_eq!(b[2..10], 1_760_000_000u64.to_le_bytes());
        assert_eq!(b[18..26], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b[26..], [1, 0]);
    }

    #[test]
    fn damage_gives_none() {
        let good = encode(&sample(ServerState::RecoverWait));
        for n in 0..good.len() {
            assert_eq!(decode(&good[..n]), None, "truncated to {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), None);
        for v in [0u8, 2, 255] {
            let mut b = good.clone();
            b[0] = v;
            assert_eq!(decode(&b), None, "version {v}");
        }
        for v in [0u8, 11, 128, 255] {
            let mut b = good.clone();
            b[1] = v;
            assert_eq!(decode(&b), None, "state {v}");
        }
        for at in [26, 27] {
            let mut b = good.clone();
            b[at] = 2;
            assert_eq!(decode(&b), None, "flag at {at}");
        }
    }
}
