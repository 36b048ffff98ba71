//! The two hashes of a client IA: the fixed one that places it in a pool ([`client_key`],
//! [`spread`]), and the keyed one that names it in the client index ([`IndexKeys`]).

use std::hash::{BuildHasher, Hasher};

use siphasher::sip128::Hasher128;

use crate::config::ResourceKind;

/// Stable 128-bit hash of a client's IA: FNV-1a over subnet id, kind, IAID and DUID. It picks
/// the client's home sub-pool ([`spread`]) and nothing else.
///
/// It is fixed (not randomly keyed) because both failover partners must agree on a client's
/// home sub-pool, and it must not change across restarts or versions. Being fixed, it is also
/// open to anyone who wants two clients to share it; that only puts both in one sub-pool,
/// because the client index keys on [`IndexKeys`] instead.
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

/// Spreads a client key over sub-pools: folds the 128-bit key and runs murmur3's 64-bit
/// finalizer, so keys that differ in one DUID byte land far apart (FNV's high bits alone
/// barely move when only the last byte changes). Fixed, like [`client_key`].
pub fn spread(key: u128) -> u64 {
    let mut h = (key >> 64) as u64 ^ key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

/// Names client IAs in the client index: SipHash-1-3's 128-bit result over subnet id, kind,
/// IAID and DUID, under a key drawn from the OS per process.
///
/// Two clients that shared an index key would share an entry: the second to ask would move the
/// first off it, and the first would get a new lease at its next Renew. With a fixed hash
/// anyone could craft a DUID that does this to a known client; with a secret key nobody can
/// aim at one. The key never leaves the process: the index is rebuilt from the leases at
/// every start, and the partner never sees it. The allocator a reload builds keeps the same
/// one, with the index it shares.
#[derive(Debug, Clone, Copy)]
pub struct IndexKeys {
    secret: (u64, u64),
}

impl IndexKeys {
    /// A secret drawn from the OS's random source: two values of std's keyed hash, whose key
    /// std draws from the OS.
    pub fn new() -> IndexKeys {
        let seed = std::hash::RandomState::new();
        IndexKeys {
            secret: (seed.hash_one(0u8), seed.hash_one(1u8)),
        }
    }

    /// The index key of a client's IA. The fixed fields go in as one slice: SipHash takes
    /// several small writes at several times the cost of one (copying the DUID next to them
    /// to make one write costs as much as it saves).
    pub fn key(&self, subnet_id: u32, kind: ResourceKind, duid: &[u8], iaid: u32) -> u128 {
        let mut head = [0u8; 9];
        head[..4].copy_from_slice(&subnet_id.to_be_bytes());
        head[4] = kind.code();
        head[5..].copy_from_slice(&iaid.to_be_bytes());
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        h.write(&head);
        h.write(duid);
        h.finish128().as_u128()
    }
}

impl Default for IndexKeys {
    fn default() -> IndexKeys {
        IndexKeys::new()
    }
}

/// Hashes an index key for the client index's hash table by taking its low 64 bits: the key
/// is already a keyed hash, uniform and secret, so hashing it again would add nothing. Its
/// high bits pick the shard.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexKeyHash;

impl BuildHasher for IndexKeyHash {
    type Hasher = LowBits;

    fn build_hasher(&self) -> LowBits {
        LowBits(0)
    }
}

/// The [`IndexKeyHash`] hasher: keeps the low 64 bits of the `u128` it is given.
#[derive(Debug, Clone, Copy)]
pub struct LowBits(u64);

impl Hasher for LowBits {
    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }

    /// Not used by the index (its keys are `u128`); folds the bytes in so that any other
    /// use still hashes, if poorly.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::DUID_MAX_LEN;

    #[test]
    fn index_keys_are_stable_within_a_process_and_differ_between_secrets() {
        let (a, b) = (IndexKeys::new(), IndexKeys::new());
        let k = |ks: &IndexKeys, duid: &[u8], iaid| ks.key(7, ResourceKind::Prefix, duid, iaid);
        assert_eq!(k(&a, b"duid-1", 1), k(&a, b"duid-1", 1));
        let copy = a;
        assert_eq!(k(&copy, b"duid-1", 1), k(&a, b"duid-1", 1));
        assert_ne!(k(&a, b"duid-1", 1), k(&a, b"duid-1", 2));
        assert_ne!(k(&a, b"duid-1", 1), k(&a, b"duid-2", 1));
        assert_ne!(
            a.key(7, ResourceKind::Address, b"d", 1),
            a.key(7, ResourceKind::Prefix, b"d", 1)
        );
        assert_ne!(
            a.key(7, ResourceKind::Address, b"d", 1),
            a.key(8, ResourceKind::Address, b"d", 1)
        );
        // A DUID longer than the wire allows still has a key, and its own.
        let long = [7u8; DUID_MAX_LEN + 5];
        assert_eq!(k(&a, &long, 1), k(&a, &long, 1));
        assert_ne!(k(&a, &long, 1), k(&a, &long[..DUID_MAX_LEN], 1));
        // Another secret names the same client otherwise.
        assert_ne!(k(&a, b"duid-1", 1), k(&b, b"duid-1", 1));
        // The halves (shard, and place in the shard's table) are not one hash repeated.
        let key = k(&a, b"duid-1", 1);
        assert_ne!(key >> 64, key & u128::from(u64::MAX));
    }

    #[test]
    fn the_index_table_hashes_a_key_by_its_low_bits() {
        let key = 0x1111_2222_3333_4444_5555_6666_7777_8888u128;
        assert_eq!(IndexKeyHash.hash_one(key), 0x5555_6666_7777_8888);
    }
}
