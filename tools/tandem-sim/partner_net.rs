//! The partner connections: per relationship, one simulated TCP connection between its two
//! endpoints' real [`Link`]s. Bytes arrive in order after a little latency; a partition holds them back (TCP
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
    fn link_now(&self, e: usize) -> Now {
        Now {
            mono_ms: self.now_ms,
            unix_secs: self.end_now(e),
        }
    }

    /// Whether bytes from endpoint `e` are held back by a partition.
    fn cut_from(&self, e: usize) -> bool {
        match self.rels[World::rel_of(e)].partition {
            Some(None) => true,
            Some(Some(from)) => from == e % 2,
            None => false,
        }
    }

    /// Relationship `rel`'s primary tries to connect (after its backoff) when both its
    /// servers run, neither end holds a link and the network carries bytes.
    pub(crate) fn try_connect(&mut self, rel: usize) {
        let r = &self.rels[rel];
        if r.conn.is_none()
            && r.partition.is_none()
            && (2 * rel..2 * rel + 2).all(|e| self.end_up(e) && self.ends[e].link.is_none())
        {
            let c = r.next_conn;
            self.rels[rel].next_conn += 1;
            let at = self.now_ms + 500 + self.rng.below(2000);
            self.push(at, Ev::Connect { rel, conn: c });
        }
    }

    /// TCP and TLS are up: both ends of relationship `rel` start a link on connection `c`.
    pub(crate) fn connect(&mut self, rel: usize, c: u64) -> Result<(), SimFailure> {
        let r = &self.rels[rel];
        if r.conn.is_some()
            || r.partition.is_some()
            || (2 * rel..2 * rel + 2).any(|e| !self.end_up(e) || self.ends[e].link.is_some())
            || c + 1 != r.next_conn
        {
            return Ok(());
        }
        let r = &mut self.rels[rel];
        r.conn = Some(c);
        r.held = [Vec::new(), Vec::new()];
        let name = r.name.clone();
        if self.rels.len() == 1 {
            self.note(format!("connection {c} open; CONNECT next"));
        } else {
            self.note(format!("{name}: connection {c} open; CONNECT next"));
        }
        // A link that just came back often flaps again at once: sometimes within
        // milliseconds, right inside the handshake, the STATE exchange, recovery or conflict
        // resolution.
        if !self.healing && self.rng.permille(300) {
            let at = self.now_ms + 1 + self.rng.below(12);
            let len = 200 + self.rng.below(6_000);
            let one_way = self.draw_one_way();
            self.schedule_partition(rel, at, len, one_way);
        }
        // The secondary first, so it is ready for the primary's CONNECT.
        for e in [2 * rel + 1, 2 * rel] {
            let end = &self.ends[e];
            let st = end.settings;
            let mut params = LinkParams::new(
                end.role,
                name.clone(),
                st.endpoint.mclt_secs,
                st.keepalive_secs,
                st.max_unacked,
                &end.view,
            );
            params.skew_max_secs = st.endpoint.skew_max_secs;
            let summary: Arc<[String]> = pools_summary(&end.view).into();
            let now = self.link_now(e);
            let link = Link::new(
                params,
                summary,
                end.view.clone(),
                st.keepalive_secs,
                now.mono_ms,
                now,
            );
            self.ends[e].link = Some((c, link));
            self.link_flush(e);
        }
        Ok(())
    }

    /// Sends endpoint `e`'s messages on its link (dropped when there is none: the lazy-update
    /// session resends what the partner never acknowledged).
    pub(crate) fn send_to_partner(&mut self, e: usize, msgs: &[PeerMsg]) {
        if msgs.is_empty() {
            return;
        }
        let now = self.link_now(e);
        if let Some((_, l)) = self.ends[e].link.as_mut() {
            for m in msgs {
                let _ = l.send(now, m);
            }
        }
        if self.cfg.trace_all {
            for m in msgs {
                self.note(format!(
                    "{} -> {}: {}",
                    self.end_name(e),
                    self.ends[e ^ 1].server,
                    brief(m)
                ));
            }
        }
        self.link_flush(e);
    }

    /// Moves what `e`'s link has to send onto the connection, and keeps its timer queued.
    fn link_flush(&mut self, e: usize) {
        let Some((c, l)) = self.ends[e].link.as_mut() else {
            return;
        };
        let c = *c;
        let bytes = std::mem::take(l.take_transmit());
        let due = l.poll_timeout();
        let rel = World::rel_of(e);
        if !bytes.is_empty() && self.rels[rel].conn == Some(c) {
            if self.cut_from(e) {
                self.rels[rel].held[e % 2].push(bytes);
            } else {
                self.deliver_bytes(e, c, bytes);
            }
        }
        if let Some(at) = due
            && self.ends[e].link_timer_at.is_none_or(|t| at < t)
        {
            self.ends[e].link_timer_at = Some(at);
            self.push(at.max(self.now_ms), Ev::LinkTimer { node: e, conn: c });
        }
    }

    /// Bytes from endpoint `from` on connection `c` reach its partner after the latency.
    fn deliver_bytes(&mut self, from: usize, c: u64, bytes: Vec<u8>) {
        self.push(
            self.now_ms + LINK_LATENCY_MS,
            Ev::LinkBytes {
                to: from ^ 1,
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
            let Some((c, l)) = self.ends[to].link.as_mut() else {
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
        if let Some((c, l)) = self.ends[to].link.as_mut()
            && *c == conn
        {
            l.on_eof();
            self.link_events(to)?;
            self.link_flush(to);
        }
        Ok(())
    }

    pub(crate) fn link_timer(&mut self, e: usize, conn: u64) -> Result<(), SimFailure> {
        let now = self.link_now(e);
        let end = &mut self.ends[e];
        match end.link.as_mut() {
            Some((c, l)) if *c == conn => {
                end.link_timer_at = None;
                l.on_timeout(now);
            }
            _ => return Ok(()),
        }
        self.link_events(e)?;
        self.link_flush(e);
        Ok(())
    }

    /// Hands every event of endpoint `e`'s link to its node.
    fn link_events(&mut self, e: usize) -> Result<(), SimFailure> {
        loop {
            let now = self.link_now(e);
            let Some(ev) = self.ends[e]
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
                    self.note(format!("{}: link up", self.end_name(e)));
                    if let Some(node) = self.ends[e].node.as_mut() {
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
                        self.linked_since_start[e] = true;
                        self.declared_down[e] = false;
                    }
                    if self.cfg.trace_all {
                        self.note(format!(
                            "{} <- {}: {}",
                            self.end_name(e),
                            self.ends[e ^ 1].server,
                            brief(&m)
                        ));
                    }
                    // BUGGIFY: the partner thread cannot store the binding it was sent. As the
                    // real one does, it drops the link without acknowledging anything (the
                    // binding stays in its memory, not on its disk); the sender resends.
                    let store_fails = matches!(m, PeerMsg::BndUpd { .. })
                        && self.buggy()
                        && self
                            .rng
                            .permille(self.cfg.buggify.partner_store_fail_permille);
                    if let Some(node) = self.ends[e].node.as_mut() {
                        node.on_peer(unix, m, &mut out);
                    }
                    if store_fails {
                        self.note(format!(
                            "{}: storing a partner binding failed (buggify)",
                            self.end_name(e)
                        ));
                        out.store.clear();
                        out.persist = None;
                        out.pd_shares = None;
                        out.to_peer.clear();
                        if let Some((_, l)) = self.ends[e].link.as_mut() {
                            l.close(now, "store failure (buggify)", false);
                        }
                    }
                }
                LinkEvent::Skipped(why) => {
                    self.note(format!("{}: skipped {why}", self.end_name(e)))
                }
                LinkEvent::Closed { reason, was_up, .. } => {
                    self.note(format!("{}: link closed: {reason}", self.end_name(e)));
                    self.drop_link(e, false);
                    if was_up && let Some(node) = self.ends[e].node.as_mut() {
                        node.link_down(unix, &mut out);
                    }
                    self.apply(e, &mut out)?;
                    self.try_connect(World::rel_of(e));
                    return Ok(());
                }
            }
            self.apply(e, &mut out)?;
        }
    }

    /// Endpoint `e` is done with its connection (its link closed, or its server crashed): the
    /// connection ends, what a partition held is lost, and the other end hears of it if the
    /// network lets it.
    pub(crate) fn drop_link(&mut self, e: usize, crashed: bool) {
        let Some((c, _)) = self.ends[e].link.take() else {
            return;
        };
        self.ends[e].link_timer_at = None;
        let rel = World::rel_of(e);
        if self.rels[rel].conn == Some(c) {
            self.rels[rel].conn = None;
            self.rels[rel].held = [Vec::new(), Vec::new()];
            if !self.cut_from(e) {
                let at = self.now_ms + if crashed { 1 } else { LINK_LATENCY_MS };
                self.push(at, Ev::LinkEof { to: e ^ 1, conn: c });
            }
        }
    }

    /// Whether an endpoint of `rel` was declared down and its server runs: it must reach its
    /// partner before anything else happens to it (RFC 8156: it must not operate while its
    /// partner is in PARTNER-DOWN).
    pub(crate) fn declared_down_running(&self, rel: usize) -> bool {
        (2 * rel..2 * rel + 2).any(|e| self.declared_down[e] && self.end_up(e))
    }

    pub(crate) fn partition_start(&mut self, rel: usize, one_way_from: Option<usize>) {
        // The restart already waits for a reachable partner; a partition in the moments after
        // it would undo that (seed 119697).
        if self.healing || self.rels[rel].partition.is_some() || self.declared_down_running(rel) {
            return;
        }
        self.rels[rel].partition = Some(one_way_from);
        self.report.partitions += 1;
        let what = one_way_from.map_or("both ways".into(), |f| {
            format!("from node {}", self.ends[2 * rel + f].server)
        });
        if self.rels.len() == 1 {
            self.note(format!("partition {what}"));
        } else {
            self.note(format!("partition of {} {what}", self.rels[rel].name));
        }
    }

    pub(crate) fn partition_end(&mut self, rel: usize) {
        if self.rels[rel].partition.take().is_some() {
            if self.rels.len() == 1 {
                self.note("partition healed".into());
            } else {
                self.note(format!("partition of {} healed", self.rels[rel].name));
            }
        }
        // What TCP held back arrives now, in order, if the connection survived.
        if let Some(c) = self.rels[rel].conn {
            for side in 0..2 {
                for bytes in std::mem::take(&mut self.rels[rel].held[side]) {
                    self.deliver_bytes(2 * rel + side, c, bytes);
                }
            }
        }
        self.try_connect(rel);
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
