//! Rate limits against abuse (`[limits]`): token buckets per client DUID and per source address
//! (a relay agent, or a client on a directly attached link), kept by each worker for the
//! messages it handles. Nothing is shared between workers, so with W workers one client may
//! get up to W times its rate when its messages are spread over them.
//!
//! Each kind's buckets sit in a fixed table of [`RATE_TABLE_MAX`] per worker, in sets of
//! [`RATE_TABLE_WAYS`] (one cache line) chosen by a seeded hash of the key: a message costs one
//! line, whatever the table holds, and the table never grows, rehashes or scans. A key new to
//! its set takes an empty place, or else the bucket with the most tokens: the one that limits
//! least (a full bucket limits nothing, and a fresh key starts full anyway). A client being
//! limited has few tokens. Fresh DUIDs that send less than a burst each keep more than it, so
//! a flood of them evicts its own buckets and not the limited client's. Two limits to that: a
//! flood whose DUIDs each spend a whole burst leaves emptier buckets, and then a limited client
//! that has refilled in part can be evicted (it comes back with a full burst); and a set holds
//! at most four limited clients. The source limit is what stops a flood itself.
//!
//! A bucket is found by 32 bits of the key's hash besides its set's 14, so two keys share a
//! bucket about once in a billion lookups: both then draw on one burst.

use crate::config::LimitsConfig;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv6Addr;

/// Buckets per table (clients, sources) per worker.
pub const RATE_TABLE_MAX: usize = 65_536;
/// Buckets per set: four of 16 bytes, one 64-byte cache line.
pub const RATE_TABLE_WAYS: usize = 4;
/// Sets per table.
const RATE_TABLE_SETS: usize = RATE_TABLE_MAX / RATE_TABLE_WAYS;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The key's hash's upper half, never 0 (0: an empty place).
    tag: u32,
    /// Tokens left, in thousandths (so that rates below the burst refill smoothly).
    milli: u32,
    /// When it was last topped up, in milliseconds.
    at_ms: u64,
}

/// One set: the buckets whose keys hash to it.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Set([Bucket; RATE_TABLE_WAYS]);

/// One kind's buckets, by hash. Empty (no memory) until its first use.
#[derive(Debug, Default)]
struct Table {
    sets: Vec<Set>,
}

impl Table {
    /// Takes a token from the bucket of the key hashed to `hash`, at `rate` (not 0: the
    /// callers let everything through then, before hashing) per second with room for `burst`;
    /// whether there was one.
    fn take(&mut self, hash: u64, rate: u32, burst: u32, now_ms: u64) -> bool {
        debug_assert!(rate > 0);
        if self.sets.is_empty() {
            self.sets = vec![Set::default(); RATE_TABLE_SETS];
        }
        // Thousandths of a token: the burst, and what one millisecond adds (the rate). A burst
        // above 4,294,967 counts as that (a bucket holds a u32 of thousandths).
        let full = (u64::from(burst.max(1)) * 1000).min(u64::from(u32::MAX));
        let per_ms = u64::from(rate);
        let level = |b: &Bucket| {
            let added = now_ms.saturating_sub(b.at_ms).saturating_mul(per_ms);
            u64::from(b.milli).saturating_add(added).min(full)
        };
        let set = &mut self.sets[hash as usize % RATE_TABLE_SETS].0;
        let tag = ((hash >> 32) as u32).max(1);
        let way = match set.iter().position(|b| b.tag == tag) {
            Some(w) => w,
            None => {
                // An empty place, else the bucket that limits least.
                let w = (0..RATE_TABLE_WAYS)
                    .max_by_key(|&w| {
                        let b = &set[w];
                        if b.tag == 0 { u64::MAX } else { level(b) }
                    })
                    .unwrap_or(0);
                set[w] = Bucket {
                    tag,
                    milli: full as u32,
                    at_ms: now_ms,
                };
                w
            }
        };
        let b = &mut set[way];
        let mut milli = level(b);
        b.at_ms = b.at_ms.max(now_ms);
        let allowed = milli >= 1000;
        if allowed {
            milli -= 1000;
        }
        b.milli = milli as u32;
        allowed
    }

    /// Buckets held.
    fn len(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|s| s.0.iter())
            .filter(|b| b.tag != 0)
            .count()
    }
}

/// One worker's token buckets.
#[derive(Debug, Default)]
pub struct RateLimiter {
    clients: Table,
    sources: Table,
    /// Hashes a key to its set and tag: seeded per limiter, so a crafted set of DUIDs cannot
    /// be made to share one client's bucket or crowd one set (tests fix the seed).
    hasher: foldhash::quality::SeedableRandomState,
}

impl RateLimiter {
    /// A limiter whose hash is the same in every run, so that tests do not depend on the
    /// seed (which keys share a set or a bucket).
    #[cfg(test)]
    fn fixed() -> RateLimiter {
        RateLimiter {
            hasher: foldhash::quality::SeedableRandomState::fixed(),
            ..RateLimiter::default()
        }
    }

    /// Whether client `duid` may send one more message at `now_ms`; takes a token if so.
    pub fn allow_client(&mut self, l: &LimitsConfig, duid: &[u8], now_ms: u64) -> bool {
        if l.client_rate_per_sec == 0 {
            return true;
        }
        let mut h = self.hasher.build_hasher();
        h.write(duid);
        self.clients
            .take(h.finish(), l.client_rate_per_sec, l.client_burst, now_ms)
    }

