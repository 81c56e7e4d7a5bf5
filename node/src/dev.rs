//! `meridian dev`: a whole local multi-region setup in one command.
//!
//! Starts, as child processes of this binary, two demo upstreams and `--nodes-per-region` nodes
//! in each of `--regions` regions, all on loopback: one cluster (certificates issued into the dev
//! directory, gossip seeded from the first node, Raft bootstrapped once every node is seen) whose
//! first routing table names every region's upstreams. Ctrl-C stops everything. Each run starts
//! from fresh Raft data so the demo table is the one applied.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::process::{Child, Command};

const REGION_NAMES: [&str; 6] = ["us", "eu", "ap", "sa", "af", "me"];

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Number of regions (at most 6).
    #[arg(long, default_value_t = 3)]
    pub regions: usize,
    /// Gateway nodes in each region.
    #[arg(long, default_value_t = 1)]
    pub nodes_per_region: usize,
    /// First data-plane port; node k listens on base+k, its admin on 9901+k.
    #[arg(long, default_value_t = 8080)]
    pub base_port: u16,
    /// Where routes and logs go.
    #[arg(long, default_value = ".meridian-dev")]
    pub dir: PathBuf,
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
    let mut children: Vec<(String, Child)> = Vec::new();
    let mut endpoints = serde_json::Map::new();
    for (r, region) in regions.iter().enumerate() {
        let mut urls = Vec::new();
        for k in 0..2 {
            let port = 9100 + (r * 10 + k) as u16;
            let name = format!("{region}-echo-{k}");
            let log = std::fs::File::create(args.dir.join(format!("{name}.log")))?;
            let child = Command::new(&exe)
                .args(["upstream", "--listen", &format!("127.0.0.1:{port}"), "--name", &name])
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting a demo upstream")?;
            children.push((name, child));
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        endpoints.insert(region.to_string(), urls.into());
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
    let seed = "127.0.0.1:17946".to_string();

    println!("meridian dev: {} regions x {} nodes, one cluster", args.regions, args.nodes_per_region);
    println!("{:<8} {:<6} {:<24} {:<24}", "node", "region", "http", "admin");
    for (k, (id, region)) in ids.iter().enumerate() {
        let k = k as u16;
        {
            let http = format!("127.0.0.1:{}", args.base_port + k);
            let admin = format!("127.0.0.1:{}", 9901 + k);
            let gossip = format!("127.0.0.1:{}", 17946 + k);
            let peer = format!("127.0.0.1:{}", 17966 + k);
            let log = std::fs::File::create(args.dir.join(format!("{id}.log")))?;
            let child = Command::new(&exe)
                .args(["node", "--id", id, "--region", region, "--http", &http, "--admin", &admin])
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
            println!(
                "{id:<8} {region:<6} {:<24} {:<24}",
                format!("http://{http}"),
                format!("http://{admin}")
            );
            children.push((id.clone(), child));
        }
    }
    println!("\ntry:  curl -i http://127.0.0.1:{}/hello", args.base_port);
    println!("      curl http://127.0.0.1:9901/cluster");
    println!(
        "      for i in $(seq 15); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'x-tenant: acme' \\\n        \
         http://127.0.0.1:{}/limited; done; echo   # 10/s for the whole cluster; again: the lease follows demand",
        args.base_port
    );
    println!("      curl http://127.0.0.1:9901/quotas");
    println!("logs: {}/   stop: Ctrl-C", args.dir.display());

    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for (name, child) in children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return format!("{name} exited ({status}); see {}/{name}.log", args.dir.display());
                }
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = tokio::select! {
        r = watch => r,
        _ = tokio::signal::ctrl_c() => "interrupted".to_string(),
        _ = term.recv() => "terminated".to_string(),
    };
    println!("meridian dev: stopping ({reason})");
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id() {
            // SIGTERM first so nodes drain; kill_on_drop cleans up stragglers.
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
    for (_, child) in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    Ok(())
}
