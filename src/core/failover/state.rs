//! The failover endpoint state machine (RFC 8156 §8), sans-IO: events and the time go in,
//! actions come out. See `docs/failover.md` for the diagram and `docs/reference/` for the
//! transition table it follows.
//!
//! One [`Endpoint`] per relationship. It decides what this server may do for clients in its
//! current state ([`Endpoint::serving`]) and what it must tell or ask its partner
//! ([`Action`]). Everything that must survive a restart is in [`Persisted`], handed out with
//! [`Action::Persist`] before any STATE message announcing it.

use crate::config::Role;
use crate::engine::{Answering, Policy};
use crate::pool::{PRIMARY_BIT, Rules};
use std::fmt;

/// Endpoint states with their RFC 8156 wire values (OPTION_F_SERVER_STATE): one definition,
/// the codec's.
pub use super::wire::ServerState;

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Startup => "STARTUP",
            ServerState::Normal => "NORMAL",
            ServerState::CommunicationsInterrupted => "COMMUNICATIONS-INTERRUPTED",
            ServerState::PartnerDown => "PARTNER-DOWN",
            ServerState::PotentialConflict => "POTENTIAL-CONFLICT",
            ServerState::Recover => "RECOVER",
            ServerState::RecoverWait => "RECOVER-WAIT",
            ServerState::RecoverDone => "RECOVER-DONE",
            ServerState::ResolutionInterrupted => "RESOLUTION-INTERRUPTED",
            ServerState::ConflictDone => "CONFLICT-DONE",
        })
    }
}

/// What this server may do for clients now: the engine's side of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    /// Which messages to answer.
    pub answering: Answering,
    /// May it hand out new leases from its own share of the pools?
    pub allocate_own: bool,
    /// From when (unix secs) it may hand out the partner's free resources, if ever.
    pub partner_resources_from: Option<u64>,
    /// Client lifetimes are capped at (acknowledged partner lifetime or now) + MCLT.
    pub mclt_bounded: bool,
}

impl Serving {
    /// The engine's policy for this state, for a server in `role` with this MCLT.
    pub fn policy(&self, role: Role, mclt_secs: u64) -> Policy {
        let own = match role {
            Role::Primary => PRIMARY_BIT,
            Role::Secondary => 1 - PRIMARY_BIT,
        };
        let mut owned = [false, false];
        owned[own] = self.allocate_own;
        Policy {
            answering: self.answering,
            rules: Rules {
                owned,
                partner_from: self.partner_resources_from,
                mclt_secs: self.mclt_bounded.then_some(mclt_secs),
                partner_bit: Some(1 - own),
            },
            catching_up: false,
        }
    }
}

/// Tunables of one relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Maximum client lead time, seconds.
    pub mclt_secs: u64,
    /// Go from COMMUNICATIONS-INTERRUPTED to PARTNER-DOWN on our own after this long.
    pub auto_partner_down_secs: Option<u64>,
    /// How long STARTUP waits for the partner before resuming the previous state.
    pub startup_secs: u64,
    /// Largest clock difference the link accepts (`failover.skew_max_secs`): times the partner
    /// announces are compared with ours only with this margin.
    pub skew_max_secs: u64,
}

/// While this server answers clients, its time of last operation is persisted at least this
/// often, so after a crash the stored value is at most this much behind the truth (with
/// [`Endpoint::tick`] called at least once a second, as both edges do).
pub const OPERATION_PERSIST_SECS: u64 = 5;

/// What survives a restart (written before any STATE message that announces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    /// Current state (never STARTUP).
    pub state: ServerState,
    /// When it began, unix secs.
    pub state_since: u64,
    /// Time of last operation (RFC 8156 §8.3.2's TIME-OF-FAILURE), unix secs: the last time
    /// this server was in a state that answers clients, persisted at least every
    /// [`OPERATION_PERSIST_SECS`] while it is. 0: it never answered (or the store was lost).
    pub last_operated: u64,
    /// When PARTNER-DOWN was entered (0 when not in it).
    pub partner_down_since: u64,
    /// Whether this server has ever been in contact with its partner.
    pub communicated: bool,
    /// Whether this store was created empty (lost or new): recovery must ask for everything.
    pub store_was_empty: bool,
}

/// Inputs of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The partner link is up (CONNECT/CONNECTREPLY accepted).
    LinkUp,
    /// The partner link is down (closed, keepalive timed out, DISCONNECT).
    LinkDown,
    /// A STATE message from the partner.
    PartnerState {
        /// Its state.
        state: ServerState,
        /// When that state began, unix secs.
        since: u64,
        /// Its STARTUP flag.
        starting: bool,
        /// Its COMMUNICATED flag (has ever talked to us).
        communicated: bool,
    },
    /// UPDDONE received: the partner sent everything we asked for.
    UpdatesDone,
    /// The operator says the partner is down.
    OperatorPartnerDown,
}

/// Outputs of the state machine, in the order to carry them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write this to stable storage before anything that follows.
    Persist(Persisted),
    /// Send a STATE message with the current state (when the link is up).
    SendState,
    /// Ask for the updates the partner has not had acknowledged.
    SendUpdReq,
    /// Ask for the partner's whole database.
    SendUpdReqAll,
    /// Entering NORMAL: send every binding update not yet acknowledged.
    FlushUpdates,
    /// Secondary entering NORMAL: ask the primary to rebalance prefixes.
    SendPoolReq,
    /// The state changed (for logs and metrics).
    Changed {
        /// Old state.
        from: ServerState,
        /// New state.
        to: ServerState,
    },
}

