//! [`FailoverClock`]: how long the cluster goes without a usable leader — one that is up and on
//! the majority side (not cut off, not split away) — whatever took it away: a crash, a cut-off,
//! a split, or a reconnecting voter's higher term deposing it. A measurement, not an invariant;
//! a leader that never comes back is what the convergence check catches.

#[derive(Debug, Default)]
pub struct FailoverClock {
    /// Since when there has been no usable leader.
    leaderless_since: Option<u64>,
    /// Periods without a usable leader, ended or not.
    pub periods: u64,
    /// The longest period that ended.
    pub max_ms: u64,
}

impl FailoverClock {
    /// `usable`: whether some node that is up and on the majority side says it leads.
    pub fn observe(&mut self, at_ms: u64, usable: bool) {
        match (self.leaderless_since, usable) {
            (None, false) => {
                self.leaderless_since = Some(at_ms);
                self.periods += 1;
            }
            (Some(since), true) => {
                self.max_ms = self.max_ms.max(at_ms - since);
                self.leaderless_since = None;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_longest_leaderless_period() {
        let mut clock = FailoverClock::default();
        for (at, usable) in
            [(0, true), (10, false), (20, false), (30, true), (40, false), (90, true), (100, false)]
        {
            clock.observe(at, usable);
        }
        assert_eq!((clock.periods, clock.max_ms), (3, 50));
    }
}
