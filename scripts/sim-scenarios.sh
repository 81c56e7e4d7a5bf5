#!/usr/bin/env bash
# sim-scenarios.sh - the standard simulation scenarios at one scale, as a markdown table.
#
# Runs meridian-sim (release build) for each scenario (baseline, region-loss, partition,
# rolling-restart, quota-skew) with the same seed and scale, and prints one row per scenario from
# the JSON line each run ends with, plus the wall time of the run. This is the table in
# docs/simulation.md.
# Usage: scripts/sim-scenarios.sh [SEED] [REGIONS] [NODES_PER_REGION] [DURATION_S]
#        (defaults: 1 5 40 60)
# Exit status: 0 when every run held every invariant, 1 otherwise (the failing run's report is
# printed to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-1} regions=${2:-5} nodes=${3:-40} duration=${4:-60}
cargo build --release -q -p meridian-sim
bin=target/release/meridian-sim
status=0
echo "seed $seed, $regions regions x $nodes nodes, $duration s simulated"
echo
echo "| scenario | faults | requests | forwarded | failed idempotent (budget / stale view) | failover | convergence | leader changes | quota admitted / limit (mean, min–max) | msgs / node / s | wall |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"
for s in baseline region-loss partition rolling-restart quota-skew; do
    t0=$(date +%s%N)
    if ! out=$("$bin" --seed "$seed" --regions "$regions" --nodes-per-region "$nodes" --duration-s "$duration" --scenario "$s"); then
        status=1
        echo "$out" >&2
    fi
    t1=$(date +%s%N)
    printf '%s\n' "$out" | tail -1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
name, wall = sys.argv[1], (int(sys.argv[3]) - int(sys.argv[2])) / 1e9
acc = r["quota_accuracy"]
quota = "-" if acc is None else "%.3f (%.2f–%.2f)" % tuple(acc)
conv = "-" if r["convergence_ms"] is None else "%d ms" % r["convergence_ms"]
fails = "%d (%d / %d)" % (r["failed_idempotent"], r["refused_by_cross_region_budget"], r["failed_on_a_stale_view"])
held = "" if r["violation"] is None else " **VIOLATION**"
faults = (r["faults"] or "none").replace("|", "\\|")
print("| %s%s | `%s` | %d | %.1f %% | %s | %d ms | %s | %d | %s | %.1f | %.2f s |" % (
    name, held, faults, r["requests"], r["forwarded_share"] * 100, fails, r["failover_ms"], conv,
    r["leader_changes"], quota, r["messages_per_node_per_s"], wall))
' "$s" "$t0" "$t1"
done
exit $status
