//! Endpoint choice: power of two choices, least in flight.
//!
//! Two distinct available endpoints are drawn at random and the one with fewer requests in flight
//! wins. It needs no global view, adapts to a slow endpoint within a few requests, and avoids the
//! herd that a strict least-loaded choice causes. The caller supplies the random numbers.

/// What the balancer needs to know about one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub available: bool,
    pub in_flight: u32,
    /// Already tried for this request: chosen only when nothing else is left.
    pub tried: bool,
}

/// Pick an endpoint index. `r1` and `r2` are uniform random numbers.
pub fn pick(candidates: &[Candidate], r1: u64, r2: u64) -> Option<usize> {
    let fresh = candidates.iter().filter(|c| c.available && !c.tried).count();
    if fresh > 0 {
        return pick_among(candidates, fresh, |c| c.available && !c.tried, r1, r2);
    }
    let usable = candidates.iter().filter(|c| c.available).count();
    if usable > 0 {
        return pick_among(candidates, usable, |c| c.available, r1, r2);
    }
    None
}

fn pick_among(
    candidates: &[Candidate],
    n: usize,
    eligible: impl Fn(&Candidate) -> bool,
    r1: u64,
    r2: u64,
) -> Option<usize> {
    let nth = |k: usize| candidates.iter().enumerate().filter(|(_, c)| eligible(c)).nth(k).map(|(i, _)| i);
    let a = (r1 % n as u64) as usize;
    if n == 1 {
        return nth(0);
    }
    // Second draw over the n-1 others keeps the two choices distinct.
    let mut b = (r2 % (n as u64 - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (ia, ib) = (nth(a)?, nth(b)?);
    if candidates[ib].in_flight < candidates[ia].in_flight {
        Some(ib)
    } else {
        Some(ia)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(available: bool, in_flight: u32) -> Candidate {
        Candidate { available, in_flight, tried: false }
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let cs = [c(true, 5), c(true, 1), c(true, 9)];
        // draws 0 and 1 compare endpoints 0 and 1
        assert_eq!(pick(&cs, 0, 0), Some(1));
        // draws 2 and 0 compare endpoints 2 and 0
        assert_eq!(pick(&cs, 2, 0), Some(0));
    }

    #[test]
    fn unavailable_endpoints_are_never_picked() {
        let cs = [c(false, 0), c(true, 100), c(false, 0)];
        for r in 0..10 {
            assert_eq!(pick(&cs, r, r * 7), Some(1));
        }
        assert_eq!(pick(&[c(false, 0)], 1, 2), None);
        assert_eq!(pick(&[], 1, 2), None);
    }

    #[test]
    fn tried_endpoints_are_a_last_resort() {
        let mut cs = [c(true, 0), c(true, 50)];
        cs[0].tried = true;
        assert_eq!(pick(&cs, 0, 0), Some(1));
        cs[1].tried = true;
        assert!(pick(&cs, 0, 0).is_some());
    }

    #[test]
    fn spread_is_roughly_even_when_idle() {
        let cs = [c(true, 0), c(true, 0), c(true, 0), c(true, 0)];
        let mut hits = [0u32; 4];
        let mut x = 12345u64;
        for _ in 0..4000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r1 = x >> 33;
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r2 = x >> 33;
            hits[pick(&cs, r1, r2).expect("some")] += 1;
        }
        assert!(hits.iter().all(|&h| h > 600), "{hits:?}");
    }
}
