//! The partner thread's loop: changes the workers made durable go to the node; the node's
//! output is stored, then sent on the link; the link's events go back to the node.

use super::conn::{Conn, Phase};
use super::*;
use tandem_core::engine::Answering;

/// Our failover state, the partner's last announced one, and whether the link is up.
pub(super) type GaugeStates = (ServerState, Option<ServerState>, bool);

pub(super) struct PartnerThread {
    /// The relationship's index in the configuration (its slot in the [`PolicyCell`]).
    pub(super) index: usize,
    /// The configuration as this relationship sees it (its subnets only).
    pub(super) cfg: Arc<Config>,
    /// The whole configuration `cfg` was made from (a reload replaces it).
    pub(super) whole: Arc<Config>,
    /// The subnets this relationship covers in the shared lease table.
    pub(super) scope: tandem_core::pool::Scope,
    /// The store's meta keys of this relationship's endpoint state and prefix shares.
    pub(super) state_key: Vec<u8>,
    pub(super) shares_key: Vec<u8>,
    pub(super) fo: FailoverConfig,
    pub(super) tls: TlsMaterial,
    pub(super) tls_client: Arc<rustls::ClientConfig>,
    pub(super) tls_server: Arc<rustls::ServerConfig>,
    pub(super) params: LinkParams,
    pub(super) summary: Arc<[String]>,
    pub(super) poll: Poll,
    pub(super) listener: Option<TcpListener>,
    /// The control socket, served by the first relationship's thread only.
    pub(super) control: Option<UnixListener>,
    pub(super) control_path: Option<std::path::PathBuf>,
    /// The first relationship's thread: how it reaches the others for the control socket.
    pub(super) others: Vec<OtherRelationship>,
    /// Questions from the control socket's thread (the other relationships' threads).
    pub(super) asks: Receiver<ControlAsk>,
    /// Where changes made by control commands go (to the relationship covering them).
    pub(super) notifier: Option<PartnerNotifier>,
    pub(super) node: Node,
    pub(super) store: Arc<Store>,
    pub(super) alloc: Arc<Allocator>,
    pub(super) policy: Arc<PolicyCell>,
    pub(super) commits: Sender<CommitJob<PendingReply>>,
    pub(super) committed: Receiver<Vec<Lease>>,
    pub(super) stop: Arc<AtomicBool>,
    /// The link (or the primary's attempt at one).
    pub(super) conn: Option<Conn>,
    /// Secondary: a newer connection in handshake while `conn` may still be up.
    pub(super) pending: Option<Conn>,
    pub(super) next_token: usize,
    /// The primary's reconnection schedule.
    pub(super) backoff: Backoff,
    /// Origin of the monotonic milliseconds the links read.
    pub(super) origin: Instant,
    pub(super) out: NodeOut,
    /// Messages for the partner, sent on the link once `out` is durable.
    pub(super) outbox: Vec<PeerMsg>,
    pub(super) last_reclaim: Instant,
    pub(super) link_since: Option<Instant>,
    pub(super) last_contact: Option<Instant>,
    pub(super) store_failed: bool,
    /// The workers were told to answer nobody after a store failure; the node's policy
    /// reaches them again only once a later change is stored.
    pub(super) policy_held: bool,
    /// The states the gauges last published (see [`PartnerThread::gauge_states`]).
    pub(super) published: GaugeStates,
    /// The node's unsendable count when last logged.
    pub(super) unsendable_logged: u64,
    pub(super) last_down_log: Option<Instant>,
    pub(super) last_down_reason: String,
    pub(super) started: Instant,
    /// A listener may still have connections waiting (see `run`).
    pub(super) accept_more: bool,
    pub(super) control_more: bool,
    pub(super) sent_updates: u64,
    pub(super) received_updates: u64,
    pub(super) hub: Arc<crate::edge::metrics::MetricsHub>,
    pub(super) reloader: Arc<crate::edge::reload::Reloader>,
    pub(super) audit: Option<Arc<crate::edge::audit::AuditLog>>,
}

