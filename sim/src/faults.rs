//! Fault specifications: what breaks, and when (simulated seconds).
//!
//! `--faults` takes faults separated by `;`, each `KIND:ARGS@START-END` (or `@START` for the
//! instant ones):
//!
//! | fault | meaning |
//! |---|---|
//! | `region-down:us@10-30` | every node and upstream of region `us` is down |
//! | `upstream-down:eu@10-30` | region `eu`'s upstream endpoints fail (connect refused) |
//! | `partition:us,eu\|ap@20-40` | regions split into groups that cannot reach each other (unlisted regions join the first group) |
//! | `crash:us-2@5-15` | one node is down |
//! | `leader-crash@12-20` | whichever node leads at 12 s is down until 20 s |
//! | `rolling-restart@10-50` | every node restarts once, one at a time, spread over the interval (down 1 s each) |
//! | `loss:0.01` | each node-to-node message is lost with this probability, all run long |

use anyhow::{bail, Context};

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    RegionDown(String),
    UpstreamDown(String),
    Partition(Vec<Vec<String>>),
    Crash(String),
    LeaderCrash,
    RollingRestart,
    Loss(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub start_s: f64,
    pub end_s: f64,
}

/// Parses a `--faults` value.
pub fn parse(spec: &str) -> anyhow::Result<Vec<Fault>> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(p) = part.strip_prefix("loss:") {
            let p: f64 = p.parse().with_context(|| format!("{part}: loss must be a probability"))?;
            if !(0.0..1.0).contains(&p) {
                bail!("{part}: loss must be in [0, 1)");
            }
            out.push(Fault { kind: FaultKind::Loss(p), start_s: 0.0, end_s: f64::INFINITY });
            continue;
        }
        let (head, when) = part.split_once('@').with_context(|| format!("{part}: missing @START-END"))?;
        let (start_s, end_s) = match when.split_once('-') {
            Some((a, b)) => (a.parse::<f64>(), b.parse::<f64>()),
            None => (when.parse::<f64>(), when.parse::<f64>().map(|s| s + 10.0)),
        };
        let (start_s, end_s) = (
            start_s.with_context(|| format!("{part}: bad start time"))?,
            end_s.with_context(|| format!("{part}: bad end time"))?,
        );
        if !(start_s >= 0.0 && end_s > start_s) {
            bail!("{part}: the interval must start at 0 or later and end after it starts");
        }
        let (kind, arg) = head.split_once(':').map_or((head, ""), |(k, a)| (k, a));
        let kind = match kind {
            "region-down" if !arg.is_empty() => FaultKind::RegionDown(arg.to_string()),
            "upstream-down" if !arg.is_empty() => FaultKind::UpstreamDown(arg.to_string()),
            "crash" if !arg.is_empty() => FaultKind::Crash(arg.to_string()),
            "partition" if arg.contains('|') => FaultKind::Partition(
                arg.split('|')
                    .map(|g| g.split(',').map(str::to_string).filter(|r| !r.is_empty()).collect())
                    .collect(),
            ),
            "leader-crash" => FaultKind::LeaderCrash,
            "rolling-restart" => FaultKind::RollingRestart,
            _ => bail!("{part}: unknown fault (see meridian-sim --help)"),
        };
        out.push(Fault { kind, start_s, end_s });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let f = parse("region-down:us@10-30; partition:us,eu|ap@20-40;loss:0.01;leader-crash@5").unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].kind, FaultKind::RegionDown("us".into()));
        assert_eq!(f[1].kind, FaultKind::Partition(vec![vec!["us".into(), "eu".into()], vec!["ap".into()]]));
        assert_eq!((f[3].start_s, f[3].end_s), (5.0, 15.0));
        for bad in ["boom@1-2", "region-down@1-2", "crash:x@5-1", "loss:2", "partition:us@1-2"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
