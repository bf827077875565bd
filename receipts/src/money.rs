//! Integer money math every party shares (relay, client and ledger must agree to the micro).
//! Prices are micros (millionths of a currency unit) per GiB (2^30 bytes).
//!
//! A session at price `p` that carried `b` bytes:
//! - **debits** its voucher `ceil(b × p / 2^30)` ([`debit_micros`]),
//! - **credits** its relay `floor(b × p / 2^30)` ([`earned_micros`]),
//!
//! so credit never exceeds debit, and the debits of all sessions of a voucher never exceed its
//! budget: a session may carry at most [`bytes_within`]`(left, p)` bytes when `left` micros
//! of the budget are unspent.

/// Bytes in one GiB, the unit prices are quoted in.
pub const GIB: u128 = 1 << 30;

/// What `bytes` at `price_micros_per_gib` earns a relay: rounded down.
pub fn earned_micros(bytes: u64, price_micros_per_gib: u64) -> u64 {
    let v = u128::from(bytes) * u128::from(price_micros_per_gib) / GIB;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// What `bytes` at `price_micros_per_gib` costs the client's voucher: rounded up
/// (saturating at `u64::MAX`).
pub fn debit_micros(bytes: u64, price_micros_per_gib: u64) -> u64 {
    let v = (u128::from(bytes) * u128::from(price_micros_per_gib)).div_ceil(GIB);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The most bytes whose [`debit_micros`] at `price_micros_per_gib` fits in `budget_micros`
/// (`u64::MAX` at price 0: free traffic is not limited by money).
pub fn bytes_within(budget_micros: u64, price_micros_per_gib: u64) -> u64 {
    if price_micros_per_gib == 0 {
        return u64::MAX;
    }
    let v = u128::from(budget_micros) * GIB / u128::from(price_micros_per_gib);
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_gib_costs_and_earns_the_price() {
        assert_eq!(earned_micros(1 << 30, 500_000), 500_000);
        assert_eq!(debit_micros(1 << 30, 500_000), 500_000);
        assert_eq!(bytes_within(500_000, 500_000), 1 << 30);
    }

    #[test]
    fn partial_units_round_in_the_ledgers_favour() {
        assert_eq!(earned_micros(1, 1_000_000), 0);
        assert_eq!(debit_micros(1, 1_000_000), 1);
        assert_eq!(bytes_within(0, 1), 0);
        assert_eq!(bytes_within(7, 0), u64::MAX);
    }

    proptest! {
        #[test]
        fn credit_never_exceeds_debit(bytes: u64, price in 0u64..10_000_000_000) {
            prop_assert!(earned_micros(bytes, price) <= debit_micros(bytes, price));
        }

        #[test]
        fn bytes_within_is_the_largest_that_fits(budget in 0u64..1 << 50, price in 1u64..10_000_000_000) {
            let b = bytes_within(budget, price);
            prop_assert!(debit_micros(b, price) <= budget);
            if b < u64::MAX {
                prop_assert!(debit_micros(b + 1, price) > budget);
            }
        }

        #[test]
        fn sum_of_floor_deltas_telescopes(a in 0u64..1 << 50, b in 0u64..1 << 50, price in 0u64..10_000_000_000) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let d1 = earned_micros(lo, price);
            let d2 = earned_micros(hi, price) - earned_micros(lo, price);
            prop_assert_eq!(d1 + d2, earned_micros(hi, price));
        }
    }
}
