//! The receipt-exchange control protocol spoken over the tunnel.
//!
//! Every message is one frame:
//!
//! ```text
//! off len field
//!   0   1 type
//!   1   2 payload length (big-endian), at most ferry_receipts::MAX_MESSAGE_LEN
//!   3   n payload: the canonical ferry-receipts encoding, or the fixed fields below
//! ```
//!
//! Over UDP one datagram carries exactly one frame ([`decode`]); over a byte stream frames
//! follow each other ([`decode_prefix`]). Every payload has a fixed length per type, so a
//! frame has exactly one valid encoding.

use ferry_receipts::{
    CoSignedReceipt, DecodeError, MAX_MESSAGE_LEN, ProbeChallenge, ProbeResponse, SessionAccept,
    SessionAddress, SessionOffer, SessionReject, SessionTunnel, SignedReceipt,
};

use thiserror::Error;

/// Version of this control protocol. v2: `Reject` and `Address` are relay-signed and bound to
/// the offer (frame types 0x05, 0x06); v1's unsigned ones (0x03, 0x04) are refused as
/// [`FrameError::Retired`].
pub const CONTROL_VERSION: u8 = 2;

/// UDP port of the control service on the relay's tunnel address (e.g. `10.77.0.1:51821`).
pub const CONTROL_PORT: u16 = 51821;
/// Frame header: type byte + u16 length.
pub const HEADER_LEN: usize = 3;
/// Largest frame this protocol produces or accepts.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_MESSAGE_LEN;

mod ty {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const ACCEPT: u8 = 0x02;
    /// v1's unsigned Reject and Address: retired.
    pub(super) const REJECT_V1: u8 = 0x03;
    pub(super) const ADDRESS_V1: u8 = 0x04;
    pub(super) const REJECT: u8 = 0x05;
    pub(super) const ADDRESS: u8 = 0x06;
    pub(super) const TUNNEL: u8 = 0x07;
    pub(super) const RECEIPT: u8 = 0x10;
    pub(super) const COSIGNED: u8 = 0x11;
    pub(super) const RECEIPT_REJECTED: u8 = 0x12;
    pub(super) const ACK: u8 = 0x13;
    pub(super) const RESYNC: u8 = 0x14;
    pub(super) const CLOSE: u8 = 0x20;
    pub(super) const FINAL_RECEIPT: u8 = 0x21;
    pub(super) const PROBE: u8 = 0x30;
    pub(super) const PROBE_REPLY: u8 = 0x31;
}

/// One control-protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → relay: open a paid session.
    Hello(SessionOffer),
    /// Relay → client: session opened, with its terms.
    Accept(SessionAccept),
    /// Relay → client: session refused, signed by the relay and naming the offer; its
    /// `reason` is a valid [`SessionRejectReason`] code (see [`reject_reason`]).
    Reject(SessionReject),
    /// Relay → client, right after `Accept` when the handshake ran outside the tunnel:
    /// the tunnel addresses assigned to the client's WireGuard key, signed by the relay and
    /// bound to the offer and the session.
    Address(SessionAddress),
    /// Relay → client, with `Accept` and `Address`: the relay's own tunnel address (control
    /// service, DNS) and the inner MTU, signed by the relay and bound to the session. A
    /// client configured by hand may ignore it; one that chose the relay from the directory
    /// needs it.
    Tunnel(SessionTunnel),
    /// Relay → client: a signed cumulative receipt to co-sign.
    Receipt(SignedReceipt),
    /// Client → relay: the co-signed receipt.
    CoSigned(CoSignedReceipt),
    /// Client → relay: the receipt with this seq is refused; the relay cuts the client off.
    ReceiptRejected {
        /// Seq of the refused receipt.
        seq: u64,
        /// Why.
        reason: ReceiptRejectReason,
    },
    /// Relay → client: the co-signed receipt `seq` is durably stored.
    Ack {
        /// Seq of the stored receipt.
        seq: u64,
    },
    /// Client → relay: "your receipt conflicts with this newer co-signed one you never
    /// acknowledged" (the relay restarted before storing it). It carries the relay's own
    /// signature, so the relay adopts it and continues from it instead of cutting off.
    Resync(CoSignedReceipt),
    /// Either side: end the session; the relay answers with a [`Message::FinalReceipt`]
    /// (or an `Ack` of the last receipt when nothing new is owed).
    Close,
    /// Relay → client: the last receipt of the session; co-sign it like any other.
    FinalReceipt(SignedReceipt),
    /// Directory → relay's Hello port: a ledger-signed reachability challenge.
    Probe(ProbeChallenge),
    /// Relay → directory: the relay-signed answer (smaller than the challenge).
    ProbeReply(ProbeResponse),
}

