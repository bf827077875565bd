use thiserror::Error;

/// Why bytes could not be decoded into a Ferry message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the fixed layout was complete.
    #[error("message truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the layout requires.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The version byte is not one this build understands.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// The message type byte does not match the expected message.
    #[error("wrong message type {found:#04x}, expected {expected:#04x}")]
    WrongType {
        /// Type byte found.
        found: u8,
        /// Type byte expected.
        expected: u8,
    },
    /// Bytes remained after a complete message.
    #[error("{0} trailing bytes after message")]
    TrailingBytes(usize),
    /// A field holds a value the format forbids.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

/// Why a message failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The relay's signature does not verify under the relay key in the message.
    #[error("relay signature invalid")]
    BadRelaySignature,
    /// The client's signature does not verify under the client key in the message.
    #[error("client signature invalid")]
    BadClientSignature,
    /// The ledger's signature does not verify under the expected ledger key.
    #[error("ledger signature invalid")]
    BadLedgerSignature,
    /// The message is for another Ferry network.
    #[error("wrong network id")]
    WrongNetwork,
    /// The message names a different key than the verifier expected.
    #[error("unexpected key in message")]
    WrongKey,
    /// The voucher has expired at the verification time.
    #[error("voucher expired")]
    Expired,
}
