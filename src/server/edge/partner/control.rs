//! The control socket of `tandem ctl`: binding it (mode 0600), and the requests it serves
//! (status, partner-down).

use super::thread::PartnerThread;
use super::*;

/// Binds the control socket, replacing a stale socket file that nobody listens on.
pub(super) fn bind_control(path: &std::path::Path) -> Result<UnixListener, PartnerStartError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(sock_err(
                &format!("control socket {}", path.display()),
                io::Error::new(io::ErrorKind::AddrInUse, "another server answers on it"),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| sock_err(&format!("control socket {}", path.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    // partner-down is dangerous: only the server's own user may use the socket.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

impl PartnerThread {
    pub(super) fn serve_control(&mut self) {
        self.control_more = true;
        for _ in 0..ACCEPTS_PER_TURN_MAX {
            match self.control.accept() {
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
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(CONTROL_IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(CONTROL_IO_TIMEOUT));
        let mut req = Vec::new();
        let mut buf = [0u8; 64];
        while req.len() < CONTROL_REQUEST_MAX_BYTES && !req.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        let line = String::from_utf8_lossy(&req);
        let cmd = line.trim();
        let answer = match cmd {
            "status" => self.status_text(),
            "partner-down" => {
                let st = self.node.endpoint().state();
                if self.node.endpoint().link_up() && st == ServerState::Normal {
                    "error: the link to the partner is up and both are NORMAL; partner-down is for a partner that is really down\n".to_string()
                } else {
                    warn!(state = %st, "failover: operator declared the partner down");
                    self.node.operator_partner_down(now_secs(), &mut self.out);
                    self.apply();
                    self.flush_outbox();
                    match self.node.endpoint().state() {
                        ServerState::PartnerDown => "ok: state PARTNER-DOWN\n".to_string(),
                        now @ (ServerState::Recover
                        | ServerState::RecoverWait
                        | ServerState::RecoverDone) => format!(
                            "error: not entered (state {now}): this server is still recovering its bindings from the partner; serving alone without them could hand out leases the partner's clients hold\n"
                        ),
                        ServerState::Startup => "error: not entered: still in STARTUP (failover.startup_secs); try again in a few seconds\n".to_string(),
                        now => format!(
                            "error: not entered (state {now}): the state machine does not go to PARTNER-DOWN from here\n"
                        ),
                    }
                }
            }
            other => format!("error: unknown command `{other}` (status, partner-down)\n"),
        };
        let _ = s.write_all(answer.as_bytes());
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
        match self.last_contact {
            Some(i) => {
                let _ = writeln!(t, "last_contact: {:.1} s ago", i.elapsed().as_secs_f64());
            }
            None => {
                let _ = writeln!(t, "last_contact: never since start");
            }
        }
        let _ = writeln!(t, "unacked_updates: {}", self.node.unacked());
        let _ = writeln!(t, "update_backlog: {}", self.node.backlog());
        let _ = writeln!(t, "updates_sent: {}", self.sent_updates);
        let _ = writeln!(t, "updates_received: {}", self.received_updates);
        let _ = writeln!(t, "store_failed: {}", self.store_failed);
        for (subnet, pool, u) in self.alloc.usage() {
            let _ = writeln!(
                t,
                "pool: subnet {} {}/{} {:?} total {} active {} declined {} offered {}",
                subnet,
                std::net::Ipv6Addr::from(pool.first),
                pool.resource_len,
                pool.kind,
                u.total,
                u.active,
                u.declined,
                u.offered
            );
        }
        t
    }
}