/// One failover relationship's endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    role: Role,
    cfg: EndpointConfig,
    state: ServerState,
    /// The state to resume after STARTUP.
    resume: Persisted,
    p: Persisted,
    link_up: bool,
    partner: Option<(ServerState, u64, bool)>,
    startup_until: u64,
    recover_wait_until: u64,
    /// The `last_operated` of the last [`Action::Persist`] handed out.
    operated_persisted: u64,
    started_at: u64,
    /// Heard from the partner since this start. Automatic PARTNER-DOWN needs it: a server
    /// that restarted without contact cannot know whether its partner served alone (in
    /// PARTNER-DOWN) while it was away, so only an operator may declare the partner down.
    contact_since_start: bool,
    /// The COMMUNICATED flag of the partner's first STATE on the current link, sent before it
    /// heard from us on it: whether the partner had ever been in contact with us. Only a server
    /// its partner never knew may skip RECOVER-WAIT.
    partner_knew_us: bool,
    /// The partner's clock minus ours, as measured when the current link came up (seconds;
    /// None: not measured on this link).
    partner_skew_secs: Option<i64>,
}

/// Margin on a measured clock difference, seconds: the measurement has whole seconds and a
/// message's transit in it.
pub const SKEW_MEASURED_MARGIN_SECS: u64 = 2;

/// Most transitions one event may cause (each table row moves once; a few chain).
const TRANSITIONS_PER_EVENT_MAX: usize = 8;