/// Why a relay refused a session offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionRejectReason {
    /// The offer is for another network.
    #[error("wrong network")]
    WrongNetwork,
    /// The offer is for another relay, or the voucher belongs to another client.
    #[error("offer names another relay or the voucher another client")]
    WrongKey,
    /// A signature (client or ledger) did not verify.
    #[error("bad signature")]
    BadSignature,
    /// The voucher expired.
    #[error("voucher expired")]
    VoucherExpired,
    /// The voucher has no allowance left on this relay.
    #[error("voucher allowance exhausted")]
    AllowanceExhausted,
    /// The relay has no room for another session.
    #[error("relay busy")]
    Busy,
    /// The relay's price is above the voucher's max price.
    #[error("relay's price is above the voucher's max price")]
    PriceAboveMax,
    /// The relay's owner is not sharing now (paused).
    #[error("the relay is not sharing now (its owner paused it)")]
    NotSharing,
    /// The relay's daily or monthly sharing quota is used up.
    #[error("the relay's sharing quota is used up until its reset")]
    QuotaReached,
    /// Outside the relay's sharing hours.
    #[error("the relay is outside its owner's sharing hours")]
    OutsideSchedule,
}

/// Why a client refused a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReceiptRejectReason {
    /// A counter exceeds the client's own count plus tolerance.
    #[error("relay claims more bytes than the client counted")]
    OverClaim,
    /// Counters decrease, or the seq conflicts with an earlier receipt.
    #[error("non-monotonic receipt")]
    NonMonotonic,
    /// The receipt names another session, relay, client or network.
    #[error("receipt for another session")]
    WrongSession,
    /// The relay signature does not verify.
    #[error("bad relay signature")]
    BadSignature,
    /// A counter, time or price exceeds what the ledger stores (2^63 - 1): the receipt could
    /// never be credited.
    #[error("receipt values beyond what the ledger accepts")]
    OutOfRange,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// More bytes are needed (stream decoding: read more and retry).
    #[error("incomplete frame: need {need} bytes, have {have}")]
    Incomplete {
        /// Bytes the frame needs in total.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Unknown type byte.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// Declared payload length is wrong for the type or above the maximum.
    #[error("bad payload length {len} for type {ty:#04x}")]
    BadLength {
        /// Type byte.
        ty: u8,
        /// Declared length.
        len: usize,
    },
    /// Bytes remained after the frame (datagram decoding).
    #[error("{0} trailing bytes after frame")]
    TrailingBytes(usize),
    /// A control protocol v1 frame type that v2 refuses (an unsigned Reject or Address).
    #[error(
        "control protocol v1 frame {0:#04x} (unsigned Reject/Address) is no longer accepted; \
         the relay runs an older ferry-agent"
    )]
    Retired(u8),
    /// A reason code is not defined.
    #[error("unknown reason code {0}")]
    UnknownReason(u8),
    /// The payload failed ferry-receipts decoding.
    #[error("payload")]
    Payload(#[from] DecodeError),
}

/// The reason of a decoded [`Message::Reject`] (the decoder accepts only defined codes).
pub fn reject_reason(r: &SessionReject) -> SessionRejectReason {
    SessionRejectReason::from_code(r.reason).unwrap_or(SessionRejectReason::Busy)
}

impl SessionRejectReason {
    /// Wire code (1..=10).
    pub fn code(self) -> u8 {
        match self {
            Self::WrongNetwork => 1,
            Self::WrongKey => 2,
            Self::BadSignature => 3,
            Self::VoucherExpired => 4,
            Self::AllowanceExhausted => 5,
            Self::Busy => 6,
            Self::PriceAboveMax => 7,
            Self::NotSharing => 8,
            Self::QuotaReached => 9,
            Self::OutsideSchedule => 10,
        }
    }

    fn from_code(c: u8) -> Result<Self, FrameError> {
        Ok(match c {
            1 => Self::WrongNetwork,
            2 => Self::WrongKey,
            3 => Self::BadSignature,
            4 => Self::VoucherExpired,
            5 => Self::AllowanceExhausted,
            6 => Self::Busy,
            7 => Self::PriceAboveMax,
            8 => Self::NotSharing,
            9 => Self::QuotaReached,
            10 => Self::OutsideSchedule,
            _ => return Err(FrameError::UnknownReason(c)),
        })
    }
}

impl ReceiptRejectReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::OverClaim => 1,
            Self::NonMonotonic => 2,
            Self::WrongSession => 3,
            Self::BadSignature => 4,
            Self::OutOfRange => 5,
        }
    }

    fn from_code(c: u8) -> Result<Self, FrameError> {
        Ok(match c {
            1 => Self::OverClaim,
            2 => Self::NonMonotonic,
            3 => Self::WrongSession,
            4 => Self::BadSignature,
            5 => Self::OutOfRange,
            _ => return Err(FrameError::UnknownReason(c)),
        })
    }
}

