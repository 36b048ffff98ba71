//! The partner connection: one simulated TCP connection between the servers' real
//! [`Link`]s. Bytes arrive in order after a little latency; a partition holds them back (TCP
//! retransmits) and delivers them when the network returns, if the connection is still
//! there; a link that gives up (keepalive) or a crashed server ends the connection, and the
//! other end hears of it when the network lets it (FIN / reset), or by its own keepalive.

use crate::SimFailure;
use crate::world::{Ev, World};
use std::sync::Arc;
use tandem_core::failover::connect::LinkParams;
use tandem_core::failover::link::{Link, LinkEvent, Now};
use tandem_core::failover::node::NodeOut;
use tandem_core::failover::peer::PeerMsg;
use tandem_core::failover::pools_digest::pools_summary;

/// One-way latency of the partner connection, ms.
const LINK_LATENCY_MS: u64 = 2;

impl World {
    fn link_now(&self, n: usize) -> Now {
        Now {
            mono_ms: self.now_ms,
            unix_secs: self.node_now(n),
        }
    }

    /// Whether bytes from `n` are held back by a partition.
    fn cut_from(&self, n: usize) -> bool {
        match self.partition {
            Some(None) => true,
            Some(Some(from)) => from == n,
            None => false,
        }
    }

    /// The primary tries to connect (after its backoff) when both servers run, neither holds
    /// a link and the network carries bytes.
    pub(crate) fn try_connect(&mut self) {
        if self.conn.is_none()
            && self.partition.is_none()
            && self
                .slots
                .iter()
                .all(|s| s.node.is_some() && s.link.is_none())
        {
            let c = self.next_conn;
            self.next_conn += 1;
            let at = self.now_ms + 500 + self.rng.below(2000);
            self.push(at, Ev::Connect(c));
        }
    }

    /// TCP and TLS are up: both servers start a link on connection `c`.
    pub(crate) fn connect(&mut self, c: u64) -> Result<(), SimFailure> {
        if self.conn.is_some()
            || self.partition.is_some()
            || self
                .slots
                .iter()
                .any(|s| s.node.is_none() || s.link.is_some())
            || c + 1 != self.next_conn
        {
            return Ok(());
        }
        self.conn = Some(c);
        self.held = [Vec::new(), Vec::new()];
        self.note(format!("connection {c} open; CONNECT next"));
        // A link that just came back often flaps again at once: sometimes within
        // milliseconds, right inside the handshake, the STATE exchange, recovery or conflict
        // resolution.
        if !self.healing && self.rng.permille(300) {
            let at = self.now_ms + 1 + self.rng.below(12);
            let len = 200 + self.rng.below(6_000);
            let one_way = self.draw_one_way();
            self.schedule_partition(at, len, one_way);
        }
        let summary: Arc<[String]> = pools_summary(&self.config).into();
        // The secondary first, so it is ready for the primary's CONNECT.
        for n in [1, 0] {
            let role = self.slots[n].role;
            let mut params = LinkParams::new(
                role,
                "sim",
                self.cfg.mclt_secs,
                self.cfg.keepalive_secs,
                64,
                &self.config,
            );
            params.skew_max_secs = self.cfg.modes.skew_max_secs;
            let now = self.link_now(n);
            let link = Link::new(
                params,
                summary.clone(),
                self.config.clone(),
                self.cfg.keepalive_secs,
                now.mono_ms,
                now,
            );
            self.slots[n].link = Some((c, link));
            self.link_flush(n);
        }
        Ok(())
    }

    /// Sends a node's messages on its link (dropped when there is none: the lazy-update
    /// session resends what the partner never acknowledged).
    pub(crate) fn send_to_partner(&mut self, n: usize, msgs: &[PeerMsg]) {
        if msgs.is_empty() {
            return;
        }
        let now = self.link_now(n);
        if let Some((_, l)) = self.slots[n].link.as_mut() {
            for m in msgs {
                let _ = l.send(now, m);
            }
        }
        if self.cfg.trace_all {
            for m in msgs {
                self.note(format!("node {n} -> {}: {}", 1 - n, brief(m)));
            }
        }
        self.link_flush(n);
    }

