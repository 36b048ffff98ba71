//! One interface's DHCPv6 messages spread over all of its AF_XDP workers.
//!
//! A NIC picks the receive queue of a frame by hashing its addresses and ports, so everything
//! one relay agent sends arrives on one queue, and an ISP edge hears from a few relays: without
//! this, one worker would answer a whole access network while the others idle. Each message
//! belongs to the worker its spread key names ([`super::super::udp::spread_key`]: the byte the
//! UDP path's SO_REUSEPORT program reads, modulo the interface's workers). A worker that falls
//! behind (it took a whole batch from its ring) copies the messages of its batch that belong to
//! other workers into their bounded inboxes and wakes them through their eventfds; below that
//! it answers everything itself, since a handoff costs more than it saves while the queue
//! keeps up (measured: 71 against 58 µs of server CPU per exchange at 15,000/s, one relay). The
//! worker that answers sends the reply from its own socket: any queue of the interface may
//! transmit it, and the reply's headers were worked out by the receiving worker already.
//!
//! A message is kept by the worker that received it, never dropped, when the other worker's
//! inbox is full or the message is larger than an inbox slot; both are counted. (When the other
//! worker has stopped, at shutdown, it is kept too, uncounted; what is left in a stopping
//! worker's inbox is not answered, as datagrams in a closing socket are not.)

use super::super::RxMeta;
use super::EventFd;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;

/// Messages that may wait in one worker's inbox; past it the receiving worker answers them
/// itself (counted as `kept_inbox_full`).
pub const HANDOFF_QUEUE_MAX: usize = 1024;
/// Largest message handed to another worker (the DHCPv6 payload of a 1,500-byte frame);
/// larger ones are answered where they arrived (counted as `kept_large`).
pub const HANDOFF_LEN_MAX: usize = 1452;
/// Most handed-over messages a worker takes per batch.
pub const HANDOFF_TAKE_MAX: usize = super::RX_BATCH_MAX;

/// What the handoff counters are called (`tandem_xdp_handoffs_total{result}`), in the order of
/// [`Spread::take_counts`].
pub const HANDOFF_RESULTS: [&str; 3] = ["handed_off", "kept_inbox_full", "kept_large"];

/// A message on its way to the worker it belongs to: what the receiving worker learnt of it,
/// and a copy of its DHCPv6 payload.
pub struct Handoff {
    meta: RxMeta,
    len: u16,
    bytes: [u8; HANDOFF_LEN_MAX],
}

impl Handoff {
    /// What the receiving worker learnt of the message (its `slot` means nothing here).
    pub fn meta(&self) -> &RxMeta {
        &self.meta
    }

    /// The DHCPv6 message.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One member of a group of threads that pass each other messages: a bounded inbox per
/// member, and the eventfd each one polls, signalled once per batch by whoever put something
/// in its inbox. The server's AF_XDP workers ([`Spread`]) and tandem-gen's AF_XDP threads
/// (replies that landed on another thread's queue) are such groups.
pub struct Peers<T> {
    me: usize,
    outs: Vec<PeerOut<T>>,
    inbox: Receiver<T>,
}

struct PeerOut<T> {
    inbox: Sender<T>,
    wake: Arc<EventFd>,
    /// Handed something since the last [`Peers::wake_peers`].
    to_wake: bool,
}

/// Why [`Peers::send`] could not deliver a message (it is handed back).
pub enum NotDelivered<T> {
    /// The member's inbox is full.
    Full(T),
    /// The member is gone (it stopped), or there is no such member.
    Gone(T),
}

impl<T> Peers<T> {
    /// A group of `wakes.len()` members, inboxes of `inbox_max` messages; member `i` polls
    /// `wakes[i]`.
    pub fn group(wakes: &[Arc<EventFd>], inbox_max: usize) -> Vec<Peers<T>> {
        let (senders, receivers): (Vec<_>, Vec<_>) = wakes
            .iter()
            .map(|_| crossbeam_channel::bounded::<T>(inbox_max))
            .unzip();
        receivers
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| Peers {
                me,
                outs: senders
                    .iter()
                    .zip(wakes)
                    .map(|(s, w)| PeerOut {
                        inbox: s.clone(),
                        wake: w.clone(),
                        to_wake: false,
                    })
                    .collect(),
                inbox,
            })
            .collect()
    }

    /// This member's number.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many members the group has.
    pub fn members(&self) -> usize {
        self.outs.len()
    }

