//! DHCPv6 wire codec (placeholder; being written).
