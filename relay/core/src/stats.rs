//! Counters and drop reasons: plain numbers the telemetry crate can export.

use boringtun::noise::errors::WireGuardError;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Inner destination blocked by the egress policy.
    Policy,
    /// Inner destination is the relay's tunnel address, port not served.
    TunnelAddress,
    /// Inner source not in the sending peer's allowed IPs (spoofing).
    AllowedIps,
    /// Per-client rate limit exceeded.
    RateLimit,
    /// Per-source handshake limit exceeded while under load.
    HandshakeRateLimit,
    /// Handshake or data for a peer not in the table.
    UnknownPeer,
    /// Packet from the egress side with no peer owning its destination.
    NoRoute,
    /// Peer has no known endpoint yet (it never contacted us).
    NoEndpoint,
    /// Not a WireGuard message or not a valid inner IP packet.
    Malformed,
    /// Authentication failed (bad MAC or AEAD tag, wrong key or index).
    Auth,
    /// Replayed or out-of-window counter, or stale handshake timestamp.
    Replay,
    /// Data for a session that no longer exists or has expired.
    NoSession,
    /// Handshake refused because the relay is under load and no valid cookie was presented.
    UnderLoad,
    /// The caller's buffer was too small.
    BufferTooSmall,
    /// Any other protocol error.
    Protocol,
    /// Refused by the metering hook (credit window full, session not active).
    CreditWindow,
    /// A paid peer without a live session (ended, not yet admitted, or no metering hook).
    PaidNoSession,
    /// Destination port closed by the exit port policy (e.g. SMTP).
    ExitPort,
    /// Over the total rate the owner shares with all paid clients together.
    ShareRate,
    /// The owner's daily or monthly sharing quota is used up.
    Quota,
}

impl DropReason {
    /// Every reason, in a fixed order (for exporting).
    pub const ALL: [Self; 20] = [
        Self::Policy,
        Self::TunnelAddress,
        Self::AllowedIps,
        Self::RateLimit,
        Self::HandshakeRateLimit,
        Self::UnknownPeer,
        Self::NoRoute,
        Self::NoEndpoint,
        Self::Malformed,
        Self::Auth,
        Self::Replay,
        Self::NoSession,
        Self::UnderLoad,
        Self::BufferTooSmall,
        Self::Protocol,
        Self::CreditWindow,
        Self::PaidNoSession,
        Self::ExitPort,
        Self::ShareRate,
        Self::Quota,
    ];

    /// A stable snake_case name (metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::TunnelAddress => "tunnel_address",
            Self::AllowedIps => "allowed_ips",
            Self::RateLimit => "rate_limit",
            Self::HandshakeRateLimit => "handshake_rate_limit",
            Self::UnknownPeer => "unknown_peer",
            Self::NoRoute => "no_route",
            Self::NoEndpoint => "no_endpoint",
            Self::Malformed => "malformed",
            Self::Auth => "auth",
            Self::Replay => "replay",
            Self::NoSession => "no_session",
            Self::UnderLoad => "under_load",
            Self::BufferTooSmall => "buffer_too_small",
            Self::Protocol => "protocol",
            Self::CreditWindow => "credit_window",
            Self::PaidNoSession => "paid_no_session",
            Self::ExitPort => "exit_port",
            Self::ShareRate => "share_rate",
            Self::Quota => "quota",
        }
    }

    fn slot(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Maps a boringtun error into a drop reason.
    pub(crate) fn from_wg(e: &WireGuardError) -> Self {
        use WireGuardError as E;
        match e {
            E::WrongIndex | E::WrongKey | E::InvalidMac | E::InvalidAeadTag => Self::Auth,
            E::InvalidCounter | E::DuplicateCounter | E::WrongTai64nTimestamp => Self::Replay,
            E::NoCurrentSession | E::ConnectionExpired => Self::NoSession,
            E::UnderLoad => Self::UnderLoad,
            E::DestinationBufferTooSmall => Self::BufferTooSmall,
            E::InvalidPacket | E::IncorrectPacketLength | E::WrongPacketType => Self::Malformed,
            E::UnexpectedPacket | E::InvalidTai64nTimestamp | E::LockFailed => Self::Protocol,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relay-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// UDP datagrams handed to the relay.
    pub udp_rx_packets: u64,
    /// UDP datagrams the relay asked to send.
    pub udp_tx_packets: u64,
    /// Inner packets written towards egress (accepted client traffic).
    pub egress_tx_packets: u64,
    /// Inner packets from egress encapsulated to a client.
    pub egress_rx_packets: u64,
    /// Handshakes we answered (responder) or completed (initiator).
    pub handshakes: u64,
    /// Cookie replies sent because we were under load.
    pub cookie_replies: u64,
    /// Client endpoint changes (roaming).
    pub roams: u64,
    /// ICMP "administratively prohibited" answers sent to clients for policy-blocked packets.
    pub prohibited_answers: u64,
    /// Download packets over a client's rate that waited in the shaper instead of being dropped.
    pub shaped_packets: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// How many packets were dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.slot()]
    }

    /// All drop counters.
    pub fn drop_counts(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops(*r)))
    }

    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.slot()] += 1;
    }
}

/// Per-peer byte counters of accepted traffic (after allowed-IPs, policy and rate limit), u64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Inner bytes from the client forwarded to egress (client upload).
    pub from_client_bytes: u64,
    /// Inner bytes from egress encapsulated to the client (client download).
    pub to_client_bytes: u64,
    /// Packets from the client forwarded.
    pub from_client_packets: u64,
    /// Packets sent to the client.
    pub to_client_packets: u64,
}

impl PeerCounters {
    /// Total accepted bytes both ways (what metering bills).
    pub fn total_bytes(&self) -> u64 {
        self.from_client_bytes.saturating_add(self.to_client_bytes)
    }
}

/// Session facts from boringtun's `stats()` tuple, in named fields.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TunnelStats {
    /// Time since the last completed handshake, if any.
    pub since_last_handshake: Option<std::time::Duration>,
    /// Estimated packet loss (0..1).
    pub loss: f32,
    /// Last handshake round-trip time in ms, if measured.
    pub rtt_ms: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_slots_and_names() {
        let mut s = Stats::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                s.count_drop(*r);
            }
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.drops(*r), i as u64 + 1, "{r}");
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
