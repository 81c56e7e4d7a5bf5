//! The audit trail of routing-table writes: who changed the table, when, through which node, and
//! what changed — decided inside `apply`, so it is part of the replicated state and every replica
//! holds the same records.
//!
//! Pure and IO-free. Records are only ever appended (by a committed `PutTable`/`Rollback`); no
//! command edits or removes one, so nothing reachable through the admin API can rewrite the
//! trail. The oldest records leave once [`AUDIT_LEN`] are kept. Each record carries the SHA-256
//! of its own fields and of the record before it, so a record edited on disk (or in a snapshot)
//! breaks the chain at that point and [`AuditLog::verify`] says where.
//!
//! The diff summary names what changed — services, routes and quotas by name, other top-level
//! fields by key — never values, so secrets in a table never reach the trail.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;

use ring::digest;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

/// How many audit records are kept (the newest ones).
pub const AUDIT_LEN: usize = 10_000;

/// Names in a summary list are capped at this many entries per list (the count is kept).
const MAX_NAMES: usize = 50;

/// What one committed routing-table write changed, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffSummary {
    /// "service billing", "route api", "quota per-tenant", "field x" that are new.
    pub added: Vec<String>,
    /// Names that are gone.
    pub removed: Vec<String>,
    /// Names present before and after whose definition changed.
    pub changed: Vec<String>,
    /// Entries left out of the three lists above once a list reached its cap.
    pub omitted: u64,
}

impl DiffSummary {
    /// One line for logs and tables: `+service b, -route r, ~quota q` or `no change`.
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.added.iter().map(|n| format!("+{n}")));
        parts.extend(self.removed.iter().map(|n| format!("-{n}")));
        parts.extend(self.changed.iter().map(|n| format!("~{n}")));
        if self.omitted > 0 {
            parts.push(format!("and {} more", self.omitted));
        }
        if parts.is_empty() {
            "no change".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// One committed routing-table write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... in commit order; never reused.
    pub seq: u64,
    /// Proposer's wall clock when the write was accepted (ms since the Unix epoch).
    pub at_ms: u64,
    /// Name of the admin token that made the write ("local" when the admin API has no tokens,
    /// "bootstrap" for the table seeded from `--routes`).
    pub who: String,
    /// Meridian id of the node whose admin API accepted the write.
    pub node: String,
    /// "put", "bootstrap", "rollback to vN", ...
    pub action: String,
    /// Routing version before and after the write.
    pub from_version: u64,
    pub to_version: u64,
    pub summary: DiffSummary,
    /// SHA-256 (hex) of the previous record's `hash` and this record's fields.
    pub hash: String,
}

/// Outcome of [`AuditLog::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainCheck {
    Intact,
    /// The record with this `seq` does not hash to what it says, or does not follow its
    /// predecessor.
    BrokenAt(u64),
}

/// The kept records, oldest first. Records are shared (`Arc`): the state machine copies its
/// state once per applied batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditLog {
    records: VecDeque<Arc<AuditRecord>>,
}

/// What one append changed, for the state machine to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditChange {
    pub added: Arc<AuditRecord>,
    /// `seq`s that left the log.
    pub evicted: Vec<u64>,
}

/// The fields of a new record, before it is numbered and hashed.
pub struct AuditEntry<'a> {
    pub at_ms: u64,
    pub who: &'a str,
    pub node: &'a str,
    pub action: &'a str,
    pub from_version: u64,
    pub to_version: u64,
    pub summary: DiffSummary,
}

impl AuditLog {
    /// Rebuilds the log from stored records, in any order.
    pub fn from_records(records: impl IntoIterator<Item = AuditRecord>) -> Self {
        let mut v: Vec<AuditRecord> = records.into_iter().collect();
        v.sort_by_key(|r| r.seq);
        Self { records: v.into_iter().map(Arc::new).collect() }
    }

    /// Records oldest first.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Arc<AuditRecord>> + ExactSizeIterator {
        self.records.iter()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `seq` of the newest record; 0 when there is none.
    pub fn last_seq(&self) -> u64 {
        self.records.back().map_or(0, |r| r.seq)
    }

