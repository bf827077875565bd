//! Pure ingestion rules: how one batch of verified co-signed receipts changes vouchers and
//! sessions. No I/O. Stores load the rows a batch touches (locking them), call
//! [`apply_batch`], and write back exactly what [`Writes`] lists, all in one transaction.
//!
//! Rules (per session, keyed by relay key + session id):
//! - [`CumulativeState`] decides: newer receipt → `Advanced` by the byte delta over the
//!   last accepted one; same receipt again → `Duplicate`; older consistent one → `Stale`.
//!   Duplicates and stale receipts change nothing, so resubmission never double-credits.
//! - Each session runs at its relay's price (in the accept and every receipt, co-signed by
//!   the client), at most the voucher's max price.
//! - Money is derived from bytes: a session debits its voucher
//!   `ceil(credited_bytes × price / 2^30)` and earns its relay
//!   `floor(credited_bytes × price / 2^30)` (`ferry_receipts::money`), so credit never
//!   exceeds debit. Each accepted receipt records the increase of that floor, so per-epoch
//!   sums add up exactly to the per-session totals.
//! - The delta is credited up to what the voucher's budget (shared by all sessions of that
//!   voucher, at their own prices) still pays for; anything beyond is dropped and the
//!   session is flagged `clamped`. The voucher's `used_micros` is the sum of its sessions'
//!   debits, never above its budget.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferry_receipts::{CoSignedReceipt, CumulativeState, PublicKey, Rejected, SessionId, VoucherId};

use crate::merkle;
use crate::money::{bytes_within, debit_micros, earned_micros};

/// What a registered key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Relays sign receipts and earn.
    Relay,
    /// Clients buy vouchers and co-sign receipts.
    Client,
}

impl Role {
    /// Name used in JSON and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Client => "client",
        }
    }

    /// Parses [`Role::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "relay" => Some(Self::Relay),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// A voucher the ledger issued, with how much of it receipts have used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoucherRow {
    /// SHA-256 of the voucher encoding.
    pub id: VoucherId,
    /// Client allowed to spend it.
    pub client_key: PublicKey,
    /// Money paid for (micros).
    pub budget_micros: u64,
    /// Highest session price per GiB it pays for.
    pub max_price_micros_per_gib: u64,
    /// Unix seconds at issue.
    pub issued_at: u64,
    /// Unix seconds after which no new session may start on it.
    pub expires_at: u64,
    /// Micros its sessions debited so far (≤ budget).
    pub used_micros: u64,
    /// What the client was charged.
    pub cost_micros: u64,
    /// Full voucher encoding.
    pub encoded: Vec<u8>,
}

/// Identity of a session in the ledger.
pub type SessionKey = (PublicKey, SessionId);

/// The last accepted state of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The latest accepted co-signed receipt (its body carries the session identity).
    pub latest: CoSignedReceipt,
    /// Bytes credited to the relay (sum of clamped deltas).
    pub credited_bytes: u64,
    /// `floor(credited_bytes × price / 2^30)`.
    pub credited_micros: u64,
    /// Some delta was cut at the voucher's budget.
    pub clamped: bool,
    /// Number of accepted (advancing) receipts.
    pub receipts: u64,
}

/// One receipt that advanced its session: a Merkle leaf of its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRow {
    /// Relay.
    pub relay_key: PublicKey,
    /// Session.
    pub session_id: SessionId,
    /// Receipt seq.
    pub seq: u64,
    /// Client.
    pub client_key: PublicKey,
    /// Voucher.
    pub voucher_id: VoucherId,
    /// Epoch number (`accepted_at / epoch_secs`).
    pub epoch: u64,
    /// Ledger unix seconds at acceptance.
    pub accepted_at: u64,
    /// Cumulative bytes (up + down) the receipt states.
    pub total_bytes: u64,
    /// Bytes credited by this receipt (delta, after clamping).
    pub credited_bytes: u64,
    /// Micros credited by this receipt (increase of the session's floor).
    pub credited_micros: u64,
    /// Part of the delta was beyond the voucher's budget.
    pub clamped: bool,
    /// Canonical co-signed receipt encoding.
    pub encoded: Vec<u8>,
    /// Merkle leaf hash of `encoded`.
    pub leaf_hash: [u8; 32],
}

