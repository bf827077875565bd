//! Fixed-layout big-endian reader/writer shared by every message.

use crate::{DecodeError, WIRE_VERSION};

/// Upper bound on any encoded Ferry message; decoders of length-prefixed streams use it
/// to refuse absurd lengths before allocating.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Message type bytes (second byte of every encoding, after the version).
pub(crate) mod msg_type {
    pub(crate) const VOUCHER: u8 = 0x01;
    pub(crate) const SESSION_OFFER: u8 = 0x02;
    pub(crate) const SESSION_ACCEPT: u8 = 0x03;
    pub(crate) const SESSION_ADDRESS: u8 = 0x04;
    pub(crate) const SESSION_REJECT: u8 = 0x05;
    pub(crate) const SESSION_TUNNEL: u8 = 0x06;
    pub(crate) const RECEIPT: u8 = 0x10;
    pub(crate) const COSIGNED_RECEIPT: u8 = 0x11;
    pub(crate) const RECEIPT_REFUSAL: u8 = 0x12;
    pub(crate) const RELAY_DESCRIPTOR: u8 = 0x30;
    pub(crate) const DIRECTORY_ANNOTATION: u8 = 0x31;
    pub(crate) const PROBE_CHALLENGE: u8 = 0x32;
    pub(crate) const PROBE_RESPONSE: u8 = 0x33;
}

pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(ty: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(WIRE_VERSION);
        buf.push(ty);
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the total length, version and type up front, so later reads cannot fail
    /// halfway through a message.
    pub(crate) fn new(buf: &'a [u8], ty: u8, len: usize) -> Result<Self, DecodeError> {
        if buf.is_empty() {
            return Err(DecodeError::Truncated { need: len, have: 0 });
        }
        if buf[0] != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion(buf[0]));
        }
        if buf.len() < len {
            return Err(DecodeError::Truncated {
                need: len,
                have: buf.len(),
            });
        }
        if buf[1] != ty {
            return Err(DecodeError::WrongType {
                found: buf[1],
                expected: ty,
            });
        }
        if buf.len() > len {
            return Err(DecodeError::TrailingBytes(buf.len() - len));
        }
        Ok(Self { buf, pos: 2 })
    }

    /// For variable-length messages: checks version and type and that at least the
    /// `fixed` leading bytes are present (the fixed part reads infallibly); the variable
    /// part is read with [`Reader::take`], and [`Reader::finish`] refuses trailing bytes.
    pub(crate) fn prefix(buf: &'a [u8], ty: u8, fixed: usize) -> Result<Self, DecodeError> {
        let head = buf.get(..fixed).unwrap_or(buf);
        Self::new(head, ty, fixed)?;
        Ok(Self { buf, pos: 2 })
    }

    /// The next `n` bytes, or `Truncated`.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.saturating_add(n);
        let Some(out) = self.buf.get(self.pos..end) else {
            return Err(DecodeError::Truncated {
                need: end,
                have: self.buf.len(),
            });
        };
        self.pos = end;
        Ok(out)
    }

    /// Ends a variable-length message: no bytes may follow.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.array())
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // Length was checked in `new`; the slice is in bounds for fixed layouts.
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}
