//! The clients and their network: each client is a real sans-IO [`tandem_client::Client`];
//! every datagram either way goes through one lossy path ([`World::datagram`]: loss,
//! duplication, delay, hence reordering).

use crate::SimFailure;
use crate::world::{Ev, World};
use tandem_client::{Event, Outbox, Send};
use tandem_core::failover::state::ServerState;

impl World {
    /// Puts one datagram on the client network: lost, or delivered once or twice after
    /// 1..=`delay_ms_max` ms each.
    fn datagram(&mut self, make: impl Fn() -> Ev) {
        if self.rng.permille(self.cfg.loss_permille) {
            return;
        }
        let copies = if self.rng.permille(self.cfg.dup_permille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_ms + 1 + self.rng.below(self.cfg.delay_ms_max);
            self.push(at, make());
        }
    }

    /// A server's reply to `client`.
    pub(crate) fn client_net(
        &mut self,
        client: u32,
        bytes: Vec<u8>,
        granted_under: Option<(usize, ServerState)>,
    ) {
        self.datagram(|| Ev::ToClient {
            client,
            bytes: bytes.clone(),
            granted_under,
        });
    }

    /// A client's message, to the server it names or to both (multicast through a relay).
    fn send_from_client(&mut self, client: u32, s: Send) {
        for n in 0..2 {
            if let Some(to) = &s.to
                && to != &self.slots[n].duid
            {
                continue;
            }
            self.datagram(|| Ev::ToServer {
                node: n,
                client,
                bytes: s.bytes.clone(),
            });
        }
    }

    pub(crate) fn client_timer(&mut self, c: u32) {
        let release = self.rng.permille(self.cfg.release_permille);
        let cl = &mut self.clients[c as usize];
        if cl.timer_ms() > self.now_ms {
            return; // superseded
        }
        self.next_xid = self.next_xid.wrapping_add(1);
        let mut out = Outbox::direct();
        let step = cl.on_timer(self.now_ms, self.next_xid, release, &mut out);
        let send = step.send.map(|to| Send::new(cl, to, &out));
        let expired = step.event == Event::Expired;
        let next = cl.timer_ms();
        // RFC 8415 §18.2.7: a client stops using what it releases as soon as it starts the
        // Release exchange.
        if expired || cl.phase() == tandem_client::Phase::Releasing {
            self.holders.retain(|_, (h, _)| *h != c);
        }
        if let Some(s) = send {
            self.send_from_client(c, s);
        }
        self.push(next, Ev::ClientTimer(c));
    }

    pub(crate) fn deliver_to_client(
        &mut self,
        client: u32,
        bytes: &[u8],
        granted_under: Option<(usize, ServerState)>,
    ) -> Result<(), SimFailure> {
        self.next_xid = self.next_xid.wrapping_add(1);
        let cl = &mut self.clients[client as usize];
        let before = cl.timer_ms();
        let held = cl.lease().map(|l| l.addr);
        let mut out = Outbox::direct();
        let step = cl.on_datagram(self.now_ms, bytes, self.next_xid, &mut out);
        let send = step.send.map(|to| Send::new(cl, to, &out));
        match (step.event, cl.lease().copied()) {
            (Event::Bound, Some(l)) => {
                let (addr, expires_ms, valid_secs) = (l.addr, l.expires_ms, l.valid_secs);
                let (n, state) = granted_under.unwrap_or((0, ServerState::Startup));
                self.note(format!(
                    "client {client} holds {addr} for {valid_secs}s from node {n} (answered under {state})"
                ));
                self.check_grant(n, state, client, addr, expires_ms, valid_secs)?;
            }
            (_, None) => {
                if let Some(a) = held
                    && self.holders.get(&a).is_some_and(|h| h.0 == client)
                {
                    self.holders.remove(&a);
                }
            }
            _ => {}
        }
        if let Some(s) = send {
            self.send_from_client(client, s);
        }
        let after = self.clients[client as usize].timer_ms();
        if after != before {
            self.push(after, Ev::ClientTimer(client));
        }
        Ok(())
    }
}
