//! Configuration, verdicts, states and events of [`super::RelaySession`].

use std::sync::Arc;
use std::time::Duration;

use ferry_receipts::{CoSignedReceipt, NetworkId, PublicKey, SigningKey, VerifyError};
use thiserror::Error;

use crate::proto::{Message, ReceiptRejectReason};

const MIB: u64 = 1 << 20;

/// What happens when unacknowledged bytes reach the credit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditMode {
    /// Drop every packet that would exceed the window.
    Stop,
    /// Beyond the window, forward (and count) at most this many bytes per second.
    Throttle {
        /// Free rate in bytes per second.
        free_rate_bytes_per_sec: u64,
    },
}

/// Per-session metering policy (validated plain struct; the agent builds it from TOML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Issue a receipt once this many bytes are not yet covered by one (N).
    pub receipt_every_bytes: u64,
    /// Issue a receipt at least this often while there are uncovered bytes (T).
    pub receipt_every: Duration,
    /// Credit window W: at most this many bytes beyond the last durably stored co-signed
    /// receipt are forwarded (Stop mode).
    pub credit_window_bytes: u64,
    /// Stop or throttle beyond the window.
    pub mode: CreditMode,
    /// Resend the latest unacknowledged receipt after this long without a co-signature.
    pub retransmit_after: Duration,
    /// Cut the client off when a receipt stays unanswered this long.
    pub cosign_timeout: Duration,
    /// After [`RelaySession::close`], wait this long for the final co-signature.
    pub close_grace: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            receipt_every_bytes: 4 * MIB,
            receipt_every: Duration::from_secs(30),
            credit_window_bytes: 16 * MIB,
            mode: CreditMode::Stop,
            retransmit_after: Duration::from_secs(2),
            cosign_timeout: Duration::from_secs(60),
            close_grace: Duration::from_secs(10),
        }
    }
}

/// A metering configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// N must be non-zero and no larger than W, or a blocked client would never see a receipt.
    #[error("receipt-every-bytes ({n}) must be in 1..=credit-window-bytes ({w})")]
    ReceiptEveryBytes {
        /// N.
        n: u64,
        /// W.
        w: u64,
    },
    /// A duration is zero.
    #[error("{0} must be non-zero")]
    ZeroDuration(&'static str),
}

impl RelayConfig {
    /// Checks the invariants the state machine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.receipt_every_bytes == 0 || self.receipt_every_bytes > self.credit_window_bytes {
            return Err(ConfigError::ReceiptEveryBytes {
                n: self.receipt_every_bytes,
                w: self.credit_window_bytes,
            });
        }
        for (d, name) in [
            (self.receipt_every, "receipt-every"),
            (self.retransmit_after, "retransmit-after"),
            (self.cosign_timeout, "cosign-timeout"),
            (self.close_grace, "close-grace"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(())
    }
}

/// The relay's identity and the network it serves.
#[derive(Debug, Clone)]
pub struct RelayIdentity {
    /// Network.
    pub network_id: NetworkId,
    /// Ledger key vouchers must be signed with.
    pub ledger_key: PublicKey,
    /// Relay receipt-signing key.
    pub key: Arc<SigningKey>,
}

impl RelayIdentity {
    /// A signed refusal of `offer` (the Hello's answer when it is not admitted).
    pub fn reject(
        &self,
        offer: &ferry_receipts::SessionOffer,
        reason: crate::SessionRejectReason,
    ) -> crate::Message {
        crate::Message::Reject(
            ferry_receipts::SessionReject::for_offer(self.network_id, offer, reason.code())
                .sign(&self.key),
        )
    }

    /// The signed tunnel addresses of the session `accept` opened for `offer`.
    pub fn address(
        &self,
        offer: &ferry_receipts::SessionOffer,
        accept: &ferry_receipts::SessionAccept,
        v4: Option<std::net::Ipv4Addr>,
        v6: Option<std::net::Ipv6Addr>,
    ) -> crate::Message {
        crate::Message::Address(
            ferry_receipts::SessionAddress::for_session(offer, accept, v4, v6).sign(&self.key),
        )
    }

    /// The signed tunnel facts (our tunnel addresses, DNS, MTU) of the session `accept` opened.
    pub fn tunnel(
        &self,
        accept: &ferry_receipts::SessionAccept,
        v4: Option<std::net::Ipv4Addr>,
        v6: Option<std::net::Ipv6Addr>,
        mtu: u16,
        dns: u8,
    ) -> crate::Message {
        crate::Message::Tunnel(
            ferry_receipts::SessionTunnel::for_session(accept, v4, v6, mtu, dns).sign(&self.key),
        )
    }

    /// The signed answer to a reachability probe, or `None` (say nothing). A directory probe must name this relay and network, be signed by
    /// our ledger and issued within [`PROBE_SKEW_SECS`] of `unix_ts`; a client's ping
    /// ([`ferry_receipts::ProbeChallenge::ping`]) must name this relay and network.
    pub fn answer_probe(
        &self,
        challenge: &ferry_receipts::ProbeChallenge,
        unix_ts: u64,
    ) -> Option<crate::Message> {
        if !challenge.is_ping() {
            challenge
                .verify(
                    &self.network_id,
                    &self.key.public_key(),
                    &self.ledger_key,
                    unix_ts,
                    PROBE_SKEW_SECS,
                )
                .ok()?;
        } else if challenge.network_id != self.network_id
            || challenge.relay_key != self.key.public_key()
        {
            return None;
        }
        Some(crate::Message::ProbeReply(
            challenge.response().sign(&self.key),
        ))
    }
}

