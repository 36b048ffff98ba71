//! RFC 8156 failover: the partner protocol's codec ([`wire`]) and the endpoint state machine
//! ([`state`]), both sans-IO.

pub mod state;
pub mod wire;
