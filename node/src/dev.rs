//! `meridian dev`: a whole local multi-region setup in one command.
//!
//! Starts, as child processes of this binary, one demo upstream and `--nodes-per-region` nodes in
//! each of `--regions` regions, all on loopback: one cluster (certificates issued into the dev
//! directory, gossip seeded from the first node, Raft bootstrapped once every node is seen) whose
//! first routing table names every region's upstream and limits `/limited` with a quota. Waits
//! until every node is ready, then prints the nodes and a few things to try. Ctrl-C (or SIGTERM)
//! stops everything it started. Each run starts from fresh Raft data so the demo table applies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const REGION_NAMES: [&str; 6] = ["us", "eu", "ap", "sa", "af", "me"];
/// How long the cluster may take to become ready before `dev` gives up and says why.
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of regions (at most 6).
    #[arg(long, default_value_t = 3)]
    pub regions: usize,
    /// Gateway nodes in each region.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: usize,
    /// First data-plane port; node k listens on base+k.
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// First admin port; node k's admin listens on this+k.
    #[arg(long, default_value_t = 9901)]
    pub admin_base_port: u16,
    /// First of the internal ports: node k's gossip on this+k, its peer plane on this+30+k, and
    /// region r's demo upstream on this+60+r.
    #[arg(long, default_value_t = 17940)]
    pub internal_base_port: u16,
    /// Where certificates, routes, Raft data and logs go.
    #[arg(long, default_value = ".meridian-dev")]
    pub dir: PathBuf,
}

