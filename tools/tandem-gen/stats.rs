//! Per-phase measurements: exchanges, timeouts, NAKs by status code, a latency histogram and a
//! millisecond timeline from which the longest reply gap (the client-visible outage) is read.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Highest latency the histogram records, in microseconds (longer ones are clamped).
pub const LATENCY_US_MAX: u64 = 120_000_000;

/// Longest phase the reply timeline covers, in milliseconds (events later than this are not
/// recorded; the phase limit, --phase-secs, is normally far below).
pub const TIMELINE_MS_MAX: usize = 3_600_000;
/// Reply gaps listed in the JSON summary (the longest first).
pub const GAPS_LISTED: usize = 10;
/// Timeline flag: exchanges were outstanding during this millisecond.
const BUSY: u8 = 1;
/// Timeline flag: an exchange completed (usable answer) during this millisecond.
const DONE: u8 = 2;

/// One flag byte per millisecond since the phase started: whether exchanges were outstanding and
/// whether one completed. Threads keep their own and the merge ORs them, so the gap is the one
/// every client saw, not one thread's. Recording is an index and an OR.
#[derive(Clone, Default)]
pub struct Timeline {
    flags: Vec<u8>,
}

/// The longest stretch with exchanges outstanding and none completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gap {
    /// Its length in milliseconds.
    pub ms: u64,
    /// When it began, in milliseconds since the phase started.
    pub start_ms: u64,
    /// No completion ended it: the phase ended, or every outstanding exchange timed out.
    pub open: bool,
}

impl Timeline {
    /// A timeline with room for a phase of `ms` milliseconds (grows if the phase runs longer).
    pub fn with_capacity_ms(ms: u64) -> Timeline {
        Timeline {
            flags: Vec::with_capacity((ms as usize).min(TIMELINE_MS_MAX)),
        }
    }

    fn slot(&mut self, ms: u64) -> Option<&mut u8> {
        let i = ms as usize;
        if i >= TIMELINE_MS_MAX {
            return None;
        }
        if i >= self.flags.len() {
            self.flags.resize(i + 1, 0);
        }
        Some(&mut self.flags[i])
    }

    /// Exchanges were outstanding from millisecond `from` to `to` (both included).
    pub fn busy(&mut self, from: u64, to: u64) {
        for ms in from..=to.min(TIMELINE_MS_MAX as u64 - 1) {
            if let Some(f) = self.slot(ms) {
                *f |= BUSY;
            }
        }
    }

    /// An exchange completed in millisecond `ms`.
    pub fn done(&mut self, ms: u64) {
        if let Some(f) = self.slot(ms) {
            *f |= DONE | BUSY;
        }
    }

    /// ORs another thread's timeline into this one.
    pub fn merge(&mut self, o: &Timeline) {
        if self.flags.len() < o.flags.len() {
            self.flags.resize(o.flags.len(), 0);
        }
        for (a, b) in self.flags.iter_mut().zip(&o.flags) {
            *a |= *b;
        }
    }

    /// The longest run of milliseconds with exchanges outstanding and no completion (the first
    /// one if several are equally long).
    pub fn max_gap(&self) -> Gap {
        self.longest_gaps(1).first().copied().unwrap_or_default()
    }

