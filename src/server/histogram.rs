//! Fixed-bucket histograms: a plain array of counters a thread keeps to itself and sends as a
//! value, merged at the edge and rendered as a Prometheus histogram. Recording is a binary
//! search over at most [`BUCKETS_MAX`] bounds and three additions: no lock, no atomic, no
//! allocation.

use std::marker::PhantomData;

/// Most finite bucket bounds a histogram has (one more bucket counts everything above).
pub const BUCKETS_MAX: usize = 16;

/// The bucket bounds of one kind of histogram, in its unit.
pub trait Bounds {
    /// Upper bounds, ascending, at most [`BUCKETS_MAX`].
    const BOUNDS: &'static [u64];
    /// Units in one of Prometheus' base unit (1e6 µs in a second): values are divided by it,
    /// which keeps bounds such as 50 µs exact (0.00005, not 0.000049999…).
    const PER_BASE: f64;
}

/// Latencies in microseconds, 50 µs to 1 s (exported in seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyUs;

impl Bounds for LatencyUs {
    const BOUNDS: &'static [u64] = &[
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000,
    ];
    const PER_BASE: f64 = 1e6;
}

/// Counts (leases in a commit), 1 to 8192.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl Bounds for Count {
    const BOUNDS: &'static [u64] = &[
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
    ];
    const PER_BASE: f64 = 1.0;
}

/// A histogram over the bounds of `B`.
#[derive(Debug, Clone, Copy)]
pub struct Histogram<B: Bounds> {
    /// `buckets[i]` counts values in `(BOUNDS[i-1], BOUNDS[i]]`; the last, values above all.
    buckets: [u64; BUCKETS_MAX + 1],
    sum: u64,
    count: u64,
    unit: PhantomData<B>,
}

impl<B: Bounds> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: [0; BUCKETS_MAX + 1],
            sum: 0,
            count: 0,
            unit: PhantomData,
        }
    }
}

impl<B: Bounds> Histogram<B> {
    /// Counts one value.
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Counts the value `v` `n` times.
    pub fn record_n(&mut self, v: u64, n: u64) {
        let i = B::BOUNDS.partition_point(|b| *b < v);
        self.buckets[i] += n;
        self.sum = self.sum.saturating_add(v.saturating_mul(n));
        self.count += n;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, o: &Histogram<B>) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(o.sum);
        self.count += o.count;
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values, in the base unit.
    pub fn sum_base(&self) -> f64 {
        self.sum as f64 / B::PER_BASE
    }

    /// Cumulative counts: `(upper bound in the base unit, values ≤ it)`, ending with
    /// `(+∞, count)`.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let n = B::BOUNDS.len();
        let mut acc = 0;
        (0..=n).map(move |i| {
            acc += self.buckets[i];
            let le = if i == n {
                f64::INFINITY
            } else {
                B::BOUNDS[i] as f64 / B::PER_BASE
            };
            (le, acc)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::<Count>::default();
        for v in [0, 1, 2, 3, 8192, 8193, 1 << 40] {
            h.record(v);
        }
        let c: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(c[0], (1.0, 2)); // 0 and 1
        assert_eq!(c[1], (2.0, 3));
        assert_eq!(c[2], (4.0, 4)); // 3
        assert_eq!(c[13], (8192.0, 5));
        assert_eq!(c[14], (f64::INFINITY, 7));
        assert_eq!(c.len(), Count::BOUNDS.len() + 1);
        assert_eq!(h.count(), 7);
    }

    #[test]
    fn merge_adds_buckets_sum_and_count() {
        let mut a = Histogram::<LatencyUs>::default();
        let mut b = Histogram::<LatencyUs>::default();
        a.record(40);
        b.record(600);
        b.record(2_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!((a.sum_base() - 2.00064).abs() < 1e-9);
        let c: Vec<(f64, u64)> = a.cumulative().collect();
        assert_eq!(c[0].1, 1);
        assert_eq!(c[0].0, 0.00005);
        assert_eq!(c[3].1, 1); // ≤ 500 µs
        assert_eq!(c[4].1, 2); // ≤ 1 ms
        assert_eq!(c.last().unwrap().1, 3);
    }

    #[test]
    fn bounds_fit_the_array() {
        assert!(LatencyUs::BOUNDS.len() <= BUCKETS_MAX);
        assert!(Count::BOUNDS.len() <= BUCKETS_MAX);
        assert!(LatencyUs::BOUNDS.windows(2).all(|w| w[0] < w[1]));
        assert!(Count::BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
