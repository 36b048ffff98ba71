//! The control socket of `tandem ctl`: binding it (mode 0600), and the requests it serves
//! (status, partner-down). The first relationship's thread serves it and asks the other
//! relationships' threads ([`Ask`]) for their part.

use super::thread::PartnerThread;
use super::*;
use crate::edge::control;

/// Binds the control socket (see [`crate::edge::control::bind_control`]).
pub(super) fn bind_control(path: &std::path::Path) -> Result<UnixListener, PartnerStartError> {
    crate::edge::control::bind_control(path)
        .map_err(|e| sock_err(&format!("control socket {}", path.display()), e))
}

impl PartnerThread {
    pub(super) fn serve_control(&mut self) {
        self.control_more = true;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            let Some(control) = self.control.as_ref() else {
                self.control_more = false;
                return;
            };
            match control.accept() {
                Ok((sock, _)) => self.control_request(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.control_more = false;
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
    }

    pub(super) fn control_request(&mut self, mut s: UnixStream) {
        let line = control::read_request(&mut s);
        if line.starts_with('{') {
            let answer = self.control_json(&line);
            let _ = s.write_all(format!("{answer}\n").as_bytes());
            return;
        }
        let (word, name) = match line.split_once(' ') {
            Some((w, n)) => (w, Some(n.trim())),
            None => (line.as_str(), None),
        };
        let answer = match word {
            "status" => self.status_all(),
            "partner-down" => match name {
                None if !self.others.is_empty() => format!(
                    "error: this server has {} relationships: name the one whose partner is down (tandem ctl partner-down --relationship NAME)\n",
                    self.others.len() + 1
                ),
                None => self.partner_down_here(),
                Some(n) if n == self.fo.relationship => self.partner_down_here(),
                Some(n) => match self.others.iter().find(|o| o.name == n) {
                    Some(o) => o.ask(Ask::PartnerDown),
                    None => format!("error: no relationship is named `{n}`\n"),
                },
            },
            other => format!(
                "error: unknown command `{other}` (status, partner-down, or a JSON request: see docs/operations.md)\n"
            ),
        };
        let _ = s.write_all(answer.as_bytes());
    }

    /// Answers a question of the control socket's thread about this relationship.
    pub(super) fn answer_ask(&mut self, what: Ask) -> String {
        match what {
            Ask::Status => self.status_text(),
            Ask::PartnerDown => self.partner_down_here(),
        }
    }

    /// The operator declares this relationship's partner down.
    fn partner_down_here(&mut self) -> String {
        let st = self.node.endpoint().state();
        if self.node.endpoint().link_up() && st == ServerState::Normal {
            return "error: the link to the partner is up and both are NORMAL; partner-down is for a partner that is really down\n".to_string();
        }
        warn!(relationship = %self.fo.relationship, state = %st, "failover: operator declared the partner down");
        self.node.operator_partner_down(now_secs(), &mut self.out);
        self.apply();
        self.flush_outbox();
        match self.node.endpoint().state() {
            ServerState::PartnerDown => "ok: state PARTNER-DOWN\n".to_string(),
            now @ (ServerState::Recover | ServerState::RecoverWait | ServerState::RecoverDone) => {
                format!(
                    "error: not entered (state {now}): this server is still recovering its bindings from the partner; serving alone without them could hand out leases the partner's clients hold\n"
                )
            }
            ServerState::Startup => "error: not entered: still in STARTUP (failover.startup_secs); try again in a few seconds\n".to_string(),
            now => format!(
                "error: not entered (state {now}): the state machine does not go to PARTNER-DOWN from here\n"
            ),
        }
    }

    /// Every relationship's status, then the pools: the text `tandem ctl status` prints.
    fn status_all(&self) -> String {
        let mut t = self.status_text();
        for other in OtherRelationship::ask_all(&self.others, Ask::Status) {
            t.push('\n');
            t.push_str(&other);
        }
        control::pool_lines(&self.alloc, &mut t);
        t
    }

    /// A JSON request: `status` and `partner-down` here, the rest in [`control::handle_json`],
    /// whose lease changes go to the partner like any other durable change.
    fn control_json(&mut self, line: &str) -> serde_json::Value {
        let req: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return control::error(format!("the request is not JSON: {e}")),
        };
        match req.get("command").and_then(|c| c.as_str()) {
            Some("status") => {
                // The text status as an object; repeated keys (pools) become lists. The first
                // relationship's keys are at the top (as with one); with several, each
                // relationship's are also in `relationships`.
                let own = self.status_text();
                let mut text = own.clone();
                control::pool_lines(&self.alloc, &mut text);
                let mut m = status_object(&text);
                if !self.others.is_empty() {
                    let mut all = vec![serde_json::Value::Object(status_object(&own))];
                    for other in OtherRelationship::ask_all(&self.others, Ask::Status) {
                        all.push(serde_json::Value::Object(status_object(&other)));
                    }
                    m.insert("relationships".into(), serde_json::Value::Array(all));
                }
                m.insert("result".into(), serde_json::json!("ok"));
                serde_json::Value::Object(m)
            }
            Some("partner-down") => control::error(
                "send partner-down as the plain word `partner-down` (tandem ctl partner-down), so that a script cannot do it by accident",
            ),
            _ => {
                let mut policies = Vec::new();
                self.policy.read_into(&mut policies);
                let ctx = control::ControlCtx {
                    cfg: self.reloader.running(),
                    alloc: self.alloc.clone(),
                    store: self.store.clone(),
                    hub: self.hub.clone(),
                    reloader: self.reloader.clone(),
                    // What the workers serve under now: a lease added by hand obeys it.
                    policies,
                };
                let mut changed: Vec<Lease> = Vec::new();
                let v = control::handle_json(&ctx, &req, &mut |l| changed.extend_from_slice(l));
                // To the relationship covering each change: this one's at once, the others'
                // through their queues.
                if let Some(n) = &self.notifier {
                    changed = n.committed_except(self.index, changed);
                }
                if !changed.is_empty() {
                    self.node
                        .committed(now_secs(), changed.iter(), &mut self.out);
                    self.apply();
                    self.flush_outbox();
                }
                v
            }
        }
    }

    pub(super) fn status_text(&self) -> String {
        use std::fmt::Write as _;
        let e = self.node.endpoint();
        let now = now_secs();
        let mut t = String::new();
        let _ = writeln!(
            t,
            "role: {}",
            match e.role() {
                Role::Primary => "primary",
                Role::Secondary => "secondary",
            }
        );
        let _ = writeln!(t, "relationship: {}", self.fo.relationship);
        let _ = writeln!(t, "state: {}", e.state());
        let _ = writeln!(
            t,
            "state_since: {} ({} s ago)",
            e.state_since(),
            now.saturating_sub(e.state_since())
        );
        let _ = writeln!(
            t,
            "partner_state: {}",
            e.partner_state()
                .map_or("unknown".to_string(), |s| s.to_string())
        );
        match (&self.conn, self.link_since) {
            (Some(c), Some(since)) if c.is_up() => {
                let _ = writeln!(
                    t,
                    "link: up with {} for {:.1} s",
                    c.peer,
                    since.elapsed().as_secs_f64()
                );
            }
            (Some(c), _) => {
                let _ = writeln!(t, "link: connecting to {} ({:?})", c.peer, c.phase);
            }
            (None, _) => {
                let _ = writeln!(t, "link: down");
            }
        }
        if !self.conn.as_ref().is_some_and(|c| c.is_up()) && !self.last_down_reason.is_empty() {
            let _ = writeln!(t, "link_down_reason: {}", self.last_down_reason);
        }
        match self.last_contact {
            Some(i) => {
                let _ = writeln!(t, "last_contact: {:.1} s ago", i.elapsed().as_secs_f64());
            }
            None => {
                let _ = writeln!(t, "last_contact: never since start");
            }
        }
        let pd = self.node.partner_down_since_received();
        if pd != 0 {
            // The partner's STATE says it is in PARTNER-DOWN, since then (it considers us down).
            let _ = writeln!(t, "partner_in_partner_down_since: {pd}");
        }
        match self.config_differs() {
            Some(what) => {
                let _ = writeln!(
                    t,
                    "config: differs from the partner's in force ({what}); finish the rolling reload"
                );
            }
            None if self.conn.as_ref().is_some_and(|c| c.is_up()) => {
                let _ = writeln!(t, "config: same as the partner's");
            }
            None => {}
        }
        let _ = writeln!(t, "catching_up: {}", self.node.catching_up());
        let _ = writeln!(t, "unacked_updates: {}", self.node.unacked());
        let _ = writeln!(t, "update_backlog: {}", self.node.backlog());
        let _ = writeln!(t, "unsendable_updates: {}", self.node.unsendable());
        let _ = writeln!(t, "updates_sent: {}", self.sent_updates);
        let _ = writeln!(t, "updates_received: {}", self.received_updates);
        let _ = writeln!(t, "store_failed: {}", self.store_failed);
        // Prefix pools split between the partners: the secondary's share and who holds the
        // free prefixes, as this server sees them.
        for id in self.alloc.pd_pools_in(&self.scope) {
            if let Some(b) = self.alloc.pd_balance(id) {
                let _ = writeln!(
                    t,
                    "pd_share: {id} secondary_share={} free={} secondary_free={}",
                    b.share,
                    b.free_total(),
                    b.backup_free(b.share)
                );
            }
        }
        let _ = writeln!(t, "pd_share_moves: {}", self.node.share_moves());
        t
    }
}

/// One relationship's (or the whole) status text as a JSON object; repeated keys (pools,
/// prefix shares) become lists.
fn status_object(text: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in text.lines().filter_map(|l| l.split_once(": ")) {
        if k == "pool" || k == "pd_share" {
            let list = m
                .entry(if k == "pool" { "pools" } else { "pd_shares" })
                .or_insert_with(|| serde_json::json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(serde_json::json!(v));
            }
        } else {
            m.insert(k.to_string(), serde_json::json!(v));
        }
    }
    m
}
