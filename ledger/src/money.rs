//! Integer money math. Prices are micros (millionths of a currency unit) per GiB (2^30
//! bytes). Relays are paid `floor(bytes × price / 2^30)` per session, clients are charged
//! `ceil(allowance × price / 2^30)` per voucher, so rounding can never pay out more than
//! was charged.

/// Bytes in one GiB, the unit prices are quoted in.
pub const GIB: u128 = 1 << 30;

/// What `bytes` at `price_micros_per_gib` earns a relay: rounded down.
pub fn earned_micros(bytes: u64, price_micros_per_gib: u64) -> u64 {
    let v = u128::from(bytes) * u128::from(price_micros_per_gib) / GIB;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// What a voucher for `bytes` at `price_micros_per_gib` costs the client: rounded up.
pub fn voucher_cost_micros(bytes: u64, price_micros_per_gib: u64) -> Option<u64> {
    let v = (u128::from(bytes) * u128::from(price_micros_per_gib)).div_ceil(GIB);
    u64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_gib_earns_the_price() {
        assert_eq!(earned_micros(1 << 30, 500_000), 500_000);
        assert_eq!(voucher_cost_micros(1 << 30, 500_000), Some(500_000));
    }

    #[test]
    fn partial_units_round_in_the_ledgers_favour() {
        assert_eq!(earned_micros(1, 1_000_000), 0);
        assert_eq!(voucher_cost_micros(1, 1_000_000), Some(1));
    }

    proptest! {
        #[test]
        fn payout_never_exceeds_cost(bytes: u64, price in 0u64..10_000_000_000) {
            let cost = voucher_cost_micros(bytes, price);
            if let Some(cost) = cost {
                prop_assert!(earned_micros(bytes, price) <= cost);
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
