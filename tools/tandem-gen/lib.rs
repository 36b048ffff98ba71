//! `tandem-gen`: a DHCPv6 load generator that checks what it is given.
//!
//! It simulates many clients, each running the real client exchanges (Solicit, Request, Renew,
//! Rebind, Release, with bounded RFC 8415 retransmission), over several threads, at a target
//! rate or as fast as a window of outstanding exchanges allows, bounded by count and by time.
//! It measures each phase with HDR histograms and checks, across all threads, that no address
//! or prefix is held by two clients, that renewals keep the lease, and that every lease lies in
//! the configured pools. A violation makes the exit code 1; a failed exchange (timed out or
//! refused) makes it 3, unless `--max-failed-pct` allows that share of a phase's exchanges.
//!
//! Given several `--server`s it sends every message to each (as a relay agent configured with
//! two server addresses does), takes the first usable answer and counts the others, and reports
//! per phase the longest time no exchange completed while some were outstanding: the outage a
//! client population sees when a server of a pair dies under load. Its clients act as RFC 8415
//! clients across such a failover (see [`client`]): they name the server that answered them
//! last, and a Renew nobody answers goes on as a Rebind to any server.

#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod client;
pub mod net;
pub mod reflector;
pub mod stats;