    /// Appends a record, evicting the oldest past [`AUDIT_LEN`].
    pub fn append(&mut self, entry: AuditEntry<'_>) -> AuditChange {
        let prev_hash = self.records.back().map_or_else(String::new, |r| r.hash.clone());
        let mut record = AuditRecord {
            seq: self.last_seq() + 1,
            at_ms: entry.at_ms,
            who: entry.who.to_string(),
            node: entry.node.to_string(),
            action: entry.action.to_string(),
            from_version: entry.from_version,
            to_version: entry.to_version,
            summary: entry.summary,
            hash: String::new(),
        };
        record.hash = record_hash(&prev_hash, &record);
        let added = Arc::new(record);
        self.records.push_back(Arc::clone(&added));
        let mut evicted = Vec::new();
        while self.records.len() > AUDIT_LEN {
            if let Some(old) = self.records.pop_front() {
                evicted.push(old.seq);
            }
        }
        AuditChange { added, evicted }
    }

    /// Checks that every kept record hashes to its `hash` and follows the one before it (the
    /// oldest kept record is taken as given: its predecessor may have been evicted).
    pub fn verify(&self) -> ChainCheck {
        let mut prev: Option<&AuditRecord> = None;
        for r in &self.records {
            let prev_hash = match prev {
                Some(p) => {
                    if r.seq != p.seq + 1 {
                        return ChainCheck::BrokenAt(r.seq);
                    }
                    p.hash.as_str()
                }
                // The first kept record: recompute only when it is the very first ever.
                None if r.seq == 1 => "",
                None => {
                    prev = Some(r);
                    continue;
                }
            };
            if record_hash(prev_hash, r) != r.hash {
                return ChainCheck::BrokenAt(r.seq);
            }
            prev = Some(r);
        }
        ChainCheck::Intact
    }
}

/// SHA-256 over the previous hash and every field but `hash`, each length-prefixed so that no
/// two different records (or field splits) hash the same input.
fn record_hash(prev_hash: &str, r: &AuditRecord) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(prev_hash.as_bytes());
    field(&r.seq.to_be_bytes());
    field(&r.at_ms.to_be_bytes());
    field(r.who.as_bytes());
    field(r.node.as_bytes());
    field(r.action.as_bytes());
    field(&r.from_version.to_be_bytes());
    field(&r.to_version.to_be_bytes());
    for list in [&r.summary.added, &r.summary.removed, &r.summary.changed] {
        field(&(list.len() as u64).to_be_bytes());
        for name in list {
            field(name.as_bytes());
        }
    }
    field(&r.summary.omitted.to_be_bytes());
    let out = ctx.finish();
    out.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What changed between two routing tables (JSON), by name. `services` and `quotas` are maps
/// keyed by name; `routes` is a list keyed by each route's `name` (its position when unnamed);
/// any other top-level key is compared as a whole. A table that is not JSON counts as empty.
pub fn diff(old_json: Option<&str>, new_json: &str) -> DiffSummary {
    let old = old_json.and_then(|s| serde_json::from_str::<Value>(s).ok()).unwrap_or(Value::Null);
    let new = serde_json::from_str::<Value>(new_json).unwrap_or(Value::Null);
    let mut out = DiffSummary::default();
    let keys: std::collections::BTreeSet<&String> =
        old.as_object().into_iter().chain(new.as_object()).flat_map(|m| m.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key.as_str()), new.get(key.as_str()));
        match key.as_str() {
            "services" => compare_named(&mut out, "service", by_key(a), by_key(b)),
            "quotas" => compare_named(&mut out, "quota", by_key(a), by_key(b)),
            "routes" => compare_named(&mut out, "route", by_route_name(a), by_route_name(b)),
            other => compare_one(&mut out, &format!("field {other}"), a, b),
        }
    }
    out
}

fn by_key(v: Option<&Value>) -> BTreeMap<String, &Value> {
    v.and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect()).unwrap_or_default()
}

fn by_route_name(v: Option<&Value>) -> BTreeMap<String, &Value> {
    let Some(list) = v.and_then(Value::as_array) else { return BTreeMap::new() };
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r.get("name").and_then(Value::as_str).map_or_else(|| format!("#{i}"), str::to_string);
            (name, r)
        })
        .collect()
}

