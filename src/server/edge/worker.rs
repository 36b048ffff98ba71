//! A worker thread: receive a batch, run the engine on each datagram under the batch's policy
//! snapshot, send what needs nothing stored, hand the rest to the committer.

use super::partner::PolicyCell;
use super::stats::{LeaseEvent, WORKER_REPORT_INTERVAL, WorkerStats, msg_type_slot};
use super::{DATAGRAM_LEN_MAX, Datapath, PendingReply, RxMeta, now_secs, udp};
use crate::store::CommitJob;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tandem_core::engine::{Outcome, Received, Scratch};
use tandem_core::lease::Lease;
use tracing::{debug, warn};

/// Everything one worker thread needs.
pub struct Worker<D: Datapath> {
    pub(super) path: D,
    pub(super) socket_index: usize,
    pub(super) engines: Arc<super::reload::EngineCell>,
    pub(super) policy: Arc<PolicyCell>,
    pub(super) commits: Sender<CommitJob<PendingReply>>,
    pub(super) stats_tx: Sender<(usize, WorkerStats)>,
    pub(super) stop: Arc<AtomicBool>,
    /// Set by the committer while the store is nearly full: no new leases.
    pub(super) store_refusing: Arc<AtomicBool>,
    /// Format audit lines for the committer (`server.audit_log` is set).
    pub(super) audit: bool,
    pub(super) id: usize,
}

impl<D: Datapath> Worker<D> {
    /// Runs until `stop`.
    pub fn run(mut self) {
        let mut metas: Vec<RxMeta> = Vec::with_capacity(udp::RECV_BATCH_MAX);
        let mut now_out: Vec<PendingReply> = Vec::with_capacity(udp::RECV_BATCH_MAX);
        let mut reply = Vec::with_capacity(1500);
        let mut scratch = Scratch::default();
        let mut writes: Vec<Lease> = Vec::new();
        let mut policies: Vec<tandem_core::engine::Policy> = Vec::new();
        let mut stats = WorkerStats::default();
        let mut names: HashMap<u32, Option<String>> = HashMap::new();
        let mut last_report = Instant::now();
        let started = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if last_report.elapsed() >= WORKER_REPORT_INTERVAL {
                last_report = Instant::now();
                self.path.take_drops(&mut |why, n| {
                    *stats.dropped.entry(why).or_default() += n;
                });
                self.path.take_handoffs(&mut |result, n| {
                    *stats.handoffs.entry(result).or_default() += n;
                });
                self.path.take_kernel_routed(&mut |why, n| {
                    *stats.kernel_routed.entry(why).or_default() += n;
                });
                let _ = self.stats_tx.try_send((self.id, stats.clone()));
            }
            match self.path.recv_batch(&mut metas) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(worker = self.id, error = %e, "receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let now = now_secs();
            let batch_received_at = Instant::now();
            let now_ms = batch_received_at.duration_since(started).as_millis() as u64;
            // Read once per batch: a reload takes effect from the next batch.
            let engine = self.engines.get();
            self.policy.read_into(&mut policies);
            if self.store_refusing.load(Ordering::Relaxed) {
                for p in policies.iter_mut() {
                    *p = p.without_new_leases();
                }
            }
            for meta in &metas {
                stats.received += 1;
                if let Some(why) = meta.drop {
                    *stats.dropped.entry(why).or_default() += 1;
                    debug!(src = %meta.src, reason = why, "dropped by the datapath");
                    continue;
                }
                if meta.truncated {
                    *stats.dropped.entry("oversized").or_default() += 1;
                    debug!(src = %meta.src, len = meta.len, "dropped: datagram larger than {DATAGRAM_LEN_MAX} bytes");
                    continue;
                }
                let interface = if meta.ifindex == 0 {
                    None
                } else {
                    names
                        .entry(meta.ifindex)
                        .or_insert_with(|| {
                            nix::net::if_::if_indextoname(meta.ifindex)
                                .ok()
                                .and_then(|c| c.into_string().ok())
                        })
                        .as_deref()
                };
                let received_at = meta.received_at.unwrap_or(batch_received_at);
                let bytes = self.path.datagram(meta);
                if let Some(&code) = bytes.first() {
                    stats.received_by_type[msg_type_slot(code)] += 1;
                }
                let rx = Received {
                    now_secs: now,
                    now_ms,
                    src: meta.src,
                    multicast: meta.multicast,
                    interface,
                    bytes,
                };
                writes.clear();
                match engine.handle_with(&policies, &rx, &mut reply, &mut scratch, &mut writes) {
                    Outcome::Reply { answered } => {
                        stats.answered_by_type[msg_type_slot(answered.to_u8())] += 1;
                        for l in &writes {
                            if let Some(e) = LeaseEvent::of(l, answered) {
                                stats.lease_events[e as usize] += 1;
                            }
                        }
                        let mut pending = PendingReply {
                            socket: self.socket_index,
                            to: meta.src,
                            from: meta.dst,
                            bytes: reply.clone(),
                            reply_frame: meta.reply_frame,
                            received_at,
                            audit: String::new(),
                            answered,
                        };
                        if self.audit && !writes.is_empty() {
                            let relay = super::audit::RelayInfo::of(
                                self.path.datagram(meta),
                                *meta.src.ip(),
                            );
                            for l in &writes {
                                pending.audit.push_str(&super::audit::line(
                                    l,
                                    Some(answered),
                                    Some(&relay),
                                    now,
                                ));
                            }
                        }
                        if writes.is_empty() {
                            now_out.push(pending);
                            continue;
                        }
                        // The lease log lines are written by the committer, once durable.
                        stats.replied_after_commit += 1;
                        let job = CommitJob {
                            writes: std::mem::take(&mut writes),
                            then: Some(pending),
                            announce: true,
                        };
                        if self.commits.send(job).is_err() {
                            return;
                        }
                    }
                    Outcome::Dropped(d) => {
                        *stats.dropped.entry(d.label()).or_default() += 1;
                        debug!(src = %meta.src, reason = %d, "dropped");
                    }
                }
            }
            // Replies that needed no commit leave together, after the batch.
            if now_out.is_empty() {
                continue;
            }
            let sent = self.path.send_batch(&now_out);
            // One clock read per batch: the replies of it left together, and each waited since
            // its own receipt (the batch's, or earlier for a message another worker handed over).
            let sent_at = Instant::now();
            let waited_us =
                |r: &PendingReply| sent_at.duration_since(r.received_at).as_micros() as u64;
            let mut sent_now = sent as u64;
            for r in &now_out[..sent] {
                stats.reply_now_us.record(waited_us(r));
            }
            for r in &now_out[sent..] {
                match self.path.send(r) {
                    Ok(()) => {
                        sent_now += 1;
                        stats.reply_now_us.record(waited_us(r));
                    }
                    Err(e) => {
                        stats.send_errors += 1;
                        debug!(to = %r.to, error = %e, "reply send failed");
                    }
                }
            }
            stats.replied_now += sent_now;
            now_out.clear();
        }
        let _ = self.stats_tx.try_send((self.id, stats));
    }
}