impl Endpoint {
    /// An endpoint starting up. `stored` is what the store kept (None: empty store, so the
    /// server recovers everything from its partner).
    pub fn start(role: Role, cfg: EndpointConfig, stored: Option<Persisted>, now: u64) -> Endpoint {
        let resume = stored.unwrap_or(Persisted {
            state: ServerState::Recover,
            state_since: now,
            last_operated: 0,
            partner_down_since: 0,
            communicated: false,
            store_was_empty: true,
        });
        Endpoint {
            role,
            cfg,
            state: ServerState::Startup,
            resume,
            p: resume,
            link_up: false,
            partner: None,
            startup_until: now + cfg.startup_secs,
            recover_wait_until: 0,
            operated_persisted: resume.last_operated,
            started_at: now,
            contact_since_start: false,
            partner_knew_us: true,
            partner_skew_secs: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// When the current state began.
    pub fn state_since(&self) -> u64 {
        self.p.state_since
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The partner's last announced state.
    pub fn partner_state(&self) -> Option<ServerState> {
        self.partner.map(|p| p.0)
    }

    /// Whether the link to the partner is up.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The partner's clock minus ours, as the link measured it when it came up (before
    /// [`Event::LinkUp`]); used to compare the partner's times with ours.
    pub fn set_partner_skew(&mut self, skew_secs: i64) {
        self.partner_skew_secs = Some(skew_secs);
    }

    /// What is persisted now.
    pub fn persisted(&self) -> Persisted {
        self.p
    }

    /// The STARTUP and COMMUNICATED server flags to send in STATE (COMMUNICATED: this server
    /// has ever been in contact with its partner).
    pub fn flags(&self) -> (bool, bool) {
        (self.state == ServerState::Startup, self.p.communicated)
    }

    /// The state to announce in STATE (STARTUP announces the state it will resume).
    pub fn announced_state(&self) -> ServerState {
        if self.state == ServerState::Startup {
            self.resume.state
        } else {
            self.state
        }
    }

    /// What this server may do for clients now.
    pub fn serving(&self) -> Serving {
        use ServerState as S;
        let mclt = self.cfg.mclt_secs;
        let (answering, allocate_own, partner_from, bounded) = match (self.state, self.role) {
            (S::Normal | S::ConflictDone, Role::Primary) => (Answering::Everyone, true, None, true),
            (S::Normal, Role::Secondary) => (Answering::AddressedToUs, false, None, true),
            (S::CommunicationsInterrupted, _) => (Answering::Everyone, true, None, true),
            // RFC 8156 §8.11.1 allocates from the own pool "if that can be determined". It
            // cannot: the partner was in PARTNER-DOWN or conflict, may have used our free
            // resources, and the resolution that would tell us which did not finish. So
            // RESOLUTION-INTERRUPTED answers for the bindings it knows and allocates nothing.
            (S::ResolutionInterrupted, _) => (Answering::Everyone, false, None, true),
            (S::PartnerDown, _) => (
                Answering::Everyone,
                true,
                Some(self.p.partner_down_since + mclt),
                false,
            ),
            (S::RecoverDone, _) => (Answering::AddressedToUs, false, None, true),
            _ => (Answering::Nobody, false, None, true),
        };
        Serving {
            answering,
            allocate_own,
            partner_resources_from: partner_from,
            mclt_bounded: bounded,
        }
    }

    /// Whether automatic PARTNER-DOWN is armed (contact with the partner since this start).
    pub fn auto_partner_down_armed(&self) -> bool {
        self.contact_since_start && self.cfg.auto_partner_down_secs.is_some()
    }

    /// The next time [`Endpoint::tick`] has something to do.
    pub fn next_timer(&self) -> Option<u64> {
        match self.state {
            ServerState::Startup => Some(self.startup_until),
            ServerState::CommunicationsInterrupted if self.contact_since_start => self
                .cfg
                .auto_partner_down_secs
                .map(|a| self.p.state_since + a),
            ServerState::RecoverWait => Some(self.recover_wait_until),
            _ => None,
        }
    }

    /// Feeds one event; actions to carry out are appended to `out`.
    pub fn handle(&mut self, now: u64, ev: Event, out: &mut Vec<Action>) {
        use ServerState as S;
        match ev {
            Event::LinkUp => {
                self.link_up = true;
                self.partner = None;
                out.push(Action::SendState);
            }
            Event::LinkDown => {
                self.link_up = false;
                self.partner = None;
                self.partner_skew_secs = None;
                match self.state {
                    S::Normal => self.go(now, S::CommunicationsInterrupted, out),
                    S::PotentialConflict => self.go(now, S::ResolutionInterrupted, out),
                    // Stricter than RFC 8156 §8.6/§8.7, which stay put: the partner, still in
                    // PARTNER-DOWN, goes on binding our resources while we cannot hear it, and
                    // RECOVER-DONE → NORMAL would not wait for those bindings (seeds 5262442,
                    // 5644433). Recover again: ask for them when the link is back.
                    S::RecoverWait | S::RecoverDone => self.go(now, S::Recover, out),
                    _ => {}
                }
            }
            Event::PartnerState {
                state,
                since,
                starting,
                communicated,
            } => {
                if !self.p.communicated {
                    self.p.communicated = true;
                    out.push(Action::Persist(self.p));
                }
                if self.partner.is_none() {
                    self.partner_knew_us = communicated;
                }
                self.partner = Some((state, since, communicated));
                self.contact_since_start = true;
                if starting && self.state == S::PartnerDown {
                    return; // a starting partner announces where it will resume; wait for it
                }
                if self.state == S::Startup {
                    self.leave_startup(now, Some((state, since)), out);
                }
                self.follow_partner(now, out);
            }
            Event::UpdatesDone => {
                match (self.state, self.role) {
                    (S::Recover, _) => self.go(now, S::RecoverWait, out),
                    (S::PotentialConflict, Role::Primary) => self.go(now, S::ConflictDone, out),
                    (S::PotentialConflict, Role::Secondary) => self.go(now, S::Normal, out),
                    _ => {}
                }
                // The partner may already be where the new state waits for it.
                self.follow_partner(now, out);
            }
            Event::OperatorPartnerDown => {
                if matches!(
                    self.state,
                    S::Normal | S::CommunicationsInterrupted | S::ResolutionInterrupted
                ) {
                    self.go(now, S::PartnerDown, out);
                }
            }
        }
    }

    /// Advances timers to `now`, and keeps the stored time of last operation current: call at
    /// least once a second.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        if self.serving().answering != Answering::Nobody {
            self.p.last_operated = self.p.last_operated.max(now);
            // One second early: the clock is in whole seconds and ticks may be a second apart.
            if self.p.last_operated + 1 >= self.operated_persisted + OPERATION_PERSIST_SECS {
                self.operated_persisted = self.p.last_operated;
                out.push(Action::Persist(self.p));
            }
        }
        match self.state {
            ServerState::Startup if now >= self.startup_until => self.leave_startup(now, None, out),
            ServerState::CommunicationsInterrupted
                if self.contact_since_start
                    && self
                        .cfg
                        .auto_partner_down_secs
                        .is_some_and(|a| now >= self.p.state_since + a) =>
            {
                self.go(now, ServerState::PartnerDown, out)
            }
            ServerState::RecoverWait if now >= self.recover_wait_until => {
                self.go(now, ServerState::RecoverDone, out);
                self.follow_partner(now, out);
            }
            _ => {}
        }
    }

    /// STARTUP ends: with the partner's state known (link up), or on the startup timer.
    fn leave_startup(
        &mut self,
        now: u64,
        partner: Option<(ServerState, u64)>,
        out: &mut Vec<Action>,
    ) {
        use ServerState as S;
        // A state that needs the partner maps through its "communications failed" arc. A
        // recovery that was under way starts over: while we were down the partner, in
        // PARTNER-DOWN, may have bound more of our resources than the updates we had
        // (seed 5644433: resumed RECOVER-WAIT, then RECOVER-DONE and NORMAL without them).
        let mut next = match self.resume.state {
            S::Normal => S::CommunicationsInterrupted,
            S::PotentialConflict => S::ResolutionInterrupted,
            S::Startup | S::RecoverWait | S::RecoverDone => S::Recover,
            s => s,
        };
        if let Some((ps, psince)) = partner
            && ps == S::PartnerDown
            && !matches!(next, S::Recover | S::PartnerDown)
        {
            // RFC 8156 §8.3.2: the partner took over. If it did so after we last answered a
            // client, we only missed things: recover. If not, we may both have served:
            // reconcile. Our stored time may lag by OPERATION_PERSIST_SECS, and the partner's
            // time is on its clock: translated by the difference the link measured (within a
            // small margin), else allowed the whole skew_max_secs. A doubt goes to
            // reconciling, which is no safer than recovering when we did not serve: its
            // RESOLUTION-INTERRUPTED serves without the partner's bindings (seed 41060517:
            // with 49 s allowed, a server down before its partner's automatic PARTNER-DOWN
            // reconciled, lost the link and delegated a prefix the partner had given out).
            let (psince, margin) = match self.partner_skew_secs {
                Some(skew) => (
                    psince.saturating_add_signed(-skew),
                    SKEW_MEASURED_MARGIN_SECS,
                ),
                None => (psince, self.cfg.skew_max_secs),
            };
            let surely_after = self.resume.last_operated + OPERATION_PERSIST_SECS + margin;
            next = if psince > surely_after {
                S::Recover
            } else {
                S::PotentialConflict
            };
        }
        self.p.state = self.resume.state;
        self.go(now, next, out);
    }

    /// Applies the transition rows keyed by the partner's state, until nothing changes.
    fn follow_partner(&mut self, now: u64, out: &mut Vec<Action>) {
        use ServerState as S;
        for _ in 0..TRANSITIONS_PER_EVENT_MAX {
            let Some((ps, _, _)) = self.partner else {
                return;
            };
            if !self.link_up {
                return;
            }
            let next = match (self.state, ps) {
                (
                    S::CommunicationsInterrupted,
                    S::Normal | S::CommunicationsInterrupted | S::RecoverDone,
                ) => S::Normal,
                (
                    S::CommunicationsInterrupted,
                    S::PartnerDown
                    | S::PotentialConflict
                    | S::ConflictDone
                    | S::ResolutionInterrupted,
                ) => S::PotentialConflict,
                (
                    S::PartnerDown,
                    S::Normal
                    | S::CommunicationsInterrupted
                    | S::PartnerDown
                    | S::PotentialConflict
                    | S::ResolutionInterrupted
                    | S::ConflictDone,
                ) => S::PotentialConflict,
                (S::PartnerDown, S::RecoverDone) => S::Normal,
                (S::Recover, S::PotentialConflict | S::ResolutionInterrupted | S::ConflictDone) => {
                    S::PotentialConflict
                }
                (S::RecoverDone, S::Normal | S::RecoverDone) => S::Normal,
                (S::RecoverDone, S::PotentialConflict) => S::PotentialConflict,
                (S::ResolutionInterrupted, _) => S::PotentialConflict,
                (S::ConflictDone, S::Normal) => S::Normal,
                (S::Normal, S::PartnerDown | S::PotentialConflict | S::ResolutionInterrupted) => {
                    S::PotentialConflict
                }
                (S::Normal, S::Recover | S::RecoverWait) => S::CommunicationsInterrupted,
                _ => return,
            };
            if next == self.state {
                return;
            }
            self.go(now, next, out);
        }
    }

    fn go(&mut self, now: u64, to: ServerState, out: &mut Vec<Action>) {
        use ServerState as S;
        let from = self.state;
        if from == to {
            return;
        }
        // Preconditions, kept in release builds (one compare each): nothing enters STARTUP
        // (only a new endpoint starts there), and what is persisted is never STARTUP.
        assert!(
            to != S::Startup,
            "failover: transition {from} -> STARTUP is not a state change the machine makes"
        );
        if self.serving().answering != Answering::Nobody {
            self.p.last_operated = self.p.last_operated.max(now);
        }
        // Resuming PARTNER-DOWN after STARTUP keeps its start time: the partner compares it
        // with its own time of last operation (§8.3.2), and the partner's resources become
        // ours MCLT after that start, not after our restart. Other states start afresh (a
        // resumed COMMUNICATIONS-INTERRUPTED must not fire automatic PARTNER-DOWN at once).
        let resumed = from == S::Startup && to == self.resume.state && to == S::PartnerDown;
        self.state = to;
        self.p.state = to;
        if !resumed {
            self.p.state_since = now;
        }
        match to {
            S::PartnerDown if !resumed => self.p.partner_down_since = now,
            S::RecoverWait => {
                // RFC 8156 §8.6.2: wait out MCLT from TIME-OF-FAILURE, the last time this
                // server may have answered a client (stored, so at most OPERATION_PERSIST_SECS
                // behind), or from the restart when the store was lost. Only a server the
                // partner has never heard from can have granted nothing.
                self.recover_wait_until = if self.p.store_was_empty && !self.partner_knew_us {
                    now
                } else if self.resume.last_operated > 0 && !self.p.store_was_empty {
                    self.resume.last_operated + OPERATION_PERSIST_SECS + self.cfg.mclt_secs
                } else {
                    self.started_at + self.cfg.mclt_secs
                };
            }
            S::Normal => self.p.store_was_empty = false,
            _ => {}
        }
        out.push(Action::Changed { from, to });
        self.operated_persisted = self.p.last_operated;
        out.push(Action::Persist(self.p));
        if self.link_up {
            out.push(Action::SendState);
        }
        match to {
            S::Recover if self.link_up => out.push(if self.p.store_was_empty {
                Action::SendUpdReqAll
            } else {
                Action::SendUpdReq
            }),
            S::PotentialConflict if self.role == Role::Primary && self.link_up => {
                out.push(Action::SendUpdReq)
            }
            S::Normal => {
                out.push(Action::FlushUpdates);
                if self.role == Role::Secondary {
                    out.push(Action::SendPoolReq);
                }
            }
            _ => {}
        }
        if to == S::RecoverWait && now >= self.recover_wait_until {
            self.tick(now, out);
        }
    }

    /// The update request this state needs from the partner, if any: RECOVER asks for what it
    /// missed (or everything), POTENTIAL-CONFLICT has the primary ask first and the secondary
    /// once the primary is CONFLICT-DONE. Re-issued when the link comes back.
    pub fn pending_request(&self) -> Option<Action> {
        match (self.state, self.role) {
            (ServerState::Recover, _) => Some(if self.p.store_was_empty {
                Action::SendUpdReqAll
            } else {
                Action::SendUpdReq
            }),
            (ServerState::PotentialConflict, Role::Primary) => Some(Action::SendUpdReq),
            // The primary has our updates (CONFLICT-DONE): now we take its own.
            (ServerState::PotentialConflict, Role::Secondary)
                if self
                    .partner
                    .is_some_and(|p| p.0 == ServerState::ConflictDone) =>
            {
                Some(Action::SendUpdReq)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerState as S;

    const CFG: EndpointConfig = EndpointConfig {
        mclt_secs: 3600,
        auto_partner_down_secs: Some(60),
        startup_secs: 5,
        skew_max_secs: 5,
    };

    fn states(out: &[Action]) -> Vec<ServerState> {
        out.iter()
            .filter_map(|a| match a {
                Action::Changed { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    fn stored(state: ServerState, since: u64, alive: u64) -> Persisted {
        Persisted {
            state,
            state_since: since,
            last_operated: alive,
            partner_down_since: 0,
            communicated: true,
            store_was_empty: false,
        }
    }

    fn partner(state: ServerState, since: u64) -> Event {
        Event::PartnerState {
            state,
            since,
            starting: false,
            communicated: true,
        }
    }

    #[test]
    fn normal_loses_contact_then_auto_partner_down_after_timeout() {
        let mut e = Endpoint::start(Role::Primary, CFG, Some(stored(S::Normal, 0, 100)), 100);
        let mut out = Vec::new();
        e.handle(100, Event::LinkUp, &mut out);
        e.handle(100, partner(S::Normal, 0), &mut out);
        // STARTUP resumes NORMAL through COMMUNICATIONS-INTERRUPTED.
        assert_eq!(states(&out), vec![S::CommunicationsInterrupted, S::Normal]);
        assert_eq!(e.serving().answering, Answering::Everyone);
        out.clear();
        e.handle(200, Event::LinkDown, &mut out);
        assert_eq!(e.state(), S::CommunicationsInterrupted);
        assert!(e.serving().mclt_bounded);
        e.tick(259, &mut out);
        assert_eq!(e.state(), S::CommunicationsInterrupted);
        e.tick(260, &mut out);
        assert_eq!(e.state(), S::PartnerDown);
        let s = e.serving();
        assert!(!s.mclt_bounded);
        assert_eq!(s.partner_resources_from, Some(260 + 3600));
        // Persist comes before the STATE it announces (link is down here: no STATE).
        assert!(out.iter().any(|a| matches!(a, Action::Persist(p) if p.state == S::PartnerDown && p.partner_down_since == 260)));
    }

    #[test]
    fn no_automatic_partner_down_without_contact_since_start() {
        // Restarted, resumes COMMUNICATIONS-INTERRUPTED, never reaches the partner.
        let mut e = Endpoint::start(Role::Primary, CFG, Some(stored(S::Normal, 0, 100)), 1000);
        let mut out = Vec::new();
        e.tick(1005, &mut out);
        assert_eq!(e.state(), S::CommunicationsInterrupted);
        e.tick(100_000, &mut out);
        assert_eq!(
            e.state(),
            S::CommunicationsInterrupted,
            "it cannot know what the partner did meanwhile"
        );
        e.handle(100_001, Event::OperatorPartnerDown, &mut out);
        assert_eq!(e.state(), S::PartnerDown, "the operator can");
    }

    #[test]
    fn secondary_in_normal_answers_only_its_renews() {
        let mut e = Endpoint::start(Role::Secondary, CFG, Some(stored(S::Normal, 0, 10)), 10);
        let mut out = Vec::new();
        e.handle(10, Event::LinkUp, &mut out);
        e.handle(10, partner(S::Normal, 0), &mut out);
        assert_eq!(e.state(), S::Normal);
        assert_eq!(e.serving().answering, Answering::AddressedToUs);
        assert!(!e.serving().allocate_own);
        assert!(out.contains(&Action::SendPoolReq));
    }

    #[test]
    fn wiped_store_recovers_everything_waits_mclt_then_normal() {
        let mut e = Endpoint::start(Role::Secondary, CFG, None, 1000);
        let mut out = Vec::new();
        e.handle(1000, Event::LinkUp, &mut out);
        e.handle(1000, partner(S::PartnerDown, 500), &mut out);
        assert_eq!(e.state(), S::Recover);
        assert!(out.contains(&Action::SendUpdReqAll));
        assert_eq!(e.serving().answering, Answering::Nobody);
        out.clear();
        e.handle(1005, Event::UpdatesDone, &mut out);
        // The partner knew us: we may have granted leases just before the store was lost.
        assert_eq!(e.state(), S::RecoverWait);
        assert_eq!(e.next_timer(), Some(1000 + 3600));
        e.tick(4600, &mut out);
        assert_eq!(e.state(), S::RecoverDone);
        e.handle(4601, partner(S::Normal, 4601), &mut out);
        assert_eq!(e.state(), S::Normal);
    }

    #[test]
    fn brand_new_pair_skips_the_wait() {
        let mut a = Endpoint::start(Role::Secondary, CFG, None, 0);
        let mut out = Vec::new();
        a.handle(0, Event::LinkUp, &mut out);
        a.handle(
            0,
            Event::PartnerState {
                state: S::Recover,
                since: 0,
                starting: true,
                communicated: false,
            },
            &mut out,
        );
        assert_eq!(a.state(), S::Recover);
        out.clear();
        a.handle(1, Event::UpdatesDone, &mut out);
        assert_eq!(states(&out), vec![S::RecoverWait, S::RecoverDone]);
        a.handle(
            2,
            Event::PartnerState {
                state: S::RecoverDone,
                since: 2,
                starting: false,
                communicated: true,
            },
            &mut out,
        );
        assert_eq!(a.state(), S::Normal);
    }

    #[test]
    fn restarted_with_store_after_partner_took_over_recovers_and_waits_mclt() {
        // We ran until t=100; the partner went PARTNER-DOWN at 400 (after we died).
        let mut e = Endpoint::start(Role::Primary, CFG, Some(stored(S::Normal, 0, 100)), 1000);
        let mut out = Vec::new();
        e.handle(1000, Event::LinkUp, &mut out);
        e.handle(1000, partner(S::PartnerDown, 400), &mut out);
        assert_eq!(e.state(), S::Recover);
        assert!(
            out.contains(&Action::SendUpdReq),
            "a server with its store asks only for what it missed"
        );
        out.clear();
        e.handle(1001, Event::UpdatesDone, &mut out);
        assert_eq!(e.state(), S::RecoverWait);
        // MCLT from the stored time of last operation, which may lag by the persist interval.
        let until = 100 + OPERATION_PERSIST_SECS + 3600;
        assert_eq!(e.next_timer(), Some(until));
        e.tick(until - 1, &mut out);
        assert_eq!(e.state(), S::RecoverWait);
        e.tick(until, &mut out);
        assert_eq!(e.state(), S::RecoverDone);
        e.handle(until, partner(S::Normal, until), &mut out);
        assert_eq!(e.state(), S::Normal);
    }

    /// The last persisted endpoint state in `out`.
    fn last_persisted(out: &[Action]) -> Option<Persisted> {
        out.iter().rev().find_map(|a| match a {
            Action::Persist(p) => Some(*p),
            _ => None,
        })
    }

    #[test]
    fn time_of_last_operation_is_persisted_while_answering_only() {
        let mut e = Endpoint::start(Role::Primary, CFG, Some(stored(S::Normal, 0, 100)), 1000);
        let mut out = Vec::new();
        e.tick(1005, &mut out); // startup timer: COMMUNICATIONS-INTERRUPTED, answering
        assert_eq!(e.state(), S::CommunicationsInterrupted);
        let mut stored_at = last_persisted(&out)
            .expect("the transition persists")
            .last_operated;
        assert_eq!(
            stored_at, 100,
            "it has answered nobody since the restart yet"
        );
        for now in 1006..1100 {
            out.clear();
            e.tick(now, &mut out);
            if let Some(p) = last_persisted(&out) {
                assert!(p.last_operated > stored_at, "{p:?} after {stored_at}");
                stored_at = p.last_operated;
            }
            assert!(
                now - stored_at < OPERATION_PERSIST_SECS,
                "at {now} the stored time of last operation is still {stored_at}"
            );
        }
        // A server that answers nobody does not move it: RECOVER after losing the store.
        let mut r = Endpoint::start(Role::Primary, CFG, None, 0);
        out.clear();
        for now in 0..100 {
            r.tick(now, &mut out);
        }
        assert_eq!(r.state(), S::Recover);
        assert_eq!(r.persisted().last_operated, 0);
    }

    #[test]
    fn served_alone_past_partner_down_then_restarted_is_potential_conflict() {
        // Issue 10 item 1: partitioned in COMMUNICATIONS-INTERRUPTED, we keep serving; the
        // partner declares PARTNER-DOWN at 400; we serve on until 900 and restart. What we
        // stored says we operated after 400: both may have served the same resources.
        let mut b = Endpoint::start(Role::Secondary, CFG, Some(stored(S::Normal, 0, 100)), 100);
        let mut out = Vec::new();
        for now in 100..=900 {
            b.tick(now, &mut out);
        }
        assert_eq!(b.state(), S::CommunicationsInterrupted);
        let kept = last_persisted(&out).expect("persisted while serving");
        assert_eq!(kept.state_since, 105, "the state's start stays as it was");
        let mut b = Endpoint::start(Role::Secondary, CFG, Some(kept), 1000);
        out.clear();
        b.handle(1000, Event::LinkUp, &mut out);
        b.handle(1000, partner(S::PartnerDown, 400), &mut out);
        assert_eq!(b.state(), S::PotentialConflict);
        assert_eq!(b.serving().answering, Answering::Nobody);
    }

    #[test]
    fn recovering_server_restarted_recovers_again() {
        // Seeds 3092888 and 4114282: we last answered at 100, the partner went PARTNER-DOWN at
        // 400, we came back into RECOVER-WAIT, crashed there at 600 and restart. RECOVER-WAIT
        // answered nobody, so nothing can conflict: recover, do not reconcile.
        for state in [S::Recover, S::RecoverWait, S::RecoverDone] {
            let mut e = Endpoint::start(Role::Secondary, CFG, Some(stored(state, 550, 100)), 700);
            let mut out = Vec::new();
            e.handle(700, Event::LinkUp, &mut out);
            e.handle(700, partner(S::PartnerDown, 400), &mut out);
            assert_eq!(e.state(), S::Recover, "resumed {state}");
            assert!(
                out.contains(&Action::SendUpdReq),
                "asks again for what it missed"
            );
        }
        // Seed 5644433: with no partner to hear from, an interrupted recovery starts over
        // too; the partner may have bound more while we were down.
        for state in [S::RecoverWait, S::RecoverDone] {
            let mut e = Endpoint::start(Role::Secondary, CFG, Some(stored(state, 550, 100)), 700);
            let mut out = Vec::new();
            e.tick(705, &mut out);
            assert_eq!(e.state(), S::Recover, "resumed {state} alone");
            assert_eq!(e.serving().answering, Answering::Nobody);
        }
        // A partner that went down within the margin of our last operation: reconcile.
        let mut e = Endpoint::start(
            Role::Secondary,
            CFG,
            Some(stored(S::CommunicationsInterrupted, 300, 395)),
            700,
        );
        let mut out = Vec::new();
        e.handle(700, Event::LinkUp, &mut out);
        e.handle(700, partner(S::PartnerDown, 400), &mut out);
        assert_eq!(e.state(), S::PotentialConflict);
    }

    #[test]
    fn the_partners_takeover_time_is_read_through_the_measured_skew() {
        // Seed 41060517: with skew_max_secs 49 a server down 30 s before its partner's
        // PARTNER-DOWN could not tell, reconciled, and its RESOLUTION-INTERRUPTED served
        // without the partner's bindings. The link measures the difference; with it, only a
        // small margin is left for doubt.
        let cfg = EndpointConfig {
            skew_max_secs: 49,
            ..CFG
        };
        let restart = |skew: Option<i64>, partner_down_since: u64| {
            let mut e = Endpoint::start(
                Role::Secondary,
                cfg,
                Some(stored(S::CommunicationsInterrupted, 300, 395)),
                700,
            );
            let mut out = Vec::new();
            if let Some(skew) = skew {
                e.set_partner_skew(skew);
            }
            e.handle(700, Event::LinkUp, &mut out);
            e.handle(700, partner(S::PartnerDown, partner_down_since), &mut out);
            e.state()
        };
        // 30 s after our last operation, on a partner clock 20 s behind ours (our 445).
        assert_eq!(restart(Some(-20), 425), S::Recover);
        assert_eq!(
            restart(None, 425),
            S::PotentialConflict,
            "unmeasured: 49 s of doubt"
        );
        // On a partner clock 40 s ahead, 425 is our 385: before our last operation.
        assert_eq!(restart(Some(40), 425), S::PotentialConflict);
        // Within the margin of the measurement: doubt reconciles.
        assert_eq!(
            restart(
                Some(0),
                395 + OPERATION_PERSIST_SECS + SKEW_MEASURED_MARGIN_SECS
            ),
            S::PotentialConflict
        );
    }

    #[test]
    fn losing_the_partner_while_recovering_means_recovering_again() {
        // Seed 5262442: cut off in RECOVER-WAIT, the partner (PARTNER-DOWN) bound more of our
        // resources; RECOVER-DONE → NORMAL would not have waited for them.
        for state in [S::RecoverWait, S::RecoverDone] {
            let mut e = Endpoint::start(Role::Secondary, CFG, Some(stored(state, 550, 100)), 700);
            let mut out = Vec::new();
            e.handle(700, Event::LinkUp, &mut out);
            e.handle(700, partner(S::PartnerDown, 400), &mut out);
            assert_eq!(e.state(), S::Recover);
            e.handle(701, Event::UpdatesDone, &mut out);
            if state == S::RecoverDone {
                e.tick(100 + OPERATION_PERSIST_SECS + 3600, &mut out);
            }
            assert_eq!(e.state(), state, "got there");
            e.handle(5000, Event::LinkDown, &mut out);
            assert_eq!(e.state(), S::Recover, "from {state}");
            out.clear();
            e.handle(5001, Event::LinkUp, &mut out);
            e.handle(5001, partner(S::PartnerDown, 400), &mut out);
            assert_eq!(
                e.pending_request(),
                Some(Action::SendUpdReq),
                "asks again from {state} (the node re-issues it on link up)"
            );
        }
    }

    #[test]
    fn resumed_partner_down_keeps_its_start_times() {
        let mut kept = stored(S::PartnerDown, 300, 900);
        kept.partner_down_since = 300;
        let mut e = Endpoint::start(Role::Primary, CFG, Some(kept), 1000);
        let mut out = Vec::new();
        e.tick(1005, &mut out); // startup timer: resume PARTNER-DOWN alone
        assert_eq!(e.state(), S::PartnerDown);
        assert_eq!(
            e.state_since(),
            300,
            "announced to the partner as its start (§8.3.2)"
        );
        assert_eq!(e.persisted().partner_down_since, 300);
        assert_eq!(e.serving().partner_resources_from, Some(300 + 3600));
    }

    #[test]
    fn resolution_interrupted_renews_but_allocates_nothing() {
        let mut e = Endpoint::start(
            Role::Primary,
            CFG,
            Some(stored(S::PotentialConflict, 900, 900)),
            1000,
        );
        let mut out = Vec::new();
        e.tick(1005, &mut out);
        assert_eq!(e.state(), S::ResolutionInterrupted);
        let serving = e.serving();
        assert_eq!(serving.answering, Answering::Everyone);
        assert!(!serving.allocate_own && serving.partner_resources_from.is_none());
        assert!(serving.mclt_bounded);
    }

    #[test]
    fn partner_down_before_we_stopped_means_potential_conflict() {
        // We ran until 900 but the partner declared us down at 400: both may have served.
        let mut e = Endpoint::start(
            Role::Primary,
            CFG,
            Some(stored(S::CommunicationsInterrupted, 300, 900)),
            1000,
        );
        let mut out = Vec::new();
        e.handle(1000, Event::LinkUp, &mut out);
        e.handle(1000, partner(S::PartnerDown, 400), &mut out);
        assert_eq!(e.state(), S::PotentialConflict);
        assert!(
            out.contains(&Action::SendUpdReq),
            "the primary drives resolution"
        );
        assert_eq!(e.serving().answering, Answering::Nobody);
        out.clear();
        e.handle(1010, Event::UpdatesDone, &mut out);
        assert_eq!(e.state(), S::ConflictDone);
        e.handle(1011, partner(S::Normal, 1011), &mut out);
        assert_eq!(e.state(), S::Normal);
    }

    #[test]
    fn secondary_finishes_conflict_on_updates_done() {
        let mut e = Endpoint::start(
            Role::Secondary,
            CFG,
            Some(stored(S::PartnerDown, 300, 900)),
            1000,
        );
        let mut out = Vec::new();
        e.handle(1000, Event::LinkUp, &mut out);
        e.handle(1000, partner(S::CommunicationsInterrupted, 200), &mut out);
        assert_eq!(e.state(), S::PotentialConflict);
        assert!(
            !out.contains(&Action::SendUpdReq),
            "the secondary waits for the primary's UPDREQ"
        );
        e.handle(1005, Event::LinkDown, &mut out);
        assert_eq!(e.state(), S::ResolutionInterrupted);
        assert_eq!(e.serving().answering, Answering::Everyone);
        e.handle(1006, Event::LinkUp, &mut out);
        e.handle(1006, partner(S::PotentialConflict, 1000), &mut out);
        assert_eq!(e.state(), S::PotentialConflict);
        assert_eq!(
            e.pending_request(),
            None,
            "not before the primary has our updates"
        );
        e.handle(1008, partner(S::ConflictDone, 1008), &mut out);
        assert_eq!(e.pending_request(), Some(Action::SendUpdReq));
        e.handle(1010, Event::UpdatesDone, &mut out);
        assert_eq!(e.state(), S::Normal);
    }

    #[test]
    fn partner_down_ignores_starting_partner_and_heals_through_recover_done() {
        let mut e = Endpoint::start(
            Role::Primary,
            CFG,
            Some(stored(S::PartnerDown, 300, 900)),
            1000,
        );
        let mut out = Vec::new();
        e.tick(1005, &mut out); // startup timer: resume PARTNER-DOWN alone
        assert_eq!(e.state(), S::PartnerDown);
        e.handle(1006, Event::LinkUp, &mut out);
        e.handle(
            1006,
            Event::PartnerState {
                state: S::Recover,
                since: 0,
                starting: true,
                communicated: true,
            },
            &mut out,
        );
        assert_eq!(e.state(), S::PartnerDown);
        e.handle(1007, partner(S::Recover, 1007), &mut out);
        assert_eq!(
            e.state(),
            S::PartnerDown,
            "keeps serving while the partner recovers"
        );
        e.handle(5000, partner(S::RecoverDone, 5000), &mut out);
        assert_eq!(e.state(), S::Normal);
    }

    #[test]
    fn operator_partner_down_only_from_allowed_states() {
        let mut e = Endpoint::start(Role::Primary, CFG, None, 0);
        let mut out = Vec::new();
        e.handle(0, Event::OperatorPartnerDown, &mut out);
        assert_eq!(e.state(), S::Startup);
        e.tick(5, &mut out); // no partner: resume RECOVER alone (empty store)
        assert_eq!(e.state(), S::Recover);
        e.handle(6, Event::OperatorPartnerDown, &mut out);
        assert_eq!(
            e.state(),
            S::Recover,
            "a server that lost its store must not take over"
        );
    }

    #[test]
    fn wire_codes_round_trip() {
        for c in 1..=10 {
            assert_eq!(ServerState::from_u8(c).unwrap().to_u8(), c);
        }
        assert_eq!(ServerState::from_u8(0), None);
        assert_eq!(ServerState::from_u8(11), None);
    }
}
