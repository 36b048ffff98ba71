//! Per-phase measurements: exchanges, timeouts, NAKs by status code and a latency histogram.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency the histogram records, in microseconds (longer ones are clamped).
pub const LATENCY_US_MAX: u64 = 120_000_000;

/// What one phase measured (one thread's, or merged).
#[derive(Clone)]
pub struct PhaseStats {
    /// Exchanges started.
    pub started: u64,
    /// Exchanges completed with a usable answer.
    pub ok: u64,
    /// Exchanges that got no answer after every retransmission.
    pub timeouts: u64,
    /// Messages retransmitted.
    pub retransmits: u64,
    /// Exchanges answered with a failure status, by status code.
    pub naks: BTreeMap<u16, u64>,
    /// Replies that could not be parsed or matched nothing.
    pub bad_replies: u64,
    /// Exchange latency, microseconds (first send to final answer).
    pub latency_us: Histogram<u64>,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

impl Default for PhaseStats {
    fn default() -> Self {
        PhaseStats {
            started: 0,
            ok: 0,
            timeouts: 0,
            retransmits: 0,
            naks: BTreeMap::new(),
            bad_replies: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
        }
    }
}

impl PhaseStats {
    /// Adds another thread's numbers; the elapsed time is the longest.
    pub fn merge(&mut self, o: &PhaseStats) {
        self.started += o.started;
        self.ok += o.ok;
        self.timeouts += o.timeouts;
        self.retransmits += o.retransmits;
        self.bad_replies += o.bad_replies;
        for (k, v) in &o.naks {
            *self.naks.entry(*k).or_default() += v;
        }
        let _ = self.latency_us.add(&o.latency_us);
        self.elapsed = self.elapsed.max(o.elapsed);
    }

    /// Records one completed exchange.
    pub fn record(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        let _ = self.latency_us.record(us);
    }

    /// Completed exchanges per second over the phase.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    /// Latency at a quantile, milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Share of started exchanges that did not complete, in percent.
    pub fn failed_pct(&self) -> f64 {
        if self.started == 0 {
            return 0.0;
        }
        (self.started - self.ok.min(self.started)) as f64 * 100.0 / self.started as f64
    }

    /// JSON summary.
    pub fn json(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "phase": name,
            "started": self.started,
            "ok": self.ok,
            "timeouts": self.timeouts,
            "retransmits": self.retransmits,
            "naks_by_status": self.naks.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "bad_replies": self.bad_replies,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "exchanges_per_sec": self.rate(),
            "failed_pct": self.failed_pct(),
            "latency_ms": {
                "p50": self.ms(0.5), "p90": self.ms(0.9), "p99": self.ms(0.99),
                "p99_9": self.ms(0.999), "max": self.latency_us.max() as f64 / 1000.0,
            },
        })
    }

    /// One human line.
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<8} ok {:>8}/{:<8} {:>10.0}/s  timeouts {:>6}  naks {:>6}  latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
            self.ok,
            self.started,
            self.rate(),
            self.timeouts,
            self.naks.values().sum::<u64>(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}
