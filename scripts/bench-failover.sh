#!/usr/bin/env bash
# bench-failover.sh - what does cross-region failover cost, on loopback with real processes?
#
# Starts one 3-region cluster (us1, eu1, ap1: one node and one `meridian upstream` per region;
# service `echo` with a 200 ms health check, as in tests/tests/t80_failover.rs) and prints each
# figure next to its target with PASS/MISS, all measured in the same run:
#   1. upstream killed under load: paced GETs (3 threads, 300/s) and POSTs (20/s, 1000 B), each
#      with its own x-request-id, to the us node for LOAD_SECONDS; SIGKILL the us upstream half-way
#      - GETs not answered 200                                                 target 0
#      - POSTs not answered 200 (a POST in flight at the kill may get 502: it reached the dying
#        upstream and is not repeated; those are listed apart)                 target 0
#      - requests served twice: duplicate_request_ids on the eu and ap upstreams (/_control/stats),
#        two slow POSTs in flight at the kill answered by another region, requests reaching eu/ap
#        that no answer from there accounts for                               target 0
#   2. extra latency of a forwarded request: SAMPLES sequential keep-alive GETs to the us node
#      served locally (us upstream healthy), then forwarded to eu/ap (us upstream dead);
#      forwarded p50 - local p50                                               target < 1 ms
#      (p99 and the extra p99 are printed too)
#   3. forwarded throughput: wrk for DURATION s against the us node, upstream healthy (local), then
#      dead (every request forwarded); req/s of each and the ratio (no target)
#   4. recovery: restart the us upstream on the same port; time until the us node's answers carry
#      x-meridian-region: us again (no target; paced by the 200 ms health check)
#
# Usage: scripts/bench-failover.sh [--markdown] [--build] [--keep] [--fail-on-miss]
#   --markdown      also print the results as a markdown table (docs/benchmarks.md)
#   --build         (re)build meridian (cargo build --release -p meridian) before running
#   --keep          keep the scratch dir with every node's logs and wrk outputs (always kept on failure)
#   --fail-on-miss  exit 3 when a figure misses its target (default: exit 0 once measured)
# Environment: MERIDIAN_BIN (default target/release/meridian; target/debug/meridian works for a
#   quick check, but its figures are not the product's), SAMPLES (default 2000), DURATION (wrk
#   seconds, default 10), CONNECTIONS (wrk, default 32), LOAD_SECONDS (default 10),
#   LOG_LEVEL (the nodes' --log-level, default info: one line per forwarded request),
#   MAX_SECONDS (hard limit for the whole run, default 120).
# Exit status: 0 measured, 1 a figure could not be measured (logs kept), 3 see --fail-on-miss,
#   130 interrupted. Results go to stdout, progress to stderr.
# Runs in about 50 s; every wait is bounded. All processes are started by the Python helper
# (scripts/bench_failover.py, standard library only), which kills them by PID on exit, on
# SIGINT/SIGTERM and on its time limit; they also get SIGKILL should the helper itself die.
# Nothing is pinned: nodes, upstreams, wrk and the Python client share the machine's cores with
# whatever else runs, which the script measures for half a second first and warns about.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh

MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
SAMPLES=${SAMPLES:-2000}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
LOAD_SECONDS=${LOAD_SECONDS:-10}
LOG_LEVEL=${LOG_LEVEL:-info}
MAX_SECONDS=${MAX_SECONDS:-120}

parse_bench_args "$@"

for var in SAMPLES DURATION CONNECTIONS LOAD_SECONDS MAX_SECONDS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
done
((LOAD_SECONDS >= 2)) || die "LOAD_SECONDS must be at least 2"
[[ $LOG_LEVEL =~ ^[A-Za-z0-9_=,:.-]+$ ]] || die "LOG_LEVEL must be a level such as info or warn"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "python3 >= 3.9 is required ($(python3 --version 2>&1))"
ensure_tools wrk:wrk

ensure_meridian_bin "$build"

# exec: the helper owns every process it starts and cleans them up itself (see above).
exec python3 scripts/bench_failover.py --bin "$MERIDIAN_BIN" --samples "$SAMPLES" \
    --duration "$DURATION" --connections "$CONNECTIONS" --load-seconds "$LOAD_SECONDS" \
    --log-level "$LOG_LEVEL" --max-seconds "$MAX_SECONDS" "${py_args[@]}"
