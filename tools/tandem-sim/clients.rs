//! The clients and their network: each client is a real sans-IO [`tandem_client::Client`];
//! every datagram either way goes through one lossy path ([`World::datagram`]: loss,
//! duplication, delay, hence reordering).

use crate::SimFailure;
use crate::world::{Ev, Granted, World};
use tandem_client::{AtT1, Event, Outbox, Send, Via};
use tandem_core::config::ResourceKind;
use tandem_core::failover::state::ServerState;
use tandem_core::wire::{self, Message};

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
        granted_under: Option<Granted>,
    ) {
        self.datagram(|| Ev::ToClient {
            client,
            bytes: bytes.clone(),
            granted_under,
        });
    }

    /// A client's message, to the server of its relationship it names or to both (multicast
    /// on the link, or through a relay agent that forwards to both).
    fn send_from_client(&mut self, client: u32, s: Send) {
        let rel = self.client_rel[client as usize];
        for e in [2 * rel, 2 * rel + 1] {
            let n = self.ends[e].server;
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

    /// The outbox a client writes into: direct, or through the relay agent of its subnet.
    fn outbox(&self, client: u32) -> Outbox {
        match self.relay_of[client as usize] {
            Some(link) => Outbox::new(Via::Relay {
                link,
                interface_id: b"sim-relay",
                source_port: None,
            }),
            None => Outbox::direct(),
        }
    }

    pub(crate) fn client_timer(&mut self, c: u32) {
        let mut at_t1 = if self.rng.permille(self.cfg.release_permille) {
            AtT1::Release
        } else {
            AtT1::Renew
        };
        if let Some(m) = self.cfg.modes.mixed
            && at_t1 == AtT1::Renew
        {
            if self.rng.permille(m.decline_permille) {
                at_t1 = AtT1::Decline;
            } else if self.rng.permille(m.confirm_permille) {
                at_t1 = AtT1::Confirm;
            }
        }
        let mut out = self.outbox(c);
        let cl = &mut self.clients[c as usize];
        if cl.timer_ms() > self.now_ms {
            return; // superseded
        }
        self.next_xid = self.next_xid.wrapping_add(1);
        let step = cl.on_timer(self.now_ms, self.next_xid, at_t1, &mut out);
        let send = step.send.map(|to| Send::new(cl, to, &out));
        let expired = step.event == Event::Expired;
        let next = cl.timer_ms();
        // RFC 8415 §18.2.7, §18.2.8: a client stops using what it releases or declines as
        // soon as it starts the exchange.
        if expired
            || matches!(
                cl.phase(),
                tandem_client::Phase::Releasing | tandem_client::Phase::Declining
            )
        {
            self.holders.retain(|_, h| h.client != c);
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
        granted_under: Option<Granted>,
    ) -> Result<(), SimFailure> {
        self.next_xid = self.next_xid.wrapping_add(1);
        let mut out = self.outbox(client);
        let relayed = self.relay_of[client as usize].is_some();
        let cl = &mut self.clients[client as usize];
        let before = cl.timer_ms();
        let step = if relayed {
            // The relay agent hands the client what the Relay-repl carries.
            match wire::unwrap_relay_replies(bytes).map(|r| Message::parse(r.inner())) {
                Ok(Ok(m)) => cl.on_reply(self.now_ms, &m, self.next_xid, &mut out),
                _ => return Ok(()),
            }
        } else {
            cl.on_datagram(self.now_ms, bytes, self.next_xid, &mut out)
        };
        let send = step.send.map(|to| Send::new(cl, to, &out));
        let now_holds: Vec<tandem_client::Lease> = [cl.address(), cl.prefix()]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        // What it no longer holds is free as far as it is concerned.
        self.holders
            .retain(|a, h| h.client != client || now_holds.iter().any(|l| l.addr == *a));
        match step.event {
            Event::Declined => self.report.declines += 1,
            Event::Confirmed => self.report.confirms += 1,
            Event::Bound => {
                // Through the mixed runs' relay agent (m-to-1 counts its own).
                self.report.relayed_grants +=
                    (self.relay_of[client as usize] == Some(crate::RELAY_LINK)) as u64;
                self.report.both_ia_grants += (now_holds.len() == 2) as u64;
            }
            _ => {}
        }
        if step.event == Event::Bound {
            let rel = self.client_rel[client as usize];
            let (e, state, made_ms) =
                granted_under.unwrap_or((2 * rel, ServerState::Startup, self.now_ms));
            for l in now_holds {
                let kind = if l.len == 128 {
                    ResourceKind::Address
                } else {
                    ResourceKind::Prefix
                };
                self.note(format!(
                    "client {client} holds {}/{} for {}s from {} (answered under {state})",
                    l.addr,
                    l.len,
                    l.valid_secs,
                    self.end_name(e)
                ));
                self.check_grant(
                    (e, state, made_ms),
                    client,
                    kind,
                    l.addr,
                    l.expires_ms,
                    l.valid_secs,
                )?;
            }
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