/// How far a probe challenge's time may be from the relay's clock (routers without a
/// real-time clock are off until NTP runs; a relay that far off refuses vouchers anyway).
pub const PROBE_SKEW_SECS: u64 = 600;

/// Whether a packet may be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; its bytes were counted.
    Forward,
    /// Drop it; nothing was counted.
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Stop mode, credit window full.
    CreditExhausted,
    /// Throttle mode, credit window full and free-rate bucket empty.
    Throttled,
    /// The voucher's byte allowance is used up.
    AllowanceExhausted,
    /// The session is cut off or closing.
    NotActive,
}

/// Session lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Forwarding (subject to the credit window).
    Active,
    /// Cut off; the shell should remove the peer.
    CutOff(CutOffReason),
    /// Final receipt sent, waiting for its co-signature.
    Closing,
    /// Done; nothing more will be sent.
    Closed,
}

/// Why a client was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOffReason {
    /// The client rejected a receipt.
    Rejected(ReceiptRejectReason),
    /// A receipt stayed unanswered for `cosign_timeout`.
    Unresponsive,
}

/// Things the shell should know about (logging, metrics, peer removal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// The client is cut off: remove the peer.
    CutOff(CutOffReason),
    /// The voucher allowance or validity ran out; the session is closing.
    AllowanceExhausted,
    /// The session ended; `acknowledged` says whether the last receipt was co-signed.
    Closed {
        /// True when every counted byte is covered by a stored co-signed receipt.
        acknowledged: bool,
    },
}

/// Outcome of a valid co-signed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CosignOutcome {
    /// New: store it durably (fsync), then call [`RelaySession::persisted`].
    Persist(CoSignedReceipt),
    /// Already stored earlier (client retransmission): send this `Ack` again.
    AlreadyPersisted(Message),
}

/// Why a co-signed receipt was not accepted. The session state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CosignError {
    /// It does not match any receipt this session issued (and still remembers).
    #[error("co-signed receipt does not match an issued receipt")]
    NotIssued,
    /// Older than the latest stored one.
    #[error("stale co-signed receipt")]
    Stale,
    /// Signature or network check failed.
    #[error("verification failed")]
    Verify(#[from] VerifyError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ferry_receipts::{ProbeChallenge, Signature};

    use super::*;

    const NET: NetworkId = NetworkId([1; 16]);
    const T: u64 = 1_800_000_000;

    fn identity(ledger: &SigningKey) -> RelayIdentity {
        RelayIdentity {
            network_id: NET,
            ledger_key: ledger.public_key(),
            key: Arc::new(SigningKey::from_seed(&[2; 32])),
        }
    }

    fn challenge(relay: PublicKey, signer: &SigningKey, at: u64) -> ProbeChallenge {
        ProbeChallenge {
            network_id: NET,
            ledger_key: PublicKey([0; 32]),
            relay_key: relay,
            nonce: [7; 16],
            issued_at: at,
            signature: Signature::ZERO,
        }
        .sign(signer)
    }

    #[test]
    fn a_relay_answers_only_fresh_probes_from_its_ledger_for_itself() {
        let ledger = SigningKey::from_seed(&[1; 32]);
        let id = identity(&ledger);
        let me = id.key.public_key();
        let c = challenge(me, &ledger, T);
        let Some(crate::Message::ProbeReply(r)) = id.answer_probe(&c, T + PROBE_SKEW_SECS) else {
            panic!("no answer");
        };
        assert!(r.answers(&c));
        assert!(
            id.answer_probe(&c, T + PROBE_SKEW_SECS + 1).is_none(),
            "stale"
        );
        let stranger = SigningKey::from_seed(&[9; 32]);
        assert!(
            id.answer_probe(&challenge(me, &stranger, T), T).is_none(),
            "not our ledger"
        );
        let other_relay = stranger.public_key();
        assert!(
            id.answer_probe(&challenge(other_relay, &ledger, T), T)
                .is_none(),
            "not us"
        );
    }

    #[test]
    fn a_relay_answers_a_clients_ping_for_itself_without_a_signature_or_clock() {
        let ledger = SigningKey::from_seed(&[1; 32]);
        let id = identity(&ledger);
        let me = id.key.public_key();
        let ping = ferry_receipts::ProbeChallenge::ping(id.network_id, me, [3; 16], 0);
        // No clock check: a ping proves nothing about time, and an old one replayed gets a
        // reply the size of the question.
        let Some(crate::Message::ProbeReply(r)) = id.answer_probe(&ping, T) else {
            panic!("no answer to a ping");
        };
        assert!(r.answers(&ping));
        let mut other = ping.clone();
        other.relay_key = SigningKey::from_seed(&[9; 32]).public_key();
        assert!(id.answer_probe(&other, T).is_none(), "not us");
        let mut other = ping.clone();
        other.network_id.0[0] ^= 1;
        assert!(id.answer_probe(&other, T).is_none(), "not our network");
        // A challenge with a zero ledger key but a signature is no ping, and no ledger's.
        let mut half = ping;
        half.signature = ferry_receipts::Signature([1; 64]);
        assert!(id.answer_probe(&half, T).is_none());
    }
}
