#!/usr/bin/env bash
# bench-control-plane.sh - how fast is Meridian's control plane, on loopback with real processes?
#
# Starts 3-node clusters (n1 us, n2 us, n3 eu; default gossip and Raft timings) plus one demo
# upstream, and prints each figure next to its target with PASS/MISS:
#   1. cluster formation: launch of the 3 nodes -> all answer GET /readyz 200 and their
#      GET /cluster agree on one leader                                         target < 5 s
#      (sampled on both clusters below; the worse sample is reported)
#   2. write propagation: WRITES x PUT /routes to a FOLLOWER; per write, the time from sending
#      the PUT until GET /routes on every node shows the new version (a thread per node polls
#      every 2 ms over keep-alive; a write's latency is the max over nodes)  target p99 < 100 ms
#   3. leader failover: SIGKILL the leader, then PUT /routes to a survivor in a loop (each PUT
#      bounded); kill -> first commit (a 200, or the survivor's version moving)  target < 3 s
#   4. dead-node detection: on a fresh cluster, SIGKILL a follower; kill -> a survivor's
#      GET /cluster shows it "live": false                                       target < 2 s
# The PUT round trip to the follower, the new leader and per-survivor detection times are
# printed as notes under the table.
#
# Usage: scripts/bench-control-plane.sh [--markdown] [--build] [--keep] [--fail-on-miss]
#   --markdown      also print the results as a markdown table (docs/benchmarks.md)
#   --build         (re)build meridian (cargo build --release -p meridian) before running
#   --keep          keep the scratch dir with every node's logs (always kept on failure)
#   --fail-on-miss  exit 3 when a figure misses its target (default: exit 0 once measured)
# Environment: MERIDIAN_BIN (default target/release/meridian; target/debug/meridian works for a
#   quick check, but its figures are not the product's), WRITES (default 100),
#   MAX_SECONDS (hard limit for the whole run, default 150).
# Exit status: 0 measured, 1 a figure could not be measured (logs kept), 3 see --fail-on-miss,
#   130 interrupted. Results go to stdout, progress to stderr.
# Runs in about 10-20 s; every wait is bounded. All processes are started by the Python helper
# (scripts/bench_control_plane.py, standard library only), which kills them on exit, on
# SIGINT/SIGTERM and on its time limit; they also get SIGKILL should the helper itself die.
# Nothing is pinned: the nodes share the machine's cores with whatever else runs, which the
# script measures for half a second first and warns about.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh

MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
WRITES=${WRITES:-100}
MAX_SECONDS=${MAX_SECONDS:-150}

parse_bench_args "$@"

[[ $WRITES =~ ^[1-9][0-9]*$ ]] || die "WRITES must be a positive integer"
[[ $MAX_SECONDS =~ ^[1-9][0-9]*$ ]] || die "MAX_SECONDS must be a positive integer"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "python3 >= 3.9 is required ($(python3 --version 2>&1))"

ensure_meridian_bin "$build"

# exec: the helper owns every process it starts and cleans them up itself (see above).
exec python3 scripts/bench_control_plane.py --bin "$MERIDIAN_BIN" --writes "$WRITES" \
    --max-seconds "$MAX_SECONDS" "${py_args[@]}"
