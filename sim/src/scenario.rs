//! The standard scenarios: a workload and a fault schedule each, scaled to the run's duration.

use crate::faults::{self, Fault, FaultKind};
use crate::world::{Config, QuotaWorkload};

/// Names accepted by `--scenario`.
pub const NAMES: [&str; 5] = ["baseline", "region-loss", "partition", "rolling-restart", "quota-skew"];

/// The config of scenario `name` (faults from `--faults` replace the scenario's own).
pub fn config(
    name: &str,
    seed: u64,
    regions: usize,
    nodes_per_region: usize,
    duration_s: u64,
    faults_spec: Option<&str>,
) -> anyhow::Result<Config> {
    let d = duration_s as f64;
    let r1 = crate::world::REGION_NAMES.get(1).copied().unwrap_or("eu");
    let mut cfg = Config {
        seed,
        regions,
        nodes_per_region,
        duration_s,
        faults: Vec::new(),
        rate_per_node: 20.0,
        endpoints_per_region: 2,
        quota: None,
        post_share: 0.1,
    };
    cfg.faults = match name {
        "baseline" => Vec::new(),
        "region-loss" => vec![
            Fault { kind: FaultKind::UpstreamDown("us".into()), start_s: d * 0.2, end_s: d * 0.5 },
            Fault { kind: FaultKind::RegionDown(r1.into()), start_s: d * 0.55, end_s: d * 0.75 },
        ],
        "partition" => {
            let half = regions.div_ceil(2);
            let groups: Vec<Vec<String>> =
                vec![(0..half).map(region).collect(), (half..regions).map(region).collect()];
            if regions < 2 {
                Vec::new()
            } else {
                vec![
                    Fault { kind: FaultKind::Partition(groups), start_s: d * 0.25, end_s: d * 0.6 },
                    Fault { kind: FaultKind::UpstreamDown("us".into()), start_s: d * 0.3, end_s: d * 0.5 },
                ]
            }
        }
        "rolling-restart" => {
            vec![Fault { kind: FaultKind::RollingRestart, start_s: d * 0.1, end_s: d * 0.8 }]
        }
        "quota-skew" => {
            cfg.quota = Some(QuotaWorkload {
                limit: 200,
                window_ms: 1000,
                keys: 50,
                hot_share: 0.5,
                region_skew: 0.5,
            });
            cfg.rate_per_node = (2000.0 / (regions * nodes_per_region) as f64).max(20.0);
            vec![Fault { kind: FaultKind::LeaderCrash, start_s: d * 0.5, end_s: d * 0.7 }]
        }
        other => anyhow::bail!("unknown scenario {other:?}; one of {}", NAMES.join(", ")),
    };
    if let Some(spec) = faults_spec {
        cfg.faults = faults::parse(spec)?;
    }
    Ok(cfg)
}

fn region(r: usize) -> String {
    crate::world::REGION_NAMES.get(r).map_or_else(|| format!("r{r}"), |s| s.to_string())
}

/// A fault schedule in `--faults` syntax (how to reproduce it).
pub fn describe(faults: &[Fault]) -> String {
    faults
        .iter()
        .map(|f| {
            let when = format!("@{}-{}", f.start_s, f.end_s);
            match &f.kind {
                FaultKind::RegionDown(r) => format!("region-down:{r}{when}"),
                FaultKind::UpstreamDown(r) => format!("upstream-down:{r}{when}"),
                FaultKind::Partition(g) => {
                    format!("partition:{}{when}", g.iter().map(|x| x.join(",")).collect::<Vec<_>>().join("|"))
                }
                FaultKind::Crash(n) => format!("crash:{n}{when}"),
                FaultKind::LeaderCrash => format!("leader-crash{when}"),
                FaultKind::RollingRestart => format!("rolling-restart{when}"),
                FaultKind::Loss(p) => format!("loss:{p}"),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}