/// A receipt whose signatures and network already verified.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// Decoded receipt.
    pub receipt: CoSignedReceipt,
    /// Its canonical encoding.
    pub encoded: Vec<u8>,
}

/// What happened to one accepted submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session advanced; `credited_bytes` were credited to the relay.
    Advanced {
        /// Epoch the receipt landed in.
        epoch: u64,
        /// Bytes credited (after clamping).
        credited_bytes: u64,
        /// The delta was cut at the voucher's budget.
        clamped: bool,
    },
    /// Same as the latest accepted receipt: nothing changed.
    Duplicate,
    /// Older than the latest accepted receipt: nothing changed.
    Stale,
}

/// Why a verified receipt was refused by the ledger's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The relay key is not registered as a relay.
    #[error("relay key is not registered")]
    UnknownRelay,
    /// The client key is not registered as a client.
    #[error("client key is not registered")]
    UnknownClient,
    /// No voucher with this id was issued.
    #[error("voucher is unknown to this ledger")]
    UnknownVoucher,
    /// The voucher exists but does not match the receipt.
    #[error("voucher does not match receipt: {0}")]
    VoucherMismatch(&'static str),
    /// The receipt contradicts the session's accepted receipts.
    #[error("{0}")]
    Session(Rejected),
    /// A counter exceeds what the ledger stores (2^63 - 1).
    #[error("counter too large")]
    TooLarge,
}

/// The rows a batch needs, loaded (and locked) by the store.
#[derive(Debug, Default, Clone)]
pub struct BatchState {
    /// Registered (key, role) pairs among the batch's keys.
    pub keys: HashSet<(PublicKey, Role)>,
    /// Vouchers the batch names that exist.
    pub vouchers: HashMap<VoucherId, VoucherRow>,
    /// Sessions the batch names that exist.
    pub sessions: HashMap<SessionKey, SessionRow>,
}

/// What a store must write after [`apply_batch`].
#[derive(Debug, Default, Clone)]
pub struct Writes {
    /// Vouchers whose `used_bytes` changed.
    pub vouchers: BTreeSet<VoucherId>,
    /// Sessions to insert (not present before the batch).
    pub new_sessions: BTreeSet<SessionKey>,
    /// Existing sessions to update, with the latest seq they had when loaded (for an
    /// optimistic `WHERE latest_seq = old` guard).
    pub updated_sessions: BTreeMap<SessionKey, u64>,
    /// Receipts to append.
    pub accepted: Vec<AcceptedRow>,
}

impl Writes {
    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty()
    }
}

/// The key of the session a receipt belongs to.
pub fn session_key(r: &CoSignedReceipt) -> SessionKey {
    (r.body().relay_key, r.body().session_id)
}

/// Applies `items` in order to `state`. Returns one result per item and the rows to write.
pub fn apply_batch(
    state: &mut BatchState,
    items: &[VerifiedReceipt],
    now: u64,
    epoch_secs: u64,
) -> (Vec<Result<Outcome, Reject>>, Writes) {
    let mut writes = Writes::default();
    let results = items
        .iter()
        .map(|item| apply_one(state, &mut writes, item, now, epoch_secs))
        .collect();
    (results, writes)
}

const MAX_STORED: u64 = ferry_receipts::MAX_LEDGER_VALUE;

