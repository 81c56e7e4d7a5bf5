//! How one hot key's limit is divided among the nodes that use it: a small floor each, so a node
//! whose demand was not yet seen can start, and the rest in proportion to reported demand.
//!
//! Pure integer arithmetic: the same inputs give the same shares on every replica, and the shares
//! always add up to exactly the limit (never more).

/// The floor is about this fraction of the limit, spread over the nodes (1/20 = 5%).
const FLOOR_DIVISOR: u64 = 20;

/// Splits `limit` over nodes with the given demands (requests per window, one entry per node).
///
/// When demand exceeds what is left after the floors, each node gets the floor plus a share of
/// the rest proportional to its demand. When it does not, each gets its demand plus an equal part
/// of the slack, so a node whose demand grows finds room before the next allocation.
pub fn split(limit: u64, demands: &[u64]) -> Vec<u64> {
    let n = demands.len() as u64;
    if n == 0 {
        return Vec::new();
    }
    let floor = if limit >= FLOOR_DIVISOR * n {
        limit / (FLOOR_DIVISOR * n)
    } else if limit >= n {
        1
    } else {
        0
    };
    let rest = limit - floor * n;
    let total: u128 = demands.iter().map(|&d| u128::from(d)).sum();
    // Weights scaled by n so that "demand plus an equal part of the slack" stays integral.
    let weights: Vec<u128> = if total >= u128::from(rest) {
        demands.iter().map(|&d| u128::from(d)).collect()
    } else {
        let slack = u128::from(rest) - total;
        demands.iter().map(|&d| u128::from(d) * u128::from(n) + slack).collect()
    };
    let mut shares = largest_remainder(rest, &weights);
    for s in &mut shares {
        *s += floor;
    }
    shares
}

/// `total` split in proportion to `weights`, rounding so the parts sum to exactly `total`: each
/// part is rounded down, then the leftover units go to the largest fractional parts (ties to the
/// lower index). All-zero weights split equally.
fn largest_remainder(total: u64, weights: &[u128]) -> Vec<u64> {
    let n = weights.len();
    let sum: u128 = weights.iter().sum();
    let (weights, sum): (Vec<u128>, u128) =
        if sum == 0 { (vec![1; n], n as u128) } else { (weights.to_vec(), sum) };
    let mut parts = Vec::with_capacity(n);
    let mut fractions = Vec::with_capacity(n);
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(total) * w;
        parts.push(u64::try_from(exact / sum).unwrap_or(u64::MAX));
        fractions.push((exact % sum, i));
    }
    let given: u64 = parts.iter().sum();
    let mut left = total.saturating_sub(given);
    fractions.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in fractions {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// The equal split of `limit` over `n` nodes for one window: the remainder goes to different
/// nodes in different windows, so no node is favoured for ever. Sums to exactly `limit`.
pub fn equal_share(limit: u64, n: u64, index: u64, window: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let base = limit / n;
    let extra = limit % n;
    base + u64::from((index + window) % n < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_limit_and_follow_demand() {
        let s = split(100, &[400, 200, 100]);
        assert_eq!(s.iter().sum::<u64>(), 100);
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        // 5% floor (1 each), then 97 split 4:2:1.
        assert_eq!(s, vec![56, 29, 15]);
    }

    #[test]
    fn slack_is_spread_when_demand_is_low() {
        let s = split(100, &[10, 0, 0]);
        assert_eq!(s.iter().sum::<u64>(), 100);
        assert!(s[0] >= 10 + 28, "{s:?}");
        assert!(s[1] >= 28 && s[2] >= 28, "{s:?}");
    }

    #[test]
    fn never_more_than_the_limit_for_any_input() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 7) as usize + 1;
            let limit = x % 1000;
            let demands: Vec<u64> = (0..n).map(|i| (x >> (i * 5)) % 3000).collect();
            let s = split(limit, &demands);
            assert_eq!(s.len(), n);
            assert_eq!(s.iter().sum::<u64>(), limit, "limit {limit} demands {demands:?} -> {s:?}");
        }
    }

    #[test]
    fn equal_share_sums_to_the_limit_in_every_window() {
        for limit in [0, 1, 2, 5, 100, 101] {
            for n in 1..6 {
                for w in 0..10 {
                    let sum: u64 = (0..n).map(|i| equal_share(limit, n, i, w)).sum();
                    assert_eq!(sum, limit);
                }
            }
        }
        assert_eq!(equal_share(10, 0, 0, 0), 0);
    }
}