impl PartnerThread {
    pub(super) fn run(&mut self) {
        // With several relationships, every line this thread logs says which one.
        let _span = (self.whole.relationships.len() > 1).then(|| {
            tracing::info_span!("failover", relationship = %self.fo.relationship).entered()
        });
        let mut events = Events::with_capacity(64);
        let mut last_tick = Instant::now();
        let mut plain = Vec::with_capacity(64 * 1024);
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = TICK.saturating_sub(last_tick.elapsed());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!(error = %e, "partner thread: poll failed");
                std::thread::sleep(TICK);
            }
            let mut control_ready = false;
            let mut accept_ready = false;
            for ev in events.iter() {
                match ev.token() {
                    CONTROL => control_ready = true,
                    LISTENER => accept_ready = true,
                    _ => {}
                }
            }
            // Edge-triggered: a listener left with connections waiting (the per-turn bound)
            // gets no new event, so it is tried again every turn until it would block.
            if accept_ready || self.accept_more {
                self.accept();
            }
            if control_ready || self.control_more {
                self.serve_control();
            }
            for _ in 0..ACCEPTS_PER_TURN_MAX {
                let Ok(a) = self.asks.try_recv() else { break };
                if a.wanted() {
                    let answer = self.answer_ask(a.what);
                    let _ = a.answer.send(answer);
                }
            }
            let now = now_secs();
            // Changes the workers made durable.
            let mut batches = 0;
            while let Ok(leases) = self.committed.try_recv() {
                self.node.committed(now, leases.iter(), &mut self.out);
                batches += 1;
                if batches >= COMMITTED_QUEUE_MAX {
                    break;
                }
            }
            self.apply();
            self.flush_outbox();
            self.pump(&mut plain);
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.timers();
                self.publish_gauges();
            } else {
                self.publish_if_states_changed();
            }
        }
        if let Some(c) = self.conn.as_mut() {
            c.close_as("the server is shutting down", true);
            c.tls.send_close_notify();
            // The connection is closed for us, so flush by hand: one non-blocking attempt.
            let _ = c.tls.write_tls(&mut c.sock);
        }
        if let Some(p) = &self.control_path {
            let _ = std::fs::remove_file(p);
        }
        info!("failover: partner thread stopped");
    }

    /// Copies the relationship's gauges into the metrics hub (every [`TICK`], and at once when
    /// a state or the link changed), and says when lease changes could not be sent to the partner.
    fn publish_gauges(&mut self) {
        if self.node.unsendable() > self.unsendable_logged {
            error!(
                dropped = self.node.unsendable() - self.unsendable_logged,
                total = self.node.unsendable(),
                "failover: lease changes the partner will not hear of: no BNDUPD can carry them (a DUID shorter than 3 bytes, added by hand or imported); see tandem leases"
            );
            self.unsendable_logged = self.node.unsendable();
        }
        self.published = self.gauge_states();
        let e = self.node.endpoint();
        self.hub
            .publish_failover(crate::edge::metrics::FailoverGauges {
                relationship: self.fo.relationship.clone(),
                role: e.role(),
                state: e.state(),
                state_since: e.state_since(),
                partner_state: e.partner_state(),
                link_up: e.link_up(),
                catching_up: self.node.catching_up(),
                last_contact: self.last_contact,
                unacked: self.node.unacked() as u64,
                backlog: self.node.backlog() as u64,
                updates_sent: self.sent_updates,
                updates_received: self.received_updates,
                store_failed: self.store_failed,
                config_differs: self.config_differs().is_some(),
            });
    }

    /// Publishes the gauges now if our state, the partner's or the link changed since they were
    /// last published: a scrape right after `tandem ctl status` showed a new state must not
    /// show the old one.
    fn publish_if_states_changed(&mut self) {
        if self.published != self.gauge_states() {
            self.publish_gauges();
        }
    }

    /// Our state, the partner's and whether the link is up: what the gauges must show at once.
    fn gauge_states(&self) -> GaugeStates {
        let e = self.node.endpoint();
        (e.state(), e.partner_state(), e.link_up())
    }

    /// Makes `out` durable, then sends its messages, then publishes the policy.
    pub(super) fn apply(&mut self) {
        if !self.out.store_lazy.is_empty() {
            // Acknowledgements ride along with the next group commit: no fsync of their own,
            // no wait. If the committer is backed up, store them here instead.
            let job = CommitJob {
                writes: std::mem::take(&mut self.out.store_lazy),
                then: None,
                // The partner sent these acknowledgements: nothing to tell it.
                announce: false,
            };
            if let Err(e) = self.commits.try_send(job) {
                let writes = e.into_inner().writes;
                self.out.store.extend(writes);
            }
        }
        self.forget_ended();
        if self.out.store.is_empty()
            && self.out.persist.is_none()
            && self.out.pd_shares.is_none()
            && self.out.to_peer.is_empty()
            && self.out.changes.is_empty()
            // A policy can change without anything to store (catching up ends on UPDDONE).
            && (self.policy_held || self.policy.get(self.index) == self.node.policy())
        {
            return;
        }
        let mut durable = true;
        if !self.out.store.is_empty()
            && let Err(e) = self.store.commit(self.out.store.iter())
        {
            error!(error = %e, leases = self.out.store.len(), "failover: cannot store partner bindings; dropping the link so the partner resends them");
            durable = false;
        }
        if durable && let Some(a) = &self.audit {
            // Expiries are this thread's to log: it reclaims (with a partner the workers'
            // committer never sees them) and stores the partner's.
            let now = now_secs();
            let lines: Vec<String> = self
                .out
                .store
                .iter()
                .filter(|l| l.state == tandem_core::lease::LeaseState::Expired)
                .map(|l| crate::edge::audit::line(l, None, None, now))
                .collect();
            if !lines.is_empty() {
                a.write(&lines.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
        if let Some(p) = self.out.persist
            && durable
            && let Err(e) = self.store.put_meta(&self.state_key, &persist::encode(&p))
        {
            error!(error = %e, "failover: cannot store the endpoint state");
            durable = false;
        }
        if let Some(shares) = self.out.pd_shares.take()
            && durable
        {
            match self.store.put_meta(
                &self.shares_key,
                &persist::encode_shares(self.fo.role, &shares),
            ) {
                Ok(()) => {
                    for (pool, share) in &shares {
                        debug!(pool = %pool, secondary_share = %share, "failover: prefix share stored");
                    }
                }
                Err(e) => {
                    error!(error = %e, "failover: cannot store the prefix shares");
                    durable = false;
                }
            }
        }
        for (from, to) in self.out.changes.drain(..) {
            info!(from = %from, to = %to, partner = ?self.node.endpoint().partner_state().map(|s| s.to_string()), "failover state change");
        }
        // Before anything is answered about it (`tandem ctl partner-down` answers after this).
        self.publish_if_states_changed();
        if !durable {
            // The new state is not on disk, so the workers must not serve under it; nor under
            // the old one, which the node has left. A server whose store fails answers nobody
            // until a later change is stored (its granting replies would wait on failed
            // commits anyway).
            self.policy.set(
                self.index,
                Policy {
                    answering: Answering::Nobody,
                    ..self.node.policy()
                },
            );
            self.store_failed = true;
            self.policy_held = true;
            if let Some(c) = self.conn.as_mut() {
                c.close("store failure");
            }
            self.out.clear();
            self.outbox.clear();
            return;
        }
        // Only now, with what it depends on durable, does the new policy reach the workers.
        self.policy.set(self.index, self.node.policy());
        self.policy_held = false;
        for m in self.out.to_peer.drain(..) {
            match &m {
                PeerMsg::BndUpd { .. } => self.sent_updates += 1,
                PeerMsg::State { state, .. } => debug!(state = %state, "failover: sending STATE"),
                _ => {}
            }
            self.outbox.push(m);
        }
        self.out.clear();
    }

    /// Deletes the records the node forgot (`server.keep_ended_secs`); a failure is logged
    /// and changes nothing else (they are forgotten again after a restart).
    fn forget_ended(&mut self) {
        if self.out.forget.is_empty() {
            return;
        }
        match self.store.forget(self.out.forget.iter()) {
            Ok(_) => debug!(
                forgotten = self.out.forget.len(),
                "failover: records of leases ended longer than keep_ended_secs deleted (in the store's journal; a record changed since stays)"
            ),
            Err(e) => {
                warn!(error = %e, records = self.out.forget.len(), "cannot delete the records of long-ended leases; they stay in the store")
            }
        }
        self.out.forget.clear();
    }

    /// Sends the outbox on the link in its slot (when it is up), else drops it.
    pub(super) fn flush_outbox(&mut self) {
        let now = self.now();
        match self.conn.as_mut() {
            Some(c) => Self::send_msgs(&mut self.outbox, c, now),
            None => self.outbox.clear(),
        }
    }

    /// Sends `msgs` on `c` if its link is up, else drops them (the lazy-update session
    /// resends what the partner never acknowledged).
    pub(super) fn send_msgs(msgs: &mut Vec<PeerMsg>, c: &mut Conn, now: Now) {
        if let Some(l) = c.link.as_mut().filter(|l| l.is_up()) {
            for m in msgs.iter() {
                if let Err(e) = l.send(now, m) {
                    warn!(error = %e, message = msg_kind(m), "failover: cannot encode a message for the partner; skipped");
                }
            }
        }
        msgs.clear();
        c.transmit();
        c.flush();
    }

    /// The links' clocks: monotonic milliseconds since the thread began, and unix seconds.
    pub(super) fn now(&self) -> Now {
        Now {
            mono_ms: self.origin.elapsed().as_millis() as u64,
            unix_secs: now_secs(),
        }
    }

    pub(super) fn accept(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        self.accept_more = true;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match l.accept() {
                Ok((mut sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let tls = match self.tls.accept(&self.tls_server) {
                        Ok(t) => t,
                        Err(e) => {
                            error!(error = %e, "failover: TLS setup failed");
                            continue;
                        }
                    };
                    if !self.register_conn(&mut sock) {
                        continue;
                    }
                    info!(%peer, "failover: connection from the partner side; checking it");
                    let opened_ms = self.now().mono_ms;
                    let c = Conn::new(sock, tls.into(), peer, Phase::Tls, opened_ms);
                    if let Some(mut old) = self.pending.replace(c) {
                        old.close("replaced by a newer connection");
                        self.drop_conn(old);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    break;
                }
                Err(e) => {
                    // EMFILE and the like: try again next turn rather than spin now.
                    warn!(error = %e, "failover: accept failed");
                    break;
                }
            }
        }
        self.listener = Some(l);
    }

    /// Registers a partner connection with the poll under a new token; false (logged) if it
    /// cannot be.
    fn register_conn(&mut self, sock: &mut TcpStream) -> bool {
        let token = Token(self.next_token);
        self.next_token += 1;
        match self
            .poll
            .registry()
            .register(sock, token, Interest::READABLE | Interest::WRITABLE)
        {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "failover: cannot register a connection");
                false
            }
        }
    }

    pub(super) fn connect(&mut self) {
        let Some(addr) = self.fo.partner else {
            return;
        };
        let tls = match self.tls.connect(&self.tls_client) {
            Ok(t) => t,
            Err(e) => {
                error!(error = %e, "failover: TLS setup failed");
                return;
            }
        };
        match TcpStream::connect(addr) {
            Ok(mut sock) => {
                if !self.register_conn(&mut sock) {
                    return;
                }
                debug!(partner = %addr, "failover: connecting");
                let opened_ms = self.now().mono_ms;
                self.conn = Some(Conn::new(
                    sock,
                    tls.into(),
                    addr,
                    Phase::Connecting,
                    opened_ms,
                ));
            }
            Err(e) => {
                self.note_link_down(&format!("connect to {addr}: {e}"));
                self.schedule_reconnect();
            }
        }
    }

    /// Logs, at most every [`LINK_DOWN_LOG_EVERY`], that there is still no link and why.
    pub(super) fn note_link_down(&mut self, why: &str) {
        let due = self.last_down_reason != why
            || self
                .last_down_log
                .is_none_or(|t| t.elapsed() >= LINK_DOWN_LOG_EVERY);
        if due {
            self.last_down_log = Some(Instant::now());
            self.last_down_reason = why.to_string();
            warn!(state = %self.node.endpoint().state(), reason = why, "failover: no link to the partner");
        } else {
            debug!(reason = why, "failover: no link to the partner");
        }
    }

    pub(super) fn schedule_reconnect(&mut self) {
        let now_ms = self.now().mono_ms;
        self.backoff.failed(now_ms);
    }

    pub(super) fn drop_conn(&mut self, mut c: Conn) {
        c.flush();
        let _ = self.poll.registry().deregister(&mut c.sock);
    }

    /// Reads, handles and writes on every connection; closes the broken ones.
    pub(super) fn pump(&mut self, plain: &mut Vec<u8>) {
        for pending in [true, false] {
            let slot = if pending {
                self.pending.take()
            } else {
                self.conn.take()
            };
            let Some(mut c) = slot else { continue };
            self.drive(&mut c, plain);
            if let Some(why) = c.closed.clone() {
                let was_up = c.up;
                let peer = c.peer;
                self.drop_conn(c);
                if was_up {
                    warn!(%peer, reason = %why, "failover: link to the partner down");
                    self.link_down();
                } else {
                    self.note_link_down(&format!("connection with {peer}: {why}"));
                }
                if self.fo.role == Role::Primary {
                    self.schedule_reconnect();
                }
            } else if pending && !c.up {
                self.pending = Some(c);
            } else {
                // The link, or a newer connection that just replaced it (see `up`).
                self.conn = Some(c);
            }
        }
    }

    pub(super) fn link_down(&mut self) {
        self.link_since = None;
        self.node.link_down(now_secs(), &mut self.out);
        self.apply();
        self.outbox.clear();
    }

    pub(super) fn drive(&mut self, c: &mut Conn, plain: &mut Vec<u8>) {
        if c.phase == Phase::Connecting {
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    c.close(format!("connect: {e}"));
                    return;
                }
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => c.phase = Phase::Tls,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if c.opened.elapsed() > HANDSHAKE_TIMEOUT {
                        c.close("connect timed out");
                    }
                    return;
                }
                Err(e) => {
                    c.close(format!("connect: {e}"));
                    return;
                }
            }
            let _ = c.sock.set_nodelay(true);
        }
        plain.clear();
        c.read(plain);
        if c.phase == Phase::Tls && !c.tls.is_handshaking() && c.closed.is_none() {
            self.tls_done(c);
        }
        if c.link.is_none() && !plain.is_empty() && c.closed.is_none() {
            c.close("data before the TLS handshake ended");
        }
        let now = self.now();
        if c.eof
            && let Some(l) = c.link.as_mut()
        {
            l.on_eof();
        }
        let mut taken = 0;
        let mut events = 0;
        while c.closed.is_none() {
            let Some(l) = c.link.as_mut() else { break };
            let n = l.on_bytes(now, plain.get(taken..).unwrap_or_default());
            taken += n;
            while let Some(ev) = c.link.as_mut().and_then(|l| l.poll_event(now)) {
                self.on_link_event(c, ev, now);
                events += 1;
                if events % FRAMES_PER_TURN_MAX == 0 {
                    self.apply();
                    self.send_outbox(c);
                }
            }
            if n == 0 || taken >= plain.len() {
                break;
            }
        }
        self.apply();
        self.send_outbox(c);
        if let Some(l) = c.link.as_mut() {
            l.on_timeout(now);
        }
        while let Some(ev) = c.link.as_mut().and_then(|l| l.poll_event(now)) {
            self.on_link_event(c, ev, now);
        }
        if c.eof {
            c.close("the partner closed the connection");
        }
        if c.link.is_none() && c.opened.elapsed() > HANDSHAKE_TIMEOUT && c.closed.is_none() {
            c.close(format!(
                "no complete handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ));
        }
        c.transmit();
        c.flush();
    }

    /// Sends the outbox on `c`, the connection being driven, if it is the link.
    pub(super) fn send_outbox(&mut self, c: &mut Conn) {
        let now = self.now();
        Self::send_msgs(&mut self.outbox, c, now);
    }

    /// A live reload replaced the configuration: what this relationship shares of it becomes
    /// what a CONNECT compares, and a link that is up tells the partner (`Link::set_pools`), so
    /// both know whether the two configurations in force still match.
    fn follow_reload(&mut self) {
        let running = self.reloader.running();
        if Arc::ptr_eq(&running, &self.whole) {
            return;
        }
        self.cfg = super::relationship_config(&running, self.index);
        self.whole = running;
        self.params.pools_digest = tandem_core::failover::pools_digest::pools_digest(&self.cfg);
        self.summary = tandem_core::failover::pools_digest::pools_summary(&self.cfg).into();
        let now = self.now();
        // The link, and on the secondary a newer connection still in its handshake.
        for c in [self.conn.as_mut(), self.pending.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(l) = c.link.as_mut() {
                l.set_pools(now, self.params.pools_digest, self.summary.clone());
                c.transmit();
                c.flush();
            }
        }
    }

    /// While the link is up, what differs between the partner's configuration in force and
    /// ours (after a live reload of one of them); `None` when they match or nothing is known.
    pub(super) fn config_differs(&self) -> Option<String> {
        self.conn
            .as_ref()
            .and_then(|c| c.link.as_ref())
            .and_then(|l| l.pools_differ())
    }

    pub(super) fn tls_done(&mut self, c: &mut Conn) {
        if let rustls::Connection::Server(s) = &c.tls
            && let Err(e) = self.tls.check_client(s)
        {
            c.close(format!("{e}"));
            return;
        }
        // The configuration in force (a reload may have changed options since the start):
        // the partner compares its digest with its own at CONNECT.
        self.follow_reload();
        // The primary's CONNECT is queued by the link and leaves with this turn's transmit.
        c.link = Some(Link::new(
            self.params.clone(),
            self.summary.clone(),
            self.cfg.clone(),
            self.fo.keepalive_secs,
            c.opened_ms,
            self.now(),
        ));
        c.phase = Phase::Linked;
    }

    pub(super) fn on_link_event(&mut self, c: &mut Conn, ev: LinkEvent, now: Now) {
        match ev {
            LinkEvent::Up(a) => self.up(c, &a),
            LinkEvent::Msg(m) => {
                self.last_contact = Some(Instant::now());
                if matches!(m, PeerMsg::BndUpd { .. }) {
                    self.received_updates += 1;
                }
                if m != PeerMsg::Contact {
                    debug!(message = msg_kind(&m), "failover: from partner");
                }
                self.node.on_peer(now.unix_secs, m, &mut self.out);
            }
            LinkEvent::Skipped(why) => {
                self.last_contact = Some(Instant::now());
                warn!(error = %why, "failover: message from the partner not understood");
            }
            LinkEvent::Closed {
                reason,
                was_up: _,
                refused,
            } => {
                if refused {
                    match self.fo.role {
                        Role::Secondary => {
                            error!(peer = %c.peer, refused = %reason, "failover: refused the partner's CONNECT")
                        }
                        Role::Primary => {
                            error!(peer = %c.peer, refused = %reason, "failover: the partner link was refused");
                            // Try again later, less often (RFC 8156 §6.1).
                            self.backoff.refused();
                        }
                    }
                }
                // What the link queued last (a refusing CONNECTREPLY) leaves before the close.
                c.transmit();
                c.flush();
                c.close(reason);
            }
        }
    }

    pub(super) fn up(&mut self, c: &mut Conn, a: &ConnectAccepted) {
        c.up = true;
        // A secondary's newer connection replaces the old link (the primary restarted, or
        // the old connection is half-dead); `conn` is empty while the primary's is driven.
        if let Some(mut old) = self.conn.take() {
            let was_up = old.up;
            old.close("replaced by a newer connection");
            let peer = old.peer;
            self.drop_conn(old);
            if was_up {
                warn!(%peer, "failover: the partner connected again; old link dropped");
                self.link_down();
            }
        }
        self.node
            .set_partner_window(a.partner_max_unacked.max(1) as usize);
        self.node.set_partner_skew(a.skew_secs);
        self.last_contact = Some(Instant::now());
        self.link_since = Some(Instant::now());
        self.backoff.up();
        info!(peer = %c.peer, skew_secs = a.skew_secs, mclt_secs = a.mclt_secs, partner_max_unacked = a.partner_max_unacked, "failover: partner link up");
        self.node.link_up(now_secs(), &mut self.out);
        self.apply();
        self.send_outbox(c);
    }

    pub(super) fn timers(&mut self) {
        self.follow_reload();
        let now = now_secs();
        if self.last_reclaim.elapsed() >= Duration::from_millis(self.cfg.server.reclaim_interval_ms)
        {
            self.last_reclaim = Instant::now();
            self.node.tick(now, &mut self.out);
        } else {
            self.node.tick_timers(now, &mut self.out);
        }
        if !self.out.store.is_empty() {
            debug!(
                leases = self.out.store.len(),
                "failover: timer changes stored"
            );
        }
        self.apply();
        self.flush_outbox();
        if self.fo.role == Role::Secondary
            && self.conn.is_none()
            && self.pending.is_none()
            && self
                .last_down_log
                .is_none_or(|t| t.elapsed() >= LINK_DOWN_LOG_EVERY)
            && self.started.elapsed() >= Duration::from_secs(self.fo.startup_secs)
        {
            let listen = self.fo.listen;
            self.note_link_down(&format!("waiting for the primary to connect to {listen}"));
        }
        if self.fo.role == Role::Primary
            && self.conn.is_none()
            && self.backoff.due(self.now().mono_ms)
        {
            self.connect();
        }
    }
}

pub(super) fn msg_kind(m: &PeerMsg) -> &'static str {
    match m {
        PeerMsg::State { .. } => "STATE",
        PeerMsg::BndUpd { .. } => "BNDUPD",
        PeerMsg::BndReply { .. } => "BNDREPLY",
        PeerMsg::UpdReq { .. } => "UPDREQ",
        PeerMsg::UpdReqAll { .. } => "UPDREQALL",
        PeerMsg::UpdDone { .. } => "UPDDONE",
        PeerMsg::PoolReq => "POOLREQ",
        PeerMsg::PdShare { .. } => "BNDUPD (prefix share)",
        PeerMsg::PdShareAck { .. } => "BNDREPLY (prefix share)",
        PeerMsg::Contact => "CONTACT",
    }
}