/// Encodes one frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let (t, payload) = match msg {
        Message::Hello(o) => (ty::HELLO, o.encode()),
        Message::Accept(a) => (ty::ACCEPT, a.encode()),
        Message::Reject(r) => (ty::REJECT, r.encode()),
        Message::Address(a) => (ty::ADDRESS, a.encode()),
        Message::Tunnel(t) => (ty::TUNNEL, t.encode()),
        Message::Receipt(r) => (ty::RECEIPT, r.encode()),
        Message::CoSigned(c) => (ty::COSIGNED, c.encode()),
        Message::Resync(c) => (ty::RESYNC, c.encode()),
        Message::ReceiptRejected { seq, reason } => {
            let mut p = seq.to_be_bytes().to_vec();
            p.push(reason.code());
            (ty::RECEIPT_REJECTED, p)
        }
        Message::Ack { seq } => (ty::ACK, seq.to_be_bytes().to_vec()),
        Message::Close => (ty::CLOSE, Vec::new()),
        Message::FinalReceipt(r) => (ty::FINAL_RECEIPT, r.encode()),
        Message::Probe(c) => (ty::PROBE, c.encode()),
        Message::ProbeReply(r) => (ty::PROBE_REPLY, r.encode()),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(t);
    // Payloads are fixed-size and far below u16::MAX (largest: SessionOffer, 396 bytes).
    out.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&payload);
    out
}

/// Decodes exactly one frame (one UDP datagram); trailing bytes are an error. Never
/// panics on any input, which makes it the fuzz target for this protocol.
pub fn decode(buf: &[u8]) -> Result<Message, FrameError> {
    let (msg, used) = decode_prefix(buf)?;
    if used != buf.len() {
        return Err(FrameError::TrailingBytes(buf.len() - used));
    }
    Ok(msg)
}

/// Decodes the first frame of `buf` and returns it with the number of bytes it used.
/// Returns [`FrameError::Incomplete`] when `buf` holds only part of a valid frame.
pub fn decode_prefix(buf: &[u8]) -> Result<(Message, usize), FrameError> {
    let Some(&t) = buf.first() else {
        return Err(FrameError::Incomplete {
            need: HEADER_LEN,
            have: 0,
        });
    };
    if t == ty::REJECT_V1 || t == ty::ADDRESS_V1 {
        return Err(FrameError::Retired(t));
    }
    let expected = payload_len(t).ok_or(FrameError::UnknownType(t))?;
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    if len != expected {
        return Err(FrameError::BadLength { ty: t, len });
    }
    let end = HEADER_LEN + len;
    let Some(p) = buf.get(HEADER_LEN..end) else {
        return Err(FrameError::Incomplete {
            need: end,
            have: buf.len(),
        });
    };
    let msg = match t {
        ty::HELLO => Message::Hello(SessionOffer::decode(p)?),
        ty::ACCEPT => Message::Accept(SessionAccept::decode(p)?),
        ty::REJECT => {
            let r = SessionReject::decode(p)?;
            SessionRejectReason::from_code(r.reason)?;
            Message::Reject(r)
        }
        ty::ADDRESS => Message::Address(SessionAddress::decode(p)?),
        ty::TUNNEL => Message::Tunnel(SessionTunnel::decode(p)?),
        ty::RECEIPT => Message::Receipt(SignedReceipt::decode(p)?),
        ty::COSIGNED => Message::CoSigned(CoSignedReceipt::decode(p)?),
        ty::RESYNC => Message::Resync(CoSignedReceipt::decode(p)?),
        ty::RECEIPT_REJECTED => Message::ReceiptRejected {
            seq: be_u64(&p[..8]),
            reason: ReceiptRejectReason::from_code(p[8])?,
        },
        ty::ACK => Message::Ack { seq: be_u64(p) },
        ty::CLOSE => Message::Close,
        ty::FINAL_RECEIPT => Message::FinalReceipt(SignedReceipt::decode(p)?),
        ty::PROBE => Message::Probe(ProbeChallenge::decode(p)?),
        ty::PROBE_REPLY => Message::ProbeReply(ProbeResponse::decode(p)?),
        _ => return Err(FrameError::UnknownType(t)),
    };
    Ok((msg, end))
}

/// The fixed payload length of each type, `None` for unknown types.
fn payload_len(t: u8) -> Option<usize> {
    Some(match t {
        ty::HELLO => SessionOffer::LEN,
        ty::ACCEPT => SessionAccept::LEN,
        ty::REJECT => SessionReject::LEN,
        ty::ADDRESS => SessionAddress::LEN,
        ty::TUNNEL => SessionTunnel::LEN,
        ty::RECEIPT | ty::FINAL_RECEIPT => SignedReceipt::LEN,
        ty::COSIGNED | ty::RESYNC => CoSignedReceipt::LEN,
        ty::RECEIPT_REJECTED => 9,
        ty::ACK => 8,
        ty::CLOSE => 0,
        ty::PROBE => ProbeChallenge::LEN,
        ty::PROBE_REPLY => ProbeResponse::LEN,
        _ => return None,
    })
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
