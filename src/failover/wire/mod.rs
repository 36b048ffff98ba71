//! RFC 8156 failover wire codec (being written).
