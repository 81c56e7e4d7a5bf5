//! Admin roles and the audit trail (issue 8), on real processes: read-only and admin tokens,
//! a write with a read-only token refused (403) and changing nothing, secrets redacted for
//! read-only callers, and every committed routing-table write recorded — who, when, which node,
//! what changed — in the Raft-replicated trail that `GET /audit` shows on every node, survives
//! a restart, and offers no way to be rewritten through the API.

use std::time::Duration;

use meridian_tests::*;

const OPS: &str = "ops-token-aaaaaaaaaaaaaaaa";
const DEPLOYER: &str = "deploy-token-bbbbbbbbbbbbbbbb";
const GRAFANA: &str = "grafana-token-cccccccccccccccc";
/// base64 of 32 bytes: a valid HS256 secret whose clear text must never reach a read-only caller.
const HS_SECRET_B64: &str = "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10OTgtdGVzdHM=";

fn token_file(dir: &TempDir) -> String {
    let text = format!(
        "# name     role       token\nops        admin      {OPS}\ndeployer   admin      {DEPLOYER}\ngrafana    read-only  {GRAFANA}\n"
    );
    dir.write("admin-tokens", &text).display().to_string()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn admin(node: &Node, method: &str, path: &str, token: Option<&str>, body: &str) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
    request(node.admin, method, path, &headers, body.as_bytes())
}

/// A table with an HS256-protected route `/secure` and a route per name in `extra_routes`.
fn table(up: &str, extra_routes: &[&str]) -> Value {
    let mut routes = vec![json!({
        "name": "secure", "path_prefix": "/secure", "service": "echo",
        "auth": {"jwt": {"keys": [{"kid": "k1", "alg": "HS256", "secret_base64": HS_SECRET_B64}]}}
    })];
    for name in extra_routes {
        routes.push(json!({"name": name, "path_prefix": format!("/{name}"), "service": "echo"}));
    }
    json!({"services": {"echo": {"endpoints": {"us": [up], "eu": [up]}}}, "routes": routes})
}

