//! `meridian ctl` answers as tables for people (the default); `--json` prints the API's JSON.
//!
//! Each renderer takes the admin API's JSON and returns text; a field the node did not send shows
//! as `-`, so a newer or older node never makes `ctl` fail.

use std::fmt::Write as _;

use serde_json::Value;

/// Aligned columns: a header row and data rows, two spaces apart.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A scalar as text: strings bare, `null`/missing as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(cell).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// `GET /cluster`.
pub fn cluster(v: &Value) -> String {
    let raft = &v["raft"];
    let mut out = format!(
        "node {} ({})  leader {}  term {}  commit {}  routing v{}\nvoters {}  learners {}\n\n",
        cell(&v["node"]["id"]),
        cell(&v["node"]["region"]),
        cell(&raft["leader"]),
        cell(&raft["term"]),
        cell(&raft["commit_index"]),
        cell(&v["routing"]["version"]),
        list(&raft["voters"]),
        list(&raft["learners"]),
    );
    let mut t =
        Table::new(&["ID", "REGION", "LIVE", "ROLE", "VERSION", "LOAD", "SERVICES (healthy/total)", "HTTP"]);
    for m in v["members"].as_array().into_iter().flatten() {
        let services = m["services"]
            .as_object()
            .map(|s| {
                s.iter()
                    .map(|(name, h)| format!("{name} {}/{}", cell(&h["healthy"]), cell(&h["total"])))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into());
        let mut version = cell(&m["routing_version"]);
        if m["lagging"] == true {
            version.push_str(" (lagging)");
        }
        let live = if m["draining"] == true { "draining".to_string() } else { cell(&m["live"]) };
        t.row(vec![
            cell(&m["id"]),
            cell(&m["region"]),
            live,
            cell(&m["raft_role"]),
            version,
            cell(&m["load"]),
            services,
            cell(&m["http"]),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `GET /routes`.
pub fn routes(v: &Value) -> String {
    let table = &v["table"];
    let mut out = format!("routing table version {}\n\n", cell(&v["version"]));
    let mut t = Table::new(&["ROUTE", "HOST", "PATH", "METHODS", "SERVICE", "QUOTA"]);
    for r in table["routes"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&r["name"]),
            cell(&r["host"]),
            cell(&r["path_prefix"]),
            list(&r["methods"]),
            cell(&r["service"]),
            cell(&r["quota"]),
        ]);
    }
    out.push_str(&t.render());
    let mut s = Table::new(&["SERVICE", "REGION", "ENDPOINTS"]);
    for (name, svc) in table["services"].as_object().into_iter().flatten() {
        for (region, eps) in svc["endpoints"].as_object().into_iter().flatten() {
            s.row(vec![name.clone(), region.clone(), list(eps)]);
        }
    }
    out.push('\n');
    out.push_str(&s.render());
    if let Some(quotas) = table["quotas"].as_object().filter(|q| !q.is_empty()) {
        let mut q = Table::new(&["QUOTA", "KEY", "LIMIT", "WINDOW_MS", "ON_PARTITION"]);
        for (name, spec) in quotas {
            q.row(vec![
                name.clone(),
                cell(&spec["key"]),
                cell(&spec["limit"]),
                cell(&spec["window_ms"]),
                cell(&spec["on_partition"]),
            ]);
        }
        out.push('\n');
        out.push_str(&q.render());
    }
    out
}

/// `GET /routes/history`.
pub fn history(v: &Value) -> String {
    let mut t = Table::new(&["VERSION", "COMMITTED (UTC)", "BY", "CAUSE"]);
    for h in v["versions"].as_array().into_iter().flatten() {
        let when = h["committed_at_ms"].as_u64().map_or_else(|| "-".to_string(), utc);
        t.row(vec![cell(&h["version"]), when, cell(&h["by_node"]), cell(&h["cause"])]);
    }
    format!("current version {}\n\n{}", cell(&v["current"]), t.render())
}

/// `GET /audit`.
pub fn audit(v: &Value) -> String {
    let mut t = Table::new(&["SEQ", "WHEN (UTC)", "WHO", "NODE", "ACTION", "VERSION", "CHANGE"]);
    for r in v["records"].as_array().into_iter().flatten() {
        let when = r["at_ms"].as_u64().map_or_else(|| "-".to_string(), utc);
        let versions = format!("{} -> {}", cell(&r["from_version"]), cell(&r["to_version"]));
        t.row(vec![
            cell(&r["seq"]),
            when,
            cell(&r["who"]),
            cell(&r["node"]),
            cell(&r["action"]),
            versions,
            cell(&r["change"]),
        ]);
    }
    format!(
        "{} records kept (newest {}), hash chain {}\n\n{}",
        cell(&v["kept"]),
        cell(&v["retention"]),
        cell(&v["chain"]),
        t.render()
    )
}

/// `GET /quotas`.
pub fn quotas(v: &Value) -> String {
    let mut out = String::new();
    let Some(quotas) = v["quotas"].as_object().filter(|q| !q.is_empty()) else {
        return "no quotas in the routing table\n".into();
    };
    for (name, q) in quotas {
        let _ = writeln!(
            out,
            "quota {name}: {} per {} ms by {}, on partition {}  (admitted {}, rejected {})",
            cell(&q["limit"]),
            cell(&q["window_ms"]),
            cell(&q["key"]),
            cell(&q["on_partition"]),
            cell(&q["admitted"]),
            cell(&q["rejected"]),
        );
        let mut t = Table::new(&["NODE", "LEASE (this window)", "ADMITTED", "REJECTED"]);
        let leases = q["leases"].as_object();
        for (node, counts) in q["nodes"].as_object().into_iter().flatten() {
            let lease = leases.and_then(|l| l.get(node)).map_or_else(|| "-".into(), cell);
            t.row(vec![node.clone(), lease, cell(&counts["admitted"]), cell(&counts["rejected"])]);
        }
        out.push_str(&t.render());
        if let Some(hot) = q["hot_keys"].as_array().filter(|h| !h.is_empty()) {
            let mut h = Table::new(&["HOT KEY", "LEASES", "DEMAND/WINDOW"]);
            for k in hot {
                let pairs = |o: &Value| {
                    o.as_object()
                        .map(|m| {
                            m.iter().map(|(n, v)| format!("{n}={}", cell(v))).collect::<Vec<_>>().join(" ")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into())
                };
                h.row(vec![cell(&k["key"]), pairs(&k["leases"]), pairs(&k["demand"])]);
            }
            out.push_str(&h.render());
        }
        let local = &q["local"];
        let _ = writeln!(
            out,
            "this node ({}): lease {}, {} keys tracked, fallback share {}\n",
            cell(&local["node"]),
            if local["lease_valid"] == true { "valid" } else { "EXPIRED (following on_partition)" },
            cell(&local["tracked_keys"]),
            if local["fallback_share"].is_null() {
                "unlimited".into()
            } else {
                cell(&local["fallback_share"])
            },
        );
    }
    out
}

/// A write's answer (`{"version": V}`).
pub fn written(v: &Value) -> String {
    format!("committed routing table version {}\n", cell(&v["version"]))
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS`.
fn utc(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(0);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_missing_fields_show_as_dashes() {
        let c = json!({
            "node": {"id": "us-1", "region": "us"},
            "raft": {"leader": "eu-1", "term": 3, "commit_index": 9, "voters": ["us-1", "eu-1"], "learners": []},
            "routing": {"version": 4},
            "members": [
                {"id": "us-1", "region": "us", "live": true, "raft_role": "follower", "routing_version": 4,
                 "load": 2, "services": {"echo": {"healthy": 1, "total": 1}}, "http": "127.0.0.1:8080"},
                {"id": "eu-1", "region": "eu", "live": false, "routing_version": 3, "lagging": true}
            ]
        });
        let text = cluster(&c);
        assert!(text.contains("leader eu-1  term 3"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().find(|l| l.starts_with("ID")).expect("header");
        let us = lines.iter().find(|l| l.starts_with("us-1 ")).expect("us row");
        assert_eq!(header.find("REGION"), us.find("us "), "columns line up:\n{text}");
        assert!(text.contains("echo 1/1"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("eu-1") && l.contains("3 (lagging)") && l.contains(" - ")));
    }

    #[test]
    fn quotas_and_history_render() {
        let q = json!({"quotas": {"per-tenant": {
            "limit": 10, "window_ms": 1000, "key": "header:x-tenant", "on_partition": "local_share",
            "admitted": 5, "rejected": 7, "leases": {"us-1": 4},
            "nodes": {"us-1": {"admitted": 5, "rejected": 7}},
            "hot_keys": [{"key": "acme", "leases": {"us-1": 8}, "demand": {"us-1": 30}}],
            "local": {"node": "us-1", "lease_valid": true, "tracked_keys": 1, "fallback_share": 3}
        }}});
        let text = quotas(&q);
        assert!(text.contains("quota per-tenant: 10 per 1000 ms"), "{text}");
        assert!(text.contains("acme") && text.contains("us-1=8") && text.contains("lease valid"), "{text}");
        assert_eq!(quotas(&json!({"quotas": {}})), "no quotas in the routing table\n");
        let h = history(
            &json!({"current": 2, "versions": [{"version": 2, "committed_at_ms": 0, "cause": "put", "by_node": "us-1"}]}),
        );
        assert!(h.contains("1970-01-01 00:00:00") && h.contains("us-1"), "{h}");
    }
}