fn compare_named(
    out: &mut DiffSummary,
    kind: &str,
    old: BTreeMap<String, &Value>,
    new: BTreeMap<String, &Value>,
) {
    for (name, v) in &new {
        match old.get(name) {
            None => push(out, Kind::Added, format!("{kind} {name}")),
            Some(o) if o != v => push(out, Kind::Changed, format!("{kind} {name}")),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        push(out, Kind::Removed, format!("{kind} {name}"));
    }
}

fn compare_one(out: &mut DiffSummary, label: &str, old: Option<&Value>, new: Option<&Value>) {
    match (old, new) {
        (None, Some(_)) => push(out, Kind::Added, label.to_string()),
        (Some(_), None) => push(out, Kind::Removed, label.to_string()),
        (Some(a), Some(b)) if a != b => push(out, Kind::Changed, label.to_string()),
        _ => {}
    }
}

enum Kind {
    Added,
    Removed,
    Changed,
}

fn push(out: &mut DiffSummary, kind: Kind, name: String) {
    let list = match kind {
        Kind::Added => &mut out.added,
        Kind::Removed => &mut out.removed,
        Kind::Changed => &mut out.changed,
    };
    if list.len() < MAX_NAMES {
        list.push(name);
    } else {
        out.omitted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(who: &str, to: u64) -> AuditEntry<'_> {
        AuditEntry {
            at_ms: 1000 + to,
            who,
            node: "us-1",
            action: "put",
            from_version: to - 1,
            to_version: to,
            summary: DiffSummary::default(),
        }
    }

    #[test]
    fn diff_names_what_changed_and_never_values() {
        let old = r#"{"services":{"a":{"timeout_ms":1},"b":{}},"routes":[{"name":"r1","service":"a"},{"name":"r2","service":"b"}],
                     "quotas":{"q":{"limit":1}}}"#;
        let new = r#"{"services":{"a":{"timeout_ms":2},"c":{"secret":"hunter2-hunter2"}},"routes":[{"name":"r1","service":"a"},{"name":"r3","service":"c"}],
                     "quotas":{"q":{"limit":1}},"extra":1}"#;
        let d = diff(Some(old), new);
        assert_eq!(d.added, vec!["field extra", "route r3", "service c"]);
        assert_eq!(d.removed, vec!["route r2", "service b"]);
        assert_eq!(d.changed, vec!["service a"]);
        assert!(!d.text().contains("hunter2"));
        assert_eq!(diff(Some(new), new).text(), "no change");
        let first = diff(None, new);
        assert_eq!(first.removed.len(), 0);
        assert_eq!(first.added.len(), 6, "{first:?}");
    }

    #[test]
    fn long_lists_are_capped_with_a_count() {
        let services: serde_json::Map<String, Value> =
            (0..80).map(|i| (format!("s{i:03}"), serde_json::json!({}))).collect();
        let new = serde_json::json!({"services": services}).to_string();
        let d = diff(None, &new);
        assert_eq!(d.added.len(), MAX_NAMES);
        assert_eq!(d.omitted, 80 - MAX_NAMES as u64);
        assert!(d.text().ends_with("and 30 more"));
    }

    #[test]
    fn records_chain_and_an_edit_breaks_the_chain_there() {
        let mut log = AuditLog::default();
        for v in 1..=5 {
            log.append(entry("ops", v));
        }
        assert_eq!(log.verify(), ChainCheck::Intact);
        assert_eq!(log.last_seq(), 5);
        // An edit of record 3's author, as if done on disk: its own hash no longer matches.
        let mut records: Vec<AuditRecord> = log.records().map(|r| (**r).clone()).collect();
        records[2].who = "someone-else".into();
        assert_eq!(AuditLog::from_records(records.clone()).verify(), ChainCheck::BrokenAt(3));
        // Rewriting record 3 with a fresh hash still breaks the link from record 4.
        let prev = records[1].hash.clone();
        records[2].hash = record_hash(&prev, &records[2]);
        assert_eq!(AuditLog::from_records(records.clone()).verify(), ChainCheck::BrokenAt(4));
        // Dropping a record in the middle is a gap.
        records.remove(1);
        assert_eq!(AuditLog::from_records(records).verify(), ChainCheck::BrokenAt(3));
    }

    #[test]
    fn the_log_keeps_the_newest_records_and_still_verifies() {
        let mut log = AuditLog::default();
        let mut evicted = 0;
        for v in 1..=(AUDIT_LEN as u64 + 3) {
            evicted += log.append(entry("ops", v)).evicted.len();
        }
        assert_eq!(log.len(), AUDIT_LEN);
        assert_eq!(evicted, 3);
        assert_eq!(log.records().next().map(|r| r.seq), Some(4));
        assert_eq!(log.verify(), ChainCheck::Intact);
    }
}