    /// Whether source `addr` may send one more message at `now_ms`; takes a token if so.
    pub fn allow_source(&mut self, l: &LimitsConfig, addr: Ipv6Addr, now_ms: u64) -> bool {
        if l.source_rate_per_sec == 0 {
            return true;
        }
        let mut h = self.hasher.build_hasher();
        h.write(&addr.octets());
        self.sources
            .take(h.finish(), l.source_rate_per_sec, l.source_burst, now_ms)
    }

    /// Buckets held (clients, sources); counts the tables, for tests and diagnostics.
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.sources.len())
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32) -> LimitsConfig {
        LimitsConfig {
            client_rate_per_sec: rate,
            client_burst: burst,
            source_rate_per_sec: rate,
            source_burst: burst,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limits(10, 20);
        let mut r = RateLimiter::fixed();
        let ok = (0..30).filter(|_| r.allow_client(&l, b"c", 1000)).count();
        assert_eq!(ok, 20, "the burst, at once");
        assert!(!r.allow_client(&l, b"c", 1050), "half a token after 50 ms");
        assert!(
            r.allow_client(&l, b"c", 1100),
            "one token per 100 ms at 10/s"
        );
        assert!(!r.allow_client(&l, b"c", 1100));
        // Another client has its own bucket.
        assert!(r.allow_client(&l, b"d", 1100));
        // A long pause refills to the burst, not beyond.
        let ok = (0..30).filter(|_| r.allow_client(&l, b"c", 60_000)).count();
        assert_eq!(ok, 20);
    }

    #[test]
    fn zero_rate_is_no_limit_and_sources_are_separate() {
        let mut r = RateLimiter::fixed();
        let off = limits(0, 0);
        assert!((0..1000).all(|_| r.allow_client(&off, b"c", 0)));
        assert!(r.is_empty());
        let l = limits(1, 1);
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        assert!(r.allow_source(&l, a, 0));
        assert!(!r.allow_source(&l, a, 10));
        assert!(r.allow_source(&l, b, 10));
        assert!(r.allow_source(&l, a, 1000));
    }

    #[test]
    fn tables_stay_bounded_under_a_flood_of_fresh_keys() {
        let l = limits(1, 1);
        let mut r = RateLimiter::fixed();
        for i in 0..(RATE_TABLE_MAX as u64 + 10) {
            assert!(
                r.allow_client(&l, &i.to_be_bytes(), 0),
                "a fresh DUID has a full bucket"
            );
        }
        assert!(r.len().0 <= RATE_TABLE_MAX);
    }

    /// The flood of fresh DUIDs evicts its own buckets, not those of the clients it limits.
    /// (Before the sets, a full table whose scan freed too little was cleared, and every
    /// limited client started again with a full burst.)
    #[test]
    fn limited_clients_stay_limited_through_a_flood_of_fresh_duids() {
        let l = limits(10, 20);
        let mut r = RateLimiter::fixed();
        // 100 clients spend their burst. With a random seed, about once in a million runs four
        // of them would share a set (a fifth key evicts one) or a fresh DUID would share one's
        // bucket; the fixed seed makes the run the same every time.
        let limited: Vec<Vec<u8>> = (0..100u32)
            .map(|i| format!("limited-{i}").into_bytes())
            .collect();
        for duid in &limited {
            let ok = (0..30).filter(|_| r.allow_client(&l, duid, 0)).count();
            assert_eq!(ok, 20);
        }
        for i in 0..(4 * RATE_TABLE_MAX as u64) {
            assert!(
                r.allow_client(&l, &i.to_be_bytes(), 0),
                "a fresh DUID has a full bucket"
            );
        }
        for duid in &limited {
            assert!(!r.allow_client(&l, duid, 0), "still limited");
        }
        // 262,144 keys in 16,384 sets leave a few places empty (16 keys a set on average).
        let held = r.len().0;
        assert!(
            held <= RATE_TABLE_MAX && held > RATE_TABLE_MAX * 99 / 100,
            "{held}"
        );
    }

    /// A key new to a full set takes the place of the bucket with the most tokens.
    #[test]
    fn a_full_set_gives_up_the_bucket_that_limits_least() {
        let mut t = Table::default();
        // One set (the low bits), four keys (the high bits).
        let key = |tag: u64| (tag << 32) | 7;
        let take_all = |t: &mut Table, k: u64| (0..30).filter(|_| t.take(k, 10, 20, 0)).count();
        assert_eq!(take_all(&mut t, key(1)), 20); // 0 tokens left
        assert!(t.take(key(2), 10, 20, 0)); // 19
        for _ in 0..10 {
            assert!(t.take(key(3), 10, 20, 0)); // 10
        }
        for _ in 0..15 {
            assert!(t.take(key(4), 10, 20, 0)); // 5
        }
        assert_eq!(t.len(), 4);
        // A fifth key: key 2's bucket goes.
        assert!(t.take(key(5), 10, 20, 0));
        assert_eq!(t.len(), 4);
        assert!(!t.take(key(1), 10, 20, 0), "the empty bucket stays");
        assert_eq!(take_all(&mut t, key(3)), 10, "kept");
        assert_eq!(take_all(&mut t, key(4)), 5, "kept");
        // Key 2 comes back with a full bucket, in the place of the fullest: key 5's (19).
        assert_eq!(take_all(&mut t, key(2)), 20, "evicted, so new");
        assert_eq!(take_all(&mut t, key(5)), 20, "evicted in turn");
    }
}