    /// Puts `msg` in member `to`'s inbox; it is woken at the next [`Peers::wake_peers`].
    pub fn send(&mut self, to: usize, msg: T) -> Result<(), NotDelivered<T>> {
        let Some(out) = self.outs.get_mut(to) else {
            return Err(NotDelivered::Gone(msg));
        };
        match out.inbox.try_send(msg) {
            Ok(()) => {
                out.to_wake = true;
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(NotDelivered::Full(m)),
            Err(TrySendError::Disconnected(m)) => Err(NotDelivered::Gone(m)),
        }
    }

    /// Wakes every member sent something since the last call (once per batch).
    pub fn wake_peers(&mut self) {
        for p in self.outs.iter_mut().filter(|p| p.to_wake) {
            p.to_wake = false;
            p.wake.signal();
        }
    }

    /// Whether messages wait in this member's inbox.
    pub fn waiting(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// The next message in this member's inbox.
    pub fn recv(&self) -> Option<T> {
        self.inbox.try_recv().ok()
    }
}

/// One worker's place among the AF_XDP workers of its interface.
pub struct Spread {
    peers: Peers<Handoff>,
    counts: [u64; HANDOFF_RESULTS.len()],
    /// Per member: pinned to this worker's core. Handing it a message would only add a copy
    /// and a wakeup to the work of the one core both run on (workers share cores when the
    /// process may use fewer cores than the interface has queues: `taskset`, a cpuset).
    same_core: Vec<bool>,
}

/// A [`Spread`] per worker of one interface; `wakes[i]` is the eventfd worker `i` waits on,
/// `cores[i]` the core it is pinned to (`None`: not pinned).
pub fn group(wakes: &[Arc<EventFd>], cores: &[Option<usize>]) -> Vec<Spread> {
    let core = |i: usize| cores.get(i).copied().flatten();
    Peers::group(wakes, HANDOFF_QUEUE_MAX)
        .into_iter()
        .enumerate()
        .map(|(me, peers)| Spread {
            peers,
            counts: [0; HANDOFF_RESULTS.len()],
            same_core: (0..wakes.len())
                .map(|i| core(me).is_some() && core(i) == core(me))
                .collect(),
        })
        .collect()
}

impl Spread {
    /// Which worker of the group `payload` belongs to (this one when it has no spread key).
    pub fn owner(&self, payload: &[u8]) -> usize {
        super::super::udp::spread_key(payload)
            .map_or(self.peers.me(), |k| k as usize % self.peers.members())
    }

    /// Hands the message to the worker it belongs to; false when this worker must answer it
    /// (it is its own or a worker's on the same core, the other's inbox is full, or it is too
    /// large to hand over).
    pub fn hand_off(&mut self, meta: &RxMeta, payload: &[u8]) -> bool {
        let to = self.owner(payload);
        if to == self.peers.me() || self.same_core.get(to).copied().unwrap_or(false) {
            return false;
        }
        if payload.len() > HANDOFF_LEN_MAX {
            self.counts[2] += 1;
            return false;
        }
        let mut h = Handoff {
            meta: RxMeta {
                // The time in the other worker's inbox counts in the reply's latency.
                received_at: Some(std::time::Instant::now()),
                ..*meta
            },
            len: payload.len() as u16,
            bytes: [0; HANDOFF_LEN_MAX],
        };
        h.bytes[..payload.len()].copy_from_slice(payload);
        match self.peers.send(to, h) {
            Ok(()) => {
                self.counts[0] += 1;
                true
            }
            Err(NotDelivered::Full(_)) => {
                self.counts[1] += 1;
                false
            }
            Err(NotDelivered::Gone(_)) => false,
        }
    }

    /// Wakes every worker handed something since the last call (once per batch).
    pub fn wake_peers(&mut self) {
        self.peers.wake_peers();
    }

    /// Whether other workers handed this one messages it has not taken yet.
    pub fn waiting(&self) -> bool {
        self.peers.waiting()
    }

    /// Moves up to [`HANDOFF_TAKE_MAX`] handed-over messages into `into` (cleared first).
    pub fn take(&self, into: &mut Vec<Handoff>) {
        into.clear();
        while into.len() < HANDOFF_TAKE_MAX {
            match self.peers.recv() {
                Some(h) => into.push(h),
                None => break,
            }
        }
    }

    /// Adds to `add` the handoff counts since the last call, by [`HANDOFF_RESULTS`] label.
    pub fn take_counts(&mut self, add: &mut dyn FnMut(&'static str, u64)) {
        for (label, n) in HANDOFF_RESULTS.iter().zip(self.counts.iter_mut()) {
            add(label, std::mem::take(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn meta() -> RxMeta {
        RxMeta {
            src: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 547, 0, 0),
            len: 0,
            truncated: false,
            multicast: false,
            dst: None,
            ifindex: 1,
            slot: 0,
            reply_frame: None,
            drop: None,
            received_at: None,
        }
    }

    /// A Solicit whose transaction id ends in `xid_low`.
    fn solicit(xid_low: u8) -> Vec<u8> {
        vec![1, 0, 0, xid_low, 0, 8, 0, 2, 0, 0]
    }

    fn counts(s: &mut Spread) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        s.take_counts(&mut |l, n| v.push((l, n)));
        v
    }

    #[test]
    fn messages_reach_the_worker_their_key_names_and_are_woken_for() {
        let wakes: Vec<_> = (0..3).map(|_| Arc::new(EventFd::new().unwrap())).collect();
        let mut g = group(&wakes, &[Some(0), Some(1), None]);
        let m = meta();
        let before = std::time::Instant::now();
        // Worker 0 keeps its own (key 3 % 3 == 0) and hands key 4 to worker 1, 5 to worker 2.
        assert!(!g[0].hand_off(&m, &solicit(3)));
        assert!(g[0].hand_off(&m, &solicit(4)));
        assert!(g[0].hand_off(&m, &solicit(5)));
        assert!(!g[0].hand_off(&m, &[1, 2]), "no spread key: kept");
        g[0].wake_peers();
        let mut into = Vec::new();
        for (w, xid) in [(1, 4), (2, 5)] {
            assert!(g[w].waiting());
            g[w].take(&mut into);
            assert_eq!(into.len(), 1);
            assert_eq!(into[0].payload(), &solicit(xid)[..]);
            assert_eq!(into[0].meta().src, m.src);
            // Its reply latency will count from the handoff, not from the batch that takes it.
            assert!(
                into[0]
                    .meta()
                    .received_at
                    .is_some_and(|t| t >= before && t <= std::time::Instant::now())
            );
            assert!(!g[w].waiting());
        }
        assert!(!g[0].waiting());
        assert_eq!(
            counts(&mut g[0]),
            vec![("handed_off", 2), ("kept_inbox_full", 0), ("kept_large", 0)]
        );
        assert_eq!(counts(&mut g[0])[0], ("handed_off", 0), "counts are taken");
    }

    #[test]
    fn a_message_of_a_worker_on_the_same_core_stays_with_the_receiving_worker() {
        let wakes: Vec<_> = (0..4).map(|_| Arc::new(EventFd::new().unwrap())).collect();
        // Four queues on two cores, as the server pins them: workers 0 and 2 on core 0.
        let mut g = group(&wakes, &[Some(0), Some(1), Some(0), Some(1)]);
        let m = meta();
        assert!(
            !g[0].hand_off(&m, &solicit(2)),
            "worker 2 shares core 0: kept"
        );
        assert!(g[0].hand_off(&m, &solicit(1)), "worker 1 runs on core 1");
        assert!(g[0].hand_off(&m, &solicit(3)), "worker 3 runs on core 1");
        assert!(
            !g[1].hand_off(&m, &solicit(7)),
            "worker 3 shares core 1: kept"
        );
        assert!(g[1].hand_off(&m, &solicit(6)), "worker 2 runs on core 0");
        g[0].wake_peers();
        g[1].wake_peers();
        let mut into = Vec::new();
        for (w, xids) in [(0, vec![]), (1, vec![1]), (2, vec![6]), (3, vec![3])] {
            g[w].take(&mut into);
            let got: Vec<_> = into.iter().map(|h| h.payload()[3]).collect();
            assert_eq!(got, xids, "worker {w}");
        }
        assert_eq!(counts(&mut g[0])[0], ("handed_off", 2));
        // One core for all: nothing moves.
        let mut g = group(&wakes[..2], &[Some(0), Some(0)]);
        assert!(!g[0].hand_off(&m, &solicit(1)));
        assert!(!g[1].hand_off(&m, &solicit(0)));
        assert!(!g[1].waiting() && !g[0].waiting());
    }

    #[test]
    fn a_full_inbox_or_a_large_message_stays_with_the_receiving_worker() {
        let wakes: Vec<_> = (0..2).map(|_| Arc::new(EventFd::new().unwrap())).collect();
        let mut g = group(&wakes, &[None, None]);
        let m = meta();
        for _ in 0..HANDOFF_QUEUE_MAX {
            assert!(g[0].hand_off(&m, &solicit(1)));
        }
        assert!(!g[0].hand_off(&m, &solicit(1)), "inbox full: kept");
        let mut large = solicit(1);
        large.resize(HANDOFF_LEN_MAX + 1, 0);
        assert!(!g[0].hand_off(&m, &large));
        large.truncate(HANDOFF_LEN_MAX);
        let mut into = Vec::new();
        g[1].take(&mut into);
        assert_eq!(into.len(), HANDOFF_TAKE_MAX, "one batch at a time");
        assert!(g[0].hand_off(&m, &large), "the largest that fits goes");
        assert_eq!(
            counts(&mut g[0]),
            vec![
                ("handed_off", HANDOFF_QUEUE_MAX as u64 + 1),
                ("kept_inbox_full", 1),
                ("kept_large", 1)
            ]
        );
    }
}
