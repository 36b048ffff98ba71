//! Rate limits against abuse (`[limits]`): token buckets per client DUID and per source address
//! (a relay agent, or a client on a directly attached link), kept by each worker for the
//! messages it handles. Nothing is shared between workers, so with W workers one client may
//! get up to W times its rate when its messages are spread over them.
//!
//! Tables are bounded ([`RATE_TABLE_MAX`] entries per kind per worker): when one is full, the
//! entries whose bucket has refilled completely (they limit nothing) are dropped; if that frees
//! less than a quarter of it ([`RATE_TABLE_FREED_MIN`]), the whole table is (a flood of fresh
//! DUIDs cannot grow memory, and gains nothing: a fresh DUID starts with a full bucket anyway;
//! the source limit is what stops it). The quarter keeps the scan's cost per message bounded:
//! a scan that freed a few entries would be due again a few messages later, so DUIDs that keep
//! a full table's buckets below full could make every new client's message cost a scan.

use crate::config::LimitsConfig;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv6Addr;

/// Entries per table (clients, sources) per worker at most.
pub const RATE_TABLE_MAX: usize = 65_536;
/// Entries a scan of a full table must free for the table to be kept; below it the table is
/// cleared, so at least this many new keys come between two scans.
pub const RATE_TABLE_FREED_MIN: usize = RATE_TABLE_MAX / 4;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left, in thousandths (so that rates below the burst refill smoothly).
    milli: u64,
    /// When it was last topped up, in milliseconds.
    at_ms: u64,
}

/// A table of buckets. Its keys are a seeded hash of the DUID or an address, which foldhash
/// spreads at a fraction of SipHash's cost (two SipHash passes per message were about 2 % of
/// the server's instructions per exchange).
type Buckets<K> = HashMap<K, Bucket, foldhash::fast::RandomState>;

/// One worker's token buckets.
#[derive(Debug, Default)]
pub struct RateLimiter {
    clients: Buckets<u64>,
    sources: Buckets<u128>,
    /// Hashes a DUID to its table key: seeded per limiter, so a crafted set of DUIDs cannot
    /// be made to share one client's bucket.
    hasher: foldhash::quality::RandomState,
}

fn take<K: std::hash::Hash + Eq + Copy>(
    table: &mut Buckets<K>,
    key: K,
    rate: u32,
    burst: u32,
    now_ms: u64,
) -> bool {
    if rate == 0 {
        return true;
    }
    let full = burst.max(1) as u64 * 1000;
    let per_ms = rate as u64; // thousandths of a token per millisecond = tokens per second
    if table.len() >= RATE_TABLE_MAX && !table.contains_key(&key) {
        table.retain(|_, b| b.milli + now_ms.saturating_sub(b.at_ms) * per_ms < full);
        if table.len() > RATE_TABLE_MAX - RATE_TABLE_FREED_MIN {
            table.clear();
        }
    }
    let b = table.entry(key).or_insert(Bucket {
        milli: full,
        at_ms: now_ms,
    });
    b.milli = (b.milli + now_ms.saturating_sub(b.at_ms) * per_ms).min(full);
    b.at_ms = b.at_ms.max(now_ms);
    if b.milli >= 1000 {
        b.milli -= 1000;
        true
    } else {
        false
    }
}

impl RateLimiter {
    /// Whether client `duid` may send one more message at `now_ms`; takes a token if so.
    pub fn allow_client(&mut self, l: &LimitsConfig, duid: &[u8], now_ms: u64) -> bool {
        if l.client_rate_per_sec == 0 {
            return true;
        }
        let mut h = self.hasher.build_hasher();
        h.write(duid);
        let key = h.finish();
        take(
            &mut self.clients,
            key,
            l.client_rate_per_sec,
            l.client_burst,
            now_ms,
        )
    }

    /// Whether source `addr` may send one more message at `now_ms`; takes a token if so.
    pub fn allow_source(&mut self, l: &LimitsConfig, addr: Ipv6Addr, now_ms: u64) -> bool {
        take(
            &mut self.sources,
            u128::from(addr),
            l.source_rate_per_sec,
            l.source_burst,
            now_ms,
        )
    }

    /// Entries held (clients, sources).
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.sources.len())
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.sources.is_empty()
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
        let mut r = RateLimiter::default();
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
        let mut r = RateLimiter::default();
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
        let mut r = RateLimiter::default();
        for i in 0..(RATE_TABLE_MAX as u64 + 10) {
            assert!(
                r.allow_client(&l, &i.to_be_bytes(), 0),
                "a fresh DUID has a full bucket"
            );
        }
        assert!(r.len().0 <= RATE_TABLE_MAX);
    }

    /// A full table whose scan frees only a few refilled buckets is cleared: otherwise the
    /// next few new keys would each scan it again.
    #[test]
    fn a_scan_that_frees_little_clears_the_table() {
        let l = limits(10, 20);
        let mut r = RateLimiter::default();
        // 100 clients at t = 0, whose buckets have refilled by t = 10 s; the rest at t = 10 s,
        // each a token short of full.
        for i in 0..100u64 {
            assert!(r.allow_client(&l, &i.to_be_bytes(), 0));
        }
        for i in 100..RATE_TABLE_MAX as u64 {
            assert!(r.allow_client(&l, &i.to_be_bytes(), 10_000));
        }
        assert_eq!(r.len().0, RATE_TABLE_MAX);
        // A new client: the scan frees the 100, fewer than a quarter, so the table starts over.
        assert!(r.allow_client(&l, b"new", 10_001));
        assert_eq!(r.len().0, 1, "cleared, then the new client");
        // A scan that frees a quarter or more keeps the rest.
        let mut r = RateLimiter::default();
        let quarter = RATE_TABLE_FREED_MIN as u64;
        for i in 0..quarter {
            assert!(r.allow_client(&l, &i.to_be_bytes(), 0));
        }
        for i in quarter..RATE_TABLE_MAX as u64 {
            assert!(r.allow_client(&l, &i.to_be_bytes(), 10_000));
        }
        assert!(r.allow_client(&l, b"new", 10_001));
        assert_eq!(r.len().0, RATE_TABLE_MAX - RATE_TABLE_FREED_MIN + 1);
        // Those kept still limit: a kept client's bucket is a token short of full.
        let kept = (RATE_TABLE_MAX as u64 - 1).to_be_bytes();
        let ok = (0..30)
            .filter(|_| r.allow_client(&l, &kept, 10_001))
            .count();
        assert_eq!(ok, 19, "the rest of its burst");
    }
}
