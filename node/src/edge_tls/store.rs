//! One loaded set of certificates, indexed for the SNI lookup of every handshake.
//!
//! Immutable once built: a reload builds a new store and swaps it in whole, so a handshake sees
//! either the old set or the new one, never a mix. Lookup order: the exact name, then the
//! one-label wildcard of its parent, then the `default` pair; without a default, a client whose
//! SNI matches nothing (or who sends none) is refused.

use std::collections::HashMap;

use super::load::{CertPair, DEFAULT_PAIR};
use super::names::{self, ServedName};

#[derive(Debug)]
pub struct CertStore {
    /// Sorted by pair name.
    pairs: Vec<CertPair>,
    exact: HashMap<String, usize>,
    /// Keyed by the parent: `*.b.test` is under `b.test`.
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
    shadowed: Vec<Shadowed>,
}

/// Two pairs claim one name: the leaf that expires later serves it (on a tie, the pair whose
/// name sorts first). Rotating by adding the new pair beside the old one therefore hands the
/// name over at once, and removing the old pair later changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub name: ServedName,
    pub served_by: String,
    pub not_served_by: String,
}

/// What a client's SNI resolves to.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a CertPair),
    /// No SNI, and no default pair.
    NoSni,
    /// An SNI no pair covers, and no default pair.
    Unrecognized,
}

impl CertStore {
    pub fn new(mut pairs: Vec<CertPair>) -> CertStore {
        pairs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut shadowed = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            for name in &pair.served {
                let (map, key) = match name {
                    ServedName::Exact(n) => (&mut exact, n),
                    ServedName::Wildcard(parent) => (&mut wildcard, parent),
                };
                match map.get(key).copied() {
                    None => {
                        map.insert(key.clone(), i);
                    }
                    Some(held) => {
                        // Pairs come in name order, so on a tie the earlier one keeps it.
                        let (winner, loser) =
                            if pair.not_after > pairs[held].not_after { (i, held) } else { (held, i) };
                        map.insert(key.clone(), winner);
                        shadowed.push(Shadowed {
                            name: name.clone(),
                            served_by: pairs[winner].name.clone(),
                            not_served_by: pairs[loser].name.clone(),
                        });
                    }
                }
            }
        }
        let default = pairs.iter().position(|p| p.name == DEFAULT_PAIR);
        CertStore { pairs, exact, wildcard, default, shadowed }
    }

    pub fn lookup(&self, sni: Option<&str>) -> Lookup<'_> {
        let miss = match sni {
            None => Lookup::NoSni,
            Some(sni) => {
                let mut buf = [0u8; names::MAX_NAME];
                if let Some(name) = names::normalize(sni, &mut buf) {
                    let hit = self.exact.get(name).or_else(|| {
                        names::wildcard_parent(name).and_then(|parent| self.wildcard.get(parent))
                    });
                    if let Some(&i) = hit {
                        return Lookup::Found(&self.pairs[i]);
                    }
                }
                Lookup::Unrecognized
            }
        };
        match self.default {
            Some(i) => Lookup::Found(&self.pairs[i]),
            None => miss,
        }
    }

    pub fn pairs(&self) -> &[CertPair] {
        &self.pairs
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// Names claimed by more than one pair, and which pair serves each.
    pub fn shadowed(&self) -> &[Shadowed] {
        &self.shadowed
    }
}