    /// The `n` longest such runs, longest first (earlier first among equals).
    pub fn longest_gaps(&self, n: usize) -> Vec<Gap> {
        let mut top: Vec<Gap> = Vec::with_capacity(n + 1);
        let mut run_start: Option<usize> = None;
        for (i, f) in self.flags.iter().chain(std::iter::once(&0u8)).enumerate() {
            if *f & BUSY != 0 && *f & DONE == 0 {
                run_start.get_or_insert(i);
                continue;
            }
            if let Some(s) = run_start.take() {
                let len = (i - s) as u64;
                if top.len() < n || top.last().is_some_and(|g| len > g.ms) {
                    let at = top.partition_point(|g| g.ms >= len);
                    top.insert(
                        at,
                        Gap {
                            ms: len,
                            start_ms: s as u64,
                            open: *f & DONE == 0,
                        },
                    );
                    top.truncate(n);
                }
            }
        }
        top
    }
}

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
    /// Requests that got no answer after every retransmission, so the client went back to
    /// Solicit (RFC 8415 §18.2.2), once per exchange.
    pub restarts: u64,
    /// Renews that got no answer by T2 or through their retransmissions, so the client went on
    /// with a Rebind to any server (RFC 8415 §18.2.5) in the same exchange.
    pub renew_fell_back_to_rebind: u64,
    /// Exchanges answered with a failure status, by status code.
    pub naks: BTreeMap<u16, u64>,
    /// Replies that could not be parsed or did not fit the exchange they matched.
    pub bad_replies: u64,
    /// Answers to a message that had already been answered (with several servers: the slower
    /// server's copy), ignored.
    pub duplicate_replies: u64,
    /// Answers to a message retransmitted since, or to an exchange already given up, ignored.
    pub late_replies: u64,
    /// When exchanges were outstanding and when they completed, per millisecond.
    pub timeline: Timeline,
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
            restarts: 0,
            renew_fell_back_to_rebind: 0,
            naks: BTreeMap::new(),
            bad_replies: 0,
            duplicate_replies: 0,
            late_replies: 0,
            timeline: Timeline::default(),
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
        self.restarts += o.restarts;
        self.renew_fell_back_to_rebind += o.renew_fell_back_to_rebind;
        self.bad_replies += o.bad_replies;
        self.duplicate_replies += o.duplicate_replies;
        self.late_replies += o.late_replies;
        self.timeline.merge(&o.timeline);
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

    /// Share of started exchanges that did not complete (timed out, refused, or still
    /// outstanding when the phase's time ran out), in percent.
    pub fn failed_pct(&self) -> f64 {
        if self.started == 0 {
            return 0.0;
        }
        (self.started - self.ok.min(self.started)) as f64 * 100.0 / self.started as f64
    }

    /// JSON summary.
    pub fn json(&self, name: &str) -> serde_json::Value {
        let gap = self.timeline.max_gap();
        serde_json::json!({
            "phase": name,
            "started": self.started,
            "ok": self.ok,
            "timeouts": self.timeouts,
            "retransmits": self.retransmits,
            "restarts": self.restarts,
            "renew_fell_back_to_rebind": self.renew_fell_back_to_rebind,
            "naks_by_status": self.naks.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "bad_replies": self.bad_replies,
            "duplicate_replies": self.duplicate_replies,
            "late_replies": self.late_replies,
            "max_reply_gap_ms": gap.ms,
            "max_reply_gap_start_ms": gap.start_ms,
            "max_reply_gap_open": gap.open,
            "reply_gaps": self.timeline.longest_gaps(GAPS_LISTED).iter().map(|g| serde_json::json!({
                "ms": g.ms, "start_ms": g.start_ms, "open": g.open,
            })).collect::<Vec<_>>(),
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

    /// A human line for exchanges that went on with another message because nobody answered
    /// (Request → Solicit, Renew → Rebind), when there were any.
    pub fn fallback_line(&self) -> Option<String> {
        (self.restarts > 0 || self.renew_fell_back_to_rebind > 0).then(|| {
            format!(
                "         unanswered, went on: Request -> Solicit {}, Renew -> Rebind {}",
                self.restarts, self.renew_fell_back_to_rebind
            )
        })
    }

    /// The second human line: ignored replies and the longest reply gap.
    pub fn gap_line(&self) -> String {
        let gap = self.timeline.max_gap();
        format!(
            "         replies ignored: duplicate {}, late {}, bad {}; longest reply gap {} ms from {} ms{}",
            self.duplicate_replies,
            self.late_replies,
            self.bad_replies,
            gap.ms,
            gap.start_ms,
            if gap.open {
                " (not ended by a reply)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_the_longest_busy_run_without_completions() {
        let mut t = Timeline::default();
        t.busy(0, 10);
        t.done(3);
        t.done(10);
        // 4..=9: 6 ms with nothing completing.
        assert_eq!(
            t.max_gap(),
            Gap {
                ms: 6,
                start_ms: 4,
                open: false
            }
        );
        // Idle time (nothing outstanding) is no gap; a run the phase end cuts is open.
        t.busy(20, 30);
        let mut u = Timeline::default();
        u.done(25); // another thread's completion splits the run: 20..=24 and 26..=30
        let mut m = t.clone();
        m.merge(&u);
        assert_eq!(
            m.max_gap(),
            Gap {
                ms: 6,
                start_ms: 4,
                open: false
            }
        );
        assert_eq!(
            t.max_gap(),
            Gap {
                ms: 11,
                start_ms: 20,
                open: true
            }
        );
        let starts: Vec<(u64, u64)> = m
            .longest_gaps(3)
            .iter()
            .map(|g| (g.ms, g.start_ms))
            .collect();
        assert_eq!(starts, [(6, 4), (5, 20), (5, 26)]);
        assert_eq!(m.longest_gaps(10).len(), 4); // also 0..=2
    }
}
