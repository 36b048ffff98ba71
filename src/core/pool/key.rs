//! The client key: a fixed hash of a client IA, and how it spreads over sub-pools.

use crate::config::ResourceKind;

/// Stable 128-bit hash of a client's IA: FNV-1a over subnet id, kind, IAID and DUID.
///
/// It is fixed (not randomly keyed) because both failover partners must agree on a client's
/// home sub-pool, and it must not change across restarts or versions.
pub fn client_key(subnet_id: u32, kind: ResourceKind, duid: &[u8], iaid: u32) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    let mut eat = |b: u8| {
        h ^= b as u128;
        h = h.wrapping_mul(PRIME);
    };
    subnet_id.to_be_bytes().into_iter().for_each(&mut eat);
    eat(kind.code());
    iaid.to_be_bytes().into_iter().for_each(&mut eat);
    duid.iter().copied().for_each(&mut eat);
    h
}

/// Spreads a client key over sub-pools and shards: folds the 128-bit key and runs murmur3's
/// 64-bit finalizer, so keys that differ in one DUID byte land far apart (FNV's high bits alone
/// barely move when only the last byte changes). Fixed, like [`client_key`].
pub fn spread(key: u128) -> u64 {
    let mut h = (key >> 64) as u64 ^ key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}
