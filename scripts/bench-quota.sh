#!/usr/bin/env bash
# bench-quota.sh - does Meridian's global rate limit hold across regions, and what does a check cost?
#
# One quota `per-tenant` (key header:x-tenant, LIMIT requests per WINDOW_MS, on_partition
# local_share) on a route to one `meridian upstream` per region (us, eu, ap); all load is one tenant.
# Prints each figure next to its target with PASS/MISS, all measured in the same run:
#   1. Meridian's global limit under uneven load: a 3-region cluster (us1, eu1, ap1, launched as
#      scripts/bench-failover.sh does); once every node holds a lease on the current window, three
#      wrk at once (1 thread each, connections 4:2:1: 4/2/1 x UNIT_CONNECTIONS) against us1, eu1,
#      ap1, each sending `x-tenant: t`, for WARMUP + DURATION s (and a little slack). Admitted =
#      the sum over nodes of meridian_quota_decisions_total{decision="admitted"} between two
#      scrapes at the same phase of a window (mid-window by default: the windows are aligned to
#      the Unix epoch, and a node admits its share early in each window), DURATION s apart:
#      - admitted / (limit x windows)                                      target 0.95-1.05
#      - the busiest node's share of the admitted requests (ideal: its share of the requests
#        offered, which closed-loop wrk on shared cores keeps near, not at, 4/7), the offered
#        req/s, and the hot key's leases as us1's GET /quotas shows them
#   2. a naive per-node limiter (what Kong's or APISIX's "local" policies do): the same three nodes
#      started standalone, each enforcing the whole limit alone; same load, same measurement:
#      admitted / (limit x windows), expected about 3, and Meridian / naive
#   3. limiter microbenchmark (node/examples/limiter_bench.rs, the binary `cargo run --release -p
#      meridian --example limiter_bench` runs): ns per request per case
#      - request_check_one_thread                                          target < 100 ns
#
# Usage: scripts/bench-quota.sh [--markdown] [--build] [--keep] [--fail-on-miss]
#   --markdown      also print the results as a markdown table (docs/benchmarks.md)
#   --build         (re)build meridian and the limiter_bench example (cargo build --release) first
#   --keep          keep the scratch dir with every node's logs and wrk outputs (always kept on failure)
#   --fail-on-miss  exit 3 when a figure misses its target (default: exit 0 once measured)
# Environment: MERIDIAN_BIN (default target/release/meridian; target/debug/meridian works for a
#   quick check, but its figures are not the product's), LIMIT (requests per window, default 1000:
#   well under what closed-loop wrk offers), WINDOW_MS (default 1000), WARMUP (seconds of load
#   before the first scrape, default 3), DURATION (seconds measured, whole windows, default 10),
#   UNIT_CONNECTIONS (ap1's wrk connections; eu1 gets 2x, us1 4x; default 2),
#   LOG_LEVEL (the nodes' --log-level, default info), MAX_SECONDS (hard limit for the whole run,
#   builds excluded, default 120).
# Exit status: 0 measured, 1 a figure could not be measured (logs kept), 3 see --fail-on-miss,
#   130 interrupted. Results go to stdout, progress to stderr.
# Runs in about 60 s; every wait is bounded. The limiter_bench example is built here when it is
# missing or with --build (like the binary; a warning says when it is older than the sources), then
# run by the helper, so that no build happens inside the time limit. All processes are started by
# the Python helper (scripts/bench_quota.py, standard library only), which kills them by PID on
# exit, on SIGINT/SIGTERM and on its time limit; they also get SIGKILL should the helper itself die.
# Nothing is pinned: nodes, upstreams and wrk share the machine's cores with whatever else runs,
# which the script measures for half a second first and warns about.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib-bench.sh
source scripts/lib-bench.sh

MERIDIAN_BIN=${MERIDIAN_BIN:-target/release/meridian}
LIMITER_BENCH=target/release/examples/limiter_bench
LIMIT=${LIMIT:-1000}
WINDOW_MS=${WINDOW_MS:-1000}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
UNIT_CONNECTIONS=${UNIT_CONNECTIONS:-2}
LOG_LEVEL=${LOG_LEVEL:-info}
MAX_SECONDS=${MAX_SECONDS:-120}

parse_bench_args "$@"

for var in LIMIT WINDOW_MS DURATION UNIT_CONNECTIONS MAX_SECONDS; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
((DURATION * 1000 >= WINDOW_MS)) || die "DURATION must cover at least one window (WINDOW_MS)"
[[ $LOG_LEVEL =~ ^[A-Za-z0-9_=,:.-]+$ ]] || die "LOG_LEVEL must be a level such as info or warn"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "python3 >= 3.9 is required ($(python3 --version 2>&1))"
ensure_tools wrk:wrk

ensure_meridian_bin "$build"

if ((build)) || [[ ! -x $LIMITER_BENCH ]]; then
    if command -v cargo >/dev/null 2>&1; then
        log "building the limiter microbenchmark (cargo build --release -p meridian --example limiter_bench)"
        cargo build --release -p meridian --example limiter_bench >&2 ||
            die "cargo build of the limiter_bench example failed"
    else
        warn "cargo not installed and $LIMITER_BENCH missing: the limiter microbenchmark is skipped"
        LIMITER_BENCH=""
    fi
fi
if [[ -n $LIMITER_BENCH ]]; then
    # Same staleness and debug-build warnings as for the binary (it exists, so nothing is built).
    MERIDIAN_BIN=$LIMITER_BENCH ensure_meridian_bin 0
fi

# exec: the helper owns every process it starts and cleans them up itself (see above).
exec python3 scripts/bench_quota.py --bin "$MERIDIAN_BIN" --limiter-bench "$LIMITER_BENCH" \
    --limit "$LIMIT" --window-ms "$WINDOW_MS" --warmup "$WARMUP" --duration "$DURATION" \
    --unit-connections "$UNIT_CONNECTIONS" --log-level "$LOG_LEVEL" --max-seconds "$MAX_SECONDS" \
    "${py_args[@]}"
