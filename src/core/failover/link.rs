//! The partner link, sans-IO: everything about one connection to the partner that is protocol
//! rather than sockets. The edge (or the simulator) moves bytes in and out and passes the time;
//! the link frames them, runs CONNECT / CONNECTREPLY, decodes messages, keeps the link alive
//! with CONTACT, and says when it is up, what arrived, and when and why it is over.
//!
//! The shape is quinn-proto's `Connection`: [`Link::on_bytes`] takes received bytes,
//! [`Link::poll_event`] hands out what they meant, [`Link::send`] queues a message,
//! [`Link::take_transmit`] gives the bytes to send, [`Link::on_timeout`] runs the timers and
//! [`Link::poll_timeout`] says when they next need to run.
//!
//! A link begins once the transport is secure (TLS done, the partner's name checked): the
//! primary sends CONNECT at once and waits for CONNECTREPLY; the secondary waits for CONNECT
//! and answers it. Then either side sends CONTACT after a quarter of the partner's keepalive
//! time without sending anything, and closes the link after its own keepalive time without
//! hearing anything. The whole handshake, transport included, must end within
//! [`HANDSHAKE_TIMEOUT_MS`] of the connection opening.
//!
//! While the link is up, a live reload on either side can change what CONNECT compared (the
//! options, above all). The side whose configuration changed sends a CONTACT carrying its new
//! pools digest and summary ([`Link::set_pools`]); each side then knows whether the two
//! configurations in force still match ([`Link::pools_differ`]) without dropping the link.
//!
//! [`Backoff`] is the primary's reconnection schedule.

use super::codec::{self, CodecError};
use super::connect::{self, ConnectAccepted, LinkParams};
use super::peer::PeerMsg;
use super::wire::{
    FailoverMessage, FailoverStatusCode, FailoverType, FailoverWriter, Framer, MAX_TRANSACTION_ID,
};
use crate::config::{Config, Role};
use std::collections::VecDeque;
use std::sync::Arc;

/// How long a connection may take from opening (TCP connect) to CONNECT accepted.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Shortest interval between CONTACTs, whatever the partner's keepalive.
pub const CONTACT_EVERY_MIN_MS: u64 = 100;
/// Events queued at most inside a link; each `on_bytes` turn adds at most a few (the frames
/// stay in the framer until polled).
pub const LINK_EVENTS_MAX: usize = 4;

/// The window over which a partner's clock is judged behind ours (see [`Link`]'s skew check).
pub const SKEW_WINDOW_MS: u64 = 30_000;

/// Longest reason put in a DISCONNECT (bytes; cut at a character boundary).
pub const DISCONNECT_TEXT_MAX: usize = 200;

