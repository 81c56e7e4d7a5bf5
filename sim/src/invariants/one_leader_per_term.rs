//! One leader per term: no two nodes are ever elected in the same term.

use std::collections::BTreeMap;

use super::Violation;

#[derive(Default)]
pub struct OneLeaderPerTerm {
    leaders: BTreeMap<u64, String>,
}

impl OneLeaderPerTerm {
    pub fn on_elected(&mut self, at_us: u64, term: u64, leader: &str) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(prev) if prev != leader => Err(Violation {
                invariant: "one leader per term",
                at_us,
                detail: format!("term {term}: {leader} elected, but {prev} already led it"),
            }),
            _ => {
                self.leaders.insert(term, leader.to_string());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_leader_in_a_term_is_caught() {
        let mut i = OneLeaderPerTerm::default();
        assert!(i.on_elected(1, 1, "a").is_ok());
        assert!(i.on_elected(2, 1, "a").is_ok());
        assert!(i.on_elected(3, 2, "b").is_ok());
        assert!(i.on_elected(4, 2, "c").is_err());
    }
}
