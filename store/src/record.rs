//! On-disk record format and the scanner used by recovery.
//!
//! ```text
//! file   := MAGIC (8 bytes "FERRYRS1") record*
//! record := off len field
//!             0   4 payload length n (big-endian u32, 1..=MAX_RECORD_PAYLOAD)
//!             4   8 checksum: SHA-256(length || payload)[..8]
//!            12   n payload: kind byte + body
//! ```
//! Kinds: 0x01 co-signed receipt (its canonical 332-byte encoding), 0x02 submitted marker
//! (session id + seq), 0x03 session open (accept + offer + opaque extra), 0x04 session
//! closed (session id). A record is valid only if it is complete and its checksum
//! matches; the scanner stops at the first invalid record.

use ferry_receipts::{CoSignedReceipt, SessionAccept, SessionId, SessionOffer};
use ring::digest;

/// File magic and format version.
pub const MAGIC: &[u8; 8] = b"FERRYRS1";
/// Record header: length + checksum.
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest payload accepted (guards allocation on a corrupt length).
pub const MAX_RECORD_PAYLOAD: usize = 4096;
/// Largest opaque `extra` in a [`SessionOpen`].
pub const MAX_EXTRA_LEN: usize = 256;

mod kind {
    pub(super) const COSIGNED: u8 = 0x01;
    pub(super) const SUBMITTED: u8 = 0x02;
    pub(super) const SESSION_OPEN: u8 = 0x03;
    pub(super) const SESSION_CLOSED: u8 = 0x04;
}

/// What the relay needs to re-admit a session's peer and resume it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOpen {
    /// The relay's signed accept (session terms).
    pub accept: SessionAccept,
    /// The client's offer (voucher, WireGuard key).
    pub offer: SessionOffer,
    /// Opaque shell data, e.g. the tunnel addresses assigned to the peer (≤ 256 bytes).
    pub extra: Vec<u8>,
}

/// One logical record.
// Records are short-lived values on the way to or from disk; boxing the receipt would
// only add an allocation per append.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A co-signed receipt (verified by the caller before storing).
    CoSigned(CoSignedReceipt),
    /// Every receipt of `session_id` up to `seq` reached the ledger.
    Submitted {
        /// Session.
        session_id: SessionId,
        /// Highest submitted seq.
        seq: u64,
    },
    /// A paid session was opened.
    SessionOpen(Box<SessionOpen>),
    /// A session ended (no more receipts will come).
    SessionClosed(SessionId),
}

impl Record {
    /// Kind byte + body.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Self::CoSigned(c) => {
                let mut p = vec![kind::COSIGNED];
                p.extend_from_slice(&c.encode());
                p
            }
            Self::Submitted { session_id, seq } => {
                let mut p = vec![kind::SUBMITTED];
                p.extend_from_slice(session_id.as_bytes());
                p.extend_from_slice(&seq.to_be_bytes());
                p
            }
            Self::SessionOpen(o) => {
                let mut p = vec![kind::SESSION_OPEN];
                p.extend_from_slice(&o.accept.encode());
                p.extend_from_slice(&o.offer.encode());
                p.extend_from_slice(&o.extra);
                p
            }
            Self::SessionClosed(s) => {
                let mut p = vec![kind::SESSION_CLOSED];
                p.extend_from_slice(s.as_bytes());
                p
            }
        }
    }

    /// Parses a payload; `None` if it is not a valid record.
    pub fn from_payload(p: &[u8]) -> Option<Self> {
        let (&k, body) = p.split_first()?;
        Some(match k {
            kind::COSIGNED => Self::CoSigned(CoSignedReceipt::decode(body).ok()?),
            kind::SUBMITTED => {
                if body.len() != 24 {
                    return None;
                }
                Self::Submitted {
                    session_id: SessionId(body[..16].try_into().ok()?),
                    seq: u64::from_be_bytes(body[16..].try_into().ok()?),
                }
            }
            kind::SESSION_OPEN => {
                let a = SessionAccept::LEN;
                let o = a + SessionOffer::LEN;
                if body.len() < o || body.len() - o > MAX_EXTRA_LEN {
                    return None;
                }
                Self::SessionOpen(Box::new(SessionOpen {
                    accept: SessionAccept::decode(&body[..a]).ok()?,
                    offer: SessionOffer::decode(&body[a..o]).ok()?,
                    extra: body[o..].to_vec(),
                }))
            }
            kind::SESSION_CLOSED => Self::SessionClosed(SessionId(body.try_into().ok()?)),
            _ => return None,
        })
    }

    /// The full framed record (header + payload).
    pub fn frame(&self) -> Vec<u8> {
        let payload = self.payload();
        let len = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        out.extend_from_slice(&len);
        out.extend_from_slice(&checksum(&len, &payload));
        out.extend_from_slice(&payload);
        out
    }
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> [u8; 8] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(len);
    ctx.update(payload);
    let d = ctx.finish();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.as_ref()[..8]);
    out
}

/// Result of scanning a log image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid records with their byte offsets, in file order.
    pub records: Vec<(u64, Record)>,
    /// Offset just past the last valid record: everything after it is a torn or corrupt tail.
    pub good_end: u64,
}

/// Scans a whole log image (magic included). Never panics on any input; stops at the
/// first incomplete, oversized, checksum-failing or unparsable record.
pub fn scan(buf: &[u8]) -> Option<Scan> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return None;
    }
    let mut pos = MAGIC.len();
    let mut records = Vec::new();
    while let Some(hdr) = buf.get(pos..pos + RECORD_HEADER_LEN) {
        let len: [u8; 4] = [hdr[0], hdr[1], hdr[2], hdr[3]];
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_RECORD_PAYLOAD {
            break;
        }
        let start = pos + RECORD_HEADER_LEN;
        let Some(payload) = buf.get(start..start + n) else {
            break;
        };
        if checksum(&len, payload)[..] != hdr[4..12] {
            break;
        }
        let Some(rec) = Record::from_payload(payload) else {
            break;
        };
        records.push((pos as u64, rec));
        pos = start + n;
    }
    Some(Scan {
        records,
        good_end: pos as u64,
    })
}
