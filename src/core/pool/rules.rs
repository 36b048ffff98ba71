//! What the failover state allows the allocator to do.

/// Failover owner bit of a resource (RFC 8156 §4.2.1, independent allocation): addresses with
/// bit 127 set belong to the primary (1), the others to the secondary (0). Prefixes are split
/// by the pool's share, which the primary moves (`pool::share`, `failover::pd_share`).
pub const PRIMARY_BIT: usize = 1;

/// What the failover state allows when allocating and how long leases may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// May hand out new resources whose owner bit is 0 / 1.
    pub owned: [bool; 2],
    /// From this time (unix secs) the other half may be used too, once ours is used up.
    pub partner_from: Option<u64>,
    /// Cap client lifetimes at max(acknowledged partner lifetime, now) + this.
    pub mclt_secs: Option<u64>,
    /// Under failover, the owner bit of the partner's half (None: no partner).
    pub partner_bit: Option<usize>,
}

impl Rules {
    /// A server on its own: every resource, no cap.
    pub const STANDALONE: Rules = Rules {
        owned: [true, true],
        partner_from: None,
        mclt_secs: None,
        partner_bit: None,
    };

    /// Whether a new lease may be made on a resource with owner bit `bit` at `now`.
    pub fn may_take(&self, bit: usize, now: u64) -> bool {
        self.owned[bit] || self.partner_from.is_some_and(|t| now >= t)
    }
}
