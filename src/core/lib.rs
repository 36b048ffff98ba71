//! Tandem's sans-IO core: a DHCPv6 server (RFC 8415) built for failover pairs (RFC 8156).
//!
//! Everything here takes bytes, events and a clock value and returns bytes, lease writes and
//! actions. No socket, thread, clock, disk, TLS or logging backend: this crate does not depend
//! on one, so the compiler keeps the boundary. The edge (`tandem-server`) and the simulator
//! (`tandem-sim`) drive it.
//!
//! From the ground up: [`wire`] (DHCPv6 codec), [`config`] (the configuration model), [`lease`]
//! (the lease record), [`pool`] (allocation), [`engine`] (RFC 8415 server logic), [`failover`]
//! (RFC 8156 codec, state machine, lazy updates, node).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod failover;
pub mod lease;
pub mod leasequery;
pub mod limits;
pub mod pool;
pub mod wire;