/// `reason` cut to [`DISCONNECT_TEXT_MAX`] bytes.
fn disconnect_text(reason: &str) -> &str {
    let mut end = reason.len().min(DISCONNECT_TEXT_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The two clocks a link reads: monotonic milliseconds for its timers (a wall-clock step must
/// not fire or starve a keepalive) and unix seconds for what goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, milliseconds from any fixed origin.
    pub mono_ms: u64,
    /// Wall-clock time, unix seconds.
    pub unix_secs: u64,
}

/// What a link has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// CONNECT / CONNECTREPLY accepted: the link is up.
    Up(ConnectAccepted),
    /// A message from the partner, in order.
    Msg(PeerMsg),
    /// A message that could not be understood and was skipped (a BNDUPD among them is
    /// refused so the partner does not wait for its answer); for the log.
    Skipped(String),
    /// The link is over. `was_up`: it had been up. `refused`: the CONNECT handshake refused
    /// (either side); a primary then waits longer before trying again (RFC 8156 §6.1).
    Closed {
        /// Why, for the log.
        reason: String,
        /// Whether the link had been up.
        was_up: bool,
        /// Whether CONNECT or CONNECTREPLY was refused.
        refused: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Secondary: waiting for CONNECT.
    AwaitConnect,
    /// Primary: CONNECT sent with this xid, waiting for CONNECTREPLY.
    AwaitConnectReply(u32),
    /// CONNECT accepted.
    Up,
    /// Over; `Closed` was queued.
    Closed,
}

/// One connection's protocol state. See the module documentation.
pub struct Link {
    params: LinkParams,
    summary: Arc<[String]>,
    config: Arc<Config>,
    keepalive_ms: u64,
    phase: Phase,
    opened_ms: u64,
    last_rx_ms: u64,
    last_tx_ms: u64,
    send_every_ms: u64,
    framer: Framer,
    transmit: Vec<u8>,
    events: VecDeque<LinkEvent>,
    xid: u32,
    /// The transport said the partner closed its side; the close is reported once what it
    /// sent before has been read.
    eof: bool,
    /// Clock skew after CONNECT (RFC 8156 §6.1.2, §7.5.1: checked on every message): the
    /// largest (sent-time − our time) seen in the current window. A message can arrive late
    /// (queued, or we were busy or frozen) but never before it was sent, so one message
    /// ahead by more than the limit is enough, while "behind" is judged on the least-late
    /// message of a window ([`SKEW_WINDOW_MS`]; CONTACTs keep every window populated).
    skew_best_secs: Option<i64>,
    skew_window_ms: u64,
    /// The partner's pools digest and summary in force: as compared at CONNECT, then as its
    /// CONTACTs announce after a live reload.
    partner_pools: Option<([u8; 32], Arc<[String]>)>,
    /// Our pools after a live reload that came while our CONNECT was out: the CONNECTREPLY
    /// is checked against what the CONNECT said, and these are announced once up.
    reloaded_pools: Option<([u8; 32], Arc<[String]>)>,
}

impl Link {
    /// A link on a connection that opened at `opened_ms` (monotonic) and whose transport is now
    /// secure. The primary's CONNECT is queued at once. `summary` is our pools summary
    /// ([`super::pools_digest::pools_summary`]); `config` resolves which subnet a partner's
    /// binding belongs to.
    pub fn new(
        params: LinkParams,
        summary: Arc<[String]>,
        config: Arc<Config>,
        keepalive_secs: u64,
        opened_ms: u64,
        now: Now,
    ) -> Link {
        let role = params.role;
        let mut l = Link {
            params,
            summary,
            config,
            keepalive_ms: keepalive_secs.saturating_mul(1000),
            phase: Phase::AwaitConnect,
            opened_ms,
            last_rx_ms: now.mono_ms,
            last_tx_ms: now.mono_ms,
            send_every_ms: 1000,
            framer: Framer::new(),
            transmit: Vec::new(),
            events: VecDeque::with_capacity(LINK_EVENTS_MAX),
            xid: 0,
            eof: false,
            skew_best_secs: None,
            skew_window_ms: now.mono_ms,
            partner_pools: None,
            reloaded_pools: None,
        };
        if role == Role::Primary {
            let xid = l.next_xid();
            let mut buf = Vec::new();
            match connect::build_connect(&l.params, &l.summary, xid, now.unix_secs, &mut buf) {
                Ok(()) => {
                    l.queue(now, &buf);
                    l.phase = Phase::AwaitConnectReply(xid);
                }
                Err(e) => l.close_with(format!("cannot build CONNECT: {e}"), false),
            }
        }
        l
    }

    /// Our configuration changed while the link may be up (a live reload): what a later
    /// CONNECT compares becomes `digest` and `summary`, and a link that is up tells the
    /// partner at once, in a CONTACT.
    pub fn set_pools(&mut self, now: Now, digest: [u8; 32], summary: Arc<[String]>) {
        if let Phase::AwaitConnectReply(_) = self.phase {
            self.reloaded_pools = Some((digest, summary));
            return;
        }
        if digest == self.params.pools_digest {
            return;
        }
        self.params.pools_digest = digest;
        self.summary = summary;
        if self.phase == Phase::Up {
            let summary = self.summary.clone();
            self.queue_own(now, FailoverType::Contact, |w| {
                super::pools_digest::write_tandem_pools(w, &digest, &summary)
            });
        }
    }

    /// While the link is up: `None` if the partner's configuration in force has the same pools
    /// digest as ours (or nothing is known yet), else what differs, from the two summaries.
    pub fn pools_differ(&self) -> Option<String> {
        let (theirs, their_lines) = self.partner_pools.as_ref()?;
        if *theirs == self.params.pools_digest || self.phase != Phase::Up {
            return None;
        }
        Some(super::pools_digest::describe_difference(
            &self.summary,
            their_lines,
            "only here",
            "only on the partner",
        ))
    }

    /// Whether CONNECT was accepted and the link is not over.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Whether the link is over (its `Closed` event may still be waiting to be polled).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Takes bytes received from the partner; returns how many it took (the framer holds at
    /// most one frame: poll the events, then give the rest).
    pub fn on_bytes(&mut self, now: Now, bytes: &[u8]) -> usize {
        if self.phase == Phase::Closed {
            return bytes.len();
        }
        if !bytes.is_empty() {
            self.last_rx_ms = now.mono_ms;
        }
        self.framer.push(bytes)
    }

    /// The transport saw the partner close its side. What it sent before is still read.
    pub fn on_eof(&mut self) {
        self.eof = true;
    }

    /// The next event, handling one frame at a time.
    pub fn poll_event(&mut self, now: Now) -> Option<LinkEvent> {
        while self.events.is_empty() && self.phase != Phase::Closed {
            let frame = match self.framer.next_frame() {
                None => {
                    if self.eof {
                        self.close_with("the partner closed the connection".into(), false);
                    }
                    break;
                }
                Some(Err(e)) => {
                    self.disconnect(now, format!("bad framing from the partner: {e}"));
                    break;
                }
                Some(Ok(f)) => f.to_vec(),
            };
            self.on_frame(now, &frame);
        }
        self.events.pop_front()
    }

    /// Queues a message for the partner. Only on a link that is up; otherwise it is dropped
    /// (the lazy-update session resends what the partner never acknowledged).
    pub fn send(&mut self, now: Now, msg: &PeerMsg) -> Result<(), CodecError> {
        if self.phase != Phase::Up {
            return Ok(());
        }
        // BNDUPD, a share move and an update request carry their own xid (the session's);
        // BNDREPLY, a share's answer and UPDDONE echo the partner's.
        let xid = match msg {
            PeerMsg::BndUpd { .. }
            | PeerMsg::BndReply { .. }
            | PeerMsg::PdShare { .. }
            | PeerMsg::PdShareAck { .. }
            | PeerMsg::UpdReq { .. }
            | PeerMsg::UpdReqAll { .. }
            | PeerMsg::UpdDone { .. } => 0,
            _ => self.next_xid(),
        };
        let before = self.transmit.len();
        let r = codec::encode(msg, xid, now.unix_secs, &mut self.transmit);
        if self.transmit.len() > before {
            self.last_tx_ms = now.mono_ms;
        }
        r
    }

    /// The bytes to send, in order; the caller takes them (e.g. `std::mem::take`) or drains
    /// what it could send.
    pub fn take_transmit(&mut self) -> &mut Vec<u8> {
        &mut self.transmit
    }

    /// Runs the timers: the handshake deadline, the keepalive, CONTACT when quiet.
    pub fn on_timeout(&mut self, now: Now) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitConnect | Phase::AwaitConnectReply(_) => {
                if now.mono_ms.saturating_sub(self.opened_ms) > HANDSHAKE_TIMEOUT_MS {
                    self.close_with(
                        format!(
                            "no complete handshake within {} s",
                            HANDSHAKE_TIMEOUT_MS / 1000
                        ),
                        false,
                    );
                }
            }
            Phase::Up => {
                let silent_ms = now.mono_ms.saturating_sub(self.last_rx_ms);
                if silent_ms > self.keepalive_ms {
                    self.disconnect(
                        now,
                        format!(
                            "nothing from the partner for {:.1} s (keepalive_secs = {})",
                            silent_ms as f64 / 1000.0,
                            self.keepalive_ms / 1000
                        ),
                    );
                } else if now.mono_ms.saturating_sub(self.last_tx_ms) >= self.send_every_ms {
                    let _ = self.send(now, &PeerMsg::Contact);
                }
            }
        }
    }

    /// When [`Link::on_timeout`] next has something to do (monotonic ms), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Closed => None,
            Phase::AwaitConnect | Phase::AwaitConnectReply(_) => {
                Some(self.opened_ms + HANDSHAKE_TIMEOUT_MS + 1)
            }
            Phase::Up => Some(
                (self.last_rx_ms + self.keepalive_ms + 1).min(self.last_tx_ms + self.send_every_ms),
            ),
        }
    }

    /// Ends the link for a reason outside the protocol (store failure, replaced, shutdown).
    /// A link that is up tells the partner why first: a DISCONNECT carrying the reason is
    /// queued (RFC 8156 §5.3), ServerShuttingDown if `shutting_down`, UnspecFail otherwise.
    /// The caller sends what [`Link::take_transmit`] holds before closing the connection.
    pub fn close(&mut self, now: Now, reason: impl Into<String>, shutting_down: bool) {
        let reason = reason.into();
        let code = if shutting_down {
            FailoverStatusCode::ServerShuttingDown
        } else {
            FailoverStatusCode::UnspecFail
        };
        self.disconnect_with(now, code, reason);
    }

    /// Closes on a decision of ours, telling the partner why if the link is up.
    fn disconnect(&mut self, now: Now, reason: String) {
        self.disconnect_with(now, FailoverStatusCode::UnspecFail, reason);
    }

    fn disconnect_with(&mut self, now: Now, code: FailoverStatusCode, reason: String) {
        if self.phase == Phase::Up {
            self.queue_own(now, FailoverType::Disconnect, |w| {
                w.status_code(code, disconnect_text(&reason))
            });
        }
        self.close_with(reason, false);
    }

    /// Queues one of the link's own messages of type `t` (its id above the session's), its
    /// options written by `options`.
    fn queue_own(
        &mut self,
        now: Now,
        t: FailoverType,
        options: impl FnOnce(&mut FailoverWriter<'_>),
    ) {
        let mut buf = Vec::new();
        let sent = super::wire::to_failover_time(now.unix_secs);
        let xid = self.next_xid();
        let mut w = FailoverWriter::new(&mut buf, t, xid, sent);
        options(&mut w);
        let mut frame = Vec::new();
        if w.frame_into(&mut frame).is_ok() {
            self.queue(now, &frame);
        }
    }

    /// The link's own transaction ids (CONNECT, STATE, CONTACT, DISCONNECT, POOLREQ): above
    /// the session's ([`super::peer::SESSION_XID_MAX`]), so one connection never has two
    /// outstanding messages with one id.
    fn next_xid(&mut self) -> u32 {
        let first = super::peer::SESSION_XID_MAX + 1;
        self.xid = if self.xid < first || self.xid >= MAX_TRANSACTION_ID {
            first
        } else {
            self.xid + 1
        };
        self.xid
    }

    fn queue(&mut self, now: Now, bytes: &[u8]) {
        self.transmit.extend_from_slice(bytes);
        self.last_tx_ms = now.mono_ms;
    }

    fn close_with(&mut self, reason: String, refused: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        let was_up = self.phase == Phase::Up;
        self.phase = Phase::Closed;
        self.events.push_back(LinkEvent::Closed {
            reason,
            was_up,
            refused,
        });
    }

    fn on_frame(&mut self, now: Now, msg: &[u8]) {
        match self.phase {
            Phase::Closed => {}
            Phase::AwaitConnect => {
                let checked =
                    connect::check_connect_message(&self.params, &self.summary, msg, now.unix_secs);
                let xid = codec::peek_header(msg, now.unix_secs).map_or(0, |h| h.xid);
                let mut buf = Vec::new();
                let _ = connect::build_connectreply(
                    &self.params,
                    &self.summary,
                    checked.as_ref(),
                    xid,
                    now.unix_secs,
                    &mut buf,
                );
                self.queue(now, &buf);
                match checked {
                    Ok(a) => self.up(now, a),
                    Err(r) => self.close_with(format!("CONNECT refused: {r}"), true),
                }
            }
            Phase::AwaitConnectReply(xid) => {
                match connect::check_connectreply_message(
                    &self.params,
                    &self.summary,
                    msg,
                    xid,
                    now.unix_secs,
                ) {
                    Ok(a) => self.up(now, a),
                    Err(r) => self.close_with(format!("CONNECTREPLY refused: {r}"), true),
                }
            }
            Phase::Up => self.on_message(now, msg),
        }
    }

    fn up(&mut self, now: Now, a: ConnectAccepted) {
        self.phase = Phase::Up;
        // CONNECT found the partner's pools the same as ours.
        self.partner_pools = Some((self.params.pools_digest, self.summary.clone()));
        if let Some((digest, summary)) = self.reloaded_pools.take() {
            self.set_pools(now, digest, summary);
        }
        self.skew_best_secs = None;
        self.send_every_ms = (a.partner_keepalive_secs * 1000 / 4).max(CONTACT_EVERY_MIN_MS);
        self.events.push_back(LinkEvent::Up(a));
    }

    /// Judges the partner's clock by a message sent at `sent_unix`: why to drop the link, if
    /// it is more than `skew_max_secs` off (see the `skew_best_secs` field).
    fn skew_check(&mut self, now: Now, sent_unix: u64) -> Option<String> {
        let limit = self.params.skew_max_secs as i64;
        let offset = sent_unix as i64 - now.unix_secs as i64;
        let too_far = |secs: i64, dir: &str| {
            format!(
                "clock skew: the partner's clock is {secs} s {dir} ours (limit {limit} s, failover.skew_max_secs); synchronise both clocks (NTP)"
            )
        };
        if offset > limit {
            return Some(too_far(offset, "ahead of"));
        }
        let best = self.skew_best_secs.map_or(offset, |b| b.max(offset));
        self.skew_best_secs = Some(best);
        if now.mono_ms.saturating_sub(self.skew_window_ms) >= SKEW_WINDOW_MS {
            self.skew_window_ms = now.mono_ms;
            self.skew_best_secs = None;
            if best < -limit {
                return Some(too_far(-best, "behind"));
            }
        }
        None
    }

    fn on_message(&mut self, now: Now, msg: &[u8]) {
        let header = codec::peek_header(msg, now.unix_secs);
        if let Ok(h) = &header
            && let Some(why) = self.skew_check(now, h.sent_time)
        {
            self.disconnect(now, why);
            return;
        }
        // A CONTACT may announce the partner's pools after a live reload (only a CONTACT is
        // parsed for it: the header says which).
        if header
            .as_ref()
            .is_ok_and(|h| h.msg_type == FailoverType::Contact)
            && let Ok(m) = FailoverMessage::parse(msg)
            && let Some((digest, lines)) = super::pools_digest::read_tandem_pools(&m)
        {
            self.partner_pools = Some((digest, lines.into()));
        }
        let config = &self.config;
        match codec::decode(msg, |a, k| config.subnet_of(a, k), now.unix_secs) {
            Ok((m, _)) => self.events.push_back(LinkEvent::Msg(m)),
            Err(CodecError::LinkLayer(FailoverType::Disconnect)) => {
                let why = FailoverMessage::parse(msg)
                    .ok()
                    .and_then(|m| m.status())
                    .map(|s| {
                        format!(
                            ": {} ({})",
                            String::from_utf8_lossy(s.message),
                            FailoverStatusCode::from_u16(s.code)
                                .map_or_else(|| s.code.to_string(), |c| format!("{c:?}"))
                        )
                    })
                    .unwrap_or_default();
                self.close_with(format!("the partner sent DISCONNECT{why}"), false);
            }
            Err(e) => {
                let h = codec::peek_header(msg, now.unix_secs);
                let note = format!("{e} (header {:?})", h.as_ref().ok());
                if let Ok(h) = h
                    && h.msg_type == FailoverType::BndUpd
                {
                    // Refuse it so the partner does not wait for an answer forever.
                    let _ = self.send(
                        now,
                        &PeerMsg::BndReply {
                            xid: h.xid,
                            accepted: false,
                            partner_lifetime_sent: 0,
                        },
                    );
                }
                self.events.push_back(LinkEvent::Skipped(note));
            }
        }
    }
}

