//! Simulated DHCPv6 clients: Solicit, Request, Renew at T1, Rebind at T2, Release sometimes,
//! with bounded retransmission. They keep the lease they were given until it expires, which is
//! what the safety checks compare.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::net::Ipv6Addr;
use tandem_core::wire::{Message, MessageType, MessageWriter};

/// Retransmissions of one message before a client gives up on the exchange.
pub const CLIENT_RETRIES_MAX: u32 = 4;
/// First retransmission timeout, milliseconds (doubles each time).
pub const CLIENT_RT_MS: u64 = 1000;
/// IAID of every simulated client's IA_NA.
pub const SIM_IAID: u32 = 7;

/// Where a client is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waits until `at` before soliciting.
    Idle,
    /// Sent Solicit; takes the first Advertise.
    Soliciting,
    /// Sent Request to `server`.
    Requesting,
    /// Holds a lease.
    Bound,
    /// Sent Renew to the server that granted the lease.
    Renewing,
    /// Sent Rebind to every server.
    Rebinding,
    /// Sent Release.
    Releasing,
}

/// One client.
#[derive(Debug, Clone)]
pub struct Client {
    /// Number.
    pub id: u32,
    /// DUID.
    pub duid: Vec<u8>,
    /// Asks for a delegated prefix of this length (IA_PD) instead of an address (IA_NA).
    pub pd_len: Option<u8>,
    /// Phase.
    pub phase: Phase,
    /// Server DUID it talks to (from the Advertise or the Reply).
    pub server: Vec<u8>,
    /// Lease held: address and expiry (sim ms).
    pub lease: Option<(Ipv6Addr, u64)>,
    /// T1 and T2 of the lease, as sim ms.
    pub t1_ms: u64,
    /// T2 as sim ms.
    pub t2_ms: u64,
    /// Transaction id of the message in flight.
    pub xid: u32,
    /// Retransmissions so far.
    pub tries: u32,
    /// When the next timer fires (retransmit, T1, T2, expiry, or start).
    pub timer_ms: u64,
}

/// What a client wants to send.
#[derive(Debug, Clone)]
pub struct Send {
    /// Bytes.
    pub bytes: Vec<u8>,
    /// To a specific server (Renew, Request, Release) or to all (Solicit, Rebind).
    pub to: Option<Vec<u8>>,
}

/// What a client reply meant for the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Took {
    /// It now holds `addr` until `expires_ms`.
    Lease {
        /// The address.
        addr: Ipv6Addr,
        /// Expiry, sim ms.
        expires_ms: u64,
        /// Lifetime granted, seconds.
        valid_secs: u32,
    },
    /// It gave its lease up.
    Released(Ipv6Addr),
    /// Nothing that changes what it holds.
    Nothing,
}

impl Client {
    /// A client that starts at `start_ms`, asking for an address, or for a prefix of
    /// `pd_len` bits when given.
    pub fn new(id: u32, start_ms: u64, pd_len: Option<u8>) -> Client {
        let mut duid = vec![0, 3, 0, 1, 0x02, 0x51];
        duid.extend_from_slice(&id.to_be_bytes());
        Client {
            id,
            duid,
            pd_len,
            phase: Phase::Idle,
            server: Vec::new(),
            lease: None,
            t1_ms: 0,
            t2_ms: 0,
            xid: 0,
            tries: 0,
            timer_ms: start_ms,
        }
    }

    fn message(&mut self, ty: MessageType, xid: u32, with_server: bool) -> Vec<u8> {
        self.xid = xid & 0x00ff_ffff;
        let mut buf = Vec::new();
        {
            let mut w = MessageWriter::new(&mut buf, ty, self.xid);
            w.client_id(&self.duid);
            if with_server {
                w.server_id(&self.server);
            }
            let lease = self.lease;
            match self.pd_len {
                None => w.ia_na(SIM_IAID, 0, 0, |o| {
                    if let Some((a, _)) = lease {
                        o.ia_addr(a, 0, 0, |_| {});
                    }
                }),
                Some(len) => w.ia_pd(SIM_IAID, 0, 0, |o| {
                    if let Some((p, _)) = lease {
                        o.ia_prefix(p, len, 0, 0, |_| {});
                    }
                }),
            }
        }
        buf
    }

    /// The current message of the exchange in flight.
    fn current(&mut self, xid: u32) -> Option<Send> {
        let (ty, to) = match self.phase {
            Phase::Soliciting => (MessageType::Solicit, None),
            Phase::Requesting => (MessageType::Request, Some(self.server.clone())),
            Phase::Renewing => (MessageType::Renew, Some(self.server.clone())),
            Phase::Rebinding => (MessageType::Rebind, None),
            Phase::Releasing => (MessageType::Release, Some(self.server.clone())),
            _ => return None,
        };
        Some(Send {
            bytes: self.message(ty, xid, to.is_some()),
            to,
        })
    }