    /// Moves what `n`'s link has to send onto the connection, and keeps its timer queued.
    fn link_flush(&mut self, n: usize) {
        let Some((c, l)) = self.slots[n].link.as_mut() else {
            return;
        };
        let c = *c;
        let bytes = std::mem::take(l.take_transmit());
        let due = l.poll_timeout();
        if !bytes.is_empty() && self.conn == Some(c) {
            if self.cut_from(n) {
                self.held[n].push(bytes);
            } else {
                self.deliver_bytes(n, c, bytes);
            }
        }
        if let Some(at) = due
            && self.slots[n].link_timer_at.is_none_or(|t| at < t)
        {
            self.slots[n].link_timer_at = Some(at);
            self.push(at.max(self.now_ms), Ev::LinkTimer { node: n, conn: c });
        }
    }

    /// Bytes from `from` on connection `c` reach the other server after the latency.
    fn deliver_bytes(&mut self, from: usize, c: u64, bytes: Vec<u8>) {
        self.push(
            self.now_ms + LINK_LATENCY_MS,
            Ev::LinkBytes {
                to: 1 - from,
                conn: c,
                bytes,
            },
        );
    }

    pub(crate) fn link_bytes(
        &mut self,
        to: usize,
        conn: u64,
        bytes: &[u8],
    ) -> Result<(), SimFailure> {
        let now = self.link_now(to);
        let mut taken = 0;
        loop {
            let Some((c, l)) = self.slots[to].link.as_mut() else {
                return Ok(());
            };
            if *c != conn {
                return Ok(());
            }
            let n = l.on_bytes(now, &bytes[taken..]);
            taken += n;
            self.link_events(to)?;
            if n == 0 || taken >= bytes.len() {
                break;
            }
        }
        self.link_flush(to);
        Ok(())
    }

    pub(crate) fn link_eof(&mut self, to: usize, conn: u64) -> Result<(), SimFailure> {
        if let Some((c, l)) = self.slots[to].link.as_mut()
            && *c == conn
        {
            l.on_eof();
            self.link_events(to)?;
            self.link_flush(to);
        }
        Ok(())
    }

    pub(crate) fn link_timer(&mut self, n: usize, conn: u64) -> Result<(), SimFailure> {
        let now = self.link_now(n);
        match self.slots[n].link.as_mut() {
            Some((c, l)) if *c == conn => {
                self.slots[n].link_timer_at = None;
                l.on_timeout(now);
            }
            _ => return Ok(()),
        }
        self.link_events(n)?;
        self.link_flush(n);
        Ok(())
    }

