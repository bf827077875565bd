//! The per-client download shaper: packets over a client's rate wait (up to ~50 ms worth of
//! the rate) instead of being dropped, so TCP through a TUN egress sees a delay it adapts to
//! rather than a loss it must recover from. Beyond the queue bound it tail-drops.
//!
//! Packets are held as plaintext and metered, encrypted and counted only when released: a
//! held packet costs the client nothing until it is actually sent. A removed peer's packets
//! are not searched out: they are discarded when due, because the slot's next owner has
//! another serial. Buffers are pooled, so steady-state shaping allocates nothing per packet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::peer::PeerId;

/// Most bytes held for all peers together (router RAM: 64–128 MB).
pub(crate) const MAX_HELD_TOTAL: usize = 4 * 1024 * 1024;

/// One held packet, ordered by release time, then arrival.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Instant,
    seq: u64,
    peer: PeerId,
    /// Tells a removed peer's packets from those of the slot's next owner.
    serial: u64,
    buf: usize,
}

/// Held packets of all peers, released in time order.
#[derive(Default)]
pub(crate) struct Shaper {
    due: BinaryHeap<Reverse<Held>>,
    bufs: Vec<Vec<u8>>,
    free: Vec<usize>,
    seq: u64,
    held_bytes: usize,
    /// Set when a push became the earliest release (the shell must re-arm its timer).
    rearm: bool,
}

impl Shaper {
    /// Whether `len` more bytes fit the relay-wide bound.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.held_bytes + len <= MAX_HELD_TOTAL
    }

    /// Holds a copy of `packet` for `peer` until `at`.
    pub(crate) fn hold(&mut self, peer: (PeerId, u64), packet: &[u8], at: Instant) {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.bufs.push(Vec::new());
                self.bufs.len() - 1
            }
        };
        let b = &mut self.bufs[i];
        b.clear();
        b.extend_from_slice(packet);
        self.held_bytes += packet.len();
        self.seq += 1;
        if self.next().is_none_or(|t| at < t) {
            self.rearm = true;
        }
        self.due.push(Reverse(Held {
            at,
            seq: self.seq,
            peer: peer.0,
            serial: peer.1,
            buf: i,
        }));
    }

    /// The earliest release time.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.peek().map(|h| h.0.at)
    }

    /// Takes (and clears) the re-arm flag.
    pub(crate) fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    /// The next packet due at `now`: its peer (slot and serial) and buffer index
    /// ([`Self::take`] it, then [`Self::put_back`]).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<((PeerId, u64), usize)> {
        if self.next()? > now {
            return None;
        }
        let Reverse(h) = self.due.pop()?;
        self.held_bytes -= self.bufs[h.buf].len();
        Some(((h.peer, h.serial), h.buf))
    }

    /// Takes buffer `i` out (no copy) for use while the relay is borrowed mutably.
    pub(crate) fn take(&mut self, i: usize) -> Vec<u8> {
        std::mem::take(&mut self.bufs[i])
    }

    /// Returns buffer `i` (taken with [`Self::take`]) to the pool.
    pub(crate) fn put_back(&mut self, i: usize, buf: Vec<u8>) {
        self.bufs[i] = buf;
        self.recycle(i);
    }

    /// Returns buffer `i` (not taken) to the pool.
    pub(crate) fn recycle(&mut self, i: usize) {
        self.free.push(i);
    }
}
