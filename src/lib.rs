//! Tandem: a DHCPv6 server (RFC 8415) built for failover pairs (RFC 8156).
//!
//! The crate is split by the I/O boundary. Everything under [`wire`], [`pool`], [`lease`] and
//! [`engine`] is sans-IO: it takes bytes, events and a clock value and returns bytes and store
//! writes. Sockets, threads, timers and disk live in [`edge`] and [`store`].
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod edge;
pub mod engine;
pub mod failover;
pub mod lease;
pub mod pool;
pub mod sim;
pub mod store;
pub mod wire;