    /// Runs the client's timer at `now_ms`. `release` says whether a bound client at T1
    /// releases instead of renewing. Returns what to send, and whether the lease ran out.
    pub fn on_timer(&mut self, now_ms: u64, xid: u32, release: bool) -> (Option<Send>, bool) {
        let mut expired = false;
        if let Some((_, exp)) = self.lease
            && now_ms >= exp
        {
            self.lease = None;
            expired = true;
            self.phase = Phase::Idle;
        }
        match self.phase {
            Phase::Idle => {
                self.phase = Phase::Soliciting;
                self.tries = 0;
            }
            Phase::Bound if now_ms >= self.t2_ms => {
                self.phase = Phase::Rebinding;
                self.tries = 0;
            }
            Phase::Bound if now_ms >= self.t1_ms => {
                self.phase = if release {
                    Phase::Releasing
                } else {
                    Phase::Renewing
                };
                self.tries = 0;
            }
            Phase::Bound => {
                self.timer_ms = self.t1_ms;
                return (None, expired);
            }
            Phase::Renewing if now_ms >= self.t2_ms => {
                self.phase = Phase::Rebinding;
                self.tries = 0;
            }
            _ => {
                self.tries += 1;
                if self.tries > CLIENT_RETRIES_MAX {
                    // Give up on this exchange.
                    self.tries = 0;
                    self.phase = match (&self.phase, self.lease) {
                        (Phase::Releasing, Some(_)) => {
                            // Release unanswered: it stops using the lease anyway (RFC 8415).
                            self.lease = None;
                            Phase::Idle
                        }
                        (_, Some(_)) => Phase::Rebinding,
                        _ => Phase::Soliciting,
                    };
                }
            }
        }
        let rt = CLIENT_RT_MS << self.tries.min(6);
        self.timer_ms = now_ms + rt;
        if let Some((_, exp)) = self.lease {
            self.timer_ms = self.timer_ms.min(exp);
        }
        (self.current(xid), expired)
    }

    /// A reply from a server whose DUID is `from`. Returns what to send next and what changed.
    pub fn on_reply(&mut self, now_ms: u64, bytes: &[u8], xid: u32) -> (Option<Send>, Took) {
        let Ok(m) = Message::parse(bytes) else {
            return (None, Took::Nothing);
        };
        if m.transaction_id() != self.xid || m.client_id() != Some(&self.duid[..]) {
            return (None, Took::Nothing);
        }
        let server = m.server_id().unwrap_or(&[]).to_vec();
        let addr = match self.pd_len {
            None => m.ia_nas().find(|ia| ia.iaid == SIM_IAID).and_then(|ia| {
                ia.addresses()
                    .find(|a| a.valid_secs > 0)
                    .map(|a| (a.addr, a.valid_secs, ia.t1, ia.t2))
            }),
            Some(len) => m.ia_pds().find(|ia| ia.iaid == SIM_IAID).and_then(|ia| {
                ia.prefixes()
                    .find(|p| p.valid_secs > 0 && p.prefix_len == len)
                    .map(|p| (p.prefix, p.valid_secs, ia.t1, ia.t2))
            }),
        };
        match (&self.phase, m.msg_type()) {
            (Phase::Soliciting, MessageType::Advertise) => {
                if addr.is_none() {
                    return (None, Took::Nothing);
                }
                self.server = server;
                self.phase = Phase::Requesting;
                self.tries = 0;
                self.timer_ms = now_ms + CLIENT_RT_MS;
                (self.current(xid), Took::Nothing)
            }
            (Phase::Requesting | Phase::Renewing | Phase::Rebinding, MessageType::Reply) => {
                match addr {
                    Some((a, valid, t1, t2)) => {
                        let expires_ms = now_ms + valid as u64 * 1000;
                        if self.lease.is_some_and(|(old, _)| old != a) {
                            // A new address replaces the old one; the old one is given up.
                        }
                        self.lease = Some((a, expires_ms));
                        self.server = server;
                        self.phase = Phase::Bound;
                        let t1 = if t1 == 0 { valid / 2 } else { t1 };
                        let t2 = if t2 == 0 { valid * 4 / 5 } else { t2 };
                        self.t1_ms = now_ms + t1 as u64 * 1000;
                        self.t2_ms = now_ms + t2 as u64 * 1000;
                        self.timer_ms = self.t1_ms;
                        (
                            None,
                            Took::Lease {
                                addr: a,
                                expires_ms,
                                valid_secs: valid,
                            },
                        )
                    }
                    None => {
                        // No usable lease (NoBinding, NoAddrsAvail, zero lifetimes): start over.
                        let had = self.lease.take();
                        self.phase = Phase::Idle;
                        self.timer_ms = now_ms + CLIENT_RT_MS;
                        (None, had.map_or(Took::Nothing, |(a, _)| Took::Released(a)))
                    }
                }
            }
            (Phase::Releasing, MessageType::Reply) => {
                let had = self.lease.take();
                self.phase = Phase::Idle;
                self.timer_ms = now_ms + 5 * CLIENT_RT_MS;
                (None, had.map_or(Took::Nothing, |(a, _)| Took::Released(a)))
            }
            _ => (None, Took::Nothing),
        }
    }
}