fn apply_one(
    state: &mut BatchState,
    writes: &mut Writes,
    item: &VerifiedReceipt,
    now: u64,
    epoch_secs: u64,
) -> Result<Outcome, Reject> {
    let body = item.receipt.body();
    if !body.fits_ledger() || item.receipt.cosigned_at > MAX_STORED {
        return Err(Reject::TooLarge);
    }
    if !state.keys.contains(&(body.relay_key, Role::Relay)) {
        return Err(Reject::UnknownRelay);
    }
    if !state.keys.contains(&(body.client_key, Role::Client)) {
        return Err(Reject::UnknownClient);
    }
    let voucher = state
        .vouchers
        .get_mut(&body.voucher_id)
        .ok_or(Reject::UnknownVoucher)?;
    if voucher.client_key != body.client_key {
        return Err(Reject::VoucherMismatch("voucher belongs to another client"));
    }
    if body.price_micros_per_gib > voucher.max_price_micros_per_gib {
        return Err(Reject::VoucherMismatch(
            "price above the voucher's max price",
        ));
    }
    if body.session_started_at > voucher.expires_at {
        return Err(Reject::VoucherMismatch(
            "session started after voucher expiry",
        ));
    }

    let key = session_key(&item.receipt);
    let existing = state.sessions.get(&key);
    let mut cumulative = match existing {
        Some(s) => CumulativeState::from_latest(s.latest.receipt.body),
        None => CumulativeState::new(),
    };
    let applied = cumulative.apply(body).map_err(Reject::Session)?;
    let (delta_up, delta_down) = match applied {
        ferry_receipts::Applied::Advanced {
            delta_up,
            delta_down,
        } => (delta_up, delta_down),
        ferry_receipts::Applied::Duplicate => return Ok(Outcome::Duplicate),
        ferry_receipts::Applied::Stale => return Ok(Outcome::Stale),
        // `Applied` may grow; anything unknown changes nothing.
        #[allow(unreachable_patterns)]
        _ => return Ok(Outcome::Stale),
    };
    let delta = delta_up.saturating_add(delta_down);
    let price = body.price_micros_per_gib;
    let session = match state.sessions.get_mut(&key) {
        Some(s) => {
            if !writes.new_sessions.contains(&key) {
                writes
                    .updated_sessions
                    .entry(key)
                    .or_insert(s.latest.receipt.body.seq);
            }
            s
        }
        None => {
            writes.new_sessions.insert(key);
            state.sessions.entry(key).or_insert(SessionRow {
                latest: item.receipt,
                credited_bytes: 0,
                credited_micros: 0,
                clamped: false,
                receipts: 0,
            })
        }
    };
    // What this session already debited plus what is left of the budget bounds its bytes.
    let debited = debit_micros(session.credited_bytes, price);
    let left = voucher.budget_micros.saturating_sub(voucher.used_micros);
    let cap = bytes_within(debited.saturating_add(left), price);
    let credit = delta.min(cap.saturating_sub(session.credited_bytes));
    let clamped = credit < delta;
    let new_credited = session.credited_bytes + credit;
    voucher.used_micros += debit_micros(new_credited, price) - debited;
    writes.vouchers.insert(voucher.id);

    let new_micros = earned_micros(new_credited, price);
    let micros_delta = new_micros - session.credited_micros;
    session.latest = item.receipt;
    session.credited_bytes = new_credited;
    session.credited_micros = new_micros;
    session.clamped |= clamped;
    session.receipts += 1;

    let epoch = now / epoch_secs.max(1);
    writes.accepted.push(AcceptedRow {
        relay_key: body.relay_key,
        session_id: body.session_id,
        seq: body.seq,
        client_key: body.client_key,
        voucher_id: body.voucher_id,
        epoch,
        accepted_at: now,
        total_bytes: body.total_bytes(),
        credited_bytes: credit,
        credited_micros: micros_delta,
        clamped,
        encoded: item.encoded.clone(),
        leaf_hash: merkle::leaf_hash(&item.encoded),
    });
    Ok(Outcome::Advanced {
        epoch,
        credited_bytes: credit,
        clamped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, NETWORK};

    /// A voucher of `budget` micros with max price 7; the receipts run at 7 too.
    fn setup(budget: u64) -> (BatchState, SigningKeys) {
        let keys = SigningKeys {
            relay: testkit::key(2, 0),
            client: testkit::key(3, 0),
        };
        let mut st = BatchState::default();
        st.keys.insert((keys.relay.public_key(), Role::Relay));
        st.keys.insert((keys.client.public_key(), Role::Client));
        st.vouchers.insert(
            VoucherId([1; 32]),
            VoucherRow {
                id: VoucherId([1; 32]),
                client_key: keys.client.public_key(),
                budget_micros: budget,
                max_price_micros_per_gib: 7,
                issued_at: 0,
                expires_at: 1_700_000_000,
                used_micros: 0,
                cost_micros: 0,
                encoded: Vec::new(),
            },
        );
        (st, keys)
    }

    struct SigningKeys {
        relay: ferry_receipts::SigningKey,
        client: ferry_receipts::SigningKey,
    }

    fn item(k: &SigningKeys, seq: u64, up: u64, down: u64) -> VerifiedReceipt {
        let r = testkit::receipt(
            NETWORK,
            &k.relay,
            &k.client,
            VoucherId([1; 32]),
            7,
            testkit::session(1),
            seq,
            up,
            down,
        );
        VerifiedReceipt {
            encoded: r.encode(),
            receipt: r,
        }
    }

    #[test]
    fn new_session_advanced_twice_in_one_batch_is_one_insert() {
        let (mut st, k) = setup(1 << 40);
        let items = [item(&k, 1, 1, 1), item(&k, 2, 5, 5), item(&k, 2, 5, 5)];
        let (res, w) = apply_batch(&mut st, &items, 7200, 3600);
        assert_eq!(res[2], Ok(Outcome::Duplicate));
        assert_eq!(w.new_sessions.len(), 1);
        assert!(w.updated_sessions.is_empty());
        assert_eq!(w.accepted.len(), 2);
        assert_eq!(w.accepted[1].credited_bytes, 8);
        assert_eq!(w.accepted[0].epoch, 2);
    }

    #[test]
    fn existing_session_update_remembers_the_loaded_seq() {
        let (mut st, k) = setup(1 << 40);
        apply_batch(&mut st, &[item(&k, 3, 1, 1)], 0, 3600);
        let (_, w) = apply_batch(&mut st, &[item(&k, 4, 2, 2), item(&k, 6, 3, 3)], 0, 3600);
        assert_eq!(
            w.updated_sessions.values().copied().collect::<Vec<_>>(),
            [3]
        );
    }

    #[test]
    fn session_after_voucher_expiry_and_huge_counters_are_refused() {
        let (mut st, k) = setup(1 << 40);
        st.vouchers.get_mut(&VoucherId([1; 32])).unwrap().expires_at = 10;
        let (res, w) = apply_batch(&mut st, &[item(&k, 1, 1, 1)], 0, 3600);
        assert!(matches!(res[0], Err(Reject::VoucherMismatch(_))));
        assert!(w.is_empty());
        let (mut st, k) = setup(u64::MAX);
        let (res, _) = apply_batch(&mut st, &[item(&k, 1, 1 << 62, 1 << 62)], 0, 3600);
        assert_eq!(res[0], Err(Reject::TooLarge));
    }

    #[test]
    fn clamped_delta_and_money_floor() {
        // 7 micros buy exactly 1 GiB at 7 per GiB; the receipt claims 2 GiB.
        let (mut st, k) = setup(7);
        let (res, w) = apply_batch(&mut st, &[item(&k, 1, 1 << 30, 1 << 30)], 0, 3600);
        assert_eq!(
            res[0],
            Ok(Outcome::Advanced {
                epoch: 0,
                credited_bytes: 1 << 30,
                clamped: true
            })
        );
        assert_eq!(w.accepted[0].credited_micros, 7);
        let s = st.sessions.values().next().unwrap();
        assert!(s.clamped);
        assert_eq!(st.vouchers[&VoucherId([1; 32])].used_micros, 7);
    }
}