/// The primary's reconnection schedule: from `min_ms`, doubling to `max_ms` after each failed
/// attempt; straight to `max_ms` after a refusal; back to `min_ms` once a link is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    next_ms: u64,
    at_ms: u64,
}

impl Backoff {
    /// A schedule whose first attempt is due at once.
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            min_ms,
            max_ms: max_ms.max(min_ms),
            next_ms: min_ms,
            at_ms: 0,
        }
    }

    /// Whether an attempt is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.at_ms
    }

    /// An attempt failed (or a link ended) at `now_ms`: the next is due after the current delay,
    /// which then doubles.
    pub fn failed(&mut self, now_ms: u64) {
        self.at_ms = now_ms + self.next_ms;
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
    }

    /// The partner refused the link: wait the longest delay before the next attempt.
    pub fn refused(&mut self) {
        self.next_ms = self.max_ms;
    }

    /// A link came up: the next failure starts from the shortest delay again.
    pub fn up(&mut self) {
        self.next_ms = self.min_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};
    use crate::failover::pools_digest::pools_summary;

    fn cfg() -> Arc<Config> {
        Arc::new(config::parse("<t>", config::EMBEDDED_DEFAULT).unwrap())
    }

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            unix_secs: 1_760_000_000 + ms / 1000,
        }
    }

    fn pair(keepalive_secs: u64) -> (Link, Link) {
        let c = cfg();
        let summary: Arc<[String]> = pools_summary(&c).into();
        let p = |role| LinkParams::new(role, "r", 60, keepalive_secs, 64, &c);
        let a = Link::new(
            p(Role::Primary),
            summary.clone(),
            c.clone(),
            keepalive_secs,
            0,
            at(0),
        );
        let b = Link::new(p(Role::Secondary), summary, c, keepalive_secs, 0, at(0));
        (a, b)
    }

    /// Moves every byte `from` has to send into `to`, collecting `to`'s events.
    fn carry(from: &mut Link, to: &mut Link, now: Now) -> Vec<LinkEvent> {
        let bytes = std::mem::take(from.take_transmit());
        let mut events = Vec::new();
        let mut taken = 0;
        loop {
            let n = to.on_bytes(now, &bytes[taken..]);
            taken += n;
            while let Some(e) = to.poll_event(now) {
                events.push(e);
            }
            if n == 0 || taken == bytes.len() {
                break;
            }
        }
        events
    }

    #[test]
    fn connect_then_messages_both_ways() {
        let (mut a, mut b) = pair(5);
        let ev = carry(&mut a, &mut b, at(10));
        assert!(matches!(ev.as_slice(), [LinkEvent::Up(_)]), "{ev:?}");
        let ev = carry(&mut b, &mut a, at(20));
        assert!(matches!(ev.as_slice(), [LinkEvent::Up(_)]), "{ev:?}");
        assert!(a.is_up() && b.is_up());
        a.send(at(30), &PeerMsg::UpdReqAll { xid: 3 }).unwrap();
        a.send(at(30), &PeerMsg::Contact).unwrap();
        let ev = carry(&mut a, &mut b, at(40));
        assert_eq!(
            ev,
            vec![
                LinkEvent::Msg(PeerMsg::UpdReqAll { xid: 3 }),
                LinkEvent::Msg(PeerMsg::Contact)
            ]
        );
    }

    #[test]
    fn a_reload_during_the_handshake_is_announced_once_up() {
        let (mut a, mut b) = pair(5);
        // A's CONNECT is out (queued) when A reloads: the handshake still goes by what it
        // said, and the link comes up; then A announces its new pools.
        let text = format!(
            "{}[options]\ndns_servers = [\"2001:db8::98\"]\n",
            config::EMBEDDED_DEFAULT
        );
        let reloaded = Arc::new(config::parse("<t>", &text).unwrap());
        let digest = crate::failover::pools_digest::pools_digest(&reloaded);
        a.set_pools(at(5), digest, pools_summary(&reloaded).into());
        carry(&mut a, &mut b, at(10));
        let ev = carry(&mut b, &mut a, at(20));
        assert!(matches!(ev.as_slice(), [LinkEvent::Up(_)]), "{ev:?}");
        assert!(a.is_up() && b.is_up());
        carry(&mut a, &mut b, at(30));
        assert!(b.pools_differ().is_some(), "B heard of A's reload");
        assert!(a.pools_differ().is_some());
    }

    #[test]
    fn the_links_own_transaction_ids_never_meet_the_sessions() {
        let (mut a, mut b) = pair(5);
        carry(&mut a, &mut b, at(10));
        carry(&mut b, &mut a, at(20));
        a.take_transmit().clear();
        a.send(at(30), &PeerMsg::Contact).unwrap();
        a.send(at(30), &PeerMsg::UpdReq { xid: 3 }).unwrap();
        let bytes = std::mem::take(a.take_transmit());
        let mut f = Framer::new();
        assert_eq!(f.push(&bytes), bytes.len());
        let mut xids = Vec::new();
        while let Some(Ok(frame)) = f.next_frame() {
            xids.push(codec::peek_header(frame, at(30).unix_secs).unwrap().xid);
        }
        assert_eq!(xids.len(), 2);
        assert!(xids[0] > super::super::peer::SESSION_XID_MAX, "{xids:?}");
        assert_eq!(xids[1], 3, "the session's id, as given");
    }

    #[test]
    fn a_live_reload_on_one_side_shows_on_both_until_the_other_follows() {
        let (mut a, mut b) = pair(5);
        carry(&mut a, &mut b, at(10));
        carry(&mut b, &mut a, at(20));
        assert!(a.is_up() && b.is_up());
        assert_eq!((a.pools_differ(), b.pools_differ()), (None, None));
        // A reloads with another DNS server: it tells B at once, the link stays up.
        let text = format!(
            "{}[options]\ndns_servers = [\"2001:db8::99\"]\n",
            config::EMBEDDED_DEFAULT
        );
        let reloaded = Arc::new(config::parse("<t>", &text).unwrap());
        let digest = crate::failover::pools_digest::pools_digest(&reloaded);
        let summary: Arc<[String]> = pools_summary(&reloaded).into();
        a.set_pools(at(30), digest, summary.clone());
        let ev = carry(&mut a, &mut b, at(40));
        assert_eq!(ev, vec![LinkEvent::Msg(PeerMsg::Contact)]);
        let on_b = b.pools_differ().expect("B sees the difference");
        assert!(
            on_b.contains("only here: none; only on the partner: [subnet 1 options: 23 #"),
            "{on_b}"
        );
        // A knows it too (B's pools are still those of CONNECT), and says the other way.
        let on_a = a.pools_differ().expect("A sees the difference");
        assert!(
            on_a.starts_with("only here: [subnet 1 options: 23 #"),
            "{on_a}"
        );
        assert!(a.is_up() && b.is_up());
        // B follows: both match again.
        b.set_pools(at(50), digest, summary);
        carry(&mut b, &mut a, at(60));
        assert_eq!((a.pools_differ(), b.pools_differ()), (None, None));
        // Setting what is already in force sends nothing.
        a.set_pools(at(70), digest, pools_summary(&reloaded).into());
        assert!(a.take_transmit().is_empty());
    }

    #[test]
    fn a_refused_connect_closes_both_sides_as_refused() {
        let c = cfg();
        let summary: Arc<[String]> = pools_summary(&c).into();
        let mut a = Link::new(
            LinkParams::new(Role::Primary, "r", 60, 5, 64, &c),
            summary.clone(),
            c.clone(),
            5,
            0,
            at(0),
        );
        // Another MCLT: a configuration conflict.
        let mut b = Link::new(
            LinkParams::new(Role::Secondary, "r", 61, 5, 64, &c),
            summary,
            c,
            5,
            0,
            at(0),
        );
        let ev = carry(&mut a, &mut b, at(1));
        assert!(
            matches!(&ev[..], [LinkEvent::Closed { refused: true, was_up: false, reason }] if reason.contains("MCLT")),
            "{ev:?}"
        );
        let ev = carry(&mut b, &mut a, at(2));
        assert!(
            matches!(&ev[..], [LinkEvent::Closed { refused: true, .. }]),
            "{ev:?}"
        );
    }

    #[test]
    fn contact_when_quiet_and_close_when_the_partner_is_silent() {
        let (mut a, mut b) = pair(4);
        carry(&mut a, &mut b, at(0));
        carry(&mut b, &mut a, at(0));
        // A quarter of 4 s without sending: CONTACT.
        assert_eq!(a.poll_timeout(), Some(1000));
        a.on_timeout(at(999));
        assert!(a.take_transmit().is_empty());
        a.on_timeout(at(1000));
        let ev = carry(&mut a, &mut b, at(1000));
        assert_eq!(ev, vec![LinkEvent::Msg(PeerMsg::Contact)]);
        // b heard a at 1000 ms; nothing after that for more than 4 s closes it.
        b.on_timeout(at(5000));
        assert!(b.poll_event(at(5000)).is_none());
        b.on_timeout(at(5001));
        let ev = b.poll_event(at(5001));
        assert!(
            matches!(&ev, Some(LinkEvent::Closed { was_up: true, refused: false, reason }) if reason.contains("keepalive_secs = 4")),
            "{ev:?}"
        );
        assert!(b.poll_timeout().is_none());
    }

    #[test]
    fn a_link_closed_by_us_tells_the_partner_why() {
        // Our own decision (a store failure, a shutdown): DISCONNECT with the reason.
        for (shutting_down, code) in [(false, "UnspecFail"), (true, "ServerShuttingDown")] {
            let (mut a, mut b) = pair(5);
            carry(&mut a, &mut b, at(0));
            carry(&mut b, &mut a, at(0));
            a.close(at(10), "store failure", shutting_down);
            assert!(matches!(
                a.poll_event(at(10)),
                Some(LinkEvent::Closed { reason, .. }) if reason == "store failure"
            ));
            let ev = carry(&mut a, &mut b, at(20));
            assert!(
                matches!(ev.as_slice(), [LinkEvent::Closed { reason, was_up: true, refused: false }]
                    if *reason == format!("the partner sent DISCONNECT: store failure ({code})")),
                "{ev:?}"
            );
        }
        // A keepalive timeout says so too; a long reason is cut, never split in a character.
        let (mut a, mut b) = pair(4);
        carry(&mut a, &mut b, at(0));
        carry(&mut b, &mut a, at(0));
        b.on_timeout(at(4001));
        let ev = carry(&mut b, &mut a, at(4002));
        assert!(
            matches!(ev.as_slice(), [LinkEvent::Closed { reason, .. }] if reason.contains("nothing from the partner for 4.0 s")),
            "{ev:?}"
        );
        let long = "é".repeat(150);
        assert_eq!(disconnect_text(&long).len(), 200);
        assert_eq!(disconnect_text("short"), "short");
        // Before the link is up nothing is sent (CONNECTREPLY carries a refusal's reason).
        let (mut a, _b) = pair(5);
        a.take_transmit().clear();
        a.close(at(1), "replaced by a newer connection", false);
        assert!(a.take_transmit().is_empty());
    }

    /// `at(ms)` with the wall clock `secs` off.
    fn off(ms: u64, secs: i64) -> Now {
        let n = at(ms);
        Now {
            unix_secs: (n.unix_secs as i64 + secs) as u64,
            ..n
        }
    }

    #[test]
    fn a_partner_clock_that_drifts_off_after_connect_drops_the_link_and_late_messages_do_not() {
        let up = || {
            let (mut a, mut b) = pair(60);
            carry(&mut a, &mut b, at(0));
            carry(&mut b, &mut a, at(0));
            (a, b)
        };
        // Ahead by 6 s (limit 5): one message is enough.
        let (mut a, mut b) = up();
        a.send(off(1000, 6), &PeerMsg::Contact).unwrap();
        let ev = carry(&mut a, &mut b, at(1000));
        assert!(
            matches!(ev.as_slice(), [LinkEvent::Closed { reason, .. }] if reason.contains("6 s ahead of ours")),
            "{ev:?}"
        );
        assert!(!b.take_transmit().is_empty(), "b says why (DISCONNECT)");
        // Behind by 8 s: judged once a window has passed with no message closer than that.
        let (mut a, mut b) = up();
        let mut closed = None;
        for s in 1..=40u64 {
            a.send(off(s * 1000, -8), &PeerMsg::Contact).unwrap();
            let ev = carry(&mut a, &mut b, at(s * 1000));
            if let [LinkEvent::Closed { reason, .. }] = ev.as_slice() {
                closed = Some((s, reason.clone()));
                break;
            }
            assert_eq!(ev, vec![LinkEvent::Msg(PeerMsg::Contact)]);
        }
        let (s, reason) = closed.expect("a clock 8 s behind was never noticed");
        assert_eq!(s, 30, "judged at the end of the first window");
        assert!(reason.contains("8 s behind ours"), "{reason}");
        // Late, not skewed: messages that waited 20 s (we were frozen) beside timely ones.
        let (mut a, mut b) = up();
        for s in 1..=70u64 {
            let sent = if s % 10 == 0 {
                at(s * 1000)
            } else {
                off(s * 1000, -20)
            };
            a.send(sent, &PeerMsg::Contact).unwrap();
            let ev = carry(&mut a, &mut b, at(s * 1000));
            assert_eq!(ev, vec![LinkEvent::Msg(PeerMsg::Contact)], "at {s} s");
        }
        // Within the limit both ways: nothing happens.
        let (mut a, mut b) = up();
        for s in 1..=70u64 {
            let skew = if s % 2 == 0 { 5 } else { -5 };
            a.send(off(s * 1000, skew), &PeerMsg::Contact).unwrap();
            let ev = carry(&mut a, &mut b, at(s * 1000));
            assert_eq!(ev, vec![LinkEvent::Msg(PeerMsg::Contact)], "at {s} s");
        }
    }

    #[test]
    fn a_handshake_that_never_ends_times_out() {
        let (mut a, _b) = pair(5);
        a.on_timeout(at(HANDSHAKE_TIMEOUT_MS));
        assert!(a.poll_event(at(HANDSHAKE_TIMEOUT_MS)).is_none());
        a.on_timeout(at(HANDSHAKE_TIMEOUT_MS + 1));
        assert!(matches!(
            a.poll_event(at(HANDSHAKE_TIMEOUT_MS + 1)),
            Some(LinkEvent::Closed { was_up: false, .. })
        ));
    }

    #[test]
    fn eof_is_reported_after_what_came_before_it() {
        let (mut a, mut b) = pair(5);
        carry(&mut a, &mut b, at(0));
        carry(&mut b, &mut a, at(0));
        b.send(at(1), &PeerMsg::UpdDone { xid: 9 }).unwrap();
        let bytes = std::mem::take(b.take_transmit());
        a.on_bytes(at(2), &bytes);
        a.on_eof();
        assert_eq!(
            a.poll_event(at(2)),
            Some(LinkEvent::Msg(PeerMsg::UpdDone { xid: 9 }))
        );
        assert!(matches!(
            a.poll_event(at(2)),
            Some(LinkEvent::Closed { was_up: true, .. })
        ));
        assert_eq!(a.poll_event(at(2)), None);
    }

    #[test]
    fn garbage_closes_the_link_and_never_panics() {
        let (mut a, mut b) = pair(5);
        carry(&mut a, &mut b, at(0));
        carry(&mut b, &mut a, at(0));
        // A frame too short to hold a failover header.
        b.on_bytes(at(1), &[0x00, 0x01, 0xaa]);
        assert!(matches!(
            b.poll_event(at(1)),
            Some(LinkEvent::Closed { reason, .. }) if reason.contains("framing")
        ));
        assert!(b.is_closed());
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_when_up() {
        let mut b = Backoff::new(100, 1000);
        assert!(b.due(0));
        b.failed(0);
        assert!(!b.due(99) && b.due(100));
        b.failed(100);
        assert!(b.due(300));
        b.failed(300);
        b.failed(700);
        b.failed(1500);
        assert!(!b.due(2499) && b.due(2500), "capped at 1000");
        b.up();
        b.failed(3000);
        assert!(b.due(3100));
        b.refused();
        b.failed(4000);
        assert!(!b.due(4999) && b.due(5000));
    }
}
