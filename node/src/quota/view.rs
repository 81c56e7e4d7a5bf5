//! What an operator sees of the quotas: `GET /quotas` and the quota metrics.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use crate::core::table::OnPartition;
use crate::gateway::{unix_ms, Gateway};

/// Hot keys listed per quota in `/quotas`, busiest first.
const HOT_KEYS_SHOWN: usize = 20;

/// `GET /quotas`: per quota its terms; the cluster's leases for the current window (the equal
/// split every participant holds for ordinary keys, and the hot keys' demand-based shares); every
/// node's admitted and rejected counts as last reported; and this node's own view.
pub fn quotas_json(gw: &Gateway) -> Value {
    let mut out = Map::new();
    let Some(snap) = gw.snapshot() else { return json!({ "quotas": out }) };
    let ledger = gw.quotas.ledger();
    let clustered = gw.quotas.is_clustered();
    let now = unix_ms();
    let limiters = gw.quotas.limiters();
    for (name, q) in &snap.table.quotas {
        let window = now / q.window_ms.max(1);
        let local = limiters.iter().find(|(n, _)| n == name).map(|(_, l)| l.totals()).unwrap_or_default();
        let (local_admitted, local_rejected) = (local.admitted, local.rejected);
        let mut entry = json!({
            "key": q.key, "limit": q.limit, "window_ms": q.window_ms, "on_partition": q.on_partition,
            "enforced": true,
            "mode": if clustered { "leases" } else { "standalone" },
        });
        let (leases, nodes, admitted, rejected, hot, lease_until) = if clustered {
            let leases: Map<String, Value> =
                ledger.equal_split(name, window).into_iter().map(|(n, s)| (n, json!(s))).collect();
            let counts = ledger.counts(name);
            let mut nodes = Map::new();
            let (mut a, mut r) = (0, 0);
            for (node, admitted, rejected, at) in counts {
                a += admitted;
                r += rejected;
                nodes.insert(node, json!({"admitted": admitted, "rejected": rejected, "reported_at_ms": at}));
            }
            let hot: Vec<Value> = ledger
                .hot_keys(name, window, HOT_KEYS_SHOWN)
                .into_iter()
                .map(|h| {
                    json!({
                        "key": h.key,
                        "leases": h.shares.into_iter().map(|(k, v)| (k, json!(v))).collect::<Map<_, _>>(),
                        "demand": h.demand.into_iter().map(|(k, v)| (k, json!(v))).collect::<Map<_, _>>(),
                    })
                })
                .collect();
            let until = ledger
                .ledger(name)
                .and_then(|l| l.sealed_through.map(|s| (s + 1).saturating_mul(l.window_ms)));
            (Value::Object(leases), Value::Object(nodes), a, r, hot, until)
        } else {
            let mut nodes = Map::new();
            nodes.insert(
                gw.identity.id.clone(),
                json!({"admitted": local_admitted, "rejected": local_rejected, "reported_at_ms": now}),
            );
            (
                json!({ gw.identity.id.clone(): q.limit }),
                Value::Object(nodes),
                local_admitted,
                local_rejected,
                Vec::new(),
                None,
            )
        };
        let fallback = gw.quotas.fallback_share(q);
        let obj = entry.as_object_mut().expect("json object literal");
        obj.insert("leases".into(), leases);
        obj.insert("nodes".into(), nodes);
        obj.insert("admitted".into(), json!(admitted));
        obj.insert("rejected".into(), json!(rejected));
        obj.insert("hot_keys".into(), Value::Array(hot));
        obj.insert(
            "local".into(),
            json!({
                "node": gw.identity.id,
                "admitted": local_admitted,
                "rejected": local_rejected,
                "fallback_decisions": local.fallback_decisions,
                "tracked_keys": local.tracked,
                "lease_valid_until_ms": lease_until,
                "lease_valid": !clustered || lease_until.is_some_and(|u| u > now),
                "fallback_share": if fallback == u64::MAX { Value::Null } else { json!(fallback) },
                "partition_bound_per_window": partition_bound(q.on_partition, fallback),
            }),
        );
        out.insert(name.clone(), entry);
    }
    json!({ "quotas": out })
}

/// How many requests per window per key this node may admit beyond the global limit while it has
/// no lease: its whole fallback share in the worst case (`null` = unbounded, for `open`).
fn partition_bound(policy: OnPartition, fallback: u64) -> Value {
    match policy {
        OnPartition::Closed => json!(0),
        OnPartition::Open => Value::Null,
        OnPartition::LocalShare => json!(fallback),
    }
}

