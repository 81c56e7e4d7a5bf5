//! `meridian ctl` against a real node: tables by default, the API's JSON with `--json`, and a
//! refused write that says why and exits non-zero.

use std::time::Duration;

use meridian_tests::*;
use serde_json::json;

#[test]
fn ctl_prints_tables_json_and_refusals() {
    let dir = TempDir::new("t26-ctl");
    let up = Upstream::start("up", dir.path());
    let mut table = simple_table("us", &[up.url()], json!({}));
    table["routes"][0]["quota"] = json!("per-tenant");
    table["quotas"] = json!({"per-tenant": {"key": "header:x-tenant", "limit": 5, "window_ms": 1000}});
    let node = Node::with_table("us-1", "us", &table, &[], &dir);
    let admin = format!("http://{}", node.admin);
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--admin", admin.as_str()];
        all.extend_from_slice(args);
        let (code, err, out) = run_expecting_exit("ctl", &all, &[], dir.path(), Duration::from_secs(20));
        (code, err, out.join("\n"))
    };

    phase("routes get: a table of routes, services and quotas");
    let (code, err, out) = ctl(&["routes", "get"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("routing table version 1"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ROUTE") && l.contains("QUOTA")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("all ") && l.contains("per-tenant")), "{out}");
    assert!(out.contains(&up.url()), "{out}");

    phase("--json gives the API's JSON");
    let (code, _, out) = ctl(&["--json", "routes", "get"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).expect("ctl --json prints JSON");
    assert_eq!(v["version"], 1);

    phase("quotas and history");
    assert_eq!(request(node.http, "GET", "/x", &[("x-tenant", "a")], b"").status, 200);
    let (code, _, out) = ctl(&["quotas"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("quota per-tenant: 5 per 1000 ms by header:x-tenant"), "{out}");
    let (code, _, out) = ctl(&["routes", "history"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("current version 1") && out.contains("VERSION"), "{out}");

    phase("a refused write exits non-zero and lists the problems");
    let bad = dir.write(
        "bad.json",
        &json!({"services": {}, "routes": [{"name": "r", "service": "nope"}]}).to_string(),
    );
    let (code, err, _) = ctl(&["routes", "put", bad.to_str().expect("path")]);
    assert_ne!(code, Some(0));
    assert!(err.contains("routes[0].service") && err.contains("400"), "{err}");
    let good = dir.write("good.json", &table.to_string());
    let (code, err, out) = ctl(&["routes", "put", good.to_str().expect("path"), "--if-match", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "committed routing table version 2");

    phase("audit: the bootstrap and the write, newest first, with who and what");
    let (code, err, out) = ctl(&["audit"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("2 records kept") && out.contains("hash chain intact"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].starts_with("2 ") && rows[0].contains("local") && rows[0].contains("1 -> 2"), "{out}");
    assert!(rows[1].contains("bootstrap") && rows[1].contains("+route all"), "{out}");
}