#[test]
fn roles_redaction_and_the_audit_trail_on_one_node() {
    let dir = TempDir::new("t98-standalone");
    let up = Upstream::start("up", dir.path());
    let tokens = token_file(&dir);
    let node = Node::with_table("n1", "us", &table(&up.url(), &[]), &["--admin-token-file", &tokens], &dir);

    phase("no token or an unknown one: 401 everywhere but the probes");
    assert_eq!(admin(&node, "GET", "/audit", None, "").status, 401);
    assert_eq!(admin(&node, "GET", "/routes", Some("not-a-token-0000000000"), "").status, 401);
    assert_eq!(admin(&node, "GET", "/healthz", None, "").status, 200);

    phase("a read-only token reads every view, with the HMAC secret redacted");
    for path in ["/cluster", "/routes", "/routes/history", "/quotas", "/metrics", "/audit"] {
        assert_eq!(admin(&node, "GET", path, Some(GRAFANA), "").status, 200, "{path} with a read-only token");
    }
    let seen = admin(&node, "GET", "/routes", Some(GRAFANA), "");
    assert!(!seen.text().contains(HS_SECRET_B64), "read-only GET /routes shows the secret: {}", seen.text());
    assert_eq!(seen.json()["table"]["routes"][0]["auth"]["jwt"]["keys"][0]["secret_base64"], "(redacted)");
    let history = admin(&node, "GET", "/routes/history", Some(GRAFANA), "").text();
    assert!(!history.contains(HS_SECRET_B64), "read-only history shows the secret");
    let full = admin(&node, "GET", "/routes", Some(OPS), "");
    assert!(full.text().contains(HS_SECRET_B64), "an admin gets the table as stored (GET -> edit -> PUT)");

    phase("a write with a read-only token: 403 naming the token, nothing changes, the refusal is counted");
    let v2 = table(&up.url(), &["billing"]).to_string();
    let r = admin(&node, "PUT", "/routes", Some(GRAFANA), &v2);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap_or("").contains("grafana"), "{}", r.text());
    let r = admin(&node, "POST", "/routes/rollback", Some(GRAFANA), r#"{"to": 1}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(admin(&node, "GET", "/routes", Some(OPS), "").json()["version"], 1);
    assert_eq!(node.metric("meridian_admin_denied_total{reason=\"read_only\"}"), 2.0);

    phase("an admin write commits and is audited with its author, node and what changed");
    let r = admin(&node, "PUT", "/routes", Some(DEPLOYER), &v2);
    assert_eq!(r.status, 200, "{}", r.text());
    let audit = admin(&node, "GET", "/audit", Some(GRAFANA), "").json();
    assert_eq!(audit["chain"], "intact", "{audit}");
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "the bootstrap and the write, nothing for refusals: {audit}");
    let newest = &records[0];
    assert_eq!(newest["who"], "deployer");
    assert_eq!(newest["node"], "n1");
    assert_eq!((newest["from_version"].as_u64(), newest["to_version"].as_u64()), (Some(1), Some(2)));
    assert_eq!(newest["summary"]["added"], json!(["route billing"]));
    assert!(newest["at_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{newest}");
    assert_eq!(records[1]["who"], "bootstrap");

    phase("the trail cannot be changed through the API");
    for method in ["PUT", "POST", "DELETE", "PATCH"] {
        let r = admin(&node, method, "/audit", Some(OPS), "{}");
        assert_eq!(r.status, 405, "{method} /audit: {}", r.text());
    }
    let after = admin(&node, "GET", "/audit", Some(OPS), "").json();
    assert_eq!(after["records"], audit["records"]);
    assert_eq!(admin(&node, "GET", "/audit?limit=0", Some(OPS), "").status, 400);
    assert_eq!(
        admin(&node, "GET", "/audit?limit=1", Some(OPS), "").json()["records"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn cluster_writes_are_audited_everywhere_and_survive_a_restart() {
    let dir = TempDir::new("t98-cluster");
    let tls = make_certs(dir.path(), "tls", &["n1", "n2", "n3"]);
    let up = Upstream::start("up", dir.path());
    let tokens = token_file(&dir);
    let mut spec = ClusterSpec::new(&dir, &tls, &table(&up.url(), &[]), 3);
    spec.extra = vec!["--admin-token-file".into(), tokens.clone()];

    phase("three nodes with admin tokens form a cluster");
    let n1 = spec.start("n1", "us", &[]);
    let n2 = spec.start("n2", "us", &[n1.gossip]);
    let n3 = spec.start("n3", "eu", &[n1.gossip]);
    let mut nodes = vec![n1, n2, n3];
    let leader = {
        let refs: Vec<&ClusterNode> = nodes.iter().collect();
        wait_cluster_ready(&refs, Duration::from_secs(15))
    };
    let follower = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let follower_id = nodes[follower].id.clone();

    phase("a read-only token cannot write through a follower either");
    let v2 = table(&up.url(), &["billing"]).to_string();
    let r = admin(&nodes[follower], "PUT", "/routes", Some(GRAFANA), &v2);
    assert_eq!(r.status, 403, "{}", r.text());

    phase("deployer writes through follower {follower_id}; ops rolls back through the leader");
    let r = admin(&nodes[follower], "PUT", "/routes", Some(DEPLOYER), &v2);
    assert_eq!(r.status, 200, "{}", r.text());
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("leader node");
    let r = admin(leader_node, "POST", "/routes/rollback", Some(OPS), r#"{"to": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    {
        let refs: Vec<&ClusterNode> = nodes.iter().collect();
        wait_all_at_version(&refs, 3, Duration::from_secs(10));
    }

    phase("every node shows the same trail: bootstrap, the write, the rollback");
    let trail = |n: &ClusterNode| admin(n, "GET", "/audit", Some(GRAFANA), "").json();
    let first = trail(&nodes[0]);
    let records = first["records"].as_array().cloned().unwrap_or_default();
    let summary: Vec<(String, String, String)> = records[..2]
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap_or("").to_string(),
                r["node"].as_str().unwrap_or("").to_string(),
                r["action"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ops".to_string(), leader.clone(), "rollback to v1".to_string()),
            ("deployer".to_string(), follower_id.clone(), "write".to_string()),
        ],
        "{first}"
    );
    assert_eq!(records.len(), 3, "{first}");
    assert_eq!(
        (records[2]["who"].as_str(), records[2]["action"].as_str()),
        (Some("bootstrap"), Some("bootstrap"))
    );
    assert_eq!(records[0]["summary"]["removed"], json!(["route billing"]));
    assert_eq!(first["chain"], "intact");
    assert_eq!(first["replicated"], true);
    for n in &nodes[1..] {
        assert_eq!(trail(n)["records"], first["records"], "{} holds another trail", n.id);
    }

    phase("a restarted node comes back with the trail from its own disk");
    let victim = nodes.iter().position(|n| n.id != leader).expect("a follower");
    let id = nodes[victim].id.clone();
    let region = nodes[victim].region.clone();
    let seeds: Vec<_> = nodes.iter().filter(|n| n.id != id).map(|n| n.gossip).collect();
    let mut old = nodes.remove(victim);
    old.node.proc.signal(15);
    assert!(old.node.proc.wait_exit(Duration::from_secs(15)).is_some(), "{id} did not stop on SIGTERM");
    drop(old);
    let back = spec.start(&id, &region, &seeds);
    eventually(Duration::from_secs(15), || back.is_ready(), "the restarted node is ready");
    let again = trail(&back);
    assert_eq!(again["records"], first["records"], "restarted {id}: {again}");
    assert_eq!(again["chain"], "intact");
}