/// One node of the dev cluster.
struct DevNode {
    id: String,
    region: String,
    http: SocketAddr,
    admin: SocketAddr,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.regions == 0 || args.regions > REGION_NAMES.len() {
        bail!("--regions must be between 1 and {}", REGION_NAMES.len());
    }
    if args.nodes_per_region == 0 || args.nodes_per_region > 5 {
        bail!("--nodes-per-region must be between 1 and 5");
    }
    let exe = std::env::current_exe().context("locating the meridian binary")?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let regions = &REGION_NAMES[..args.regions];
    let port = |base: u16, k: usize| -> anyhow::Result<u16> {
        u16::try_from(usize::from(base) + k).context("a dev port would be above 65535; lower the base ports")
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut endpoints = serde_json::Map::new();
    let mut upstreams = Vec::new();
    for (r, region) in regions.iter().enumerate() {
        let up = SocketAddr::from(([127, 0, 0, 1], port(args.internal_base_port, 60 + r)?));
        let name = format!("{region}-echo");
        let log = std::fs::File::create(args.dir.join(format!("{name}.log")))?;
        let child = Command::new(&exe)
            .args(["upstream", "--listen", &up.to_string(), "--name", &name])
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a demo upstream")?;
        children.push((name, child));
        endpoints.insert(region.to_string(), vec![format!("http://{up}")].into());
        upstreams.push((region.to_string(), up));
    }
    let table = serde_json::json!({
        "services": { "echo": {
            "endpoints": endpoints,
            "health_check": { "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500 },
            "timeout_ms": 5000, "retries": 2
        }},
        "routes": [
            { "name": "limited", "path_prefix": "/limited", "service": "echo", "quota": "per-tenant" },
            { "name": "all", "path_prefix": "/", "service": "echo" }
        ],
        "quotas": { "per-tenant": {
            "key": "header:x-tenant", "limit": 10, "window_ms": 1000, "on_partition": "local_share"
        }}
    });
    let routes = args.dir.join("routes.json");
    std::fs::write(&routes, serde_json::to_string_pretty(&table)?)?;

    let ids: Vec<(String, &str)> = regions
        .iter()
        .flat_map(|r| (0..args.nodes_per_region).map(move |n| (format!("{r}-{}", n + 1), *r)))
        .collect();
    let tls = args.dir.join("tls");
    let node_ids: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    crate::certs::issue(&tls, &node_ids).context("issuing dev certificates")?;
    let data = args.dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let expect = ids.len().to_string();
    let seed = format!("127.0.0.1:{}", args.internal_base_port);

    let mut nodes = Vec::new();
    for (k, (id, region)) in ids.iter().enumerate() {
        let node = DevNode {
            id: id.clone(),
            region: region.to_string(),
            http: SocketAddr::from(([127, 0, 0, 1], port(args.base_port, k)?)),
            admin: SocketAddr::from(([127, 0, 0, 1], port(args.admin_base_port, k)?)),
        };
        let gossip = format!("127.0.0.1:{}", port(args.internal_base_port, k)?);
        let peer = format!("127.0.0.1:{}", port(args.internal_base_port, 30 + k)?);
        let log = std::fs::File::create(args.dir.join(format!("{id}.log")))?;
        let child = Command::new(&exe)
            .args(["node", "--id", id, "--region", region])
            .args(["--http", &node.http.to_string(), "--admin", &node.admin.to_string()])
            .args(["--gossip", &gossip, "--peer", &peer, "--seeds", &seed, "--expect", &expect])
            .arg("--tls-dir")
            .arg(&tls)
            .arg("--data-dir")
            .arg(data.join(id))
            .arg("--routes")
            .arg(&routes)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a node")?;
        children.push((id.clone(), child));
        nodes.push(node);
    }
    println!(
        "meridian dev: starting {} regions x {} nodes (logs in {}/)",
        args.regions,
        args.nodes_per_region,
        args.dir.display()
    );

    let ready = async {
        let started = tokio::time::Instant::now();
        loop {
            let mut all = true;
            for n in &nodes {
                all &= get(n.admin, "/readyz").await.is_some_and(|(status, _)| status == 200);
            }
            if all {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        took = tokio::time::timeout(READY_WITHIN, ready) => match took {
            Ok(took) => Ok(took),
            Err(_) => Err(format!("not ready within {READY_WITHIN:?}; see the logs in {}/", args.dir.display())),
        },
        r = exited(&mut children) => Err(r),
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        _ = term.recv() => Err("terminated".to_string()),
    };
    let reason = match outcome {
        Ok(took) => {
            print_ready(&nodes, &upstreams, took).await;
            tokio::select! {
                r = exited(&mut children) => r,
                _ = tokio::signal::ctrl_c() => "interrupted".to_string(),
                _ = term.recv() => "terminated".to_string(),
            }
        }
        Err(reason) => reason,
    };
    println!("meridian dev: stopping ({reason})");
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id() {
            // SIGTERM first so nodes drain; kill_on_drop cleans up stragglers.
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
    for (_, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
    println!("meridian dev: stopped");
    Ok(())
}

/// Resolves when one of the children exits, naming it.
async fn exited(children: &mut [(String, Child)]) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return format!("{name} exited ({status}); see its log");
            }
        }
    }
}

async fn print_ready(nodes: &[DevNode], upstreams: &[(String, SocketAddr)], took: Duration) {
    let leader = match get(nodes[0].admin, "/cluster").await {
        Some((_, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["raft"]["leader"].as_str().map(String::from)),
        None => None,
    };
    println!("meridian dev: ready in {:.1} s\n", took.as_secs_f64());
    let mut t = crate::ctl::render::Table::new(&["NODE", "REGION", "RAFT", "DATA", "ADMIN"]);
    for n in nodes {
        let role = if leader.as_deref() == Some(n.id.as_str()) { "leader" } else { "follower" };
        t.row(vec![
            n.id.clone(),
            n.region.clone(),
            role.to_string(),
            format!("http://{}", n.http),
            format!("http://{}", n.admin),
        ]);
    }
    print!("{}", t.render());
    let (first, up) = (&nodes[0], upstreams[0].1);
    let other = upstreams.get(1).map_or("another region", |u| u.0.as_str());
    println!(
        "
try:
  curl -i http://{http}/hello                      # served in {region}: see x-meridian-region
  curl http://{admin}/                             # the dashboard (also /cluster, /quotas, /metrics)
  meridian ctl --admin http://{admin} cluster

  failover: make the {region} upstream fail; the same request is then served by {other}
  curl -s 'http://{up}/_control/fail?status=503'
  curl -si http://{http}/hello | grep x-meridian-region
  curl -s http://{up}/_control/reset

  a global rate limit: 10 requests/s per x-tenant for the whole cluster
  for i in $(seq 15); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'x-tenant: acme' http://{http}/limited; done; echo
  meridian ctl --admin http://{admin} quotas

stop: Ctrl-C",
        http = first.http,
        admin = first.admin,
        region = first.region,
    );
}

/// `GET path` on `addr` with a short bound; the status and body, or `None`.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = std::str::from_utf8(buf.get(..12)?).ok()?;
        let status = text.get(9..12)?.parse().ok()?;
        let body_at = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        Some((status, buf[body_at..].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}