/// Quota metrics in Prometheus text.
pub fn render_metrics(gw: &Gateway, out: &mut String) {
    let limiters: Vec<_> = gw.quotas.limiters().into_iter().map(|(name, l)| (name, l.totals())).collect();
    let snap = gw.snapshot();
    let ledger = gw.quotas.ledger();
    let now = unix_ms();
    out.push_str("# HELP meridian_quota_decisions_total Requests counted against a quota on this node, by decision.\n# TYPE meridian_quota_decisions_total counter\n");
    for (name, l) in &limiters {
        let _ = writeln!(
            out,
            "meridian_quota_decisions_total{{quota=\"{name}\",decision=\"admitted\"}} {}",
            l.admitted
        );
        let _ = writeln!(
            out,
            "meridian_quota_decisions_total{{quota=\"{name}\",decision=\"rejected\"}} {}",
            l.rejected
        );
    }
    out.push_str("# HELP meridian_quota_fallback_decisions_total Decisions taken without a lease (on_partition policy).\n# TYPE meridian_quota_fallback_decisions_total counter\n");
    for (name, l) in &limiters {
        let _ = writeln!(
            out,
            "meridian_quota_fallback_decisions_total{{quota=\"{name}\"}} {}",
            l.fallback_decisions
        );
    }
    out.push_str("# HELP meridian_quota_tracked_keys Keys this node counts for a quota.\n# TYPE meridian_quota_tracked_keys gauge\n");
    for (name, l) in &limiters {
        let _ = writeln!(out, "meridian_quota_tracked_keys{{quota=\"{name}\"}} {}", l.tracked);
    }
    out.push_str("# HELP meridian_quota_lease_valid 1 while this node holds a lease on the current window.\n# TYPE meridian_quota_lease_valid gauge\n");
    let quotas: Vec<_> = snap.as_ref().map(|s| s.table.quotas.iter().collect()).unwrap_or_default();
    for (name, q) in &quotas {
        let valid = !gw.quotas.is_clustered()
            || ledger
                .ledger(name)
                .and_then(|l| l.sealed_through)
                .is_some_and(|s| s >= now / q.window_ms.max(1));
        let _ = writeln!(out, "meridian_quota_lease_valid{{quota=\"{name}\"}} {}", u8::from(valid));
    }
    out.push_str("# HELP meridian_quota_partition_bound Requests per window per key this node may admit beyond the limit without a lease (+Inf for open).\n# TYPE meridian_quota_partition_bound gauge\n");
    for (name, q) in &quotas {
        let bound = match q.on_partition {
            OnPartition::Closed => "0".to_string(),
            OnPartition::Open => "+Inf".to_string(),
            OnPartition::LocalShare => gw.quotas.fallback_share(q).to_string(),
        };
        let policy = on_partition_name(q.on_partition);
        let _ = writeln!(
            out,
            "meridian_quota_partition_bound{{quota=\"{name}\",on_partition=\"{policy}\"}} {bound}"
        );
    }
    let s = &gw.quotas.stats;
    let _ = writeln!(out, "# HELP meridian_quota_rounds_total Quota rounds this node proposed as leader.\n# TYPE meridian_quota_rounds_total counter\nmeridian_quota_rounds_total{{result=\"committed\"}} {}\nmeridian_quota_rounds_total{{result=\"failed\"}} {}", s.rounds_committed.load(Ordering::Relaxed), s.rounds_failed.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP meridian_quota_reports_total Demand reports sent to (or received as) the leader.\n# TYPE meridian_quota_reports_total counter\nmeridian_quota_reports_total{{result=\"sent\"}} {}\nmeridian_quota_reports_total{{result=\"failed\"}} {}\nmeridian_quota_reports_total{{result=\"received\"}} {}", s.reports_sent.load(Ordering::Relaxed), s.reports_failed.load(Ordering::Relaxed), s.reports_received.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP meridian_quota_hot_keys Keys the ledger splits by demand.\n# TYPE meridian_quota_hot_keys gauge\nmeridian_quota_hot_keys {}", ledger.hot_key_count());
}

fn on_partition_name(p: OnPartition) -> &'static str {
    match p {
        OnPartition::LocalShare => "local_share",
        OnPartition::Closed => "closed",
        OnPartition::Open => "open",
    }
}
