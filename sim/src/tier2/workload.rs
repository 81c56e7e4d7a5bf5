//! What the simulated clients ask of the cluster: routing tables to commit and quota rounds with
//! synthetic demand. Every command is a pure function of the seed and its sequence number, so
//! the same schedule proposes the same bytes.

use meridian_raft_store::quota::DemandReport;
use meridian_raft_store::quota::KeyDemand;
use meridian_raft_store::quota::QuotaTerms;
use meridian_raft_store::Command;

use super::mix;

/// The workload's clock starts here (ms since the Unix epoch): commands carry `T0 + at_ms`.
pub const T0_MS: u64 = 1_800_000_000_000;

/// The quotas every round carries: (name, limit, window_ms). Two window lengths, one limit that
/// does not divide evenly among the nodes.
pub const QUOTAS: [(&str, u64, u64); 2] = [("api", 100, 1000), ("burst", 37, 500)];

/// Keys the nodes report demand for; the checks also look at [`COLD_KEY`], which nobody reports.
pub const KEYS: [&str; 3] = ["acme", "globex", "initech"];
pub const COLD_KEY: &str = "umbrella";

pub fn terms() -> Vec<QuotaTerms> {
    QUOTAS
        .iter()
        .map(|(name, limit, window_ms)| QuotaTerms {
            name: name.to_string(),
            limit: *limit,
            window_ms: *window_ms,
        })
        .collect()
}

/// Routing table number `seq`: a valid Meridian table (one service in the first two regions, a
/// route with the `api` quota), unique per `seq` through its timeout; the seed moves the
/// endpoint so different seeds write different bytes.
pub fn table_json(seed: u64, seq: u64) -> String {
    let (name, limit, window_ms) = QUOTAS[0];
    let host = mix(&[seed, 1]) % 250 + 1;
    serde_json::json!({
        "services": {
            "hello": {
                "endpoints": {
                    "us": [format!("http://10.1.0.{host}:8000")],
                    "eu": [format!("http://10.2.0.{host}:8000")],
                },
                "timeout_ms": 1_000 + seq,
            },
        },
        "routes": [{ "name": "hello", "path_prefix": "/hello", "service": "hello", "quota": name }],
        "quotas": { name: { "key": "header:x-tenant", "limit": limit, "window_ms": window_ms } },
    })
    .to_string()
}

/// The command for table number `seq`, accepted by `by_node` at `at_ms` (workload time).
pub fn put_table(seed: u64, seq: u64, by_node: &str, at_ms: u64) -> Command {
    Command::PutTable {
        table_json: table_json(seed, seq),
        expected_version: None,
        cause: format!("sim write {seq}"),
        by_node: by_node.to_string(),
        at_ms: T0_MS + at_ms,
    }
}

/// Quota round number `round` at `at_ms` (workload time) with reports from `reporters` (node
/// index and id). Demand per node and key is a pure function of (seed, round, node, key):
/// `acme` is hot on the first region's nodes, `globex` is a steady trickle everywhere,
/// `initech` comes in bursts.
pub fn quota_round(
    seed: u64,
    round: u64,
    at_ms: u64,
    regions: usize,
    reporters: &[(usize, &str)],
) -> Command {
    let reports = reporters
        .iter()
        .map(|(index, id)| {
            let demands = QUOTAS
                .iter()
                .flat_map(|(quota, ..)| KEYS.iter().map(move |key| (*quota, *key)))
                .enumerate()
                .filter_map(|(k, (quota, key))| {
                    let h = mix(&[seed, round, *index as u64, k as u64]);
                    let demand = match key {
                        "acme" if index % regions == 0 => 30 + h % 60,
                        "acme" => h % 3,
                        "globex" => h % 12,
                        _ if h.is_multiple_of(10) => 150 + h % 100,
                        _ => 0,
                    };
                    (demand > 0).then(|| KeyDemand { quota: quota.to_string(), key: key.to_string(), demand })
                })
                .collect();
            DemandReport { node: id.to_string(), demands, counts: Vec::new() }
        })
        .collect();
    Command::QuotaRound { at_ms: T0_MS + at_ms, terms: terms(), reports }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_pure_functions_of_their_inputs() {
        assert_eq!(put_table(1, 2, "us-1", 3), put_table(1, 2, "us-1", 3));
        assert_ne!(table_json(1, 2), table_json(1, 3));
        let reporters = [(0, "us-1"), (1, "eu-1")];
        assert_eq!(quota_round(1, 5, 10, 3, &reporters), quota_round(1, 5, 10, 3, &reporters));
        let table = meridian::core::table::parse_json(&table_json(9, 9)).expect("the node parses it");
        table.validate().expect("the node accepts it");
    }
}