    /// Hands every event of `n`'s link to its node.
    fn link_events(&mut self, n: usize) -> Result<(), SimFailure> {
        loop {
            let now = self.link_now(n);
            let Some(ev) = self.slots[n]
                .link
                .as_mut()
                .and_then(|(_, l)| l.poll_event(now))
            else {
                return Ok(());
            };
            let unix = now.unix_secs;
            let mut out = NodeOut::default();
            match ev {
                LinkEvent::Up(a) => {
                    self.note(format!("node {n}: link up"));
                    if let Some(node) = self.slots[n].node.as_mut() {
                        node.set_partner_window(a.partner_max_unacked.max(1) as usize);
                        node.set_partner_skew(a.skew_secs);
                        node.link_up(unix, &mut out);
                    }
                }
                LinkEvent::Msg(m) => {
                    // Talking is hearing the partner's STATE, not the link coming up: a
                    // server declared down that loses the link between CONNECT and STATE has
                    // not learned it was declared down (seed 2019846).
                    if matches!(m, PeerMsg::State { .. }) {
                        self.linked_since_start[n] = true;
                        self.declared_down[n] = false;
                    }
                    if self.cfg.trace_all {
                        self.note(format!("node {n} <- {}: {}", 1 - n, brief(&m)));
                    }
                    // BUGGIFY: the partner thread cannot store the binding it was sent. As the
                    // real one does, it drops the link without acknowledging anything (the
                    // binding stays in its memory, not on its disk); the sender resends.
                    let store_fails = matches!(m, PeerMsg::BndUpd { .. })
                        && self.buggy()
                        && self
                            .rng
                            .permille(self.cfg.buggify.partner_store_fail_permille);
                    if let Some(node) = self.slots[n].node.as_mut() {
                        node.on_peer(unix, m, &mut out);
                    }
                    if store_fails {
                        self.note(format!(
                            "node {n}: storing a partner binding failed (buggify)"
                        ));
                        out.store.clear();
                        out.persist = None;
                        out.pd_shares = None;
                        out.to_peer.clear();
                        if let Some((_, l)) = self.slots[n].link.as_mut() {
                            l.close(now, "store failure (buggify)", false);
                        }
                    }
                }
                LinkEvent::Skipped(why) => self.note(format!("node {n}: skipped {why}")),
                LinkEvent::Closed { reason, was_up, .. } => {
                    self.note(format!("node {n}: link closed: {reason}"));
                    self.drop_link(n, false);
                    if was_up && let Some(node) = self.slots[n].node.as_mut() {
                        node.link_down(unix, &mut out);
                    }
                    self.apply(n, &mut out)?;
                    self.try_connect();
                    return Ok(());
                }
            }
            self.apply(n, &mut out)?;
        }
    }

    /// `n` is done with its connection (its link closed, or it crashed): the connection ends,
    /// what a partition held is lost, and the other end hears of it if the network lets it.
    pub(crate) fn drop_link(&mut self, n: usize, crashed: bool) {
        let Some((c, _)) = self.slots[n].link.take() else {
            return;
        };
        self.slots[n].link_timer_at = None;
        if self.conn == Some(c) {
            self.conn = None;
            self.held = [Vec::new(), Vec::new()];
            if !self.cut_from(n) {
                let at = self.now_ms + if crashed { 1 } else { LINK_LATENCY_MS };
                self.push(at, Ev::LinkEof { to: 1 - n, conn: c });
            }
        }
    }

    pub(crate) fn partition_start(&mut self, one_way_from: Option<usize>) {
        // A server declared down must reach its partner before anything else happens to it
        // (RFC 8156: it must not operate while its partner is in PARTNER-DOWN). The restart
        // already waits for a reachable partner; a partition in the moments after it would
        // undo that (seed 119697).
        let declared_down_running =
            (0..2).any(|n| self.declared_down[n] && self.slots[n].node.is_some());
        if self.healing || self.partition.is_some() || declared_down_running {
            return;
        }
        self.partition = Some(one_way_from);
        self.report.partitions += 1;
        self.note(format!(
            "partition {}",
            one_way_from.map_or("both ways".into(), |f| format!("from node {f}"))
        ));
    }

    pub(crate) fn partition_end(&mut self) {
        if self.partition.take().is_some() {
            self.note("partition healed".into());
        }
        // What TCP held back arrives now, in order, if the connection survived.
        if let Some(c) = self.conn {
            for n in 0..2 {
                for bytes in std::mem::take(&mut self.held[n]) {
                    self.deliver_bytes(n, c, bytes);
                }
            }
        }
        self.try_connect();
    }
}

/// One line about a partner message, for traces.
pub(crate) fn brief(m: &PeerMsg) -> String {
    match m {
        PeerMsg::BndUpd {
            xid,
            lease,
            partner_lifetime,
        } => format!(
            "BNDUPD {xid} {} {} client {:02x?} expires {} partner-lifetime {partner_lifetime} ack {}",
            lease.addr,
            lease.state,
            &lease.duid[lease.duid.len().saturating_sub(2)..],
            lease.expires_at,
            lease.partner_ack_until
        ),
        PeerMsg::BndReply {
            xid,
            accepted,
            partner_lifetime_sent,
        } => format!("BNDREPLY {xid} accepted={accepted} sent={partner_lifetime_sent}"),
        other => format!("{other:?}"),
    }
}
