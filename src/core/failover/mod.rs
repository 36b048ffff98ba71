//! RFC 8156 failover, sans-IO: the partner protocol's codec ([`wire`]), the endpoint state
//! machine ([`state`]), the lazy-update session ([`peer`]) and a whole server node ([`node`]).

pub mod codec;
pub mod connect;
pub mod link;
pub mod node;
pub mod pd_share;
pub mod peer;
pub mod persist;
pub mod pools_digest;
pub mod state;
pub mod wire;
