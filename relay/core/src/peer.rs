//! Peer identities and kinds, shared by the relay and its hook.

/// Identifies a peer in the table (stable while the peer exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    /// The raw slot number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Whether a peer is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// Configured by the operator: forwarded, never metered.
    Trusted,
    /// A paying client: forwarded only while the hook holds a live session for it.
    Paid,
}
